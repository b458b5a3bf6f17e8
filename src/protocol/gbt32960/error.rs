//! Typed errors of the GB/T 32960 codec.
//!
//! Owns: `DecodeError` (stream/frame level; carries the header so the server can answer a bad
//! frame with an error reply), `BodyError` (why a data unit did not parse), `EncodeError`.
//! Must not: lose the information a caller needs to log, count or answer a bad frame.

use thiserror::Error;

use super::frame::{Frame, FrameHeader};
use super::reply;
use super::types::{Edition, ResponseFlag, Time};

/// Why a data unit does not match its layout.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// The data unit ends inside a field.
    #[error("data unit ends at offset {offset}: {needed} bytes needed, {remaining} left")]
    Truncated {
        /// Offset in the data unit where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// The layout is complete but bytes are left over.
    #[error("{count} bytes left after the last field of the data unit")]
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
}

/// A corrupt or unusable part of the byte stream. The bytes it describes have been consumed
/// (or skipped), so the caller logs it, counts `frames_bad` and keeps decoding the rest.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Bytes before a `##`/`$$` start marker were skipped.
    #[error("skipped {skipped} bytes of garbage before a start marker")]
    Garbage {
        /// Number of bytes dropped.
        skipped: usize,
    },
    /// The header declares a data unit longer than the cap; only the two start bytes were
    /// consumed so the decoder can resynchronise on a later marker.
    #[error("frame declares a {declared}-byte data unit, over the {max}-byte cap")]
    DataUnitTooLong {
        /// The header of the rejected frame.
        header: FrameHeader,
        /// Declared data-unit length.
        declared: usize,
        /// The decoder's cap.
        max: usize,
    },
    /// The BCC does not match; the whole declared frame was consumed.
    #[error("BCC mismatch: computed {computed:#04x}, frame carries {received:#04x}")]
    BadChecksum {
        /// The header of the rejected frame (command, VIN, edition for the error reply).
        header: FrameHeader,
        /// Collection time read from the data unit, when the command's data starts with one.
        time: Option<Time>,
        /// XOR computed over the received bytes.
        computed: u8,
        /// Check byte the frame carries.
        received: u8,
    },
    /// The BCC is right but the data unit does not match the command's layout.
    #[error("malformed data unit: {source}")]
    MalformedDataUnit {
        /// The header of the rejected frame.
        header: FrameHeader,
        /// Collection time read from the data unit, when there was one.
        time: Option<Time>,
        /// What did not match.
        source: BodyError,
    },
    /// One-shot decoding only: the slice ends before the frame does.
    #[error("incomplete frame: {have} of {need} bytes")]
    Incomplete {
        /// Bytes given.
        have: usize,
        /// Bytes the frame needs (24 while the header is incomplete).
        need: usize,
    },
    /// One-shot decoding only: bytes follow the frame.
    #[error("{count} bytes follow the frame")]
    TrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
}

impl DecodeError {
    /// The header of the rejected frame, when it was read.
    pub fn header(&self) -> Option<&FrameHeader> {
        match self {
            DecodeError::DataUnitTooLong { header, .. }
            | DecodeError::BadChecksum { header, .. }
            | DecodeError::MalformedDataUnit { header, .. } => Some(header),
            DecodeError::Garbage { .. } | DecodeError::Incomplete { .. } | DecodeError::TrailingBytes { .. } => None,
        }
    }

    /// The collection time of the rejected frame, when it could be read.
    pub fn message_time(&self) -> Option<Time> {
        match self {
            DecodeError::BadChecksum { time, .. } | DecodeError::MalformedDataUnit { time, .. } => *time,
            _ => None,
        }
    }

    /// The error reply the standard asks for (same command and VIN, response flag `flag`,
    /// usually [`ResponseFlag::ERROR`]; data unit = the frame's own time, or `now` if it had
    /// none). `None` when there is no header or the rejected frame was itself a response,
    /// which must not be answered.
    pub fn error_reply(&self, flag: ResponseFlag, now: Time) -> Option<Frame> {
        let header = self.header()?;
        reply::error_reply(header, flag, self.message_time().unwrap_or(now))
    }
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The data unit is longer than a frame allows.
    #[error("data unit is {len} bytes, over the {max}-byte maximum")]
    DataUnitTooLong {
        /// Encoded length.
        len: usize,
        /// The maximum (65531).
        max: usize,
    },
    /// A list has more entries than its count field can say.
    #[error("{what} has {len} entries, more than the {max} its count field allows")]
    CountOverflow {
        /// Which list.
        what: &'static str,
        /// Entries given.
        len: usize,
        /// Largest count that is not a marker.
        max: usize,
    },
    /// A length-prefixed field is longer than its prefix allows.
    #[error("{what} is {len} bytes, more than {max}")]
    FieldTooLong {
        /// Which field.
        what: &'static str,
        /// Bytes given.
        len: usize,
        /// Maximum.
        max: usize,
    },
    /// A fixed-width field has the wrong length.
    #[error("{what} must be {expected} bytes, got {len}")]
    FieldLength {
        /// Which field.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Bytes given.
        len: usize,
    },
    /// A `;`-separated field contains `;`.
    #[error("{what} contains the ';' separator")]
    SeparatorInField {
        /// Which field.
        what: &'static str,
    },
    /// A body variant of the other edition (e.g. a 2016 vehicle block in a `$$` frame).
    #[error("{what} is not part of the {edition:?} edition")]
    WrongEdition {
        /// Which item.
        what: &'static str,
        /// The frame's edition.
        edition: Edition,
    },
    /// Raw left-over bytes (`Unparsed`) must be the last element of their list.
    #[error("unparsed bytes must be the last element of {what}")]
    UnparsedNotLast {
        /// Which list.
        what: &'static str,
    },
    /// A parameter value whose kind does not match the id's width in this edition (or an
    /// id of unknown width with a typed value).
    #[error("parameter {id:#04x} has a value of the wrong width for {edition:?}")]
    ParamWidth {
        /// Parameter id.
        id: u8,
        /// The frame's edition.
        edition: Edition,
    },
    /// A parameter list whose `total` disagrees with its items.
    #[error("parameter list says {total} items but has {len}")]
    ParamCountMismatch {
        /// The declared total.
        total: u8,
        /// Items given.
        len: usize,
    },
}
