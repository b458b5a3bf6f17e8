//! Simulators for the demo, the tests and the load generators. Never used by production paths.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the simulators' command lines report statistics on stdout and errors on stderr: their interface"
)]

pub mod gbt32960;
pub mod jt808;
pub mod pki;
pub mod reader;
pub mod run;
pub mod synthetic;
pub mod traffic;
