//! Multimedia and pass-through bodies: 0x0800 event, 0x0801 upload, 0x8800 upload reply,
//! 0x0900/0x8900 pass-through, 0x0901 compressed upload.
//!
//! Owns these layouts, including 0x0801's 28-byte location (absent in 2011). The media data itself
//! is opaque bytes. Must not decompress 0x0901 (the gzip body is forwarded as is).

use super::error::{BodyError, EncodeError};
use super::header::Edition;
use super::location::LocationBasic;
use super::wire::{count_u8, Reader};

/// 0x0800 multimedia event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaEvent {
    /// Media id.
    pub media_id: u32,
    /// 0 image, 1 audio, 2 video.
    pub media_type: u8,
    /// 0 JPEG, 1 TIF, 2 MP3, 3 WAV, 4 WMV.
    pub format: u8,
    /// Event code.
    pub event: u8,
    /// Channel id.
    pub channel: u8,
}

impl MediaEvent {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(MediaEvent {
            media_id: r.u32("media id")?,
            media_type: r.u8("media type")?,
            format: r.u8("format")?,
            event: r.u8("event")?,
            channel: r.u8("channel")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.media_id.to_be_bytes());
        out.extend_from_slice(&[self.media_type, self.format, self.event, self.channel]);
    }
}

/// 0x0801 multimedia upload (decode the reassembled body: only packet 1 carries this prefix).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaUpload {
    /// Media id, type, format, event and channel.
    pub event: MediaEvent,
    /// Basic location (2013 and later; `None` in 2011).
    pub location: Option<LocationBasic>,
    /// Media bytes.
    pub data: Vec<u8>,
}

impl MediaUpload {
    pub(crate) fn decode(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let event = MediaEvent::decode(r)?;
        let location = if edition == Edition::V2011 {
            None
        } else {
            Some(LocationBasic::decode(r)?)
        };
        Ok(MediaUpload {
            event,
            location,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        self.event.encode(out);
        if let Some(location) = &self.location {
            location.encode(out);
        }
        out.extend_from_slice(&self.data);
    }
}

/// 0x8800 multimedia upload reply: ids of packets to resend (empty = all received).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaUploadReply {
    /// Media id.
    pub media_id: u32,
    /// Packet ids to resend (count BYTE).
    pub retransmit: Vec<u16>,
}

impl MediaUploadReply {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let media_id = r.u32("media id")?;
        let count = usize::from(r.u8("retransmit count")?);
        r.check_count("retransmit count", count, 2)?;
        let retransmit = (0..count).map(|_| r.u16("packet id")).collect::<Result<_, _>>()?;
        Ok(MediaUploadReply { media_id, retransmit })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.media_id.to_be_bytes());
        out.push(count_u8("retransmit ids", self.retransmit.len())?);
        for id in &self.retransmit {
            out.extend_from_slice(&id.to_be_bytes());
        }
        Ok(())
    }
}

/// 0x0900 (up) / 0x8900 (down) pass-through: type BYTE + content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassThrough {
    /// 0x00 GNSS detail, 0x0B IC card, 0x41/0x42 serial ports, 0xF0-0xFF user-defined.
    pub kind: u8,
    /// Content bytes.
    pub data: Vec<u8>,
}

impl PassThrough {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(PassThrough {
            kind: r.u8("pass-through type")?,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind);
        out.extend_from_slice(&self.data);
    }
}

/// Reads 0x0901: DWORD compressed length + that many gzip bytes.
pub(crate) fn decode_compressed(r: &mut Reader<'_>) -> Result<Vec<u8>, BodyError> {
    let len = r.u32("compressed length")?;
    Ok(r.take(usize::try_from(len).unwrap_or(usize::MAX), "compressed data")?
        .to_vec())
}

/// Writes 0x0901.
pub(crate) fn encode_compressed(data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = u32::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong {
        field: "compressed data",
        len: data.len(),
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}
