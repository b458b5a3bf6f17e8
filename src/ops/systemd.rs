//! systemd integration: `READY=1` once the core runs, `STOPPING=1` on shutdown, and watchdog
//! pings while the store still commits (a wedged writer stops the pings and systemd restarts us).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Pings the watchdog at half its period while a no-op write commits; returns at `shutdown`.
pub async fn watchdog(store: Store, shutdown: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec) / 2;
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let healthy = tokio::time::timeout(period, store.write(|_| Ok(()))).await;
                if matches!(healthy, Ok(Ok(()))) {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!("store writer did not commit within {period:?}; withholding the watchdog ping");
                }
            }
        }
    }
}
