//! Simulators for the demo, the tests and the load generators. Never used by production paths.

pub mod gbt32960;
pub mod jt808;
pub mod pki;
pub mod reader;
pub mod synthetic;
