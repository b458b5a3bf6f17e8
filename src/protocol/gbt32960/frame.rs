//! Framing: finding `##`/`$$`, the 24-byte header, the length cap, the BCC, and the stream
//! decoder that turns a growing `BytesMut` into frames.
//!
//! Owns: `Frame`, `FrameHeader`, `FrameDecoder`, one-shot `decode_frame`, frame encoding, and
//! the small accessors the session needs (trimmed VIN, topic suffix, message time).
//! Must not: read clocks, do I/O, allocate before the declared bytes have arrived, or consume
//! bytes when it only needs more.
//!
//! Cap: a data unit may be at most 65531 bytes (the standard's maximum), so a frame is at most
//! 65556 bytes; a decoder may be given a lower cap.

use bytes::{Buf, BufMut, BytesMut};
use serde_json::Value;

use super::body::{starts_with_time, Body, Origin};
use super::error::{DecodeError, EncodeError};
use super::json::{frame_json, frame_to_json, write_frame_json};
use super::topic::TopicSuffix;
use super::types::{Command, Edition, Encryption, ResponseFlag, Time, Vin};
use crate::protocol::json::JsonWriter;

/// Largest data unit the standard allows.
pub const MAX_DATA_LEN: usize = 65_531;
/// Start bytes, command, flag, VIN, encryption and length.
pub const HEADER_LEN: usize = 24;
/// Largest frame: header, data unit and BCC.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_DATA_LEN + 1;

/// The fixed 24-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Edition chosen by the start bytes.
    pub edition: Edition,
    /// Command id.
    pub command: Command,
    /// Response flag.
    pub response: ResponseFlag,
    /// Unique id (VIN), raw.
    pub vin: Vin,
    /// Encryption byte.
    pub encryption: Encryption,
    /// Declared data-unit length.
    pub data_len: u16,
}

impl FrameHeader {
    /// Parses a header; `None` when `bytes` is short or does not start with `##`/`$$`.
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let [m0, m1, command, response, rest @ ..] = header;
        let edition = Edition::from_start_marker([*m0, *m1])?;
        let (vin, [encryption, len_hi, len_lo]) = rest.split_first_chunk::<17>()? else {
            return None;
        };
        Some(FrameHeader {
            edition,
            command: Command(*command),
            response: ResponseFlag(*response),
            vin: Vin(*vin),
            encryption: Encryption(*encryption),
            data_len: u16::from_be_bytes([*len_hi, *len_lo]),
        })
    }

    /// Total frame length this header announces.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + usize::from(self.data_len) + 1
    }
}

/// A decoded (or to-be-encoded) frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Edition (`##` or `$$`).
    pub edition: Edition,
    /// Command id.
    pub command: Command,
    /// Response flag.
    pub response: ResponseFlag,
    /// Unique id (VIN), raw with its padding.
    pub vin: Vin,
    /// Encryption byte.
    pub encryption: Encryption,
    /// The data unit.
    pub body: Body,
}

impl Frame {
    /// A plain-text frame (encryption 0x01).
    pub fn new(edition: Edition, command: Command, response: ResponseFlag, vin: Vin, body: Body) -> Frame {
        Frame {
            edition,
            command,
            response,
            vin,
            encryption: Encryption::NONE,
            body,
        }
    }

    /// The VIN as used in MQTT topics: trailing NUL and space padding removed.
    pub fn vin(&self) -> String {
        self.vin.topic_text()
    }

    /// The edition (`##` 2016 or `$$` 2025).
    pub fn edition(&self) -> Edition {
        self.edition
    }

    /// The command id.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The response flag (0xFE for a command).
    pub fn response_flag(&self) -> ResponseFlag {
        self.response
    }

    /// The upstream topic suffix for this frame, or `None` for heartbeat/time sync.
    pub fn topic_suffix(&self) -> Option<TopicSuffix> {
        TopicSuffix::for_frame(self.command, self.response)
    }

    /// The time at the start of the data unit, if the body has one.
    pub fn message_time(&self) -> Option<Time> {
        self.body.message_time()
    }

    /// The EMQX JSON payload `{"Cmd","Encrypt","Vin","Data"}`.
    pub fn to_json(&self) -> Value {
        frame_to_json(self)
    }

    /// Appends the EMQX JSON payload, serialised (what the gateway publishes), to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_frame_json(self, out);
    }

    /// Writes the EMQX JSON payload with `writer` (which can tell how it went: see
    /// [`JsonWriter::reordered_objects`]).
    pub fn write_json_with(&self, writer: &mut JsonWriter<'_>) {
        frame_json(self, writer);
    }

    /// The EMQX JSON payload, serialised.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out);
        out
    }

    /// Encodes the frame (start bytes, header, data unit, BCC).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut data = Vec::new();
        self.body.encode(self.edition, &mut data)?;
        let data_len = u16::try_from(data.len())
            .ok()
            .filter(|len| usize::from(*len) <= MAX_DATA_LEN)
            .ok_or(EncodeError::DataUnitTooLong {
                len: data.len(),
                max: MAX_DATA_LEN,
            })?;
        let mut out = Vec::with_capacity(HEADER_LEN + data.len() + 1);
        out.extend_from_slice(&self.edition.start_marker());
        out.put_u8(self.command.0);
        out.put_u8(self.response.0);
        out.extend_from_slice(&self.vin.0);
        out.put_u8(self.encryption.0);
        out.put_u16(data_len);
        out.extend_from_slice(&data);
        out.put_u8(bcc(out.get(2..).unwrap_or_default()));
        Ok(out)
    }

    /// Encodes the frame onto the end of `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        dst.extend_from_slice(&self.encode()?);
        Ok(())
    }
}

/// XOR of every byte (the caller passes command id through the last data byte).
pub fn bcc(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

fn is_marker_byte(byte: u8) -> bool {
    byte == b'#' || byte == b'$'
}

/// Where the next frame starts, or how many trailing bytes to keep while none is visible.
enum StartSearch {
    /// A start marker begins at this offset.
    Found(usize),
    /// No marker; keep this many trailing bytes (a lone `#`/`$` may be half of one).
    NotFound { keep: usize },
}

fn find_start(buf: &[u8]) -> StartSearch {
    let found = buf
        .windows(2)
        .position(|pair| matches!(pair, [a, b] if a == b && is_marker_byte(*a)));
    match found {
        Some(mut start) => {
            // In `###…` the frame starts at the last pair: 0x23/0x24 are reserved command ids,
            // so a third marker byte is far likelier a stray byte before the real marker.
            while let (Some(marker), Some(next)) = (buf.get(start), buf.get(start + 2)) {
                if marker != next {
                    break;
                }
                start += 1;
            }
            StartSearch::Found(start)
        }
        None => StartSearch::NotFound {
            keep: usize::from(buf.last().is_some_and(|b| is_marker_byte(*b))),
        },
    }
}

/// Decodes a complete frame whose header has been parsed and whose length is right.
fn decode_complete(bytes: &[u8], header: FrameHeader, origin: Origin) -> Result<Frame, DecodeError> {
    let data_end = HEADER_LEN + usize::from(header.data_len);
    let data = bytes.get(HEADER_LEN..data_end).unwrap_or_default();
    let time = (starts_with_time(header.command) && header.encryption.is_plaintext())
        .then(|| data.first_chunk::<6>().copied().map(Time::from_bytes))
        .flatten();
    let computed = bcc(bytes.get(2..data_end).unwrap_or_default());
    let received = bytes.get(data_end).copied().unwrap_or_default();
    if computed != received {
        return Err(DecodeError::BadChecksum {
            header,
            time,
            computed,
            received,
        });
    }
    let body = Body::decode(&header, data, origin).map_err(|source| DecodeError::MalformedDataUnit {
        header,
        time,
        source,
    })?;
    Ok(Frame {
        edition: header.edition,
        command: header.command,
        response: header.response,
        vin: header.vin,
        encryption: header.encryption,
        body,
    })
}

/// Stream decoder: feed it the connection's read buffer after every read.
///
/// `decode` returns `Ok(None)` when it needs more bytes (nothing consumed), `Ok(Some(frame))`
/// after consuming one frame, and `Err` after consuming or skipping a corrupt part of the
/// stream (call it again for the rest). Split and merged reads are fine.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    origin: Origin,
    max_data_len: usize,
    skipped_total: u64,
}

impl FrameDecoder {
    /// A decoder for frames sent by `origin`, capped at [`MAX_DATA_LEN`].
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            max_data_len: MAX_DATA_LEN,
            skipped_total: 0,
        }
    }

    /// Lowers the data-unit cap (never above [`MAX_DATA_LEN`]).
    pub fn with_max_data_len(mut self, max_data_len: usize) -> Self {
        self.max_data_len = max_data_len.min(MAX_DATA_LEN);
        self
    }

    /// Total garbage bytes skipped so far (also reported one by one as `Garbage` errors).
    pub fn skipped_bytes_total(&self) -> u64 {
        self.skipped_total
    }

    /// Decodes the next frame from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let skip = match find_start(buf) {
            StartSearch::Found(start) => start,
            StartSearch::NotFound { keep } => buf.len().saturating_sub(keep),
        };
        if skip > 0 {
            buf.advance(skip);
            self.skipped_total = self
                .skipped_total
                .saturating_add(u64::try_from(skip).unwrap_or(u64::MAX));
            return Err(DecodeError::Garbage { skipped: skip });
        }
        let Some(header) = FrameHeader::parse(buf) else {
            return Ok(None);
        };
        let declared = usize::from(header.data_len);
        if declared > self.max_data_len {
            // Drop only the marker: the "frame" may be garbage that happened to contain one.
            buf.advance(2);
            return Err(DecodeError::DataUnitTooLong {
                header,
                declared,
                max: self.max_data_len,
            });
        }
        let frame_len = header.frame_len();
        if buf.len() < frame_len {
            return Ok(None);
        }
        let bytes = buf.split_to(frame_len);
        decode_complete(&bytes, header, self.origin).map(Some)
    }
}

/// Decodes exactly one frame from `bytes` (e.g. a stored raw frame). Leading garbage, a short
/// slice and trailing bytes are errors.
pub fn decode_frame(bytes: &[u8], origin: Origin) -> Result<Frame, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    match FrameDecoder::new(origin).decode(&mut buf)? {
        Some(frame) if buf.is_empty() => Ok(frame),
        Some(_) => Err(DecodeError::TrailingBytes { count: buf.len() }),
        None => Err(DecodeError::Incomplete {
            have: bytes.len(),
            need: FrameHeader::parse(bytes).map_or(HEADER_LEN, |h| h.frame_len()),
        }),
    }
}
