//! The fusion service: the async shell around the pure [`Engine`]. It consumes committed records
//! only (the store's tap, after COMMIT), so fusion never delays an acknowledgement, and writes its
//! passages back through the store (critical class) like any other record.
//!
//! - **Inputs.** The store's tap (a bounded broadcast the writer never waits on): tag reports,
//!   GB/T 32960 positions and logins, JT/T 808 positions, registrations and authentications. A
//!   tap that overflows drops its oldest records; they are counted (`inputs_dropped_total`);
//!   dropped tag reports are read back from the journal, dropped telemetry is lost to fusion.
//! - **Crash safety: replay from the journal.** Every committed tag report is also written to
//!   `fusion_journal` in the same transaction as its outbox row (the store does it, see
//!   [`crate::store::Store::journal_tag_reports`]). The write that commits passages also deletes
//!   the journal rows below the engine's low-water mark (every tag report older than any pass
//!   still open) in the same transaction. At start the service reads the journal back in `seq`
//!   order and derives the passages again, with the same ids (`<edge_id>-<seq>-<n>`), so a
//!   kill -9 at any point loses no passage whose tag report was acknowledged, and a passage is
//!   published twice at most when a crash hits after its commit and before its PUBACK (the
//!   cloud drops it by `passage_id`).
//! - **Registry.** Facts of committed records fill it (0x0100, 32960 logins, tag reads) in the
//!   passage transactions; lookups by TID, plate, VIN and phone are one indexed read each.
//! - **Alarms.** Each anomaly raises its edge alarm (`cloned_tag`, `plate_mismatch` about the
//!   TID, `missing_tag` about the vehicle) in the passage's own transaction, through
//!   [`Alarms::raise_in`]; the next clean passage of the same subject clears it.
//! - **Readers.** Their link states (from the metrics the reader service keeps) go to the
//!   engine every tick, so an offline gantry suppresses `missing_tag` for its lanes.
//!
//! Owns: the engine and its clocks, the recent-passages view behind `GET /api/passages` and the
//! `passages.list` edge command (one implementation, two doors).
//! Must not: be a step before an acknowledgement, or write other than through the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::engine::{AnomalyKind, Engine, EngineConfig, Identity, MatchKind, Ms, Passage, ReaderPlace, VehicleKey};
use super::geo::GeoPoint;
use super::input;
use super::registry::{Fact, Key, Registry, Vehicle};
use crate::command::{EdgeActions, Outcome};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ops::alarms::Alarms;
use crate::store::{Committed, Record, RecordClass, Store, StoreError};
use crate::time::now_ms;

/// How often passes and zone visits are ended, reader states refreshed and passages written.
pub const TICK: Duration = Duration::from_millis(500);
/// Passages the recent view keeps (the page and `passages.list`).
pub const RECENT_PASSAGES: usize = 2000;
/// Rows `passages.list` / `GET /api/passages` return at most.
pub const MAX_LIST: usize = 500;
/// Journal rows read back per read while catching up.
const REPLAY_CHUNK: i64 = 2000;
/// Fusion alarms active at once at most: beyond it anomalies are only counted and listed.
const MAX_ACTIVE_ALARMS: usize = 1000;
/// Registry facts waiting for the next passage transaction at most (the rest are counted).
const MAX_PENDING_FACTS: usize = 20_000;
/// Facts remembered as written, so a tag read 40 times writes its fact once per this period.
const FACT_REFRESH_MS: Ms = 600_000;
const MAX_FACTS_REMEMBERED: usize = 50_000;
/// Passages kept for a retry when their write failed (a full store), at most.
const MAX_UNWRITTEN: usize = 10_000;

/// What the service needs from the configuration.
#[derive(Debug, Clone)]
pub struct FusionSettings {
    pub edge_id: String,
    pub engine: EngineConfig,
}

impl FusionSettings {
    /// From the configuration; `None` when `fusion:` is omitted (or `edge.site` is, which the
    /// validation already refuses).
    pub fn from_config(config: &Config) -> Option<FusionSettings> {
        let fusion = config.fusion.as_ref()?;
        let site = config.edge.site.as_ref()?;
        let readers = config
            .readers
            .iter()
            .flat_map(|r| r.devices.iter())
            .map(|d| {
                let p = &d.position;
                (
                    d.id.to_string(),
                    ReaderPlace {
                        position: p.latitude.zip(p.longitude).map(|(a, b)| GeoPoint::new(a, b)),
                        lane: p.lane.clone(),
                        direction: p.direction,
                    },
                )
            })
            .collect();
        Some(FusionSettings {
            edge_id: config.edge.id.to_string(),
            engine: EngineConfig {
                site_name: site.name.clone(),
                site: GeoPoint::new(site.latitude, site.longitude),
                window_ms: fusion.window.as_millis() as Ms,
                radius_m: fusion.radius_m,
                merge_ms: fusion.merge_window.as_millis() as Ms,
                max_skew_ms: fusion.max_clock_skew.as_millis() as Ms,
                checks: fusion.checks,
                readers,
            },
        })
    }
}

/// What `passages.list` and `GET /api/passages` look for.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassageQuery {
    /// Text in the passage's plates, VIN, phone, TID or reader (case-insensitive).
    #[serde(default)]
    pub query: Option<String>,
    /// Only passages with this anomaly (`cloned_tag`, `missing_tag`, `plate_mismatch`), or with
    /// any (`any`).
    #[serde(default)]
    pub anomaly: Option<String>,
    /// Only passages of this match kind (`tid`, `plate`, `none`, `telemetry_only`).
    #[serde(default, rename = "match")]
    pub match_kind: Option<String>,
    /// Rows \[100\], at most [`MAX_LIST`].
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A page of recent passages, newest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PassagePage {
    /// Passages in the recent view matching the query.
    pub total: usize,
    pub passages: Vec<Value>,
}

/// The service handle: the recent view (the engine itself lives in the service task).
pub struct FusionService {
    recent: Mutex<VecDeque<Arc<Value>>>,
}

impl FusionService {
    /// Recent passages (since the start, at most [`RECENT_PASSAGES`]) matching `query`.
    pub fn list(&self, query: &PassageQuery) -> Result<PassagePage, String> {
        let limit = query.limit.unwrap_or(100).min(MAX_LIST);
        const KINDS: [&str; 4] = ["tid", "plate", "none", "telemetry_only"];
        const ANOMALIES: [&str; 4] = ["any", "cloned_tag", "missing_tag", "plate_mismatch"];
        let text = query
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
        if text.as_ref().is_some_and(|t| t.len() > 64) {
            return Err("query: at most 64 bytes".into());
        }
        let anomaly = query.anomaly.as_deref().filter(|a| !a.is_empty());
        if let Some(a) = anomaly.filter(|a| !ANOMALIES.contains(a)) {
            return Err(format!("anomaly: `{a}` is not one of {}", ANOMALIES.join(", ")));
        }
        let kind = query.match_kind.as_deref().filter(|k| !k.is_empty());
        if let Some(k) = kind.filter(|k| !KINDS.contains(k)) {
            return Err(format!("match: `{k}` is not one of {}", KINDS.join(", ")));
        }
        let recent = self
            .recent
            .lock()
            .map_err(|_| "the passage view is unavailable".to_string())?;
        let mut total = 0;
        let mut passages = Vec::new();
        for p in recent.iter().rev() {
            if kind.is_some_and(|k| p["match"] != k) {
                continue;
            }
            if let Some(a) = anomaly {
                let list = p["anomalies"].as_array();
                let hit = list.is_some_and(|l| {
                    if a == "any" {
                        !l.is_empty()
                    } else {
                        l.iter().any(|x| x == a)
                    }
                });
                if !hit {
                    continue;
                }
            }
            if let Some(t) = &text {
                let fields = [
                    &p["tag"]["plate"],
                    &p["tag"]["tid"],
                    &p["vehicle"]["plate"],
                    &p["vehicle"]["vin"],
                    &p["vehicle"]["phone"],
                    &p["reader"]["id"],
                ];
                let hit = fields
                    .iter()
                    .filter_map(|v| v.as_str())
                    .any(|v| v.to_lowercase().contains(t.as_str()));
                if !hit {
                    continue;
                }
            }
            total += 1;
            if passages.len() < limit {
                passages.push((**p).clone());
            }
        }
        Ok(PassagePage { total, passages })
    }

    fn remember(&self, passages: &[Value]) {
        if let Ok(mut recent) = self.recent.lock() {
            for p in passages {
                if recent.len() >= RECENT_PASSAGES {
                    recent.pop_front();
                }
                recent.push_back(Arc::new(p.clone()));
            }
        }
    }
}

/// Registers `passages.list {"query"?, "anomaly"?, "match"?, "limit"?}` on the edge command
/// table; it calls [`FusionService::list`], as the web page does.
pub fn register_actions(service: Arc<FusionService>, actions: &EdgeActions) {
    actions.register("passages.list", move |command: Value| {
        let service = service.clone();
        async move {
            let mut command = command;
            if let Some(o) = command.as_object_mut() {
                o.remove("action");
                o.remove("request_id");
            }
            let query = match PassageQuery::deserialize(&command) {
                Ok(q) => q,
                Err(e) => return Outcome::Rejected(format!("passages.list: {e}")),
            };
            match service.list(&query) {
                Ok(page) => Outcome::Answer(json!(page)),
                Err(e) => Outcome::Rejected(e),
            }
        }
    });
}

/// The dependencies of the service task.
pub struct FusionDeps {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// Starts fusion: switches the store's tag-report journal on (before any reader starts, so no
/// acknowledged tag report escapes it), subscribes to the tap, and spawns the task that replays
/// the journal and then follows the tap until `shutdown`.
pub fn start(
    settings: FusionSettings,
    deps: FusionDeps,
    shutdown: CancellationToken,
) -> (Arc<FusionService>, tokio::task::JoinHandle<()>) {
    deps.store.journal_tag_reports(true);
    let tap = deps.store.tap();
    let service = Arc::new(FusionService {
        recent: Mutex::new(VecDeque::new()),
    });
    let alarms_view = deps.store.alarm_set();
    let core = Core {
        engine: Engine::new(settings.engine.clone(), now_ms()),
        settings,
        deps,
        service: service.clone(),
        alarms_view,
        last_tag_seq: 0,
        written_horizon: 0,
        facts: Vec::new(),
        written_facts: HashMap::new(),
        unwritten: Vec::new(),
    };
    let task = tokio::spawn(core.run(tap, shutdown));
    (service, task)
}

struct Core {
    settings: FusionSettings,
    deps: FusionDeps,
    engine: Engine,
    service: Arc<FusionService>,
    alarms_view: Arc<crate::store::alarms::AlarmSet>,
    /// The highest tag-report `seq` handed to the engine.
    last_tag_seq: i64,
    /// The journal horizon of the last committed passage write.
    written_horizon: i64,
    /// Registry facts for the next passage transaction.
    facts: Vec<Fact>,
    written_facts: HashMap<Fact, Ms>,
    /// Passages whose write failed, tried again with the next ones.
    unwritten: Vec<Passage>,
}

fn identity(v: Vehicle) -> Identity {
    Identity {
        id: v.id,
        plate: v.plate,
        plate_color: v.plate_color,
        vin: v.vin,
        phone: v.phone,
        tid: v.tid,
    }
}

impl Core {
    async fn run(mut self, mut tap: tokio::sync::broadcast::Receiver<Arc<Committed>>, shutdown: CancellationToken) {
        // Everything committed before the subscription is in the journal; what follows comes
        // through the tap (tag reports already replayed are skipped by seq).
        self.catch_up().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick().await,
                got = tap.recv() => match got {
                    Ok(record) => self.record(&record).await,
                    Err(RecvError::Lagged(n)) => {
                        self.deps.metrics.fusion.inputs_dropped_total.fetch_add(n, Relaxed);
                        tracing::warn!(dropped = n, "fusion fell behind the store; tag reports are read back from the journal");
                        self.catch_up().await;
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
        // Passes still open are derived again from the journal at the next start.
        if !self.facts.is_empty() || !self.unwritten.is_empty() {
            self.write(Vec::new()).await;
        }
    }

    /// Reads the journal's tag reports newer than the last one handed to the engine.
    async fn catch_up(&mut self) {
        loop {
            let after = self.last_tag_seq;
            let rows = self
                .deps
                .store
                .read(move |c| {
                    let mut stmt = c.prepare_cached(
                        "SELECT seq, topic, received_ms, body FROM fusion_journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )?;
                    let rows = stmt
                        .query_map(rusqlite::params![after, REPLAY_CHUNK], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, Vec<u8>>(3)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!("fusion cannot read its journal: {e}");
                    return;
                }
            };
            let n = rows.len() as i64;
            for (seq, topic, received_ms, body) in rows {
                self.deps.metrics.fusion.journal_replayed_total.fetch_add(1, Relaxed);
                self.input(&topic, &body, seq, received_ms).await;
                self.last_tag_seq = self.last_tag_seq.max(seq);
                // Long replays end passes as they go, so open passes stay bounded.
                if self.engine.open_passes() > super::engine::MAX_OPEN_PASSES / 2 {
                    self.tick().await;
                }
            }
            if n < REPLAY_CHUNK {
                return;
            }
        }
    }

    async fn record(&mut self, record: &Committed) {
        if crate::store::is_tag_report(&record.topic) {
            if record.seq <= self.last_tag_seq {
                return;
            }
            self.last_tag_seq = record.seq;
        }
        self.input(&record.topic, &record.body, record.seq, record.received_at_ms)
            .await;
    }

    async fn input(&mut self, topic: &str, body: &[u8], seq: i64, received_ms: Ms) {
        let metrics = self.deps.metrics.clone();
        let m = &metrics.fusion;
        let input = match input::read(topic, body, seq, received_ms) {
            Ok(i) => i,
            Err(e) => {
                m.inputs_bad_total.fetch_add(1, Relaxed);
                tracing::debug!(topic, "fusion skips a record: {e}");
                return;
            }
        };
        m.inputs_bad_total.fetch_add(input.bad_tags, Relaxed);
        m.tag_plate_invalid_total.fetch_add(input.bad_plates, Relaxed);
        if input.reads.is_empty() && input.points.is_empty() && input.facts.is_empty() {
            return;
        }
        m.inputs_total.fetch_add(1, Relaxed);
        let now = now_ms();
        for fact in input.facts {
            self.fact(fact, now);
        }
        for read in input.reads {
            let found = if self.engine.has_open_pass(&read.tid, &read.reader) {
                None
            } else {
                self.find_tag(&read.tid, read.plate.as_deref()).await
            };
            if !self.engine.tag_read(read, found) {
                m.passes_refused_total.fetch_add(1, Relaxed);
            }
        }
        for point in input.points {
            if let Some(key) = self.engine.telemetry(point) {
                let lookup = match &key {
                    VehicleKey::Vin(v) => Key::Vin(v.clone()),
                    VehicleKey::Phone(p) => Key::Phone(p.clone()),
                };
                let found = match self.deps.registry.lookup(lookup).await {
                    Ok(v) => v.map(identity),
                    Err(e) => {
                        tracing::warn!("registry lookup failed: {e}");
                        None
                    }
                };
                self.engine.identify(&key, found);
            }
        }
    }

    /// The vehicle of a tag: by TID first, then by the plate the tag carries.
    async fn find_tag(&self, tid: &str, plate: Option<&str>) -> Option<(Identity, MatchKind)> {
        let mut keys = vec![Key::Tid(tid.to_string())];
        keys.extend(plate.map(|p| Key::Plate(p.to_string())));
        match self.deps.registry.lookup_many(keys).await {
            Ok(found) => {
                let mut found = found.into_iter();
                if let Some(Some(v)) = found.next() {
                    return Some((identity(v), MatchKind::Tid));
                }
                found.next().flatten().map(|v| (identity(v), MatchKind::Plate))
            }
            Err(e) => {
                tracing::warn!("registry lookup failed: {e}");
                None
            }
        }
    }

    fn fact(&mut self, fact: Fact, now: Ms) {
        if self.written_facts.get(&fact).is_some_and(|t| now - t < FACT_REFRESH_MS) {
            return;
        }
        if self.facts.len() >= MAX_PENDING_FACTS {
            self.deps
                .metrics
                .fusion
                .registry_auto_dropped_total
                .fetch_add(1, Relaxed);
            return;
        }
        if self.written_facts.len() >= MAX_FACTS_REMEMBERED {
            self.written_facts.retain(|_, t| now - *t < FACT_REFRESH_MS);
            if self.written_facts.len() >= MAX_FACTS_REMEMBERED {
                self.written_facts.clear();
            }
        }
        self.written_facts.insert(fact.clone(), now);
        self.facts.push(fact);
    }

    async fn tick(&mut self) {
        let now = now_ms();
        let links: Vec<(String, bool)> = self
            .deps
            .metrics
            .readers
            .lock()
            .map(|r| r.iter().map(|(id, s)| (id.clone(), s.link_up)).collect())
            .unwrap_or_default();
        for (id, up) in links {
            self.engine.reader_status(&id, up, now);
        }
        let passages = self.engine.tick(now);
        // Tag reports whose passes all ended (or that had no readable tag) leave the journal
        // even when no passage is due.
        let horizon_moved = self.horizon() > self.written_horizon;
        if !passages.is_empty() || !self.facts.is_empty() || !self.unwritten.is_empty() || horizon_moved {
            self.write(passages).await;
        }
        let m = &self.deps.metrics.fusion;
        let (vehicles, points) = self.engine.index_size();
        m.telemetry_vehicles.store(vehicles as i64, Relaxed);
        m.telemetry_points.store(points as i64, Relaxed);
        m.open_passes.store(self.engine.open_passes() as i64, Relaxed);
    }

    /// Every journaled tag report below this is accounted for by a passage made (or being made).
    fn horizon(&self) -> i64 {
        self.engine.low_water().unwrap_or(self.last_tag_seq + 1)
    }

    /// Commits `passages` (and any left from a failed write), their alarms, the pending registry
    /// facts and the journal's clean-up in one transaction.
    async fn write(&mut self, passages: Vec<Passage>) {
        let mut all = std::mem::take(&mut self.unwritten);
        all.extend(passages);
        let horizon = self.horizon();
        let edge_id = self.settings.edge_id.clone();
        let documents: Vec<Value> = all.iter().map(|p| p.to_json(&edge_id, &self.settings.engine)).collect();
        let alarm_changes = self.alarm_changes(&all);
        let facts = std::mem::take(&mut self.facts);
        let facts_writer = self.deps.registry.facts_writer();
        let topic = crate::topics::edge(&edge_id, crate::topics::EdgeTopic::Passage);
        let docs = documents.clone();
        let journal_total = self.deps.metrics.clone();
        let result = self
            .deps
            .store
            .write(move |ctx| {
                for doc in &docs {
                    let record = Record::new("edge/passage", topic.clone(), RecordClass::Critical, doc);
                    ctx.append(&record)?;
                }
                for (raise, name, subject, detail) in &alarm_changes {
                    if *raise {
                        Alarms::raise_in(ctx, name, subject, detail.clone())?;
                    } else {
                        Alarms::clear_in(ctx, name, subject, detail.clone())?;
                    }
                }
                if !facts.is_empty() {
                    facts_writer.apply(ctx, &facts, now_ms())?;
                }
                let deleted = ctx
                    .conn()
                    .prepare_cached("DELETE FROM fusion_journal WHERE seq < ?1")?
                    .execute([horizon])?;
                journal_total.fusion.journal_rows.fetch_sub(deleted as i64, Relaxed);
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                self.written_horizon = horizon;
                let m = &self.deps.metrics.fusion;
                for p in &all {
                    m.count_passage(p.match_kind.name());
                    for a in &p.anomalies {
                        m.count_anomaly(a.kind.name());
                    }
                }
                self.service.remember(&documents);
            }
            Err(e) => {
                tracing::error!(passages = all.len(), "fusion cannot commit its passages yet: {e}");
                if !matches!(e, StoreError::Closed) {
                    all.truncate(MAX_UNWRITTEN);
                    self.unwritten = all;
                }
            }
        }
    }

    /// (raise?, alarm, subject, detail) for the anomalies of `passages`, and the clears their
    /// clean passages make.
    fn alarm_changes(&self, passages: &[Passage]) -> Vec<(bool, String, String, Value)> {
        let mut changes = Vec::new();
        let active = self.alarms_view.active();
        let fusion_active = active
            .iter()
            .filter(|a| matches!(a.name.as_str(), "cloned_tag" | "missing_tag" | "plate_mismatch"))
            .count();
        let mut room = MAX_ACTIVE_ALARMS.saturating_sub(fusion_active);
        let is_active = |name: &str, subject: &str| active.iter().any(|a| a.name == name && a.subject == subject);
        for p in passages {
            let id = p.passage_id(&self.settings.edge_id);
            for a in &p.anomalies {
                if is_active(a.kind.name(), &a.subject) || room == 0 {
                    continue;
                }
                room -= 1;
                let mut detail = a.detail.clone();
                detail["passage_id"] = json!(id);
                changes.push((true, a.kind.name().to_string(), a.subject.clone(), detail));
            }
            let has = |k: AnomalyKind| p.anomalies.iter().any(|a| a.kind == k);
            let mut clear = |name: &str, subject: &str| {
                if is_active(name, subject) {
                    changes.push((
                        false,
                        name.to_string(),
                        subject.to_string(),
                        json!({"passage_id": id, "reason": "a later passage showed no such anomaly"}),
                    ));
                }
            };
            if let Some(tag) = &p.tag {
                if !has(AnomalyKind::ClonedTag) && p.telemetry.is_some() {
                    clear("cloned_tag", &tag.tid);
                }
                if !has(AnomalyKind::PlateMismatch) && p.match_kind == MatchKind::Tid {
                    clear("plate_mismatch", &tag.tid);
                }
                if let Some(plate) = p.vehicle.as_ref().and_then(|v| v.plate.as_deref()) {
                    clear("missing_tag", plate);
                }
            }
        }
        changes
    }
}
