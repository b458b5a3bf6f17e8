//! Terminal parameters: the query command (0x80 from the platform), and the id/value lists of
//! the query reply and of the set command and its reply (0x80 reply, 0x81).
//!
//! Owns: the parameter table with its edition-aware widths (facts sheet §2.3: 0x02/0x03 are WORD
//! in 2016 and BYTE in 2025; 0x05/0x0E take their length from the preceding 0x04/0x0D).
//! Must not: reject raw marker values, or guess the width of an unknown id (the rest of the list
//! is kept raw instead).

use bytes::BufMut;
use serde_json::{Map, Value};

use super::error::{BodyError, EncodeError};
use super::json::{hex_upper, param_key, param_key_bytes, text_value, write_hex_upper, write_text};
use super::types::{Edition, Time};
use super::wire::{Reader, WireField};
use crate::protocol::json::JsonWriter;

/// How a parameter value is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamWidth {
    /// One BYTE.
    Byte,
    /// One WORD.
    Word,
    /// A STRING of exactly 5 bytes (hardware / firmware version).
    Text5,
    /// A STRING whose length is the value of the given (earlier) BYTE parameter.
    TextSizedBy(u8),
}

/// One row of the parameter table: id and its width in 2016 and 2025.
struct ParamSpec {
    id: u8,
    width_2016: ParamWidth,
    width_2025: ParamWidth,
}

const fn spec(id: u8, width_2016: ParamWidth, width_2025: ParamWidth) -> ParamSpec {
    ParamSpec {
        id,
        width_2016,
        width_2025,
    }
}

/// Annex B tables B.9–B.13 (ids 0x11–0x7F reserved, 0x80–0xFE user-defined: width unknown).
const PARAM_SPECS: [ParamSpec; 16] = {
    use ParamWidth::{Byte, Text5, TextSizedBy, Word};
    [
        spec(0x01, Word, Word),                           // local storage period, ms
        spec(0x02, Word, Byte),                           // normal report period, s
        spec(0x03, Word, Byte),                           // report period while alarming
        spec(0x04, Byte, Byte),                           // platform domain length
        spec(0x05, TextSizedBy(0x04), TextSizedBy(0x04)), // platform domain
        spec(0x06, Word, Word),                           // platform port
        spec(0x07, Text5, Text5),                         // hardware version
        spec(0x08, Text5, Text5),                         // firmware version
        spec(0x09, Byte, Byte),                           // heartbeat period, s
        spec(0x0A, Word, Word),                           // terminal reply timeout, s
        spec(0x0B, Word, Word),                           // platform reply timeout, s
        spec(0x0C, Byte, Byte),                           // pause after 3 failed logins, min
        spec(0x0D, Byte, Byte),                           // public-platform domain length
        spec(0x0E, TextSizedBy(0x0D), TextSizedBy(0x0D)), // public-platform domain
        spec(0x0F, Word, Word),                           // public-platform port
        spec(0x10, Byte, Byte),                           // under sampling inspection
    ]
};

/// The width of parameter `id` in `edition`, or `None` for reserved/user-defined ids.
pub fn param_width(edition: Edition, id: u8) -> Option<ParamWidth> {
    PARAM_SPECS.iter().find(|row| row.id == id).map(|row| match edition {
        Edition::V2016 => row.width_2016,
        Edition::V2025 => row.width_2025,
    })
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// BYTE parameter.
    Byte(u8),
    /// WORD parameter.
    Word(u16),
    /// STRING parameter (raw bytes).
    Text(Vec<u8>),
    /// The rest of the data unit after an id whose width is unknown. Only valid last.
    Unparsed(Vec<u8>),
}

/// One `[id][value]` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter id.
    pub id: u8,
    /// Its value.
    pub value: ParamValue,
}

/// Time, count and `[id][value]` items: the query reply (0x80 from the terminal), the set
/// command (0x81 from the platform) and the set reply (0x81 from the terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamList {
    /// Time of the message.
    pub time: Time,
    /// Declared item count; equals `params.len()` unless the last item is `Unparsed`, which
    /// may hide several items.
    pub total: u8,
    /// Items in wire order.
    pub params: Vec<Param>,
}

impl ParamList {
    /// A list whose `total` is the number of `params` (saturating at 255).
    pub fn new(time: Time, params: Vec<Param>) -> Self {
        let total = u8::try_from(params.len()).unwrap_or(u8::MAX);
        Self { time, total, params }
    }

    pub(crate) fn read(r: &mut Reader<'_>, edition: Edition) -> Result<Self, BodyError> {
        let time = Time::read(r)?;
        let total = r.u8()?;
        let mut params: Vec<Param> = Vec::with_capacity(usize::from(total).min(r.remaining()));
        for index in 0..total {
            let id = r.u8()?;
            let is_last = index.checked_add(1) == Some(total);
            let value = match param_width(edition, id) {
                Some(ParamWidth::Byte) => ParamValue::Byte(r.u8()?),
                Some(ParamWidth::Word) => ParamValue::Word(r.u16()?),
                Some(ParamWidth::Text5) => ParamValue::Text(r.take(5)?.to_vec()),
                Some(ParamWidth::TextSizedBy(size_id)) => {
                    let size = params.iter().rev().find_map(|p| match p.value {
                        ParamValue::Byte(size) if p.id == size_id => Some(size),
                        _ => None,
                    });
                    match size {
                        Some(size) => ParamValue::Text(r.take(usize::from(size))?.to_vec()),
                        // No length given: only the last item can still be delimited.
                        None if is_last => ParamValue::Text(r.rest().to_vec()),
                        None => ParamValue::Unparsed(r.rest().to_vec()),
                    }
                }
                None => ParamValue::Unparsed(r.rest().to_vec()),
            };
            let unparsed = matches!(value, ParamValue::Unparsed(_));
            params.push(Param { id, value });
            if unparsed {
                return Ok(Self { time, total, params });
            }
        }
        r.finish()?;
        Ok(Self { time, total, params })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>, edition: Edition) -> Result<(), EncodeError> {
        let ends_unparsed = matches!(
            self.params.last(),
            Some(Param {
                value: ParamValue::Unparsed(_),
                ..
            })
        );
        if !ends_unparsed && usize::from(self.total) != self.params.len() {
            return Err(EncodeError::ParamCountMismatch {
                total: self.total,
                len: self.params.len(),
            });
        }
        self.time.write(out);
        out.put_u8(self.total);
        let last = self.params.len().saturating_sub(1);
        for (index, param) in self.params.iter().enumerate() {
            out.put_u8(param.id);
            match (&param.value, param_width(edition, param.id)) {
                (ParamValue::Byte(v), Some(ParamWidth::Byte)) => out.put_u8(*v),
                (ParamValue::Word(v), Some(ParamWidth::Word)) => out.put_u16(*v),
                (ParamValue::Text(text), Some(ParamWidth::Text5)) if text.len() == 5 => out.extend_from_slice(text),
                (ParamValue::Text(text), Some(ParamWidth::TextSizedBy(_))) => out.extend_from_slice(text),
                (ParamValue::Unparsed(bytes), _) if index == last => out.extend_from_slice(bytes),
                (ParamValue::Unparsed(_), _) => return Err(EncodeError::UnparsedNotLast { what: "parameters" }),
                _ => return Err(EncodeError::ParamWidth { id: param.id, edition }),
            }
        }
        Ok(())
    }

    /// EMQX keys: `Time, Total, Params[{"0x01": 6000}, {"0x05": "host"}…]`. Unparsed tails are
    /// shown as uppercase hex under their id.
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert("Total".to_owned(), Value::from(self.total));
        let params = self
            .params
            .iter()
            .map(|param| {
                let value = match &param.value {
                    ParamValue::Byte(v) => Value::from(*v),
                    ParamValue::Word(v) => Value::from(*v),
                    ParamValue::Text(text) => text_value(text),
                    ParamValue::Unparsed(bytes) => Value::from(hex_upper(bytes)),
                };
                let mut item = Map::new();
                item.insert(param_key(param.id), value);
                Value::Object(item)
            })
            .collect();
        map.insert("Params".to_owned(), Value::Array(params));
    }

    /// `Params, Time, Total` in key order; each item a one-member object.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("Params");
        w.begin_array();
        for param in &self.params {
            w.begin_object();
            let key = param_key_bytes(param.id);
            w.key(std::str::from_utf8(&key).unwrap_or("0x??"));
            match &param.value {
                ParamValue::Byte(v) => w.u64(u64::from(*v)),
                ParamValue::Word(v) => w.u64(u64::from(*v)),
                ParamValue::Text(text) => write_text(w, text),
                ParamValue::Unparsed(bytes) => write_hex_upper(w, bytes),
            }
            w.end_object();
        }
        w.end_array();
        w.key("Time");
        self.time.write_json(w);
        w.member_u64("Total", self.total);
    }
}

/// Parameter query command (0x80 from the platform): time, count, ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamQuery {
    /// Time of the message.
    pub time: Time,
    /// Parameter ids to query.
    pub ids: Vec<u8>,
}

impl ParamQuery {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, BodyError> {
        let time = Time::read(r)?;
        let count = r.u8()?;
        let ids = r.take(usize::from(count))?.to_vec();
        r.finish()?;
        Ok(Self { time, ids })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let count = u8::try_from(self.ids.len()).map_err(|_| EncodeError::CountOverflow {
            what: "parameter ids",
            len: self.ids.len(),
            max: usize::from(u8::MAX),
        })?;
        self.time.write(out);
        out.put_u8(count);
        out.extend_from_slice(&self.ids);
        Ok(())
    }

    /// `Time, Total, Ids[]` (ids as integers, as in EMQX's internal frame).
    pub(crate) fn json_into(&self, map: &mut Map<String, Value>) {
        map.insert("Time".to_owned(), self.time.to_json());
        map.insert("Total".to_owned(), Value::from(self.ids.len()));
        map.insert("Ids".to_owned(), self.ids.iter().map(|id| Value::from(*id)).collect());
    }

    /// `Ids, Time, Total` in key order.
    pub(crate) fn write_json_members(&self, w: &mut JsonWriter<'_>) {
        w.key("Ids");
        w.begin_array();
        for id in &self.ids {
            w.u64(u64::from(*id));
        }
        w.end_array();
        w.key("Time");
        self.time.write_json(w);
        w.member_u64("Total", self.ids.len() as u64);
    }
}
