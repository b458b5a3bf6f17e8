//! Dialect profiles: the per-link wire rules that differ between the 2019 text and the deployed
//! industry (hb-2017) readers.
//!
//! Owns: length/count widths, the serial check code, serial line defaults and the connection-ack form.
//! Must not hold any message or parameter code: codes live only in the code table (`table.rs`), so a
//! corrected code never needs a profile change and a profile change never touches a code.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which wire dialect one reader link speaks (configured per reader, switchable without a rebuild).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dialect {
    /// The GB/T 37987-2019 text: 32-bit parameter lengths and array counts, CRC16 0x8005/0xFFFF.
    #[serde(rename = "gbt37987-2019")]
    Gbt37987_2019,
    /// The observed industry implementations (S1–S4): 16-bit lengths and counts, CRC-CCITT (XMODEM).
    #[serde(rename = "hb-2017")]
    Hb2017,
}

/// Both dialects, for tests and configuration listings.
pub const ALL_DIALECTS: [Dialect; 2] = [Dialect::Gbt37987_2019, Dialect::Hb2017];

impl Dialect {
    /// The wire rules of this dialect.
    pub fn profile(self) -> &'static Profile {
        match self {
            Dialect::Gbt37987_2019 => &GBT37987_2019,
            Dialect::Hb2017 => &HB_2017,
        }
    }

    /// The configuration spelling (`gbt37987-2019` / `hb-2017`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Gbt37987_2019 => "gbt37987-2019",
            Dialect::Hb2017 => "hb-2017",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a dialect name that is neither `gbt37987-2019` nor `hb-2017`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GB/T 37987 dialect {0:?} (expected \"gbt37987-2019\" or \"hb-2017\")")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_DIALECTS
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDialect(s.to_owned()))
    }
}

/// Width of a length or count prefix on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixWidth {
    /// 16-bit big-endian.
    U16,
    /// 32-bit big-endian.
    U32,
}

impl PrefixWidth {
    /// Bytes the prefix occupies.
    pub fn bytes(self) -> usize {
        match self {
            PrefixWidth::U16 => 2,
            PrefixWidth::U32 => 4,
        }
    }

    /// Largest value the prefix can carry.
    pub fn max(self) -> u64 {
        match self {
            PrefixWidth::U16 => u64::from(u16::MAX),
            PrefixWidth::U32 => u64::from(u32::MAX),
        }
    }
}

/// What the u1v (bit array) prefix counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitArrayUnit {
    /// The prefix is a bit count; the data is `ceil(bits / 8)` bytes (S1, LLRP).
    Bits,
    /// The prefix is a byte count (S2).
    Bytes,
}

/// Unit of the u64 timestamps (UTCTimestamp 301, FirstSeen 506, LastSeen 507).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    /// Microseconds since the Unix epoch (S1 and the facts sheet).
    Micros,
    /// Milliseconds since the Unix epoch (S3 firmware; non-conforming readers).
    Millis,
}

/// Which bytes the serial check code covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcScope {
    /// Source, destination and message before escaping (S4).
    Unescaped,
    /// The escaped source, destination and message (the 2019 text's wording).
    Escaped,
}

/// A non-reflected CRC-16 with no final XOR, sent high byte first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc16Spec {
    /// Generator polynomial (normal form).
    pub poly: u16,
    /// Initial register value.
    pub init: u16,
    /// Which bytes are covered.
    pub scope: CrcScope,
}

/// Serial parity setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// No parity bit.
    None,
}

/// Default serial line settings a dialect prescribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialLine {
    /// Bit rate.
    pub baud: u32,
    /// Data bits per character.
    pub data_bits: u8,
    /// Stop bits.
    pub stop_bits: u8,
    /// Parity.
    pub parity: Parity,
}

/// How a reader acknowledges a fresh link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionAckForm {
    /// DeviceEventNotification with UTCTimestamp then ConnectionAttemptEvent (hb-2017).
    EventWithTimestamp,
    /// M_ConnectionAck: the notification carrying only P_ConnectionAck (2019, provisional).
    AckParameterOnly,
}

/// The complete set of wire rules of one dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Length field of a structure (TLV) parameter.
    pub param_len_width: PrefixWidth,
    /// Element-count prefix of u8v/u16v/u32v arrays.
    pub array_count_width: PrefixWidth,
    /// Byte-length prefix of utf8v strings.
    pub utf8_len_width: PrefixWidth,
    /// Prefix of u1v bit arrays.
    pub bit_array_len_width: PrefixWidth,
    /// What the u1v prefix counts.
    pub bit_array_unit: BitArrayUnit,
    /// Unit of u64 timestamps.
    pub timestamp_unit: TimestampUnit,
    /// Serial check code.
    pub crc: Crc16Spec,
    /// Serial line defaults, when the dialect prescribes any.
    pub serial_line: Option<SerialLine>,
    /// Connection acknowledgement form.
    pub connection_ack: ConnectionAckForm,
}

/// gbt37987-2019: widths and check code per the 2019 text; utf8v/u1v widths provisionally 32 bits (open item 9).
pub const GBT37987_2019: Profile = Profile {
    param_len_width: PrefixWidth::U32,
    array_count_width: PrefixWidth::U32,
    utf8_len_width: PrefixWidth::U32,
    bit_array_len_width: PrefixWidth::U32,
    bit_array_unit: BitArrayUnit::Bits,
    timestamp_unit: TimestampUnit::Micros,
    crc: Crc16Spec {
        poly: 0x8005,
        init: 0xFFFF,
        scope: CrcScope::Escaped,
    },
    serial_line: Some(SerialLine {
        baud: 19_200,
        data_bits: 8,
        stop_bits: 1,
        parity: Parity::None,
    }),
    connection_ack: ConnectionAckForm::AckParameterOnly,
};

/// hb-2017: the observed implementations S1–S4.
pub const HB_2017: Profile = Profile {
    param_len_width: PrefixWidth::U16,
    array_count_width: PrefixWidth::U16,
    utf8_len_width: PrefixWidth::U16,
    bit_array_len_width: PrefixWidth::U16,
    bit_array_unit: BitArrayUnit::Bits,
    timestamp_unit: TimestampUnit::Micros,
    crc: Crc16Spec {
        poly: 0x1021,
        init: 0x0000,
        scope: CrcScope::Unescaped,
    },
    serial_line: None,
    connection_ack: ConnectionAckForm::EventWithTimestamp,
};
