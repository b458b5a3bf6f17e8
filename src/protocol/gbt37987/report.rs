//! Tag-report views: the typed `TagReport` of one TagReportData (500) with its vehicle tag data
//! (1001–1013), the product contract's `{"tags": [...]}` JSON, and the reverse (a TagReportData
//! parameter from a view, for reader simulators).
//!
//! Owns: the tag-data rendering table (which item becomes which JSON key and how it is read).
//! Multi-byte tag-data integers are read little-endian, as S1 reads CCRQ, CLLX and JYYXQ (the real
//! capture's dates are only plausible that way: CCRQ 0x0135 = 2015-10, JYYXQ 0x002e = 2016-11).
//! Must not decide units the facts leave open: timestamps stay raw wire integers.

use serde_json::{json, Map, Value as Json};

use super::error::UnknownName;
use super::json::{content_to_json, param_to_json};
use super::model::{hex_string, Body, Content, Message, Parameter, Value};

/// One tag seen by the reader (a TagReportData parameter), integers widened as received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagReport {
    /// Tag identifier (TID), always present.
    pub tid: Vec<u8>,
    /// SelectSpecID (501).
    pub select_spec_id: Option<u64>,
    /// SpecIndex (502).
    pub spec_index: Option<u64>,
    /// RfSpecID (503).
    pub rf_spec_id: Option<u64>,
    /// AntennaID (504), by TLV length.
    pub antenna: Option<u64>,
    /// PeakRSSI (505).
    pub rssi: Option<i64>,
    /// FirstSeen (506), raw u64 (µs since the epoch on conforming readers).
    pub first_seen: Option<u64>,
    /// LastSeen (507), raw u64.
    pub last_seen: Option<u64>,
    /// TagSeenCount (508).
    pub seen_count: Option<u64>,
    /// AccessSpecID (509).
    pub access_spec_id: Option<u64>,
    /// Vehicle tag data from ReadDataInfo (516) inside CustomizedSelectSpecResult (517).
    pub tag_data: Option<VehicleTagData>,
    /// Result of CustomizedSelectSpecResult (517), when present.
    pub read_result: Option<u64>,
}

/// The vehicle data items (1001–1013) of one ReadDataInfo, raw bytes in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VehicleTagData {
    /// (table name, raw u8v bytes).
    pub items: Vec<(&'static str, Vec<u8>)>,
}

/// How one tag-data item is shown in the contract JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    /// Lowercase hex of the bytes.
    Hex,
    /// Unsigned little-endian integer of up to 8 bytes.
    LittleEndian,
    /// `YYYY-MM`: a little-endian month count after the given year and month.
    MonthsAfter(u16, u8),
    /// Plate characters: codes 0–25 are A–Z, 26–35 are 0–9 (S2).
    PlateChars,
}

/// The tag-data view table: (table name, contract JSON key, rendering).
pub const TAG_DATA_VIEW: &[(&str, &str, Rendering)] = &[
    ("CID", "card_id", Rendering::Hex),
    ("FPDH", "issuing_authority", Rendering::Hex),
    ("SYXZ", "use_nature", Rendering::LittleEndian),
    ("CCRQ", "manufacture_month", Rendering::MonthsAfter(1990, 1)),
    ("CLLX", "vehicle_type", Rendering::LittleEndian),
    ("GL", "power", Rendering::LittleEndian),
    ("PL", "displacement", Rendering::LittleEndian),
    ("HPZL", "plate_type", Rendering::LittleEndian),
    ("HPHMXH", "plate", Rendering::PlateChars),
    ("JYYXQ", "inspection_valid_until", Rendering::MonthsAfter(2013, 1)),
    ("QZBFQ", "mandatory_scrap", Rendering::LittleEndian),
    ("ZKZL", "rated_load", Rendering::LittleEndian),
    ("CSYS", "colour", Rendering::LittleEndian),
];

/// The TagReportData parameters read as views: from TagSelectAccessReport, CachedSelectAccessReport
/// or ClientRequestOp (raw TagReportData are skipped).
pub fn tag_reports(message: &Message) -> Vec<TagReport> {
    message
        .body
        .children("TagReportData")
        .filter_map(TagReport::from_param)
        .collect()
}

/// The contract body of a TagSelectAccessReport: `{"tags": [...]}`.
pub fn tags_json(message: &Message) -> Json {
    let tags: Vec<Json> = message
        .body
        .children("TagReportData")
        .map(|p| match TagReport::from_param(p) {
            Some(report) => report.to_json_with_extra(p),
            None => param_to_json(p),
        })
        .collect();
    json!({ "tags": tags })
}

/// Sub-parameters of TagReportData that the view maps to its own keys.
const VIEWED: &[&str] = &[
    "SelectSpecID",
    "SpecIndex",
    "RfSpecID",
    "AntennaID",
    "PeakRSSI",
    "FirstSeen",
    "LastSeen",
    "TagSeenCount",
    "AccessSpecID",
    "CustomizedSelectSpecResult",
];

impl TagReport {
    /// Reads a TagReportData parameter; `None` when it is another parameter or undecodable.
    pub fn from_param(param: &Parameter) -> Option<TagReport> {
        if param.name() != Some("TagReportData") {
            return None;
        }
        let tid = param.field("TID")?.as_bytes()?.to_vec();
        let unsigned = |name| param.child(name)?.single_value()?.as_u64();
        let custom = param.child("CustomizedSelectSpecResult");
        Some(TagReport {
            tid,
            select_spec_id: unsigned("SelectSpecID"),
            spec_index: unsigned("SpecIndex"),
            rf_spec_id: unsigned("RfSpecID"),
            antenna: unsigned("AntennaID"),
            rssi: param
                .child("PeakRSSI")
                .and_then(Parameter::single_value)
                .and_then(Value::as_i64),
            first_seen: unsigned("FirstSeen"),
            last_seen: unsigned("LastSeen"),
            seen_count: unsigned("TagSeenCount"),
            access_spec_id: unsigned("AccessSpecID"),
            tag_data: custom
                .and_then(|c| c.child("ReadDataInfo"))
                .map(VehicleTagData::from_param),
            read_result: custom.and_then(|c| c.field("Result")).and_then(Value::as_u64),
        })
    }

    /// The contract JSON of this tag; keys only for what the reader sent.
    pub fn to_json(&self) -> Json {
        let mut tag = Map::new();
        tag.insert("tid".into(), json!(hex_string(&self.tid)));
        let optional = [
            ("antenna", self.antenna.map(Json::from)),
            ("rssi", self.rssi.map(Json::from)),
            ("first_seen", self.first_seen.map(Json::from)),
            ("last_seen", self.last_seen.map(Json::from)),
            ("seen_count", self.seen_count.map(Json::from)),
            ("select_spec_id", self.select_spec_id.map(Json::from)),
            ("spec_index", self.spec_index.map(Json::from)),
            ("rf_spec_id", self.rf_spec_id.map(Json::from)),
            ("access_spec_id", self.access_spec_id.map(Json::from)),
            ("read_result", self.read_result.map(Json::from)),
            ("tag_data", self.tag_data.as_ref().map(VehicleTagData::to_json)),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                tag.insert(key.into(), value);
            }
        }
        Json::Object(tag)
    }

    /// The contract JSON plus `"extra"`: the generic mapping of sub-parameters the view does not
    /// cover (access results 510–515, unknown codes), so nothing the reader sent is dropped.
    fn to_json_with_extra(&self, param: &Parameter) -> Json {
        let mut tag = self.to_json();
        let extra: Vec<Parameter> = param
            .params()
            .iter()
            .filter(|p| p.name().is_none_or(|n| !VIEWED.contains(&n)))
            .cloned()
            .collect();
        if let (false, Some(def), Json::Object(map)) = (extra.is_empty(), param.def(), &mut tag) {
            let rendered = content_to_json(&[], def.params, &Content::Decoded(Body::from_params(extra)));
            map.insert("extra".into(), rendered);
        }
        tag
    }

    /// A TagReportData parameter carrying this view. Integers use the row's width when they fit
    /// and the smallest wider width otherwise (decoders read these one-value TLVs by length).
    pub fn to_param(&self) -> Result<Parameter, UnknownName> {
        let singles = [
            ("SelectSpecID", self.select_spec_id.map(|v| unsigned_at_least(v, 4))),
            ("SpecIndex", self.spec_index.map(|v| unsigned_at_least(v, 2))),
            ("RfSpecID", self.rf_spec_id.map(|v| unsigned_at_least(v, 2))),
            ("AntennaID", self.antenna.map(|v| unsigned_at_least(v, 1))),
            ("PeakRSSI", self.rssi.map(signed_smallest)),
            ("FirstSeen", self.first_seen.map(Value::U64)),
            ("LastSeen", self.last_seen.map(Value::U64)),
            ("TagSeenCount", self.seen_count.map(|v| unsigned_at_least(v, 2))),
            ("AccessSpecID", self.access_spec_id.map(|v| unsigned_at_least(v, 4))),
        ];
        let mut params = Vec::new();
        for (name, value) in singles {
            if let Some(value) = value {
                params.push(Parameter::single(name, value)?);
            }
        }
        if let Some(data) = &self.tag_data {
            let read_data_info = Parameter::named("ReadDataInfo", Body::from_params(data.to_params()?))?;
            let result = u8::try_from(self.read_result.unwrap_or(0)).unwrap_or(u8::MAX);
            params.push(Parameter::named(
                "CustomizedSelectSpecResult",
                Body::new(vec![Value::U8(result)], vec![read_data_info]),
            )?);
        }
        Parameter::named("TagReportData", Body::new(vec![Value::Bytes(self.tid.clone())], params))
    }
}

/// The narrowest unsigned value of at least `min_bytes` that holds `v`.
fn unsigned_at_least(v: u64, min_bytes: usize) -> Value {
    match (u8::try_from(v), u16::try_from(v), u32::try_from(v)) {
        (Ok(b), _, _) if min_bytes <= 1 => Value::U8(b),
        (_, Ok(w), _) if min_bytes <= 2 => Value::U16(w),
        (_, _, Ok(d)) if min_bytes <= 4 => Value::U32(d),
        _ => Value::U64(v),
    }
}

/// The narrowest signed value that holds `v`.
fn signed_smallest(v: i64) -> Value {
    match (i8::try_from(v), i16::try_from(v), i32::try_from(v)) {
        (Ok(b), _, _) => Value::S8(b),
        (_, Ok(w), _) => Value::S16(w),
        (_, _, Ok(d)) => Value::S32(d),
        _ => Value::S64(v),
    }
}

impl VehicleTagData {
    /// Reads a ReadDataInfo parameter: each known item's u8v bytes (raw items are skipped).
    pub fn from_param(param: &Parameter) -> VehicleTagData {
        let items = param
            .params()
            .iter()
            .filter_map(|item| Some((item.name()?, item.single_value()?.as_bytes()?.to_vec())))
            .collect();
        VehicleTagData { items }
    }

    /// The ReadDataInfo sub-parameters for these items.
    pub fn to_params(&self) -> Result<Vec<Parameter>, UnknownName> {
        self.items
            .iter()
            .map(|(name, data)| Parameter::single(name, Value::Bytes(data.clone())))
            .collect()
    }

    /// The raw bytes of one item by table name (e.g. `"HPHMXH"`).
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.items.iter().find(|(n, _)| *n == name).map(|(_, d)| d.as_slice())
    }

    /// Plate characters (HPHMXH), when every code is 0–35.
    pub fn plate(&self) -> Option<String> {
        plate_chars(self.raw("HPHMXH")?)
    }

    /// Plate type code (HPZL).
    pub fn plate_type(&self) -> Option<u64> {
        little_endian(self.raw("HPZL")?)
    }

    /// Vehicle type code (CLLX).
    pub fn vehicle_type(&self) -> Option<u64> {
        little_endian(self.raw("CLLX")?)
    }

    /// Body colour code (CSYS).
    pub fn colour(&self) -> Option<u64> {
        little_endian(self.raw("CSYS")?)
    }

    /// Inspection validity (JYYXQ) as `YYYY-MM`.
    pub fn inspection_valid_until(&self) -> Option<String> {
        months_after(self.raw("JYYXQ")?, 2013, 1)
    }

    /// Manufacture month (CCRQ) as `YYYY-MM`.
    pub fn manufacture_month(&self) -> Option<String> {
        months_after(self.raw("CCRQ")?, 1990, 1)
    }

    /// The contract JSON: one key per item per [`TAG_DATA_VIEW`], plus `"raw"`: every item's hex
    /// by table name, so the cloud can re-read what this view interprets.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        let mut raw = Map::new();
        for (name, data) in &self.items {
            raw.insert((*name).to_owned(), json!(hex_string(data)));
            let Some((_, key, rendering)) = TAG_DATA_VIEW.iter().find(|(n, _, _)| n == name) else {
                continue;
            };
            let rendered = match rendering {
                Rendering::Hex => Some(json!(hex_string(data))),
                Rendering::LittleEndian => little_endian(data).map(Json::from),
                Rendering::MonthsAfter(year, month) => months_after(data, *year, *month).map(Json::from),
                Rendering::PlateChars => plate_chars(data).map(Json::from),
            };
            if let Some(value) = rendered {
                object.insert((*key).to_owned(), value);
            }
        }
        object.insert("raw".into(), Json::Object(raw));
        Json::Object(object)
    }
}

/// Unsigned little-endian integer of 1–8 bytes.
fn little_endian(data: &[u8]) -> Option<u64> {
    if data.is_empty() || data.len() > 8 {
        return None;
    }
    Some(data.iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
}

/// `YYYY-MM` of a little-endian month count after the given start month.
fn months_after(data: &[u8], year: u16, month: u8) -> Option<String> {
    let offset = little_endian(data)?;
    let start = u64::from(year) * 12 + u64::from(month.saturating_sub(1));
    let total = start.checked_add(offset)?;
    Some(format!("{:04}-{:02}", total / 12, total % 12 + 1))
}

/// Plate characters: 0–25 → A–Z, 26–35 → 0–9; `None` if any code is out of range.
fn plate_chars(data: &[u8]) -> Option<String> {
    data.iter()
        .map(|&code| match code {
            0..=25 => Some(char::from(b'A' + code)),
            26..=35 => Some(char::from(b'0' + (code - 26))),
            _ => None,
        })
        .collect()
}
