//! Message → JSON in EMQX's shape: `{"header":{...},"body":{...}}`.
//!
//! Owns EMQX's key names and value forms: raw wire integers, BCD as digit strings, STRING fields
//! as text in the configured encoding, blobs as base64. Deliberate differences from EMQX (stated in
//! the facts sheet's open questions): 0x25/0x2A bits are read LSB-first as the standard says, BCD
//! nibbles render as hex digits, 0x06 carriage temperature is sign-magnitude per the 2019 text, and
//! bytes after the last whole extra appear as `extra.trailing`. Must not add the edge envelope.

use serde_json::{json, Map, Value};

use super::commands::VehicleControl;
use super::error::EncodeError;
use super::header::{Edition, Header};
use super::location::{Location, LocationBasic, LocationExtra, LocationReply, IO_STATUS_BITS, VEHICLE_SIGNAL_BITS};
use super::message::{is_modelled, Body, Message};
use super::params::{Param, ParamValue};
use super::text::{base64_encode, TextEncoding};
use super::wire::{bcd_to_string, trim_nul};

impl Message {
    /// `{"header":{...},"body":{...}}` as EMQX publishes it. Fails only for a hand-built message
    /// that cannot be encoded (the header's `len` is the encoded body length).
    pub fn to_json(&self, text: TextEncoding) -> Result<Value, EncodeError> {
        let body_len = self.encode_body()?.len();
        Ok(json!({
            "header": header_json(&self.header, body_len),
            "body": body_json(&self.body, &self.header, text),
        }))
    }
}

/// EMQX's header object: `msg_id, encrypt, len, phone, msg_sn`, plus `proto_ver` (2019) and
/// `frag_total, frag_sn` (subpackaged).
pub fn header_json(header: &Header, body_len: usize) -> Value {
    let mut out = Map::new();
    out.insert("msg_id".into(), header.msg_id.into());
    out.insert("encrypt".into(), header.encryption.into());
    out.insert("len".into(), body_len.into());
    out.insert("phone".into(), header.phone.to_string().into());
    out.insert("msg_sn".into(), header.serial.into());
    if let Some(version) = header.protocol_version {
        out.insert("proto_ver".into(), version.into());
    }
    if let Some(sub) = header.subpackage {
        out.insert("frag_total".into(), sub.total.into());
        out.insert("frag_sn".into(), sub.index.into());
    }
    Value::Object(out)
}

/// The body object for `body` sent under `header`.
pub fn body_json(body: &Body, header: &Header, text: TextEncoding) -> Value {
    let edition = if header.is_2019() {
        Edition::V2019
    } else {
        Edition::V2013
    };
    let string = |bytes: &[u8]| Value::String(text.decode(bytes).into_owned());
    let fixed = |bytes: &[u8]| string(trim_nul(bytes));
    match body {
        Body::TerminalGeneralReply(reply) | Body::PlatformGeneralReply(reply) => json!({
            "seq": reply.reply_serial, "id": reply.reply_id, "result": reply.result,
        }),
        Body::Heartbeat(vendor) if !vendor.is_empty() => json!({ "data": base64_encode(vendor) }),
        Body::Heartbeat(_)
        | Body::Logout
        | Body::ServerTimeQuery
        | Body::QueryAllParams
        | Body::QueryAttributes
        | Body::QueryLocation => json!({}),
        Body::ServerTimeReply(time) => json!({ "time": time.to_string() }),
        Body::PlatformResendRequest(request) => json!({
            "seq": request.first_serial, "length": request.indexes.len(), "ids": request.indexes,
        }),
        Body::TerminalResendRequest(request) => json!({
            "seq": request.first_serial, "count": request.indexes.len(), "ids": request.indexes,
        }),
        Body::Register(register) => json!({
            "province": register.province,
            "city": register.city,
            "manufacturer": fixed(&register.manufacturer),
            "model": fixed(&register.model),
            "dev_id": fixed(&register.terminal_id),
            "color": register.plate_color,
            "license_number": string(&register.plate),
        }),
        Body::RegisterReply(reply) => {
            let mut out = json!({ "seq": reply.reply_serial, "result": reply.result });
            if reply.result == 0 || !reply.auth_code.is_empty() {
                out["auth_code"] = string(&reply.auth_code);
            }
            out
        }
        Body::Authenticate(auth) => {
            let mut out = json!({ "code": string(&auth.code) });
            if let Some(ext) = &auth.extension {
                out["imei"] = fixed(&ext.imei);
                out["software_version"] = fixed(&ext.software_version);
            }
            out
        }
        Body::SetParams(params) => json!({
            "length": params.len(), "params": params_json(params, edition, text),
        }),
        Body::TerminalControl(control) => json!({
            "command": control.command, "param": string(&control.param),
        }),
        Body::QueryParams(ids) => json!({ "length": ids.len(), "ids": ids }),
        Body::ParamsReply(reply) => json!({
            "seq": reply.reply_serial,
            "length": reply.params.len(),
            "params": params_json(&reply.params, edition, text),
        }),
        Body::Attributes(attributes) => json!({
            "type": attributes.terminal_type,
            "manufacturer": fixed(&attributes.manufacturer),
            "model": fixed(&attributes.model),
            "id": fixed(&attributes.terminal_id),
            "iccid": bcd_to_string(&attributes.iccid),
            "hardware_version": string(&attributes.hardware_version),
            "firmware_version": string(&attributes.firmware_version),
            "gnss_prop": attributes.gnss,
            "comm_prop": attributes.comm,
        }),
        Body::Upgrade(upgrade) => json!({
            "type": upgrade.upgrade_type,
            "manufacturer": fixed(&upgrade.manufacturer),
            "ver_len": upgrade.version.len(),
            "version": string(&upgrade.version),
            "fw_len": upgrade.package.len(),
            "firmware": base64_encode(&upgrade.package),
        }),
        Body::UpgradeResult(result) => json!({
            "type": result.upgrade_type, "result": result.result,
        }),
        Body::Location(location) => location_json(location),
        Body::LocationQueryReply(LocationReply { reply_serial, location }) => {
            json!({ "seq": reply_serial, "params": location_json(location) })
        }
        Body::VehicleControlReply(LocationReply { reply_serial, location }) => {
            json!({ "seq": reply_serial, "location": location_json(location) })
        }
        Body::TemporaryTracking(tracking) => json!({
            "period": tracking.interval, "expiry": tracking.validity,
        }),
        Body::TextMessage(message) => {
            let mut out = json!({ "flag": message.flags, "text": string(&message.text) });
            if let Some(text_type) = message.text_type {
                out["text_type"] = text_type.into();
            }
            out
        }
        Body::VehicleControl(VehicleControl::Flags(flags)) => json!({ "flag": flags }),
        Body::VehicleControl(VehicleControl::Controls { count, items }) => json!({
            "count": count, "data": base64_encode(items),
        }),
        Body::BatchLocation(batch) => json!({
            "type": batch.location_type,
            "length": batch.items.len(),
            "location": batch.items.iter().map(location_json).collect::<Vec<_>>(),
        }),
        Body::MediaEvent(event) => json!({
            "id": event.media_id,
            "type": event.media_type,
            "format": event.format,
            "event": event.event,
            "channel": event.channel,
        }),
        Body::MediaUpload(upload) => {
            let event = &upload.event;
            let mut out = json!({
                "id": event.media_id,
                "type": event.media_type,
                "format": event.format,
                "event": event.event,
                "channel": event.channel,
                "multimedia": base64_encode(&upload.data),
            });
            if let Some(location) = &upload.location {
                out["location"] = Value::Object(basic_json(location));
            }
            out
        }
        Body::MediaUploadReply(reply) => json!({
            "mm_id": reply.media_id, "length": reply.retransmit.len(), "retx_ids": reply.retransmit,
        }),
        Body::UplinkPassThrough(data) | Body::DownlinkPassThrough(data) => json!({
            "type": data.kind, "data": base64_encode(&data.data),
        }),
        Body::CompressedUpload(data) => json!({
            "length": data.len(), "data": base64_encode(data),
        }),
        Body::Raw(bytes) if is_modelled(header.msg_id) => json!({
            "undecoded": true, "data": base64_encode(bytes),
        }),
        Body::Raw(bytes) => json!({ "unknown_id": true, "data": base64_encode(bytes) }),
    }
}

fn params_json(params: &[Param], edition: Edition, text: TextEncoding) -> Vec<Value> {
    params
        .iter()
        .map(|param| {
            let value = match param.typed(edition) {
                ParamValue::Int(v) => Value::from(v),
                ParamValue::Text(bytes) => Value::String(text.decode(bytes).into_owned()),
                ParamValue::Bytes(bytes) => Value::String(base64_encode(bytes)),
            };
            json!({ "id": param.id, "value": value })
        })
        .collect()
}

fn basic_json(basic: &LocationBasic) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("alarm".into(), basic.alarm.into());
    out.insert("status".into(), basic.status.into());
    out.insert("latitude".into(), basic.latitude.into());
    out.insert("longitude".into(), basic.longitude.into());
    out.insert("altitude".into(), basic.altitude.into());
    out.insert("speed".into(), basic.speed.into());
    out.insert("direction".into(), basic.direction.into());
    out.insert("time".into(), basic.time.to_string().into());
    out
}

/// EMQX's location object: the basic fields plus `extra` when the report has extras.
pub fn location_json(location: &Location) -> Value {
    let mut out = basic_json(&location.basic);
    if !location.extras.is_empty() || !location.trailing.is_empty() {
        out.insert("extra".into(), Value::Object(extras_json(location)));
    }
    Value::Object(out)
}

fn bits_json(value: u32, names: &[&str]) -> Value {
    let map: Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(bit, name)| ((*name).to_owned(), Value::from((value >> bit) & 1)))
        .collect();
    Value::Object(map)
}

/// First id EMQX files under `custome` (0xE0 itself is kept as an ordinary raw id).
const FIRST_CUSTOM_EXTRA_ID: u8 = 0xE1;

fn extras_json(location: &Location) -> Map<String, Value> {
    let mut out = Map::new();
    let mut custom = Map::new();
    for extra in &location.extras {
        let (key, value) = match extra {
            LocationExtra::Mileage(v) => ("mileage", Value::from(*v)),
            LocationExtra::Fuel(v) => ("fuel_meter", Value::from(*v)),
            LocationExtra::RecorderSpeed(v) => ("speed", Value::from(*v)),
            LocationExtra::AlarmEventId(v) => ("alarm_id", Value::from(*v)),
            LocationExtra::TyrePressure(v) => ("tire_pressure", Value::from(base64_encode(v))),
            LocationExtra::CarriageTemperature(_) => (
                "carriage_temp",
                Value::from(extra.carriage_celsius().unwrap_or_default()),
            ),
            LocationExtra::Overspeed { location_type, area_id } => {
                let mut alarm = json!({ "type": location_type });
                if let Some(id) = area_id {
                    alarm["id"] = Value::from(*id);
                }
                ("overspeed_alarm", alarm)
            }
            LocationExtra::AreaRoute {
                location_type,
                area_id,
                direction,
            } => (
                "in_out_alarm",
                json!({ "type": location_type, "id": area_id, "direction": direction }),
            ),
            LocationExtra::SegmentTime {
                segment_id,
                seconds,
                result,
            } => (
                "path_time_alarm",
                json!({ "id": segment_id, "time": seconds, "result": result }),
            ),
            LocationExtra::VehicleSignals(v) => ("signal", bits_json(*v, &VEHICLE_SIGNAL_BITS)),
            LocationExtra::IoStatus(v) => ("io_status", bits_json(u32::from(*v), &IO_STATUS_BITS)),
            LocationExtra::Analog(v) => ("analog", json!({ "ad0": v & 0xFFFF, "ad1": v >> 16 })),
            LocationExtra::SignalStrength(v) => ("rssi", Value::from(*v)),
            LocationExtra::SatelliteCount(v) => ("gnss_sat_num", Value::from(*v)),
            LocationExtra::Raw { id, value } => {
                let blob = Value::from(base64_encode(value));
                if *id >= FIRST_CUSTOM_EXTRA_ID {
                    custom.insert(id.to_string(), blob);
                } else {
                    out.insert(id.to_string(), blob);
                }
                continue;
            }
        };
        out.insert(key.to_owned(), value);
    }
    if !custom.is_empty() {
        out.insert("custome".into(), Value::Object(custom));
    }
    if !location.trailing.is_empty() {
        out.insert("trailing".into(), base64_encode(&location.trailing).into());
    }
    out
}
