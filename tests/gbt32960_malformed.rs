//! Malformed and hostile input, one test per attack or quirk: what the decoder consumes, what it
//! reports, and that nothing panics or allocates ahead of the bytes.

use bytes::BytesMut;
use proptest::prelude::*;
use roadedge::protocol::gbt32960::control::{ControlParam, Upgrade};
use roadedge::protocol::gbt32960::info::InfoItem;
use roadedge::protocol::gbt32960::param::ParamValue;
use roadedge::protocol::gbt32960::reply::{self, ReplyError};
use roadedge::protocol::gbt32960::{
    decode_frame, downlink_from_json, parse_downlink, Body, BodyError, Command, DecodeError, DownlinkError, Edition,
    FrameDecoder, Listed, Origin, ResponseFlag, Time, TopicSuffix, Vin, MAX_DATA_LEN,
};
use serde_json::json;

const VIN: &[u8; 17] = b"LZYTBGCW5J1035715";
const TIME: [u8; 6] = [24, 5, 6, 7, 8, 9];

/// Builds a frame with a correct BCC.
fn frame(edition: Edition, cmd: u8, flag: u8, enc: u8, data: &[u8]) -> Vec<u8> {
    let mut out = edition.start_marker().to_vec();
    out.extend([cmd, flag]);
    out.extend(VIN);
    out.push(enc);
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
    out.push(out[2..].iter().fold(0, |acc, b| acc ^ b));
    out
}

fn command(edition: Edition, cmd: u8, data: &[u8]) -> Vec<u8> {
    frame(edition, cmd, 0xFE, 0x01, data)
}

fn with_time(rest: &[u8]) -> Vec<u8> {
    [&TIME[..], rest].concat()
}

fn malformed(bytes: &[u8]) -> BodyError {
    match decode_frame(bytes, Origin::Terminal) {
        Err(DecodeError::MalformedDataUnit { source, .. }) => source,
        other => panic!("expected a malformed data unit, got {other:?}"),
    }
}

fn realtime_items(edition: Edition, items: &[u8]) -> Vec<InfoItem> {
    let bytes = command(edition, 0x02, &with_time(items));
    match decode_frame(&bytes, Origin::Terminal).expect("decodes").body {
        Body::RealTime(report) => report.items,
        other => panic!("expected real-time data, got {other:?}"),
    }
}

#[test]
fn oversized_length_is_rejected_without_allocating() {
    let mut header = command(Edition::V2016, 0x02, &[])[..24].to_vec();
    header[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes());
    let mut buf = BytesMut::from(&header[..]);
    let capacity = buf.capacity();
    let err = FrameDecoder::new(Origin::Terminal).decode(&mut buf).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::DataUnitTooLong {
            declared: 0xFFFF,
            max: MAX_DATA_LEN,
            ..
        }
    ));
    assert_eq!(buf.len(), 22, "only the marker is consumed");
    assert!(buf.capacity() <= capacity, "nothing was reserved for the body");
}

#[test]
fn a_length_over_a_lowered_cap_is_rejected_before_the_body_arrives() {
    let mut header = command(Edition::V2025, 0x02, &[])[..24].to_vec();
    header[22..24].copy_from_slice(&9000u16.to_be_bytes());
    let mut buf = BytesMut::from(&header[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal).with_max_data_len(8192);
    let err = decoder.decode(&mut buf).unwrap_err();
    let header = err.header().expect("header is reported");
    assert_eq!(header.edition, Edition::V2025);
    assert!(matches!(err, DecodeError::DataUnitTooLong { max: 8192, .. }));
}

#[test]
fn a_fake_marker_with_an_oversized_length_does_not_hide_the_next_frame() {
    let real = command(Edition::V2016, 0x07, &[]);
    let mut fake = real[..24].to_vec();
    fake[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes());
    let mut buf = BytesMut::from(&[fake, real.clone()].concat()[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal);
    assert!(matches!(
        decoder.decode(&mut buf),
        Err(DecodeError::DataUnitTooLong { .. })
    ));
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::Garbage { skipped: 22 }));
    let frame = decoder.decode(&mut buf).unwrap().expect("the real frame");
    assert_eq!(frame.command, Command::HEARTBEAT);
    assert!(buf.is_empty());
}

#[test]
fn garbage_before_start_is_skipped_and_counted() {
    let real = command(Edition::V2016, 0x07, &[]);
    let mut buf = BytesMut::from(&[b"\x00noise\r\n".to_vec(), real].concat()[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal);
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::Garbage { skipped: 8 }));
    assert!(decoder.decode(&mut buf).unwrap().is_some());
    assert_eq!(decoder.skipped_bytes_total(), 8);
}

#[test]
fn garbage_without_a_marker_is_dropped_but_a_trailing_half_marker_is_kept() {
    let mut buf = BytesMut::from(&b"abc$"[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal);
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::Garbage { skipped: 3 }));
    assert_eq!(&buf[..], b"$");
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&command(Edition::V2025, 0x07, &[])[1..]);
    assert!(decoder.decode(&mut buf).unwrap().is_some());
}

#[test]
fn a_stray_marker_byte_before_a_frame_is_skipped() {
    let real = command(Edition::V2016, 0x07, &[]);
    let mut buf = BytesMut::from(&[b"#".to_vec(), real].concat()[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal);
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::Garbage { skipped: 1 }));
    assert!(decoder.decode(&mut buf).unwrap().is_some());
}

#[test]
fn every_prefix_of_a_frame_waits_without_consuming_or_growing_the_buffer() {
    let real = command(Edition::V2016, 0x02, &with_time(&[0x04, 1, 0, 2, 0, 3]));
    for len in 2..real.len() {
        let mut buf = BytesMut::from(&real[..len]);
        let capacity = buf.capacity();
        assert_eq!(FrameDecoder::new(Origin::Terminal).decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &real[..len]);
        assert_eq!(buf.capacity(), capacity);
    }
}

#[test]
fn bad_bcc_is_reported_with_command_vin_and_edition_for_the_error_reply() {
    let mut bad = command(Edition::V2025, 0x02, &with_time(&[0x04, 0x0B, 0xB8]));
    *bad.last_mut().unwrap() ^= 0x55;
    let next = command(Edition::V2025, 0x07, &[]);
    let mut buf = BytesMut::from(&[bad, next].concat()[..]);
    let mut decoder = FrameDecoder::new(Origin::Terminal);
    let err = decoder.decode(&mut buf).unwrap_err();
    let DecodeError::BadChecksum { header, time, .. } = &err else {
        panic!("expected a BCC error, got {err:?}");
    };
    assert_eq!(header.command, Command::REALTIME);
    assert_eq!(header.edition, Edition::V2025);
    assert_eq!(&header.vin.0, VIN);
    assert_eq!(*time, Some(Time::from_bytes(TIME)));

    let now = Time::from_bytes([26, 1, 1, 0, 0, 0]);
    let reply = err
        .error_reply(ResponseFlag::ERROR, now)
        .expect("a command gets a reply");
    let bytes = reply.encode().unwrap();
    assert_eq!(&bytes[..4], &[b'$', b'$', 0x02, 0x02]);
    assert_eq!(&bytes[4..21], VIN);
    assert_eq!(&bytes[24..30], &TIME, "2025: the reply keeps the frame's own time");

    assert!(decoder.decode(&mut buf).unwrap().is_some(), "the stream continues");
}

#[test]
fn bad_bcc_on_a_response_frame_gets_no_error_reply() {
    let mut bad = frame(Edition::V2016, 0x80, 0x01, 0x01, &with_time(&[0]));
    *bad.last_mut().unwrap() ^= 1;
    let err = decode_frame(&bad, Origin::Terminal).unwrap_err();
    assert!(matches!(err, DecodeError::BadChecksum { .. }));
    assert!(err.error_reply(ResponseFlag::ERROR, Time::default()).is_none());
}

#[test]
fn a_truncated_info_item_is_a_malformed_data_unit_with_the_header() {
    let bytes = command(Edition::V2016, 0x02, &with_time(&[0x01, 1, 2, 3, 4, 5]));
    let err = decode_frame(&bytes, Origin::Terminal).unwrap_err();
    assert_eq!(err.header().unwrap().command, Command::REALTIME);
    assert_eq!(err.message_time(), Some(Time::from_bytes(TIME)));
    // Status, charging, mode and speed fit; the mileage DWORD at offset 12 does not.
    assert!(matches!(
        err,
        DecodeError::MalformedDataUnit {
            source: BodyError::Truncated {
                offset: 12,
                needed: 4,
                remaining: 0
            },
            ..
        }
    ));
}

#[test]
fn a_count_larger_than_the_data_is_rejected_without_reading_past_it() {
    // 253 drive motors announced, none present.
    assert!(matches!(
        malformed(&command(Edition::V2016, 0x02, &with_time(&[0x02, 253]))),
        BodyError::Truncated { .. }
    ));
    // 2025 login announcing 255 BMS with 255 packs each and nothing after.
    let mut login = with_time(&[0, 1]);
    login.extend([b'8'; 20]);
    login.push(255);
    assert!(matches!(
        malformed(&command(Edition::V2025, 0x01, &login)),
        BodyError::Truncated { .. }
    ));
}

#[test]
fn a_real_time_frame_without_its_collection_time_is_malformed() {
    assert!(matches!(
        malformed(&command(Edition::V2016, 0x02, &[0x04, 1, 0])),
        BodyError::Truncated {
            offset: 0,
            needed: 6,
            remaining: 3
        }
    ));
}

#[test]
fn trailing_bytes_after_a_fixed_layout_are_rejected() {
    assert_eq!(
        malformed(&command(Edition::V2016, 0x04, &with_time(&[0, 1, 0xAA]))),
        BodyError::TrailingBytes { count: 1 }
    );
}

#[test]
fn sentinel_counts_carry_no_items_and_decoding_continues() {
    // 2016: motor count 0xFE, then an engine block.
    let items = realtime_items(Edition::V2016, &[0x02, 0xFE, 0x04, 1, 0, 2, 0, 3]);
    assert_eq!(items[0], InfoItem::DriveMotors2016(Listed::Abnormal));
    assert!(matches!(items[1], InfoItem::Engine2016(_)));
    // 2025: one pack whose unit count is 0xFFFF, then a second pack with one unit.
    let items = realtime_items(
        Edition::V2025,
        &[0x07, 2, 1, 0, 10, 0, 20, 0xFF, 0xFF, 2, 0, 10, 0, 20, 0, 1, 0x04, 0xB0],
    );
    let InfoItem::PackVoltages2025(Listed::Items(packs)) = &items[0] else {
        panic!("expected packs, got {items:?}");
    };
    assert_eq!(packs[0].unit_voltages, Listed::Invalid);
    assert_eq!(packs[1].unit_voltages, Listed::Items(vec![1200]));
    let json = decode_frame(
        &command(Edition::V2016, 0x02, &with_time(&[0x09, 0xFF])),
        Origin::Terminal,
    )
    .unwrap()
    .to_json();
    assert_eq!(json["Data"]["Infos"][0]["Number"], 255);
    assert_eq!(json["Data"]["Infos"][0]["SubSystems"], json!([]));
}

#[test]
fn fe_ff_marker_values_pass_through_as_raw_values() {
    let mut vehicle = vec![0x01];
    vehicle.extend([0xFE, 0xFF, 0xFE, 0xFF, 0xFE]);
    vehicle.extend([0xFF; 4]);
    vehicle.extend([0xFF, 0xFE, 0xFF, 0xFF, 0xFE, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
    let bytes = command(Edition::V2016, 0x02, &with_time(&vehicle));
    let json = decode_frame(&bytes, Origin::Terminal).unwrap().to_json();
    let item = &json["Data"]["Infos"][0];
    assert_eq!(item["Status"], 0xFE);
    assert_eq!(item["Speed"], 0xFFFE);
    assert_eq!(item["Mileage"], 0xFFFF_FFFFu32);
    assert_eq!(item["Voltage"], 0xFFFE);
    assert_eq!(item["BrakePedal"], 0xFE);
}

#[test]
fn a_user_defined_block_is_walked_by_its_length_so_later_items_still_decode() {
    let items = realtime_items(Edition::V2025, &[0x80, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x04, 0x0B, 0xB8]);
    assert_eq!(
        items[0],
        InfoItem::UserDefined {
            code: 0x80,
            payload: vec![0xAA, 0xBB, 0xCC]
        }
    );
    assert!(matches!(items[1], InfoItem::Engine2025(_)));
}

#[test]
fn a_user_defined_block_whose_length_overruns_keeps_the_tail_raw_like_emqx() {
    let items = realtime_items(Edition::V2016, &[0x80, 0x02, b'0', b'0', b'0']);
    assert_eq!(items, vec![InfoItem::Unparsed(vec![0x80, 0x02, b'0', b'0', b'0'])]);
}

#[test]
fn an_info_type_of_the_other_edition_keeps_the_rest_raw_and_round_trips() {
    // 0x30 (fuel-cell stacks) exists only in 2025.
    let bytes = command(Edition::V2016, 0x02, &with_time(&[0x04, 1, 0, 2, 0, 3, 0x30, 1, 2]));
    let frame = decode_frame(&bytes, Origin::Terminal).unwrap();
    let Body::RealTime(report) = &frame.body else { panic!() };
    assert_eq!(report.items[1], InfoItem::Unparsed(vec![0x30, 1, 2]));
    assert_eq!(frame.encode().unwrap(), bytes);
}

#[test]
fn an_encrypted_data_unit_is_kept_opaque_with_its_cipher() {
    let ciphertext = with_time(&[0x04, 1, 0, 2, 0, 3]);
    let bytes = frame(Edition::V2025, 0x02, 0xFE, 0x05, &ciphertext);
    let frame = decode_frame(&bytes, Origin::Terminal).unwrap();
    assert_eq!(frame.body, Body::Encrypted(ciphertext));
    let json = frame.to_json();
    assert_eq!(json["Encrypt"], 5);
    assert_eq!(json["Data"], json!({"Ciphertext": "180506070809040100020003"}));
    assert_eq!(frame.encode().unwrap(), bytes);
}

#[test]
fn an_unknown_command_is_kept_raw_and_round_trips() {
    let bytes = command(Edition::V2016, 0xC0, &[1, 2, 3]);
    let frame = decode_frame(&bytes, Origin::Terminal).unwrap();
    assert_eq!(frame.body, Body::Raw(vec![1, 2, 3]));
    assert_eq!(frame.topic_suffix(), Some(TopicSuffix::Transparent));
    assert_eq!(frame.encode().unwrap(), bytes);
}

#[test]
fn a_parameter_of_unknown_width_keeps_the_rest_raw() {
    let data = with_time(&[3, 0x09, 30, 0x90, 1, 2, 3, 0x01, 0, 5]);
    let frame = decode_frame(&frame(Edition::V2016, 0x80, 0x01, 0x01, &data), Origin::Terminal).unwrap();
    let Body::Params(list) = &frame.body else {
        panic!("{:?}", frame.body)
    };
    assert_eq!(list.params[1].value, ParamValue::Unparsed(vec![1, 2, 3, 0x01, 0, 5]));
    assert_eq!(frame.to_json()["Data"]["Params"][1], json!({"0x90": "010203010005"}));
}

#[test]
fn a_domain_without_its_length_parameter_is_read_to_the_end_only_when_last() {
    let data = with_time(&[1, 0x05, b'a', b'.', b'c', b'n']);
    let frame = decode_frame(&frame(Edition::V2016, 0x80, 0x01, 0x01, &data), Origin::Terminal).unwrap();
    assert_eq!(frame.to_json()["Data"]["Params"], json!([{"0x05": "a.cn"}]));
}

#[test]
fn a_2025_terminal_reply_holding_only_the_time_decodes() {
    let bytes = frame(Edition::V2025, 0x81, 0x01, 0x01, &TIME);
    let frame = decode_frame(&bytes, Origin::Terminal).unwrap();
    assert_eq!(frame.topic_suffix(), Some(TopicSuffix::Response));
    assert_eq!(frame.message_time(), Some(Time::from_bytes(TIME)));
}

#[test]
fn the_b15_text_upgrade_layout_decodes_too() {
    let param = b"http://bd.com:8383;TK;TKUser;TKPwd;bd.com;8383;ManufacturerName;2.0;1.0;10";
    let data = [&with_time(&[0x01])[..], param].concat();
    let frame = decode_frame(&command(Edition::V2016, 0x82, &data), Origin::Platform).unwrap();
    let Body::TerminalControl(control) = &frame.body else {
        panic!()
    };
    assert!(matches!(&control.param, ControlParam::Upgrade(u) if matches!(**u, Upgrade::Text(_))));
    let json = frame.to_json();
    assert_eq!(json["Data"]["Param"]["UpgradeUrl"], "http://bd.com:8383");
    assert_eq!(json["Data"]["Param"]["Port"], 8383);
    assert_eq!(json["Data"]["Param"]["Timeout"], 10);
    assert_eq!(frame.encode().unwrap(), command(Edition::V2016, 0x82, &data));
}

#[test]
fn a_binary_upgrade_port_equal_to_the_separator_is_read_by_position() {
    // Port 0x3B3B and timeout 0x003B contain ';' bytes; splitting on ';' would mis-split.
    let param = [
        &b"apn;u;p;"[..],
        &[0, 0, 10, 0, 0, 1],
        b";",
        &[0x3B, 0x3B],
        b";ABCD;1.0.0;2.0.0;ftp://x;",
        &[0x00, 0x3B],
    ]
    .concat();
    let data = [&with_time(&[0x01])[..], &param].concat();
    let json = decode_frame(&command(Edition::V2016, 0x82, &data), Origin::Platform)
        .unwrap()
        .to_json();
    assert_eq!(json["Data"]["Param"]["Ip"], "10.0.0.1");
    assert_eq!(json["Data"]["Param"]["Port"], 0x3B3B);
    assert_eq!(json["Data"]["Param"]["Timeout"], 0x3B);
}

#[test]
fn an_upgrade_string_matching_neither_layout_is_kept_raw() {
    let data = with_time(&[0x01, b'x', b'y']);
    let frame = decode_frame(&command(Edition::V2016, 0x82, &data), Origin::Platform).unwrap();
    assert_eq!(frame.to_json()["Data"]["Param"], "7879");
}

#[test]
fn vin_padding_is_trimmed_for_topics_but_kept_in_json() {
    let mut raw = [0u8; 17];
    raw[..9].copy_from_slice(b"123456789");
    raw[9] = b' ';
    let frame = decode_frame(&command(Edition::V2016, 0x07, &[]), Origin::Terminal).unwrap();
    let padded = roadedge::protocol::gbt32960::Frame { vin: Vin(raw), ..frame };
    assert_eq!(padded.vin(), "123456789");
    assert_eq!(padded.to_json()["Vin"].as_str().unwrap().len(), 17);
}

#[test]
fn a_response_frame_is_never_answered() {
    let bytes = frame(Edition::V2016, 0x07, 0x01, 0x01, &[]);
    let response = decode_frame(&bytes, Origin::Terminal).unwrap();
    assert_eq!(
        reply::heartbeat_reply(&response, ResponseFlag::SUCCESS, Time::default()),
        Err(ReplyError::NotACommand(0x01))
    );
}

#[test]
fn an_encrypted_command_cannot_be_echoed_but_can_get_a_time_only_reply() {
    let bytes = frame(Edition::V2016, 0x01, 0xFE, 0x03, &[1, 2, 3]);
    let login = decode_frame(&bytes, Origin::Terminal).unwrap();
    assert_eq!(
        reply::login_reply(&login, ResponseFlag::SUCCESS, Time::default()),
        Err(ReplyError::EncryptedEcho)
    );
    let ack = reply::heartbeat_reply(&login, ResponseFlag::ERROR, Time::default()).unwrap();
    assert_eq!(ack.encode().unwrap()[21], 0x01, "replies go out in plain text");
}

#[test]
fn one_shot_decoding_reports_short_and_overlong_input() {
    let bytes = command(Edition::V2016, 0x07, &[]);
    assert_eq!(
        decode_frame(&bytes[..10], Origin::Terminal),
        Err(DecodeError::Incomplete { have: 10, need: 24 })
    );
    assert_eq!(
        decode_frame(&[&bytes[..], b"##"].concat(), Origin::Terminal),
        Err(DecodeError::TrailingBytes { count: 2 })
    );
}

fn downlink_error(value: serde_json::Value) -> DownlinkError {
    downlink_from_json(&value, Vin(*VIN), Edition::V2016, Time::default()).unwrap_err()
}

#[test]
fn downlink_text_that_is_not_json_is_a_typed_error() {
    let err = parse_downlink(b"{not json", Vin(*VIN), Edition::V2016, Time::default());
    assert!(matches!(err, Err(DownlinkError::Json(_))));
    assert_eq!(downlink_error(json!([1])), DownlinkError::NotAnObject);
    assert!(matches!(
        downlink_error(json!({"Action": "Reboot"})),
        DownlinkError::UnknownAction(_)
    ));
}

#[test]
fn downlink_ids_over_a_byte_or_not_numbers_are_rejected() {
    assert!(matches!(
        downlink_error(json!({"Action": "Query", "Ids": ["0x100"]})),
        DownlinkError::InvalidField { .. }
    ));
    assert!(matches!(
        downlink_error(json!({"Action": "Query", "Ids": ["ten"]})),
        DownlinkError::InvalidField { .. }
    ));
    assert!(matches!(
        downlink_error(json!({"Action": "Control", "Command": -1})),
        DownlinkError::InvalidField { .. }
    ));
}

#[test]
fn downlink_total_must_match_the_entries_and_fit_a_byte() {
    assert_eq!(
        downlink_error(json!({"Action": "Query", "Total": 3, "Ids": ["0x01"]})),
        DownlinkError::TotalMismatch { total: 3, count: 1 }
    );
    let ids: Vec<u32> = (0..300).map(|i| i % 16).collect();
    assert_eq!(
        downlink_error(json!({"Action": "Query", "Ids": ids})),
        DownlinkError::TooManyEntries { count: 300 }
    );
}

#[test]
fn downlink_settings_are_checked_against_the_parameter_table() {
    assert_eq!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x90": 1}]})),
        DownlinkError::UnknownParam(0x90)
    );
    assert!(matches!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x09": 300}]})),
        DownlinkError::InvalidField { .. }
    ));
    assert!(matches!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x07": "1.0"}]})),
        DownlinkError::InvalidField { .. }
    ));
    assert_eq!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x05": "a.cn"}]})),
        DownlinkError::UnpairedText {
            text: 0x05,
            length: 0x04
        }
    );
    assert_eq!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x0D": 3}]})),
        DownlinkError::UnpairedText {
            text: 0x0E,
            length: 0x0D
        }
    );
    assert_eq!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x04": 3}, {"0x05": "a.cn"}]})),
        DownlinkError::TextLengthMismatch {
            length: 0x04,
            declared: 3,
            text: 0x05,
            actual: 4
        }
    );
    assert!(matches!(
        downlink_error(json!({"Action": "Setting", "Params": [{"0x01": 1, "0x02": 2}]})),
        DownlinkError::InvalidField { .. }
    ));
}

#[test]
fn downlink_period_params_are_bytes_for_2025_vehicles() {
    let err = downlink_from_json(
        &json!({"Action": "Setting", "Params": [{"0x02": 600}]}),
        Vin(*VIN),
        Edition::V2025,
        Time::default(),
    );
    assert!(matches!(err, Err(DownlinkError::InvalidField { .. })));
}

#[test]
fn downlink_control_parameters_are_validated() {
    assert!(matches!(
        downlink_error(json!({"Action": "Control", "Command": "0x01", "Param": {"Ip": "10.0.0"}})),
        DownlinkError::InvalidField { .. }
    ));
    assert!(matches!(
        downlink_error(json!({"Action": "Control", "Command": "0x01", "Param": {"UpgradeUrl": "a;b"}})),
        DownlinkError::InvalidField { .. }
    ));
    assert!(matches!(
        downlink_error(json!({"Action": "Control", "Command": "0x01", "Param": {"ManufacturerId": "TOOLONG"}})),
        DownlinkError::InvalidField { .. }
    ));
    assert_eq!(
        downlink_error(json!({"Action": "Control", "Command": "0x06", "Param": {"Level": 1}})),
        DownlinkError::MissingField("Param.Message")
    );
    assert!(matches!(
        downlink_error(json!({"Action": "Control", "Command": "0x06", "Param": {"Level": 256, "Message": ""}})),
        DownlinkError::InvalidField { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_panic_and_every_error_makes_progress(
        chunks in proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![3 => any::<u8>(), 1 => Just(b'#'), 1 => Just(b'$')], 0..80),
            1..6),
    ) {
        let mut decoder = FrameDecoder::new(Origin::Terminal);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(buf.len() < before);
                        let _ = frame.to_json();
                    }
                    Ok(None) => {
                        prop_assert_eq!(buf.len(), before);
                        break;
                    }
                    Err(_) => prop_assert!(buf.len() < before),
                }
            }
        }
    }

    #[test]
    fn random_data_units_behind_a_valid_header_never_panic(
        edition in prop_oneof![Just(Edition::V2016), Just(Edition::V2025)],
        cmd in any::<u8>(),
        flag in prop_oneof![Just(0xFEu8), any::<u8>()],
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let bytes = frame(edition, cmd, flag, 0x01, &data);
        for origin in [Origin::Terminal, Origin::Platform] {
            if let Ok(frame) = decode_frame(&bytes, origin) {
                let _ = frame.to_json();
                if cmd != edition.start_marker()[0] {
                    prop_assert_eq!(frame.encode().unwrap(), bytes.clone());
                }
            }
        }
    }

    #[test]
    fn random_downlink_json_never_panics(
        action in prop_oneof![Just("Query"), Just("Setting"), Just("Control")],
        key in "0x[0-9A-F]{1,3}",
        number in any::<i64>(),
        text in ".{0,8}",
    ) {
        let candidates = [
            json!({"Action": action, "Ids": [key.clone(), number], "Total": number}),
            json!({"Action": action, "Params": [{key.clone(): number}, {key.clone(): text.clone()}]}),
            json!({"Action": action, "Command": key.clone(), "Param": {"Level": number, "Message": text.clone(), "Ip": text.clone(), "Port": number}}),
        ];
        for value in candidates {
            if let Ok(frame) = downlink_from_json(&value, Vin(*VIN), Edition::V2025, Time::default()) {
                frame.encode().unwrap();
            }
        }
    }
}
