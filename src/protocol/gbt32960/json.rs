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
use crate::protocol::json::JsonWriter;

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

/// Writes the EMQX payload of `frame` onto the end of `out`: the same bytes as
/// `serde_json::to_vec(&frame_to_json(frame))`, without the `Value` tree.
pub fn write_frame_json(frame: &Frame, out: &mut Vec<u8>) {
    let mut w = JsonWriter::new(out);
    frame_json(frame, &mut w);
}

/// The EMQX payload of `frame` as a member-ordered JSON object (`Cmd, Data, Encrypt, Vin`).
pub(crate) fn frame_json(frame: &Frame, w: &mut JsonWriter<'_>) {
    w.begin_object();
    w.member_u64("Cmd", frame.command.0);
    w.key("Data");
    frame.body.write_json(w);
    w.member_u64("Encrypt", frame.encryption.0);
    w.key("Vin");
    write_text(w, &frame.vin.0);
    w.end_object();
}

/// A STRING field as a JSON string: ASCII as it is, anything else decoded as GB 18030 (the
/// same text [`decode_text`] gives).
pub(crate) fn write_text(w: &mut JsonWriter<'_>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        // GB 18030 maps ASCII to itself, and no BOM is ASCII.
        Ok(text) if bytes.is_ascii() => w.str(text),
        _ => w.str(&decode_text(bytes)),
    }
}

/// Uppercase hex of `bytes` as a JSON string.
pub(crate) fn write_hex_upper(w: &mut JsonWriter<'_>, bytes: &[u8]) {
    w.str_with(|out| hex_upper_into(out, bytes));
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

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Uppercase hex without separators (EMQX renders keys and signatures this way).
pub fn hex_upper(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
    hex_upper_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the uppercase hex of `bytes`.
pub(crate) fn hex_upper_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len().saturating_mul(2));
    for byte in bytes {
        out.push(HEX_UPPER[usize::from(byte >> 4)]);
        out.push(HEX_UPPER[usize::from(byte & 0x0F)]);
    }
}

/// Appends `value` in uppercase hex, zero-padded to at least `digits` digits (`{:0digits$X}`).
pub(crate) fn hex_upper_u32_into(out: &mut Vec<u8>, value: u32, digits: usize) {
    let significant = (32 - value.leading_zeros()).div_ceil(4).max(1) as usize;
    for _ in significant..digits {
        out.push(b'0');
    }
    for index in (0..significant).rev() {
        out.push(HEX_UPPER[((value >> (4 * index)) & 0x0F) as usize]);
    }
}

/// Standard base64 with padding (what Erlang's `base64:encode/1` produces for `CustomData`).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3).saturating_mul(4));
    base64_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the standard base64 (with padding) of `bytes`.
pub(crate) use crate::protocol::json::base64_into;

/// `"0x01"`-style key of a parameter id (two uppercase hex digits, as EMQX writes them).
pub fn param_key(id: u8) -> String {
    format!("0x{id:02X}")
}

/// [`param_key`] without allocating: the four ASCII bytes of the key.
pub(crate) fn param_key_bytes(id: u8) -> [u8; 4] {
    [
        b'0',
        b'x',
        HEX_UPPER[usize::from(id >> 4)],
        HEX_UPPER[usize::from(id & 0x0F)],
    ]
}
