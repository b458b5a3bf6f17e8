//! Message header: both layouts, the terminal phone, editions, and the bit-14 cross-check.
//!
//! Owns parsing and writing the 12/16-byte (2011/2013) and 17/21-byte (2019) headers and the
//! decision which layout a frame really uses: bit 14 names a layout, the body-length field must then
//! match the bytes present; when it does not but the other layout does, the other layout wins and
//! the header remembers that the flag lied. Must not look at bodies or escape bytes.

use super::error::{EncodeError, FrameError};
use super::wire::bcd_to_string;

/// Mask of the body length in the body properties.
const BODY_LEN_MASK: u16 = 0x03FF;
/// Encryption bits 10-12.
const ENCRYPTION_SHIFT: u16 = 10;
const ENCRYPTION_MASK: u16 = 0x07;
/// Bit 13: the header carries total and index.
const SUBPACKAGE_BIT: u16 = 1 << 13;
/// Bit 14: 2019 version flag.
const VERSION_BIT: u16 = 1 << 14;
/// Bit 15: reserved, kept so that re-encoding gives the same bytes.
const RESERVED_BIT: u16 = 1 << 15;

/// Largest body one packet can carry (10-bit length field).
pub const MAX_BODY_LEN: usize = BODY_LEN_MASK as usize;
/// Header length of the 2011/2013 layout without the subpackage item.
pub const HEADER_LEN_2013: usize = 12;
/// Header length of the 2019 layout without the subpackage item.
pub const HEADER_LEN_2019: usize = 17;
/// Bytes the subpackage item (total, index) adds to either header.
pub const SUBPACKAGE_ITEM_LEN: usize = 4;

/// Edition of the standard a body follows. 2011 and 2013 share the header; only some bodies differ
/// (0x0100 widths, 0x0801's location), so a connection's edition is settled from its register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Edition {
    /// JT/T 808-2011.
    V2011,
    /// JT/T 808-2013 (the default for 12-byte headers).
    #[default]
    V2013,
    /// JT/T 808-2019 (17-byte header with protocol version).
    V2019,
}

impl Edition {
    /// The edition a body under `header` follows on a connection settled at `connection`: a 2019
    /// header means 2019 bodies; a 2013-layout header means 2011 only if the connection said so.
    pub fn for_header(header: &Header, connection: Edition) -> Edition {
        if header.is_2019() {
            Edition::V2019
        } else if connection == Edition::V2011 {
            Edition::V2011
        } else {
            Edition::V2013
        }
    }
}

/// Terminal phone number as its BCD bytes: 6 bytes in 2011/2013 headers, 10 in 2019 headers.
/// Rendered nibble by nibble as hex digits with every digit kept (the edge's identity and topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone {
    bcd: [u8; 10],
    len: u8,
}

impl Phone {
    /// Wraps BCD bytes from a header; only 6 or 10 bytes are valid widths.
    pub fn from_bcd(bytes: &[u8]) -> Option<Phone> {
        if bytes.len() != 6 && bytes.len() != 10 {
            return None;
        }
        let mut bcd = [0u8; 10];
        bcd.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Phone {
            bcd,
            len: u8::try_from(bytes.len()).ok()?,
        })
    }

    /// Parses hex digits (`"13800138000"`, `"4ef480128919"`): up to 12 digits give the 6-byte
    /// form, up to 20 the 10-byte form, both left-padded with zeros as the standard says.
    pub fn parse(digits: &str) -> Option<Phone> {
        let width = if digits.len() <= 12 { 6 } else { 10 };
        Phone::from_bcd(&super::wire::bcd_from_str(digits, width)?)
    }

    /// The BCD bytes as received or built.
    pub fn as_bcd(&self) -> &[u8] {
        self.bcd.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The BCD bytes for a header of `width` bytes: zero-padded on the left, or with leading zero
    /// bytes dropped; an error if significant digits would be lost.
    pub fn bcd_for_width(&self, width: usize) -> Result<Vec<u8>, EncodeError> {
        let bytes = self.as_bcd();
        let too_wide = || EncodeError::PhoneTooWide {
            phone: self.to_string(),
            width,
        };
        if bytes.len() <= width {
            let mut out = vec![0u8; width - bytes.len()];
            out.extend_from_slice(bytes);
            Ok(out)
        } else {
            let cut = bytes.len() - width;
            match bytes.split_at_checked(cut) {
                Some((dropped, kept)) if dropped.iter().all(|b| *b == 0) => Ok(kept.to_vec()),
                _ => Err(too_wide()),
            }
        }
    }
}

impl std::fmt::Display for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bcd_to_string(self.as_bcd()))
    }
}

/// The subpackage item: `total` packets, this one is `index` (counted from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subpackage {
    /// Number of packets in the transfer.
    pub total: u16,
    /// This packet's position, 1-based.
    pub index: u16,
}

/// A decoded message header. The body length is not stored: the encoder derives it from the body,
/// and the decoder has already checked it against the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message id.
    pub msg_id: u16,
    /// Encryption bits 10-12 (0 = plain, 1 = RSA).
    pub encryption: u8,
    /// Bit 14 as sent. It equals `protocol_version.is_some()` unless the device lied about it.
    pub version_flag: bool,
    /// Reserved bit 15 as sent.
    pub reserved_bit15: bool,
    /// `Some(version)` for the 2019 layout (version byte + `BCD[10]` phone), `None` for 2011/2013.
    pub protocol_version: Option<u8>,
    /// Terminal phone.
    pub phone: Phone,
    /// Flow serial number.
    pub serial: u16,
    /// Subpackage item when bit 13 is set.
    pub subpackage: Option<Subpackage>,
}

impl Header {
    /// A plain header with a correct bit 14 for `phone` and `protocol_version`.
    pub fn new(msg_id: u16, phone: Phone, protocol_version: Option<u8>, serial: u16) -> Header {
        Header {
            msg_id,
            encryption: 0,
            version_flag: protocol_version.is_some(),
            reserved_bit15: false,
            protocol_version,
            phone,
            serial,
            subpackage: None,
        }
    }

    /// True for the 2019 layout.
    pub fn is_2019(&self) -> bool {
        self.protocol_version.is_some()
    }

    /// True when bit 14 named the other layout and the length cross-check overrode it.
    pub fn version_flag_contradicted(&self) -> bool {
        self.version_flag != self.is_2019()
    }

    /// Header length on the wire.
    pub fn encoded_len(&self) -> usize {
        let base = if self.is_2019() {
            HEADER_LEN_2019
        } else {
            HEADER_LEN_2013
        };
        base + if self.subpackage.is_some() {
            SUBPACKAGE_ITEM_LEN
        } else {
            0
        }
    }

    /// A header for a message answering this one: same phone and layout, canonical flags, no
    /// subpackage, no encryption.
    pub fn reply(&self, msg_id: u16, serial: u16) -> Header {
        Header::new(msg_id, self.phone, self.protocol_version, serial)
    }

    /// Writes the header for a body of `body_len` bytes.
    pub fn encode(&self, body_len: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if body_len > MAX_BODY_LEN {
            return Err(EncodeError::BodyTooLong { len: body_len });
        }
        let mut props = u16::try_from(body_len).map_err(|_| EncodeError::BodyTooLong { len: body_len })?;
        props |= (u16::from(self.encryption) & ENCRYPTION_MASK) << ENCRYPTION_SHIFT;
        if self.subpackage.is_some() {
            props |= SUBPACKAGE_BIT;
        }
        if self.version_flag {
            props |= VERSION_BIT;
        }
        if self.reserved_bit15 {
            props |= RESERVED_BIT;
        }
        out.extend_from_slice(&self.msg_id.to_be_bytes());
        out.extend_from_slice(&props.to_be_bytes());
        let width = match self.protocol_version {
            Some(version) => {
                out.push(version);
                10
            }
            None => 6,
        };
        out.extend_from_slice(&self.phone.bcd_for_width(width)?);
        out.extend_from_slice(&self.serial.to_be_bytes());
        if let Some(sub) = self.subpackage {
            out.extend_from_slice(&sub.total.to_be_bytes());
            out.extend_from_slice(&sub.index.to_be_bytes());
        }
        Ok(())
    }

    /// Parses the header of an unescaped frame (checksum already removed) and returns it with the
    /// body offset. Chooses the layout by the length cross-check described in the module header.
    pub fn parse(content: &[u8]) -> Result<(Header, usize), FrameError> {
        let too_short = FrameError::TooShort { len: content.len() + 1 };
        let (msg_id, props) = match content {
            [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
            _ => return Err(too_short),
        };
        let declared = props & BODY_LEN_MASK;
        let subpackage = props & SUBPACKAGE_BIT != 0;
        let flagged_2019 = props & VERSION_BIT != 0;
        let sub_len = if subpackage { SUBPACKAGE_ITEM_LEN } else { 0 };
        let header_len = |is_2019: bool| sub_len + if is_2019 { HEADER_LEN_2019 } else { HEADER_LEN_2013 };
        let fits = |is_2019: bool| content.len() == header_len(is_2019) + usize::from(declared);
        let is_2019 = if fits(flagged_2019) {
            flagged_2019
        } else if fits(!flagged_2019) {
            !flagged_2019
        } else if content.len() < header_len(flagged_2019) {
            return Err(too_short);
        } else {
            return Err(FrameError::BodyLengthMismatch {
                declared,
                present: content.len() - header_len(flagged_2019),
            });
        };
        let (protocol_version, phone_range, serial_at) = if is_2019 {
            let version = *content.get(4).ok_or(too_short.clone())?;
            (Some(version), 5..15, 15)
        } else {
            (None, 4..10, 10)
        };
        let phone = content
            .get(phone_range)
            .and_then(Phone::from_bcd)
            .ok_or(too_short.clone())?;
        let word = |at: usize| -> Result<u16, FrameError> {
            match content.get(at..at + 2) {
                Some([a, b]) => Ok(u16::from_be_bytes([*a, *b])),
                _ => Err(too_short.clone()),
            }
        };
        let serial = word(serial_at)?;
        let subpackage = if subpackage {
            Some(Subpackage {
                total: word(serial_at + 2)?,
                index: word(serial_at + 4)?,
            })
        } else {
            None
        };
        let header = Header {
            msg_id,
            encryption: ((props >> ENCRYPTION_SHIFT) & ENCRYPTION_MASK) as u8,
            version_flag: flagged_2019,
            reserved_bit15: props & RESERVED_BIT != 0,
            protocol_version,
            phone,
            serial,
            subpackage,
        };
        Ok((header, header_len(is_2019)))
    }
}
