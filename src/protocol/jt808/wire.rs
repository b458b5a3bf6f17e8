//! Byte-level building blocks shared by the header and body layouts.
//!
//! Owns the bounds-checked reader over a body, the big-endian writers, BCD rendering (nibble by
//! nibble as hex digits, so non-decimal nibbles survive) and the BCD time type. Must not know any
//! message layout and must never index past the end of its input.

use super::error::BodyError;

/// A bounds-checked big-endian cursor over one message body. Every read names the field so a short
/// body produces a [`BodyError::Truncated`] that says where it ended.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    msg_id: u16,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], msg_id: u16) -> Self {
        Reader { bytes, msg_id }
    }

    pub(crate) fn msg_id(&self) -> u16 {
        self.msg_id
    }

    fn truncated(&self, field: &'static str) -> BodyError {
        BodyError::Truncated {
            msg_id: self.msg_id,
            field,
        }
    }

    /// Takes exactly `len` bytes, checking that they are present before anything is copied.
    pub(crate) fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], BodyError> {
        if len > self.bytes.len() {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BodyError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, BodyError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, BodyError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, BodyError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Fails when bytes are left over: fixed layouts must account for every byte so that
    /// re-encoding gives the same bytes back.
    pub(crate) fn finish(self) -> Result<(), BodyError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(BodyError::TrailingBytes {
                msg_id: self.msg_id,
                count: self.bytes.len(),
            })
        }
    }

    /// Checks that a peer-given item count can be satisfied by the remaining bytes before any
    /// list is allocated for it.
    pub(crate) fn check_count(&self, field: &'static str, count: usize, min_item_len: usize) -> Result<(), BodyError> {
        let needed = count.saturating_mul(min_item_len);
        if needed > self.bytes.len() {
            Err(BodyError::CountMismatch {
                msg_id: self.msg_id,
                field,
                declared: count,
                actual: self.bytes.len() / min_item_len.max(1),
            })
        } else {
            Ok(())
        }
    }
}

/// Renders BCD bytes nibble by nibble as lowercase hex digits: decimal nibbles give `0`-`9`, and
/// the non-decimal nibbles real devices send give `a`-`f` instead of being lost.
pub fn bcd_to_string(bcd: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bcd.len() * 2);
    for byte in bcd {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0F)]));
    }
    out
}

/// Parses hex digits into BCD bytes of exactly `width` bytes, left-padding with `0` nibbles.
/// Returns `None` for non-hex characters or more digits than the width holds.
pub fn bcd_from_str(digits: &str, width: usize) -> Option<Vec<u8>> {
    let nibbles: Vec<u8> = digits
        .chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    let total = width.checked_mul(2)?;
    let pad = total.checked_sub(nibbles.len())?;
    let padded: Vec<u8> = std::iter::repeat_n(0u8, pad).chain(nibbles).collect();
    Some(
        padded
            .chunks(2)
            .map(|pair| match pair {
                [high, low] => (high << 4) | low,
                _ => 0,
            })
            .collect(),
    )
}

/// A `BCD[6]` timestamp `YYMMDDhhmmss` kept as the wire bytes (device clocks send non-BCD values
/// often enough that a calendar type would lose data). Location time is GMT+8, 0x8004 time is UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BcdTime(pub [u8; 6]);

impl BcdTime {
    /// Builds the BCD form of a calendar time; each part is taken modulo 100.
    pub fn from_parts(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Self {
        let bcd = |v: u8| ((v / 10 % 10) << 4) | (v % 10);
        let year = u8::try_from(year % 100).unwrap_or(0);
        BcdTime([bcd(year), bcd(month), bcd(day), bcd(hour), bcd(minute), bcd(second)])
    }

    /// Parses 12 hex digits (`"171019193538"`).
    pub fn parse(digits: &str) -> Option<Self> {
        if digits.len() != 12 {
            return None;
        }
        let bytes = bcd_from_str(digits, 6)?;
        let mut out = [0u8; 6];
        out.copy_from_slice(&bytes);
        Some(BcdTime(out))
    }
}

impl std::fmt::Display for BcdTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bcd_to_string(&self.0))
    }
}

/// Trims `0x00` padding at both ends of a fixed-width text field. Leading ASCII `'0'` padding is
/// kept: it cannot be told apart from a real leading zero digit.
pub(crate) fn trim_nul(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| *b != 0).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// Writes `value` into a fixed-width field, right-padded with `0x00`.
pub(crate) fn put_fixed(
    out: &mut Vec<u8>,
    value: &[u8],
    width: usize,
    field: &'static str,
) -> Result<(), super::error::EncodeError> {
    if value.len() > width {
        return Err(super::error::EncodeError::FieldTooLong {
            field,
            len: value.len(),
            max: width,
        });
    }
    out.extend_from_slice(value);
    out.resize(out.len() + (width - value.len()), 0);
    Ok(())
}

/// Writes a BYTE length prefix and the bytes.
pub(crate) fn put_len_u8(
    out: &mut Vec<u8>,
    value: &[u8],
    field: &'static str,
) -> Result<(), super::error::EncodeError> {
    let len = u8::try_from(value.len()).map_err(|_| super::error::EncodeError::FieldTooLong {
        field,
        len: value.len(),
        max: usize::from(u8::MAX),
    })?;
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

/// A count that must fit its wire width, or a typed error naming the list.
pub(crate) fn count_u8(field: &'static str, len: usize) -> Result<u8, super::error::EncodeError> {
    u8::try_from(len).map_err(|_| super::error::EncodeError::TooManyItems {
        field,
        len,
        max: usize::from(u8::MAX),
    })
}

/// As [`count_u8`] for WORD counts.
pub(crate) fn count_u16(field: &'static str, len: usize) -> Result<u16, super::error::EncodeError> {
    u16::try_from(len).map_err(|_| super::error::EncodeError::TooManyItems {
        field,
        len,
        max: usize::from(u16::MAX),
    })
}
