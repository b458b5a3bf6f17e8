//! Typed errors of the GB/T 37987 codec, one enum per layer.
//!
//! Owns: the classification the session layer logs and counts (e.g. `frames_bad`).
//! Must not carry I/O errors or anything outside this codec.

use thiserror::Error;

/// A complete message (header + body) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes than the 19-byte header.
    #[error("message of {available} bytes is shorter than the {needed}-byte header")]
    TooShort {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The header's body length disagrees with the bytes present.
    #[error("header declares a {declared}-byte body but {actual} bytes follow the header")]
    BodyLengthMismatch {
        /// Length field of the header.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// A parameter's TLV header or length does not fit the bytes given.
    #[error("parameter TLV truncated: needs {needed} bytes, {available} present")]
    TruncatedParameter {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
}

/// A message or parameter could not be put on the wire in the chosen dialect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A length or count exceeds what the dialect's prefix can carry.
    #[error("{what} of {len} does not fit the {max} limit of this dialect")]
    TooLong {
        /// Which prefix overflowed.
        what: &'static str,
        /// The value that did not fit.
        len: u64,
        /// Largest value allowed.
        max: u64,
    },
    /// A bit array whose bit count disagrees with its data bytes.
    #[error("bit array of {bit_count} bits carries {data_len} data bytes")]
    BitArrayMismatch {
        /// Declared bits.
        bit_count: u64,
        /// Data bytes present.
        data_len: usize,
    },
}

/// A name that is in no row of the code table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} {name:?} is not in the GB/T 37987 code table")]
pub struct UnknownName {
    /// "message" or "parameter".
    pub kind: &'static str,
    /// The name asked for.
    pub name: String,
}

/// A stream (TCP) or serial frame was rejected; the bytes named were consumed so the caller can
/// count `frames_bad` and call the decoder again for the rest of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Bytes that cannot start a frame were skipped.
    #[error("skipped {skipped} bytes of garbage before a frame start")]
    Garbage {
        /// Bytes skipped.
        skipped: usize,
    },
    /// A frame longer than the decoder's cap; its bytes were dropped.
    #[error("frame of at least {len} bytes exceeds the {max}-byte cap")]
    TooLong {
        /// Length seen (declared or accumulated).
        len: u64,
        /// The decoder's cap.
        max: usize,
    },
    /// A serial frame with 0x7D followed by a byte other than 0x5E/0x5D, or ending in 0x7D.
    #[error("invalid escape sequence at byte {offset} of the serial frame")]
    BadEscape {
        /// Offset in the escaped frame content.
        offset: usize,
    },
    /// A serial frame too short to hold addresses, header and check code.
    #[error("serial frame of {len} bytes is too short (minimum {min})")]
    TooShort {
        /// Unescaped content length.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The serial check code does not match.
    #[error("serial check code mismatch: frame says {received:#06x}, computed {computed:#06x}")]
    CrcMismatch {
        /// Check code in the frame.
        received: u16,
        /// Check code computed over the frame.
        computed: u16,
    },
    /// The message inside a serial frame is inconsistent with its header.
    #[error("serial frame message: {0}")]
    Message(#[from] DecodeError),
}

/// A JSON document could not be mapped to a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    /// The document (or a part) is not of the expected JSON type.
    #[error("{path}: expected {expected}")]
    WrongType {
        /// Where in the document.
        path: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A required member is missing.
    #[error("{path}: missing {member:?}")]
    Missing {
        /// Where in the document.
        path: String,
        /// The member name.
        member: String,
    },
    /// A member name that is no field or parameter of the enclosing item.
    #[error("{path}: unknown member {member:?}")]
    UnknownMember {
        /// Where in the document.
        path: String,
        /// The member name.
        member: String,
    },
    /// A number outside the field's range.
    #[error("{path}: {value} is out of range for {ty}")]
    OutOfRange {
        /// Where in the document.
        path: String,
        /// The number as written.
        value: String,
        /// The field type.
        ty: &'static str,
    },
    /// A hex string that is not valid hex.
    #[error("{path}: invalid hex string")]
    BadHex {
        /// Where in the document.
        path: String,
    },
    /// A message or parameter name not in the code table.
    #[error(transparent)]
    UnknownName(#[from] UnknownName),
}
