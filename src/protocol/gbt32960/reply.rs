//! Replies the platform sends: acks for login, logout, real-time and heartbeat (flag 0x01
//! success, 0x02 error, or any 2025 code), the time-sync reply, the activation response, and
//! error replies for frames that failed to decode.
//!
//! Owns: the reply data-unit policies. The sources disagree (facts sheet §7.1), so the caller
//! picks one per reply with [`ReplyData`]; the named builders use what EMQX sends.
//! Must not: read the clock (the caller passes the time) or answer a frame that is itself a
//! response (the standard forbids it).

use thiserror::Error;

use super::body::Body;
use super::error::EncodeError;
use super::frame::{Frame, FrameHeader};
use super::message::{Ack, ActivationResponse};
use super::types::{Command, Encryption, ResponseFlag, Time};

/// What the reply's data unit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyData {
    /// Nothing (the standard's heartbeat reply).
    Empty,
    /// Only this time: the command's own time (2016 main body, 2025) or the platform's time
    /// (EMQX heartbeat and time-sync replies).
    Time(Time),
    /// This time followed by the command's data unit after its first 6 bytes (2016 Annex
    /// B.3.3.2; EMQX login reply).
    Echo(Time),
}

/// Why a reply cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// The frame is a response (flag not 0xFE); responses are never answered.
    #[error("frame with response flag {0:#04x} is not a command and must not be answered")]
    NotACommand(u8),
    /// An encrypted data unit cannot be echoed without decrypting it.
    #[error("cannot echo an encrypted data unit")]
    EncryptedEcho,
    /// The command's data unit could not be re-encoded for the echo.
    #[error("cannot re-encode the command for the echo: {0}")]
    Encode(#[from] EncodeError),
}

/// The reply to `request` with response flag `flag` and data unit `data`. The reply keeps the
/// command id, VIN and edition, and is sent in plain text (encryption 0x01).
pub fn reply(request: &Frame, flag: ResponseFlag, data: ReplyData) -> Result<Frame, ReplyError> {
    if !request.response.is_command() {
        return Err(ReplyError::NotACommand(request.response.0));
    }
    let ack = match data {
        ReplyData::Empty => Ack::default(),
        ReplyData::Time(time) => Ack {
            time: Some(time),
            echo: Vec::new(),
        },
        ReplyData::Echo(time) => {
            if !request.encryption.is_plaintext() {
                return Err(ReplyError::EncryptedEcho);
            }
            let mut original = Vec::new();
            request.body.encode(request.edition, &mut original)?;
            Ack {
                time: Some(time),
                echo: original.get(6..).unwrap_or_default().to_vec(),
            }
        }
    };
    Ok(Frame {
        edition: request.edition,
        command: request.command,
        response: flag,
        vin: request.vin,
        encryption: Encryption::NONE,
        body: Body::Ack(ack),
    })
}

/// Login (0x01) reply as EMQX sends it: `now` followed by the rest of the login data unit.
pub fn login_reply(login: &Frame, flag: ResponseFlag, now: Time) -> Result<Frame, ReplyError> {
    reply(login, flag, ReplyData::Echo(now))
}

/// Logout (0x04) reply, shaped like the login reply (EMQX sends none; the standard's Annex B
/// changes only flag and time).
pub fn logout_reply(logout: &Frame, flag: ResponseFlag, now: Time) -> Result<Frame, ReplyError> {
    reply(logout, flag, ReplyData::Echo(now))
}

/// Platform login (0x05) or logout (0x06) reply, shaped like the vehicle login reply (Annex
/// B.3.3.2: flag and time changed, the rest echoed). EMQX sends none; the standard's platform
/// link has the receiving platform answer both.
pub fn platform_reply(request: &Frame, flag: ResponseFlag, now: Time) -> Result<Frame, ReplyError> {
    reply(request, flag, ReplyData::Echo(now))
}

/// Key exchange (0x0B) reply: the flag alone. The data unit has no time to keep, and the 2025
/// rule deletes the rest.
pub fn key_exchange_reply(request: &Frame, flag: ResponseFlag) -> Result<Frame, ReplyError> {
    reply(request, flag, ReplyData::Empty)
}

/// Real-time / re-issue (0x02/0x03) reply. Valid reports get no reply; this is for the error
/// reply after a check error: the report's own time, the rest deleted (2025 and the 2016 main
/// body).
pub fn realtime_reply(report: &Frame, flag: ResponseFlag) -> Result<Frame, ReplyError> {
    let data = report.message_time().map_or(ReplyData::Empty, ReplyData::Time);
    reply(report, flag, data)
}

/// Heartbeat (0x07) reply as EMQX sends it: a 6-byte data unit holding `now`.
pub fn heartbeat_reply(heartbeat: &Frame, flag: ResponseFlag, now: Time) -> Result<Frame, ReplyError> {
    reply(heartbeat, flag, ReplyData::Time(now))
}

/// Time-sync (0x08) reply: success with the platform time `now`.
pub fn time_sync_reply(request: &Frame, now: Time) -> Result<Frame, ReplyError> {
    reply(request, ResponseFlag::SUCCESS, ReplyData::Time(now))
}

/// Activation response (0x0A, a command from the platform) to an activation (0x09):
/// `status` 1 ok / 2 fail, `info` 0 ok / 1 chip already activated / 2 VIN duplicate.
pub fn activation_response(activation: &Frame, status: u8, info: u8) -> Frame {
    Frame {
        edition: activation.edition,
        command: Command::ACTIVATION_RESPONSE,
        response: ResponseFlag::COMMAND,
        vin: activation.vin,
        encryption: Encryption::NONE,
        body: Body::ActivationResponse(ActivationResponse { status, info }),
    }
}

/// The error reply to a frame known only by its header (BCC or layout failure): flag `flag`,
/// data unit = `time`. `None` when the frame was itself a response.
pub fn error_reply(header: &FrameHeader, flag: ResponseFlag, time: Time) -> Option<Frame> {
    header.response.is_command().then(|| Frame {
        edition: header.edition,
        command: header.command,
        response: flag,
        vin: header.vin,
        encryption: Encryption::NONE,
        body: Body::Ack(Ack {
            time: Some(time),
            echo: Vec::new(),
        }),
    })
}
