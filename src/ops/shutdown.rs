//! Shutdown: the one token that tells every part of a process to stop, cancelled by SIGTERM or
//! SIGINT (what systemd and a terminal send), or after a duration (simulators, the demo).
//!
//! Owns: turning signals into a cancelled [`CancellationToken`]. The order in which parts stop
//! (intake first, the store last) belongs to `app::run`.

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM/SIGINT, or after `duration` when one is given.
pub fn stop_token(duration: Option<std::time::Duration>) -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(cancel_on_signal(token.clone()));
    if let Some(d) = duration {
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            t.cancel();
        });
    }
    token
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(token: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // No handler could be installed: SIGINT below still stops us.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    token.cancel();
}
