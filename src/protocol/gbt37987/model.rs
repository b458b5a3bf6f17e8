//! The typed message model: `Message { header, body }`, where a body is positional field values,
//! TLV sub-parameters and any trailing bytes, or raw bytes when the code is unknown or the content
//! does not fit its table row.
//!
//! Owns: the data types and read-only accessors by table name.
//! Must not encode or decode bytes (`codec.rs`) or map JSON (`json.rs`).

use super::error::UnknownName;
use super::table::{self, FieldDef, MessageDef, ParamDef};

/// Size of the message header (facts sheet §2.1).
pub const HEADER_LEN: usize = 19;

/// The protocol version every observed reader sends.
pub const PROTOCOL_VERSION: u8 = 1;

/// The 19-byte message header. The body length is not stored: it is derived when encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Device serial number (64 bits), set by the reader and echoed by the edge.
    pub device_sn: [u8; 8],
    /// Version byte (1 on every observed reader; kept as received).
    pub version: u8,
    /// Message code.
    pub code: u16,
    /// Message number: a response echoes its request's number.
    pub number: u32,
}

impl Header {
    /// A version-1 header.
    pub fn new(device_sn: [u8; 8], code: u16, number: u32) -> Self {
        Header {
            device_sn,
            version: PROTOCOL_VERSION,
            code,
            number,
        }
    }

    /// The device SN as 16 lowercase hex digits.
    pub fn device_sn_hex(&self) -> String {
        hex_string(&self.device_sn)
    }
}

/// One positional field value, carrying its wire width (so a value decoded from a wider TLV than
/// its row says re-encodes to the same bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// u8 (also one byte of flags).
    U8(u8),
    /// u16 (also two bytes of flags).
    U16(u16),
    /// u32.
    U32(u32),
    /// u64.
    U64(u64),
    /// s8.
    S8(i8),
    /// s16.
    S16(i16),
    /// s32.
    S32(i32),
    /// s64.
    S64(i64),
    /// u8v.
    Bytes(Vec<u8>),
    /// u16v.
    Words(Vec<u16>),
    /// u32v.
    Dwords(Vec<u32>),
    /// utf8v, kept as the bytes received (readers may send GBK).
    Text(Vec<u8>),
    /// u1v: `bit_count` bits in `data` (MSB first).
    Bits {
        /// Number of meaningful bits.
        bit_count: u64,
        /// Data bytes.
        data: Vec<u8>,
    },
}

impl Value {
    /// Any unsigned or non-negative integer value, widened.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::S8(v) => u64::try_from(v).ok(),
            Value::S16(v) => u64::try_from(v).ok(),
            Value::S32(v) => u64::try_from(v).ok(),
            Value::S64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits an i64, widened.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::S8(v) => Some(v.into()),
            Value::S16(v) => Some(v.into()),
            Value::S32(v) => Some(v.into()),
            Value::S64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The bytes of a u8v or utf8v value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) | Value::Text(b) => Some(b),
            _ => None,
        }
    }

    /// A utf8v value as text: UTF-8 when valid, else decoded as GB18030 (GBK readers).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Text(b) => Some(decode_text(b)),
            _ => None,
        }
    }
}

/// Text bytes as a string: UTF-8 when valid, otherwise GB18030 (a superset of GBK and GB2312).
pub fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::GB18030.decode_without_bom_handling(bytes).0.into_owned(),
    }
}

/// A decoded body: positional fields, then TLV sub-parameters, then bytes that formed no TLV.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body {
    /// Field values in wire order (same order as the row's fields).
    pub fields: Vec<Value>,
    /// Sub-parameters in wire order.
    pub params: Vec<Parameter>,
    /// Bytes after the last whole TLV (normally empty); kept so the body re-encodes exactly.
    pub trailing: Vec<u8>,
}

impl Body {
    /// A body of fields only.
    pub fn from_fields(fields: Vec<Value>) -> Self {
        Body {
            fields,
            ..Body::default()
        }
    }

    /// A body of sub-parameters only.
    pub fn from_params(params: Vec<Parameter>) -> Self {
        Body {
            params,
            ..Body::default()
        }
    }

    /// A body of fields and sub-parameters.
    pub fn new(fields: Vec<Value>, params: Vec<Parameter>) -> Self {
        Body {
            fields,
            params,
            trailing: Vec::new(),
        }
    }
}

/// The content of a message or parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Decoded per its table row.
    Decoded(Body),
    /// Unknown code, or content its row cannot describe: the bytes as received.
    Raw(Vec<u8>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Decoded(Body::default())
    }
}

impl Content {
    /// The decoded body, if any.
    pub fn body(&self) -> Option<&Body> {
        match self {
            Content::Decoded(b) => Some(b),
            Content::Raw(_) => None,
        }
    }

    /// Sub-parameters (none for raw content).
    pub fn params(&self) -> &[Parameter] {
        self.body().map_or(&[], |b| b.params.as_slice())
    }

    fn field_in(&self, defs: &[FieldDef], name: &str) -> Option<&Value> {
        let index = defs.iter().position(|d| d.name == name)?;
        self.body()?.fields.get(index)
    }

    /// The first sub-parameter with the given table name.
    pub fn child(&self, name: &str) -> Option<&Parameter> {
        self.children(name).next()
    }

    /// All sub-parameters with the given table name.
    pub fn children<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Parameter> + 'a {
        let code = table::param_by_name(name).map(|d| d.code);
        self.params().iter().filter(move |p| Some(p.code) == code)
    }
}

/// A TLV (structure) parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// Parameter code.
    pub code: u16,
    /// Its content.
    pub body: Content,
}

impl Parameter {
    /// A parameter by table name.
    pub fn named(name: &str, body: Body) -> Result<Parameter, UnknownName> {
        let def = table::param_by_name(name).ok_or_else(|| UnknownName {
            kind: "parameter",
            name: name.to_owned(),
        })?;
        Ok(Parameter {
            code: def.code,
            body: Content::Decoded(body),
        })
    }

    /// A one-value parameter (e.g. `SelectSpecID`, `CID`) by table name.
    pub fn single(name: &str, value: Value) -> Result<Parameter, UnknownName> {
        Parameter::named(name, Body::from_fields(vec![value]))
    }

    /// The table row, when the code is known.
    pub fn def(&self) -> Option<&'static ParamDef> {
        table::param_by_code(self.code)
    }

    /// The table name, when the code is known.
    pub fn name(&self) -> Option<&'static str> {
        self.def().map(|d| d.name)
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.field_in(self.def()?.fields, name)
    }

    /// The value of a one-value parameter.
    pub fn single_value(&self) -> Option<&Value> {
        match self.body.body()?.fields.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// Sub-parameters.
    pub fn params(&self) -> &[Parameter] {
        self.body.params()
    }

    /// The first sub-parameter with the given table name.
    pub fn child(&self, name: &str) -> Option<&Parameter> {
        self.body.child(name)
    }
}

/// A complete GB/T 37987 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The 19-byte header.
    pub header: Header,
    /// The body.
    pub body: Content,
}

/// The Status parameter of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// StatusCode (0 = success).
    pub code: u32,
    /// ErrorDescription.
    pub description: String,
}

impl Message {
    /// A message by table name (name, `M_…` identifier or alias).
    pub fn named(name: &str, device_sn: [u8; 8], number: u32, body: Body) -> Result<Message, UnknownName> {
        let def = table::message_by_name(name).ok_or_else(|| UnknownName {
            kind: "message",
            name: name.to_owned(),
        })?;
        Ok(Message {
            header: Header::new(device_sn, def.code, number),
            body: Content::Decoded(body),
        })
    }

    /// The table row, when the code is known.
    pub fn def(&self) -> Option<&'static MessageDef> {
        table::message_by_code(self.header.code)
    }

    /// The table name, when the code is known.
    pub fn name(&self) -> Option<&'static str> {
        self.def().map(|d| d.name)
    }

    /// A positional field by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.field_in(self.def()?.fields, name)
    }

    /// Top-level parameters.
    pub fn params(&self) -> &[Parameter] {
        self.body.params()
    }

    /// The first top-level parameter with the given table name.
    pub fn child(&self, name: &str) -> Option<&Parameter> {
        self.body.child(name)
    }

    /// The Status parameter of a response or ErrorAck.
    pub fn status(&self) -> Option<StatusView> {
        let status = self.child("Status")?;
        Some(StatusView {
            code: u32::try_from(status.field("StatusCode")?.as_u64()?).ok()?,
            description: status
                .field("ErrorDescription")
                .and_then(Value::as_text)
                .unwrap_or_default(),
        })
    }

    /// ConnectionAttemptEvent.Status when this is a connection acknowledgement (302 carrying 306,
    /// with or without UTCTimestamp), in either dialect.
    pub fn connection_attempt_status(&self) -> Option<u16> {
        if self.name() != Some("DeviceEventNotification") {
            return None;
        }
        let event = self.child("ConnectionAttemptEvent")?;
        u16::try_from(event.single_value()?.as_u64()?).ok()
    }
}

/// Lowercase hex of bytes.
pub fn hex_string(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Bytes from a hex string (either case); `None` when the text is not whole hex bytes.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}
