//! GB/T 37987 (motor-vehicle electronic identification reader interface) codec: a pure,
//! table-driven codec for the LLRP-like reader protocol in two dialects (`gbt37987-2019`, `hb-2017`).
//!
//! Owns: the code table (`table`), dialect profiles (`dialect`), the message model (`model`), the
//! binary codec (`codec`), TCP and serial framing (`tcp`, `serial`), JSON mapping (`json`), tag-report
//! views (`report`) and message builders (`builders`).
//! Must not do I/O, keep clocks, threads or global state: every function maps bytes or values to values.

pub mod builders;
pub mod codec;
pub mod dialect;
pub mod error;
pub mod json;
pub mod model;
pub mod report;
pub mod serial;
pub mod table;
pub mod tcp;

pub use dialect::{Dialect, Profile};
pub use error::{DecodeError, EncodeError, FrameError, JsonError, UnknownName};
pub use model::{Body, Content, Header, Message, Parameter, StatusView, Value, HEADER_LEN};
pub use report::{TagReport, VehicleTagData};
pub use serial::{SerialDeframer, SerialFrame};
pub use tcp::TcpFrameDecoder;
