//! EMQX-compatible JSON for decoded frames, and the text/hex/base64 renderings it uses.
//!
//! Owns: the envelope `{"Cmd","Encrypt","Vin","Data"}` (facts sheet §4.1), how STRING fields
//! become JSON text (GB 18030, padding kept), uppercase hex for keys and signatures, base64 for
//! custom data, and the `"0x01"`-style parameter keys.
//! Must not: scale values or remove offsets (EMQX publishes raw wire integers), or add an edge
//! envelope (the server adds `"Edge"`).
//!
//! Data units EMQX never publishes get documented shapes of their own:
//! * encrypted data units (encryption byte not 0x01/0xFE/0xFF): `{"Ciphertext": "<HEX>"}`, the
//!   cipher being the top-level `"Encrypt"`. EMQX has no shape for this (it parses ciphertext
//!   as plain text, facts sheet §4.4).
//! * platform replies (`Body::Ack`): `{"Time"?, "Echo"?: "<HEX>"}`.
//! * data units of unknown commands: `{"Raw": "<HEX>"}`.

use serde_json::{Map, Value};

use super::frame::Frame;

/// Builds the EMQX payload `{"Cmd","Encrypt","Vin","Data"}` for a frame. `Vin` is the raw 17
/// bytes as text (padding kept, as EMQX publishes it).
pub fn frame_to_json(frame: &Frame) -> Value {
    let mut map = Map::new();
    map.insert("Cmd".to_owned(), Value::from(frame.command.0));
    map.insert("Encrypt".to_owned(), Value::from(frame.encryption.0));
    map.insert("Vin".to_owned(), text_value(&frame.vin.0));
    map.insert("Data".to_owned(), frame.body.to_json());
    Value::Object(map)
}

/// Decodes a STRING field: ASCII per GB/T 1988, Chinese text per GB 18030 (a superset of
/// ASCII). NUL padding is kept; invalid sequences become U+FFFD.
pub fn decode_text(bytes: &[u8]) -> String {
    let (text, _, _) = encoding_rs::GB18030.decode(bytes);
    text.into_owned()
}

/// Encodes text for a STRING field (GB 18030; ASCII stays ASCII).
pub fn encode_text(text: &str) -> Vec<u8> {
    let (bytes, _, _) = encoding_rs::GB18030.encode(text);
    bytes.into_owned()
}

pub(crate) fn text_value(bytes: &[u8]) -> Value {
    Value::String(decode_text(bytes))
}

/// Uppercase hex without separators (EMQX renders keys and signatures this way).
pub fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0F] {
            out.push(char::from(DIGITS[usize::from(nibble)]));
        }
    }
    out
}

/// Standard base64 with padding (what Erlang's `base64:encode/1` produces for `CustomData`).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3).saturating_mul(4));
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let group = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let symbols = chunk.len() + 1;
        for index in 0..4 {
            if index < symbols {
                let sextet = (group >> (18 - 6 * index)) & 0x3F;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `"0x01"`-style key of a parameter id (two uppercase hex digits, as EMQX writes them).
pub fn param_key(id: u8) -> String {
    format!("0x{id:02X}")
}
