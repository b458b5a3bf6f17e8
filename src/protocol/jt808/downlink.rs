//! Cloud JSON → downlink message, for EMQX's downstream `{"header":{"msg_id":...},"body":{...}}`.
//!
//! Owns the key names EMQX accepts for each platform command and their validation: every missing
//! key, wrong type, out-of-range number, bad base64/BCD or unencodable text is a typed
//! [`JsonError`]. Only `msg_id` and an optional `msg_sn` come from the payload header; phone,
//! layout and the default serial come from the connection ([`DownlinkContext`]). Optional
//! `length`/count keys are checked against their lists. Must not send or queue anything.

use serde_json::{Map, Value};

use super::commands::{
    GeneralReply, ResendRequest, TemporaryTracking, TerminalControl, TextMessage, Upgrade, VehicleControl,
};
use super::error::JsonError;
use super::header::{Edition, Header, Phone};
use super::identity::{RegisterReply, MANUFACTURER_LEN};
use super::media::{MediaUploadReply, PassThrough};
use super::message::{ids, Body, Message};
use super::params::{param_type, Param, ParamType};
use super::text::{base64_decode, TextEncoding};
use super::wire::BcdTime;

/// What the connection supplies for a downlink built from JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownlinkContext {
    /// The terminal's phone (from its authenticated header).
    pub phone: Phone,
    /// The connection's header layout: `Some(version)` for 2019 terminals.
    pub protocol_version: Option<u8>,
    /// The session's next serial, used unless the payload gives `header.msg_sn`.
    pub serial: u16,
    /// STRING encoding.
    pub text: TextEncoding,
}

/// Builds the downlink message for a cloud command.
pub fn downlink_from_json(json: &Value, ctx: &DownlinkContext) -> Result<Message, JsonError> {
    let root = object(json, "payload")?;
    let header = object(
        root.get("header").ok_or_else(|| JsonError::Missing("header".into()))?,
        "header",
    )?;
    let msg_id: u16 = uint(header, "header", "msg_id")?;
    let serial = match header.get("msg_sn") {
        None | Some(Value::Null) => ctx.serial,
        Some(_) => uint(header, "header", "msg_sn")?,
    };
    let empty = Map::new();
    let body = match root.get("body") {
        None | Some(Value::Null) => &empty,
        Some(value) => object(value, "body")?,
    };
    let edition = if ctx.protocol_version.is_some() {
        Edition::V2019
    } else {
        Edition::V2013
    };
    let fields = Fields {
        map: body,
        text: ctx.text,
    };
    let body = match msg_id {
        ids::PLATFORM_GENERAL_REPLY => Body::PlatformGeneralReply(GeneralReply {
            reply_serial: fields.uint("seq")?,
            reply_id: fields.uint("id")?,
            result: fields.uint("result")?,
        }),
        ids::PLATFORM_RESEND_REQUEST => {
            let indexes: Vec<u16> = fields.uint_list("ids")?;
            fields.check_len("length", indexes.len())?;
            Body::PlatformResendRequest(ResendRequest {
                word_count: edition == Edition::V2019,
                first_serial: fields.uint("seq")?,
                indexes,
            })
        }
        ids::SERVER_TIME_REPLY => {
            let digits = fields.str("time")?;
            Body::ServerTimeReply(BcdTime::parse(digits).ok_or_else(|| JsonError::Bcd("body.time".into()))?)
        }
        ids::REGISTER_REPLY => Body::RegisterReply(RegisterReply {
            reply_serial: fields.uint("seq")?,
            result: fields.uint("result")?,
            auth_code: fields.opt_text("auth_code")?.unwrap_or_default(),
        }),
        ids::SET_PARAMS => {
            let items = fields.list("params")?;
            fields.check_len("length", items.len())?;
            let params = items
                .iter()
                .enumerate()
                .map(|(i, item)| param_from_json(item, i, edition, ctx.text))
                .collect::<Result<Vec<_>, _>>()?;
            Body::SetParams(params)
        }
        ids::QUERY_ALL_PARAMS => Body::QueryAllParams,
        ids::TERMINAL_CONTROL => Body::TerminalControl(TerminalControl {
            command: fields.uint("command")?,
            param: fields.opt_text("param")?.unwrap_or_default(),
        }),
        ids::QUERY_PARAMS => {
            let param_ids: Vec<u32> = fields.uint_list("ids")?;
            fields.check_len("length", param_ids.len())?;
            Body::QueryParams(param_ids)
        }
        ids::QUERY_ATTRIBUTES => Body::QueryAttributes,
        ids::UPGRADE => {
            let version = fields.text("version")?;
            let package = fields.base64("firmware")?;
            fields.check_len("ver_len", version.len())?;
            fields.check_len("fw_len", package.len())?;
            Body::Upgrade(Upgrade {
                upgrade_type: fields.uint("type")?,
                manufacturer: fields.fixed_text("manufacturer", MANUFACTURER_LEN)?,
                version,
                package,
            })
        }
        ids::QUERY_LOCATION => Body::QueryLocation,
        ids::TEMPORARY_TRACKING => Body::TemporaryTracking(TemporaryTracking {
            interval: fields.uint("period")?,
            validity: fields.uint("expiry")?,
        }),
        ids::TEXT_MESSAGE => Body::TextMessage(TextMessage {
            flags: fields.uint("flag")?,
            // EMQX defaults the 2019 text type to 1 (notice).
            text_type: if edition == Edition::V2019 {
                Some(fields.opt_uint("text_type")?.unwrap_or(1))
            } else {
                None
            },
            text: fields.text("text")?,
        }),
        ids::VEHICLE_CONTROL => Body::VehicleControl(vehicle_control_from_json(&fields, edition)?),
        ids::MEDIA_UPLOAD_REPLY => {
            let retransmit: Vec<u16> = fields.uint_list("retx_ids")?;
            fields.check_len("length", retransmit.len())?;
            Body::MediaUploadReply(MediaUploadReply {
                media_id: fields.uint("mm_id")?,
                retransmit,
            })
        }
        ids::DOWNLINK_PASS_THROUGH => Body::DownlinkPassThrough(PassThrough {
            kind: fields.uint("type")?,
            data: fields.base64("data")?,
        }),
        other => return Err(JsonError::UnsupportedMsgId(other)),
    };
    let header = Header::new(msg_id, ctx.phone, ctx.protocol_version, serial);
    let message = Message::new(header, body);
    // Reject what cannot go on the wire now, with the reason, rather than at send time.
    message.encode_body()?;
    Ok(message)
}

/// 0x8500: `{"flag"}` in 2013; in 2019 `{"count"?, "controls":[{"id","param"(base64)}]}` or the
/// raw `{"count","data"(base64)}` form this codec publishes.
fn vehicle_control_from_json(fields: &Fields<'_>, edition: Edition) -> Result<VehicleControl, JsonError> {
    if edition != Edition::V2019 {
        return Ok(VehicleControl::Flags(fields.uint("flag")?));
    }
    if fields.map.contains_key("data") {
        return Ok(VehicleControl::Controls {
            count: fields.uint("count")?,
            items: fields.base64("data")?,
        });
    }
    let controls = fields.list("controls")?;
    fields.check_len("count", controls.len())?;
    let mut items = Vec::new();
    for (i, control) in controls.iter().enumerate() {
        let control = Fields {
            map: object(control, &format!("body.controls[{i}]"))?,
            text: fields.text,
        };
        let id: u16 = control.uint("id")?;
        items.extend_from_slice(&id.to_be_bytes());
        items.extend_from_slice(&control.base64("param")?);
    }
    Ok(VehicleControl::Controls {
        count: u16::try_from(controls.len()).map_err(|_| JsonError::OutOfRange {
            field: "body.controls".into(),
            value: controls.len().to_string(),
        })?,
        items,
    })
}

/// One 0x8103 item: numbers are sized by the type table, strings are text for STRING ids and
/// base64 otherwise (EMQX's form for BYTE\[8\] and unknown ids).
fn param_from_json(item: &Value, i: usize, edition: Edition, text: TextEncoding) -> Result<Param, JsonError> {
    let path = format!("body.params[{i}]");
    let fields = Fields {
        map: object(item, &path)?,
        text,
    };
    let id: u32 = fields.uint("id")?;
    let value_path = format!("{path}.value");
    let param = match fields.map.get("value") {
        Some(Value::Number(n)) => {
            let v = n.as_u64().and_then(|v| u32::try_from(v).ok());
            v.and_then(|v| Param::int(id, v, edition))
                .ok_or(JsonError::OutOfRange {
                    field: value_path,
                    value: n.to_string(),
                })?
        }
        Some(Value::String(s)) => {
            let value = if param_type(id, edition) == Some(ParamType::Text) {
                text.encode(s).ok_or(JsonError::Unencodable(value_path))?
            } else {
                base64_decode(s).ok_or(JsonError::Base64(value_path))?
            };
            Param { id, value }
        }
        Some(_) => {
            return Err(JsonError::WrongType {
                field: value_path,
                expected: "a number or a string",
            })
        }
        None => return Err(JsonError::Missing(value_path)),
    };
    Ok(param)
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, JsonError> {
    value.as_object().ok_or_else(|| JsonError::WrongType {
        field: path.to_owned(),
        expected: "an object",
    })
}

fn uint<T: TryFrom<u64>>(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<T, JsonError> {
    let path = format!("{prefix}.{key}");
    let value = map.get(key).ok_or_else(|| JsonError::Missing(path.clone()))?;
    uint_value(value, path)
}

fn uint_value<T: TryFrom<u64>>(value: &Value, path: String) -> Result<T, JsonError> {
    let number = value.as_u64().ok_or_else(|| match value {
        Value::Number(n) => JsonError::OutOfRange {
            field: path.clone(),
            value: n.to_string(),
        },
        _ => JsonError::WrongType {
            field: path.clone(),
            expected: "an unsigned integer",
        },
    })?;
    T::try_from(number).map_err(|_| JsonError::OutOfRange {
        field: path,
        value: number.to_string(),
    })
}

/// Typed access to the keys of one body object, with dotted paths in errors.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    text: TextEncoding,
}

impl Fields<'_> {
    fn path(&self, key: &str) -> String {
        format!("body.{key}")
    }

    fn get(&self, key: &str) -> Result<&Value, JsonError> {
        self.map.get(key).ok_or_else(|| JsonError::Missing(self.path(key)))
    }

    fn uint<T: TryFrom<u64>>(&self, key: &str) -> Result<T, JsonError> {
        uint(self.map, "body", key)
    }

    fn opt_uint<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>, JsonError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.uint(key).map(Some),
        }
    }

    fn str(&self, key: &str) -> Result<&str, JsonError> {
        self.get(key)?.as_str().ok_or_else(|| JsonError::WrongType {
            field: self.path(key),
            expected: "a string",
        })
    }

    fn text(&self, key: &str) -> Result<Vec<u8>, JsonError> {
        let s = self.str(key)?;
        self.text
            .encode(s)
            .ok_or_else(|| JsonError::Unencodable(self.path(key)))
    }

    /// Text for a fixed-width field, NUL-padded to the width as it goes on the wire.
    fn fixed_text(&self, key: &str, width: usize) -> Result<Vec<u8>, JsonError> {
        let mut bytes = self.text(key)?;
        if bytes.len() > width {
            return Err(JsonError::OutOfRange {
                field: self.path(key),
                value: format!("{} bytes (at most {width})", bytes.len()),
            });
        }
        bytes.resize(width, 0);
        Ok(bytes)
    }

    fn opt_text(&self, key: &str) -> Result<Option<Vec<u8>>, JsonError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.text(key).map(Some),
        }
    }

    fn base64(&self, key: &str) -> Result<Vec<u8>, JsonError> {
        base64_decode(self.str(key)?).ok_or_else(|| JsonError::Base64(self.path(key)))
    }

    fn list(&self, key: &str) -> Result<&Vec<Value>, JsonError> {
        self.get(key)?.as_array().ok_or_else(|| JsonError::WrongType {
            field: self.path(key),
            expected: "an array",
        })
    }

    fn uint_list<T: TryFrom<u64>>(&self, key: &str) -> Result<Vec<T>, JsonError> {
        self.list(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| uint_value(v, format!("body.{key}[{i}]")))
            .collect()
    }

    /// An optional count key must equal its list's length.
    fn check_len(&self, key: &str, actual: usize) -> Result<(), JsonError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(_) => {
                let declared: u64 = self.uint(key)?;
                if usize::try_from(declared).ok() == Some(actual) {
                    Ok(())
                } else {
                    Err(JsonError::LengthMismatch {
                        field: self.path(key),
                        declared,
                        actual,
                    })
                }
            }
        }
    }
}
