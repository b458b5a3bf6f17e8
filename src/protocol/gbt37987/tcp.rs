//! TCP stream framing: messages are delimited by the header's body-length field (facts sheet §2.1).
//!
//! Owns: splitting a byte stream into complete messages, the frame-length cap, and resynchronising
//! after garbage on the next plausible header (version 1, a message code of the table, length
//! within the cap). A header at the front of the buffer needs only version 1 and a length within
//! the cap, so unknown codes pass through in sync; only resynchronisation asks for a known code.
//! Must not decode bodies (that is `Message::decode`) or allocate from a peer-given length.

use bytes::{Buf, Bytes, BytesMut};

use super::error::FrameError;
use super::model::{HEADER_LEN, PROTOCOL_VERSION};
use super::table;

/// Default cap on a message body (256 KiB): a tag report of a few hundred tags with tag data is
/// well under it, and nothing in the table carries bulk data (firmware goes by FTP/TFTP).
pub const DEFAULT_MAX_BODY_LEN: usize = 256 * 1024;

/// Offset of the version byte within the header.
const VERSION_AT: usize = 8;
/// Offset just past the body-length field within the header.
const LENGTH_END: usize = 15;

/// Stream decoder for TCP links: `decode` returns `Ok(None)` until a whole message is buffered,
/// then the message bytes (header and body) exactly as received.
#[derive(Debug, Clone)]
pub struct TcpFrameDecoder {
    max_body_len: usize,
}

impl Default for TcpFrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a header could start at a position, from the bytes buffered so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plausible {
    Yes,
    No,
    NeedMore,
}

impl TcpFrameDecoder {
    /// A decoder with the default body cap [`DEFAULT_MAX_BODY_LEN`].
    pub fn new() -> Self {
        TcpFrameDecoder {
            max_body_len: DEFAULT_MAX_BODY_LEN,
        }
    }

    /// A decoder with a specific body cap in bytes.
    pub fn with_max_body_len(max_body_len: usize) -> Self {
        TcpFrameDecoder { max_body_len }
    }

    /// The body cap in bytes.
    pub fn max_body_len(&self) -> usize {
        self.max_body_len
    }

    /// Takes one complete message off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (nothing consumed). `Ok(Some(bytes))`: one message consumed.
    /// `Err(Garbage)`: bytes up to the next plausible header were consumed (the front could not
    /// start a header: version not 1). `Err(TooLong)`: a version-1 header declaring a body over the
    /// cap; its first 15 bytes were consumed and the stream resynchronises on the next plausible
    /// header. Either way call again for the rest of the stream.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let declared = self.declared_body_len(buf, 0);
        if buf.get(VERSION_AT) == Some(&PROTOCOL_VERSION) {
            if let Some(len) = declared.filter(|&len| len > self.max_body_len as u64) {
                buf.advance(LENGTH_END);
                return Err(FrameError::TooLong {
                    len,
                    max: self.max_body_len,
                });
            }
        }
        let skipped = match self.plausible(buf, 0, false) {
            Plausible::No => (1..buf.len())
                .find(|&at| self.plausible(buf, at, true) != Plausible::No)
                .unwrap_or(buf.len()),
            Plausible::Yes | Plausible::NeedMore => 0,
        };
        if skipped > 0 {
            buf.advance(skipped);
            return Err(FrameError::Garbage { skipped });
        }
        let Some(body_len) = declared else {
            return Ok(None);
        };
        // Safe: body_len is within the cap, which is a usize.
        let total = HEADER_LEN.saturating_add(body_len as usize);
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(buf.split_to(total).freeze()))
    }

    fn declared_body_len(&self, buf: &[u8], at: usize) -> Option<u64> {
        let field = buf.get(at.checked_add(11)?..at.checked_add(LENGTH_END)?)?;
        Some(u64::from(u32::from_be_bytes(field.try_into().ok()?)))
    }

    /// Whether a header can start at `at`; `known_code` also asks for a message code of the table.
    fn plausible(&self, buf: &[u8], at: usize, known_code: bool) -> Plausible {
        match buf.get(at.saturating_add(VERSION_AT)) {
            None => return Plausible::NeedMore,
            Some(&v) if v != PROTOCOL_VERSION => return Plausible::No,
            Some(_) => {}
        }
        if known_code {
            let code_at = at.saturating_add(VERSION_AT + 1);
            match buf.get(code_at..code_at.saturating_add(2)) {
                None => return Plausible::NeedMore,
                Some(&[hi, lo]) if table::message_by_code(u16::from_be_bytes([hi, lo])).is_none() => {
                    return Plausible::No
                }
                Some(_) => {}
            }
        }
        match self.declared_body_len(buf, at) {
            None => Plausible::NeedMore,
            Some(len) if len > self.max_body_len as u64 => Plausible::No,
            Some(_) => Plausible::Yes,
        }
    }
}
