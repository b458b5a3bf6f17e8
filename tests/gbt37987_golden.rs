//! Golden vectors: every entry of tests/vectors/gbt37987.json decodes to its `expect`, re-encodes to
//! the same bytes, and survives TCP and serial framing; plus the contract JSON of the real report.

#![recursion_limit = "256"]

use bytes::BytesMut;
use roadedge::protocol::gbt37987::json::{body_to_json, message_to_json};
use roadedge::protocol::gbt37987::report::tag_reports;
use roadedge::protocol::gbt37987::serial::{crc16, encode_serial_frame, PLACEHOLDER_DST, PLACEHOLDER_SRC};
use roadedge::protocol::gbt37987::{Dialect, Message, SerialDeframer, TcpFrameDecoder};
use serde_json::{json, Value as Json};

struct Vector {
    dialect: Dialect,
    bytes: Vec<u8>,
    expect: Json,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/gbt37987.json");
    let text = std::fs::read_to_string(path).expect("vector file is readable");
    let entries: Vec<Json> = serde_json::from_str(&text).expect("vector file is JSON");
    entries
        .into_iter()
        .map(|e| Vector {
            dialect: e["dialect"].as_str().expect("dialect").parse().expect("known dialect"),
            bytes: hex::decode(e["hex"].as_str().expect("hex")).expect("valid hex"),
            expect: e["expect"].clone(),
        })
        .collect()
}

#[test]
fn every_vector_decodes_to_its_expected_header_and_body() {
    let all = vectors();
    assert!(!all.is_empty());
    for v in all {
        let message = Message::decode(&v.bytes, v.dialect).expect("vector decodes");
        let h = &v.expect["header"];
        assert_eq!(message.header.device_sn_hex(), h["device_sn"]);
        assert_eq!(json!(message.header.version), h["version"]);
        assert_eq!(json!(message.header.code), h["code"]);
        assert_eq!(json!(message.name()), h["msg"]);
        assert_eq!(json!(v.bytes.len() - 19), h["body_len"]);
        assert_eq!(json!(message.header.number), h["number"]);
        assert_eq!(body_to_json(&message), v.expect["body"]);
    }
}

#[test]
fn every_vector_re_encodes_byte_exact() {
    for v in vectors() {
        let message = Message::decode(&v.bytes, v.dialect).expect("vector decodes");
        assert_eq!(message.encode(v.dialect).expect("encodes"), v.bytes);
    }
}

#[test]
fn every_vector_passes_tcp_framing_split_at_every_byte() {
    for v in vectors() {
        for split in 0..=v.bytes.len() {
            let mut decoder = TcpFrameDecoder::new();
            let mut buf = BytesMut::from(&v.bytes[..split]);
            let first = decoder.decode(&mut buf).expect("no error");
            if split < v.bytes.len() {
                assert!(first.is_none(), "frame returned early at split {split}");
                buf.extend_from_slice(&v.bytes[split..]);
                let frame = decoder.decode(&mut buf).expect("no error").expect("frame");
                assert_eq!(&frame[..], &v.bytes[..]);
            } else {
                assert_eq!(&first.expect("frame")[..], &v.bytes[..]);
            }
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn every_vector_passes_serial_framing_in_its_dialect() {
    for v in vectors() {
        let frame = encode_serial_frame(v.dialect, PLACEHOLDER_SRC, PLACEHOLDER_DST, &v.bytes);
        let mut buf = BytesMut::from(&frame[..]);
        let got = SerialDeframer::new(v.dialect)
            .decode(&mut buf)
            .expect("no error")
            .expect("frame");
        assert_eq!((got.src, got.dst), (PLACEHOLDER_SRC, PLACEHOLDER_DST));
        assert_eq!(&got.message[..], &v.bytes[..]);
    }
}

#[test]
fn real_report_antenna_id_of_length_two_reads_as_one() {
    let v = &vectors()[0];
    let message = Message::decode(&v.bytes, v.dialect).expect("decodes");
    let reports = tag_reports(&message);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].antenna, Some(1));
}

#[test]
fn real_report_maps_to_the_contract_tags_json() {
    let v = &vectors()[0];
    let message = Message::decode(&v.bytes, v.dialect).expect("decodes");
    let expected = json!({
        "msg": "TagSelectAccessReport",
        "code": 500,
        "device_sn": "0000000000000000",
        "seq": 1845105700u32,
        "body": {"tags": [{
            "tid": "e882000028570230",
            "antenna": 1,
            "rssi": 0,
            "first_seen": 0,
            "last_seen": 0,
            "seen_count": 1,
            "select_spec_id": 250,
            "spec_index": 1,
            "rf_spec_id": 100,
            "access_spec_id": 0,
            "read_result": 0,
            "tag_data": {
                "card_id": "0200004008",
                "issuing_authority": "1301",
                "use_nature": 4,
                "manufacture_month": "2015-10",
                "vehicle_type": 145,
                "power": 60,
                "plate_type": 1,
                "plate": "01AAB",
                "inspection_valid_until": "2016-11",
                "mandatory_scrap": 14,
                "rated_load": 0,
                "colour": 69,
                "raw": {
                    "CID": "0200004008", "FPDH": "1301", "SYXZ": "04", "CCRQ": "3501",
                    "CLLX": "9100", "GL": "3c", "HPZL": "01", "HPHMXH": "1a1b000001",
                    "JYYXQ": "2e00", "QZBFQ": "0e", "ZKZL": "00", "CSYS": "4500"
                }
            }
        }]}
    });
    assert_eq!(message_to_json(&message), expected);
}

#[test]
fn crc_check_values_match_the_catalogued_algorithms() {
    // CRC-16/XMODEM and CRC-16/CMS check values over "123456789".
    assert_eq!(crc16(0x1021, 0x0000, *b"123456789"), 0x31C3);
    assert_eq!(crc16(0x8005, 0xFFFF, *b"123456789"), 0xAEE7);
}
