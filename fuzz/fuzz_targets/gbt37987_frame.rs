//! Fuzz target over the GB/T 37987 stream decoders: TCP framing and serial deframing in both
//! dialects, fed the input in chunks, and for every frame decode -> encode -> decode consistency
//! (decoding is lossless, so encode(decode(bytes)) must equal the bytes).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roadedge::protocol::gbt37987::dialect::ALL_DIALECTS;
use roadedge::protocol::gbt37987::json::message_to_json;
use roadedge::protocol::gbt37987::report::tag_reports;
use roadedge::protocol::gbt37987::{Message, SerialDeframer, TcpFrameDecoder};

/// Largest number of decoder calls per input: each call consumes bytes or waits for more.
const MAX_CALLS: usize = 100_000;

fn check_message(bytes: &[u8]) {
    for dialect in ALL_DIALECTS {
        let Ok(message) = Message::decode(bytes, dialect) else {
            continue;
        };
        let encoded = message
            .encode(dialect)
            .expect("a decoded message re-encodes");
        assert_eq!(
            encoded, bytes,
            "encode(decode(bytes)) != bytes in {dialect}"
        );
        let again = Message::decode(&encoded, dialect).expect("re-encoded bytes decode");
        assert_eq!(again, message, "decode(encode(m)) != m in {dialect}");
        let _ = message_to_json(&message);
        let _ = tag_reports(&message);
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so split reads are exercised.
    let (chunk, stream) = match data.split_first() {
        Some((first, rest)) => (usize::from(*first % 32) + 1, rest),
        None => return,
    };

    let mut tcp = TcpFrameDecoder::with_max_body_len(4096);
    let mut buf = BytesMut::new();
    let mut calls = 0;
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            calls += 1;
            assert!(calls < MAX_CALLS, "TCP decoder makes no progress");
            let before = buf.len();
            match tcp.decode(&mut buf) {
                Ok(Some(frame)) => check_message(&frame),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(_) => assert!(buf.len() < before, "an error consumed nothing"),
            }
        }
    }

    for dialect in ALL_DIALECTS {
        let mut serial = SerialDeframer::with_max_frame_len(dialect, 4096);
        let mut buf = BytesMut::new();
        let mut calls = 0;
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                calls += 1;
                assert!(calls < MAX_CALLS, "serial deframer makes no progress");
                let before = buf.len();
                match serial.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        assert!(buf.len() < before);
                        check_message(&frame.message);
                    }
                    Ok(None) => break,
                    Err(_) => assert!(buf.len() < before, "an error consumed nothing"),
                }
            }
        }
    }

    check_message(stream);
});
