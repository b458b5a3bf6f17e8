//! The appliance's counters in one place (CONTRACT section 8): what a field engineer needs to see,
//! published on `edge/{id}/metrics` and shown on the web page. Names here are the stable names.
//!
//! Counters are lock-free atomics bumped on hot paths; the few aggregates (PUBACK latency
//! percentiles, per-reader state) take a short mutex. `snapshot()` renders the JSON.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Counters kept per device protocol.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    /// Currently open connections.
    pub connections: AtomicI64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_bad: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Connections refused at the connection limit.
    pub refused_total: AtomicU64,
    /// TLS handshakes that failed (bad or missing client certificate, timeouts).
    pub handshake_failures: AtomicU64,
    /// Commits that failed, their messages refused to the device (it sends them again).
    pub commit_refusals: AtomicU64,
    /// Connections closed because the protocol's connections together buffered
    /// `max_buffered_bytes` of incomplete frames.
    pub buffer_limit_closed: AtomicU64,
}

impl ProtocolCounters {
    fn snapshot(&self) -> Value {
        json!({
            "connections": self.connections.load(Relaxed),
            "frames_in": self.frames_in.load(Relaxed),
            "frames_out": self.frames_out.load(Relaxed),
            "frames_bad": self.frames_bad.load(Relaxed),
            "bytes_in": self.bytes_in.load(Relaxed),
            "refused_total": self.refused_total.load(Relaxed),
            "handshake_failures": self.handshake_failures.load(Relaxed),
            "commit_refusals": self.commit_refusals.load(Relaxed),
            "buffer_limit_closed": self.buffer_limit_closed.load(Relaxed),
        })
    }
}

#[derive(Debug, Default)]
pub struct StoreCounters {
    pub backlog_rows: AtomicI64,
    pub backlog_bytes: AtomicI64,
    /// Creation time (ms since epoch) of the oldest unsent row; 0 when the backlog is empty.
    pub oldest_unsent_ms: AtomicI64,
    pub committed_total: AtomicU64,
    pub evicted_total: AtomicU64,
    /// Group commits performed (one transaction each).
    pub commits_total: AtomicU64,
    pub write_errors_total: AtomicU64,
    /// The database files on disk (main + WAL + shared memory), measured.
    pub db_bytes: AtomicI64,
    pub wal_bytes: AtomicI64,
    /// Free space of the store's file system.
    pub disk_free_bytes: AtomicI64,
    /// 1 while the disk is full (the database does not grow; see `store::writer`).
    pub disk_full: AtomicU64,
    /// Records refused for lack of space (their device was not acknowledged).
    pub refused_total: AtomicU64,
    pub checkpoints_total: AtomicU64,
}

#[derive(Debug, Default)]
pub struct UplinkCounters {
    pub connected: AtomicU64,
    pub published_total: AtomicU64,
    /// PUBACKs of any publish (records, status); the OTA health gate waits for one.
    pub pubacks_total: AtomicU64,
    pub reconnects_total: AtomicU64,
    pub commands_total: AtomicU64,
    /// Commands delivered again by the broker (same request id), not run or queued twice.
    pub commands_repeated_total: AtomicU64,
    puback_latency_ms: Mutex<LatencyWindow>,
}

impl UplinkCounters {
    pub fn record_puback_latency(&self, ms: u64) {
        if let Ok(mut w) = self.puback_latency_ms.lock() {
            w.push(ms);
        }
    }

    /// (p50, p99) of the recent PUBACK latencies in ms.
    pub fn puback_percentiles(&self) -> (u64, u64) {
        self.puback_latency_ms
            .lock()
            .map(|w| (w.percentile(50), w.percentile(99)))
            .unwrap_or((0, 0))
    }
}

/// The last `CAP` samples; enough for stable percentiles at the metrics period.
#[derive(Debug, Default)]
struct LatencyWindow {
    samples: Vec<u64>,
    next: usize,
}

impl LatencyWindow {
    const CAP: usize = 2048;

    fn push(&mut self, v: u64) {
        if self.samples.len() < Self::CAP {
            self.samples.push(v);
        } else {
            self.samples[self.next] = v;
        }
        self.next = (self.next + 1) % Self::CAP;
    }

    fn percentile(&self, p: usize) -> u64 {
        if self.samples.is_empty() {
            return 0;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let idx = (s.len() * p).div_ceil(100).saturating_sub(1).min(s.len() - 1);
        s[idx]
    }
}

/// Fusion counters (passages, anomalies, registry, telemetry index): `edge/{id}/metrics` under
/// `"fusion"`, and the web page.
#[derive(Debug, Default)]
pub struct FusionCounters {
    /// Passages by match kind.
    pub passages_tid: AtomicU64,
    pub passages_plate: AtomicU64,
    pub passages_none: AtomicU64,
    pub passages_telemetry_only: AtomicU64,
    /// Anomalies by kind (each also listed in its passage).
    pub cloned_tag: AtomicU64,
    pub missing_tag: AtomicU64,
    pub plate_mismatch: AtomicU64,
    /// Entries in the identity registry.
    pub registry_entries: AtomicI64,
    /// Automatic entries evicted (least recently seen) to make room.
    pub registry_evicted_total: AtomicU64,
    /// Automatic facts not stored: the registry was full of manual entries, or new entries came
    /// faster than the automatic-fill bound.
    pub registry_auto_dropped_total: AtomicU64,
    /// Vehicles and positions in the recent telemetry index.
    pub telemetry_vehicles: AtomicI64,
    pub telemetry_points: AtomicI64,
    /// Passes (tags being read) not yet ended.
    pub open_passes: AtomicI64,
    /// Committed records handed to fusion, and those dropped because fusion was behind
    /// (tag reports are caught up from the journal; telemetry is lost to fusion only).
    pub inputs_total: AtomicU64,
    pub inputs_dropped_total: AtomicU64,
    /// Records fusion could not read (bad JSON, missing fields).
    pub inputs_bad_total: AtomicU64,
    /// Tags whose plate could not be decoded (no plate, characters out of range).
    pub tag_plate_invalid_total: AtomicU64,
    /// Reads refused because too many passes were open (a flood of unknown TIDs).
    pub passes_refused_total: AtomicU64,
    /// Tag reports not journaled because the journal was full (their passages may be lost on a crash).
    pub journal_skipped_total: AtomicU64,
    /// Tag reports in the journal (committed, their passages not yet).
    pub journal_rows: AtomicI64,
    /// Tag reports read back from the journal (after a restart, or after fusion fell behind).
    pub journal_replayed_total: AtomicU64,
}

impl FusionCounters {
    /// Counts one passage of `kind` (`tid`, `plate`, `none`, `telemetry_only`).
    pub fn count_passage(&self, kind: &str) {
        let counter = match kind {
            "tid" => &self.passages_tid,
            "plate" => &self.passages_plate,
            "telemetry_only" => &self.passages_telemetry_only,
            _ => &self.passages_none,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts one anomaly of `kind` (`cloned_tag`, `missing_tag`, `plate_mismatch`).
    pub fn count_anomaly(&self, kind: &str) {
        match kind {
            "cloned_tag" => self.cloned_tag.fetch_add(1, Relaxed),
            "missing_tag" => self.missing_tag.fetch_add(1, Relaxed),
            _ => self.plate_mismatch.fetch_add(1, Relaxed),
        };
    }

    /// The `"fusion"` part of the metrics document.
    pub fn snapshot(&self) -> Value {
        json!({
            "passages_total": {
                "tid": self.passages_tid.load(Relaxed),
                "plate": self.passages_plate.load(Relaxed),
                "none": self.passages_none.load(Relaxed),
                "telemetry_only": self.passages_telemetry_only.load(Relaxed),
            },
            "anomalies_total": {
                "cloned_tag": self.cloned_tag.load(Relaxed),
                "missing_tag": self.missing_tag.load(Relaxed),
                "plate_mismatch": self.plate_mismatch.load(Relaxed),
            },
            "registry_entries": self.registry_entries.load(Relaxed),
            "registry_evicted_total": self.registry_evicted_total.load(Relaxed),
            "registry_auto_dropped_total": self.registry_auto_dropped_total.load(Relaxed),
            "telemetry_index_vehicles": self.telemetry_vehicles.load(Relaxed),
            "telemetry_index_points": self.telemetry_points.load(Relaxed),
            "open_passes": self.open_passes.load(Relaxed),
            "inputs_total": self.inputs_total.load(Relaxed),
            "inputs_dropped_total": self.inputs_dropped_total.load(Relaxed),
            "inputs_bad_total": self.inputs_bad_total.load(Relaxed),
            "tag_plate_invalid_total": self.tag_plate_invalid_total.load(Relaxed),
            "passes_refused_total": self.passes_refused_total.load(Relaxed),
            "journal_skipped_total": self.journal_skipped_total.load(Relaxed),
            "journal_rows": self.journal_rows.load(Relaxed),
            "journal_replayed_total": self.journal_replayed_total.load(Relaxed),
        })
    }
}

/// Link state of one reader, as shown on the status topic and the web page.
#[derive(Debug, Clone, Default)]
pub struct ReaderState {
    pub link_up: bool,
    pub last_seen: Option<String>,
    pub tag_reports_total: u64,
    pub alarms_active: u64,
}

/// Counters of remote configuration applies (`config.set`, the page's Apply) in this run of the
/// core (an apply restarts the core: how applies ended is kept in `config.get`'s `last`).
#[derive(Debug, Default)]
pub struct ConfigCounters {
    /// Refused: invalid, cannot start, unchanged, busy or another apply pending.
    pub refused_total: AtomicU64,
    /// Of those, refused for validation errors.
    pub invalid_total: AtomicU64,
}

/// Counters of the web page's server: requests and every kind of refusal.
#[derive(Debug, Default)]
pub struct WebCounters {
    pub requests_total: AtomicU64,
    /// 401: no or expired session, bad login.
    pub unauthorized_total: AtomicU64,
    /// 403: missing or wrong CSRF token, viewer writing.
    pub forbidden_total: AtomicU64,
    /// 400: bad JSON or parameters.
    pub bad_request_total: AtomicU64,
    /// 413: bodies over their limit.
    pub too_large_total: AtomicU64,
    /// 429: logins of a blocked address, too many live views or jobs.
    pub rate_limited_total: AtomicU64,
    /// Connections answered 503 at the connection limits.
    pub refused_total: AtomicU64,
    /// Connections closed for sending headers or a body too slowly.
    pub slow_closed_total: AtomicU64,
    pub login_failures_total: AtomicU64,
    /// Open connections.
    pub connections: AtomicI64,
}

impl WebCounters {
    fn snapshot(&self) -> Value {
        json!({
            "requests_total": self.requests_total.load(Relaxed),
            "unauthorized_total": self.unauthorized_total.load(Relaxed),
            "forbidden_total": self.forbidden_total.load(Relaxed),
            "bad_request_total": self.bad_request_total.load(Relaxed),
            "too_large_total": self.too_large_total.load(Relaxed),
            "rate_limited_total": self.rate_limited_total.load(Relaxed),
            "refused_total": self.refused_total.load(Relaxed),
            "slow_closed_total": self.slow_closed_total.load(Relaxed),
            "login_failures_total": self.login_failures_total.load(Relaxed),
            "connections": self.connections.load(Relaxed),
        })
    }
}

/// Every counter of the appliance.
#[derive(Debug, Default)]
pub struct Metrics {
    pub gbt32960: Arc<ProtocolCounters>,
    pub jt808: Arc<ProtocolCounters>,
    pub gbt37987: Arc<ProtocolCounters>,
    pub store: StoreCounters,
    pub uplink: UplinkCounters,
    pub readers: Mutex<BTreeMap<String, ReaderState>>,
    /// How often the global bounds and identity rules bit.
    pub limits: crate::limits::LimitCounters,
    pub fusion: FusionCounters,
    pub web: WebCounters,
    pub config: ConfigCounters,
}

impl Metrics {
    /// Seconds since the oldest unsent row was created, at `now_ms`.
    pub fn oldest_unsent_age_s(&self, now_ms: i64) -> i64 {
        match self.store.oldest_unsent_ms.load(Relaxed) {
            0 => 0,
            t => ((now_ms - t) / 1000).max(0),
        }
    }

    /// The JSON published on `edge/{id}/metrics`; `system` comes from `ops::system`.
    pub fn snapshot(&self, now_ms: i64, system: Value) -> Value {
        let (p50, p99) = self.uplink.puback_percentiles();
        let readers: BTreeMap<String, Value> = self
            .readers
            .lock()
            .map(|r| {
                r.iter()
                    .map(|(id, s)| {
                        (
                            id.clone(),
                            json!({
                                "link": if s.link_up { "up" } else { "down" },
                                "last_seen": s.last_seen,
                                "tag_reports_total": s.tag_reports_total,
                                "alarms_active": s.alarms_active,
                            }),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "gbt32960": self.gbt32960.snapshot(),
            "jt808": self.jt808.snapshot(),
            "gbt37987": self.gbt37987.snapshot(),
            "store": {
                "backlog_rows": self.store.backlog_rows.load(Relaxed),
                "backlog_bytes": self.store.backlog_bytes.load(Relaxed),
                "oldest_unsent_age_s": self.oldest_unsent_age_s(now_ms),
                "committed_total": self.store.committed_total.load(Relaxed),
                "evicted_total": self.store.evicted_total.load(Relaxed),
                "db_bytes": self.store.db_bytes.load(Relaxed),
                "wal_bytes": self.store.wal_bytes.load(Relaxed),
                "disk_free_bytes": self.store.disk_free_bytes.load(Relaxed),
                "disk_full": self.store.disk_full.load(Relaxed) == 1,
                "refused_total": self.store.refused_total.load(Relaxed),
            },
            "uplink": {
                "connected": self.uplink.connected.load(Relaxed) == 1,
                "published_total": self.uplink.published_total.load(Relaxed),
                "puback_latency_ms_p50": p50,
                "puback_latency_ms_p99": p99,
                "reconnects_total": self.uplink.reconnects_total.load(Relaxed),
            },
            "readers": readers,
            "limits": self.limits.snapshot(),
            "fusion": self.fusion.snapshot(),
            "web": self.web.snapshot(),
            "config": {
                "refused_total": self.config.refused_total.load(Relaxed),
                "invalid_total": self.config.invalid_total.load(Relaxed),
            },
            "system": system,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recent_window() {
        let m = UplinkCounters::default();
        for v in 1..=100 {
            m.record_puback_latency(v);
        }
        assert_eq!(m.puback_percentiles(), (50, 99));
        for _ in 0..LatencyWindow::CAP {
            m.record_puback_latency(7);
        }
        assert_eq!(m.puback_percentiles(), (7, 7));
    }

    #[test]
    fn snapshot_uses_the_contract_names() {
        let m = Metrics::default();
        let s = m.snapshot(0, json!({}));
        for key in [
            "backlog_rows",
            "backlog_bytes",
            "oldest_unsent_age_s",
            "committed_total",
            "evicted_total",
        ] {
            assert!(s["store"].get(key).is_some(), "{key}");
        }
        for key in ["connections", "frames_in", "frames_out", "frames_bad", "bytes_in"] {
            assert!(s["jt808"].get(key).is_some(), "{key}");
        }
    }
}
