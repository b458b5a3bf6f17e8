//! Stream framing: `0x7E` flags, `0x7D` escaping (checksum byte included) and the XOR check.
//!
//! Owns [`FrameDecoder`], a stream decoder (need more / one frame / classified error) independent of any runtime,
//! and the matching encoder. It yields [`Packet`]s: a parsed header plus the raw body bytes of one
//! frame. It must not interpret bodies, reassemble subpackages, read clocks or do I/O.
//!
//! Memory: the content between two flags is capped at [`MAX_ESCAPED_CONTENT_LEN`] bytes (the largest
//! legal frame, 21-byte header + 1023-byte body + checksum, with every byte escaped). A start flag
//! without an end flag within the cap is dropped, so a peer cannot make the caller buffer more than
//! the cap plus one read.

use bytes::{Buf, Bytes, BytesMut};

use super::error::{EncodeError, FrameError};
use super::header::{Header, HEADER_LEN_2013, HEADER_LEN_2019, MAX_BODY_LEN, SUBPACKAGE_ITEM_LEN};

/// Frame delimiter.
pub const FLAG: u8 = 0x7E;
/// Escape introducer: `0x7E` is sent as `7D 02`, `0x7D` as `7D 01`.
pub const ESCAPE: u8 = 0x7D;
/// Largest unescaped frame content: 21-byte header, 1023-byte body, checksum.
pub const MAX_CONTENT_LEN: usize = HEADER_LEN_2019 + SUBPACKAGE_ITEM_LEN + MAX_BODY_LEN + 1;
/// Cap on escaped bytes between the two flags (every byte escaped).
pub const MAX_ESCAPED_CONTENT_LEN: usize = 2 * MAX_CONTENT_LEN;

/// One frame: a header and the body bytes it carried (for a subpackage, only this packet's chunk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Parsed header.
    pub header: Header,
    /// Body bytes, unescaped, without checksum.
    pub body: Bytes,
}

impl Packet {
    /// Appends the complete frame (flags, escaped header, body and checksum) to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_frame(&self.header, &self.body, out)
    }

    /// The complete frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Writes one frame for `header` and `body`: header and body, XOR checksum, then escaping of
/// everything between the flags (the checksum too).
pub fn encode_frame(header: &Header, body: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut content = Vec::with_capacity(header.encoded_len() + body.len() + 1);
    header.encode(body.len(), &mut content)?;
    content.extend_from_slice(body);
    content.push(xor_checksum(&content));
    out.reserve(content.len() * 2 + 2);
    out.extend_from_slice(&[FLAG]);
    for byte in content {
        match byte {
            FLAG => out.extend_from_slice(&[ESCAPE, 0x02]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, 0x01]),
            other => out.extend_from_slice(&[other]),
        }
    }
    out.extend_from_slice(&[FLAG]);
    Ok(())
}

/// XOR of every byte (the standard's check code over header and body).
pub fn xor_checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// Stream decoder for one connection. Keeps only scan bookkeeping and counters; the bytes stay in
/// the caller's buffer.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// How far past the start flag the end flag has already been searched for.
    scanned: usize,
    /// Garbage consumed but not yet reported (reported once the next start flag shows up).
    pending_garbage: usize,
    /// Every byte dropped as garbage or as an over-long frame, for the session's counters.
    skipped_total: u64,
}

impl FrameDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes dropped so far (garbage outside frames and over-long frames).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_total
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// - `Ok(Some(packet))`: one frame was consumed.
    /// - `Ok(None)`: more bytes are needed. Nothing is consumed, except garbage before a start
    ///   flag, which is dropped at once and reported with the next start flag.
    /// - `Err(e)`: a corrupt stretch was consumed; log or count it and call again. After a bad
    ///   frame its closing flag is left in place, because it may be the next frame's start flag.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        loop {
            let Some(start) = buf.iter().position(|b| *b == FLAG) else {
                self.drop_garbage(buf, buf.len());
                return Ok(None);
            };
            if start > 0 {
                self.drop_garbage(buf, start);
            }
            if self.pending_garbage > 0 {
                let skipped = std::mem::take(&mut self.pending_garbage);
                return Err(FrameError::Garbage { skipped });
            }
            // buf[0] is a start flag from here on.
            let search_from = self.scanned.clamp(1, buf.len());
            let found = buf
                .get(search_from..)
                .and_then(|rest| rest.iter().position(|b| *b == FLAG))
                .map(|rel| rel + search_from);
            let Some(end) = found else {
                if buf.len() - 1 > MAX_ESCAPED_CONTENT_LEN {
                    let skipped = buf.len();
                    return Err(self.drop_too_long(buf, skipped));
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            self.scanned = 0;
            if end == 1 {
                // `7E 7E`: an empty frame, or one frame's end flag next to the next one's start.
                // Drop the first flag and keep the second as a start.
                buf.advance(1);
                continue;
            }
            if end - 1 > MAX_ESCAPED_CONTENT_LEN {
                return Err(self.drop_too_long(buf, end));
            }
            let parsed = buf.get(1..end).map(parse_content);
            return match parsed {
                Some(Ok(packet)) => {
                    buf.advance(end + 1);
                    Ok(Some(packet))
                }
                Some(Err(e)) => {
                    buf.advance(end);
                    Err(e)
                }
                None => {
                    buf.advance(end);
                    Err(FrameError::TooShort { len: 0 })
                }
            };
        }
    }

    fn drop_garbage(&mut self, buf: &mut BytesMut, count: usize) {
        buf.advance(count);
        self.scanned = 0;
        self.pending_garbage = self.pending_garbage.saturating_add(count);
        self.skipped_total = self.skipped_total.saturating_add(count as u64);
    }

    fn drop_too_long(&mut self, buf: &mut BytesMut, count: usize) -> FrameError {
        buf.advance(count);
        self.scanned = 0;
        self.skipped_total = self.skipped_total.saturating_add(count as u64);
        FrameError::TooLong {
            cap: MAX_ESCAPED_CONTENT_LEN,
            skipped: count,
        }
    }
}

/// Unescapes, verifies and parses the bytes between two flags.
fn parse_content(escaped: &[u8]) -> Result<Packet, FrameError> {
    let mut content = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter().enumerate();
    while let Some((offset, &byte)) = bytes.next() {
        if byte == ESCAPE {
            match bytes.next() {
                Some((_, 0x01)) => content.push(ESCAPE),
                Some((_, 0x02)) => content.push(FLAG),
                Some((_, &next)) => return Err(FrameError::InvalidEscape { offset, next }),
                None => return Err(FrameError::InvalidEscape { offset, next: FLAG }),
            }
        } else {
            content.push(byte);
        }
    }
    let Some((&received, covered)) = content.split_last() else {
        return Err(FrameError::TooShort { len: 0 });
    };
    if content.len() < HEADER_LEN_2013 + 1 {
        return Err(FrameError::TooShort { len: content.len() });
    }
    let computed = xor_checksum(covered);
    if computed != received {
        return Err(FrameError::Checksum { computed, received });
    }
    let (header, body_at) = Header::parse(covered)?;
    let body_end = covered.len();
    if body_at > body_end {
        return Err(FrameError::TooShort { len: content.len() });
    }
    let body = Bytes::from(content).slice(body_at..body_end);
    Ok(Packet { header, body })
}
