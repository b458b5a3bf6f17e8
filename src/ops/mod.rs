//! Operations: logging set-up, systemd notification and watchdog, system metrics.

pub mod logging;
pub mod system;
pub mod systemd;
