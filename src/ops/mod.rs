//! Operations: logging set-up, systemd notification and watchdog, system metrics.

pub mod logging;
pub mod scheduler;
pub mod system;
pub mod systemd;
