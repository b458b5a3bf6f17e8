//! Terminal parameters: 0x8103 set, 0x8106 query some, 0x0104 reply.
//!
//! Owns the parameter item `{id DWORD, len BYTE, value}` and the id → type table (S2013 table 12 plus
//! the 2019 string ids). Values stay raw bytes in the typed message; the table only decides how the
//! JSON shows them, and only when the length matches the type. Must not reject unknown ids: vendors
//! use 0xF000-0xFFFF and JT/T 1078/Su-biao ranges freely.

use super::error::{BodyError, EncodeError};
use super::header::Edition;
use super::wire::{count_u8, put_len_u8, Reader};

/// How a parameter value is typed by the standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// DWORD.
    Dword,
    /// WORD.
    Word,
    /// BYTE.
    Byte,
    /// STRING (GBK).
    Text,
    /// BYTE\[8\] (CAN id sampling).
    Bytes8,
}

/// `(first id, last id, type, only in this edition)`; ids not listed are untyped.
const PARAM_TYPES: &[(u32, u32, ParamType, Option<Edition>)] = &[
    (0x0001, 0x0007, ParamType::Dword, None),
    (0x0010, 0x0017, ParamType::Text, None),
    (0x0018, 0x0019, ParamType::Dword, None),
    (0x001A, 0x001A, ParamType::Text, None),
    (0x001B, 0x001C, ParamType::Dword, None),
    (0x001D, 0x001D, ParamType::Text, None),
    (0x0020, 0x0022, ParamType::Dword, None),
    (0x0023, 0x0026, ParamType::Text, Some(Edition::V2019)),
    (0x0027, 0x0029, ParamType::Dword, None),
    (0x002C, 0x0030, ParamType::Dword, None),
    (0x0031, 0x0031, ParamType::Word, None),
    (0x0040, 0x0044, ParamType::Text, None),
    (0x0045, 0x0047, ParamType::Dword, None),
    (0x0048, 0x0049, ParamType::Text, None),
    (0x0050, 0x005A, ParamType::Dword, None),
    (0x005B, 0x005E, ParamType::Word, None),
    (0x0064, 0x0065, ParamType::Dword, None),
    (0x0070, 0x0074, ParamType::Dword, None),
    (0x0080, 0x0080, ParamType::Dword, None),
    (0x0081, 0x0082, ParamType::Word, None),
    (0x0083, 0x0083, ParamType::Text, None),
    (0x0084, 0x0084, ParamType::Byte, None),
    (0x0090, 0x0092, ParamType::Byte, None),
    (0x0093, 0x0093, ParamType::Dword, None),
    (0x0094, 0x0094, ParamType::Byte, None),
    (0x0095, 0x0095, ParamType::Dword, None),
    (0x0100, 0x0100, ParamType::Dword, None),
    (0x0101, 0x0101, ParamType::Word, None),
    (0x0102, 0x0102, ParamType::Dword, None),
    (0x0103, 0x0103, ParamType::Word, None),
    (0x0110, 0x01FF, ParamType::Bytes8, None),
];

/// The standard's type for a parameter id in an edition, if it has one.
pub fn param_type(id: u32, edition: Edition) -> Option<ParamType> {
    PARAM_TYPES
        .iter()
        .find(|(first, last, _, only)| (*first..=*last).contains(&id) && only.is_none_or(|e| e == edition))
        .map(|(_, _, kind, _)| *kind)
}

/// A parameter value as the table reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamValue<'a> {
    /// A DWORD/WORD/BYTE whose length matches its type.
    Int(u32),
    /// A STRING parameter (wire bytes, decode with the configured encoding).
    Text(&'a [u8]),
    /// Anything else: BYTE\[8\], unknown ids, or a length that does not match the type.
    Bytes(&'a [u8]),
}

/// One parameter item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter id.
    pub id: u32,
    /// Value bytes as on the wire (length ≤ 255).
    pub value: Vec<u8>,
}

impl Param {
    /// A DWORD/WORD/BYTE parameter sized by the table (DWORD for untyped ids); `None` when the
    /// value does not fit the type or the id is typed as text or bytes.
    pub fn int(id: u32, value: u32, edition: Edition) -> Option<Param> {
        let value = match param_type(id, edition) {
            Some(ParamType::Word) => u16::try_from(value).ok()?.to_be_bytes().to_vec(),
            Some(ParamType::Byte) => vec![u8::try_from(value).ok()?],
            Some(ParamType::Dword) | None => value.to_be_bytes().to_vec(),
            Some(ParamType::Text) | Some(ParamType::Bytes8) => return None,
        };
        Some(Param { id, value })
    }

    /// The value as the type table reads it.
    pub fn typed(&self, edition: Edition) -> ParamValue<'_> {
        match (param_type(self.id, edition), self.value.as_slice()) {
            (Some(ParamType::Dword), &[a, b, c, d]) => ParamValue::Int(u32::from_be_bytes([a, b, c, d])),
            (Some(ParamType::Word), &[a, b]) => ParamValue::Int(u32::from(u16::from_be_bytes([a, b]))),
            (Some(ParamType::Byte), &[a]) => ParamValue::Int(u32::from(a)),
            (Some(ParamType::Text), bytes) => ParamValue::Text(bytes),
            (_, bytes) => ParamValue::Bytes(bytes),
        }
    }
}

/// Reads `count BYTE` + items.
pub(crate) fn decode_params(r: &mut Reader<'_>) -> Result<Vec<Param>, BodyError> {
    let count = usize::from(r.u8("parameter count")?);
    // Each item is at least its DWORD id and BYTE length.
    r.check_count("parameter count", count, 5)?;
    let mut params = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u32("parameter id")?;
        let len = usize::from(r.u8("parameter length")?);
        let value = r.take(len, "parameter value")?.to_vec();
        params.push(Param { id, value });
    }
    Ok(params)
}

/// Writes `count BYTE` + items.
pub(crate) fn encode_params(params: &[Param], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(count_u8("parameters", params.len())?);
    for param in params {
        out.extend_from_slice(&param.id.to_be_bytes());
        put_len_u8(out, &param.value, "parameter value")?;
    }
    Ok(())
}

/// 0x0104: the answer to 0x8104/0x8106.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParamsReply {
    /// Serial of the query answered.
    pub reply_serial: u16,
    /// Parameters in wire order.
    pub params: Vec<Param>,
}

impl ParamsReply {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(ParamsReply {
            reply_serial: r.u16("reply serial")?,
            params: decode_params(r)?,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.reply_serial.to_be_bytes());
        encode_params(&self.params, out)
    }
}

/// Reads 0x8106's `count BYTE` + DWORD ids.
pub(crate) fn decode_param_ids(r: &mut Reader<'_>) -> Result<Vec<u32>, BodyError> {
    let count = usize::from(r.u8("id count")?);
    r.check_count("id count", count, 4)?;
    (0..count).map(|_| r.u32("parameter id")).collect()
}

/// Writes 0x8106's `count BYTE` + DWORD ids.
pub(crate) fn encode_param_ids(ids: &[u32], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(count_u8("parameter ids", ids.len())?);
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    Ok(())
}
