//! Fuzz target over the cloud's downstream JSON for each protocol: what arrives on
//! `gbt32960/{vin}/dnstream`, `jt808/{phone}/{phone}/dn` and `gbt37987/{reader}/dn`.
//!
//! Input: the first byte picks the protocol (and edition or dialect); the rest is the payload as
//! the broker hands it over. Checks: nothing panics; a 32960 command that parses encodes into a
//! frame that decodes again; an 808 command that parses becomes a packet that encodes; a 37987
//! raw request body encodes in the dialect it was parsed for.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roadedge::protocol::gbt32960::{self, decode_frame, parse_downlink, Origin, Time, Vin};
use roadedge::protocol::gbt37987::{Dialect, Header, Message as ReaderMessage};
use roadedge::protocol::jt808::{downlink_from_json, DownlinkContext, Phone, TextEncoding};
use roadedge::reader::request::{self, Command, Request};
use roadedge::reader::rules::DesiredRules;

fn gbt32960(payload: &[u8], edition: gbt32960::Edition) {
    let vin = Vin::from_text("LSVNV2182E2100001");
    let now = Time { year: 26, month: 12, day: 3, hour: 12, minute: 0, second: 0 };
    if let Ok(frame) = parse_downlink(payload, vin, edition, now) {
        let bytes = frame.encode().expect("a parsed command encodes");
        decode_frame(&bytes, Origin::Platform).expect("an encoded command decodes");
    }
}

fn jt808(payload: &[u8], protocol_version: Option<u8>) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let ctx = DownlinkContext {
        phone: Phone::parse("13800138000").expect("valid phone"),
        protocol_version,
        serial: 7,
        text: TextEncoding::Gbk,
    };
    if let Ok(message) = downlink_from_json(&json, &ctx) {
        let _ = message.to_packet();
    }
}

fn gbt37987(payload: &[u8], dialect: Dialect) {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    if let Ok(Command::Link(Request::Raw { code, body })) = request::parse(&json, dialect) {
        let message = ReaderMessage { header: Header::new([1; 8], code, 1), body };
        let _ = message.encode(dialect);
    }
    let _ = DesiredRules::from_json(&json, &[dialect]);
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => gbt32960(payload, gbt32960::Edition::V2016),
        1 => gbt32960(payload, gbt32960::Edition::V2025),
        2 => jt808(payload, None),
        3 => jt808(payload, Some(1)),
        4 => gbt37987(payload, Dialect::Gbt37987_2019),
        _ => gbt37987(payload, Dialect::Hb2017),
    }
});
