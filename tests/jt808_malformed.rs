//! Malformed input: one test per attack or device bug, named after what the codec does about it.

use bytes::BytesMut;
use roadedge::protocol::jt808::*;
use serde_json::json;

fn phone() -> Phone {
    Phone::parse("013800138000").unwrap()
}

fn heartbeat_frame(serial: u16) -> Vec<u8> {
    Message::new(Header::new(0, phone(), None, serial), Body::Heartbeat(Vec::new()))
        .to_bytes()
        .unwrap()
        .to_vec()
}

/// Wraps raw (unescaped) content with a correct checksum, escaping and flags.
fn frame_from_content(content: &[u8]) -> Vec<u8> {
    let mut all = content.to_vec();
    all.push(xor_checksum(content));
    let mut out = vec![FLAG];
    for b in all {
        match b {
            FLAG => out.extend_from_slice(&[ESCAPE, 2]),
            ESCAPE => out.extend_from_slice(&[ESCAPE, 1]),
            other => out.push(other),
        }
    }
    out.push(FLAG);
    out
}

/// A 2013 header for `msg_id` with the body length field set to `declared`.
fn header_2013(msg_id: u16, declared: u16) -> Vec<u8> {
    let mut h = msg_id.to_be_bytes().to_vec();
    h.extend_from_slice(&declared.to_be_bytes());
    h.extend_from_slice(&[0x01, 0x38, 0x00, 0x13, 0x80, 0x00, 0x00, 0x07]);
    h
}

fn drain(decoder: &mut FrameDecoder, buf: &mut BytesMut) -> (Vec<Packet>, Vec<FrameError>) {
    let mut packets = Vec::new();
    let mut errors = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => return (packets, errors),
            Err(e) => errors.push(e),
        }
    }
}

#[test]
fn garbage_before_start_is_skipped_and_counted() {
    let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
    bytes.extend_from_slice(&heartbeat_frame(1));
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = FrameDecoder::new();
    let (packets, errors) = drain(&mut decoder, &mut buf);
    assert_eq!(errors, [FrameError::Garbage { skipped: 16 }]);
    assert_eq!(packets.len(), 1);
    assert_eq!(decoder.skipped_bytes(), 16);
}

#[test]
fn garbage_without_any_flag_is_dropped_at_once_and_reported_with_the_next_start_flag() {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(&[0x01u8, 0x02, 0x03][..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.is_empty(), "garbage is not kept in the caller's buffer");
    buf.extend_from_slice(&[0x04, 0x05]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&heartbeat_frame(2));
    assert_eq!(decoder.decode(&mut buf), Err(FrameError::Garbage { skipped: 5 }));
    assert!(decoder.decode(&mut buf).unwrap().is_some());
}

#[test]
fn oversized_frame_without_end_flag_is_dropped_without_buffering_past_the_cap() {
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(&[FLAG][..]);
    let mut dropped = None;
    for _ in 0..100 {
        buf.extend_from_slice(&[0x55; 64]);
        match decoder.decode(&mut buf) {
            Ok(None) => assert!(buf.len() <= MAX_ESCAPED_CONTENT_LEN + 1),
            Err(e) => {
                dropped = Some(e);
                break;
            }
            Ok(Some(p)) => panic!("no frame expected: {p:?}"),
        }
    }
    assert!(matches!(dropped, Some(FrameError::TooLong { .. })));
    assert!(buf.is_empty());
    buf.extend_from_slice(&heartbeat_frame(3));
    let (packets, _) = drain(&mut decoder, &mut buf);
    assert_eq!(packets.len(), 1);
}

#[test]
fn oversized_content_between_two_flags_is_rejected_before_unescaping() {
    let mut bytes = vec![FLAG];
    bytes.extend(std::iter::repeat_n(0x55, MAX_ESCAPED_CONTENT_LEN + 1));
    bytes.extend_from_slice(&heartbeat_frame(4));
    let mut buf = BytesMut::from(&bytes[..]);
    let mut decoder = FrameDecoder::new();
    let (packets, errors) = drain(&mut decoder, &mut buf);
    assert!(matches!(errors[..], [FrameError::TooLong { .. }]));
    assert_eq!(
        packets.len(),
        1,
        "the flag after the long run still starts the next frame"
    );
}

#[test]
fn invalid_escape_is_rejected_and_the_next_frame_still_decodes() {
    let mut bytes = heartbeat_frame(5);
    bytes.insert(3, ESCAPE);
    bytes.insert(4, 0x03);
    bytes.extend_from_slice(&heartbeat_frame(6));
    let mut buf = BytesMut::from(&bytes[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(matches!(errors[..], [FrameError::InvalidEscape { next: 0x03, .. }]));
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].header.serial, 6);
}

#[test]
fn escape_byte_right_before_the_end_flag_is_rejected() {
    let mut bytes = heartbeat_frame(7);
    let end = bytes.len() - 1;
    bytes.insert(end, ESCAPE);
    let mut buf = BytesMut::from(&bytes[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(packets.is_empty());
    assert!(matches!(errors[..], [FrameError::InvalidEscape { next: FLAG, .. }]));
}

#[test]
fn lone_escape_byte_at_the_end_of_a_read_waits_for_the_rest() {
    // EMQX t_case13: province 0x007E / city 0x007D, split right after a 0x7D.
    let bytes = hex::decode(
        "7e0100002c000123456789004e007d02007d016578616d7033333333333333333333333333333333333333333132333435363703756a766c323339867e",
    )
    .unwrap();
    let split = bytes.iter().position(|b| *b == ESCAPE).unwrap() + 1;
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(&bytes[..split]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), split, "nothing consumed while waiting");
    buf.extend_from_slice(&bytes[split..]);
    let packet = decoder.decode(&mut buf).unwrap().unwrap();
    let Body::Register(register) = Message::decode(&packet, Edition::V2013).unwrap().body else {
        panic!()
    };
    assert_eq!((register.province, register.city), (0x7E, 0x7D));
}

#[test]
fn bad_checksum_is_rejected_and_the_next_frame_still_decodes() {
    let mut bytes = heartbeat_frame(8);
    let checksum_at = bytes.len() - 2;
    bytes[checksum_at] ^= 0x01;
    bytes.extend_from_slice(&heartbeat_frame(9));
    let mut buf = BytesMut::from(&bytes[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(matches!(errors[..], [FrameError::Checksum { .. }]));
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].header.serial, 9);
}

#[test]
fn frame_shorter_than_a_header_is_rejected() {
    let bytes = frame_from_content(&[0x00, 0x02, 0x00, 0x00, 0x01]);
    let mut buf = BytesMut::from(&bytes[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(packets.is_empty());
    assert!(matches!(errors[..], [FrameError::TooShort { .. }]));
}

#[test]
fn empty_frame_between_two_flags_is_skipped_silently() {
    let mut bytes = vec![FLAG, FLAG, FLAG];
    bytes.extend_from_slice(&heartbeat_frame(10));
    let mut buf = BytesMut::from(&bytes[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(errors.is_empty());
    assert_eq!(packets.len(), 1);
}

#[test]
fn body_length_matching_neither_header_layout_is_rejected() {
    let mut content = header_2013(0x0200, 40);
    content.extend_from_slice(&[0u8; 30]);
    let mut buf = BytesMut::from(&frame_from_content(&content)[..]);
    let (packets, errors) = drain(&mut FrameDecoder::new(), &mut buf);
    assert!(packets.is_empty());
    assert_eq!(
        errors,
        [FrameError::BodyLengthMismatch {
            declared: 40,
            present: 30
        }]
    );
}

#[test]
fn lying_version_flag_is_overridden_by_the_length_and_reported() {
    // A 2013 frame with bit 14 set (a real terminal does this).
    let mut content = header_2013(0x0102, 0x4000 | 4);
    content.extend_from_slice(b"code");
    let mut buf = BytesMut::from(&frame_from_content(&content)[..]);
    let packet = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
    assert!(packet.header.version_flag_contradicted());
    assert!(!packet.header.is_2019());
    assert_eq!(packet.header.phone.to_string(), "013800138000");
    let message = Message::decode(&packet, Edition::V2013).unwrap();
    assert_eq!(
        message.to_json(TextEncoding::Gbk).unwrap()["body"],
        json!({"code": "code"})
    );
    // Re-encoding keeps the flag as sent.
    let mut out = BytesMut::new();
    packet.encode(&mut out).unwrap();
    assert_eq!(&out[..], &frame_from_content(&content)[..]);
}

fn body_error(msg_id: u16, body: &[u8], edition: Edition) -> BodyError {
    Body::decode(msg_id, body, edition).expect_err("body must be rejected")
}

#[test]
fn parameter_count_beyond_the_body_is_rejected_without_allocating() {
    let err = body_error(ids::PARAMS_REPLY, &[0x00, 0x01, 0xFF, 0x00, 0x00], Edition::V2013);
    assert!(matches!(err, BodyError::CountMismatch { declared: 255, .. }));
}

#[test]
fn batch_count_beyond_the_body_is_rejected_without_allocating() {
    let err = body_error(ids::BATCH_LOCATION, &[0xFF, 0xFF, 0x00, 0x00, 0x1C], Edition::V2013);
    assert!(matches!(err, BodyError::CountMismatch { declared: 65535, .. }));
}

#[test]
fn batch_item_length_beyond_the_body_is_rejected() {
    let mut body = vec![0x00, 0x01, 0x00, 0xFF, 0xFF];
    body.extend_from_slice(&[0u8; 28]);
    let err = body_error(ids::BATCH_LOCATION, &body, Edition::V2013);
    assert!(matches!(
        err,
        BodyError::Truncated {
            field: "location item",
            ..
        }
    ));
}

#[test]
fn upgrade_package_length_beyond_the_body_is_rejected() {
    let mut body = vec![0x00, b'A', b'B', b'C', b'D', b'E', 0x01, b'1'];
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    body.extend_from_slice(b"tiny");
    let err = body_error(ids::UPGRADE, &body, Edition::V2013);
    assert!(matches!(err, BodyError::Truncated { field: "package", .. }));
}

#[test]
fn compressed_length_beyond_the_body_is_rejected() {
    let err = body_error(
        ids::COMPRESSED_UPLOAD,
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x8B],
        Edition::V2013,
    );
    assert!(matches!(err, BodyError::Truncated { .. }));
}

#[test]
fn location_extra_running_past_the_body_is_kept_as_trailing_bytes() {
    let mut body = vec![0u8; LOCATION_BASIC_LEN];
    body.extend_from_slice(&[0x01, 0x04, 0x00, 0x00, 0x00, 0x64, 0xEB, 0x30, 0x01, 0x02]);
    let Body::Location(location) = Body::decode(ids::LOCATION, &body, Edition::V2013).unwrap() else {
        panic!()
    };
    assert_eq!(location.extras, [LocationExtra::Mileage(100)]);
    assert_eq!(location.trailing, [0xEB, 0x30, 0x01, 0x02]);
    let mut out = Vec::new();
    Body::Location(location.clone()).encode(&mut out).unwrap();
    assert_eq!(out, body);
    assert_eq!(location_json(&location)["extra"]["trailing"], "6zABAg==");
}

#[test]
fn known_extra_with_a_wrong_length_is_kept_raw() {
    let mut body = vec![0u8; LOCATION_BASIC_LEN];
    body.extend_from_slice(&[0x01, 0x02, 0x00, 0x64, 0x05, 0x01, 0x07]);
    let Body::Location(location) = Body::decode(ids::LOCATION, &body, Edition::V2019).unwrap() else {
        panic!()
    };
    assert_eq!(
        location.extras,
        [
            LocationExtra::Raw {
                id: 0x01,
                value: vec![0x00, 0x64]
            },
            LocationExtra::Raw {
                id: 0x05,
                value: vec![0x07]
            },
        ]
    );
}

#[test]
fn tyre_pressure_and_carriage_temperature_are_read_by_length_in_every_edition() {
    let mut body = vec![0u8; LOCATION_BASIC_LEN];
    body.extend_from_slice(&[0x05, 30]);
    body.extend_from_slice(&[0x55; 30]);
    body.extend_from_slice(&[0x06, 0x02, 0x80, 0x0F]);
    // The same ids with other lengths stay raw, in every edition.
    body.extend_from_slice(&[0x05, 0x01, 0x07, 0x06, 0x01, 0x09]);
    for edition in [Edition::V2011, Edition::V2013, Edition::V2019] {
        let Body::Location(location) = Body::decode(ids::LOCATION, &body, edition).unwrap() else {
            panic!("{edition:?}")
        };
        assert_eq!(
            location.extras,
            [
                LocationExtra::TyrePressure(vec![0x55; 30]),
                LocationExtra::CarriageTemperature(0x800F),
                LocationExtra::Raw {
                    id: 0x05,
                    value: vec![0x07]
                },
                LocationExtra::Raw {
                    id: 0x06,
                    value: vec![0x09]
                },
            ],
            "{edition:?}"
        );
        let json = location_json(&location);
        assert_eq!(json["extra"]["carriage_temp"], -15, "{edition:?}");
        assert_eq!(
            json["extra"]["tire_pressure"],
            base64_encode(&[0x55; 30]),
            "{edition:?}"
        );
        let mut out = Vec::new();
        Body::Location(location).encode(&mut out).unwrap();
        assert_eq!(out, body, "{edition:?}: re-encodes byte for byte");
    }
}

#[test]
fn auth_code_length_beyond_a_2019_body_is_rejected() {
    let err = body_error(ids::AUTHENTICATE, &[0xFF, b'a', b'b'], Edition::V2019);
    assert!(matches!(err, BodyError::Truncated { field: "auth code", .. }));
}

#[test]
fn fixed_body_with_extra_bytes_is_rejected_but_kept_raw_by_decode_or_raw() {
    let packet = Packet {
        header: Header::new(ids::TERMINAL_GENERAL_REPLY, phone(), None, 1),
        body: vec![0, 1, 0, 2, 0, 0xAA].into(),
    };
    let (message, error) = Message::decode_or_raw(&packet, Edition::V2013);
    assert_eq!(error, Some(BodyError::TrailingBytes { msg_id: 1, count: 1 }));
    assert_eq!(message.body, Body::Raw(packet.body.clone()));
    let json = message.to_json(TextEncoding::Gbk).unwrap();
    assert_eq!(json["body"]["undecoded"], true);
}

#[test]
fn encrypted_body_is_kept_raw() {
    let mut header = Header::new(ids::LOCATION, phone(), None, 1);
    header.encryption = 1;
    let packet = Packet {
        header,
        body: vec![1, 2, 3].into(),
    };
    let message = Message::decode(&packet, Edition::V2013).unwrap();
    assert_eq!(message.body, Body::Raw(packet.body.clone()));
}

#[test]
fn subpackage_fragment_is_not_decoded_as_a_whole_body() {
    let mut header = Header::new(ids::PARAMS_REPLY, phone(), None, 1);
    header.subpackage = Some(Subpackage { total: 2, index: 2 });
    let packet = Packet {
        header,
        body: vec![0xFF; 10].into(),
    };
    assert!(matches!(
        Message::decode(&packet, Edition::V2013).unwrap().body,
        Body::Raw(_)
    ));
}

fn fragment(index: u16, total: u16, serial: u16, body: &[u8]) -> Packet {
    let mut header = Header::new(ids::MEDIA_UPLOAD, phone(), None, serial);
    header.subpackage = Some(Subpackage { total, index });
    Packet {
        header,
        body: body.to_vec().into(),
    }
}

#[test]
fn reassembler_rejects_index_zero_and_index_above_total() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    assert_eq!(
        r.push(&fragment(0, 2, 1, b"x"), 0),
        Err(ReassemblyError::BadIndex { index: 0, total: 2 })
    );
    assert_eq!(
        r.push(&fragment(3, 2, 1, b"x"), 0),
        Err(ReassemblyError::BadIndex { index: 3, total: 2 })
    );
    assert_eq!(
        r.push(&fragment(0, 0, 1, b"x"), 0),
        Err(ReassemblyError::BadIndex { index: 0, total: 0 })
    );
    let plain = Packet {
        header: Header::new(1, phone(), None, 1),
        body: Default::default(),
    };
    assert_eq!(r.push(&plain, 0), Err(ReassemblyError::NotSubpackaged));
    assert!(r.is_empty());
}

#[test]
fn reassembler_rejects_a_total_above_the_packet_limit() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    assert!(matches!(
        r.push(&fragment(1, 65535, 1, b"x"), 0),
        Err(ReassemblyError::TooManyPackets { .. })
    ));
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn reassembler_refuses_packets_past_the_byte_budget_and_transfer_count() {
    let limits = ReassemblyLimits {
        max_transfer_bytes: 1500,
        max_total_bytes: 2300,
        max_transfers: 2,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    let kb = vec![0u8; 1000];
    assert!(r.push(&fragment(1, 10, 1, &kb), 0).is_ok());
    assert!(matches!(
        r.push(&fragment(2, 10, 2, &kb), 0),
        Err(ReassemblyError::TransferTooLarge { .. })
    ));
    assert!(r.push(&fragment(1, 9, 1, &kb), 0).is_ok());
    assert!(matches!(
        r.push(&fragment(1, 8, 1, &kb), 0),
        Err(ReassemblyError::TooManyTransfers { max: 2 })
    ));
    assert!(matches!(
        r.push(&fragment(2, 9, 2, &kb[..400]), 0),
        Err(ReassemblyError::BudgetExceeded { bytes: 2400, max: 2300 })
    ));
    assert_eq!(r.held_bytes(), 2000);
}

#[test]
fn reassembler_requests_missing_packets_after_the_timeout_then_gives_up() {
    let limits = ReassemblyLimits {
        timeout_ms: 1000,
        max_resend_requests: 2,
        ..ReassemblyLimits::default()
    };
    let mut r = Reassembler::new(limits);
    // Packets 2 and 4 of 5, serials not consecutive, packet 1 missing.
    r.push(&fragment(4, 5, 40, b"d"), 0).unwrap();
    r.push(&fragment(2, 5, 21, b"b"), 100).unwrap();
    assert!(r.poll_timeouts(1099).is_empty());
    let actions = r.poll_timeouts(1100);
    let [TimeoutAction::RequestResend {
        first_serial,
        missing,
        header,
        ..
    }] = &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(missing, &[1, 3, 5]);
    assert_eq!(*first_serial, 20, "derived from packet 2's serial");
    let request = reply::resend_request(header, *first_serial, missing, 7);
    let Body::PlatformResendRequest(body) = &request.body else {
        panic!()
    };
    assert_eq!(body.indexes, [1, 3, 5]);
    assert!(r.poll_timeouts(1500).is_empty(), "the deadline moved");
    assert_eq!(r.poll_timeouts(2100).len(), 1);
    let last = r.poll_timeouts(3100);
    assert!(matches!(&last[..], [TimeoutAction::Abandon { missing, .. }] if missing == &[1, 3, 5]));
    assert!(r.is_empty());
    assert_eq!(r.held_bytes(), 0);
}

#[test]
fn reassembler_restarts_a_transfer_when_an_index_repeats_with_different_bytes() {
    let mut r = Reassembler::new(ReassemblyLimits::default());
    r.push(&fragment(1, 2, 1, b"old"), 0).unwrap();
    assert_eq!(r.push(&fragment(1, 2, 1, b"old"), 1), Ok(PushOutcome::Duplicate));
    assert_eq!(
        r.push(&fragment(1, 2, 9, b"new"), 2),
        Ok(PushOutcome::Pending {
            received: 1,
            total: 2,
            restarted: true
        })
    );
    let Ok(PushOutcome::Complete(done)) = r.push(&fragment(2, 2, 10, b"!"), 3) else {
        panic!()
    };
    assert_eq!(done.body, b"new!");
    assert_eq!(r.held_bytes(), 0);
}

fn ctx() -> DownlinkContext {
    DownlinkContext {
        phone: phone(),
        protocol_version: None,
        serial: 5,
        text: TextEncoding::Gbk,
    }
}

fn json_error(payload: serde_json::Value) -> JsonError {
    downlink_from_json(&payload, &ctx()).expect_err("payload must be rejected")
}

#[test]
fn downlink_json_with_wrong_types_is_a_typed_error() {
    assert!(matches!(json_error(json!([])), JsonError::WrongType { .. }));
    assert!(matches!(json_error(json!({"body": {}})), JsonError::Missing(_)));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": "0x8001"}})),
        JsonError::WrongType { .. }
    ));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8001}, "body": {"seq": "1", "id": 2, "result": 0}})),
        JsonError::WrongType { ref field, .. } if field == "body.seq"
    ));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8103}, "body": {"params": [{"id": 1, "value": [1]}]}})),
        JsonError::WrongType { .. }
    ));
}

#[test]
fn downlink_json_with_an_unsupported_msg_id_is_rejected() {
    assert_eq!(
        json_error(json!({"header": {"msg_id": 0x0200}, "body": {}})),
        JsonError::UnsupportedMsgId(0x0200)
    );
}

#[test]
fn downlink_json_numbers_out_of_range_are_rejected() {
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8001}, "body": {"seq": 70000, "id": 2, "result": 0}})),
        JsonError::OutOfRange { .. }
    ));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8001}, "body": {"seq": -1, "id": 2, "result": 0}})),
        JsonError::OutOfRange { .. }
    ));
    // 0x0031 is a WORD parameter.
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8103}, "body": {"params": [{"id": 0x31, "value": 65536}]}})),
        JsonError::OutOfRange { .. }
    ));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8001, "msg_sn": 1e3}, "body": {}})),
        JsonError::OutOfRange { .. }
    ));
}

#[test]
fn downlink_json_with_invalid_base64_or_bcd_is_rejected() {
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8900}, "body": {"type": 1, "data": "***"}})),
        JsonError::Base64(_)
    ));
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8004}, "body": {"time": "26-11-21 08"}})),
        JsonError::Bcd(_)
    ));
}

#[test]
fn downlink_json_text_that_gbk_cannot_encode_is_rejected() {
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8300}, "body": {"flag": 8, "text": "road 🚗"}})),
        JsonError::Unencodable(_)
    ));
}

#[test]
fn downlink_json_length_disagreeing_with_its_list_is_rejected() {
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8106}, "body": {"length": 3, "ids": [1, 2]}})),
        JsonError::LengthMismatch {
            declared: 3,
            actual: 2,
            ..
        }
    ));
}

#[test]
fn downlink_json_with_more_ids_than_a_2013_count_byte_is_rejected() {
    let ids: Vec<u16> = (1..=256).collect();
    assert!(matches!(
        json_error(json!({"header": {"msg_id": 0x8003}, "body": {"seq": 1, "ids": ids}})),
        JsonError::Encode(EncodeError::TooManyItems { .. })
    ));
}

#[test]
fn body_too_long_for_one_packet_is_rejected_at_encoding() {
    let message = Message::new(
        Header::new(0, phone(), None, 1),
        Body::DownlinkPassThrough(PassThrough {
            kind: 0xF0,
            data: vec![0; 2000],
        }),
    );
    assert_eq!(message.to_bytes(), Err(EncodeError::BodyTooLong { len: 2001 }));
    let body = message.encode_body().unwrap();
    let packets = split_into_packets(&message.header, &body, 1000).unwrap();
    assert_eq!(packets.len(), 3);
    assert!(packets.iter().all(|p| p.to_bytes().is_ok()));
}

#[test]
fn phone_too_wide_for_the_layout_is_rejected_at_encoding() {
    let wide = Phone::parse("12345678901234567890").unwrap();
    let message = Message::new(Header::new(0, wide, None, 1), Body::QueryAllParams);
    assert!(matches!(message.to_bytes(), Err(EncodeError::PhoneTooWide { .. })));
}

#[test]
fn non_decimal_bcd_nibbles_render_as_hex_digits() {
    let phone = Phone::from_bcd(&[0x4E, 0xF4, 0x80, 0x12, 0x89, 0x19]).unwrap();
    assert_eq!(phone.to_string(), "4ef480128919");
    assert_eq!(Phone::parse("4ef480128919"), Some(phone));
    assert_eq!(Phone::parse("13800138000").unwrap().to_string(), "013800138000");
    assert_eq!(Phone::parse("13800138000x"), None);
}
