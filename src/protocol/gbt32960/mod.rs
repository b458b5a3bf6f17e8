//! GB/T 32960.3 codec (electric-vehicle remote monitoring), 2016 (`##`) and 2025 (`$$`)
//! editions chosen per frame by the start bytes.
//!
//! Owns: bytes ↔ typed frames for every command and information type of both editions, the
//! stream decoder ([`FrameDecoder`]), EMQX-compatible JSON out ([`Frame::to_json`]), EMQX
//! `dnstream` JSON in ([`downlink_from_json`]), and the replies a platform sends ([`reply`]).
//! Must not: do I/O, read clocks, use threads or global state, decrypt, or panic on any input.
//!
//! Layout: `types` (header values), `frame` (framing, decoder, encoder), `body` (data-unit
//! dispatch), `message` (login, logout, activation, key exchange, replies' data units), `info`
//! (real-time items), `param` (parameters), `control` (terminal control), `topic` (upstream
//! topic suffixes), `json` (envelope and renderings), `downlink` (cloud commands), `reply`
//! (acks), `error`, and `wire` (bounds-checked primitives).

pub mod body;
pub mod control;
pub mod downlink;
pub mod error;
pub mod frame;
pub mod info;
pub mod json;
pub mod message;
pub mod param;
pub mod reply;
pub mod topic;
pub mod types;
pub(crate) mod wire;

pub use body::{Body, Origin, VehicleLogin};
pub use downlink::{downlink_from_json, parse_downlink, DownlinkError};
pub use error::{BodyError, DecodeError, EncodeError};
pub use frame::{decode_frame, Frame, FrameDecoder, FrameHeader, MAX_DATA_LEN, MAX_FRAME_LEN};
pub use reply::{ReplyData, ReplyError};
pub use topic::TopicSuffix;
pub use types::{Command, Edition, Encryption, ResponseFlag, Time, Vin};
pub use wire::{Listed, TextToEnd};
