//! Typed errors of the JT/T 808 codec.
//!
//! Owns one error enum per layer: stream framing, body decoding, encoding, cloud JSON and subpackage
//! reassembly. Every variant says what the peer (or the caller) did wrong so the session can log it,
//! count it (`frames_bad`) and carry on. Must not carry borrowed data or anything that allocates from
//! a peer-given length.

use thiserror::Error;

/// A corrupt stretch of the byte stream. The decoder has already consumed the bad bytes when it
/// returns one of these, so the caller logs/counts it and calls `decode` again.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Bytes that were not inside a `0x7E ... 0x7E` frame were dropped.
    #[error("skipped {skipped} bytes of garbage before a frame start flag")]
    Garbage {
        /// How many bytes were dropped.
        skipped: usize,
    },
    /// No closing flag within the frame cap; the start flag and the capped bytes were dropped.
    #[error("no end flag within {cap} bytes; {skipped} bytes dropped")]
    TooLong {
        /// The cap on escaped bytes between the flags.
        cap: usize,
        /// How many bytes were dropped.
        skipped: usize,
    },
    /// `0x7D` followed by something other than `0x01`/`0x02`.
    #[error("invalid escape 0x7D 0x{next:02X} at offset {offset}")]
    InvalidEscape {
        /// Offset of the `0x7D` inside the frame content.
        offset: usize,
        /// The byte that followed it (`0x7E` when the escape was the last content byte).
        next: u8,
    },
    /// Fewer bytes than the smallest header plus the checksum.
    #[error("frame of {len} unescaped bytes is shorter than a header and checksum")]
    TooShort {
        /// Unescaped content length including the checksum byte.
        len: usize,
    },
    /// XOR check failed.
    #[error("checksum mismatch: computed 0x{computed:02X}, frame says 0x{received:02X}")]
    Checksum {
        /// XOR over header and body.
        computed: u8,
        /// The checksum byte in the frame.
        received: u8,
    },
    /// The body-length field fits neither the 12/16-byte nor the 17/21-byte header.
    #[error(
        "body length field {declared} fits neither header layout ({present} bytes after the header the flag names)"
    )]
    BodyLengthMismatch {
        /// Length from the body properties.
        declared: u16,
        /// Body bytes actually present after the header that bit 14 names.
        present: usize,
    },
}

impl FrameError {
    /// Bytes dropped outside any frame (garbage, or an over-long run without an end flag); 0 for
    /// a rejected frame, which the caller counts as one bad frame.
    pub fn skipped_bytes(&self) -> usize {
        match self {
            FrameError::Garbage { skipped } | FrameError::TooLong { skipped, .. } => *skipped,
            FrameError::InvalidEscape { .. }
            | FrameError::TooShort { .. }
            | FrameError::Checksum { .. }
            | FrameError::BodyLengthMismatch { .. } => 0,
        }
    }
}

/// A body that does not match the layout of its message id. The frame itself was fine, so the
/// caller may still store and forward the body raw (see [`super::Body::Raw`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    /// The body ended before a field.
    #[error("message 0x{msg_id:04X}: body ends before {field}")]
    Truncated {
        /// Message id.
        msg_id: u16,
        /// Field that did not fit.
        field: &'static str,
    },
    /// Bytes left after the last field of a fixed layout.
    #[error("message 0x{msg_id:04X}: {count} unexpected bytes after the last field")]
    TrailingBytes {
        /// Message id.
        msg_id: u16,
        /// How many bytes were left.
        count: usize,
    },
    /// A length or count field disagrees with the bytes that follow it.
    #[error("message 0x{msg_id:04X}: {field} says {declared} but {actual} follow")]
    CountMismatch {
        /// Message id.
        msg_id: u16,
        /// Which count.
        field: &'static str,
        /// Value on the wire.
        declared: usize,
        /// What the body actually holds.
        actual: usize,
    },
}

/// A message the caller built cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A body longer than one packet (1023 bytes); split it with `split_into_packets`.
    #[error("body of {len} bytes exceeds the 1023-byte packet limit")]
    BodyTooLong {
        /// Body length.
        len: usize,
    },
    /// A list longer than its count field can express.
    #[error("{field} holds {len} items, more than its count field allows ({max})")]
    TooManyItems {
        /// Which list.
        field: &'static str,
        /// Items given.
        len: usize,
        /// Largest count the field can carry.
        max: usize,
    },
    /// A variable field longer than its length prefix allows.
    #[error("{field} is {len} bytes, more than {max}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Bytes given.
        len: usize,
        /// Most the layout allows.
        max: usize,
    },
    /// The phone has significant digits beyond the header layout's BCD width.
    #[error("phone {phone} does not fit a {width}-byte BCD field")]
    PhoneTooWide {
        /// Rendered phone.
        phone: String,
        /// BCD width of the layout.
        width: usize,
    },
    /// The header's message id is not the id of the body variant.
    #[error("header says message 0x{header:04X} but the body is a 0x{body:04X}")]
    MsgIdMismatch {
        /// Id in the header.
        header: u16,
        /// Id implied by the body.
        body: u16,
    },
    /// Subpackage chunk size outside 1..=1023, or more packets than a WORD counts.
    #[error("cannot split {len} bytes into packets of {chunk} bytes")]
    BadSplit {
        /// Body length.
        len: usize,
        /// Requested chunk size.
        chunk: usize,
    },
}

/// A cloud JSON command that cannot become a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    /// A required key is absent.
    #[error("missing {0}")]
    Missing(String),
    /// A key holds the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        /// Dotted path of the key.
        field: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A number outside the wire field's range.
    #[error("{field} = {value} is out of range")]
    OutOfRange {
        /// Dotted path of the key.
        field: String,
        /// The offending value as JSON text.
        value: String,
    },
    /// A string that should be base64 is not.
    #[error("{0} is not valid base64")]
    Base64(String),
    /// A string that should be BCD digits (hex digits) is not, or has the wrong length.
    #[error("{0} is not a valid BCD digit string of the required length")]
    Bcd(String),
    /// Text with characters the configured encoding (GBK) cannot represent.
    #[error("{0} has characters the string encoding cannot represent")]
    Unencodable(String),
    /// An explicit `length`/count key disagrees with its list.
    #[error("{field} = {declared} but the list has {actual} items")]
    LengthMismatch {
        /// Dotted path of the key.
        field: String,
        /// The given count.
        declared: u64,
        /// The list length.
        actual: usize,
    },
    /// The message id is not a downlink command this codec builds from JSON.
    #[error("message id 0x{0:04X} is not a supported downlink command")]
    UnsupportedMsgId(u16),
    /// The message built from the JSON cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A subpackage that the reassembler refused. The packet was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReassemblyError {
    /// The packet has no subpackage item in its header.
    #[error("packet is not subpackaged")]
    NotSubpackaged,
    /// Index 0, index above total, or total 0.
    #[error("packet index {index} of total {total} is invalid (indexes start at 1)")]
    BadIndex {
        /// Index from the header.
        index: u16,
        /// Total from the header.
        total: u16,
    },
    /// More packets than the limit allows for one transfer.
    #[error("transfer of {total} packets exceeds the limit of {max}")]
    TooManyPackets {
        /// Total from the header.
        total: u16,
        /// Configured limit.
        max: u16,
    },
    /// Storing the packet would exceed the per-transfer byte limit.
    #[error("transfer would hold {bytes} bytes, over the per-transfer limit of {max}")]
    TransferTooLarge {
        /// Bytes the transfer would hold.
        bytes: usize,
        /// Configured limit.
        max: usize,
    },
    /// Storing the packet would exceed the reassembler's total byte budget.
    #[error("reassembly would hold {bytes} bytes, over the total budget of {max}")]
    BudgetExceeded {
        /// Bytes all transfers would hold.
        bytes: usize,
        /// Configured limit.
        max: usize,
    },
    /// A new transfer would exceed the number of concurrent transfers.
    #[error("already {max} transfers in progress")]
    TooManyTransfers {
        /// Configured limit.
        max: usize,
    },
}
