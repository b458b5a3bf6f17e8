//! Malformed and hostile input: one test per attack, each named as the sentence it proves.

use bytes::BytesMut;
use roadedge::protocol::gbt37987::json::command_from_json;
use roadedge::protocol::gbt37987::serial::{encode_serial_frame, unescape};
use roadedge::protocol::gbt37987::tcp::DEFAULT_MAX_BODY_LEN;
use roadedge::protocol::gbt37987::{
    Body, Content, DecodeError, Dialect, EncodeError, FrameError, JsonError, Message, Parameter, SerialDeframer,
    TcpFrameDecoder, Value,
};
use serde_json::json;

const HB: Dialect = Dialect::Hb2017;
const V2019: Dialect = Dialect::Gbt37987_2019;

/// A header for `code` declaring `body_len`, followed by `body`.
fn message_bytes(code: u16, body: &[u8]) -> Vec<u8> {
    let mut bytes = b"BL000001".to_vec();
    bytes.push(1);
    bytes.extend_from_slice(&code.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&42u32.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn keepalive() -> Vec<u8> {
    message_bytes(300, &[])
}

fn hb_tlv(code: u16, content: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(content);
    out
}

#[test]
fn oversized_tcp_length_is_rejected_without_allocating() {
    let mut header = b"BL000001".to_vec();
    header.push(1);
    header.extend_from_slice(&500u16.to_be_bytes());
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    header.extend_from_slice(&1u32.to_be_bytes());
    let mut buf = BytesMut::from(&header[..]);
    let capacity = buf.capacity();
    let err = TcpFrameDecoder::new().decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLong {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_BODY_LEN
        }
    );
    assert!(buf.capacity() <= capacity);
}

#[test]
fn garbage_before_a_tcp_header_is_skipped_and_counted() {
    let mut buf = BytesMut::from(&[0xAAu8; 7][..]);
    buf.extend_from_slice(&[0x02; 12]);
    buf.extend_from_slice(&keepalive());
    let mut decoder = TcpFrameDecoder::new();
    let mut skipped = 0;
    let frame = loop {
        match decoder.decode(&mut buf) {
            Err(FrameError::Garbage { skipped: n }) => skipped += n,
            Ok(Some(frame)) => break frame,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(skipped, 19);
    assert_eq!(&frame[..], &keepalive()[..]);
}

#[test]
fn tcp_frame_fed_one_byte_at_a_time_is_returned_only_when_complete() {
    let bytes = message_bytes(402, &7u32.to_be_bytes());
    let mut decoder = TcpFrameDecoder::new();
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = decoder.decode(&mut buf).expect("no error");
        assert_eq!(got.is_some(), i + 1 == bytes.len(), "at byte {i}");
    }
}

#[test]
fn several_tcp_frames_in_one_read_come_out_in_order() {
    let first = keepalive();
    let second = message_bytes(402, &7u32.to_be_bytes());
    let mut buf = BytesMut::from(&first[..]);
    buf.extend_from_slice(&second);
    let mut decoder = TcpFrameDecoder::new();
    assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap()[..], &first[..]);
    assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap()[..], &second[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
}

#[test]
fn tcp_header_with_a_wrong_version_is_treated_as_garbage() {
    let mut bad = keepalive();
    bad[8] = 2;
    let mut buf = BytesMut::from(&bad[..]);
    buf.extend_from_slice(&keepalive());
    let mut decoder = TcpFrameDecoder::new();
    assert!(matches!(decoder.decode(&mut buf), Err(FrameError::Garbage { .. })));
    assert_eq!(&decoder.decode(&mut buf).unwrap().unwrap()[..], &keepalive()[..]);
}

#[test]
fn tcp_cap_can_be_lowered_per_link() {
    let bytes = message_bytes(500, &[0u8; 100]);
    let mut buf = BytesMut::from(&bytes[..]);
    let err = TcpFrameDecoder::with_max_body_len(64).decode(&mut buf).unwrap_err();
    assert_eq!(err, FrameError::TooLong { len: 100, max: 64 });
}

#[test]
fn serial_garbage_before_the_flag_is_skipped_and_counted() {
    let frame = encode_serial_frame(HB, 0, 0xFF, &keepalive());
    let mut buf = BytesMut::from(&b"noise"[..]);
    buf.extend_from_slice(&frame);
    let mut deframer = SerialDeframer::new(HB);
    assert_eq!(deframer.decode(&mut buf), Err(FrameError::Garbage { skipped: 5 }));
    assert!(deframer.decode(&mut buf).unwrap().is_some());
}

#[test]
fn serial_frame_with_a_bad_check_code_is_rejected_and_the_next_frame_still_decodes() {
    let mut bad = encode_serial_frame(HB, 0, 0xFF, &keepalive());
    let crc_at = bad.len() - 2;
    bad[crc_at] ^= 0x01;
    let mut buf = BytesMut::from(&bad[..]);
    buf.extend_from_slice(&encode_serial_frame(HB, 0, 0xFF, &keepalive()));
    let mut deframer = SerialDeframer::new(HB);
    assert!(matches!(deframer.decode(&mut buf), Err(FrameError::CrcMismatch { .. })));
    assert!(deframer.decode(&mut buf).unwrap().is_some());
}

#[test]
fn serial_frame_checked_with_the_other_dialects_crc_is_rejected() {
    let frame = encode_serial_frame(V2019, 0, 0xFF, &keepalive());
    let mut buf = BytesMut::from(&frame[..]);
    assert!(matches!(
        SerialDeframer::new(HB).decode(&mut buf),
        Err(FrameError::CrcMismatch { .. })
    ));
}

#[test]
fn serial_invalid_escape_sequence_is_rejected() {
    assert_eq!(unescape(&[0x01, 0x7D, 0x01]), Err(FrameError::BadEscape { offset: 1 }));
    assert_eq!(unescape(&[0x01, 0x7D]), Err(FrameError::BadEscape { offset: 1 }));
    let mut buf = BytesMut::from(&[0x7E, 0x00, 0x7D, 0x00, 0x7E][..]);
    assert!(matches!(
        SerialDeframer::new(HB).decode(&mut buf),
        Err(FrameError::BadEscape { .. })
    ));
}

#[test]
fn serial_frame_without_an_end_flag_beyond_the_cap_is_dropped() {
    let mut buf = BytesMut::from(&[0x7E][..]);
    buf.extend_from_slice(&[0x55; 200]);
    let mut deframer = SerialDeframer::with_max_frame_len(HB, 128);
    assert_eq!(
        deframer.decode(&mut buf),
        Err(FrameError::TooLong { len: 200, max: 128 })
    );
    assert!(buf.is_empty());
}

#[test]
fn serial_frame_shorter_than_addresses_header_and_crc_is_rejected() {
    let mut buf = BytesMut::from(&[0x7E, 0x00, 0xFF, 0x01, 0x7E][..]);
    assert_eq!(
        SerialDeframer::new(HB).decode(&mut buf),
        Err(FrameError::TooShort { len: 3, min: 23 })
    );
}

#[test]
fn serial_frames_sharing_one_flag_both_decode() {
    let frame = encode_serial_frame(HB, 0, 0xFF, &keepalive());
    let mut buf = BytesMut::from(&frame[..frame.len() - 1]);
    buf.extend_from_slice(&frame);
    let mut deframer = SerialDeframer::new(HB);
    assert!(deframer.decode(&mut buf).unwrap().is_some());
    assert!(deframer.decode(&mut buf).unwrap().is_some());
    assert_eq!(deframer.decode(&mut buf), Ok(None));
}

#[test]
fn serial_frame_cut_short_by_noise_costs_only_itself() {
    let frame = encode_serial_frame(HB, 0, 0xFF, &keepalive());
    let mut buf = BytesMut::from(&frame[..10]);
    buf.extend_from_slice(&frame);
    let mut deframer = SerialDeframer::new(HB);
    assert!(deframer.decode(&mut buf).is_err());
    assert!(deframer.decode(&mut buf).unwrap().is_some());
}

#[test]
fn serial_message_whose_header_length_disagrees_is_rejected() {
    let mut message = keepalive();
    message[14] = 3;
    let mut buf = BytesMut::from(&encode_serial_frame(V2019, 0, 0xFF, &message)[..]);
    assert_eq!(
        SerialDeframer::new(V2019).decode(&mut buf),
        Err(FrameError::Message(DecodeError::BodyLengthMismatch {
            declared: 3,
            actual: 0
        }))
    );
}

#[test]
fn message_shorter_than_the_header_is_rejected() {
    assert_eq!(
        Message::decode(&[0u8; 18], HB),
        Err(DecodeError::TooShort {
            needed: 19,
            available: 18
        })
    );
}

#[test]
fn message_whose_body_length_disagrees_with_its_bytes_is_rejected() {
    let mut bytes = keepalive();
    bytes.push(0);
    assert_eq!(
        Message::decode(&bytes, HB),
        Err(DecodeError::BodyLengthMismatch { declared: 0, actual: 1 })
    );
}

#[test]
fn array_count_larger_than_the_remaining_bytes_keeps_the_parameter_raw_without_allocating() {
    // TagReportData whose TID u8v claims 65535 bytes but carries 2.
    let body = hb_tlv(500, &[0xFF, 0xFF, 0xAB, 0xCD]);
    let bytes = message_bytes(500, &body);
    let message = Message::decode(&bytes, HB).unwrap();
    assert_eq!(message.params()[0].body, Content::Raw(vec![0xFF, 0xFF, 0xAB, 0xCD]));
    assert_eq!(message.encode(HB).unwrap(), bytes);
}

#[test]
fn tlv_length_beyond_its_parent_becomes_trailing_bytes() {
    let mut body = hb_tlv(501, &250u32.to_be_bytes());
    body.extend_from_slice(&[0x01, 0xF6, 0x10, 0x00, 0x00]);
    let bytes = message_bytes(302, &body);
    let message = Message::decode(&bytes, HB).unwrap();
    let decoded = message.body.body().unwrap();
    assert_eq!(decoded.params.len(), 1);
    assert_eq!(decoded.trailing, vec![0x01, 0xF6, 0x10, 0x00, 0x00]);
    assert_eq!(message.encode(HB).unwrap(), bytes);
}

#[test]
fn deeply_nested_parameters_stop_at_the_nesting_cap_without_overflowing_the_stack() {
    // 20 000 nested ReportDestination TLVs (each only a 4-byte header), well past the cap.
    let depth = 20_000usize;
    let mut body = Vec::with_capacity(depth * 6);
    for level in 0..depth {
        let remaining = ((depth - level - 1) * 6) as u32;
        body.extend_from_slice(&411u16.to_be_bytes());
        body.extend_from_slice(&remaining.to_be_bytes());
    }
    let bytes = message_bytes(500, &body);
    let message = Message::decode(&bytes, V2019).unwrap();
    assert_eq!(message.encode(V2019).unwrap(), bytes);
}

#[test]
fn antenna_id_arriving_with_a_two_byte_length_decodes_by_the_tlv_length() {
    let param = hb_tlv(504, &[0x01, 0x02]);
    let (decoded, used) = Parameter::decode(&param, HB).unwrap();
    assert_eq!(used, 6);
    assert_eq!(decoded.single_value(), Some(&Value::U16(0x0102)));
    let mut out = Vec::new();
    decoded.encode(HB, &mut out).unwrap();
    assert_eq!(out, param);
}

#[test]
fn one_value_parameter_of_an_odd_length_is_kept_raw() {
    let param = hb_tlv(501, &[0x01, 0x02, 0x03]);
    let (decoded, _) = Parameter::decode(&param, HB).unwrap();
    assert_eq!(decoded.body, Content::Raw(vec![1, 2, 3]));
}

#[test]
fn unknown_message_code_is_kept_raw_and_round_trips() {
    let bytes = message_bytes(0x1234, &[9, 8, 7, 6, 5]);
    let message = Message::decode(&bytes, HB).unwrap();
    assert_eq!(message.name(), None);
    assert_eq!(message.body, Content::Raw(vec![9, 8, 7, 6, 5]));
    assert_eq!(message.encode(HB).unwrap(), bytes);
}

#[test]
fn unknown_parameter_code_is_kept_raw_and_round_trips() {
    let mut body = hb_tlv(0xF00D, &[1, 2, 3]);
    body.extend_from_slice(&hb_tlv(306, &[0, 0]));
    let bytes = message_bytes(302, &body);
    let message = Message::decode(&bytes, HB).unwrap();
    assert_eq!(message.params()[0].body, Content::Raw(vec![1, 2, 3]));
    assert_eq!(message.connection_attempt_status(), Some(0));
    assert_eq!(message.encode(HB).unwrap(), bytes);
}

#[test]
fn text_that_is_not_utf8_is_kept_and_shown_as_gb18030() {
    // Status with ErrorDescription "错误" in GBK.
    let mut content = 108u32.to_be_bytes().to_vec();
    content.extend_from_slice(&[0x00, 0x04, 0xB4, 0xED, 0xCE, 0xF3]);
    let bytes = message_bytes(401, &hb_tlv(300, &content));
    let message = Message::decode(&bytes, HB).unwrap();
    let status = message.status().unwrap();
    assert_eq!((status.code, status.description.as_str()), (108, "错误"));
    assert_eq!(message.encode(HB).unwrap(), bytes);
}

#[test]
fn bit_array_claiming_more_bits_than_bytes_present_keeps_the_parameter_raw() {
    // HbTargetTag: MemoryType, flags, Pointer, TagMask of 0xFFFF bits with 1 byte.
    let content = [0, 0, 0, 0, 0xFF, 0xFF, 0xAA];
    let (decoded, _) = Parameter::decode(&hb_tlv(454, &content), HB).unwrap();
    assert_eq!(decoded.body, Content::Raw(content.to_vec()));
}

#[test]
fn encoder_rejects_an_array_too_long_for_a_sixteen_bit_count() {
    let tid = Parameter::named("TagReportData", Body::from_fields(vec![Value::Bytes(vec![0; 70_000])])).unwrap();
    let message = Message::named("TagSelectAccessReport", [0; 8], 1, Body::from_params(vec![tid])).unwrap();
    assert!(matches!(message.encode(HB), Err(EncodeError::TooLong { .. })));
    assert!(message.encode(V2019).is_ok());
}

#[test]
fn encoder_rejects_a_bit_array_whose_bit_count_disagrees_with_its_bytes() {
    let tag = Parameter::named(
        "HbTargetTag",
        Body::from_fields(vec![
            Value::U8(0),
            Value::U8(0),
            Value::U16(0),
            Value::Bits {
                bit_count: 64,
                data: vec![0xFF],
            },
            Value::Bits {
                bit_count: 0,
                data: vec![],
            },
        ]),
    )
    .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        tag.encode(HB, &mut out),
        Err(EncodeError::BitArrayMismatch {
            bit_count: 64,
            data_len: 1
        })
    );
}

#[test]
fn command_json_that_is_not_an_object_is_a_typed_error() {
    assert!(matches!(
        command_from_json(&json!([1, 2])),
        Err(JsonError::WrongType { .. })
    ));
}

#[test]
fn command_json_without_msg_is_a_typed_error() {
    assert!(matches!(
        command_from_json(&json!({"body": {}})),
        Err(JsonError::Missing { .. })
    ));
}

#[test]
fn command_json_naming_no_table_message_is_a_typed_error() {
    assert!(matches!(
        command_from_json(&json!({"msg": "LaunchMissiles"})),
        Err(JsonError::UnknownName(_))
    ));
}

#[test]
fn command_json_with_an_out_of_range_integer_is_a_typed_error() {
    let doc = json!({"msg": "GetDeviceConfig", "body": {"RequestedData": 256, "AntennaID": 0}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::OutOfRange { .. })));
    let doc = json!({"msg": "DeleteSelectSpec", "body": {"SelectSpecID": -1}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::OutOfRange { .. })));
}

#[test]
fn command_json_missing_a_field_is_a_typed_error() {
    let doc = json!({"msg": "GetDeviceConfig", "body": {"RequestedData": 0}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::Missing { .. })));
}

#[test]
fn command_json_with_an_unknown_member_is_a_typed_error() {
    let doc = json!({"msg": "DeleteSelectSpec", "body": {"SelectSpecID": 1, "Colour": "red"}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::UnknownMember { .. })));
}

#[test]
fn command_json_with_bad_hex_is_a_typed_error() {
    let doc = json!({"msg": "DeviceCertificateConfig", "body": {"CertificateData": "xyz", "UserData": ""}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::BadHex { .. })));
}

#[test]
fn command_json_with_a_wrongly_typed_value_is_a_typed_error() {
    let doc = json!({"msg": "SetDeviceConfig", "body": {"ResetToFactoryDefault": "yes"}});
    assert!(matches!(command_from_json(&doc), Err(JsonError::WrongType { .. })));
}
