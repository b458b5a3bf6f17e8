//! What the page shows live and the appliance would otherwise not keep: one hour of dashboard
//! samples (so the charts survive a page reload), each vehicle's last data and position, and
//! each reader's last tag reads. Fed from the metrics (sampled) and from the store's tap of
//! committed records, so the page only ever shows data the appliance has committed.
//!
//! Owns: three bounded in-memory tables. Must not: slow the data path (the tap is read by one
//! task; a lagging view skips records and counts them), or keep anything across restarts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::ops::system::SystemProbe;
use crate::store::{Committed, Store};
use crate::time::now_ms;

/// Time between dashboard samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
pub const HISTORY_POINTS: usize = 720;
/// Vehicles whose last data is kept (more than the gateways' connection limits).
pub const MAX_VEHICLES: usize = 25_000;
/// Tag reads kept per reader.
pub const TAGS_PER_READER: usize = 50;
/// Readers whose tag reads are kept.
const MAX_READERS: usize = 256;

/// One dashboard sample.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// ms since the Unix epoch.
    pub t: i64,
    /// Records committed per second since the previous sample.
    pub ingest: f64,
    /// Records published (PUBACKed) per second since the previous sample.
    pub publish: f64,
    pub backlog_rows: i64,
    pub backlog_bytes: i64,
    pub cpu: Option<f64>,
    pub mem: Option<u64>,
}

/// A vehicle's last data, as the vehicles page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VehicleData {
    /// `gbt32960` or `jt808`.
    pub protocol: &'static str,
    /// VIN or phone.
    pub id: String,
    /// What the last record was (`info`, `vlogin`, `0x0200`, ...).
    pub last_kind: String,
    /// When the last record was received (RFC 3339).
    pub last_time: String,
    #[serde(skip)]
    pub last_ms: i64,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub speed_kmh: Option<f64>,
    pub soc: Option<f64>,
    /// When the last position was taken (the device's clock, as it sent it).
    pub position_time: Option<String>,
    pub records: u64,
}

/// A tag read, as the readers page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TagRead {
    pub time: String,
    pub tid: Option<String>,
    pub antenna: Option<u64>,
    pub rssi: Option<i64>,
    pub plate: Option<String>,
    pub select_spec_id: Option<u64>,
}

/// The live tables; shared as `Arc<Live>`.
#[derive(Default)]
pub struct Live {
    history: Mutex<VecDeque<Sample>>,
    system: Mutex<Value>,
    vehicles: Mutex<HashMap<(&'static str, String), VehicleData>>,
    tags: Mutex<BTreeMap<String, VecDeque<TagRead>>>,
    /// Committed records the view skipped because it fell behind.
    pub skipped: AtomicU64,
}

impl Live {
    /// The last hour of samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.history.lock().ok().and_then(|h| h.back().cloned())
    }

    /// The last system figures (CPU, memory, disk, temperature).
    pub fn system(&self) -> Value {
        self.system.lock().map(|s| s.clone()).unwrap_or(Value::Null)
    }

    /// A vehicle's last data.
    pub fn vehicle(&self, protocol: &'static str, id: &str) -> Option<VehicleData> {
        self.vehicles
            .lock()
            .ok()
            .and_then(|v| v.get(&(protocol, id.to_string())).cloned())
    }

    /// Every vehicle seen, newest first.
    pub fn vehicles(&self) -> Vec<VehicleData> {
        let mut list: Vec<VehicleData> = self
            .vehicles
            .lock()
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|v| std::cmp::Reverse(v.last_ms));
        list
    }

    /// A reader's last tag reads, newest first.
    pub fn tags(&self, reader: &str) -> Vec<TagRead> {
        self.tags
            .lock()
            .ok()
            .and_then(|t| t.get(reader).map(|q| q.iter().rev().cloned().collect()))
            .unwrap_or_default()
    }

    fn push_sample(&self, sample: Sample) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() >= HISTORY_POINTS {
                h.pop_front();
            }
            h.push_back(sample);
        }
    }

    /// Takes one committed record into the tables.
    pub fn observe(&self, record: &Committed) {
        let mut parts = record.topic.split('/');
        let (Some(protocol), Some(id)) = (parts.next(), parts.next()) else {
            return;
        };
        match protocol {
            "gbt32960" | "jt808" | "gbt37987" => {}
            _ => return,
        }
        let Ok(body) = serde_json::from_slice::<Value>(&record.body) else {
            return;
        };
        let time = crate::time::rfc3339_ms(record.received_at_ms);
        match protocol {
            "gbt32960" => {
                let kind = record.topic.rsplit('/').next().unwrap_or("").to_string();
                if kind == "response" {
                    return;
                }
                self.update_vehicle("gbt32960", id, kind, time, record.received_at_ms, |v| {
                    gbt32960_position(&body, v)
                });
            }
            "jt808" => {
                let msg_id = body["header"]["msg_id"].as_u64().unwrap_or(0);
                if !body["header"].is_object() {
                    return;
                }
                let kind = format!("0x{msg_id:04X}");
                self.update_vehicle("jt808", id, kind, time, record.received_at_ms, |v| {
                    jt808_position(&body["body"], v)
                });
            }
            _ => {
                if !record.topic.ends_with("/up/report") {
                    return;
                }
                let Some(tags) = body["body"]["tags"].as_array() else {
                    return;
                };
                let Ok(mut all) = self.tags.lock() else { return };
                if !all.contains_key(id) && all.len() >= MAX_READERS {
                    return;
                }
                let queue = all.entry(id.to_string()).or_default();
                for tag in tags {
                    if queue.len() >= TAGS_PER_READER {
                        queue.pop_front();
                    }
                    queue.push_back(TagRead {
                        time: tag["first_seen"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| time.clone()),
                        tid: tag["tid"].as_str().map(str::to_string),
                        antenna: tag["antenna"].as_u64(),
                        rssi: tag["rssi"].as_i64(),
                        plate: tag["tag_data"]["plate"].as_str().map(str::to_string),
                        select_spec_id: tag["select_spec_id"].as_u64(),
                    });
                }
            }
        }
    }

    fn update_vehicle(
        &self,
        protocol: &'static str,
        id: &str,
        kind: String,
        time: String,
        ms: i64,
        position: impl FnOnce(&mut VehicleData),
    ) {
        let Ok(mut all) = self.vehicles.lock() else { return };
        let key = (protocol, id.to_string());
        if !all.contains_key(&key) && all.len() >= MAX_VEHICLES {
            let oldest = all.iter().min_by_key(|(_, v)| v.last_ms).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                all.remove(&k);
            }
        }
        let v = all.entry(key).or_insert_with(|| VehicleData {
            protocol,
            id: id.to_string(),
            last_kind: String::new(),
            last_time: String::new(),
            last_ms: 0,
            latitude: None,
            longitude: None,
            speed_kmh: None,
            soc: None,
            position_time: None,
            records: 0,
        });
        v.last_kind = kind;
        v.last_time = time;
        v.last_ms = ms;
        v.records += 1;
        position(v);
    }
}

/// Position, speed and state of charge from a 32960 real-time or reissued record.
fn gbt32960_position(body: &Value, v: &mut VehicleData) {
    let Some(infos) = body["Data"]["Infos"].as_array() else {
        return;
    };
    for info in infos {
        match info["Type"].as_str() {
            Some("Vehicle") => {
                if let Some(speed) = info["Speed"].as_f64() {
                    // 0.1 km/h; 0xFFFE/0xFFFF mean abnormal/invalid.
                    v.speed_kmh = (speed < 65534.0).then_some(speed / 10.0);
                }
                if let Some(soc) = info["SOC"].as_f64() {
                    v.soc = (soc <= 100.0).then_some(soc);
                }
            }
            Some("Location") => {
                let valid = info["Status"].as_u64().is_none_or(|s| s & 1 == 0);
                if let (Some(lat), Some(lon), true) = (info["Latitude"].as_f64(), info["Longitude"].as_f64(), valid) {
                    let south = info["Status"].as_u64().is_some_and(|s| s & 2 != 0);
                    let west = info["Status"].as_u64().is_some_and(|s| s & 4 != 0);
                    v.latitude = Some(if south { -lat } else { lat } / 1e6);
                    v.longitude = Some(if west { -lon } else { lon } / 1e6);
                    v.position_time = gbt32960_time(&body["Data"]["Time"]);
                }
            }
            _ => {}
        }
    }
}

/// A 32960 time object (`{"Year": 26, "Month": .., ...}`, the terminal's local time) as text.
fn gbt32960_time(t: &Value) -> Option<String> {
    let part = |k: &str| t[k].as_u64();
    Some(format!(
        "20{:02}-{:02}-{:02} {:02}:{:02}:{:02}",
        part("Year")?,
        part("Month")?,
        part("Day")?,
        part("Hour")?,
        part("Minute")?,
        part("Second")?
    ))
}

/// Position and speed from an 808 location report (0x0200) or a batch (0x0704, its last item).
fn jt808_position(body: &Value, v: &mut VehicleData) {
    let location = match body["location"].as_array().and_then(|l| l.last()) {
        Some(last) => last,
        None => body,
    };
    if let (Some(lat), Some(lon)) = (location["latitude"].as_f64(), location["longitude"].as_f64()) {
        let status = location["status"].as_u64().unwrap_or(0);
        let south = status & (1 << 2) != 0;
        let west = status & (1 << 3) != 0;
        v.latitude = Some(if south { -lat } else { lat } / 1e6);
        v.longitude = Some(if west { -lon } else { lon } / 1e6);
        v.speed_kmh = location["speed"].as_f64().map(|s| s / 10.0);
        v.position_time = location["time"].as_str().map(str::to_string);
    }
}

/// Samples the metrics every [`SAMPLE_EVERY`] and feeds the tables from the store's tap until
/// `shutdown`.
pub async fn run(live: Arc<Live>, metrics: Arc<Metrics>, store: Store, shutdown: CancellationToken) {
    let mut probe = SystemProbe::new(store.path().parent().map(|p| p.to_path_buf()).unwrap_or_default());
    let mut tap = store.tap();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(i64, u64, u64)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let system = probe.snapshot();
                let now = now_ms();
                let committed = metrics.store.committed_total.load(Relaxed);
                let published = metrics.uplink.published_total.load(Relaxed);
                let (ingest, publish) = match last {
                    Some((t, c, p)) if now > t => {
                        let dt = (now - t) as f64 / 1000.0;
                        (committed.saturating_sub(c) as f64 / dt, published.saturating_sub(p) as f64 / dt)
                    }
                    _ => (0.0, 0.0),
                };
                last = Some((now, committed, published));
                live.push_sample(Sample {
                    t: now,
                    ingest: (ingest * 10.0).round() / 10.0,
                    publish: (publish * 10.0).round() / 10.0,
                    backlog_rows: metrics.store.backlog_rows.load(Relaxed),
                    backlog_bytes: metrics.store.backlog_bytes.load(Relaxed),
                    cpu: system["cpu_percent"].as_f64().map(|c| (c * 10.0).round() / 10.0),
                    mem: system["mem_used_bytes"].as_u64(),
                });
                if let Ok(mut s) = live.system.lock() {
                    *s = system;
                }
            }
            record = tap.recv() => match record {
                Ok(record) => live.observe(&record),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    live.skipped.fetch_add(n, Relaxed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    shutdown.cancelled().await;
                    return;
                }
            }
        }
    }
}

/// JSON of the samples for the page: column arrays, smaller than an array of objects.
pub fn history_json(samples: &[Sample]) -> Value {
    json!({
        "every_s": SAMPLE_EVERY.as_secs(),
        "t": samples.iter().map(|s| s.t).collect::<Vec<_>>(),
        "ingest": samples.iter().map(|s| s.ingest).collect::<Vec<_>>(),
        "publish": samples.iter().map(|s| s.publish).collect::<Vec<_>>(),
        "backlog_rows": samples.iter().map(|s| s.backlog_rows).collect::<Vec<_>>(),
        "cpu": samples.iter().map(|s| s.cpu).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(topic: &str, body: Value) -> Committed {
        Committed {
            seq: 1,
            device: "d".into(),
            topic: topic.into(),
            received_at_ms: 1_700_000_000_000,
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    #[test]
    fn vehicles_keep_their_last_position_speed_and_charge() {
        let live = Live::default();
        live.observe(&committed(
            "gbt32960/LVIN1/upstream/info",
            json!({"Cmd": 2, "Vin": "LVIN1", "Data": {"Time": {"Year": 26, "Month": 1, "Day": 2, "Hour": 3, "Minute": 4, "Second": 5}, "Infos": [
                {"Type": "Vehicle", "Speed": 456, "SOC": 80},
                {"Type": "Location", "Status": 0, "Longitude": 121473700, "Latitude": 31230400}
            ]}}),
        ));
        live.observe(&committed(
            "jt808/013900000000/013900000000/up",
            json!({"header": {"msg_id": 512}, "body": {"status": 4, "latitude": 31230400, "longitude": 121473700, "speed": 600, "time": "2026-01-01 08:00:00"}}),
        ));
        let car = live.vehicle("gbt32960", "LVIN1").unwrap();
        assert_eq!(
            (car.speed_kmh, car.soc, car.latitude),
            (Some(45.6), Some(80.0), Some(31.2304))
        );
        assert_eq!(car.last_kind, "info");
        assert_eq!(car.position_time.as_deref(), Some("2026-01-02 03:04:05"));
        let truck = live.vehicle("jt808", "013900000000").unwrap();
        assert_eq!((truck.latitude, truck.speed_kmh), (Some(-31.2304), Some(60.0)));
        assert_eq!(truck.last_kind, "0x0200");
        assert_eq!(live.vehicles().len(), 2);
    }

    #[test]
    fn tag_reads_are_kept_per_reader_newest_first_and_bounded() {
        let live = Live::default();
        for i in 0..(TAGS_PER_READER + 5) {
            live.observe(&committed(
                "gbt37987/north/up/report",
                json!({"msg": "TagSelectAccessReport", "body": {"tags": [{"tid": format!("{i:04x}"), "antenna": 1, "rssi": -40, "tag_data": {"plate": "ABC"}}]}}),
            ));
        }
        let tags = live.tags("north");
        assert_eq!(tags.len(), TAGS_PER_READER);
        assert_eq!(tags[0].tid.as_deref(), Some("0036"));
        assert_eq!(tags[0].plate.as_deref(), Some("ABC"));
        assert!(live.tags("south").is_empty());
    }

    #[test]
    fn records_that_are_not_device_data_are_ignored() {
        let live = Live::default();
        live.observe(&committed("edge/cab/alarm", json!({"alarm": "x"})));
        live.observe(&committed("gbt32960/V/upstream/response", json!({"ok": true})));
        live.observe(&committed("jt808/1/1/up", json!({"request_id": "r", "ok": true})));
        assert!(live.vehicles().is_empty());
    }
}
