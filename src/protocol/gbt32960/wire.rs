//! Bounds-checked reading and writing of GB/T 32960 wire primitives (BYTE, WORD, DWORD, fixed
//! strings, counted lists, time).
//!
//! Owns: the `Reader` cursor every body parser uses, the `WireField` trait, the `wire_record!`
//! macro that turns a field table into a struct with read/write/JSON, and `Listed` (a counted
//! list whose count may be a 0xFE/0xFF sentinel).
//! Must not: index a slice directly, trust a peer count before the bytes are there, or panic.

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::{text_value, write_text};
use super::types::Time;
use crate::protocol::json::JsonWriter;

/// A cursor over one data unit. Every read checks the remaining length first.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `len` bytes, or `Truncated` (consuming nothing) when fewer remain.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], BodyError> {
        let end = self.pos.checked_add(len);
        match end.and_then(|end| self.data.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += len;
                Ok(bytes)
            }
            None => Err(BodyError::Truncated {
                offset: self.pos,
                needed: len,
                remaining: self.remaining(),
            }),
        }
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        self.pos = self.data.len();
        rest
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], BodyError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, BodyError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A WORD length followed by that many bytes.
    pub(crate) fn word_prefixed(&mut self) -> Result<Vec<u8>, BodyError> {
        let len = usize::from(self.u16()?);
        Ok(self.take(len)?.to_vec())
    }

    /// Fails with `TrailingBytes` when the layout is complete but bytes are left over.
    pub(crate) fn finish(&self) -> Result<(), BodyError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(BodyError::TrailingBytes { count }),
        }
    }
}

/// Writes a WORD length and the bytes; fails when the bytes do not fit a WORD.
pub(crate) fn put_word_prefixed(out: &mut Vec<u8>, what: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
        what,
        len: bytes.len(),
        max: usize::from(u16::MAX),
    })?;
    out.put_u16(len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// A fixed-layout field: how it is read, written and shown in EMQX JSON.
pub(crate) trait WireField: Sized {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError>;
    fn write(&self, out: &mut Vec<u8>);
    fn to_json(&self) -> Value;
    /// Writes the field's EMQX JSON value.
    fn write_json(&self, w: &mut JsonWriter<'_>);
}

impl WireField for u8 {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.u8()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(*self);
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.u64(u64::from(*self));
    }
}

impl WireField for u16 {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.u16()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u16(*self);
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.u64(u64::from(*self));
    }
}

impl WireField for u32 {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.u32()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(*self);
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        w.u64(u64::from(*self));
    }
}

/// Fixed-width STRING fields (ICCID, user name, chip id, ...): raw bytes, shown as text with the
/// padding kept, as EMQX does.
impl<const N: usize> WireField for [u8; N] {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        r.array()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn to_json(&self) -> Value {
        text_value(self)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        write_text(w, self);
    }
}

impl WireField for Time {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(Time::from_bytes(r.array()?))
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
    fn to_json(&self) -> Value {
        Time::to_json(*self)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        Time::write_json(*self, w);
    }
}

/// The STRING that runs to the end of the data unit (2016 login codes, EMQX `Id`). Only valid as
/// the last field of a record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextToEnd(pub Vec<u8>);

impl WireField for TextToEnd {
    fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        Ok(Self(r.rest().to_vec()))
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn to_json(&self) -> Value {
        text_value(&self.0)
    }
    fn write_json(&self, w: &mut JsonWriter<'_>) {
        write_text(w, &self.0);
    }
}

/// Declares a fixed-layout record from a table of `field: type => "JsonKey"` rows, in wire order.
/// The struct, its reader, writer and EMQX JSON keys come from that one table.
macro_rules! wire_record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty => $key:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            pub(crate) fn read(
                r: &mut $crate::protocol::gbt32960::wire::Reader<'_>,
            ) -> Result<Self, $crate::protocol::gbt32960::error::BodyError> {
                Ok(Self {
                    $( $field: <$ty as $crate::protocol::gbt32960::wire::WireField>::read(r)?, )*
                })
            }

            pub(crate) fn write(&self, out: &mut Vec<u8>) {
                $( $crate::protocol::gbt32960::wire::WireField::write(&self.$field, out); )*
            }

            pub(crate) fn json_into(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
                $(
                    map.insert(
                        $key.to_owned(),
                        $crate::protocol::gbt32960::wire::WireField::to_json(&self.$field),
                    );
                )*
            }

            /// Writes the record's members (its EMQX keys, in key order) into the open object.
            #[allow(dead_code)] // records that only appear inside composites write their fields one by one
            pub(crate) fn write_json_members(&self, w: &mut $crate::protocol::json::JsonWriter<'_>) {
                const KEYS: &[&str] = &[$($key),*];
                const ORDER: [usize; KEYS.len()] = $crate::protocol::json::key_order(KEYS);
                type Member = fn(&$name, &mut $crate::protocol::json::JsonWriter<'_>);
                let members: [Member; KEYS.len()] = [$(
                    |record: &$name, w: &mut $crate::protocol::json::JsonWriter<'_>| {
                        w.key($key);
                        $crate::protocol::gbt32960::wire::WireField::write_json(&record.$field, w);
                    },
                )*];
                for index in ORDER {
                    if let Some(member) = members.get(index) {
                        member(self, w);
                    }
                }
            }
        }
    };
}
pub(crate) use wire_record;

/// Width of a list count on the wire; the two highest values of each width are the
/// "abnormal"/"invalid" markers, and a list with such a count carries no items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountWidth {
    Byte,
    Word,
}

impl CountWidth {
    const fn abnormal(self) -> u32 {
        match self {
            CountWidth::Byte => 0xFE,
            CountWidth::Word => 0xFFFE,
        }
    }

    const fn invalid(self) -> u32 {
        match self {
            CountWidth::Byte => 0xFF,
            CountWidth::Word => 0xFFFF,
        }
    }
}

/// A counted list. The count is either the number of items that follow or one of the two
/// markers (0xFE/0xFF for a BYTE count, 0xFFFE/0xFFFF for a WORD count), which carry no items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed<T> {
    /// The count is the number of items.
    Items(Vec<T>),
    /// The count is the "abnormal" marker (0xFE / 0xFFFE); no items follow.
    Abnormal,
    /// The count is the "invalid" marker (0xFF / 0xFFFF); no items follow.
    Invalid,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed::Items(Vec::new())
    }
}

impl<T> Listed<T> {
    /// The items (empty for a marker count).
    pub fn items(&self) -> &[T] {
        match self {
            Listed::Items(items) => items,
            Listed::Abnormal | Listed::Invalid => &[],
        }
    }

    /// Reads a count of `width` and then that many items with `read_item`. Capacity is capped
    /// by the bytes actually left, so a large count cannot allocate ahead of the data.
    pub(crate) fn read(
        r: &mut Reader<'_>,
        width: CountWidth,
        mut read_item: impl FnMut(&mut Reader<'_>) -> Result<T, BodyError>,
    ) -> Result<Self, BodyError> {
        let count = match width {
            CountWidth::Byte => u32::from(r.u8()?),
            CountWidth::Word => u32::from(r.u16()?),
        };
        if count == width.abnormal() {
            return Ok(Listed::Abnormal);
        }
        if count == width.invalid() {
            return Ok(Listed::Invalid);
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let mut items = Vec::with_capacity(count.min(r.remaining()));
        for _ in 0..count {
            items.push(read_item(r)?);
        }
        Ok(Listed::Items(items))
    }

    /// The count as it goes on the wire.
    pub(crate) fn wire_count(&self, width: CountWidth) -> u32 {
        match self {
            Listed::Items(items) => u32::try_from(items.len()).unwrap_or(u32::MAX),
            Listed::Abnormal => width.abnormal(),
            Listed::Invalid => width.invalid(),
        }
    }

    /// Writes the count and the items; a list too long for its count (or as long as a marker)
    /// is an error rather than a silently different frame.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        width: CountWidth,
        what: &'static str,
        mut write_item: impl FnMut(&T, &mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let count = self.wire_count(width);
        if let Listed::Items(items) = self {
            let max = width.abnormal() - 1;
            if count > max {
                return Err(EncodeError::CountOverflow {
                    what,
                    len: items.len(),
                    max: usize::try_from(max).unwrap_or(usize::MAX),
                });
            }
        }
        match width {
            CountWidth::Byte => out.put_u8(u8::try_from(count).unwrap_or(u8::MAX)),
            CountWidth::Word => out.put_u16(u16::try_from(count).unwrap_or(u16::MAX)),
        }
        for item in self.items() {
            write_item(item, out)?;
        }
        Ok(())
    }

    /// Writes the count (a marker count as its wire value) as a JSON number.
    pub(crate) fn write_json_count(&self, w: &mut JsonWriter<'_>, width: CountWidth) {
        w.u64(u64::from(self.wire_count(width)));
    }

    /// Writes the items as a JSON array.
    pub(crate) fn write_json_items(&self, w: &mut JsonWriter<'_>, mut item_json: impl FnMut(&T, &mut JsonWriter<'_>)) {
        w.begin_array();
        for item in self.items() {
            item_json(item, w);
        }
        w.end_array();
    }

    /// Adds `"<count_key>": count, "<list_key>": [items]` to an EMQX JSON object.
    pub(crate) fn json_into(
        &self,
        map: &mut Map<String, Value>,
        width: CountWidth,
        count_key: &str,
        list_key: &str,
        item_json: impl Fn(&T) -> Value,
    ) {
        map.insert(count_key.to_owned(), Value::from(self.wire_count(width)));
        map.insert(
            list_key.to_owned(),
            Value::Array(self.items().iter().map(item_json).collect()),
        );
    }
}
