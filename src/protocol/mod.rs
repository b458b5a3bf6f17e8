//! Pure protocol codecs: bytes <-> typed messages <-> JSON. No tokio, no I/O, no clocks here
//! (a test in `tests/layering.rs` fails the build if that changes).
