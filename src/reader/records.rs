//! Upstream payloads of the reader topics (CONTRACT 4): `gbt37987/{reader_id}/up/{report, event,
//! alarm, log, status}` as outbox records, and the JSON of a reader message
//! (`{"msg","code","device_sn","seq","body"}`) with tag times as RFC 3339.
//!
//! Owns: topic names, eviction classes (tag reports Telemetry, alarms and link status Critical,
//! the rest Event) and the ordering key (`gbt37987/{reader_id}`, shared with command results so a
//! reader's records stay in order).

use serde_json::{json, Value as Json};

use crate::protocol::gbt37987::dialect::TimestampUnit;
use crate::protocol::gbt37987::json::message_to_json;
use crate::protocol::gbt37987::model::hex_string;
use crate::protocol::gbt37987::report::tags_json;
use crate::protocol::gbt37987::{Dialect, Message};
use crate::store::{Record, RecordClass};
use crate::time::rfc3339_ms;

/// The leaf topics under `gbt37987/{reader_id}/up/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Report,
    Event,
    Alarm,
    Log,
    Status,
}

impl Leaf {
    fn as_str(self) -> &'static str {
        match self {
            Leaf::Report => "report",
            Leaf::Event => "event",
            Leaf::Alarm => "alarm",
            Leaf::Log => "log",
            Leaf::Status => "status",
        }
    }

    /// Eviction class (CONTRACT 5.4).
    pub fn class(self) -> RecordClass {
        match self {
            Leaf::Report => RecordClass::Telemetry,
            Leaf::Event | Leaf::Log => RecordClass::Event,
            Leaf::Alarm | Leaf::Status => RecordClass::Critical,
        }
    }
}

/// The ordering key of a reader's records.
pub fn device_key(reader: &str) -> String {
    crate::topics::device_key("gbt37987", reader)
}

/// The topic (without prefix) of one of a reader's upstream leaves.
pub fn topic(reader: &str, leaf: Leaf) -> String {
    crate::topics::gbt37987_up(reader, leaf.as_str())
}

/// A record for `reader` on `leaf` with `body`, received at `received_at_ms`.
pub fn record(reader: &str, leaf: Leaf, body: &Json, received_at_ms: i64) -> Record {
    let mut r = Record::new(device_key(reader), topic(reader, leaf), leaf.class(), body);
    r.received_at_ms = received_at_ms;
    r
}

/// The JSON of a reader message: the codec's mapping, with tag `first_seen` / `last_seen` as
/// RFC 3339 (CONTRACT 4) and cached reports' tags in the same `tags` form as live reports.
pub fn message_json(message: &Message, dialect: Dialect) -> Json {
    let mut out = message_to_json(message);
    if message.name() == Some("CachedSelectAccessReport") {
        if let (Some(body), Json::Object(tags)) =
            (out.get_mut("body").and_then(Json::as_object_mut), tags_json(message))
        {
            body.remove("TagReportData");
            body.extend(tags);
        }
    }
    if let Some(tags) = out.pointer_mut("/body/tags").and_then(Json::as_array_mut) {
        for tag in tags {
            for key in ["first_seen", "last_seen"] {
                if let Some(raw) = tag.get(key).and_then(Json::as_u64) {
                    tag[key] = json!(timestamp_rfc3339(raw, dialect));
                }
            }
        }
    }
    out
}

/// A wire u64 timestamp (µs since the epoch on conforming readers) as RFC 3339 with milliseconds.
pub fn timestamp_rfc3339(raw: u64, dialect: Dialect) -> String {
    let ms = match dialect.profile().timestamp_unit {
        TimestampUnit::Micros => raw / 1000,
        TimestampUnit::Millis => raw,
    };
    rfc3339_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The status payload: `{"link","reason","dialect","device_sn"}`.
pub fn status_body(up: bool, reason: &str, dialect: Dialect, device_sn: Option<[u8; 8]>) -> Json {
    json!({
        "link": if up { "up" } else { "down" },
        "reason": reason,
        "dialect": dialect.as_str(),
        "device_sn": device_sn.map(|sn| hex_string(&sn)),
    })
}

/// An edge-made event about a reader (no wire message behind it): `{"msg", "device_sn", "body"}`.
pub fn edge_event(msg: &str, device_sn: [u8; 8], body: Json) -> Json {
    json!({"msg": msg, "device_sn": hex_string(&device_sn), "body": body})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt37987::builders::{tag_select_access_report, Addressing};
    use crate::protocol::gbt37987::TagReport;

    #[test]
    fn tag_times_become_rfc3339_and_classes_follow_the_contract() {
        let tag = TagReport {
            tid: vec![1, 2],
            first_seen: Some(1_763_712_000_123_456),
            ..TagReport::default()
        };
        let at = Addressing {
            device_sn: *b"BL000001",
            number: 3,
        };
        let message = tag_select_access_report(at, &[tag]).unwrap();
        let j = message_json(&message, Dialect::Hb2017);
        assert_eq!(j["body"]["tags"][0]["first_seen"], "2025-11-21T08:00:00.123Z");
        assert_eq!(j["device_sn"], "424c303030303031");
        assert_eq!(j["seq"], 3);
        assert_eq!(Leaf::Report.class(), RecordClass::Telemetry);
        assert_eq!(Leaf::Alarm.class(), RecordClass::Critical);
        assert_eq!(Leaf::Status.class(), RecordClass::Critical);
        assert_eq!(topic("r1", Leaf::Log), "gbt37987/r1/up/log");
    }
}
