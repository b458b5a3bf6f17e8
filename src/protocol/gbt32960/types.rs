//! Header-level value types of GB/T 32960: edition, command id, response flag, encryption
//! byte, collection time and the 17-byte unique id (VIN).
//!
//! Owns: the numeric code tables of the frame header (facts sheet §1, §1.1, §1.2) as
//! constants on newtypes, so unknown codes are kept and round-trip.
//! Must not: validate or rewrite raw values (0xFE/0xFF and out-of-range values pass through).

use serde_json::{json, Value};

use super::json::decode_text;

/// Which edition a frame uses, chosen per frame by its start bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edition {
    /// GB/T 32960.3-2016, start bytes `##`.
    V2016,
    /// GB/T 32960.3-2025, start bytes `$$`.
    V2025,
}

impl Edition {
    /// The two start bytes of a frame of this edition.
    pub const fn start_marker(self) -> [u8; 2] {
        match self {
            Edition::V2016 => *b"##",
            Edition::V2025 => *b"$$",
        }
    }

    /// The edition whose start bytes are `marker`.
    pub fn from_start_marker(marker: [u8; 2]) -> Option<Edition> {
        match &marker {
            b"##" => Some(Edition::V2016),
            b"$$" => Some(Edition::V2025),
            _ => None,
        }
    }
}

/// Command id (header offset 2). Unknown ids are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(pub u8);

impl Command {
    /// 0x01 vehicle login.
    pub const VEHICLE_LOGIN: Command = Command(0x01);
    /// 0x02 real-time information upload.
    pub const REALTIME: Command = Command(0x02);
    /// 0x03 re-issued (buffered) information upload.
    pub const REISSUE: Command = Command(0x03);
    /// 0x04 vehicle logout.
    pub const VEHICLE_LOGOUT: Command = Command(0x04);
    /// 0x05 platform login.
    pub const PLATFORM_LOGIN: Command = Command(0x05);
    /// 0x06 platform logout.
    pub const PLATFORM_LOGOUT: Command = Command(0x06);
    /// 0x07 heartbeat.
    pub const HEARTBEAT: Command = Command(0x07);
    /// 0x08 terminal time sync.
    pub const TIME_SYNC: Command = Command(0x08);
    /// 0x09 activation (2025).
    pub const ACTIVATION: Command = Command(0x09);
    /// 0x0A activation response (2025, platform to terminal).
    pub const ACTIVATION_RESPONSE: Command = Command(0x0A);
    /// 0x0B data-unit encryption key exchange (2025).
    pub const KEY_EXCHANGE: Command = Command(0x0B);
    /// 0x80 parameter query.
    pub const PARAM_QUERY: Command = Command(0x80);
    /// 0x81 parameter set.
    pub const PARAM_SET: Command = Command(0x81);
    /// 0x82 terminal control.
    pub const TERMINAL_CONTROL: Command = Command(0x82);
}

/// Response flag (header offset 3): 0xFE marks a command, anything else a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseFlag(pub u8);

impl ResponseFlag {
    /// 0x01 success.
    pub const SUCCESS: ResponseFlag = ResponseFlag(0x01);
    /// 0x02 error (2025: "other error").
    pub const ERROR: ResponseFlag = ResponseFlag(0x02);
    /// 0x03 VIN duplicate.
    pub const VIN_DUPLICATE: ResponseFlag = ResponseFlag(0x03);
    /// 0x04 VIN does not exist (2025).
    pub const VIN_NOT_EXIST: ResponseFlag = ResponseFlag(0x04);
    /// 0x05 signature verification error (2025).
    pub const SIGNATURE_ERROR: ResponseFlag = ResponseFlag(0x05);
    /// 0x06 data structure error (2025).
    pub const DATA_STRUCTURE_ERROR: ResponseFlag = ResponseFlag(0x06);
    /// 0x07 decryption error (2025).
    pub const DECRYPTION_ERROR: ResponseFlag = ResponseFlag(0x07);
    /// 0xFE: the packet is a command, sent by the initiator.
    pub const COMMAND: ResponseFlag = ResponseFlag(0xFE);

    /// True for 0xFE (a command the receiver may answer).
    pub const fn is_command(self) -> bool {
        self.0 == Self::COMMAND.0
    }
}

/// Encryption byte (header offset 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encryption(pub u8);

impl Encryption {
    /// 0x01 not encrypted.
    pub const NONE: Encryption = Encryption(0x01);
    /// 0x02 RSA.
    pub const RSA: Encryption = Encryption(0x02);
    /// 0x03 AES128 (2016) / AES (2025).
    pub const AES: Encryption = Encryption(0x03);
    /// 0x04 SM2 (2025).
    pub const SM2: Encryption = Encryption(0x04);
    /// 0x05 SM4 (2025).
    pub const SM4: Encryption = Encryption(0x05);
    /// 0xFE abnormal.
    pub const ABNORMAL: Encryption = Encryption(0xFE);
    /// 0xFF invalid.
    pub const INVALID: Encryption = Encryption(0xFF);

    /// Whether the data unit can be read as plain text: 0x01, and the 0xFE/0xFF markers (which
    /// name no cipher). Every other value (the ciphers 0x02..=0x05 and undefined codes) keeps
    /// the data unit opaque, because reading ciphertext as fields would publish garbage.
    pub const fn is_plaintext(self) -> bool {
        matches!(self.0, 0x01 | 0xFE | 0xFF)
    }
}

/// Collection / message time: YY MM DD hh mm ss, plain binary bytes (GMT+8). Kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    /// Year within the century, 0–99.
    pub year: u8,
    /// Month, 1–12.
    pub month: u8,
    /// Day, 1–31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
}

impl Time {
    /// Builds a time from its six wire bytes.
    pub const fn from_bytes(bytes: [u8; 6]) -> Time {
        let [year, month, day, hour, minute, second] = bytes;
        Time {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    /// The six wire bytes.
    pub const fn to_bytes(self) -> [u8; 6] {
        [self.year, self.month, self.day, self.hour, self.minute, self.second]
    }

    /// EMQX JSON: `{"Year","Month","Day","Hour","Minute","Second"}`.
    pub fn to_json(self) -> Value {
        json!({
            "Year": self.year,
            "Month": self.month,
            "Day": self.day,
            "Hour": self.hour,
            "Minute": self.minute,
            "Second": self.second,
        })
    }

    /// Writes [`Time::to_json`]'s object (members in key order).
    pub(crate) fn write_json(self, w: &mut crate::protocol::json::JsonWriter<'_>) {
        w.begin_object();
        w.member_u64("Day", self.day);
        w.member_u64("Hour", self.hour);
        w.member_u64("Minute", self.minute);
        w.member_u64("Month", self.month);
        w.member_u64("Second", self.second);
        w.member_u64("Year", self.year);
        w.end_object();
    }
}

/// The 17-byte unique id (VIN), raw as on the wire (padding included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Vin(pub [u8; 17]);

impl Vin {
    /// Builds a VIN from text, right-padding a short one with NUL and cutting a long one.
    pub fn from_text(text: &str) -> Vin {
        let mut raw = [0u8; 17];
        for (slot, byte) in raw.iter_mut().zip(text.bytes()) {
            *slot = byte;
        }
        Vin(raw)
    }

    /// The bytes without trailing NUL/space padding.
    pub fn trimmed(&self) -> &[u8] {
        let end = self
            .0
            .iter()
            .rposition(|b| *b != 0 && *b != b' ')
            .map_or(0, |last| last + 1);
        self.0.get(..end).unwrap_or_default()
    }

    /// The VIN as used in MQTT topics: trailing NUL/space padding removed, non-ASCII bytes
    /// decoded as GB 18030 (invalid sequences become U+FFFD).
    pub fn topic_text(&self) -> String {
        decode_text(self.trimmed())
    }
}
