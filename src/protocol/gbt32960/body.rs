//! The data unit of a frame as one typed value, and the rule that picks its layout from the
//! command, the response flag, the encryption byte and who sent the frame.
//!
//! Owns: `Body`, `Origin`, and the dispatch table of facts sheet §1.1.
//! Must not: decrypt (encrypted data units stay opaque) or consult anything outside the frame.

use serde_json::{Map, Value};

use super::control::TerminalControl;
use super::error::{BodyError, EncodeError};
use super::frame::FrameHeader;
use super::info::RealTimeReport;
use super::json::{hex_upper, write_hex_upper};
use super::message::{Ack, Activation, ActivationResponse, KeyExchange, Login2016, Login2025, Logout, PlatformLogin};
use super::param::{ParamList, ParamQuery};
use super::types::{Command, Edition, Time};
use super::wire::Reader;
use crate::protocol::json::JsonWriter;

/// Who sent the frames being decoded. Only 0x80 depends on it: from the platform it is the
/// query (a list of ids), from a terminal it is the reply (id/value pairs), and EMQX's own test
/// frames send replies with flag 0xFE, so the flag cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A vehicle terminal sent the frames (the server decodes these).
    Terminal,
    /// The platform sent the frames (the terminal simulator decodes these).
    Platform,
}

/// Vehicle login (0x01) in the frame's edition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VehicleLogin {
    /// 2016 layout.
    V2016(Login2016),
    /// 2025 layout.
    V2025(Login2025),
}

/// A decoded data unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Empty data unit of a heartbeat (0x07) or time-sync request (0x08).
    Empty,
    /// Data unit of a response to a terminal command (0x01–0x08), or a response that carries
    /// only a time (2025 style) or nothing.
    Ack(Ack),
    /// 0x01 vehicle login.
    VehicleLogin(VehicleLogin),
    /// 0x02 / 0x03 real-time or re-issued information.
    RealTime(RealTimeReport),
    /// 0x04 vehicle logout.
    VehicleLogout(Logout),
    /// 0x05 platform login.
    PlatformLogin(PlatformLogin),
    /// 0x06 platform logout.
    PlatformLogout(Logout),
    /// 0x09 activation (2025).
    Activation(Activation),
    /// 0x0A activation response (2025).
    ActivationResponse(ActivationResponse),
    /// 0x0B key exchange (2025).
    KeyExchange(KeyExchange),
    /// 0x80 from the platform: parameter query.
    ParamQuery(ParamQuery),
    /// 0x80 reply from a terminal, 0x81 set command and its reply.
    Params(ParamList),
    /// 0x82 terminal control and its reply.
    TerminalControl(TerminalControl),
    /// Encrypted data unit (encryption byte other than 0x01/0xFE/0xFF), kept as received.
    Encrypted(Vec<u8>),
    /// Data unit of a command without a known layout (reserved and platform-custom ids, or a
    /// heartbeat/time-sync request that carries bytes).
    Raw(Vec<u8>),
}

/// Commands whose responses come from the platform and may echo the command's data unit.
fn is_platform_answered(command: Command) -> bool {
    (Command::VEHICLE_LOGIN.0..=Command::TIME_SYNC.0).contains(&command.0)
}

/// Commands whose data unit starts with the collection / message time.
pub(crate) fn starts_with_time(command: Command) -> bool {
    matches!(
        command,
        Command::VEHICLE_LOGIN
            | Command::REALTIME
            | Command::REISSUE
            | Command::VEHICLE_LOGOUT
            | Command::PLATFORM_LOGIN
            | Command::PLATFORM_LOGOUT
            | Command::ACTIVATION
            | Command::PARAM_QUERY
            | Command::PARAM_SET
            | Command::TERMINAL_CONTROL
    )
}

impl Body {
    /// Decodes the data unit of a frame whose header is `header`.
    pub(crate) fn decode(header: &FrameHeader, data: &[u8], origin: Origin) -> Result<Body, BodyError> {
        if !header.encryption.is_plaintext() {
            return Ok(Body::Encrypted(data.to_vec()));
        }
        let mut r = Reader::new(data);
        let command = header.command;
        if !header.response.is_command() && (data.is_empty() || data.len() == 6 || is_platform_answered(command)) {
            return Ok(Body::Ack(Ack::read(&mut r)?));
        }
        let body = match command {
            Command::VEHICLE_LOGIN => Body::VehicleLogin(match header.edition {
                Edition::V2016 => VehicleLogin::V2016(Login2016::read(&mut r)?),
                Edition::V2025 => VehicleLogin::V2025(Login2025::read(&mut r)?),
            }),
            Command::REALTIME | Command::REISSUE => Body::RealTime(RealTimeReport::read(&mut r, header.edition)?),
            Command::VEHICLE_LOGOUT => Body::VehicleLogout(Logout::read(&mut r)?),
            Command::PLATFORM_LOGIN => Body::PlatformLogin(PlatformLogin::read(&mut r)?),
            Command::PLATFORM_LOGOUT => Body::PlatformLogout(Logout::read(&mut r)?),
            Command::HEARTBEAT | Command::TIME_SYNC if data.is_empty() => Body::Empty,
            Command::ACTIVATION => Body::Activation(Activation::read(&mut r)?),
            Command::ACTIVATION_RESPONSE => Body::ActivationResponse(ActivationResponse::read(&mut r)?),
            Command::KEY_EXCHANGE => Body::KeyExchange(KeyExchange::read(&mut r)?),
            Command::PARAM_QUERY if origin == Origin::Platform => Body::ParamQuery(ParamQuery::read(&mut r)?),
            Command::PARAM_QUERY | Command::PARAM_SET => Body::Params(ParamList::read(&mut r, header.edition)?),
            Command::TERMINAL_CONTROL => Body::TerminalControl(TerminalControl::read(&mut r)?),
            _ => Body::Raw(r.rest().to_vec()),
        };
        r.finish()?;
        Ok(body)
    }

    /// Appends the encoded data unit to `out`.
    pub(crate) fn encode(&self, edition: Edition, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Body::Empty => {}
            Body::Ack(ack) => ack.write(out),
            Body::VehicleLogin(VehicleLogin::V2016(login)) => {
                require_edition(edition, Edition::V2016, "2016 login")?;
                login.write(out);
            }
            Body::VehicleLogin(VehicleLogin::V2025(login)) => {
                require_edition(edition, Edition::V2025, "2025 login")?;
                login.write(out)?;
            }
            Body::RealTime(report) => report.write(out, edition)?,
            Body::VehicleLogout(logout) | Body::PlatformLogout(logout) => logout.write(out),
            Body::PlatformLogin(login) => login.write(out),
            Body::Activation(activation) => activation.write(out)?,
            Body::ActivationResponse(response) => response.write(out),
            Body::KeyExchange(exchange) => exchange.write(out)?,
            Body::ParamQuery(query) => query.write(out)?,
            Body::Params(list) => list.write(out, edition)?,
            Body::TerminalControl(control) => control.write(out)?,
            Body::Encrypted(bytes) | Body::Raw(bytes) => out.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// The time at the start of the data unit, if this body has one.
    pub fn message_time(&self) -> Option<Time> {
        match self {
            Body::Ack(ack) => ack.time,
            Body::VehicleLogin(VehicleLogin::V2016(login)) => Some(login.time),
            Body::VehicleLogin(VehicleLogin::V2025(login)) => Some(login.time),
            Body::RealTime(report) => Some(report.time),
            Body::VehicleLogout(logout) | Body::PlatformLogout(logout) => Some(logout.time),
            Body::PlatformLogin(login) => Some(login.time),
            Body::Activation(activation) => Some(activation.time),
            Body::ParamQuery(query) => Some(query.time),
            Body::Params(list) => Some(list.time),
            Body::TerminalControl(control) => Some(control.time),
            Body::Empty | Body::ActivationResponse(_) | Body::KeyExchange(_) | Body::Encrypted(_) | Body::Raw(_) => {
                None
            }
        }
    }

    /// The EMQX `"Data"` object (see `json` for the shapes EMQX does not define).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        match self {
            Body::Empty => {}
            Body::Ack(ack) => ack.json_into(&mut map),
            Body::VehicleLogin(VehicleLogin::V2016(login)) => login.json_into(&mut map),
            Body::VehicleLogin(VehicleLogin::V2025(login)) => login.json_into(&mut map),
            Body::RealTime(report) => report.json_into(&mut map),
            Body::VehicleLogout(logout) | Body::PlatformLogout(logout) => logout.json_into(&mut map),
            Body::PlatformLogin(login) => login.json_into(&mut map),
            Body::Activation(activation) => activation.json_into(&mut map),
            Body::ActivationResponse(response) => response.json_into(&mut map),
            Body::KeyExchange(exchange) => exchange.json_into(&mut map),
            Body::ParamQuery(query) => query.json_into(&mut map),
            Body::Params(list) => list.json_into(&mut map),
            Body::TerminalControl(control) => control.json_into(&mut map),
            Body::Encrypted(bytes) => {
                map.insert("Ciphertext".to_owned(), Value::from(hex_upper(bytes)));
            }
            Body::Raw(bytes) => {
                map.insert("Raw".to_owned(), Value::from(hex_upper(bytes)));
            }
        }
        Value::Object(map)
    }
}

impl Body {
    /// Writes the EMQX `"Data"` object (members in key order).
    pub(crate) fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.begin_object();
        match self {
            Body::Empty => {}
            Body::Ack(ack) => ack.write_json_members(w),
            Body::VehicleLogin(VehicleLogin::V2016(login)) => login.write_json_members(w),
            Body::VehicleLogin(VehicleLogin::V2025(login)) => login.write_json_members(w),
            Body::RealTime(report) => report.write_json_members(w),
            Body::VehicleLogout(logout) | Body::PlatformLogout(logout) => logout.write_json_members(w),
            Body::PlatformLogin(login) => login.write_json_members(w),
            Body::Activation(activation) => activation.write_json_members(w),
            Body::ActivationResponse(response) => response.write_json_members(w),
            Body::KeyExchange(exchange) => exchange.write_json_members(w),
            Body::ParamQuery(query) => query.write_json_members(w),
            Body::Params(list) => list.write_json_members(w),
            Body::TerminalControl(control) => control.write_json_members(w),
            Body::Encrypted(bytes) => {
                w.key("Ciphertext");
                write_hex_upper(w, bytes);
            }
            Body::Raw(bytes) => {
                w.key("Raw");
                write_hex_upper(w, bytes);
            }
        }
        w.end_object();
    }
}

fn require_edition(actual: Edition, required: Edition, what: &'static str) -> Result<(), EncodeError> {
    if actual == required {
        Ok(())
    } else {
        Err(EncodeError::WrongEdition { what, edition: actual })
    }
}
