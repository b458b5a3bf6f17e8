//! Logging: `tracing` to journald when started by systemd (`JOURNAL_STREAM` set), else to stderr.
//! `RUST_LOG` wins over `logging.level` so a field engineer can raise verbosity without editing
//! the configuration. Every event that passes the filter is also kept in the in-memory log ring
//! (`ops::log_ring`) the web page shows. Colours only when stderr is a terminal: piped or
//! redirected output stays plain text.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call is a no-op.
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(super::log_ring::layer());
    let mut journald_error = None;
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journald) => {
                let _ = registry
                    .with(journald.with_syslog_identifier("roadedge".into()))
                    .try_init();
                return;
            }
            Err(e) => journald_error = Some(e),
        }
    }
    let installed = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .try_init()
        .is_ok();
    if let (true, Some(e)) = (installed, journald_error) {
        // Said through the stderr subscriber just installed (and kept in the log ring).
        tracing::warn!("journald unavailable ({e}); logging to stderr");
    }
}
