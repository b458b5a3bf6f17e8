//! Binary encoding and decoding of complete messages (header + body) and TLV parameters, driven by
//! the code table and a dialect profile.
//!
//! Owns: the lenient decoding rules of the facts sheet §8.3 — TLV boundaries come from the lengths,
//! never from the row (AntennaID with length 2 decodes by its length); unknown codes, content that
//! does not fit its row, and bytes after the last whole TLV are kept raw so every input re-encodes
//! byte-exact. Nesting deeper than [`MAX_NESTING`] is kept raw (bounded recursion).
//! Must not frame (TCP / serial live in `tcp.rs` / `serial.rs`) or allocate from a peer-given
//! length before the bytes are present.

use super::dialect::{BitArrayUnit, Dialect, PrefixWidth, Profile};
use super::error::{DecodeError, EncodeError};
use super::model::{Body, Content, Header, Message, Parameter, Value, HEADER_LEN};
use super::table::{self, FieldDef, FieldType};

/// Deepest parameter nesting decoded; deeper TLVs stay raw. The table nests at most 5 levels, so
/// 16 leaves room for vendor extensions while bounding recursion on hostile input.
pub const MAX_NESTING: usize = 16;

impl Message {
    /// Decodes one complete message (header and exactly its body) in the given dialect.
    pub fn decode(bytes: &[u8], dialect: Dialect) -> Result<Message, DecodeError> {
        let (header, declared) = decode_header(bytes)?;
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        if usize::try_from(declared).ok() != Some(body.len()) {
            return Err(DecodeError::BodyLengthMismatch {
                declared,
                actual: body.len(),
            });
        }
        let content = match table::message_by_code(header.code) {
            Some(def) => decode_content(def.fields, body, dialect.profile(), 0),
            None => Content::Raw(body.to_vec()),
        };
        Ok(Message { header, body: content })
    }

    /// Encodes the message (header with the computed body length, then the body).
    pub fn encode(&self, dialect: Dialect) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        let h = &self.header;
        out.extend_from_slice(&h.device_sn);
        out.push(h.version);
        out.extend_from_slice(&h.code.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&h.number.to_be_bytes());
        encode_content(&self.body, dialect.profile(), &mut out)?;
        let body_len = out.len().saturating_sub(HEADER_LEN);
        let len = u32::try_from(body_len).map_err(|_| EncodeError::TooLong {
            what: "message body length",
            len: body_len as u64,
            max: u64::from(u32::MAX),
        })?;
        if let Some(slot) = out.get_mut(11..15) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
        Ok(out)
    }
}

impl Parameter {
    /// Decodes one TLV parameter from the start of `bytes`; returns it and the bytes it used.
    pub fn decode(bytes: &[u8], dialect: Dialect) -> Result<(Parameter, usize), DecodeError> {
        let profile = dialect.profile();
        let mut cursor = Cursor::new(bytes);
        let header_len = 2 + profile.param_len_width.bytes();
        let truncated = |needed: usize| DecodeError::TruncatedParameter {
            needed,
            available: bytes.len(),
        };
        let code = cursor.u16().ok_or_else(|| truncated(header_len))?;
        let len = cursor
            .prefix(profile.param_len_width)
            .ok_or_else(|| truncated(header_len))?;
        let content = cursor
            .take(len)
            .ok_or_else(|| truncated(header_len.saturating_add(len)))?;
        Ok((decode_param(code, content, profile, 1), cursor.position()))
    }

    /// Encodes the parameter (TLV header with the computed length, then the content).
    pub fn encode(&self, dialect: Dialect, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_param(self, dialect.profile(), out)
    }
}

/// Reads the 19-byte header; returns it and the declared body length.
pub fn decode_header(bytes: &[u8]) -> Result<(Header, u32), DecodeError> {
    let mut cursor = Cursor::new(bytes);
    let too_short = DecodeError::TooShort {
        needed: HEADER_LEN,
        available: bytes.len(),
    };
    let sn = cursor.take(8).ok_or_else(|| too_short.clone())?;
    let mut device_sn = [0u8; 8];
    device_sn.copy_from_slice(sn);
    let version = cursor.u8().ok_or_else(|| too_short.clone())?;
    let code = cursor.u16().ok_or_else(|| too_short.clone())?;
    let body_len = cursor.u32().ok_or_else(|| too_short.clone())?;
    let number = cursor.u32().ok_or(too_short)?;
    Ok((
        Header {
            device_sn,
            version,
            code,
            number,
        },
        body_len,
    ))
}

/// Decodes a body (fields per `fields`, then TLVs); content its fields cannot describe stays raw.
fn decode_content(fields: &[FieldDef], bytes: &[u8], profile: &Profile, depth: usize) -> Content {
    let mut cursor = Cursor::new(bytes);
    let mut values = Vec::with_capacity(fields.len());
    for def in fields {
        match decode_value(def.ty, &mut cursor, profile) {
            Some(v) => values.push(v),
            None => return Content::Raw(bytes.to_vec()),
        }
    }
    let (params, trailing) = decode_params(cursor.rest(), profile, depth);
    Content::Decoded(Body {
        fields: values,
        params,
        trailing: trailing.to_vec(),
    })
}

/// Splits `bytes` into whole TLVs; returns them and the bytes after the last whole TLV.
fn decode_params<'a>(bytes: &'a [u8], profile: &Profile, depth: usize) -> (Vec<Parameter>, &'a [u8]) {
    let mut params = Vec::new();
    let mut rest = bytes;
    loop {
        let mut cursor = Cursor::new(rest);
        let Some(code) = cursor.u16() else { break };
        let Some(len) = cursor.prefix(profile.param_len_width) else {
            break;
        };
        let Some(content) = cursor.take(len) else {
            break;
        };
        params.push(decode_param(code, content, profile, depth.saturating_add(1)));
        rest = cursor.rest();
    }
    (params, rest)
}

/// Decodes one parameter's content by its row; a one-integer row takes its width from the TLV.
fn decode_param(code: u16, content: &[u8], profile: &Profile, depth: usize) -> Parameter {
    let body = match table::param_by_code(code) {
        _ if depth > MAX_NESTING => Content::Raw(content.to_vec()),
        None => Content::Raw(content.to_vec()),
        Some(def) => match def.sole_integer() {
            Some(ty) => match integer_by_length(ty, content) {
                Some(v) => Content::Decoded(Body::from_fields(vec![v])),
                None => Content::Raw(content.to_vec()),
            },
            None => decode_content(def.fields, content, profile, depth),
        },
    };
    Parameter { code, body }
}

/// An integer whose width is the whole content (1, 2, 4 or 8 bytes), signed when the row is.
fn integer_by_length(ty: FieldType, content: &[u8]) -> Option<Value> {
    let signed = matches!(ty, FieldType::S8 | FieldType::S16 | FieldType::S32 | FieldType::S64);
    let width_ty = match (content.len(), signed) {
        (1, false) => FieldType::U8,
        (2, false) => FieldType::U16,
        (4, false) => FieldType::U32,
        (8, false) => FieldType::U64,
        (1, true) => FieldType::S8,
        (2, true) => FieldType::S16,
        (4, true) => FieldType::S32,
        (8, true) => FieldType::S64,
        _ => return None,
    };
    decode_fixed(width_ty, &mut Cursor::new(content))
}

/// Reads a fixed-width field (integer or flags); `None` for array types or missing bytes.
fn decode_fixed(ty: FieldType, cursor: &mut Cursor<'_>) -> Option<Value> {
    Some(match ty {
        FieldType::U8 | FieldType::Flags8(_) => Value::U8(cursor.u8()?),
        FieldType::U16 | FieldType::Flags16(_) => Value::U16(cursor.u16()?),
        FieldType::U32 => Value::U32(cursor.u32()?),
        FieldType::U64 => Value::U64(cursor.u64()?),
        FieldType::S8 => Value::S8(i8::from_be_bytes(cursor.array()?)),
        FieldType::S16 => Value::S16(i16::from_be_bytes(cursor.array()?)),
        FieldType::S32 => Value::S32(i32::from_be_bytes(cursor.array()?)),
        FieldType::S64 => Value::S64(i64::from_be_bytes(cursor.array()?)),
        FieldType::U8v | FieldType::U16v | FieldType::U32v | FieldType::Utf8v | FieldType::U1v => return None,
    })
}

/// Reads one field value; `None` when the bytes do not hold it.
fn decode_value(ty: FieldType, cursor: &mut Cursor<'_>, profile: &Profile) -> Option<Value> {
    Some(match ty {
        FieldType::U8v => {
            let count = cursor.prefix(profile.array_count_width)?;
            Value::Bytes(cursor.take(count)?.to_vec())
        }
        FieldType::U16v => {
            let count = cursor.prefix(profile.array_count_width)?;
            let raw = cursor.take(count.checked_mul(2)?)?;
            Value::Words(
                raw.chunks_exact(2)
                    .map(|c| c.try_into().map(u16::from_be_bytes).unwrap_or_default())
                    .collect(),
            )
        }
        FieldType::U32v => {
            let count = cursor.prefix(profile.array_count_width)?;
            let raw = cursor.take(count.checked_mul(4)?)?;
            Value::Dwords(
                raw.chunks_exact(4)
                    .map(|c| c.try_into().map(u32::from_be_bytes).unwrap_or_default())
                    .collect(),
            )
        }
        FieldType::Utf8v => {
            let len = cursor.prefix(profile.utf8_len_width)?;
            Value::Text(cursor.take(len)?.to_vec())
        }
        FieldType::U1v => {
            let prefix = cursor.prefix(profile.bit_array_len_width)?;
            let (bit_count, data_len) = match profile.bit_array_unit {
                BitArrayUnit::Bits => (prefix as u64, prefix.div_ceil(8)),
                BitArrayUnit::Bytes => ((prefix as u64).checked_mul(8)?, prefix),
            };
            Value::Bits {
                bit_count,
                data: cursor.take(data_len)?.to_vec(),
            }
        }
        fixed => decode_fixed(fixed, cursor)?,
    })
}

fn encode_content(content: &Content, profile: &Profile, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match content {
        Content::Raw(bytes) => out.extend_from_slice(bytes),
        Content::Decoded(body) => {
            for value in &body.fields {
                encode_value(value, profile, out)?;
            }
            for param in &body.params {
                encode_param(param, profile, out)?;
            }
            out.extend_from_slice(&body.trailing);
        }
    }
    Ok(())
}

fn encode_param(param: &Parameter, profile: &Profile, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&param.code.to_be_bytes());
    let len_at = out.len();
    let width = profile.param_len_width;
    out.extend(std::iter::repeat_n(0u8, width.bytes()));
    let content_at = out.len();
    encode_content(&param.body, profile, out)?;
    let len = (out.len() - content_at) as u64;
    let prefix = prefix_bytes(width, len, "parameter length")?;
    if let Some(slot) = out.get_mut(len_at..content_at) {
        slot.copy_from_slice(&prefix);
    }
    Ok(())
}

fn encode_value(value: &Value, profile: &Profile, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let counted = |out: &mut Vec<u8>, width: PrefixWidth, n: usize, what| -> Result<(), EncodeError> {
        out.extend_from_slice(&prefix_bytes(width, n as u64, what)?);
        Ok(())
    };
    match value {
        Value::U8(v) => out.push(*v),
        Value::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::S8(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::S16(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::S32(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::S64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Bytes(b) => {
            counted(out, profile.array_count_width, b.len(), "u8v count")?;
            out.extend_from_slice(b);
        }
        Value::Words(w) => {
            counted(out, profile.array_count_width, w.len(), "u16v count")?;
            w.iter().for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
        }
        Value::Dwords(d) => {
            counted(out, profile.array_count_width, d.len(), "u32v count")?;
            d.iter().for_each(|v| out.extend_from_slice(&v.to_be_bytes()));
        }
        Value::Text(t) => {
            counted(out, profile.utf8_len_width, t.len(), "utf8v length")?;
            out.extend_from_slice(t);
        }
        Value::Bits { bit_count, data } => {
            let mismatch = EncodeError::BitArrayMismatch {
                bit_count: *bit_count,
                data_len: data.len(),
            };
            let prefix = match profile.bit_array_unit {
                BitArrayUnit::Bits if bit_count.div_ceil(8) == data.len() as u64 => *bit_count,
                BitArrayUnit::Bytes if *bit_count == (data.len() as u64).saturating_mul(8) => data.len() as u64,
                _ => return Err(mismatch),
            };
            let width = profile.bit_array_len_width;
            out.extend_from_slice(&prefix_bytes(width, prefix, "u1v length")?);
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

/// Big-endian bytes of a prefix value in the given width; fails when the value overflows it.
fn prefix_bytes(width: PrefixWidth, value: u64, what: &'static str) -> Result<Vec<u8>, EncodeError> {
    let too_long = EncodeError::TooLong {
        what,
        len: value,
        max: width.max(),
    };
    Ok(match width {
        PrefixWidth::U16 => u16::try_from(value).map_err(|_| too_long)?.to_be_bytes().to_vec(),
        PrefixWidth::U32 => u32::try_from(value).map_err(|_| too_long)?.to_be_bytes().to_vec(),
    })
}

/// A bounds-checked big-endian reader; every read returns `None` instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// The next `n` bytes, checked against what is present before anything is allocated.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    /// A length or count prefix of the given width.
    fn prefix(&mut self, width: PrefixWidth) -> Option<usize> {
        match width {
            PrefixWidth::U16 => self.u16().map(usize::from),
            PrefixWidth::U32 => usize::try_from(self.u32()?).ok(),
        }
    }
}
