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
use super::media::MediaEvent;
use super::message::{is_modelled, Body, Message};
use super::params::{Param, ParamValue};
use super::text::{base64_encode, TextEncoding};
use super::wire::{bcd_to_string, trim_nul};
use crate::protocol::json::{base64_into, key_order, JsonWriter};

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

// ---- Direct writing: the same JSON as above, bytes straight from the typed message. ----

impl Message {
    /// Appends `{"header":{...},"body":{...}}`, serialised, to `out`: the bytes of
    /// `serde_json::to_vec(&self.to_json(text)?)` without the `Value` tree. Fails only for a
    /// hand-built message that cannot be encoded.
    pub fn write_json(&self, text: TextEncoding, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let body_len = self.body_len()?;
        let mut w = JsonWriter::new(out);
        w.begin_object();
        w.key("body");
        write_body_json(&mut w, &self.body, &self.header, text);
        w.key("header");
        write_header_json(&mut w, &self.header, body_len);
        w.end_object();
        Ok(())
    }

    /// [`Message::write_json`] into a new buffer.
    pub fn to_json_bytes(&self, text: TextEncoding) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(512);
        self.write_json(text, &mut out)?;
        Ok(out)
    }

    /// The encoded body's length (the header's `len` in JSON) without encoding a location.
    fn body_len(&self) -> Result<usize, EncodeError> {
        match &self.body {
            Body::Location(location) if self.body.msg_id() == Some(self.header.msg_id) => location.encoded_len(),
            _ => Ok(self.encode_body()?.len()),
        }
    }
}

/// [`header_json`] written directly (members in key order).
pub fn write_header_json(w: &mut JsonWriter<'_>, header: &Header, body_len: usize) {
    w.begin_object();
    w.member_u64("encrypt", header.encryption);
    if let Some(sub) = header.subpackage {
        w.member_u64("frag_sn", sub.index);
        w.member_u64("frag_total", sub.total);
    }
    w.member_u64("len", body_len as u64);
    w.member_u64("msg_id", header.msg_id);
    w.member_u64("msg_sn", header.serial);
    w.key("phone");
    w.str_with(|out| bcd_into(out, header.phone.as_bcd()));
    if let Some(version) = header.protocol_version {
        w.member_u64("proto_ver", version);
    }
    w.end_object();
}

/// BCD digits as lowercase hex nibbles (what [`bcd_to_string`] gives), appended.
fn bcd_into(out: &mut Vec<u8>, bcd: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bcd {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0F)]);
    }
}

fn write_text(w: &mut JsonWriter<'_>, text: TextEncoding, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        // Both encodings map ASCII to itself.
        Ok(ascii) if bytes.is_ascii() => w.str(ascii),
        _ => w.str(&text.decode(bytes)),
    }
}

fn write_base64(w: &mut JsonWriter<'_>, bytes: &[u8]) {
    w.str_with(|out| base64_into(out, bytes));
}

fn write_u16s(w: &mut JsonWriter<'_>, values: impl IntoIterator<Item = u64>) {
    w.begin_array();
    for value in values {
        w.u64(value);
    }
    w.end_array();
}

/// [`body_json`] written directly (members in key order).
pub fn write_body_json(w: &mut JsonWriter<'_>, body: &Body, header: &Header, text: TextEncoding) {
    let edition = if header.is_2019() {
        Edition::V2019
    } else {
        Edition::V2013
    };
    let string = |w: &mut JsonWriter<'_>, bytes: &[u8]| write_text(w, text, bytes);
    let fixed = |w: &mut JsonWriter<'_>, bytes: &[u8]| write_text(w, text, trim_nul(bytes));
    if let Body::Location(location) = body {
        return write_location_json(w, location);
    }
    w.begin_object();
    match body {
        Body::TerminalGeneralReply(reply) | Body::PlatformGeneralReply(reply) => {
            w.member_u64("id", reply.reply_id);
            w.member_u64("result", reply.result);
            w.member_u64("seq", reply.reply_serial);
        }
        Body::Heartbeat(vendor) if !vendor.is_empty() => {
            w.key("data");
            write_base64(w, vendor);
        }
        Body::Heartbeat(_)
        | Body::Logout
        | Body::ServerTimeQuery
        | Body::QueryAllParams
        | Body::QueryAttributes
        | Body::QueryLocation => {}
        Body::ServerTimeReply(time) => {
            w.key("time");
            w.str_with(|out| bcd_into(out, &time.0));
        }
        Body::PlatformResendRequest(request) => {
            w.key("ids");
            write_u16s(w, request.indexes.iter().map(|i| u64::from(*i)));
            w.member_u64("length", request.indexes.len() as u64);
            w.member_u64("seq", request.first_serial);
        }
        Body::TerminalResendRequest(request) => {
            w.member_u64("count", request.indexes.len() as u64);
            w.key("ids");
            write_u16s(w, request.indexes.iter().map(|i| u64::from(*i)));
            w.member_u64("seq", request.first_serial);
        }
        Body::Register(register) => {
            w.member_u64("city", register.city);
            w.member_u64("color", register.plate_color);
            w.key("dev_id");
            fixed(w, &register.terminal_id);
            w.key("license_number");
            string(w, &register.plate);
            w.key("manufacturer");
            fixed(w, &register.manufacturer);
            w.key("model");
            fixed(w, &register.model);
            w.member_u64("province", register.province);
        }
        Body::RegisterReply(reply) => {
            if reply.result == 0 || !reply.auth_code.is_empty() {
                w.key("auth_code");
                string(w, &reply.auth_code);
            }
            w.member_u64("result", reply.result);
            w.member_u64("seq", reply.reply_serial);
        }
        Body::Authenticate(auth) => {
            w.key("code");
            string(w, &auth.code);
            if let Some(ext) = &auth.extension {
                w.key("imei");
                fixed(w, &ext.imei);
                w.key("software_version");
                fixed(w, &ext.software_version);
            }
        }
        Body::SetParams(params) => {
            w.member_u64("length", params.len() as u64);
            w.key("params");
            write_params_json(w, params, edition, text);
        }
        Body::TerminalControl(control) => {
            w.member_u64("command", control.command);
            w.key("param");
            string(w, &control.param);
        }
        Body::QueryParams(ids) => {
            w.key("ids");
            write_u16s(w, ids.iter().map(|i| u64::from(*i)));
            w.member_u64("length", ids.len() as u64);
        }
        Body::ParamsReply(reply) => {
            w.member_u64("length", reply.params.len() as u64);
            w.key("params");
            write_params_json(w, &reply.params, edition, text);
            w.member_u64("seq", reply.reply_serial);
        }
        Body::Attributes(attributes) => {
            w.member_u64("comm_prop", attributes.comm);
            w.key("firmware_version");
            string(w, &attributes.firmware_version);
            w.member_u64("gnss_prop", attributes.gnss);
            w.key("hardware_version");
            string(w, &attributes.hardware_version);
            w.key("iccid");
            w.str_with(|out| bcd_into(out, &attributes.iccid));
            w.key("id");
            fixed(w, &attributes.terminal_id);
            w.key("manufacturer");
            fixed(w, &attributes.manufacturer);
            w.key("model");
            fixed(w, &attributes.model);
            w.member_u64("type", attributes.terminal_type);
        }
        Body::Upgrade(upgrade) => {
            w.key("firmware");
            write_base64(w, &upgrade.package);
            w.member_u64("fw_len", upgrade.package.len() as u64);
            w.key("manufacturer");
            fixed(w, &upgrade.manufacturer);
            w.member_u64("type", upgrade.upgrade_type);
            w.member_u64("ver_len", upgrade.version.len() as u64);
            w.key("version");
            string(w, &upgrade.version);
        }
        Body::UpgradeResult(result) => {
            w.member_u64("result", result.result);
            w.member_u64("type", result.upgrade_type);
        }
        Body::Location(_) => {}
        Body::LocationQueryReply(LocationReply { reply_serial, location }) => {
            w.key("params");
            write_location_json(w, location);
            w.member_u64("seq", *reply_serial);
        }
        Body::VehicleControlReply(LocationReply { reply_serial, location }) => {
            w.key("location");
            write_location_json(w, location);
            w.member_u64("seq", *reply_serial);
        }
        Body::TemporaryTracking(tracking) => {
            w.member_u64("expiry", tracking.validity);
            w.member_u64("period", tracking.interval);
        }
        Body::TextMessage(message) => {
            w.member_u64("flag", message.flags);
            w.key("text");
            string(w, &message.text);
            if let Some(text_type) = message.text_type {
                w.member_u64("text_type", text_type);
            }
        }
        Body::VehicleControl(VehicleControl::Flags(flags)) => w.member_u64("flag", *flags),
        Body::VehicleControl(VehicleControl::Controls { count, items }) => {
            w.member_u64("count", *count);
            w.key("data");
            write_base64(w, items);
        }
        Body::BatchLocation(batch) => {
            w.member_u64("length", batch.items.len() as u64);
            w.key("location");
            w.begin_array();
            for item in &batch.items {
                write_location_json(w, item);
            }
            w.end_array();
            w.member_u64("type", batch.location_type);
        }
        Body::MediaEvent(event) => write_media_event_members(w, event),
        Body::MediaUpload(upload) => {
            let event = &upload.event;
            w.member_u64("channel", event.channel);
            w.member_u64("event", event.event);
            w.member_u64("format", event.format);
            w.member_u64("id", event.media_id);
            if let Some(location) = &upload.location {
                w.key("location");
                w.begin_object();
                write_basic_members(w, location, |_| {});
                w.end_object();
            }
            w.key("multimedia");
            write_base64(w, &upload.data);
            w.member_u64("type", event.media_type);
        }
        Body::MediaUploadReply(reply) => {
            w.member_u64("length", reply.retransmit.len() as u64);
            w.member_u64("mm_id", reply.media_id);
            w.key("retx_ids");
            write_u16s(w, reply.retransmit.iter().map(|i| u64::from(*i)));
        }
        Body::UplinkPassThrough(data) | Body::DownlinkPassThrough(data) => {
            w.key("data");
            write_base64(w, &data.data);
            w.member_u64("type", data.kind);
        }
        Body::CompressedUpload(data) => {
            w.key("data");
            write_base64(w, data);
            w.member_u64("length", data.len() as u64);
        }
        Body::Raw(bytes) if is_modelled(header.msg_id) => {
            w.key("data");
            write_base64(w, bytes);
            w.key("undecoded");
            w.bool(true);
        }
        Body::Raw(bytes) => {
            w.key("data");
            write_base64(w, bytes);
            w.key("unknown_id");
            w.bool(true);
        }
    }
    w.end_object();
}

fn write_media_event_members(w: &mut JsonWriter<'_>, event: &MediaEvent) {
    w.member_u64("channel", event.channel);
    w.member_u64("event", event.event);
    w.member_u64("format", event.format);
    w.member_u64("id", event.media_id);
    w.member_u64("type", event.media_type);
}

fn write_params_json(w: &mut JsonWriter<'_>, params: &[Param], edition: Edition, text: TextEncoding) {
    w.begin_array();
    for param in params {
        w.begin_object();
        w.member_u64("id", param.id);
        w.key("value");
        match param.typed(edition) {
            ParamValue::Int(v) => w.u64(u64::from(v)),
            ParamValue::Text(bytes) => w.str(&text.decode(bytes)),
            ParamValue::Bytes(bytes) => write_base64(w, bytes),
        }
        w.end_object();
    }
    w.end_array();
}

/// The basic members in key order, with `extra` written by `extra` in its place (between
/// `direction` and `latitude`).
fn write_basic_members(w: &mut JsonWriter<'_>, basic: &LocationBasic, extra: impl FnOnce(&mut JsonWriter<'_>)) {
    w.member_u64("alarm", basic.alarm);
    w.member_u64("altitude", basic.altitude);
    w.member_u64("direction", basic.direction);
    extra(w);
    w.member_u64("latitude", basic.latitude);
    w.member_u64("longitude", basic.longitude);
    w.member_u64("speed", basic.speed);
    w.member_u64("status", basic.status);
    w.key("time");
    w.str_with(|out| bcd_into(out, &basic.time.0));
}

/// [`location_json`] written directly.
pub fn write_location_json(w: &mut JsonWriter<'_>, location: &Location) {
    w.begin_object();
    write_basic_members(w, &location.basic, |w| {
        if !location.extras.is_empty() || !location.trailing.is_empty() {
            w.key("extra");
            write_extras_json(w, location);
        }
    });
    w.end_object();
}

/// `{bit name: 0|1}` for the names of `bits`, members in key order (fixed at compile time).
fn write_bits_json<const N: usize>(w: &mut JsonWriter<'_>, value: u32, names: &[&str; N], order: &[usize; N]) {
    w.begin_object();
    for &bit in order {
        if let Some(name) = names.get(bit) {
            w.member_u64(name, (value >> bit) & 1);
        }
    }
    w.end_object();
}

const VEHICLE_SIGNAL_ORDER: [usize; VEHICLE_SIGNAL_BITS.len()] = key_order(&VEHICLE_SIGNAL_BITS);
const IO_STATUS_ORDER: [usize; IO_STATUS_BITS.len()] = key_order(&IO_STATUS_BITS);

/// The key an extra has in the `extra` object: its EMQX name, or for a raw id its decimal id.
#[derive(Debug, Clone, Copy)]
enum ExtraKey {
    Name(&'static str),
    Id([u8; 3], usize),
}

impl ExtraKey {
    /// The id in decimal, as `id.to_string()` gives it.
    fn of_id(id: u8) -> ExtraKey {
        let (hundreds, tens, ones) = (b'0' + id / 100, b'0' + id / 10 % 10, b'0' + id % 10);
        match id {
            100.. => ExtraKey::Id([hundreds, tens, ones], 3),
            10.. => ExtraKey::Id([tens, ones, 0], 2),
            _ => ExtraKey::Id([ones, 0, 0], 1),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            ExtraKey::Name(name) => name,
            ExtraKey::Id(digits, len) => std::str::from_utf8(digits.get(..*len).unwrap_or_default()).unwrap_or(""),
        }
    }
}

fn extra_key(extra: &LocationExtra) -> ExtraKey {
    ExtraKey::Name(match extra {
        LocationExtra::Mileage(_) => "mileage",
        LocationExtra::Fuel(_) => "fuel_meter",
        LocationExtra::RecorderSpeed(_) => "speed",
        LocationExtra::AlarmEventId(_) => "alarm_id",
        LocationExtra::TyrePressure(_) => "tire_pressure",
        LocationExtra::CarriageTemperature(_) => "carriage_temp",
        LocationExtra::Overspeed { .. } => "overspeed_alarm",
        LocationExtra::AreaRoute { .. } => "in_out_alarm",
        LocationExtra::SegmentTime { .. } => "path_time_alarm",
        LocationExtra::VehicleSignals(_) => "signal",
        LocationExtra::IoStatus(_) => "io_status",
        LocationExtra::Analog(_) => "analog",
        LocationExtra::SignalStrength(_) => "rssi",
        LocationExtra::SatelliteCount(_) => "gnss_sat_num",
        LocationExtra::Raw { id, .. } => return ExtraKey::of_id(*id),
    })
}

fn write_extra_value(w: &mut JsonWriter<'_>, extra: &LocationExtra) {
    match extra {
        LocationExtra::Mileage(v) => w.u64(u64::from(*v)),
        LocationExtra::Fuel(v) | LocationExtra::RecorderSpeed(v) | LocationExtra::AlarmEventId(v) => {
            w.u64(u64::from(*v))
        }
        LocationExtra::TyrePressure(v) => write_base64(w, v),
        LocationExtra::CarriageTemperature(_) => w.i64(i64::from(extra.carriage_celsius().unwrap_or_default())),
        LocationExtra::Overspeed { location_type, area_id } => {
            w.begin_object();
            if let Some(id) = area_id {
                w.member_u64("id", *id);
            }
            w.member_u64("type", *location_type);
            w.end_object();
        }
        LocationExtra::AreaRoute {
            location_type,
            area_id,
            direction,
        } => {
            w.begin_object();
            w.member_u64("direction", *direction);
            w.member_u64("id", *area_id);
            w.member_u64("type", *location_type);
            w.end_object();
        }
        LocationExtra::SegmentTime {
            segment_id,
            seconds,
            result,
        } => {
            w.begin_object();
            w.member_u64("id", *segment_id);
            w.member_u64("result", *result);
            w.member_u64("time", *seconds);
            w.end_object();
        }
        LocationExtra::VehicleSignals(v) => write_bits_json(w, *v, &VEHICLE_SIGNAL_BITS, &VEHICLE_SIGNAL_ORDER),
        LocationExtra::IoStatus(v) => write_bits_json(w, u32::from(*v), &IO_STATUS_BITS, &IO_STATUS_ORDER),
        LocationExtra::Analog(v) => {
            w.begin_object();
            w.member_u64("ad0", v & 0xFFFF);
            w.member_u64("ad1", v >> 16);
            w.end_object();
        }
        LocationExtra::SignalStrength(v) | LocationExtra::SatelliteCount(v) => w.u64(u64::from(*v)),
        LocationExtra::Raw { value, .. } => write_base64(w, value),
    }
}

/// Most reports carry a handful of extras; more are sorted on the heap.
const INLINE_EXTRAS: usize = 16;

/// The `extra` object: extras by key (a repeated key keeps the last, as the map does), raw ids
/// from 0xE1 under `custome`, then `trailing`.
fn write_extras_json(w: &mut JsonWriter<'_>, location: &Location) {
    let is_custom =
        |extra: &LocationExtra| matches!(extra, LocationExtra::Raw { id, .. } if *id >= FIRST_CUSTOM_EXTRA_ID);
    let mut plain: Vec<(ExtraKey, &LocationExtra)> = Vec::with_capacity(location.extras.len().min(INLINE_EXTRAS));
    let mut custom: Vec<(ExtraKey, &LocationExtra)> = Vec::new();
    for extra in &location.extras {
        let entry = (extra_key(extra), extra);
        if is_custom(extra) {
            custom.push(entry);
        } else {
            plain.push(entry);
        }
    }
    // Stable: among equal keys the later extra stays later and wins below.
    plain.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    custom.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let keys_after_custom = |key: &str| key > "custome";
    w.begin_object();
    let mut wrote_custom = custom.is_empty();
    for (index, (key, extra)) in plain.iter().enumerate() {
        if plain.get(index + 1).is_some_and(|next| next.0.as_str() == key.as_str()) {
            continue;
        }
        if !wrote_custom && keys_after_custom(key.as_str()) {
            write_custom(w, &custom);
            wrote_custom = true;
        }
        w.key(key.as_str());
        write_extra_value(w, extra);
    }
    if !wrote_custom {
        write_custom(w, &custom);
    }
    if !location.trailing.is_empty() {
        w.key("trailing");
        write_base64(w, &location.trailing);
    }
    w.end_object();
}

fn write_custom(w: &mut JsonWriter<'_>, custom: &[(ExtraKey, &LocationExtra)]) {
    w.key("custome");
    w.begin_object();
    for (index, (key, extra)) in custom.iter().enumerate() {
        if custom
            .get(index + 1)
            .is_some_and(|next| next.0.as_str() == key.as_str())
        {
            continue;
        }
        w.key(key.as_str());
        write_extra_value(w, extra);
    }
    w.end_object();
}
