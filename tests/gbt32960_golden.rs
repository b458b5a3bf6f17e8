//! Golden vectors (tests/vectors/gbt32960.json, from EMQX's test suites): every terminal frame
//! decodes to the JSON EMQX publishes, every gateway frame matches its summary, the downlink
//! JSON and reply builders reproduce the exact bytes EMQX emits, and every vector re-encodes to
//! its own bytes.

use roadedge::protocol::gbt32960::reply::{login_reply, reply, ReplyData};
use roadedge::protocol::gbt32960::{
    decode_frame, downlink_from_json, Body, Command, Edition, Frame, Origin, ResponseFlag, Time, Vin,
};
use serde_json::{json, Value};

struct Vector {
    source: String,
    bytes: Vec<u8>,
    expect: Value,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/gbt32960.json");
    let text = std::fs::read_to_string(path).expect("vector file is readable");
    let entries: Vec<Value> = serde_json::from_str(&text).expect("vector file is JSON");
    entries
        .into_iter()
        .map(|entry| Vector {
            source: entry["source"].as_str().unwrap_or_default().to_owned(),
            bytes: hex::decode(entry["hex"].as_str().unwrap_or_default()).expect("hex"),
            expect: entry["expect"].clone(),
        })
        .collect()
}

fn is_gateway_frame(vector: &Vector) -> bool {
    vector.expect["direction"] == "gateway->terminal"
}

fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.source.ends_with(name))
        .unwrap_or_else(|| panic!("no vector named {name}"))
}

/// Compares our JSON with EMQX's: every top-level key the vector states must match exactly;
/// vectors that abbreviate `Data` by leaving out `Time` are compared without it.
fn assert_matches_emqx(actual: &Value, expect: &Value, source: &str) {
    for (key, expected) in expect.as_object().expect("expect is an object") {
        if key == "topic" {
            continue;
        }
        let mut got = actual[key].clone();
        if key == "Data" && expected.get("Time").is_none() {
            if let Some(data) = got.as_object_mut() {
                data.remove("Time");
            }
        }
        assert_eq!(&got, expected, "{source}: key {key}");
    }
}

#[test]
fn every_terminal_vector_decodes_to_the_json_emqx_publishes() {
    let mut checked = 0;
    for vector in vectors().iter().filter(|v| !is_gateway_frame(v)) {
        let frame = decode_frame(&vector.bytes, Origin::Terminal).unwrap_or_else(|e| panic!("{}: {e}", vector.source));
        assert_matches_emqx(&frame.to_json(), &vector.expect, &vector.source);
        checked += 1;
    }
    assert_eq!(checked, 37);
}

#[test]
fn every_vector_topic_matches_the_frame_topic_suffix() {
    for vector in vectors() {
        let Some(topic) = vector.expect["topic"].as_str() else {
            continue;
        };
        let frame = decode_frame(&vector.bytes, Origin::Terminal).expect("decodes");
        let suffix = frame.topic_suffix().expect("published frame").as_str();
        assert!(
            topic.ends_with(&format!("/upstream/{suffix}")),
            "{}: {topic} vs {suffix}",
            vector.source
        );
        if !topic.starts_with("...") {
            assert_eq!(
                topic,
                format!("gbt32960/{}/upstream/{suffix}", frame.vin()),
                "{}",
                vector.source
            );
        }
    }
}

#[test]
fn every_gateway_vector_matches_its_summary() {
    let mut checked = 0;
    for vector in vectors().iter().filter(|v| is_gateway_frame(v)) {
        let frame = decode_frame(&vector.bytes, Origin::Platform).unwrap_or_else(|e| panic!("{}: {e}", vector.source));
        let json = frame.to_json();
        let expect = &vector.expect;
        assert_eq!(json["Cmd"], expect["Cmd"], "{}", vector.source);
        if let Some(ack) = expect.get("Ack") {
            assert_eq!(Value::from(frame.response.0), *ack, "{}", vector.source);
        }
        if let Some(len) = expect.get("Len") {
            let declared = u16::from_be_bytes([vector.bytes[22], vector.bytes[23]]);
            assert_eq!(Value::from(declared), *len, "{}", vector.source);
        }
        for key in ["Total", "Ids", "Command", "Params"] {
            if let Some(expected) = expect.get(key) {
                assert_eq!(json["Data"][key], *expected, "{}: {key}", vector.source);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn the_direct_json_writer_gives_the_bytes_serde_json_gives_for_every_vector() {
    for vector in vectors() {
        let mut checked = 0;
        for origin in [Origin::Terminal, Origin::Platform] {
            let Ok(frame) = decode_frame(&vector.bytes, origin) else {
                continue;
            };
            let written = String::from_utf8(frame.to_json_bytes()).expect("the writer writes UTF-8");
            let from_value = serde_json::to_string(&frame.to_json()).expect("serialises");
            assert_eq!(written, from_value, "{} ({origin:?})", vector.source);
            checked += 1;
        }
        assert!(checked > 0, "{}: decodes from at least one side", vector.source);
    }
}

#[test]
fn the_all_types_frames_are_written_in_key_order_without_reordering() {
    use roadedge::protocol::json::JsonWriter;
    for edition in [Edition::V2016, Edition::V2025] {
        let frame =
            roadedge::sim::gbt32960::realtime_frame(Vin::from_text(EMQX_VIN), edition, Time::default(), 1, false);
        let mut out = Vec::new();
        let mut writer = JsonWriter::new(&mut out);
        frame.write_json_with(&mut writer);
        assert_eq!(
            writer.reordered_objects(),
            0,
            "{edition:?}: every object written in key order"
        );
        assert_eq!(out, frame.to_json_bytes());
    }
}

#[test]
fn every_vector_reencodes_to_its_own_bytes() {
    for vector in vectors() {
        let origin = if is_gateway_frame(&vector) {
            Origin::Platform
        } else {
            Origin::Terminal
        };
        let frame = decode_frame(&vector.bytes, origin).expect("decodes");
        assert_eq!(frame.encode().expect("encodes"), vector.bytes, "{}", vector.source);
    }
}

const EMQX_VIN: &str = "1G1BL52P7TR115520";

fn downlink(json: Value, vin: &str, edition: Edition, time: [u8; 6]) -> Vec<u8> {
    downlink_from_json(&json, Vin::from_text(vin), edition, Time::from_bytes(time))
        .expect("downlink JSON is accepted")
        .encode()
        .expect("downlink encodes")
}

#[test]
fn query_json_produces_the_exact_emqx_query_frame() {
    let bytes = downlink(
        json!({"Action": "Query", "Total": 2, "Ids": ["0x01", "0x02"]}),
        EMQX_VIN,
        Edition::V2016,
        [11, 10, 25, 20, 5, 51],
    );
    assert_eq!(bytes, vector("case17_serialize_query").bytes);
}

#[test]
fn setting_json_produces_the_exact_emqx_setting_frame() {
    let bytes = downlink(
        json!({"Action": "Setting", "Total": 6, "Params": [
            {"0x01": 30000}, {"0x04": 10}, {"0x05": "google.com"}, {"0x07": "1.0.0"},
            {"0x0D": 14}, {"0x0E": "www.google.com"}]}),
        EMQX_VIN,
        Edition::V2016,
        [17, 10, 25, 23, 59, 59],
    );
    assert_eq!(bytes, vector("case18_serialize_query (setting)").bytes);
}

#[test]
fn setting_json_puts_the_domain_right_after_its_length_like_emqx() {
    let reordered = downlink(
        json!({"Action": "Setting", "Total": 6, "Params": [
            {"0x05": "google.com"}, {"0x01": 30000}, {"0x0E": "www.google.com"}, {"0x04": 10},
            {"0x07": "1.0.0"}, {"0x0D": 14}]}),
        EMQX_VIN,
        Edition::V2016,
        [17, 10, 25, 23, 59, 59],
    );
    assert_eq!(reordered, vector("case18_serialize_query (setting)").bytes);
}

#[test]
fn control_json_produces_the_exact_emqx_shutdown_frame() {
    let bytes = downlink(
        json!({"Action": "Control", "Command": "0x02"}),
        EMQX_VIN,
        Edition::V2016,
        [17, 10, 25, 22, 5, 51],
    );
    assert_eq!(bytes, vector("case19_serialize_ctrl (a)").bytes);
}

#[test]
fn control_json_produces_the_exact_emqx_alarm_frame() {
    let bytes = downlink(
        json!({"Action": "Control", "Command": "0x06",
               "Param": {"Level": 1, "Message": "The alarm has occurred!"}}),
        EMQX_VIN,
        Edition::V2016,
        [17, 10, 25, 22, 5, 51],
    );
    assert_eq!(bytes, vector("case19_serialize_ctrl (b)").bytes);
}

#[test]
fn control_json_produces_the_exact_emqx_upgrade_frame_in_the_b16_layout() {
    let bytes = downlink(
        json!({"Action": "Control", "Command": "0x01", "Param": {
            "DialingName": "emqtt", "Username": "eusername", "Password": "password",
            "Ip": "192.168.1.1", "Port": 8080, "ManufacturerId": "BWM1",
            "HardwareVer": "1.0.0", "SoftwareVer": "0.0.1",
            "UpgradeUrl": "ftp://emqtt.io/ftp/server", "Timeout": 3000}}),
        EMQX_VIN,
        Edition::V2016,
        [17, 10, 25, 22, 5, 51],
    );
    assert_eq!(bytes, vector("case19_serialize_ctrl (c)").bytes);
}

#[test]
fn setting_json_for_a_2025_vehicle_uses_byte_params_and_the_dollar_header() {
    let bytes = downlink(
        json!({"Action": "Setting", "Total": 2, "Params": [{"0x02": 30}, {"0x03": 5}]}),
        "VIN12345678901234",
        Edition::V2025,
        [25, 10, 25, 23, 59, 59],
    );
    assert_eq!(bytes, vector("case_2025_serialize_setting").bytes);
}

#[test]
fn login_reply_echoes_the_data_unit_after_a_new_time_like_emqx() {
    // The EMQX test's login frame carries a 20-byte tail that is not a valid login body, so
    // the request is built with a raw body; the builder only needs its bytes.
    let mut original = vec![17, 11, 23, 21, 4, 50];
    original.extend_from_slice(&[1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]);
    let request = Frame::new(
        Edition::V2016,
        Command::VEHICLE_LOGIN,
        ResponseFlag::COMMAND,
        Vin::from_text(EMQX_VIN),
        Body::Raw(original),
    );
    let now = Time::from_bytes([11, 10, 25, 20, 5, 51]);
    let ack = login_reply(&request, ResponseFlag::SUCCESS, now).expect("reply builds");
    assert_eq!(ack.encode().expect("encodes"), vector("case16_serialize_ack").bytes);
}

#[test]
fn login_reply_to_the_case01_login_has_the_31_byte_data_unit_emqx_sends() {
    let login = decode_frame(&vector("case01_login").bytes, Origin::Terminal).expect("decodes");
    let now = Time::from_bytes([26, 11, 21, 8, 0, 0]);
    let ack = reply(&login, ResponseFlag::SUCCESS, ReplyData::Echo(now)).expect("reply builds");
    let bytes = ack.encode().expect("encodes");
    assert_eq!(u16::from_be_bytes([bytes[22], bytes[23]]), 31);
    assert_eq!(&bytes[24..30], &now.to_bytes());
    assert_eq!(&bytes[30..55], &vector("case01_login").bytes[30..55]);
}
