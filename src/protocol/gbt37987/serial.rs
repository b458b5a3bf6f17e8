//! Serial (RS-232/RS-485) framing: `7E | src | dst | message | CRC16 (hi, lo) | 7E`, with
//! `7E → 7D 5E` and `7D → 7D 5D` escaping over addresses, message and check code (facts sheet §2.5).
//!
//! Owns: escaping, the per-dialect CRC16 (hb-2017: CRC-CCITT 0x1021/0 over the unescaped bytes;
//! gbt37987-2019: 0x8005/0xFFFF non-reflected over the escaped bytes), the frame cap and resync.
//! Must not interpret the message beyond checking its header length (that is `Message::decode`),
//! and must not allocate more than the bytes actually buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::codec::decode_header;
use super::dialect::{Crc16Spec, CrcScope, Dialect};
use super::error::{DecodeError, FrameError};
use super::model::{Message, HEADER_LEN};

/// Frame delimiter.
pub const FLAG: u8 = 0x7E;
/// Escape byte.
pub const ESCAPE: u8 = 0x7D;
/// Source address S4 used as a placeholder for the host.
pub const PLACEHOLDER_SRC: u8 = 0x00;
/// Destination address S4 used as a placeholder for the reader.
pub const PLACEHOLDER_DST: u8 = 0xFF;
/// Default cap on the escaped bytes between two flags (64 KiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Addresses, CRC: the bytes a frame carries besides the message.
const OVERHEAD: usize = 4;

/// One verified serial frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialFrame {
    /// Source device address.
    pub src: u8,
    /// Destination device address.
    pub dst: u8,
    /// The message (header and body), unescaped.
    pub message: Bytes,
}

impl SerialFrame {
    /// Decodes the carried message.
    pub fn decode_message(&self, dialect: Dialect) -> Result<Message, DecodeError> {
        Message::decode(&self.message, dialect)
    }
}

/// Stream deframer for serial links of one dialect.
#[derive(Debug, Clone)]
pub struct SerialDeframer {
    dialect: Dialect,
    max_frame_len: usize,
}

impl SerialDeframer {
    /// A deframer with the default cap [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new(dialect: Dialect) -> Self {
        SerialDeframer {
            dialect,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// A deframer with a specific cap on the escaped bytes between flags.
    pub fn with_max_frame_len(dialect: Dialect, max_frame_len: usize) -> Self {
        SerialDeframer { dialect, max_frame_len }
    }

    /// Takes one frame off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed. `Ok(Some(frame))`: one frame consumed. `Err(Garbage)`:
    /// bytes before a flag were skipped. Other errors: one corrupt frame was consumed. The closing
    /// flag is left in `buf` so it can open the next frame: a frame cut short by line noise then
    /// costs only itself, and shared flags (`7E 7E`) are accepted.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<SerialFrame>, FrameError> {
        loop {
            match buf.iter().position(|&b| b == FLAG) {
                None if buf.is_empty() => return Ok(None),
                None => {
                    let skipped = buf.len();
                    buf.clear();
                    return Err(FrameError::Garbage { skipped });
                }
                Some(0) => {}
                Some(skipped) => {
                    buf.advance(skipped);
                    return Err(FrameError::Garbage { skipped });
                }
            }
            let content_len = buf.iter().skip(1).position(|&b| b == FLAG);
            match content_len {
                // An empty frame: the first flag closed an earlier frame; open with the second.
                Some(0) => buf.advance(1),
                Some(len) if len > self.max_frame_len => {
                    buf.advance(1 + len);
                    return Err(self.too_long(len));
                }
                Some(len) => {
                    let escaped = buf.split_to(1 + len).split_off(1);
                    return self.verify(&escaped).map(Some);
                }
                None if buf.len() - 1 > self.max_frame_len => {
                    let len = buf.len() - 1;
                    buf.clear();
                    return Err(self.too_long(len));
                }
                None => return Ok(None),
            }
        }
    }

    fn too_long(&self, len: usize) -> FrameError {
        FrameError::TooLong {
            len: len as u64,
            max: self.max_frame_len,
        }
    }

    fn verify(&self, escaped: &[u8]) -> Result<SerialFrame, FrameError> {
        let content = unescape(escaped)?;
        let min = OVERHEAD + HEADER_LEN;
        if content.len() < min {
            return Err(FrameError::TooShort {
                len: content.len(),
                min,
            });
        }
        let (covered, crc_bytes) = content.split_at(content.len() - 2);
        let received = u16::from_be_bytes(crc_bytes.try_into().unwrap_or_default());
        let computed = frame_crc(self.dialect.profile().crc, covered);
        if received != computed {
            return Err(FrameError::CrcMismatch { received, computed });
        }
        let (addresses, message) = covered.split_at(2);
        let (_, declared) = decode_header(message)?;
        let actual = message.len() - HEADER_LEN;
        if usize::try_from(declared).ok() != Some(actual) {
            return Err(DecodeError::BodyLengthMismatch { declared, actual }.into());
        }
        Ok(SerialFrame {
            src: addresses.first().copied().unwrap_or_default(),
            dst: addresses.get(1).copied().unwrap_or_default(),
            message: Bytes::copy_from_slice(message),
        })
    }
}

/// Builds a complete serial frame (flags included) carrying `message` from `src` to `dst`.
pub fn encode_serial_frame(dialect: Dialect, src: u8, dst: u8, message: &[u8]) -> Vec<u8> {
    let mut covered = Vec::with_capacity(message.len() + 2);
    covered.push(src);
    covered.push(dst);
    covered.extend_from_slice(message);
    let crc = frame_crc(dialect.profile().crc, &covered);
    let mut out = Vec::with_capacity(covered.len() + covered.len() / 8 + 8);
    out.push(FLAG);
    escape_into(&covered, &mut out);
    escape_into(&crc.to_be_bytes(), &mut out);
    out.push(FLAG);
    out
}

/// The check code of addresses + message (`covered`, unescaped) under the dialect's rules.
fn frame_crc(spec: Crc16Spec, covered: &[u8]) -> u16 {
    match spec.scope {
        CrcScope::Unescaped => crc16(spec.poly, spec.init, covered.iter().copied()),
        CrcScope::Escaped => {
            let mut escaped = Vec::with_capacity(covered.len() + 8);
            escape_into(covered, &mut escaped);
            crc16(spec.poly, spec.init, escaped)
        }
    }
}

/// Non-reflected CRC-16 without final XOR (XMODEM with 0x1021/0, CRC-16/CMS with 0x8005/0xFFFF).
pub fn crc16(poly: u16, init: u16, bytes: impl IntoIterator<Item = u8>) -> u16 {
    bytes.into_iter().fold(init, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |c, _| {
            if c & 0x8000 != 0 {
                (c << 1) ^ poly
            } else {
                c << 1
            }
        })
    })
}

/// Appends `bytes` escaped (`7E → 7D 5E`, `7D → 7D 5D`).
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            FLAG => out.extend_from_slice(&[ESCAPE, 0x5E]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, 0x5D]),
            other => out.push(other),
        }
    }
}

/// Reverses the escaping; any other byte after 0x7D, or a final 0x7D, is an error.
pub fn unescape(escaped: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter().copied().enumerate();
    while let Some((offset, b)) = bytes.next() {
        if b != ESCAPE {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some((_, 0x5E)) => out.push(FLAG),
            Some((_, 0x5D)) => out.push(ESCAPE),
            _ => return Err(FrameError::BadEscape { offset }),
        }
    }
    Ok(out)
}
