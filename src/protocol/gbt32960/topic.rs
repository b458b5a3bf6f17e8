//! Which EMQX upstream topic a frame from a terminal is published under
//! (`gbt32960/{vin}/upstream/{suffix}`, facts sheet §4.1).
//!
//! Owns: the command → suffix table.
//! Must not: build whole topics (the server owns prefixes and the VIN rendering).

use super::types::{Command, ResponseFlag};

/// The last topic level of an upstream publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicSuffix {
    /// `vlogin` (0x01).
    VehicleLogin,
    /// `info` (0x02).
    Info,
    /// `reinfo` (0x03).
    Reissue,
    /// `vlogout` (0x04).
    VehicleLogout,
    /// `plogin` (0x05).
    PlatformLogin,
    /// `plogout` (0x06).
    PlatformLogout,
    /// `activation` (0x09).
    Activation,
    /// `response`: any frame with a response flag, and 0x80/0x81/0x82 (terminal replies).
    Response,
    /// `transparent`: any other command EMQX would pass through.
    Transparent,
}

impl TopicSuffix {
    /// The topic level text.
    pub const fn as_str(self) -> &'static str {
        match self {
            TopicSuffix::VehicleLogin => "vlogin",
            TopicSuffix::Info => "info",
            TopicSuffix::Reissue => "reinfo",
            TopicSuffix::VehicleLogout => "vlogout",
            TopicSuffix::PlatformLogin => "plogin",
            TopicSuffix::PlatformLogout => "plogout",
            TopicSuffix::Activation => "activation",
            TopicSuffix::Response => "response",
            TopicSuffix::Transparent => "transparent",
        }
    }

    /// The suffix for a frame from a terminal, or `None` for heartbeat and time sync, which
    /// EMQX answers but does not publish.
    pub fn for_frame(command: Command, response: ResponseFlag) -> Option<TopicSuffix> {
        if !response.is_command() {
            return Some(TopicSuffix::Response);
        }
        if matches!(command, Command::HEARTBEAT | Command::TIME_SYNC) {
            return None;
        }
        let suffix = COMMAND_TOPICS
            .iter()
            .find(|(id, _)| *id == command)
            .map_or(TopicSuffix::Transparent, |(_, suffix)| *suffix);
        Some(suffix)
    }
}

/// Command → suffix for command frames (flag 0xFE), as EMQX's channel maps them.
const COMMAND_TOPICS: [(Command, TopicSuffix); 10] = [
    (Command::VEHICLE_LOGIN, TopicSuffix::VehicleLogin),
    (Command::REALTIME, TopicSuffix::Info),
    (Command::REISSUE, TopicSuffix::Reissue),
    (Command::VEHICLE_LOGOUT, TopicSuffix::VehicleLogout),
    (Command::PLATFORM_LOGIN, TopicSuffix::PlatformLogin),
    (Command::PLATFORM_LOGOUT, TopicSuffix::PlatformLogout),
    (Command::ACTIVATION, TopicSuffix::Activation),
    (Command::PARAM_QUERY, TopicSuffix::Response),
    (Command::PARAM_SET, TopicSuffix::Response),
    (Command::TERMINAL_CONTROL, TopicSuffix::Response),
];
