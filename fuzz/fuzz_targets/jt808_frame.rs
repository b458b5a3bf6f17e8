//! Fuzz target over the JT/T 808 stream decoder.
//!
//! Input: the first byte picks where the stream is cut into two reads; the rest is the stream.
//! Checks, for every frame the decoder yields: re-encoding and decoding again gives the same packet;
//! in every edition, a body that decodes re-encodes to the same bytes and maps to JSON; subpackages
//! go through a reassembler. The same bytes are also tried as a cloud JSON command. Nothing may
//! panic, and the caller's buffer never holds more than one capped frame after `Ok(None)`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roadedge::protocol::jt808::{
    downlink_from_json, DownlinkContext, Edition, FrameDecoder, Message, Packet, Phone,
    Reassembler, ReassemblyLimits, TextEncoding, MAX_ESCAPED_CONTENT_LEN,
};

fn check_packet(packet: &Packet, reassembler: &mut Reassembler, now_ms: u64) {
    let bytes = packet.to_bytes().expect("a decoded packet re-encodes");
    let mut buf = BytesMut::from(&bytes[..]);
    let again = FrameDecoder::new()
        .decode(&mut buf)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is whole");
    assert_eq!(&again, packet);
    assert!(buf.is_empty());
    for edition in [Edition::V2011, Edition::V2013, Edition::V2019] {
        if let Ok(message) = Message::decode(packet, edition) {
            let body = message.encode_body().expect("a decoded body re-encodes");
            assert_eq!(body, packet.body.to_vec());
            let json = message.to_json(TextEncoding::Gbk).expect("json");
            let ctx = DownlinkContext {
                phone: packet.header.phone,
                protocol_version: packet.header.protocol_version,
                serial: 0,
                text: TextEncoding::Gbk,
            };
            let _ = downlink_from_json(&json, &ctx);
        }
    }
    if packet.header.subpackage.is_some() {
        if let Ok(roadedge::protocol::jt808::PushOutcome::Complete(done)) =
            reassembler.push(packet, now_ms)
        {
            let _ = Message::from_parts(done.header, &done.body, Edition::V2013);
        }
        let _ = reassembler.poll_timeouts(now_ms);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, stream)) = data.split_first() else {
        return;
    };
    let cut = usize::from(*selector) % (stream.len() + 1);
    let (first, second) = stream.split_at(cut);
    let mut decoder = FrameDecoder::new();
    let mut reassembler = Reassembler::new(ReassemblyLimits::default());
    let mut buf = BytesMut::new();
    let mut now_ms = 0u64;
    for read in [first, second] {
        buf.extend_from_slice(read);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    now_ms += 20_000;
                    check_packet(&packet, &mut reassembler, now_ms);
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        assert!(buf.len() <= MAX_ESCAPED_CONTENT_LEN + 1);
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(stream) {
        let ctx = DownlinkContext {
            phone: Phone::parse("13800138000").expect("valid phone"),
            protocol_version: Some(1),
            serial: 1,
            text: TextEncoding::Gbk,
        };
        let _ = downlink_from_json(&json, &ctx);
    }
});
