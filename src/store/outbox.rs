//! Outbox records: what protocol sessions append and the uplink publishes, the edge envelope
//! (CONTRACT 4) spliced into each payload, and the reads the uplink drains with.

use rusqlite::{params, Connection};

use super::StoreError;

/// Eviction class of a record (CONTRACT 5.4): lower classes are evicted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordClass {
    /// Periodic telemetry: 32960 real-time, 808 location, tag reports. Evicted first.
    Telemetry = 0,
    /// Everything else a device reports (events, responses, logs).
    Event = 1,
    /// Logins, alarms, command results, passages. Evicted last.
    Critical = 2,
}

impl RecordClass {
    pub const ALL: [RecordClass; 3] = [RecordClass::Telemetry, RecordClass::Event, RecordClass::Critical];
}

/// Spelling of the envelope key: GB/T 32960 payloads follow EMQX's capitalised keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeKey {
    /// `"Edge"` (GB/T 32960).
    Capitalised,
    /// `"edge"` (everything else).
    Lower,
}

/// One upstream record as a protocol session hands it to the store.
#[derive(Debug, Clone)]
pub struct Record {
    /// Ordering key: records of one device are published in append order.
    pub device: String,
    /// Topic without the configured prefix.
    pub topic: String,
    pub class: RecordClass,
    pub envelope: EnvelopeKey,
    /// When the data was received, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// The record's JSON object, without the envelope.
    pub body: Vec<u8>,
}

impl Record {
    /// A record with an `"edge"` envelope.
    pub fn new(
        device: impl Into<String>,
        topic: impl Into<String>,
        class: RecordClass,
        body: &serde_json::Value,
    ) -> Record {
        Record {
            device: device.into(),
            topic: topic.into(),
            class,
            envelope: EnvelopeKey::Lower,
            received_at_ms: crate::time::now_ms(),
            body: serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }

    /// What the record costs against the backlog budget: payload, topic and the row's share of
    /// the two indexes and page overhead.
    pub fn cost(&self) -> u64 {
        const ROW_OVERHEAD: u64 = 96;
        (self.body.len() + ENVELOPE_MAX + self.topic.len() + 2 * self.device.len()) as u64 + ROW_OVERHEAD
    }
}

/// Upper bound of the spliced envelope text, so cost can be known before the seq is.
const ENVELOPE_MAX: usize = 160;

/// Builds the published payload: `body` with the envelope key added as its first member.
pub fn with_envelope(body: &[u8], key: EnvelopeKey, edge_id: &str, seq: i64, received_at_ms: i64) -> Vec<u8> {
    let key = match key {
        EnvelopeKey::Capitalised => "Edge",
        EnvelopeKey::Lower => "edge",
    };
    let envelope = format!(
        r#""{key}":{{"id":"{edge_id}","seq":{seq},"received_at":"{}"}}"#,
        crate::time::rfc3339_ms(received_at_ms)
    );
    let inner = body.strip_prefix(b"{").map(|b| b.trim_ascii_start()).unwrap_or(b"}");
    let mut out = Vec::with_capacity(body.len() + envelope.len() + 2);
    out.push(b'{');
    out.extend_from_slice(envelope.as_bytes());
    if inner != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(inner);
    out
}

/// A committed record as the uplink reads it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub device: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub created_ms: i64,
}

/// Up to `limit` rows of `device` after `after_seq`, in order.
pub fn rows_of_device(
    conn: &Connection,
    device: &str,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, device, topic, payload, created_ms FROM outbox
         WHERE device = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![device, after_seq, limit as i64], |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                device: r.get(1)?,
                topic: r.get(2)?,
                payload: r.get(3)?,
                created_ms: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Devices with rows after `after_seq` (all devices for 0), and the highest seq seen.
pub fn devices_after(conn: &Connection, after_seq: i64) -> Result<(Vec<String>, i64), StoreError> {
    let mut stmt = conn.prepare_cached("SELECT device, MAX(seq) FROM outbox WHERE seq > ?1 GROUP BY device")?;
    let mut max = after_seq;
    let devices = stmt
        .query_map([after_seq], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .map(|r| {
            r.map(|(d, s)| {
                max = max.max(s);
                d
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((devices, max))
}

impl RecordClass {
    pub fn from_i64(v: i64) -> RecordClass {
        match v {
            0 => RecordClass::Telemetry,
            1 => RecordClass::Event,
            _ => RecordClass::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn envelope_is_added_to_objects_with_and_without_members() {
        let p = with_envelope(br#"{"Cmd":1,"Vin":"X"}"#, EnvelopeKey::Capitalised, "cab", 42, 0);
        let v = parse(&p);
        assert_eq!(v["Edge"]["id"], "cab");
        assert_eq!(v["Edge"]["seq"], 42);
        assert_eq!(v["Edge"]["received_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["Cmd"], 1);
        let v = parse(&with_envelope(b"{ }", EnvelopeKey::Lower, "cab", 1, 0));
        assert_eq!(v.as_object().unwrap().len(), 1);
        let v = parse(&with_envelope(b"{}", EnvelopeKey::Lower, "cab", 1, 0));
        assert_eq!(v["edge"]["seq"], 1);
    }

    #[test]
    fn envelope_fits_its_budgeted_size() {
        let id = "x".repeat(64);
        let p = with_envelope(b"{}", EnvelopeKey::Lower, &id, i64::MAX, 253_402_300_799_999);
        assert!(p.len() - 2 <= ENVELOPE_MAX, "{}", p.len());
    }
}
