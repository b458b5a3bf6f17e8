//! JT/T 808 (2011/2013/2019) codec: framing, headers, typed bodies, EMQX-shaped JSON, subpackage
//! reassembly and the replies a platform sends.
//!
//! Role: the pure bytes ↔ messages layer for vehicle terminals. Layers, in the order the session
//! uses them:
//! 1. [`FrameDecoder::decode`] turns a TCP byte stream into [`Packet`]s (flags, escaping, XOR check,
//!    header with the bit-14/length cross-check; [`Header::version_flag_contradicted`] reports an
//!    override).
//! 2. Subpackaged packets go through a [`Reassembler`]; the rest (and merged transfers) become
//!    [`Message`]s with [`Message::decode`] / [`Message::from_parts`], given the connection's
//!    [`Edition`] (settled from the register, [`Register::edition`]).
//! 3. [`Message::to_json`] gives EMQX's `{"header","body"}`; [`downlink_from_json`] turns cloud
//!    commands into messages; the [`reply`] builders answer terminals; [`Message::encode`] and
//!    [`split_into_packets`] put messages on the wire (terminal-side messages too, for simulators).
//!
//! Must not do I/O, read clocks, spawn tasks or keep global state; never panics on peer input and
//! never allocates from a peer-given length before the bytes are there.

mod commands;
mod downlink;
mod error;
mod frame;
mod header;
mod identity;
mod json;
mod location;
mod media;
mod message;
mod params;
mod reassembly;
pub mod reply;
mod text;
mod wire;

pub use commands::{
    general_result, GeneralReply, ResendRequest, TemporaryTracking, TerminalControl, TextMessage, Upgrade,
    UpgradeResult, VehicleControl,
};
pub use downlink::{downlink_from_json, DownlinkContext};
pub use error::{BodyError, EncodeError, FrameError, JsonError, ReassemblyError};
pub use frame::{
    encode_frame, xor_checksum, FrameDecoder, Packet, ESCAPE, FLAG, MAX_CONTENT_LEN, MAX_ESCAPED_CONTENT_LEN,
};
pub use header::{
    Edition, Header, Phone, Subpackage, HEADER_LEN_2013, HEADER_LEN_2019, MAX_BODY_LEN, SUBPACKAGE_ITEM_LEN,
};
pub use identity::{
    register_result, Attributes, AuthExtension2019, Authenticate, Register, RegisterReply, IMEI_LEN, MANUFACTURER_LEN,
    REGISTER_2013_MIN_LEN, SOFTWARE_VERSION_LEN,
};
pub use json::{body_json, header_json, location_json};
pub use location::{
    BatchLocation, Location, LocationBasic, LocationExtra, LocationReply, IO_STATUS_BITS, LOCATION_BASIC_LEN,
    VEHICLE_SIGNAL_BITS,
};
pub use media::{MediaEvent, MediaUpload, MediaUploadReply, PassThrough};
pub use message::{ids, is_modelled, Body, Message};
pub use params::{param_type, Param, ParamType, ParamValue, ParamsReply};
pub use reassembly::{
    split_into_packets, PushOutcome, Reassembled, Reassembler, ReassemblyLimits, TimeoutAction, TransferKey,
};
pub use text::{base64_decode, base64_encode, TextEncoding};
pub use wire::{bcd_from_str, bcd_to_string, BcdTime};
