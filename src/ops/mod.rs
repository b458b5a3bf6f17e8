//! Operations: logging set-up and the in-memory log ring, systemd notification and watchdog, system
//! metrics, the edge's own alarms and the checks that raise them (`monitors`), shutdown on
//! signals, the RAUC update client, the OTA service and remote management of the configuration
//! (`config_apply`).

pub mod alarms;
pub mod config_apply;
pub mod log_ring;
pub mod logging;
pub mod monitors;
pub mod ota;
pub mod rauc;
pub mod scheduler;
pub mod shutdown;
pub mod system;
pub mod systemd;
