//! Cloud → vehicle commands: EMQX's `dnstream` JSON (`{"Action":"Query"|"Setting"|"Control",…}`,
//! facts sheet §4.3) turned into 0x80/0x81/0x82 command frames, and two 2025 actions EMQX lacks:
//! `{"Action":"ActivationResponse","Status","Info"}` (0x0A, the platform's verdict on an
//! activation) and `{"Action":"KeyExchange","KeyType","Key":"<hex>","ActiveTime","ExpireTime"}`
//! (0x0B; times as the upstream JSON shows them, `{"Year","Month","Day","Hour","Minute","Second"}`).
//!
//! Owns: validating that JSON (every problem is a typed `DownlinkError`, never a panic or a
//! silently different frame) and EMQX's rules: ids as `"0x.."` hex or decimal strings, `Total`
//! equal to the number of entries, 0x05/0x0E emitted right after 0x04/0x0D with matching
//! length, 0x07/0x08 exactly 5 bytes, the upgrade string in the B.16 layout.
//! Must not: read the clock (the caller passes the gateway time) or choose the edition (the
//! caller passes the edition the vehicle logged in with).

use serde_json::{Map, Value};
use thiserror::Error;

use super::body::Body;
use super::control::{
    parse_address, ControlAlarm, ControlParam, TerminalControl, Upgrade, UpgradeB16, ALARM, REMOTE_UPGRADE,
};
use super::frame::Frame;
use super::json::encode_text;
use super::message::{ActivationResponse, KeyExchange};
use super::param::{param_width, Param, ParamList, ParamQuery, ParamValue, ParamWidth};
use super::types::{Command, Edition, ResponseFlag, Time, Vin};

/// Why a downlink JSON message cannot become a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DownlinkError {
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    Json(String),
    /// The payload is not a JSON object.
    #[error("payload is not a JSON object")]
    NotAnObject,
    /// `Action` is missing or not one of Query, Setting, Control, ActivationResponse, KeyExchange.
    #[error("unknown Action {0:?} (expected Query, Setting, Control, ActivationResponse or KeyExchange)")]
    UnknownAction(String),
    /// The action exists only in the 2025 edition and the vehicle logged in with 2016.
    #[error("Action {0} exists only in GB/T 32960-2025; the vehicle logged in with the 2016 edition")]
    Only2025(&'static str),
    /// A required field is missing.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field has the wrong type or an out-of-range value.
    #[error("field {field}: {reason}")]
    InvalidField {
        /// The field (JSON key).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// `Total` disagrees with the number of entries.
    #[error("Total is {total} but {count} entries were given")]
    TotalMismatch {
        /// Declared total.
        total: u64,
        /// Entries given.
        count: usize,
    },
    /// More entries than a BYTE count allows.
    #[error("{count} entries, more than 255")]
    TooManyEntries {
        /// Entries given.
        count: usize,
    },
    /// A parameter id with no known width in this edition.
    #[error("parameter {0:#04x} cannot be set (reserved or user-defined, width unknown)")]
    UnknownParam(u8),
    /// 0x05/0x0E given without the length parameter 0x04/0x0D, or the reverse.
    #[error("parameter {text:#04x} and its length parameter {length:#04x} must be given together")]
    UnpairedText {
        /// The text parameter.
        text: u8,
        /// Its length parameter.
        length: u8,
    },
    /// The length parameter's value differs from the text's byte length.
    #[error("parameter {length:#04x} says {declared} but {text:#04x} is {actual} bytes")]
    TextLengthMismatch {
        /// The length parameter.
        length: u8,
        /// Its value.
        declared: u8,
        /// The text parameter.
        text: u8,
        /// The text's byte length.
        actual: usize,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> DownlinkError {
    DownlinkError::InvalidField {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a `dnstream` payload (bytes of JSON) into a command frame for `vin`, in `edition`,
/// stamped with the gateway time `now`.
pub fn parse_downlink(payload: &[u8], vin: Vin, edition: Edition, now: Time) -> Result<Frame, DownlinkError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| DownlinkError::Json(e.to_string()))?;
    downlink_from_json(&value, vin, edition, now)
}

/// Turns a `dnstream` JSON value into a command frame (flag 0xFE, encryption 0x01).
pub fn downlink_from_json(value: &Value, vin: Vin, edition: Edition, now: Time) -> Result<Frame, DownlinkError> {
    let object = value.as_object().ok_or(DownlinkError::NotAnObject)?;
    let action = object.get("Action").and_then(Value::as_str).unwrap_or_default();
    let (command, body) = match action {
        "Query" => (Command::PARAM_QUERY, Body::ParamQuery(query(object, now)?)),
        "Setting" => (Command::PARAM_SET, Body::Params(setting(object, edition, now)?)),
        "Control" => (Command::TERMINAL_CONTROL, Body::TerminalControl(control(object, now)?)),
        "ActivationResponse" if edition == Edition::V2025 => (
            Command::ACTIVATION_RESPONSE,
            Body::ActivationResponse(activation_response(object)?),
        ),
        "KeyExchange" if edition == Edition::V2025 => (Command::KEY_EXCHANGE, Body::KeyExchange(key_exchange(object)?)),
        "ActivationResponse" => return Err(DownlinkError::Only2025("ActivationResponse")),
        "KeyExchange" => return Err(DownlinkError::Only2025("KeyExchange")),
        other => return Err(DownlinkError::UnknownAction(other.to_owned())),
    };
    Ok(Frame::new(edition, command, ResponseFlag::COMMAND, vin, body))
}

/// Reads an id: `"0x.."` hex, a decimal string, or a JSON integer, at most 0xFF.
fn byte_id(value: &Value, field: &str) -> Result<u8, DownlinkError> {
    let number = match value {
        Value::String(text) => {
            let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse::<u64>(),
            };
            parsed.map_err(|_| invalid(field, format!("{text:?} is not a hex or decimal id")))?
        }
        other => other
            .as_u64()
            .ok_or_else(|| invalid(field, "expected an id string or integer"))?,
    };
    u8::try_from(number).map_err(|_| invalid(field, format!("{number} is over 0xFF")))
}

fn array<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<&'a [Value], DownlinkError> {
    object
        .get(field)
        .ok_or(DownlinkError::MissingField(field))?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| invalid(field, "expected an array"))
}

/// Checks the optional `Total` against the entry count and the BYTE count limit.
fn check_total(object: &Map<String, Value>, count: usize) -> Result<(), DownlinkError> {
    if count > usize::from(u8::MAX) {
        return Err(DownlinkError::TooManyEntries { count });
    }
    match object.get("Total") {
        None => Ok(()),
        Some(total) => {
            let total = total.as_u64().ok_or_else(|| invalid("Total", "expected an integer"))?;
            if usize::try_from(total).ok() == Some(count) {
                Ok(())
            } else {
                Err(DownlinkError::TotalMismatch { total, count })
            }
        }
    }
}

fn unsigned<T: TryFrom<u64>>(value: &Value, field: &str) -> Result<T, DownlinkError> {
    let number = value
        .as_u64()
        .ok_or_else(|| invalid(field, "expected a non-negative integer"))?;
    T::try_from(number).map_err(|_| invalid(field, format!("{number} is out of range")))
}

fn text(value: &Value, field: &str) -> Result<Vec<u8>, DownlinkError> {
    value
        .as_str()
        .map(encode_text)
        .ok_or_else(|| invalid(field, "expected a string"))
}

fn query(object: &Map<String, Value>, now: Time) -> Result<ParamQuery, DownlinkError> {
    let ids = array(object, "Ids")?;
    check_total(object, ids.len())?;
    let ids = ids
        .iter()
        .map(|id| byte_id(id, "Ids"))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(ParamQuery { time: now, ids })
}

fn setting(object: &Map<String, Value>, edition: Edition, now: Time) -> Result<ParamList, DownlinkError> {
    let entries = array(object, "Params")?;
    check_total(object, entries.len())?;
    let mut params = Vec::with_capacity(entries.len());
    for entry in entries {
        let (key, value) = entry
            .as_object()
            .filter(|map| map.len() == 1)
            .and_then(|map| map.iter().next())
            .ok_or_else(|| invalid("Params", "each entry must be an object with one id key"))?;
        let id = byte_id(&Value::String(key.clone()), key)?;
        let width = param_width(edition, id).ok_or(DownlinkError::UnknownParam(id))?;
        let value = match width {
            ParamWidth::Byte => ParamValue::Byte(unsigned(value, key)?),
            ParamWidth::Word => ParamValue::Word(unsigned(value, key)?),
            ParamWidth::Text5 => {
                let bytes = text(value, key)?;
                if bytes.len() != 5 {
                    return Err(invalid(key, "must be exactly 5 bytes"));
                }
                ParamValue::Text(bytes)
            }
            ParamWidth::TextSizedBy(_) => ParamValue::Text(text(value, key)?),
        };
        params.push(Param { id, value });
    }
    Ok(ParamList::new(now, pair_texts(params, edition)?))
}

/// Puts every length-sized text (0x05, 0x0E) right after its length parameter (0x04, 0x0D),
/// checking that the two are both present and agree, as EMQX's serializer expects.
fn pair_texts(params: Vec<Param>, edition: Edition) -> Result<Vec<Param>, DownlinkError> {
    let length_of = |id: u8| match param_width(edition, id) {
        Some(ParamWidth::TextSizedBy(length_id)) => Some(length_id),
        _ => None,
    };
    let text_of = |length_id: u8| (0..=u8::MAX).find(|id| length_of(*id) == Some(length_id));
    let (mut texts, others): (Vec<Param>, Vec<Param>) = params.into_iter().partition(|p| length_of(p.id).is_some());
    let mut ordered = Vec::with_capacity(others.len() + texts.len());
    for param in others {
        let length_id = param.id;
        let declared = match param.value {
            ParamValue::Byte(declared) => declared,
            _ => 0,
        };
        ordered.push(param);
        let Some(text_id) = text_of(length_id) else {
            continue;
        };
        let unpaired = DownlinkError::UnpairedText {
            text: text_id,
            length: length_id,
        };
        let position = texts.iter().position(|t| t.id == text_id).ok_or(unpaired)?;
        let text = texts.remove(position);
        let actual = match &text.value {
            ParamValue::Text(bytes) => bytes.len(),
            _ => 0,
        };
        if actual != usize::from(declared) {
            return Err(DownlinkError::TextLengthMismatch {
                length: length_id,
                declared,
                text: text_id,
                actual,
            });
        }
        ordered.push(text);
    }
    match texts.first() {
        Some(text) => Err(DownlinkError::UnpairedText {
            text: text.id,
            length: length_of(text.id).unwrap_or_default(),
        }),
        None => Ok(ordered),
    }
}

fn control(object: &Map<String, Value>, now: Time) -> Result<TerminalControl, DownlinkError> {
    let command = byte_id(
        object.get("Command").ok_or(DownlinkError::MissingField("Command"))?,
        "Command",
    )?;
    let param = match command {
        REMOTE_UPGRADE => ControlParam::Upgrade(Box::new(Upgrade::Binary(upgrade(param_object(object)?)?))),
        ALARM => {
            let param = param_object(object)?;
            let level = unsigned(
                param.get("Level").ok_or(DownlinkError::MissingField("Param.Level"))?,
                "Param.Level",
            )?;
            let message = text(
                param
                    .get("Message")
                    .ok_or(DownlinkError::MissingField("Param.Message"))?,
                "Param.Message",
            )?;
            ControlParam::Alarm(ControlAlarm { level, message })
        }
        // Other commands carry no parameters; EMQX ignores a given `Param` too.
        _ => ControlParam::None,
    };
    Ok(TerminalControl {
        time: now,
        command,
        param,
    })
}

fn required<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, DownlinkError> {
    object.get(field).ok_or(DownlinkError::MissingField(field))
}

fn activation_response(object: &Map<String, Value>) -> Result<ActivationResponse, DownlinkError> {
    Ok(ActivationResponse {
        status: unsigned(required(object, "Status")?, "Status")?,
        info: unsigned(required(object, "Info")?, "Info")?,
    })
}

fn key_exchange(object: &Map<String, Value>) -> Result<KeyExchange, DownlinkError> {
    let key = required(object, "Key")?
        .as_str()
        .and_then(parse_hex)
        .ok_or_else(|| invalid("Key", "expected a hex string"))?;
    if key.len() > usize::from(u16::MAX) {
        return Err(invalid("Key", "longer than a WORD length allows"));
    }
    Ok(KeyExchange {
        key_type: unsigned(required(object, "KeyType")?, "KeyType")?,
        key,
        active_time: time_object(required(object, "ActiveTime")?, "ActiveTime")?,
        expire_time: time_object(required(object, "ExpireTime")?, "ExpireTime")?,
    })
}

/// A time in the upstream JSON's shape: `{"Year","Month","Day","Hour","Minute","Second"}`, raw
/// byte values (the year within the century).
fn time_object(value: &Value, field: &str) -> Result<Time, DownlinkError> {
    let object = value.as_object().ok_or_else(|| {
        invalid(
            field,
            "expected {\"Year\",\"Month\",\"Day\",\"Hour\",\"Minute\",\"Second\"}",
        )
    })?;
    let part = |key: &str| -> Result<u8, DownlinkError> {
        let path = format!("{field}.{key}");
        let value = object.get(key).ok_or_else(|| invalid(&path, "missing"))?;
        unsigned(value, &path)
    };
    Ok(Time {
        year: part("Year")?,
        month: part("Month")?,
        day: part("Day")?,
        hour: part("Hour")?,
        minute: part("Minute")?,
        second: part("Second")?,
    })
}

/// Hex digits (either case, even count) to bytes.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}

fn param_object(object: &Map<String, Value>) -> Result<&Map<String, Value>, DownlinkError> {
    object
        .get("Param")
        .ok_or(DownlinkError::MissingField("Param"))?
        .as_object()
        .ok_or_else(|| invalid("Param", "expected an object"))
}

/// The B.16 upgrade string from EMQX's keys; absent keys become empty fields.
fn upgrade(param: &Map<String, Value>) -> Result<UpgradeB16, DownlinkError> {
    let text_field = |key: &str, exact_len: Option<usize>| -> Result<Vec<u8>, DownlinkError> {
        let Some(value) = param.get(key) else {
            return Ok(Vec::new());
        };
        let bytes = text(value, key)?;
        if bytes.contains(&b';') {
            return Err(invalid(key, "must not contain ';'"));
        }
        match exact_len {
            Some(len) if bytes.len() != len => Err(invalid(key, format!("must be exactly {len} bytes"))),
            _ => Ok(bytes),
        }
    };
    let word_field = |key: &str| param.get(key).map(|value| unsigned::<u16>(value, key)).transpose();
    let address = param
        .get("Ip")
        .map(|value| {
            value
                .as_str()
                .and_then(parse_address)
                .ok_or_else(|| invalid("Ip", "expected a dotted IPv4 address"))
        })
        .transpose()?;
    Ok(UpgradeB16 {
        apn: text_field("DialingName", None)?,
        user: text_field("Username", None)?,
        password: text_field("Password", None)?,
        address,
        port: word_field("Port")?,
        manufacturer: text_field("ManufacturerId", Some(4))?,
        hardware_version: text_field("HardwareVer", Some(5))?,
        firmware_version: text_field("SoftwareVer", Some(5))?,
        url: text_field("UpgradeUrl", None)?,
        timeout_minutes: word_field("Timeout")?,
    })
}
