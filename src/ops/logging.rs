//! Logging: `tracing` to journald when started by systemd (`JOURNAL_STREAM` set), else to stderr.
//! `RUST_LOG` wins over `logging.level` so a field engineer can raise verbosity without editing
//! the configuration. Every event that passes the filter is also kept in the in-memory log ring
//! (`ops::log_ring`) the web page shows. Colours only when stderr is a terminal: piped or
//! redirected output stays plain text.

use std::io::IsTerminal;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter of the installed subscriber, changeable at run time (`log_level`).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The filter in force, as text (what `log_level` and the page show).
static CURRENT: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Why a level was not set.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("`{0}` is not a log filter (use error, warn, info, debug, trace, or e.g. info,roadedge::uplink=debug)")]
    Invalid(String),
    #[error("logging is not set up by this process's own subscriber")]
    NotInstalled,
}

/// Parses a filter the way [`set_level`] would, without applying it (validation).
pub fn parse_level(level: &str) -> Result<EnvFilter, LevelError> {
    let level = level.trim();
    if level.is_empty() || level.len() > 512 {
        return Err(LevelError::Invalid(level.chars().take(64).collect()));
    }
    EnvFilter::try_new(level).map_err(|_| LevelError::Invalid(level.chars().take(64).collect()))
}

/// Replaces the filter of the running subscriber (until the next start of the core, which applies
/// `logging.level` or `RUST_LOG` again).
pub fn set_level(level: &str) -> Result<(), LevelError> {
    let filter = parse_level(level)?;
    let handle = FILTER.get().ok_or(LevelError::NotInstalled)?;
    handle.reload(filter).map_err(|_| LevelError::NotInstalled)?;
    if let Ok(mut c) = CURRENT.lock() {
        *c = level.trim().to_string();
    }
    Ok(())
}

/// The filter in force (empty before [`init`]).
pub fn current_level() -> String {
    CURRENT.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Applies `level` from the configuration at a (re)start of the core, unless `RUST_LOG` is set
/// (it wins, see the module header).
pub fn apply_configured(level: &str) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    if let Err(e) = set_level(level) {
        tracing::warn!("logging.level: {e}");
    }
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(level: &str) {
    let (text, filter) = match std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| Some((f.clone(), EnvFilter::try_new(f).ok()?)))
    {
        Some(f) => f,
        None => match EnvFilter::try_new(level) {
            Ok(f) => (level.to_string(), f),
            Err(_) => ("info".to_string(), EnvFilter::new("info")),
        },
    };
    let (filter, handle) = reload::Layer::new(filter);
    if FILTER.set(handle).is_err() {
        // Installed already (a test process starting several appliances).
        return;
    }
    if let Ok(mut c) = CURRENT.lock() {
        *c = text;
    }
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
