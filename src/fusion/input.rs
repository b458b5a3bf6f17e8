//! Reading committed records for fusion: the tag reads of a `gbt37987/{reader}/up/report`, the
//! positions of GB/T 32960 real-time data and JT/T 808 0x0200/0x0704/0x0201, and the registry
//! facts (0x0100 registrations, 32960 logins, tag identities). Pure: bytes of a record in,
//! engine inputs out; a record that cannot be read is an error the service counts.
//!
//! Times: both vehicle protocols send the terminal's clock as Beijing time (GMT+8); reader tag
//! times are the RFC 3339 the reader gateway wrote.

use serde::Deserialize;

use super::engine::{Ms, Source, TagRead, TelemetryPoint, VehicleKey};
use super::geo::GeoPoint;
use super::plate::{normalize_phone, normalize_plate, normalize_tid, normalize_vin, tag_plate};
use super::registry::{Fact, Key};

/// Tags read from one report at most (a hostile report cannot make fusion work without bound).
pub const MAX_TAGS_PER_REPORT: usize = 1000;
/// Positions read from one 0x0704 batch at most.
pub const MAX_BATCH_POSITIONS: usize = 256;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("not JSON of the expected shape: {0}")]
    Shape(String),
    #[error("no identity in the topic `{0}`")]
    Topic(String),
}

/// What one committed record gives fusion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub reads: Vec<TagRead>,
    pub points: Vec<TelemetryPoint>,
    pub facts: Vec<Fact>,
    /// Tags skipped (no or bad TID).
    pub bad_tags: u64,
    /// Tags whose plate could not be decoded (kept without a plate).
    pub bad_plates: u64,
}

/// Milliseconds since the epoch of a Beijing (GMT+8) civil time; `None` when out of range.
pub fn beijing_ms(year: i32, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<Ms> {
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let t = time::Time::from_hms(hour, minute, second).ok()?;
    let utc = time::PrimitiveDateTime::new(date, t).assume_utc();
    Some(utc.unix_timestamp() * 1000 - 8 * 3_600_000)
}

/// A JT/T 808 BCD time `YYMMDDhhmmss` (GMT+8).
fn jt808_time(text: &str) -> Option<Ms> {
    if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| text[i..i + 2].parse::<u8>().ok();
    beijing_ms(2000 + i32::from(n(0)?), n(2)?, n(4)?, n(6)?, n(8)?, n(10)?)
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 512 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn little_endian(bytes: &[u8]) -> Option<u64> {
    (bytes.len() <= 8).then(|| bytes.iter().rev().fold(0u64, |a, b| a << 8 | u64::from(*b)))
}

#[derive(Deserialize)]
struct ReportBody {
    body: ReportTags,
}

#[derive(Deserialize)]
struct ReportTags {
    #[serde(default)]
    tags: Vec<TagJson>,
}

#[derive(Deserialize)]
struct TagJson {
    tid: Option<String>,
    antenna: Option<u64>,
    rssi: Option<i64>,
    first_seen: Option<String>,
    seen_count: Option<u64>,
    tag_data: Option<TagDataJson>,
}

#[derive(Deserialize)]
struct TagDataJson {
    card_id: Option<String>,
    #[serde(default)]
    raw: RawItems,
}

#[derive(Deserialize, Default)]
struct RawItems {
    #[serde(rename = "FPDH")]
    fpdh: Option<String>,
    #[serde(rename = "HPHMXH")]
    hphmxh: Option<String>,
    #[serde(rename = "HPZL")]
    hpzl: Option<String>,
}

/// The reader id of a tag-report topic (`gbt37987/{reader}/up/report`).
fn reader_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("gbt37987/")?
        .strip_suffix("/up/report")
        .filter(|r| !r.is_empty())
}

/// The tags of a committed tag report with `seq`, received at `received_ms`.
pub fn tag_report(topic: &str, body: &[u8], seq: i64, received_ms: Ms) -> Result<Input, InputError> {
    let reader = reader_of(topic).ok_or_else(|| InputError::Topic(topic.to_string()))?;
    let report: ReportBody = serde_json::from_slice(body).map_err(|e| InputError::Shape(e.to_string()))?;
    let mut input = Input::default();
    for (index, tag) in report.body.tags.into_iter().take(MAX_TAGS_PER_REPORT).enumerate() {
        let Some(tid) = tag.tid.as_deref().and_then(|t| normalize_tid(t).ok()) else {
            input.bad_tags += 1;
            continue;
        };
        let data = tag.tag_data.as_ref();
        let raw = data.map(|d| &d.raw);
        let characters = raw.and_then(|r| r.hphmxh.as_deref()).and_then(hex_bytes);
        let authority = raw.and_then(|r| r.fpdh.as_deref()).and_then(hex_bytes);
        let plate = match (&characters, data) {
            (None, None) => None,
            _ => match tag_plate(authority.as_deref(), characters.as_deref()) {
                Ok(p) => normalize_plate(&p).ok(),
                Err(_) => {
                    input.bad_plates += 1;
                    None
                }
            },
        };
        let plate_type = raw
            .and_then(|r| r.hpzl.as_deref())
            .and_then(hex_bytes)
            .and_then(|b| little_endian(&b));
        let cid = data
            .and_then(|d| d.card_id.as_deref())
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        input.facts.push(Fact::Tag {
            tid: tid.clone(),
            cid: cid.clone(),
            plate: plate.clone(),
            plate_type: plate_type.and_then(|t| u32::try_from(t).ok()),
        });
        input.reads.push(TagRead {
            report_seq: seq,
            index,
            reader: reader.to_string(),
            antenna: tag.antenna,
            tid,
            cid,
            plate,
            plate_type,
            rssi: tag.rssi,
            seen_count: tag.seen_count,
            source_ms: tag.first_seen.as_deref().and_then(crate::time::parse_rfc3339_ms),
            received_ms,
        });
    }
    Ok(input)
}

#[derive(Deserialize)]
struct Gbt32960Json {
    #[serde(rename = "Data")]
    data: Gbt32960Data,
}

#[derive(Deserialize)]
struct Gbt32960Data {
    #[serde(rename = "Time")]
    time: Option<Gbt32960Time>,
    #[serde(rename = "Infos", default)]
    infos: Vec<Gbt32960Info>,
}

#[derive(Deserialize)]
struct Gbt32960Time {
    #[serde(rename = "Year")]
    year: u8,
    #[serde(rename = "Month")]
    month: u8,
    #[serde(rename = "Day")]
    day: u8,
    #[serde(rename = "Hour")]
    hour: u8,
    #[serde(rename = "Minute")]
    minute: u8,
    #[serde(rename = "Second")]
    second: u8,
}

#[derive(Deserialize)]
struct Gbt32960Info {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "Status")]
    status: Option<u64>,
    #[serde(rename = "Latitude")]
    latitude: Option<f64>,
    #[serde(rename = "Longitude")]
    longitude: Option<f64>,
    #[serde(rename = "Speed")]
    speed: Option<f64>,
    #[serde(rename = "SOC")]
    soc: Option<f64>,
    #[serde(rename = "Mileage")]
    mileage: Option<f64>,
}

/// A GB/T 32960 record (`gbt32960/{vin}/upstream/{kind}`): positions of `info` and `reinfo`,
/// the VIN of a `vlogin`.
pub fn gbt32960(topic: &str, body: &[u8], seq: i64, received_ms: Ms) -> Result<Input, InputError> {
    let mut parts = topic.split('/');
    let (Some("gbt32960"), Some(vin), Some("upstream"), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InputError::Topic(topic.to_string()));
    };
    let mut input = Input::default();
    match kind {
        "vlogin" => {
            let vin = normalize_vin(vin).map_err(|_| InputError::Topic(topic.to_string()))?;
            input.facts.push(Fact::Seen(Key::Vin(vin)));
        }
        "info" | "reinfo" => {
            let record: Gbt32960Json = serde_json::from_slice(body).map_err(|e| InputError::Shape(e.to_string()))?;
            let mut position = None;
            let (mut speed, mut soc, mut mileage) = (None, None, None);
            for info in &record.data.infos {
                match info.kind.as_deref() {
                    Some("Vehicle") => {
                        // 0xFFFE / 0xFFFF (and their 32-bit forms) mean abnormal / invalid.
                        speed = info.speed.filter(|s| *s < 65534.0).map(|s| s / 10.0);
                        soc = info.soc.filter(|s| *s <= 100.0);
                        mileage = info.mileage.filter(|m| *m < 4_294_967_294.0).map(|m| m / 10.0);
                    }
                    Some("Location") => {
                        let status = info.status.unwrap_or(0);
                        if let (Some(lat), Some(lon), true) = (info.latitude, info.longitude, status & 1 == 0) {
                            let lat = if status & 2 != 0 { -lat } else { lat } / 1e6;
                            let lon = if status & 4 != 0 { -lon } else { lon } / 1e6;
                            if lat.abs() <= 90.0 && lon.abs() <= 180.0 {
                                position = Some(GeoPoint::new(lat, lon));
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Some(position) = position {
                let vin = normalize_vin(vin).map_err(|_| InputError::Topic(topic.to_string()))?;
                let source_ms = record
                    .data
                    .time
                    .and_then(|t| beijing_ms(2000 + i32::from(t.year), t.month, t.day, t.hour, t.minute, t.second));
                input.points.push(TelemetryPoint {
                    key: VehicleKey::Vin(vin),
                    source: Source::Gbt32960,
                    seq,
                    source_ms,
                    received_ms,
                    position,
                    speed_kmh: speed,
                    heading: None,
                    soc,
                    mileage_km: mileage,
                });
            }
        }
        _ => {}
    }
    Ok(input)
}

#[derive(Deserialize)]
struct Jt808Json {
    header: Jt808Header,
    #[serde(default)]
    body: Jt808Body,
}

#[derive(Deserialize)]
struct Jt808Header {
    msg_id: u16,
}

#[derive(Deserialize, Default)]
struct Jt808Location {
    status: Option<u64>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    speed: Option<f64>,
    direction: Option<f64>,
    time: Option<String>,
    extra: Option<Jt808Extra>,
}

#[derive(Deserialize, Default)]
struct Jt808Extra {
    mileage: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Jt808Body {
    #[serde(flatten)]
    basic: Jt808Location,
    /// 0x0704.
    location: Option<Vec<Jt808Location>>,
    /// 0x0201.
    params: Option<Jt808Location>,
    /// 0x0100.
    color: Option<u8>,
    license_number: Option<String>,
}

impl Jt808Location {
    fn point(&self, key: &VehicleKey, seq: i64, received_ms: Ms) -> Option<TelemetryPoint> {
        let status = self.status.unwrap_or(0);
        // Status bit 1: positioned; bits 2 and 3: south and west.
        if status & 2 == 0 {
            return None;
        }
        let lat = self.latitude? / 1e6 * if status & 4 != 0 { -1.0 } else { 1.0 };
        let lon = self.longitude? / 1e6 * if status & 8 != 0 { -1.0 } else { 1.0 };
        if lat.abs() > 90.0 || lon.abs() > 180.0 {
            return None;
        }
        Some(TelemetryPoint {
            key: key.clone(),
            source: Source::Jt808,
            seq,
            source_ms: self.time.as_deref().and_then(jt808_time),
            received_ms,
            position: GeoPoint::new(lat, lon),
            speed_kmh: self.speed.map(|s| s / 10.0),
            heading: self.direction.filter(|d| (0.0..360.0).contains(d)),
            soc: None,
            mileage_km: self.extra.as_ref().and_then(|e| e.mileage).map(|m| m / 10.0),
        })
    }
}

/// A JT/T 808 record (`jt808/{phone}/{phone}/up`): positions of 0x0200, 0x0704 and 0x0201,
/// the identity of a 0x0100 registration and of a 0x0102 authentication.
pub fn jt808(topic: &str, body: &[u8], seq: i64, received_ms: Ms) -> Result<Input, InputError> {
    let mut parts = topic.split('/');
    let (Some("jt808"), Some(phone), Some(_), Some("up")) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InputError::Topic(topic.to_string()));
    };
    let phone = normalize_phone(phone).map_err(|_| InputError::Topic(topic.to_string()))?;
    let record: Jt808Json = serde_json::from_slice(body).map_err(|e| InputError::Shape(e.to_string()))?;
    let key = VehicleKey::Phone(phone.clone());
    let mut input = Input::default();
    let b = &record.body;
    match record.header.msg_id {
        0x0200 => input.points.extend(b.basic.point(&key, seq, received_ms)),
        0x0201 => input
            .points
            .extend(b.params.as_ref().and_then(|l| l.point(&key, seq, received_ms))),
        0x0704 => input.points.extend(
            b.location
                .iter()
                .flatten()
                .take(MAX_BATCH_POSITIONS)
                .filter_map(|l| l.point(&key, seq, received_ms)),
        ),
        0x0100 => {
            let color = b.color.unwrap_or(0);
            let text = b.license_number.as_deref().unwrap_or("").trim();
            // Colour 0: the vehicle has no plate yet and the field carries its VIN.
            let (plate, vin) = if color == 0 {
                (None, normalize_vin(text).ok())
            } else {
                (normalize_plate(text).ok(), None)
            };
            input.facts.push(Fact::Jt808Register {
                phone,
                plate,
                plate_color: color,
                vin,
            });
        }
        0x0102 => input.facts.push(Fact::Seen(Key::Phone(phone))),
        _ => {}
    }
    Ok(input)
}

/// Any committed record: what fusion reads from it (nothing for topics it does not use).
pub fn read(topic: &str, body: &[u8], seq: i64, received_ms: Ms) -> Result<Input, InputError> {
    if topic.starts_with("gbt37987/") {
        if crate::store::is_tag_report(topic) {
            return tag_report(topic, body, seq, received_ms);
        }
    } else if topic.starts_with("gbt32960/") {
        return gbt32960(topic, body, seq, received_ms);
    } else if topic.starts_with("jt808/") && topic.ends_with("/up") {
        return jt808(topic, body, seq, received_ms);
    }
    Ok(Input::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_report_gives_reads_with_decoded_plates_and_tag_facts() {
        let body = br#"{"msg":"TagSelectAccessReport","seq":7,"body":{"tags":[
            {"tid":"E2800001AABBCCDD","antenna":2,"rssi":-41,"first_seen":"2026-12-04T01:00:00.250Z","seen_count":3,
             "tag_data":{"card_id":"0000000A","plate":"A12345","raw":{"FPDH":"0100","HPHMXH":"001b1c1d1e1f","HPZL":"02"}}},
            {"tid":"zz"},
            {"tid":"e2800002","tag_data":{"raw":{"HPHMXH":"ff00"}}}
        ]}}"#;
        let input = tag_report("gbt37987/north/up/report", body, 42, 1_000).unwrap();
        assert_eq!(input.reads.len(), 2);
        assert_eq!((input.bad_tags, input.bad_plates), (1, 1));
        let r = &input.reads[0];
        assert_eq!(
            (r.reader.as_str(), r.tid.as_str(), r.report_seq, r.index),
            ("north", "e2800001aabbccdd", 42, 0)
        );
        assert_eq!(r.plate.as_deref(), Some("京AA12345"));
        assert_eq!(r.plate_type, Some(2));
        assert_eq!(r.cid.as_deref(), Some("0000000a"));
        assert_eq!(r.source_ms, crate::time::parse_rfc3339_ms("2026-12-04T01:00:00.250Z"));
        assert_eq!(input.reads[1].plate, None);
        assert_eq!(input.reads[1].index, 2);
        assert!(matches!(&input.facts[0], Fact::Tag { plate: Some(p), .. } if p == "京AA12345"));
    }

    #[test]
    fn garbage_records_are_errors_not_panics() {
        for body in [&b""[..], b"[]", b"{\"body\":7}", b"\xff\xfe", b"{\"header\":{}}"] {
            assert!(tag_report("gbt37987/r/up/report", body, 1, 0).is_err());
            assert!(jt808("jt808/013900000001/013900000001/up", body, 1, 0).is_err());
        }
        assert!(tag_report("gbt37987//up/report", b"{}", 1, 0).is_err());
        assert!(gbt32960("gbt32960/x", b"{}", 1, 0).is_err());
        let many: String = format!(
            "{{\"body\":{{\"tags\":[{}]}}}}",
            vec!["{\"tid\":\"e2800001\"}"; MAX_TAGS_PER_REPORT + 50].join(",")
        );
        let input = tag_report("gbt37987/r/up/report", many.as_bytes(), 1, 0).unwrap();
        assert_eq!(input.reads.len(), MAX_TAGS_PER_REPORT);
    }

    #[test]
    fn jt808_positions_and_registrations_are_read() {
        let topic = "jt808/013900000001/013900000001/up";
        let loc = br#"{"header":{"msg_id":512},"body":{"status":3,"latitude":31230400,"longitude":121473700,"speed":720,"direction":90,"time":"261204090000","extra":{"mileage":12345}}}"#;
        let input = jt808(topic, loc, 5, 0).unwrap();
        let p = &input.points[0];
        assert_eq!(p.key, VehicleKey::Phone("013900000001".into()));
        assert!((p.position.latitude - 31.2304).abs() < 1e-9);
        assert_eq!(
            (p.speed_kmh, p.heading, p.mileage_km),
            (Some(72.0), Some(90.0), Some(1234.5))
        );
        assert_eq!(p.source_ms, crate::time::parse_rfc3339_ms("2026-12-04T01:00:00.000Z"));
        let unfixed = br#"{"header":{"msg_id":512},"body":{"status":1,"latitude":1,"longitude":1}}"#;
        assert!(jt808(topic, unfixed, 5, 0).unwrap().points.is_empty());
        let batch = br#"{"header":{"msg_id":1796},"body":{"type":0,"length":2,"location":[{"status":2,"latitude":1,"longitude":2},{"status":2,"latitude":3,"longitude":4}]}}"#;
        assert_eq!(jt808(topic, batch, 5, 0).unwrap().points.len(), 2);
        let query = br#"{"header":{"msg_id":513},"body":{"seq":1,"params":{"status":2,"latitude":1,"longitude":2}}}"#;
        assert_eq!(jt808(topic, query, 5, 0).unwrap().points.len(), 1);
        let register = r#"{"header":{"msg_id":256},"body":{"color":1,"license_number":"京A12345"}}"#;
        assert_eq!(
            jt808(topic, register.as_bytes(), 5, 0).unwrap().facts,
            [Fact::Jt808Register {
                phone: "013900000001".into(),
                plate: Some("京A12345".into()),
                plate_color: 1,
                vin: None
            }]
        );
        let by_vin = br#"{"header":{"msg_id":256},"body":{"color":0,"license_number":"LSIM0000000000001"}}"#;
        assert!(
            matches!(&jt808(topic, by_vin, 5, 0).unwrap().facts[0], Fact::Jt808Register { vin: Some(v), plate: None, .. } if v == "LSIM0000000000001")
        );
    }

    #[test]
    fn gbt32960_positions_and_logins_are_read() {
        let body = br#"{"Cmd":2,"Vin":"LSIM0000000000001","Data":{"Time":{"Year":26,"Month":12,"Day":4,"Hour":9,"Minute":0,"Second":1},
            "Infos":[{"Type":"Vehicle","Speed":600,"SOC":80,"Mileage":123456},{"Type":"Location","Status":0,"Longitude":121473700,"Latitude":31230400}]}}"#;
        let input = gbt32960("gbt32960/LSIM0000000000001/upstream/info", body, 9, 0).unwrap();
        let p = &input.points[0];
        assert_eq!(p.source, Source::Gbt32960);
        assert_eq!(
            (p.speed_kmh, p.soc, p.mileage_km),
            (Some(60.0), Some(80.0), Some(12345.6))
        );
        assert_eq!(p.source_ms, crate::time::parse_rfc3339_ms("2026-12-04T01:00:01.000Z"));
        let login = gbt32960("gbt32960/LSIM0000000000001/upstream/vlogin", b"{}", 1, 0).unwrap();
        assert_eq!(login.facts, [Fact::Seen(Key::Vin("LSIM0000000000001".into()))]);
    }
}
