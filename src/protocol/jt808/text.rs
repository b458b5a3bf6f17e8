//! Text and blob conversions for the JSON mapping.
//!
//! Owns the STRING encoding choice (GBK per the standard, UTF-8 for terminals that send it) and the
//! base64 form EMQX uses for raw blobs. Typed messages keep strings as wire bytes; only the JSON
//! layer converts, so a round trip never depends on the encoding. Must not guess encodings.

use std::borrow::Cow;

/// How STRING fields are converted to and from JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TextEncoding {
    /// GBK, the standard's encoding (the default).
    #[default]
    Gbk,
    /// UTF-8, for terminals that ignore the standard.
    Utf8,
}

impl TextEncoding {
    /// Wire bytes to text; undecodable sequences become U+FFFD rather than failing, because the
    /// frame is already accepted and the raw bytes stay in the typed message.
    pub fn decode<'a>(self, bytes: &'a [u8]) -> Cow<'a, str> {
        match self {
            TextEncoding::Gbk => encoding_rs::GBK.decode_without_bom_handling(bytes).0,
            TextEncoding::Utf8 => String::from_utf8_lossy(bytes),
        }
    }

    /// Text to wire bytes; `None` when GBK cannot represent a character (the caller reports it
    /// instead of sending HTML character references to a terminal).
    pub fn encode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            TextEncoding::Gbk => {
                let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
                if unmappable {
                    None
                } else {
                    Some(bytes.into_owned())
                }
            }
            TextEncoding::Utf8 => Some(text.as_bytes().to_vec()),
        }
    }
}

/// Standard base64 with padding (what EMQX publishes for blobs).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    crate::protocol::json::base64_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Decodes standard base64; padding is optional, whitespace and other characters are rejected.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in trimmed.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    // A lone sextet cannot carry a byte, and leftover bits must be zero in canonical base64.
    if bits >= 6 || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}
