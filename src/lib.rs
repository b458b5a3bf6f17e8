//! roadedge: a roadside edge appliance. See README.md and docs/ARCHITECTURE.md.

pub mod config;
pub mod metrics;
pub mod protocol;
pub mod store;
pub mod time;
