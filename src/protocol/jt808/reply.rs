//! Reply builders the session needs: 0x8001 general reply, 0x8100 register reply, 0x8003 resend
//! request, 0x8004 server time.
//!
//! Owns only the shape of these replies: same phone and header layout as the message answered,
//! the answered serial/id quoted, the caller's own serial on the reply. Must not pick results,
//! auth codes, serials or the time (no clock reads): the session supplies them.

use super::commands::{GeneralReply, ResendRequest};
use super::header::Header;
use super::identity::{register_result, RegisterReply};
use super::message::{ids, Body, Message};
use super::wire::BcdTime;

/// 0x8001 answering the message with header `to`; `result` from `commands::general_result`.
pub fn general_reply(to: &Header, result: u8, serial: u16) -> Message {
    Message::new(
        to.reply(ids::PLATFORM_GENERAL_REPLY, serial),
        Body::PlatformGeneralReply(GeneralReply {
            reply_serial: to.serial,
            reply_id: to.msg_id,
            result,
        }),
    )
}

/// 0x8100 answering the 0x0100 with header `to`. The auth code is sent only when `result` is
/// success, as the standard says.
pub fn register_reply(to: &Header, result: u8, auth_code: &[u8], serial: u16) -> Message {
    let auth_code = if result == register_result::OK {
        auth_code.to_vec()
    } else {
        Vec::new()
    };
    Message::new(
        to.reply(ids::REGISTER_REPLY, serial),
        Body::RegisterReply(RegisterReply {
            reply_serial: to.serial,
            result,
            auth_code,
        }),
    )
}

/// 0x8003 asking the terminal of header `to` for the packets `missing` of the transfer whose first
/// packet had `first_serial`. The count is a WORD under a 2019 header, else a BYTE (at most 255
/// indexes; more fail at encoding, so send them in several requests).
pub fn resend_request(to: &Header, first_serial: u16, missing: &[u16], serial: u16) -> Message {
    Message::new(
        to.reply(ids::PLATFORM_RESEND_REQUEST, serial),
        Body::PlatformResendRequest(ResendRequest {
            word_count: to.is_2019(),
            first_serial,
            indexes: missing.to_vec(),
        }),
    )
}

/// 0x8004 answering a 0x0004 with the caller's current UTC time.
pub fn server_time_reply(to: &Header, utc: BcdTime, serial: u16) -> Message {
    Message::new(to.reply(ids::SERVER_TIME_REPLY, serial), Body::ServerTimeReply(utc))
}
