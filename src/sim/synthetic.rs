//! A synthetic record source: devices appending telemetry (and every n-th record a critical one)
//! straight into the store, at a rate or as fast as commits return. Used by the demo until the
//! protocol simulators take over, and by the durability tests, which read the `COMMITTED` lines
//! it prints once a record's commit has completed.

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::store::{Record, RecordClass, Store};

/// Settings of the synthetic source.
#[derive(Debug, Clone)]
pub struct SyntheticOptions {
    pub devices: usize,
    /// Records per second over all devices; 0 = as fast as commits complete.
    pub rate: f64,
    /// Every n-th record of a device is critical (0 = never).
    pub critical_every: u64,
    /// Tells records of different runs apart.
    pub run_id: String,
    /// Print `COMMITTED <device> <n> <seq>` on stdout after each commit.
    pub report_commits: bool,
    /// Bytes of padding per record (to fill a budget quickly in tests).
    pub padding: usize,
}

/// Runs `devices` appending tasks until `shutdown`.
pub async fn run(store: Store, options: SyntheticOptions, shutdown: CancellationToken) {
    let mut tasks = Vec::new();
    for d in 0..options.devices {
        let store = store.clone();
        let options = options.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let device = format!("sim-{d:03}");
            let period = (options.rate > 0.0).then(|| Duration::from_secs_f64(options.devices as f64 / options.rate));
            let mut tick = period.map(tokio::time::interval);
            let pad = "x".repeat(options.padding);
            for n in 0u64.. {
                if let Some(t) = tick.as_mut() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = t.tick() => {}
                    }
                } else if shutdown.is_cancelled() {
                    return;
                }
                let critical = options.critical_every > 0 && n % options.critical_every == 0;
                let (class, kind) = if critical {
                    (RecordClass::Critical, "login")
                } else {
                    (RecordClass::Telemetry, "telemetry")
                };
                let body = json!({"run": options.run_id, "device": device, "n": n, "kind": kind,
                                  "speed_kmh": (n % 120), "pad": pad});
                let record = Record::new(format!("sim/{device}"), format!("sim/{device}/{kind}"), class, &body);
                match store.append(record).await {
                    Ok(seq) => {
                        if options.report_commits {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "COMMITTED {device} {n} {seq} {kind}");
                            let _ = out.flush();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(device, "synthetic append failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
