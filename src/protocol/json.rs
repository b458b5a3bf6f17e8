//! Direct JSON writing for the codecs' upstream payloads: objects, arrays, integers and strings
//! go straight into a byte buffer, with no `serde_json::Value` tree in between.
//!
//! Owns: [`JsonWriter`] and its output rule, which is exactly what `serde_json::to_vec` makes of
//! the equivalent `Value` (this crate builds serde_json without `preserve_order`, so a `Value`
//! object is a `BTreeMap`): members in byte order of their keys, a repeated key keeping the
//! value written last, compact separators, and serde_json's string escapes. Members written in
//! key order cost nothing extra; an object whose members arrive out of order, or that repeats a
//! key, is reordered when it closes (correct, but slower: the hot paths write in order, and
//! [`JsonWriter::reordered_objects`] lets a test check that they do).
//! Must not: fail, allocate per member, or accept keys that would need escaping.

use serde_json::Value;

/// An object being written: where it starts, the last key seen, and whether the keys so far
/// came in strictly increasing order.
#[derive(Debug, Clone, Copy)]
struct OpenObject {
    /// Offset of the `{`.
    start: usize,
    /// Byte range of the last key (without quotes) in the output.
    last_key: Option<(usize, usize)>,
    /// True while every key was greater than the one before.
    in_order: bool,
    /// A string member to place before the first greater key (or at the end).
    deferred: Option<(&'static str, &'static str)>,
}

/// Writes one JSON document (or several values) onto the end of a byte buffer.
#[derive(Debug)]
pub struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
    /// A value was just completed at this level, so the next one needs a comma.
    comma: bool,
    objects: Vec<OpenObject>,
    reordered: u32,
}

/// Room for the object nesting of every payload the codecs write, so the stack never grows.
const USUAL_DEPTH: usize = 8;

impl<'a> JsonWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            out,
            comma: false,
            objects: Vec::with_capacity(USUAL_DEPTH),
            reordered: 0,
        }
    }

    /// How many objects had to be reordered because their members came out of key order.
    pub fn reordered_objects(&self) -> u32 {
        self.reordered
    }

    fn separate(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }

    /// Opens an object (as a value: after a key, as an array element, or at the top).
    pub fn begin_object(&mut self) {
        self.separate();
        self.objects.push(OpenObject {
            start: self.out.len(),
            last_key: None,
            in_order: true,
            deferred: None,
        });
        self.out.push(b'{');
        self.comma = false;
    }

    /// Closes the innermost object, placing a deferred member and restoring key order first.
    pub fn end_object(&mut self) {
        if let Some((key, value)) = self.objects.last_mut().and_then(|o| o.deferred.take()) {
            self.member_str(key, value);
        }
        if let Some(object) = self.objects.pop() {
            if !object.in_order {
                self.reorder(object.start);
                self.reordered = self.reordered.saturating_add(1);
            }
        }
        self.out.push(b'}');
        self.comma = true;
    }

    /// Opens an array.
    pub fn begin_array(&mut self) {
        self.separate();
        self.out.push(b'[');
        self.comma = false;
    }

    /// Closes the innermost array.
    pub fn end_array(&mut self) {
        self.out.push(b']');
        self.comma = true;
    }

    /// Starts a member of the innermost object; the value follows.
    pub fn key(&mut self, key: &str) {
        debug_assert!(
            !key.bytes().any(needs_escape),
            "JSON keys must not need escaping: {key:?}"
        );
        let deferred = self
            .objects
            .last()
            .and_then(|o| o.deferred)
            .filter(|(deferred, _)| key.as_bytes() >= deferred.as_bytes());
        if let Some((deferred_key, value)) = deferred {
            if let Some(object) = self.objects.last_mut() {
                object.deferred = None;
            }
            self.member_str(deferred_key, value);
        }
        self.separate();
        self.out.push(b'"');
        let start = self.out.len();
        self.out.extend_from_slice(key.as_bytes());
        let end = self.out.len();
        self.out.extend_from_slice(b"\":");
        self.comma = false;
        let Self { out, objects, .. } = self;
        if let Some(object) = objects.last_mut() {
            let previous = object.last_key.and_then(|(s, e)| out.get(s..e));
            if previous.is_some_and(|previous| previous >= key.as_bytes()) {
                object.in_order = false;
            }
            object.last_key = Some((start, end));
        }
    }

    /// A string member `key` that belongs before the first key not less than it (a later
    /// member with the same key replaces it); written when that key comes, or when the object
    /// closes. Lets a caller put a constant member (such as
    /// a `"Type"` name) in its sorted place without knowing the other keys.
    pub fn defer_member_str(&mut self, key: &'static str, value: &'static str) {
        if let Some(object) = self.objects.last_mut() {
            object.deferred = Some((key, value));
        }
    }

    /// An unsigned integer value.
    pub fn u64(&mut self, value: u64) {
        self.separate();
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.comma = true;
    }

    /// A signed integer value.
    pub fn i64(&mut self, value: i64) {
        self.separate();
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.comma = true;
    }

    /// A boolean value.
    pub fn bool(&mut self, value: bool) {
        self.separate();
        self.out.extend_from_slice(if value { b"true" } else { b"false" });
        self.comma = true;
    }

    /// `null`.
    pub fn null(&mut self) {
        self.separate();
        self.out.extend_from_slice(b"null");
        self.comma = true;
    }

    /// A string value, escaped as serde_json escapes it.
    pub fn str(&mut self, value: &str) {
        self.separate();
        write_escaped(self.out, value);
        self.comma = true;
    }

    /// A string value built by `write` straight into the output (for hex, base64 and other
    /// renderings made only of characters that need no escaping).
    pub fn str_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.separate();
        self.out.push(b'"');
        let start = self.out.len();
        write(self.out);
        debug_assert!(
            self.out
                .get(start..)
                .is_some_and(|s| !s.iter().any(|b| needs_escape(*b)) && std::str::from_utf8(s).is_ok()),
            "str_with wrote bytes that need escaping"
        );
        self.out.push(b'"');
        self.comma = true;
    }

    /// Any `serde_json::Value` (for parts that are built as values anyway).
    pub fn value(&mut self, value: &Value) {
        self.separate();
        // Writing a Value into a Vec cannot fail: Vec's io::Write never errors and a Value's
        // keys are always strings.
        let _ = serde_json::to_writer(&mut *self.out, value);
        self.comma = true;
    }

    /// `key` and an unsigned integer.
    pub fn member_u64(&mut self, key: &str, value: impl Into<u64>) {
        self.key(key);
        self.u64(value.into());
    }

    /// `key` and a string.
    pub fn member_str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.str(value);
    }

    /// Rewrites the members of the object opened at `start` (not yet closed) in key order,
    /// keeping the last of members with equal keys, as a `BTreeMap` would hold them.
    fn reorder(&mut self, start: usize) {
        let body_start = start + 1;
        let Some(body) = self.out.get(body_start..) else {
            return;
        };
        let mut members = split_members(body);
        members.sort_by(|a, b| member_key(body, *a).cmp(member_key(body, *b)));
        let mut sorted = Vec::with_capacity(body.len());
        for (index, member) in members.iter().enumerate() {
            let replaced = members
                .get(index + 1)
                .is_some_and(|next| member_key(body, *next) == member_key(body, *member));
            if replaced {
                continue;
            }
            if !sorted.is_empty() {
                sorted.push(b',');
            }
            sorted.extend_from_slice(body.get(member.0..member.1).unwrap_or_default());
        }
        self.out.truncate(body_start);
        self.out.extend_from_slice(&sorted);
    }
}

/// Byte ranges of the top-level members of an object body (the bytes after its `{`), split at
/// commas outside strings and nested values.
fn split_members(body: &[u8]) -> Vec<(usize, usize)> {
    let mut members = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut member_start) = (0usize, false, false, 0usize);
    for (index, byte) in body.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                members.push((member_start, index));
                member_start = index + 1;
            }
            _ => {}
        }
    }
    if member_start < body.len() {
        members.push((member_start, body.len()));
    }
    members
}

/// The key of a member `"key":value` (keys never contain escapes).
fn member_key(body: &[u8], (start, end): (usize, usize)) -> &[u8] {
    let member = body.get(start..end).unwrap_or_default();
    let after_quote = member.get(1..).unwrap_or_default();
    let len = after_quote.iter().position(|b| *b == b'"').unwrap_or(after_quote.len());
    after_quote.get(..len).unwrap_or_default()
}

/// Appends the standard base64 (with padding) of `bytes`: what EMQX publishes for blobs in both
/// vehicle protocols.
pub fn base64_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(bytes.len().div_ceil(3).saturating_mul(4));
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let group = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextet = |shift: u32| ALPHABET[((group >> shift) & 0x3F) as usize];
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { b'=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { b'=' });
    }
}

/// The order in which to write members with these keys: indexes into `keys`, by key. For
/// record tables known at compile time; a repeated key fails the build.
pub const fn key_order<const N: usize>(keys: &[&str]) -> [usize; N] {
    assert!(keys.len() == N, "key_order: N must be the number of keys");
    let mut order = [0usize; N];
    let mut index = 0;
    while index < N {
        order[index] = index;
        index += 1;
    }
    // Insertion sort: the tables are a few keys long.
    let mut sorted = 1;
    while sorted < N {
        let mut at = sorted;
        while at > 0 && key_less(keys[order[at]], keys[order[at - 1]]) {
            let moved = order[at];
            order[at] = order[at - 1];
            order[at - 1] = moved;
            at -= 1;
        }
        sorted += 1;
    }
    let mut index = 1;
    while index < N {
        assert!(
            key_less(keys[order[index - 1]], keys[order[index]]),
            "repeated JSON key in a record"
        );
        index += 1;
    }
    order
}

/// Byte-wise `a < b` (the order of a `BTreeMap<String, _>`), usable in constants.
const fn key_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut index = 0;
    while index < a.len() && index < b.len() {
        if a[index] != b[index] {
            return a[index] < b[index];
        }
        index += 1;
    }
    a.len() < b.len()
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Writes `"value"` with serde_json's escapes: `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`, and
/// `\u00xx` (lowercase hex) for the other control characters; everything else as it is.
pub fn write_escaped(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut run_start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(bytes.get(run_start..index).unwrap_or_default());
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x0D => out.extend_from_slice(b"\\r"),
            control => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(control >> 4)],
                HEX[usize::from(control & 0x0F)],
            ]),
        }
        run_start = index + 1;
    }
    out.extend_from_slice(bytes.get(run_start..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn written(write: impl FnOnce(&mut JsonWriter<'_>)) -> (String, u32) {
        let mut out = Vec::new();
        let mut w = JsonWriter::new(&mut out);
        write(&mut w);
        let reordered = w.reordered_objects();
        (String::from_utf8(out).unwrap(), reordered)
    }

    #[test]
    fn members_in_key_order_are_written_as_they_come() {
        let (text, reordered) = written(|w| {
            w.begin_object();
            w.member_u64("a", 1u8);
            w.key("b");
            w.begin_array();
            w.u64(2);
            w.begin_object();
            w.end_object();
            w.str("x");
            w.end_array();
            w.key("c");
            w.null();
            w.end_object();
        });
        assert_eq!(text, r#"{"a":1,"b":[2,{},"x"],"c":null}"#);
        assert_eq!(reordered, 0);
    }

    #[test]
    fn members_out_of_order_and_repeated_keys_come_out_as_serde_json_writes_a_map() {
        let (text, reordered) = written(|w| {
            w.begin_object();
            w.member_str("zeta", "a,b}\"");
            w.key("alpha");
            w.begin_object();
            w.member_u64("y", 1u8);
            w.member_u64("x", 2u8);
            w.end_object();
            w.member_u64("mid", 3u8);
            w.member_u64("mid", 4u8);
            w.end_object();
        });
        let value = json!({"zeta": "a,b}\"", "alpha": {"y": 1, "x": 2}, "mid": 4});
        assert_eq!(text, serde_json::to_string(&value).unwrap());
        assert_eq!(reordered, 2);
    }

    #[test]
    fn a_deferred_member_lands_in_its_sorted_place() {
        let (text, reordered) = written(|w| {
            w.begin_array();
            w.begin_object();
            w.defer_member_str("Type", "Vehicle");
            w.member_u64("Speed", 1u8);
            w.member_u64("Voltage", 2u8);
            w.end_object();
            w.begin_object();
            w.defer_member_str("Type", "Engine");
            w.member_u64("A", 1u8);
            w.end_object();
            w.end_array();
        });
        assert_eq!(
            text,
            r#"[{"Speed":1,"Type":"Vehicle","Voltage":2},{"A":1,"Type":"Engine"}]"#
        );
        assert_eq!(reordered, 0);
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let all: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain(['é', '京', '\u{FFFD}'])
            .collect();
        let mut out = Vec::new();
        write_escaped(&mut out, &all);
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
    }

    #[test]
    fn numbers_booleans_and_values_match_serde_json() {
        let (text, _) = written(|w| {
            w.begin_array();
            w.u64(u64::MAX);
            w.i64(i64::MIN);
            w.bool(true);
            w.value(&json!({"b": [1, "2"], "a": null}));
            w.end_array();
        });
        let value = json!([u64::MAX, i64::MIN, true, {"b": [1, "2"], "a": null}]);
        assert_eq!(text, serde_json::to_string(&value).unwrap());
    }
}
