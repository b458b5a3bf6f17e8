//! Typed messages: the [`Body`] enum over every modelled message id, and [`Message`] = header + body.
//!
//! Owns the id → layout dispatch, the choice of body edition (2019 header → 2019 bodies; otherwise
//! the connection's 2011/2013, except 0x0100 which detects its own), and the rule that encrypted
//! bodies, subpackage fragments and unmodelled ids stay raw and round-trip byte for byte.
//! Must not reassemble subpackages (see `reassembly`) or produce JSON (see `json`).

use bytes::{Bytes, BytesMut};

use super::commands::{
    GeneralReply, ResendRequest, TemporaryTracking, TerminalControl, TextMessage, Upgrade, UpgradeResult,
    VehicleControl,
};
use super::error::{BodyError, EncodeError};
use super::frame::{encode_frame, Packet};
use super::header::{Edition, Header, MAX_BODY_LEN};
use super::identity::{Attributes, Authenticate, Register, RegisterReply};
use super::location::{BatchLocation, Location, LocationReply};
use super::media::{decode_compressed, encode_compressed, MediaEvent, MediaUpload, MediaUploadReply, PassThrough};
use super::params::{decode_param_ids, decode_params, encode_param_ids, encode_params, Param, ParamsReply};
use super::wire::{BcdTime, Reader};

/// Message ids this codec models.
pub mod ids {
    /// Terminal general reply.
    pub const TERMINAL_GENERAL_REPLY: u16 = 0x0001;
    /// Platform general reply.
    pub const PLATFORM_GENERAL_REPLY: u16 = 0x8001;
    /// Terminal heartbeat.
    pub const HEARTBEAT: u16 = 0x0002;
    /// Terminal logout.
    pub const LOGOUT: u16 = 0x0003;
    /// Query server time (2019).
    pub const SERVER_TIME_QUERY: u16 = 0x0004;
    /// Server time reply (2019).
    pub const SERVER_TIME_REPLY: u16 = 0x8004;
    /// Platform asks for missing subpackages.
    pub const PLATFORM_RESEND_REQUEST: u16 = 0x8003;
    /// Terminal asks for missing subpackages (2019).
    pub const TERMINAL_RESEND_REQUEST: u16 = 0x0005;
    /// Terminal register.
    pub const REGISTER: u16 = 0x0100;
    /// Register reply.
    pub const REGISTER_REPLY: u16 = 0x8100;
    /// Terminal authentication.
    pub const AUTHENTICATE: u16 = 0x0102;
    /// Set terminal parameters.
    pub const SET_PARAMS: u16 = 0x8103;
    /// Query all terminal parameters.
    pub const QUERY_ALL_PARAMS: u16 = 0x8104;
    /// Terminal control.
    pub const TERMINAL_CONTROL: u16 = 0x8105;
    /// Query some terminal parameters.
    pub const QUERY_PARAMS: u16 = 0x8106;
    /// Parameter query reply.
    pub const PARAMS_REPLY: u16 = 0x0104;
    /// Query terminal attributes.
    pub const QUERY_ATTRIBUTES: u16 = 0x8107;
    /// Terminal attributes reply.
    pub const ATTRIBUTES: u16 = 0x0107;
    /// Upgrade package.
    pub const UPGRADE: u16 = 0x8108;
    /// Upgrade result.
    pub const UPGRADE_RESULT: u16 = 0x0108;
    /// Location report.
    pub const LOCATION: u16 = 0x0200;
    /// Query location.
    pub const QUERY_LOCATION: u16 = 0x8201;
    /// Location query reply.
    pub const LOCATION_QUERY_REPLY: u16 = 0x0201;
    /// Temporary location tracking.
    pub const TEMPORARY_TRACKING: u16 = 0x8202;
    /// Text message.
    pub const TEXT_MESSAGE: u16 = 0x8300;
    /// Vehicle control.
    pub const VEHICLE_CONTROL: u16 = 0x8500;
    /// Vehicle control reply.
    pub const VEHICLE_CONTROL_REPLY: u16 = 0x0500;
    /// Batch location upload.
    pub const BATCH_LOCATION: u16 = 0x0704;
    /// Multimedia event.
    pub const MEDIA_EVENT: u16 = 0x0800;
    /// Multimedia upload.
    pub const MEDIA_UPLOAD: u16 = 0x0801;
    /// Multimedia upload reply.
    pub const MEDIA_UPLOAD_REPLY: u16 = 0x8800;
    /// Uplink pass-through.
    pub const UPLINK_PASS_THROUGH: u16 = 0x0900;
    /// Downlink pass-through.
    pub const DOWNLINK_PASS_THROUGH: u16 = 0x8900;
    /// Compressed upload.
    pub const COMPRESSED_UPLOAD: u16 = 0x0901;
}

/// A message body. Each variant implies its message id; [`Body::Raw`] takes the id from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// 0x0001.
    TerminalGeneralReply(GeneralReply),
    /// 0x8001.
    PlatformGeneralReply(GeneralReply),
    /// 0x0002; the bytes are a vendor body some terminals add (normally empty).
    Heartbeat(Vec<u8>),
    /// 0x0003.
    Logout,
    /// 0x0004.
    ServerTimeQuery,
    /// 0x8004, UTC.
    ServerTimeReply(BcdTime),
    /// 0x8003.
    PlatformResendRequest(ResendRequest),
    /// 0x0005.
    TerminalResendRequest(ResendRequest),
    /// 0x0100.
    Register(Register),
    /// 0x8100.
    RegisterReply(RegisterReply),
    /// 0x0102.
    Authenticate(Authenticate),
    /// 0x8103.
    SetParams(Vec<Param>),
    /// 0x8104.
    QueryAllParams,
    /// 0x8105.
    TerminalControl(TerminalControl),
    /// 0x8106.
    QueryParams(Vec<u32>),
    /// 0x0104.
    ParamsReply(ParamsReply),
    /// 0x8107.
    QueryAttributes,
    /// 0x0107.
    Attributes(Attributes),
    /// 0x8108.
    Upgrade(Upgrade),
    /// 0x0108.
    UpgradeResult(UpgradeResult),
    /// 0x0200.
    Location(Location),
    /// 0x8201.
    QueryLocation,
    /// 0x0201.
    LocationQueryReply(LocationReply),
    /// 0x8202.
    TemporaryTracking(TemporaryTracking),
    /// 0x8300.
    TextMessage(TextMessage),
    /// 0x8500.
    VehicleControl(VehicleControl),
    /// 0x0500.
    VehicleControlReply(LocationReply),
    /// 0x0704.
    BatchLocation(BatchLocation),
    /// 0x0800.
    MediaEvent(MediaEvent),
    /// 0x0801.
    MediaUpload(MediaUpload),
    /// 0x8800.
    MediaUploadReply(MediaUploadReply),
    /// 0x0900.
    UplinkPassThrough(PassThrough),
    /// 0x8900.
    DownlinkPassThrough(PassThrough),
    /// 0x0901: the gzip bytes.
    CompressedUpload(Vec<u8>),
    /// Unmodelled id, encrypted body, subpackage fragment, or a body that did not fit its layout.
    Raw(Bytes),
}

/// True when `msg_id` has a typed layout here.
pub fn is_modelled(msg_id: u16) -> bool {
    MODELLED_IDS.contains(&msg_id)
}

const MODELLED_IDS: &[u16] = &[
    ids::TERMINAL_GENERAL_REPLY,
    ids::PLATFORM_GENERAL_REPLY,
    ids::HEARTBEAT,
    ids::LOGOUT,
    ids::SERVER_TIME_QUERY,
    ids::SERVER_TIME_REPLY,
    ids::PLATFORM_RESEND_REQUEST,
    ids::TERMINAL_RESEND_REQUEST,
    ids::REGISTER,
    ids::REGISTER_REPLY,
    ids::AUTHENTICATE,
    ids::SET_PARAMS,
    ids::QUERY_ALL_PARAMS,
    ids::TERMINAL_CONTROL,
    ids::QUERY_PARAMS,
    ids::PARAMS_REPLY,
    ids::QUERY_ATTRIBUTES,
    ids::ATTRIBUTES,
    ids::UPGRADE,
    ids::UPGRADE_RESULT,
    ids::LOCATION,
    ids::QUERY_LOCATION,
    ids::LOCATION_QUERY_REPLY,
    ids::TEMPORARY_TRACKING,
    ids::TEXT_MESSAGE,
    ids::VEHICLE_CONTROL,
    ids::VEHICLE_CONTROL_REPLY,
    ids::BATCH_LOCATION,
    ids::MEDIA_EVENT,
    ids::MEDIA_UPLOAD,
    ids::MEDIA_UPLOAD_REPLY,
    ids::UPLINK_PASS_THROUGH,
    ids::DOWNLINK_PASS_THROUGH,
    ids::COMPRESSED_UPLOAD,
];

impl Body {
    /// The message id this body belongs to (`None` for [`Body::Raw`]).
    pub fn msg_id(&self) -> Option<u16> {
        Some(match self {
            Body::TerminalGeneralReply(_) => ids::TERMINAL_GENERAL_REPLY,
            Body::PlatformGeneralReply(_) => ids::PLATFORM_GENERAL_REPLY,
            Body::Heartbeat(_) => ids::HEARTBEAT,
            Body::Logout => ids::LOGOUT,
            Body::ServerTimeQuery => ids::SERVER_TIME_QUERY,
            Body::ServerTimeReply(_) => ids::SERVER_TIME_REPLY,
            Body::PlatformResendRequest(_) => ids::PLATFORM_RESEND_REQUEST,
            Body::TerminalResendRequest(_) => ids::TERMINAL_RESEND_REQUEST,
            Body::Register(_) => ids::REGISTER,
            Body::RegisterReply(_) => ids::REGISTER_REPLY,
            Body::Authenticate(_) => ids::AUTHENTICATE,
            Body::SetParams(_) => ids::SET_PARAMS,
            Body::QueryAllParams => ids::QUERY_ALL_PARAMS,
            Body::TerminalControl(_) => ids::TERMINAL_CONTROL,
            Body::QueryParams(_) => ids::QUERY_PARAMS,
            Body::ParamsReply(_) => ids::PARAMS_REPLY,
            Body::QueryAttributes => ids::QUERY_ATTRIBUTES,
            Body::Attributes(_) => ids::ATTRIBUTES,
            Body::Upgrade(_) => ids::UPGRADE,
            Body::UpgradeResult(_) => ids::UPGRADE_RESULT,
            Body::Location(_) => ids::LOCATION,
            Body::QueryLocation => ids::QUERY_LOCATION,
            Body::LocationQueryReply(_) => ids::LOCATION_QUERY_REPLY,
            Body::TemporaryTracking(_) => ids::TEMPORARY_TRACKING,
            Body::TextMessage(_) => ids::TEXT_MESSAGE,
            Body::VehicleControl(_) => ids::VEHICLE_CONTROL,
            Body::VehicleControlReply(_) => ids::VEHICLE_CONTROL_REPLY,
            Body::BatchLocation(_) => ids::BATCH_LOCATION,
            Body::MediaEvent(_) => ids::MEDIA_EVENT,
            Body::MediaUpload(_) => ids::MEDIA_UPLOAD,
            Body::MediaUploadReply(_) => ids::MEDIA_UPLOAD_REPLY,
            Body::UplinkPassThrough(_) => ids::UPLINK_PASS_THROUGH,
            Body::DownlinkPassThrough(_) => ids::DOWNLINK_PASS_THROUGH,
            Body::CompressedUpload(_) => ids::COMPRESSED_UPLOAD,
            Body::Raw(_) => return None,
        })
    }

    /// Decodes a complete body of `msg_id` in `edition` (see [`Edition::for_header`]). Unmodelled
    /// ids give [`Body::Raw`]; a modelled id whose bytes do not fit its layout gives an error.
    pub fn decode(msg_id: u16, bytes: &[u8], edition: Edition) -> Result<Body, BodyError> {
        let mut r = Reader::new(bytes, msg_id);
        let body = match msg_id {
            ids::TERMINAL_GENERAL_REPLY => Body::TerminalGeneralReply(GeneralReply::decode(&mut r)?),
            ids::PLATFORM_GENERAL_REPLY => Body::PlatformGeneralReply(GeneralReply::decode(&mut r)?),
            // Some terminals add a vendor body to the heartbeat; accept and keep it.
            ids::HEARTBEAT => Body::Heartbeat(r.rest().to_vec()),
            ids::LOGOUT => Body::Logout,
            ids::SERVER_TIME_QUERY => Body::ServerTimeQuery,
            ids::SERVER_TIME_REPLY => Body::ServerTimeReply(BcdTime(r.array("time")?)),
            ids::PLATFORM_RESEND_REQUEST => {
                Body::PlatformResendRequest(ResendRequest::decode(&mut r, edition == Edition::V2019)?)
            }
            // 0x0005 exists only in 2019 and always counts with a WORD.
            ids::TERMINAL_RESEND_REQUEST => Body::TerminalResendRequest(ResendRequest::decode(&mut r, true)?),
            ids::REGISTER => {
                let layout = Register::detect_edition(bytes.len(), edition);
                Body::Register(Register::decode(&mut r, layout)?)
            }
            ids::REGISTER_REPLY => Body::RegisterReply(RegisterReply::decode(&mut r)?),
            ids::AUTHENTICATE => Body::Authenticate(Authenticate::decode(&mut r, edition)?),
            ids::SET_PARAMS => Body::SetParams(decode_params(&mut r)?),
            ids::QUERY_ALL_PARAMS => Body::QueryAllParams,
            ids::TERMINAL_CONTROL => Body::TerminalControl(TerminalControl::decode(&mut r)?),
            ids::QUERY_PARAMS => Body::QueryParams(decode_param_ids(&mut r)?),
            ids::PARAMS_REPLY => Body::ParamsReply(ParamsReply::decode(&mut r)?),
            ids::QUERY_ATTRIBUTES => Body::QueryAttributes,
            ids::ATTRIBUTES => Body::Attributes(Attributes::decode(&mut r, edition)?),
            ids::UPGRADE => Body::Upgrade(Upgrade::decode(&mut r)?),
            ids::UPGRADE_RESULT => Body::UpgradeResult(UpgradeResult::decode(&mut r)?),
            ids::LOCATION => Body::Location(Location::decode(&mut r, edition)?),
            ids::QUERY_LOCATION => Body::QueryLocation,
            ids::LOCATION_QUERY_REPLY => Body::LocationQueryReply(LocationReply::decode(&mut r, edition)?),
            ids::TEMPORARY_TRACKING => Body::TemporaryTracking(TemporaryTracking::decode(&mut r)?),
            ids::TEXT_MESSAGE => Body::TextMessage(TextMessage::decode(&mut r, edition)?),
            ids::VEHICLE_CONTROL => Body::VehicleControl(VehicleControl::decode(&mut r, edition)?),
            ids::VEHICLE_CONTROL_REPLY => Body::VehicleControlReply(LocationReply::decode(&mut r, edition)?),
            ids::BATCH_LOCATION => Body::BatchLocation(BatchLocation::decode(&mut r, edition)?),
            ids::MEDIA_EVENT => Body::MediaEvent(MediaEvent::decode(&mut r)?),
            ids::MEDIA_UPLOAD => Body::MediaUpload(MediaUpload::decode(&mut r, edition)?),
            ids::MEDIA_UPLOAD_REPLY => Body::MediaUploadReply(MediaUploadReply::decode(&mut r)?),
            ids::UPLINK_PASS_THROUGH => Body::UplinkPassThrough(PassThrough::decode(&mut r)?),
            ids::DOWNLINK_PASS_THROUGH => Body::DownlinkPassThrough(PassThrough::decode(&mut r)?),
            ids::COMPRESSED_UPLOAD => Body::CompressedUpload(decode_compressed(&mut r)?),
            _ => Body::Raw(Bytes::copy_from_slice(r.rest())),
        };
        r.finish()?;
        Ok(body)
    }

    /// Appends the body bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Body::TerminalGeneralReply(reply) | Body::PlatformGeneralReply(reply) => reply.encode(out),
            Body::Heartbeat(vendor) => out.extend_from_slice(vendor),
            Body::Logout
            | Body::ServerTimeQuery
            | Body::QueryAllParams
            | Body::QueryAttributes
            | Body::QueryLocation => {}
            Body::ServerTimeReply(time) => out.extend_from_slice(&time.0),
            Body::PlatformResendRequest(request) | Body::TerminalResendRequest(request) => request.encode(out)?,
            Body::Register(register) => register.encode(out)?,
            Body::RegisterReply(reply) => reply.encode(out),
            Body::Authenticate(auth) => auth.encode(out)?,
            Body::SetParams(params) => encode_params(params, out)?,
            Body::TerminalControl(control) => control.encode(out),
            Body::QueryParams(param_ids) => encode_param_ids(param_ids, out)?,
            Body::ParamsReply(reply) => reply.encode(out)?,
            Body::Attributes(attributes) => attributes.encode(out)?,
            Body::Upgrade(upgrade) => upgrade.encode(out)?,
            Body::UpgradeResult(result) => result.encode(out),
            Body::Location(location) => location.encode(out)?,
            Body::LocationQueryReply(reply) | Body::VehicleControlReply(reply) => reply.encode(out)?,
            Body::TemporaryTracking(tracking) => tracking.encode(out),
            Body::TextMessage(text) => text.encode(out),
            Body::VehicleControl(control) => control.encode(out),
            Body::BatchLocation(batch) => batch.encode(out)?,
            Body::MediaEvent(event) => event.encode(out),
            Body::MediaUpload(upload) => upload.encode(out),
            Body::MediaUploadReply(reply) => reply.encode(out)?,
            Body::UplinkPassThrough(data) | Body::DownlinkPassThrough(data) => data.encode(out),
            Body::CompressedUpload(data) => encode_compressed(data, out)?,
            Body::Raw(bytes) => out.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// A header and its typed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Header (for a reassembled message: packet 1's header without the subpackage item).
    pub header: Header,
    /// Body.
    pub body: Body,
}

impl Message {
    /// Decodes one packet's body. `connection` is the edition the session settled (2011 or 2013 for
    /// 12-byte headers; 2019 headers always mean 2019 bodies). A subpackage fragment stays
    /// [`Body::Raw`]: feed it to the reassembler and decode the merged body with
    /// [`Message::from_parts`].
    pub fn decode(packet: &Packet, connection: Edition) -> Result<Message, BodyError> {
        if packet.header.subpackage.is_some() {
            return Ok(Message {
                header: packet.header,
                body: Body::Raw(packet.body.clone()),
            });
        }
        Message::from_parts(packet.header, &packet.body, connection)
    }

    /// Decodes a complete body (a single packet's, or a reassembled one) under `header`.
    /// Encrypted bodies stay [`Body::Raw`] (no keys here).
    pub fn from_parts(header: Header, body: &[u8], connection: Edition) -> Result<Message, BodyError> {
        let body = if header.encryption != 0 {
            Body::Raw(Bytes::copy_from_slice(body))
        } else {
            Body::decode(header.msg_id, body, Edition::for_header(&header, connection))?
        };
        Ok(Message { header, body })
    }

    /// Like [`Message::decode`], but a body that does not fit its layout is kept as [`Body::Raw`]
    /// and the error returned beside it, so the session can store and forward it anyway.
    pub fn decode_or_raw(packet: &Packet, connection: Edition) -> (Message, Option<BodyError>) {
        match Message::decode(packet, connection) {
            Ok(message) => (message, None),
            Err(e) => (
                Message {
                    header: packet.header,
                    body: Body::Raw(packet.body.clone()),
                },
                Some(e),
            ),
        }
    }

    /// A message whose header id is taken from the body.
    pub fn new(mut header: Header, body: Body) -> Message {
        if let Some(id) = body.msg_id() {
            header.msg_id = id;
        }
        Message { header, body }
    }

    /// The body bytes (any length; see [`Message::to_packet`] for the single-packet limit).
    pub fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        if let Some(body_id) = self.body.msg_id() {
            if body_id != self.header.msg_id {
                return Err(EncodeError::MsgIdMismatch {
                    header: self.header.msg_id,
                    body: body_id,
                });
            }
        }
        let mut out = Vec::new();
        self.body.encode(&mut out)?;
        Ok(out)
    }

    /// One packet carrying the whole body; fails for bodies over 1023 bytes.
    pub fn to_packet(&self) -> Result<Packet, EncodeError> {
        let body = self.encode_body()?;
        if body.len() > MAX_BODY_LEN {
            return Err(EncodeError::BodyTooLong { len: body.len() });
        }
        Ok(Packet {
            header: self.header,
            body: Bytes::from(body),
        })
    }

    /// Appends the complete frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let body = self.encode_body()?;
        encode_frame(&self.header, &body, out)
    }

    /// The complete frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}
