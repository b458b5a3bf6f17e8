//! Pure protocol codecs: bytes <-> typed messages <-> JSON. No async runtime, no I/O, no clocks here
//! (a test in `tests/layering.rs` fails the build if that changes).

pub mod gbt32960;
pub mod gbt37987;
pub mod json;
pub mod jt808;
