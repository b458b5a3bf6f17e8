//! Operations: logging set-up, systemd notification and watchdog, system metrics, the edge's own alarms.

pub mod alarms;
pub mod logging;
pub mod scheduler;
pub mod system;
pub mod systemd;
