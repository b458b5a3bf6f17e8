//! JSON mapping of messages by table name, both ways.
//!
//! Upstream (reader → cloud): `{"msg","code","device_sn","seq","body"}`; the body of a
//! TagSelectAccessReport is `{"tags": [...]}` (see `report.rs`), every other body maps its fields and
//! parameters by table name: integers as raw wire values, u8v as hex, u16v/u32v as arrays, utf8v as
//! text, u1v as `{"bits","hex"}`, flag bits as booleans (reserved bits are not shown), a one-value
//! parameter as its bare value, repeatable parameters as arrays. Unknown parameters appear under
//! `"_unknown": [{"code","hex"}]`, content that fits no row as `{"_raw": hex}`, bytes after the last
//! TLV as `"_trailing"`.
//! Downstream (cloud → reader): `{"request_id","msg","body"}` with the same body shape.
//! Owns: that mapping. Must not frame or pick message numbers (the session does).

use serde_json::{json, Map, Value as Json};

use super::error::{JsonError, UnknownName};
use super::model::{decode_text, hex_string, parse_hex, Body, Content, Header, Message, Parameter, Value};
use super::report;
use super::table::{self, FieldDef, FieldType, ParamDef, ParamRef};

const RAW_KEY: &str = "_raw";
const UNKNOWN_KEY: &str = "_unknown";
const TRAILING_KEY: &str = "_trailing";

/// The upstream JSON object of a message: `{"msg","code","device_sn","seq","body"}`.
pub fn message_to_json(message: &Message) -> Json {
    let body = if message.name() == Some("TagSelectAccessReport") {
        report::tags_json(message)
    } else {
        body_to_json(message)
    };
    json!({
        "msg": message.name().unwrap_or("Unknown"),
        "code": message.header.code,
        "device_sn": message.header.device_sn_hex(),
        "seq": message.header.number,
        "body": body,
    })
}

/// The generic body mapping of any message by table name (the golden vectors' `expect.body`).
pub fn body_to_json(message: &Message) -> Json {
    match message.def() {
        Some(def) => content_to_json(def.fields, def.params, &message.body),
        None => content_to_json(&[], &[], &message.body),
    }
}

/// The JSON of one parameter: a bare value for one-value rows, otherwise an object.
pub fn param_to_json(param: &Parameter) -> Json {
    let Some(def) = param.def() else {
        return json!({ RAW_KEY: hex_string(&raw_bytes(&param.body)) });
    };
    if let (true, Some(body)) = (def.is_single_value(), param.body.body()) {
        if let ([value], [], []) = (body.fields.as_slice(), body.params.as_slice(), body.trailing.as_slice()) {
            return value_to_json(value);
        }
    }
    content_to_json(def.fields, def.params, &param.body)
}

fn raw_bytes(content: &Content) -> Vec<u8> {
    match content {
        Content::Raw(bytes) => bytes.clone(),
        // Only unknown codes reach here, and they always decode raw.
        Content::Decoded(body) => body.trailing.clone(),
    }
}

pub(crate) fn content_to_json(fields: &[FieldDef], refs: &[ParamRef], content: &Content) -> Json {
    let body = match content {
        Content::Raw(bytes) => return json!({ RAW_KEY: hex_string(bytes) }),
        Content::Decoded(body) => body,
    };
    let mut object = Map::new();
    for (def, value) in fields.iter().zip(&body.fields) {
        match (def.ty, value) {
            (FieldType::Flags8(names), Value::U8(bits)) => put_flags(&mut object, names, u16::from(*bits), 8),
            (FieldType::Flags16(names), Value::U16(bits)) => put_flags(&mut object, names, *bits, 16),
            (_, value) => {
                object.insert(def.name.to_owned(), value_to_json(value));
            }
        }
    }
    let mut unknown = Vec::new();
    let mut duplicated: Vec<&str> = Vec::new();
    for param in &body.params {
        let Some(name) = param.name() else {
            unknown.push(json!({ "code": param.code, "hex": hex_string(&raw_bytes(&param.body)) }));
            continue;
        };
        let rendered = param_to_json(param);
        let repeated = refs.iter().any(|r| r.name == name && r.card.is_repeated());
        match object.get_mut(name) {
            Some(Json::Array(items)) if repeated || duplicated.contains(&name) => items.push(rendered),
            Some(existing) => {
                // A parameter the row allows once, sent twice: keep both.
                duplicated.push(name);
                let first = existing.take();
                *existing = Json::Array(vec![first, rendered]);
            }
            None if repeated => {
                object.insert(name.to_owned(), Json::Array(vec![rendered]));
            }
            None => {
                object.insert(name.to_owned(), rendered);
            }
        }
    }
    if !unknown.is_empty() {
        object.insert(UNKNOWN_KEY.to_owned(), Json::Array(unknown));
    }
    if !body.trailing.is_empty() {
        object.insert(TRAILING_KEY.to_owned(), Json::String(hex_string(&body.trailing)));
    }
    Json::Object(object)
}

fn put_flags(object: &mut Map<String, Json>, names: &[&str], bits: u16, width: u32) {
    for (index, name) in (0u32..).zip(names) {
        let set = width.checked_sub(index + 1).is_some_and(|shift| bits >> shift & 1 == 1);
        object.insert((*name).to_owned(), Json::Bool(set));
    }
}

/// The JSON of one field value (a flags byte renders as its raw integer here).
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::S8(v) => json!(v),
        Value::S16(v) => json!(v),
        Value::S32(v) => json!(v),
        Value::S64(v) => json!(v),
        Value::Bytes(b) => json!(hex_string(b)),
        Value::Words(w) => json!(w),
        Value::Dwords(d) => json!(d),
        Value::Text(t) => json!(decode_text(t)),
        Value::Bits { bit_count, data } => json!({ "bits": bit_count, "hex": hex_string(data) }),
    }
}

/// A downstream command from the cloud, mapped to a message body; the session adds the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The cloud's request id, echoed in its reply.
    pub request_id: Option<String>,
    /// Message code from the table (by `msg` name).
    pub code: u16,
    /// The body.
    pub body: Content,
}

impl Command {
    /// The message to send: the reader's device SN and the session's next message number.
    pub fn into_message(self, device_sn: [u8; 8], number: u32) -> Message {
        Message {
            header: Header::new(device_sn, self.code, number),
            body: self.body,
        }
    }
}

/// Parses `{"request_id":"...","msg":"AddSelectSpec","body":{...}}` (body may be omitted when empty).
pub fn command_from_json(document: &Json) -> Result<Command, JsonError> {
    let object = document.as_object().ok_or_else(|| wrong("$", "an object"))?;
    let request_id = match object.get("request_id") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(_) => return Err(wrong("$.request_id", "a string")),
    };
    let name = match object.get("msg") {
        Some(Json::String(s)) => s.as_str(),
        Some(_) => return Err(wrong("$.msg", "a string")),
        None => return Err(missing("$", "msg")),
    };
    let def = table::message_by_name(name).ok_or_else(|| UnknownName {
        kind: "message",
        name: name.to_owned(),
    })?;
    let empty = Json::Object(Map::new());
    let body = match object.get("body") {
        None | Some(Json::Null) => &empty,
        Some(body) => body,
    };
    Ok(Command {
        request_id,
        code: def.code,
        body: content_from_json(def.fields, def.params, body, "$.body")?,
    })
}

/// The body of the named message from its JSON body object (the inverse of [`body_to_json`] for
/// bodies without reserved flag bits).
pub fn body_from_json(message_name: &str, body: &Json) -> Result<Content, JsonError> {
    let def = table::message_by_name(message_name).ok_or_else(|| UnknownName {
        kind: "message",
        name: message_name.to_owned(),
    })?;
    content_from_json(def.fields, def.params, body, "$.body")
}

/// A parameter of the named row from its JSON (the inverse of [`param_to_json`]).
pub fn param_from_json(param_name: &str, document: &Json) -> Result<Parameter, JsonError> {
    let def = table::param_by_name(param_name).ok_or_else(|| UnknownName {
        kind: "parameter",
        name: param_name.to_owned(),
    })?;
    parse_param(def, document, param_name)
}

fn content_from_json(
    fields: &[FieldDef],
    refs: &[ParamRef],
    document: &Json,
    path: &str,
) -> Result<Content, JsonError> {
    let object = document.as_object().ok_or_else(|| wrong(path, "an object"))?;
    if let Some(raw) = object.get(RAW_KEY) {
        return Ok(Content::Raw(parse_hex_member(raw, &format!("{path}.{RAW_KEY}"))?));
    }
    let mut consumed: Vec<&str> = Vec::new();
    let mut values = Vec::with_capacity(fields.len());
    for def in fields {
        let value = match def.ty {
            FieldType::Flags8(names) => {
                consumed.extend(names.iter().copied());
                Value::U8(collect_flags(object, names, 8, path)? as u8)
            }
            FieldType::Flags16(names) => {
                consumed.extend(names.iter().copied());
                Value::U16(collect_flags(object, names, 16, path)?)
            }
            ty => {
                consumed.push(def.name);
                let member = object.get(def.name).ok_or_else(|| missing(path, def.name))?;
                value_from_json(ty, member, &format!("{path}.{}", def.name))?
            }
        };
        values.push(value);
    }
    // Parameters go out in the row's order, then any other known parameter names, by key order.
    let mut slots: Vec<&'static ParamDef> = refs.iter().filter_map(|r| table::param_by_name(r.name)).collect();
    let mut params = Vec::new();
    let mut trailing = Vec::new();
    let mut unknown = Vec::new();
    for (key, member) in object {
        let key = key.as_str();
        if consumed.contains(&key) || slots.iter().any(|d| d.answers_to(key)) {
            continue;
        }
        let member_path = format!("{path}.{key}");
        match key {
            RAW_KEY => {}
            UNKNOWN_KEY => unknown = parse_unknown(member, &member_path)?,
            TRAILING_KEY => trailing = parse_hex_member(member, &member_path)?,
            _ => match table::param_by_name(key) {
                Some(def) => slots.push(def),
                None => return Err(unknown_member(path, key)),
            },
        }
    }
    for def in slots {
        for (key, member) in object.iter().filter(|(k, _)| def.answers_to(k)) {
            let member_path = format!("{path}.{key}");
            match member {
                Json::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        params.push(parse_param(def, item, &format!("{member_path}[{i}]"))?);
                    }
                }
                single => params.push(parse_param(def, single, &member_path)?),
            }
        }
    }
    params.extend(unknown);
    Ok(Content::Decoded(Body {
        fields: values,
        params,
        trailing,
    }))
}

fn parse_param(def: &ParamDef, document: &Json, path: &str) -> Result<Parameter, JsonError> {
    let body = match (def.is_single_value(), def.fields, document) {
        (true, [field], member) if !member.is_object() => {
            Content::Decoded(Body::from_fields(vec![value_from_json(field.ty, member, path)?]))
        }
        _ => content_from_json(def.fields, def.params, document, path)?,
    };
    Ok(Parameter { code: def.code, body })
}

fn parse_unknown(document: &Json, path: &str) -> Result<Vec<Parameter>, JsonError> {
    let items = document.as_array().ok_or_else(|| wrong(path, "an array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = format!("{path}[{i}]");
            let code = item.get("code").ok_or_else(|| missing(&item_path, "code"))?;
            let code = integer::<u16>(code, &format!("{item_path}.code"), "u16")?;
            let hex = item.get("hex").ok_or_else(|| missing(&item_path, "hex"))?;
            Ok(Parameter {
                code,
                body: Content::Raw(parse_hex_member(hex, &format!("{item_path}.hex"))?),
            })
        })
        .collect()
}

fn collect_flags(object: &Map<String, Json>, names: &[&str], width: u32, path: &str) -> Result<u16, JsonError> {
    let mut bits = 0u16;
    for (index, name) in (0u32..).zip(names) {
        let set = match object.get(*name) {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(_) => return Err(wrong(&format!("{path}.{name}"), "a boolean")),
        };
        if let (true, Some(shift)) = (set, width.checked_sub(index + 1)) {
            bits |= 1 << shift;
        }
    }
    Ok(bits)
}

/// A field value of type `ty` from JSON.
pub fn value_from_json(ty: FieldType, document: &Json, path: &str) -> Result<Value, JsonError> {
    Ok(match ty {
        FieldType::U8 | FieldType::Flags8(_) => Value::U8(integer(document, path, "u8")?),
        FieldType::U16 | FieldType::Flags16(_) => Value::U16(integer(document, path, "u16")?),
        FieldType::U32 => Value::U32(integer(document, path, "u32")?),
        FieldType::U64 => Value::U64(integer(document, path, "u64")?),
        FieldType::S8 => Value::S8(integer(document, path, "s8")?),
        FieldType::S16 => Value::S16(integer(document, path, "s16")?),
        FieldType::S32 => Value::S32(integer(document, path, "s32")?),
        FieldType::S64 => Value::S64(integer(document, path, "s64")?),
        FieldType::U8v => match document {
            Json::String(_) => Value::Bytes(parse_hex_member(document, path)?),
            Json::Array(_) => Value::Bytes(integers(document, path, "u8")?),
            _ => return Err(wrong(path, "a hex string or an array of bytes")),
        },
        FieldType::U16v => Value::Words(integers(document, path, "u16")?),
        FieldType::U32v => Value::Dwords(integers(document, path, "u32")?),
        FieldType::Utf8v => match document {
            Json::String(s) => Value::Text(s.as_bytes().to_vec()),
            _ => return Err(wrong(path, "a string")),
        },
        FieldType::U1v => match document {
            Json::String(_) => {
                let data = parse_hex_member(document, path)?;
                Value::Bits {
                    bit_count: (data.len() as u64).saturating_mul(8),
                    data,
                }
            }
            Json::Object(object) => {
                let bits = object.get("bits").ok_or_else(|| missing(path, "bits"))?;
                let hex = object.get("hex").ok_or_else(|| missing(path, "hex"))?;
                Value::Bits {
                    bit_count: integer(bits, &format!("{path}.bits"), "u64")?,
                    data: parse_hex_member(hex, &format!("{path}.hex"))?,
                }
            }
            _ => return Err(wrong(path, "a hex string or {\"bits\",\"hex\"}")),
        },
    })
}

fn integer<T: TryFrom<i128>>(document: &Json, path: &str, ty: &'static str) -> Result<T, JsonError> {
    let number = match document {
        Json::Number(n) => n,
        _ => return Err(wrong(path, "an integer")),
    };
    let wide = number
        .as_u64()
        .map(i128::from)
        .or_else(|| number.as_i64().map(i128::from))
        .ok_or_else(|| out_of_range(path, number.to_string(), ty))?;
    T::try_from(wide).map_err(|_| out_of_range(path, number.to_string(), ty))
}

fn integers<T: TryFrom<i128>>(document: &Json, path: &str, ty: &'static str) -> Result<Vec<T>, JsonError> {
    let items = document.as_array().ok_or_else(|| wrong(path, "an array of integers"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| integer(item, &format!("{path}[{i}]"), ty))
        .collect()
}

fn parse_hex_member(document: &Json, path: &str) -> Result<Vec<u8>, JsonError> {
    let text = document.as_str().ok_or_else(|| wrong(path, "a hex string"))?;
    parse_hex(text).ok_or_else(|| JsonError::BadHex { path: path.to_owned() })
}

fn wrong(path: &str, expected: &'static str) -> JsonError {
    JsonError::WrongType {
        path: path.to_owned(),
        expected,
    }
}

fn missing(path: &str, member: &str) -> JsonError {
    JsonError::Missing {
        path: path.to_owned(),
        member: member.to_owned(),
    }
}

fn unknown_member(path: &str, member: &str) -> JsonError {
    JsonError::UnknownMember {
        path: path.to_owned(),
        member: member.to_owned(),
    }
}

fn out_of_range(path: &str, value: String, ty: &'static str) -> JsonError {
    JsonError::OutOfRange {
        path: path.to_owned(),
        value,
        ty,
    }
}
