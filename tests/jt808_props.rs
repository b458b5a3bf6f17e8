//! Property tests: frames, bodies, JSON and subpackages round-trip.
//!
//! - decode(encode(packet)) == packet for any header (either layout, lying bit 14 included) and body;
//! - a stream of frames with garbage between them, cut at arbitrary points, yields the same packets;
//! - encode(decode(bytes)) == bytes for any body bytes any modelled id accepts, in every edition;
//! - decode(encode(message)) == message for generated messages of every modelled type;
//! - downlink_from_json(to_json(message)) == message for every downlink command;
//! - split + shuffle + reassemble gives the body back.

use bytes::BytesMut;
use proptest::prelude::*;
use roadedge::protocol::jt808::*;

fn phone() -> impl Strategy<Value = (Phone, Option<u8>)> {
    prop_oneof![
        prop::array::uniform6(any::<u8>()).prop_map(|b| (Phone::from_bcd(&b).unwrap(), None)),
        (prop::array::uniform10(any::<u8>()), any::<u8>()).prop_map(|(b, v)| (Phone::from_bcd(&b).unwrap(), Some(v))),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u16>(),
        0u8..8,
        any::<bool>(),
        any::<bool>(),
        phone(),
        any::<u16>(),
        prop::option::of((any::<u16>(), any::<u16>())),
    )
        .prop_map(
            |(msg_id, encryption, version_flag, reserved_bit15, (phone, version), serial, sub)| Header {
                msg_id,
                encryption,
                version_flag,
                reserved_bit15,
                protocol_version: version,
                phone,
                serial,
                subpackage: sub.map(|(total, index)| Subpackage { total, index }),
            },
        )
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..=MAX_BODY_LEN),
        // Bytes that need escaping, densely.
        1 => prop::collection::vec(prop_oneof![Just(0x7Eu8), Just(0x7D), any::<u8>()], 0..64),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    (header(), body_bytes()).prop_map(|(header, body)| Packet {
        header,
        body: body.into(),
    })
}

fn decode_all(buf: &mut BytesMut, decoder: &mut FrameDecoder, out: &mut Vec<Packet>) {
    loop {
        match decoder.decode(buf) {
            Ok(Some(packet)) => out.push(packet),
            Ok(None) => return,
            Err(FrameError::Garbage { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

proptest! {
    #[test]
    fn any_packet_survives_encode_then_decode(packet in packet()) {
        let bytes = packet.to_bytes().unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.to_bytes().unwrap(), bytes);
        prop_assert_eq!(decoded, packet);
    }

    #[test]
    fn frames_split_anywhere_with_garbage_between_decode_in_order(
        packets in prop::collection::vec(packet(), 1..5),
        garbage in prop::collection::vec(prop::collection::vec(0u8..0x7E, 0..8), 5),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for (packet, junk) in packets.iter().zip(&garbage) {
            stream.extend_from_slice(junk);
            stream.extend_from_slice(&packet.to_bytes().unwrap());
        }
        let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in cut_points {
            buf.extend_from_slice(&stream[from..to]);
            from = to;
            decode_all(&mut buf, &mut decoder, &mut got);
        }
        prop_assert_eq!(got, packets.clone());
        let junk_total: usize = garbage.iter().take(packets.len()).map(Vec::len).sum();
        prop_assert_eq!(decoder.skipped_bytes(), junk_total as u64);
    }

    #[test]
    fn any_accepted_body_reencodes_to_the_same_bytes(
        id_index in any::<prop::sample::Index>(),
        edition in prop_oneof![Just(Edition::V2011), Just(Edition::V2013), Just(Edition::V2019)],
        bytes in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        let msg_id = MODELLED[id_index.index(MODELLED.len())];
        if let Ok(body) = Body::decode(msg_id, &bytes, edition) {
            let mut out = Vec::new();
            body.encode(&mut out).unwrap();
            prop_assert_eq!(out, bytes);
        }
    }

    #[test]
    fn generated_messages_survive_encode_then_decode(
        (message, connection) in message(),
    ) {
        let bytes = message.to_bytes().unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let packet = FrameDecoder::new().decode(&mut buf).unwrap().unwrap();
        let decoded = Message::decode(&packet, connection).unwrap();
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn the_direct_json_writer_gives_the_bytes_serde_json_gives_for_the_json_value(
        (message, _) in message(),
        text in prop_oneof![Just(TextEncoding::Gbk), Just(TextEncoding::Utf8)],
    ) {
        let written = String::from_utf8(message.to_json_bytes(text).unwrap()).expect("UTF-8");
        prop_assert_eq!(written, serde_json::to_string(&message.to_json(text).unwrap()).unwrap());
    }

    #[test]
    fn decoded_packets_are_written_as_serde_json_writes_their_json_value(
        packet in packet(),
        connection in prop_oneof![Just(Edition::V2011), Just(Edition::V2013), Just(Edition::V2019)],
    ) {
        let (message, _) = Message::decode_or_raw(&packet, connection);
        let written = String::from_utf8(message.to_json_bytes(TextEncoding::Gbk).unwrap()).expect("UTF-8");
        prop_assert_eq!(written, serde_json::to_string(&message.to_json(TextEncoding::Gbk).unwrap()).unwrap());
    }

    #[test]
    fn downlink_commands_survive_json_then_back(
        (message, _) in message().prop_filter("downlink commands", |(m, _)| is_downlink(m)),
        text in prop_oneof![Just(TextEncoding::Gbk), Just(TextEncoding::Utf8)],
    ) {
        let json = message.to_json(text).unwrap();
        let ctx = DownlinkContext {
            phone: message.header.phone,
            protocol_version: message.header.protocol_version,
            serial: message.header.serial.wrapping_add(1),
            text,
        };
        let mut payload = json.clone();
        payload["header"] = serde_json::json!({
            "msg_id": message.header.msg_id,
            "msg_sn": message.header.serial,
        });
        let back = downlink_from_json(&payload, &ctx).unwrap();
        prop_assert_eq!(back, message);
    }

    #[test]
    fn split_shuffled_packets_reassemble_to_the_body(
        body in prop::collection::vec(any::<u8>(), 1..4000),
        chunk in 1usize..=MAX_BODY_LEN,
        order in any::<prop::sample::Index>(),
        serial in any::<u16>(),
    ) {
        let header = Header::new(ids::UPGRADE, Phone::parse("13800138000").unwrap(), None, serial);
        prop_assume!(body.len().div_ceil(chunk) <= 2048);
        let mut packets = split_into_packets(&header, &body, chunk).unwrap();
        if packets.len() == 1 {
            prop_assert_eq!(packets[0].header.subpackage, None);
            prop_assert_eq!(&packets[0].body[..], &body[..]);
            return Ok(());
        }
        let rotate = order.index(packets.len());
        packets.rotate_left(rotate);
        let mut reassembler = Reassembler::new(ReassemblyLimits::default());
        let mut done = None;
        for (i, packet) in packets.iter().enumerate() {
            let decoded = {
                let bytes = packet.to_bytes().unwrap();
                let mut buf = BytesMut::from(&bytes[..]);
                FrameDecoder::new().decode(&mut buf).unwrap().unwrap()
            };
            match reassembler.push(&decoded, i as u64).unwrap() {
                PushOutcome::Complete(r) => done = Some(r),
                PushOutcome::Pending { restarted, .. } => prop_assert!(!restarted),
                PushOutcome::Duplicate => prop_assert!(false, "no duplicates sent"),
            }
            prop_assert_eq!(reassembler.push(&decoded, i as u64).unwrap_or(PushOutcome::Duplicate), if done.is_some() && i + 1 == packets.len() {
                // The finished transfer is gone, so a late copy starts a new one.
                PushOutcome::Pending { received: 1, total: packets.len() as u16, restarted: false }
            } else {
                PushOutcome::Duplicate
            });
        }
        let done = done.expect("complete");
        prop_assert_eq!(done.body, body);
        prop_assert_eq!(done.header.serial, serial);
        prop_assert_eq!(done.header.subpackage, None);
    }
}

const MODELLED: &[u16] = &[
    0x0001, 0x8001, 0x0002, 0x0003, 0x0004, 0x8004, 0x8003, 0x0005, 0x0100, 0x8100, 0x0102, 0x8103, 0x8104, 0x8105,
    0x8106, 0x0104, 0x8107, 0x0107, 0x8108, 0x0108, 0x0200, 0x8201, 0x0201, 0x8202, 0x8300, 0x8500, 0x0500, 0x0704,
    0x0800, 0x0801, 0x8800, 0x0900, 0x8900, 0x0901,
];

const DOWNLINK: &[u16] = &[
    0x8001, 0x8003, 0x8004, 0x8100, 0x8103, 0x8104, 0x8105, 0x8106, 0x8107, 0x8108, 0x8201, 0x8202, 0x8300, 0x8500,
    0x8800, 0x8900,
];

fn is_downlink(message: &Message) -> bool {
    DOWNLINK.contains(&message.header.msg_id)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn fixed(width: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), width)
}

/// Printable ASCII without NUL: text that survives GBK/UTF-8 and the JSON's NUL trimming.
fn ascii(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0x20u8..0x7F, 0..max)
}

fn basic() -> impl Strategy<Value = LocationBasic> {
    (any::<[u32; 4]>(), any::<[u16; 3]>(), prop::array::uniform6(any::<u8>())).prop_map(
        |([alarm, status, latitude, longitude], [altitude, speed, direction], time)| LocationBasic {
            alarm,
            status,
            latitude,
            longitude,
            altitude,
            speed,
            direction,
            time: BcdTime(time),
        },
    )
}

fn location(edition: Edition) -> impl Strategy<Value = Location> {
    let extra = prop_oneof![
        // Known ids at their standard lengths, and anything else.
        (prop::sample::select(vec![0x01u8, 0x25, 0x2B]), fixed(4)).prop_map(|(id, v)| (id, v)),
        (prop::sample::select(vec![0x02u8, 0x03, 0x04, 0x06, 0x2A]), fixed(2)).prop_map(|(id, v)| (id, v)),
        (prop::sample::select(vec![0x11u8, 0x30, 0x31]), fixed(1)).prop_map(|(id, v)| (id, v)),
        fixed(5).prop_map(|v| (0x11u8, v)),
        fixed(6).prop_map(|v| (0x12u8, v)),
        fixed(7).prop_map(|v| (0x13u8, v)),
        fixed(30).prop_map(|v| (0x05u8, v)),
        (any::<u8>(), bytes(12)),
    ];
    (
        basic(),
        prop::collection::vec(extra, 0..6),
        prop::option::of(any::<u8>()),
    )
        .prop_map(move |(basic, extras, trailing)| Location {
            basic,
            extras: extras
                .into_iter()
                .map(|(id, v)| LocationExtra::from_wire(id, &v, edition))
                .collect(),
            trailing: trailing.into_iter().collect(),
        })
}

fn params() -> impl Strategy<Value = Vec<Param>> {
    let param = prop_oneof![
        // Typed ids with values of their type, so the JSON shows numbers and text.
        (1u32..=7, any::<u32>()).prop_map(|(id, v)| Param {
            id,
            value: v.to_be_bytes().to_vec()
        }),
        any::<u16>().prop_map(|v| Param {
            id: 0x0031,
            value: v.to_be_bytes().to_vec()
        }),
        any::<u8>().prop_map(|v| Param {
            id: 0x0084,
            value: vec![v]
        }),
        (0x0010u32..=0x0017, ascii(20)).prop_map(|(id, value)| Param { id, value }),
        fixed(8).prop_map(|value| Param { id: 0x0110, value }),
        // Untyped ids and typed ids with odd lengths stay base64.
        (any::<u32>(), bytes(10))
            .prop_map(|(id, value)| Param { id, value })
            .prop_filter("not a text id", |p| param_type(p.id, Edition::V2019)
                != Some(ParamType::Text)),
    ];
    prop::collection::vec(param, 0..5)
}

/// A message of any modelled type whose body fits its header's edition, and the connection edition
/// to decode it with.
fn message() -> impl Strategy<Value = (Message, Edition)> {
    let edition = prop_oneof![Just(Edition::V2011), Just(Edition::V2013), Just(Edition::V2019)];
    (edition, phone(), any::<u16>(), any::<u16>()).prop_flat_map(|(edition, (phone, version), serial, raw_id)| {
        let version = if edition == Edition::V2019 {
            Some(version.unwrap_or(1))
        } else {
            None
        };
        let phone = Phone::from_bcd(
            &phone
                .bcd_for_width(if version.is_some() { 10 } else { 6 })
                .unwrap_or_else(|_| vec![0; if version.is_some() { 10 } else { 6 }]),
        )
        .unwrap();
        let header = Header::new(0, phone, version, serial);
        body(edition, raw_id).prop_map(move |body| {
            let mut header = header;
            if let Body::Raw(_) = body {
                header.msg_id = raw_id;
            }
            (Message::new(header, body), edition)
        })
    })
}

fn body(edition: Edition, raw_id: u16) -> BoxedStrategy<Body> {
    let is_2019 = edition == Edition::V2019;
    let header_edition = if is_2019 { Edition::V2019 } else { Edition::V2013 };
    let register_edition = if is_2019 { Edition::V2019 } else { edition };
    let (maker, model, id) = match register_edition {
        Edition::V2011 => (5, 8, 7),
        Edition::V2013 => (5, 20, 7),
        Edition::V2019 => (11, 30, 30),
    };
    // A 2011 body must stay under 37 bytes to be told apart from 2013.
    let plate_max = if register_edition == Edition::V2011 { 12 } else { 20 };
    let general = (any::<u16>(), any::<u16>(), any::<u8>()).prop_map(|(reply_serial, reply_id, result)| GeneralReply {
        reply_serial,
        reply_id,
        result,
    });
    let raw_id_ok = !is_modelled(raw_id);
    let mut choices: Vec<BoxedStrategy<Body>> = vec![
        general.clone().prop_map(Body::TerminalGeneralReply).boxed(),
        general.prop_map(Body::PlatformGeneralReply).boxed(),
        bytes(20).prop_map(Body::Heartbeat).boxed(),
        Just(Body::Logout).boxed(),
        Just(Body::ServerTimeQuery).boxed(),
        prop::array::uniform6(any::<u8>())
            .prop_map(|t| Body::ServerTimeReply(BcdTime(t)))
            .boxed(),
        (any::<u16>(), prop::collection::vec(any::<u16>(), 0..10))
            .prop_map(move |(first_serial, indexes)| {
                Body::PlatformResendRequest(ResendRequest {
                    word_count: is_2019,
                    first_serial,
                    indexes,
                })
            })
            .boxed(),
        (any::<u16>(), prop::collection::vec(any::<u16>(), 0..10))
            .prop_map(|(first_serial, indexes)| {
                Body::TerminalResendRequest(ResendRequest {
                    word_count: true,
                    first_serial,
                    indexes,
                })
            })
            .boxed(),
        (
            any::<u16>(),
            any::<u16>(),
            fixed(maker),
            fixed(model),
            fixed(id),
            any::<u8>(),
            bytes(plate_max),
        )
            .prop_map(
                move |(province, city, manufacturer, model, terminal_id, plate_color, plate)| {
                    Body::Register(Register {
                        edition: register_edition,
                        province,
                        city,
                        manufacturer,
                        model,
                        terminal_id,
                        plate_color,
                        plate,
                    })
                },
            )
            .boxed(),
        (any::<u16>(), any::<u8>(), ascii(16))
            .prop_map(|(reply_serial, result, code)| {
                Body::RegisterReply(RegisterReply {
                    reply_serial,
                    result,
                    auth_code: if result == 0 { code } else { Vec::new() },
                })
            })
            .boxed(),
        (ascii(16), fixed(IMEI_LEN), fixed(SOFTWARE_VERSION_LEN))
            .prop_map(move |(code, imei, software_version)| {
                Body::Authenticate(Authenticate {
                    code,
                    extension: is_2019.then_some(AuthExtension2019 { imei, software_version }),
                })
            })
            .boxed(),
        params().prop_map(Body::SetParams).boxed(),
        Just(Body::QueryAllParams).boxed(),
        (any::<u8>(), ascii(30))
            .prop_map(|(command, param)| Body::TerminalControl(TerminalControl { command, param }))
            .boxed(),
        prop::collection::vec(any::<u32>(), 0..10)
            .prop_map(Body::QueryParams)
            .boxed(),
        (any::<u16>(), params())
            .prop_map(|(reply_serial, params)| Body::ParamsReply(ParamsReply { reply_serial, params }))
            .boxed(),
        Just(Body::QueryAttributes).boxed(),
        (
            any::<u16>(),
            fixed(5),
            fixed(if is_2019 { 30 } else { 20 }),
            fixed(if is_2019 { 30 } else { 7 }),
            prop::array::uniform10(any::<u8>()),
            bytes(10),
            bytes(10),
            any::<u8>(),
            any::<u8>(),
        )
            .prop_map(
                move |(
                    terminal_type,
                    manufacturer,
                    model,
                    terminal_id,
                    iccid,
                    hardware_version,
                    firmware_version,
                    gnss,
                    comm,
                )| {
                    Body::Attributes(Attributes {
                        edition: header_edition,
                        terminal_type,
                        manufacturer,
                        model,
                        terminal_id,
                        iccid,
                        hardware_version,
                        firmware_version,
                        gnss,
                        comm,
                    })
                },
            )
            .boxed(),
        (
            any::<u8>(),
            ascii(6).prop_map(|mut m| {
                m.truncate(5);
                m
            }),
            ascii(10),
            bytes(200),
        )
            .prop_map(|(upgrade_type, manufacturer, version, package)| {
                let mut manufacturer = manufacturer;
                manufacturer.resize(5, 0);
                Body::Upgrade(Upgrade {
                    upgrade_type,
                    manufacturer,
                    version,
                    package,
                })
            })
            .boxed(),
        (any::<u8>(), any::<u8>())
            .prop_map(|(upgrade_type, result)| Body::UpgradeResult(UpgradeResult { upgrade_type, result }))
            .boxed(),
        location(header_edition).prop_map(Body::Location).boxed(),
        Just(Body::QueryLocation).boxed(),
        (any::<u16>(), location(header_edition))
            .prop_map(|(reply_serial, location)| Body::LocationQueryReply(LocationReply { reply_serial, location }))
            .boxed(),
        (any::<u16>(), any::<u32>())
            .prop_map(|(interval, validity)| Body::TemporaryTracking(TemporaryTracking { interval, validity }))
            .boxed(),
        (any::<u8>(), any::<u8>(), ascii(30))
            .prop_map(move |(flags, text_type, text)| {
                Body::TextMessage(TextMessage {
                    flags,
                    text_type: is_2019.then_some(text_type),
                    text,
                })
            })
            .boxed(),
        (any::<u8>(), any::<u16>(), bytes(10))
            .prop_map(move |(flags, count, items)| {
                Body::VehicleControl(if is_2019 {
                    VehicleControl::Controls { count, items }
                } else {
                    VehicleControl::Flags(flags)
                })
            })
            .boxed(),
        (any::<u16>(), location(header_edition))
            .prop_map(|(reply_serial, location)| Body::VehicleControlReply(LocationReply { reply_serial, location }))
            .boxed(),
        (any::<u8>(), prop::collection::vec(location(header_edition), 0..3))
            .prop_map(|(location_type, items)| Body::BatchLocation(BatchLocation { location_type, items }))
            .boxed(),
        media_event().prop_map(Body::MediaEvent).boxed(),
        (media_event(), basic(), bytes(100))
            .prop_map(move |(event, location, data)| {
                Body::MediaUpload(MediaUpload {
                    event,
                    location: (edition != Edition::V2011).then_some(location),
                    data,
                })
            })
            .boxed(),
        (any::<u32>(), prop::collection::vec(any::<u16>(), 0..10))
            .prop_map(|(media_id, retransmit)| Body::MediaUploadReply(MediaUploadReply { media_id, retransmit }))
            .boxed(),
        (any::<u8>(), bytes(40))
            .prop_map(|(kind, data)| Body::UplinkPassThrough(PassThrough { kind, data }))
            .boxed(),
        (any::<u8>(), bytes(40))
            .prop_map(|(kind, data)| Body::DownlinkPassThrough(PassThrough { kind, data }))
            .boxed(),
        bytes(40).prop_map(Body::CompressedUpload).boxed(),
    ];
    if raw_id_ok {
        choices.push(bytes(40).prop_map(|b| Body::Raw(b.into())).boxed());
    }
    prop::strategy::Union::new(choices).boxed()
}

fn media_event() -> impl Strategy<Value = MediaEvent> {
    (any::<u32>(), any::<[u8; 4]>()).prop_map(|(media_id, [media_type, format, event, channel])| MediaEvent {
        media_id,
        media_type,
        format,
        event,
        channel,
    })
}
