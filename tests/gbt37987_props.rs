//! Property tests over the whole code table in both dialects: for every message and parameter row,
//! values generated from the row satisfy decode(encode(m)) == m, encode(decode(bytes)) == bytes
//! (also after corrupting bytes), and the generic JSON maps back to the same message.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use roadedge::protocol::gbt37987::dialect::ALL_DIALECTS;
use roadedge::protocol::gbt37987::json::{body_from_json, body_to_json, param_from_json, param_to_json};
use roadedge::protocol::gbt37987::serial::encode_serial_frame;
use roadedge::protocol::gbt37987::table::{self, Cardinality, FieldType, MessageDef, ParamDef, MESSAGES, PARAMETERS};
use roadedge::protocol::gbt37987::{
    Body, Content, Dialect, Header, Message, Parameter, SerialDeframer, TcpFrameDecoder, Value,
};

const CASES_PER_ROW: u32 = 48;

/// Codes no row uses (vendor space), for unknown parameters that must stay raw.
const UNKNOWN_CODES: std::ops::RangeInclusive<u16> = 0xF000..=0xFFFF;

fn flag_mask(names: usize, width: u32) -> u16 {
    (0..names as u32).fold(0, |mask, i| mask | 1 << (width - 1 - i))
}

fn value_strategy(ty: FieldType) -> BoxedStrategy<Value> {
    match ty {
        FieldType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        FieldType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        FieldType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        FieldType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        FieldType::S8 => any::<i8>().prop_map(Value::S8).boxed(),
        FieldType::S16 => any::<i16>().prop_map(Value::S16).boxed(),
        FieldType::S32 => any::<i32>().prop_map(Value::S32).boxed(),
        FieldType::S64 => any::<i64>().prop_map(Value::S64).boxed(),
        FieldType::U8v => vec(any::<u8>(), 0..10).prop_map(Value::Bytes).boxed(),
        FieldType::U16v => vec(any::<u16>(), 0..6).prop_map(Value::Words).boxed(),
        FieldType::U32v => vec(any::<u32>(), 0..4).prop_map(Value::Dwords).boxed(),
        FieldType::Utf8v => "\\PC{0,6}".prop_map(|s: String| Value::Text(s.into_bytes())).boxed(),
        FieldType::U1v => (0u64..80)
            .prop_flat_map(|bits| {
                vec(any::<u8>(), bits.div_ceil(8) as usize).prop_map(move |data| Value::Bits { bit_count: bits, data })
            })
            .boxed(),
        // Only the named bits: reserved bits are not shown in JSON.
        FieldType::Flags8(names) => {
            let mask = flag_mask(names.len(), 8) as u8;
            any::<u8>().prop_map(move |b| Value::U8(b & mask)).boxed()
        }
        FieldType::Flags16(names) => {
            let mask = flag_mask(names.len(), 16);
            any::<u16>().prop_map(move |b| Value::U16(b & mask)).boxed()
        }
    }
}

fn count_range(card: Cardinality) -> std::ops::RangeInclusive<usize> {
    match card {
        Cardinality::One => 1..=1,
        Cardinality::Optional => 0..=1,
        Cardinality::Many => 0..=2,
        Cardinality::AtLeastOne => 1..=2,
    }
}

fn unknown_param() -> impl Strategy<Value = Parameter> {
    (UNKNOWN_CODES, vec(any::<u8>(), 0..8)).prop_map(|(code, bytes)| Parameter {
        code,
        body: Content::Raw(bytes),
    })
}

/// A body for a row: its fields, its sub-parameters per cardinality, and maybe one unknown
/// parameter at the end (never inside a one-integer row, whose content is the integer alone).
fn body_strategy(
    fields: &'static [table::FieldDef],
    refs: &'static [table::ParamRef],
    allow_unknown: bool,
) -> BoxedStrategy<Body> {
    let values: Vec<BoxedStrategy<Value>> = fields.iter().map(|f| value_strategy(f.ty)).collect();
    let groups: Vec<BoxedStrategy<Vec<Parameter>>> = refs
        .iter()
        .map(|r| {
            let child = table::param_by_name(r.name).expect("referenced row exists");
            vec(param_strategy(child), count_range(r.card)).boxed()
        })
        .collect();
    let unknown = if allow_unknown {
        option::of(unknown_param()).boxed()
    } else {
        Just(None).boxed()
    };
    (values, groups, unknown)
        .prop_map(|(fields, groups, unknown)| {
            let mut params: Vec<Parameter> = groups.into_iter().flatten().collect();
            params.extend(unknown);
            Body::new(fields, params)
        })
        .boxed()
}

fn param_strategy(def: &'static ParamDef) -> BoxedStrategy<Parameter> {
    let code = def.code;
    body_strategy(def.fields, def.params, def.sole_integer().is_none())
        .prop_map(move |body| Parameter {
            code,
            body: Content::Decoded(body),
        })
        .boxed()
}

fn message_strategy(def: &'static MessageDef) -> BoxedStrategy<Message> {
    let code = def.code;
    (
        any::<[u8; 8]>(),
        any::<u32>(),
        body_strategy(def.fields, def.params, true),
    )
        .prop_map(move |(sn, number, body)| Message {
            header: Header::new(sn, code, number),
            body: Content::Decoded(body),
        })
        .boxed()
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES_PER_ROW,
        failure_persistence: None,
        ..Config::default()
    })
}

fn for_every_message_row(check: impl Fn(Dialect, &Message) -> Result<(), TestCaseError>) {
    for def in MESSAGES {
        for dialect in ALL_DIALECTS {
            runner()
                .run(&message_strategy(def), |m| check(dialect, &m))
                .unwrap_or_else(|e| panic!("message {} ({}) in {dialect}: {e}", def.name, def.code));
        }
    }
}

#[test]
fn every_message_row_round_trips_decode_of_encode_in_both_dialects() {
    for_every_message_row(|dialect, m| {
        let bytes = m.encode(dialect).expect("generated message encodes");
        prop_assert_eq!(&Message::decode(&bytes, dialect).expect("decodes"), m);
        Ok(())
    });
}

#[test]
fn every_parameter_row_round_trips_decode_of_encode_in_both_dialects() {
    for def in PARAMETERS {
        for dialect in ALL_DIALECTS {
            runner()
                .run(&param_strategy(def), |p| {
                    let mut bytes = Vec::new();
                    p.encode(dialect, &mut bytes).expect("generated parameter encodes");
                    let (decoded, used) = Parameter::decode(&bytes, dialect).expect("decodes");
                    prop_assert_eq!(used, bytes.len());
                    prop_assert_eq!(decoded, p);
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("parameter {} ({}) in {dialect}: {e}", def.name, def.code));
        }
    }
}

#[test]
fn every_message_row_survives_corrupted_body_bytes_byte_exact() {
    for def in MESSAGES {
        for dialect in ALL_DIALECTS {
            let strategy = (
                message_strategy(def),
                vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            );
            runner()
                .run(&strategy, |(m, flips)| {
                    let mut bytes = m.encode(dialect).expect("encodes");
                    if bytes.len() > 19 {
                        let body_len = bytes.len() - 19;
                        for (at, byte) in flips {
                            bytes[19 + at.index(body_len)] = byte;
                        }
                    }
                    let decoded = Message::decode(&bytes, dialect).expect("length is intact");
                    prop_assert_eq!(decoded.encode(dialect).expect("re-encodes"), bytes.clone());
                    prop_assert_eq!(Message::decode(&bytes, dialect).expect("decodes"), decoded);
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("message {} ({}) in {dialect}: {e}", def.name, def.code));
        }
    }
}

#[test]
fn every_message_row_maps_to_json_and_back_to_the_same_body() {
    for_every_message_row(|_, m| {
        let name = m.name().expect("table row");
        let json = body_to_json(m);
        let back = body_from_json(name, &json).map_err(|e| TestCaseError::fail(format!("{e} in {json}")))?;
        prop_assert_eq!(&back, &m.body, "json was {}", json);
        Ok(())
    });
}

#[test]
fn every_parameter_row_maps_to_json_and_back() {
    for def in PARAMETERS {
        runner()
            .run(&param_strategy(def), |p| {
                let json = param_to_json(&p);
                let back =
                    param_from_json(def.name, &json).map_err(|e| TestCaseError::fail(format!("{e} in {json}")))?;
                prop_assert_eq!(back, p);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("parameter {} ({}): {e}", def.name, def.code));
    }
}

#[test]
fn every_message_row_survives_tcp_and_serial_framing_in_both_dialects() {
    for_every_message_row(|dialect, m| {
        let bytes = m.encode(dialect).expect("encodes");
        let mut stream = BytesMut::from(&bytes[..]);
        stream.extend_from_slice(&bytes);
        let mut tcp = TcpFrameDecoder::new();
        for _ in 0..2 {
            let frame = tcp.decode(&mut stream).expect("no error").expect("frame");
            prop_assert_eq!(&frame[..], &bytes[..]);
        }
        prop_assert!(stream.is_empty());

        let mut line = BytesMut::from(&encode_serial_frame(dialect, 0x01, 0x02, &bytes)[..]);
        let frame = SerialDeframer::new(dialect)
            .decode(&mut line)
            .expect("no error")
            .expect("frame");
        prop_assert_eq!(&frame.message[..], &bytes[..]);
        Ok(())
    });
}

proptest! {
    #[test]
    fn arbitrary_bodies_of_any_code_re_encode_byte_exact(
        code in prop_oneof![
            prop::sample::select(MESSAGES.iter().map(|m| m.code).collect::<Vec<_>>()),
            any::<u16>(),
        ],
        body in vec(any::<u8>(), 0..96),
        hb in any::<bool>(),
    ) {
        let dialect = if hb { Dialect::Hb2017 } else { Dialect::Gbt37987_2019 };
        let mut bytes = vec![0u8; 8];
        bytes.push(1);
        bytes.extend_from_slice(&code.to_be_bytes());
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(&body);
        let decoded = Message::decode(&bytes, dialect).expect("length is consistent");
        prop_assert_eq!(decoded.encode(dialect).expect("re-encodes"), bytes);
    }

    #[test]
    fn serial_frames_round_trip_any_message_bytes_and_addresses(
        src in any::<u8>(),
        dst in any::<u8>(),
        body in vec(prop_oneof![Just(0x7Eu8), Just(0x7Du8), any::<u8>()], 0..64),
        hb in any::<bool>(),
    ) {
        let dialect = if hb { Dialect::Hb2017 } else { Dialect::Gbt37987_2019 };
        let mut message = vec![0x42u8; 8];
        message.push(1);
        message.extend_from_slice(&0x7E7Du16.to_be_bytes());
        message.extend_from_slice(&(body.len() as u32).to_be_bytes());
        message.extend_from_slice(&0x7D7E_7E7Du32.to_be_bytes());
        message.extend_from_slice(&body);
        let frame = encode_serial_frame(dialect, src, dst, &message);
        prop_assert!(!frame[1..frame.len() - 1].contains(&0x7E));
        let mut buf = BytesMut::from(&frame[..]);
        let got = SerialDeframer::new(dialect).decode(&mut buf).expect("no error").expect("frame");
        prop_assert_eq!((got.src, got.dst), (src, dst));
        prop_assert_eq!(&got.message[..], &message[..]);
    }
}
