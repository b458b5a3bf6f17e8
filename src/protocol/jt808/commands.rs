//! Replies and platform commands: 0x0001/0x8001, 0x8003/0x0005, 0x8105, 0x8108/0x0108, 0x8202,
//! 0x8300, 0x8500.
//!
//! Owns these small fixed layouts and their edition differences (0x8003 count BYTE vs WORD, 0x8300
//! text type, 0x8500 flag vs control list). Each struct records which form it is, so encoding needs
//! no outside context. Must not decide results or retries; that is the session's job.

use super::error::{BodyError, EncodeError};
use super::header::Edition;
use super::identity::MANUFACTURER_LEN;
use super::wire::{count_u16, count_u8, put_fixed, put_len_u8, Reader};

/// Results of the general replies 0x0001/0x8001.
pub mod general_result {
    /// Success / acknowledged.
    pub const OK: u8 = 0;
    /// Failure.
    pub const FAILED: u8 = 1;
    /// Message error.
    pub const MESSAGE_ERROR: u8 = 2;
    /// Not supported.
    pub const UNSUPPORTED: u8 = 3;
    /// Alarm processing confirmed (0x8001 only).
    pub const ALARM_CONFIRMED: u8 = 4;
}

/// 0x0001 terminal and 0x8001 platform general reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GeneralReply {
    /// Serial of the message answered.
    pub reply_serial: u16,
    /// Id of the message answered.
    pub reply_id: u16,
    /// See [`general_result`].
    pub result: u8,
}

impl GeneralReply {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(GeneralReply {
            reply_serial: r.u16("reply serial")?,
            reply_id: r.u16("reply id")?,
            result: r.u8("result")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.reply_serial.to_be_bytes());
        out.extend_from_slice(&self.reply_id.to_be_bytes());
        out.push(self.result);
    }
}

/// 0x8003 (platform asks the terminal) and 0x0005 (2019, terminal asks the platform) resend request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResendRequest {
    /// True for the 2019 layout, whose count is a WORD (2013: BYTE; 0x0005 is always 2019).
    pub word_count: bool,
    /// Serial of the transfer's first packet.
    pub first_serial: u16,
    /// Packet indexes (1-based) to send again.
    pub indexes: Vec<u16>,
}

impl ResendRequest {
    pub(crate) fn decode(r: &mut Reader<'_>, word_count: bool) -> Result<Self, BodyError> {
        let first_serial = r.u16("original serial")?;
        let count = if word_count {
            usize::from(r.u16("retransmit count")?)
        } else {
            usize::from(r.u8("retransmit count")?)
        };
        r.check_count("retransmit count", count, 2)?;
        let indexes = (0..count).map(|_| r.u16("packet index")).collect::<Result<_, _>>()?;
        Ok(ResendRequest {
            word_count,
            first_serial,
            indexes,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.first_serial.to_be_bytes());
        if self.word_count {
            out.extend_from_slice(&count_u16("packet indexes", self.indexes.len())?.to_be_bytes());
        } else {
            out.push(count_u8("packet indexes", self.indexes.len())?);
        }
        for index in &self.indexes {
            out.extend_from_slice(&index.to_be_bytes());
        }
        Ok(())
    }
}

/// 0x8105 terminal control: command word and its `;`-separated parameter STRING, kept as bytes
/// because some parameters (ports, time limit) are raw WORDs inside the list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TerminalControl {
    /// 1 upgrade, 2 connect to server, 3 power off, 4 reset, 5 factory reset, 6 close link,
    /// 7 close wireless.
    pub command: u8,
    /// Parameter bytes.
    pub param: Vec<u8>,
}

impl TerminalControl {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(TerminalControl {
            command: r.u8("command")?,
            param: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.command);
        out.extend_from_slice(&self.param);
    }
}

/// 0x8108 upgrade package (usually subpackaged; see `split_into_packets`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upgrade {
    /// 0 terminal, 12 IC-card reader, 52 BeiDou module.
    pub upgrade_type: u8,
    /// Manufacturer id, BYTE\[5\] (still 5 in 2019).
    pub manufacturer: Vec<u8>,
    /// Version (length-prefixed STRING).
    pub version: Vec<u8>,
    /// Package bytes (DWORD length-prefixed).
    pub package: Vec<u8>,
}

impl Upgrade {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let upgrade_type = r.u8("upgrade type")?;
        let manufacturer = r.take(MANUFACTURER_LEN, "manufacturer")?.to_vec();
        let version_len = usize::from(r.u8("version length")?);
        let version = r.take(version_len, "version")?.to_vec();
        let package_len = r.u32("package length")?;
        let package = r
            .take(usize::try_from(package_len).unwrap_or(usize::MAX), "package")?
            .to_vec();
        Ok(Upgrade {
            upgrade_type,
            manufacturer,
            version,
            package,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.upgrade_type);
        put_fixed(out, &self.manufacturer, MANUFACTURER_LEN, "manufacturer")?;
        put_len_u8(out, &self.version, "version")?;
        let len = u32::try_from(self.package.len()).map_err(|_| EncodeError::FieldTooLong {
            field: "package",
            len: self.package.len(),
            max: u32::MAX as usize,
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.package);
        Ok(())
    }
}

/// 0x0108 upgrade result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpgradeResult {
    /// Upgrade type as in 0x8108.
    pub upgrade_type: u8,
    /// 0 success, 1 fail, 2 cancelled.
    pub result: u8,
}

impl UpgradeResult {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(UpgradeResult {
            upgrade_type: r.u8("upgrade type")?,
            result: r.u8("result")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.upgrade_type);
        out.push(self.result);
    }
}

/// 0x8202 temporary location tracking (EMQX `period`, `expiry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TemporaryTracking {
    /// Report interval in seconds; 0 stops tracking.
    pub interval: u16,
    /// Tracking validity in seconds.
    pub validity: u32,
}

impl TemporaryTracking {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(TemporaryTracking {
            interval: r.u16("interval")?,
            validity: r.u32("validity")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.interval.to_be_bytes());
        out.extend_from_slice(&self.validity.to_be_bytes());
    }
}

/// 0x8300 text message: flag BYTE, (2019) text type BYTE, text STRING.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextMessage {
    /// Flag bits (emergency, display, TTS, ...).
    pub flags: u8,
    /// 2019 text type (1 notice, 2 service); `None` in the 2013 layout.
    pub text_type: Option<u8>,
    /// Text bytes.
    pub text: Vec<u8>,
}

impl TextMessage {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let flags = r.u8("flag")?;
        let text_type = if edition == Edition::V2019 {
            Some(r.u8("text type")?)
        } else {
            None
        };
        Ok(TextMessage {
            flags,
            text_type,
            text: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        if let Some(text_type) = self.text_type {
            out.push(text_type);
        }
        out.extend_from_slice(&self.text);
    }
}

/// 0x8500 vehicle control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VehicleControl {
    /// 2011/2013: one control flag byte (bit 0: 0 unlock doors, 1 lock doors).
    Flags(u8),
    /// 2019: a WORD count and control items `{id WORD, parameter}`. The parameter widths depend on
    /// the control id, so the items stay raw bytes.
    Controls {
        /// Number of control items.
        count: u16,
        /// The items' bytes.
        items: Vec<u8>,
    },
}

impl VehicleControl {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        if edition == Edition::V2019 {
            Ok(VehicleControl::Controls {
                count: r.u16("control count")?,
                items: r.rest().to_vec(),
            })
        } else {
            Ok(VehicleControl::Flags(r.u8("control flag")?))
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            VehicleControl::Flags(flags) => out.push(*flags),
            VehicleControl::Controls { count, items } => {
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(items);
            }
        }
    }
}
