//! Fuzzes the GB/T 32960 stream decoder: arbitrary bytes fed in arbitrary chunk sizes must never
//! panic; every `Ok(None)` consumes nothing and every error consumes something; every decoded
//! frame renders as JSON, re-encodes to exactly the bytes it came from, and decodes again to
//! the same frame; error replies can always be built.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use roadedge::protocol::gbt32960::{decode_frame, FrameDecoder, Origin, ResponseFlag, Time};

fuzz_target!(|data: &[u8]| {
    // The first byte picks who sent the stream and how it is chopped into reads.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let origin = if control & 1 == 0 {
        Origin::Terminal
    } else {
        Origin::Platform
    };
    let chunk_len = usize::from(control >> 1).max(1);
    let mut decoder = FrameDecoder::new(origin);
    let mut buf = BytesMut::new();
    for chunk in stream.chunks(chunk_len) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let consumed = &before[..before.len() - buf.len()];
                    let _ = frame.to_json();
                    let encoded = frame.encode().expect("a decoded frame encodes");
                    assert_eq!(encoded, consumed, "re-encoding gives the original bytes");
                    let again = decode_frame(&encoded, origin).expect("re-encoded frame decodes");
                    assert_eq!(again, frame, "decode(encode(frame)) == frame");
                }
                Ok(None) => {
                    assert_eq!(buf, before, "needing more consumes nothing");
                    break;
                }
                Err(error) => {
                    assert!(buf.len() < before.len(), "an error always makes progress");
                    let _ = error.error_reply(ResponseFlag::ERROR, Time::default());
                }
            }
        }
    }
});
