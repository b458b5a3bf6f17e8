//! The passage engine: pure (no tokio, no I/O, no clock: every input carries its times and `now`
//! is passed in), so every match kind and anomaly is tested over scripted timelines.
//!
//! Inputs: tag reads (from committed tag reports, with the vehicle the registry found for the
//! tag), telemetry points (from committed GB/T 32960 and JT/T 808 records), reader link states.
//! Outputs: passages ([`Passage`]), each listing its anomalies.
//!
//! - **Passes.** Reads of one tag in one zone closer than `merge_window` are one pass, however many
//!   antennas and readers saw it; a pass ends once no read came for `merge_window` and `window`
//!   has passed since its first read (telemetry arriving late, up to `window` after the read,
//!   still counts). Then its passage is made: the telemetry nearest in time within `window` of
//!   the vehicle's VIN and phone tracks, its distance to the reader and its time gap.
//! - **Clocks.** Each source (reader, terminal) keeps the offsets between its own times and the
//!   edge's receive times; the smallest recent one is its clock error plus the least delay. Within
//!   `max_clock_skew` the source's own time is used, beyond it the source's time corrected by that
//!   offset, and without a source time the edge's receive time; passages say which.
//! - **cloned_tag**: the matched vehicle's own telemetry puts it farther than `radius_m` from the
//!   reader at the read time (interpolated between reports, or allowing [`MAX_SPEED_MPS`] for the
//!   gap to the nearest one); or two readers too far apart for any vehicle read the same TID.
//! - **missing_tag**: a vehicle's telemetry crosses the zone (`radius_m` around the site) and no
//!   tag of it is read within `window`: a `telemetry_only` passage. A reader that was offline
//!   meanwhile suppresses it for the vehicles of its lanes (its `direction`, else all).
//! - **plate_mismatch**: the plate the tag carries differs from the registry's plate of the vehicle
//!   found by the tag's TID.
//!
//! Bounded: open passes, tracks (vehicles), points per track, TID sightings and clock sources are
//! capped; what does not fit is refused and counted in [`EngineStats`].

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Map, Value};

use super::geo::{heading_difference, GeoPoint};
use crate::config::FusionChecks;

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

/// Fastest plausible vehicle (252 km/h): the slack allowed for the time between a read and a
/// report, and the speed two far-apart readers of one TID would need.
pub const MAX_SPEED_MPS: f64 = 70.0;
/// Passes open at once at most (a flood of unknown TIDs is refused beyond it).
pub const MAX_OPEN_PASSES: usize = 10_000;
/// Vehicles tracked at most in the telemetry index.
pub const MAX_TRACKS: usize = 20_000;
/// Positions kept per vehicle.
pub const MAX_POINTS_PER_TRACK: usize = 64;
/// TIDs whose last sighting is remembered (for the two-reader clone check and missing_tag).
pub const MAX_SIGHTINGS: usize = 50_000;
/// Sources whose clock offsets are kept.
pub const MAX_CLOCKS: usize = 50_000;
/// Per source, the smallest clock offset of each of the last this many minutes is kept: a burst
/// of late (buffered) reports cannot push the timely ones out.
const CLOCK_MINUTES: usize = 10;
/// Reports a vehicle must have made in the zone before it can be missing a tag.
const MIN_ZONE_POINTS: usize = 1;
/// A tag read and a report closer than this are "at the same time": the position is taken as is.
const SAME_TIME_MS: Ms = 1_000;
/// Offline periods remembered per reader.
const MAX_OFFLINE_PERIODS: usize = 16;
/// A reader whose lane direction is this close to a vehicle's heading covers it.
const LANE_HEADING_TOLERANCE_DEG: f64 = 60.0;

/// What the engine needs to know about the site.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub site_name: String,
    pub site: GeoPoint,
    pub window_ms: Ms,
    pub radius_m: f64,
    pub merge_ms: Ms,
    pub max_skew_ms: Ms,
    pub checks: FusionChecks,
    /// Configured readers by id.
    pub readers: HashMap<String, ReaderPlace>,
}

/// Where a reader is and which lane it covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReaderPlace {
    /// Its antennas' position; the site's when absent.
    pub position: Option<GeoPoint>,
    pub lane: Option<String>,
    /// Travel direction of its lane in degrees.
    pub direction: Option<f64>,
}

/// Which clock a time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The device's own clock (within `max_clock_skew` of the edge's).
    Source,
    /// The device's clock corrected by its observed offset.
    Corrected,
    /// The edge's receive time (the device gave no time).
    Edge,
}

impl Basis {
    fn name(self, device: &str) -> String {
        match self {
            Basis::Source => device.to_string(),
            Basis::Corrected => format!("{device}_corrected"),
            Basis::Edge => "edge".to_string(),
        }
    }
}

/// The vehicle the registry found (or holds) for a tag or a telemetry source.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// Registry row id.
    pub id: i64,
    pub plate: Option<String>,
    pub plate_color: Option<u8>,
    pub vin: Option<String>,
    pub phone: Option<String>,
    pub tid: Option<String>,
}

/// How the vehicle of a tag was found in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    Tid,
    Plate,
    None,
    TelemetryOnly,
}

impl MatchKind {
    pub fn name(self) -> &'static str {
        match self {
            MatchKind::Tid => "tid",
            MatchKind::Plate => "plate",
            MatchKind::None => "none",
            MatchKind::TelemetryOnly => "telemetry_only",
        }
    }
}

/// One tag of a committed tag report.
#[derive(Debug, Clone, PartialEq)]
pub struct TagRead {
    /// `seq` of the committed tag report, and the tag's position in it (the passage id).
    pub report_seq: i64,
    pub index: usize,
    pub reader: String,
    pub antenna: Option<u64>,
    /// Lowercase hex.
    pub tid: String,
    pub cid: Option<String>,
    /// The plate the tag carries (decoded), when it could be read.
    pub plate: Option<String>,
    pub plate_type: Option<u64>,
    pub rssi: Option<i64>,
    pub seen_count: Option<u64>,
    /// The reader's own time of the read.
    pub source_ms: Option<Ms>,
    /// When the edge received the report.
    pub received_ms: Ms,
}

/// Which protocol a telemetry point came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Gbt32960,
    Jt808,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Gbt32960 => "gbt32960",
            Source::Jt808 => "jt808",
        }
    }
}

/// The identifier a telemetry source reports under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VehicleKey {
    Vin(String),
    Phone(String),
}

impl VehicleKey {
    fn text(&self) -> &str {
        match self {
            VehicleKey::Vin(v) | VehicleKey::Phone(v) => v,
        }
    }
}

/// One position report of a vehicle.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryPoint {
    pub key: VehicleKey,
    pub source: Source,
    /// `seq` of the committed record.
    pub seq: i64,
    /// The terminal's own time of the position.
    pub source_ms: Option<Ms>,
    pub received_ms: Ms,
    pub position: GeoPoint,
    pub speed_kmh: Option<f64>,
    pub heading: Option<f64>,
    pub soc: Option<f64>,
    pub mileage_km: Option<f64>,
}

/// An anomaly found in a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    ClonedTag,
    MissingTag,
    PlateMismatch,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::ClonedTag => "cloned_tag",
            AnomalyKind::MissingTag => "missing_tag",
            AnomalyKind::PlateMismatch => "plate_mismatch",
        }
    }
}

/// An anomaly with what it is about (the alarm's subject) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    /// A TID (cloned_tag, plate_mismatch) or a vehicle (missing_tag).
    pub subject: String,
    pub detail: Value,
}

/// The telemetry a passage matched.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedTelemetry {
    pub point: TelemetryPoint,
    pub time_ms: Ms,
    pub basis: Basis,
    /// Telemetry time minus the passage time (negative: the report came before the read).
    pub time_gap_ms: Ms,
    /// From the report's position to the reader (or the site, for telemetry-only passages).
    pub distance_m: f64,
}

/// The tag side of a passage.
#[derive(Debug, Clone, PartialEq)]
pub struct PassTag {
    pub tid: String,
    pub cid: Option<String>,
    pub plate: Option<String>,
    pub plate_type: Option<u64>,
    pub rssi: Option<i64>,
    pub seen_count: Option<u64>,
    /// Tag reads merged into this pass.
    pub reads: u64,
    pub antennas: Vec<u64>,
    pub readers: Vec<String>,
}

/// One passage.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    /// `seq` of the record the passage is derived from (the first tag report of the pass, or the
    /// first in-zone telemetry report) and the position in it: `<edge_id>-<seq>-<n>`.
    pub origin_seq: i64,
    pub origin_index: usize,
    pub time_ms: Ms,
    pub basis: Basis,
    /// Reader id and antenna of the first read.
    pub reader: Option<(String, Option<u64>)>,
    pub tag: Option<PassTag>,
    pub vehicle: Option<Identity>,
    pub telemetry: Option<MatchedTelemetry>,
    pub match_kind: MatchKind,
    pub anomalies: Vec<Anomaly>,
    /// Why an anomaly was not raised (a check off, a reader offline).
    pub notes: Vec<String>,
    /// The lowest report `seq` this passage accounts for (journal bookkeeping).
    pub first_seq: i64,
}

/// Refusals and sizes, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub passes_refused: u64,
    pub tracks_refused: u64,
    pub points_dropped: u64,
}

#[derive(Debug, Clone)]
struct Pass {
    first: TagRead,
    first_time: Ms,
    basis: Basis,
    last_time: Ms,
    first_received: Ms,
    last_received: Ms,
    identity: Option<Identity>,
    kind: MatchKind,
    reads: u64,
    antennas: Vec<u64>,
    readers: Vec<String>,
    rssi: Option<i64>,
    seen_count: Option<u64>,
    plate: Option<String>,
    cid: Option<String>,
    plate_type: Option<u64>,
    anomalies: Vec<Anomaly>,
    min_seq: i64,
}

#[derive(Debug, Clone)]
struct Point {
    time: Ms,
    basis: Basis,
    received: Ms,
    data: TelemetryPoint,
}

#[derive(Debug, Clone)]
struct Visit {
    entered: Ms,
    entered_received: Ms,
    last_in_zone: Ms,
    last_in_zone_received: Ms,
    left_received: Option<Ms>,
    /// The report closest to the site.
    closest: Point,
    closest_distance: f64,
    points: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum IdentityState {
    Unknown,
    Asked,
    Resolved(Option<Identity>),
}

#[derive(Debug, Clone)]
struct Track {
    points: VecDeque<Point>,
    last_received: Ms,
    visit: Option<Visit>,
    identity: IdentityState,
}

#[derive(Debug, Clone)]
struct Sighting {
    zone: String,
    position: GeoPoint,
    time: Ms,
}

#[derive(Debug, Clone, Default)]
struct ReaderState {
    online: bool,
    /// Offline periods (from, until) in edge time; the open one has `None`.
    offline: VecDeque<(Ms, Option<Ms>)>,
    seen: bool,
}

/// The engine; see the module documentation.
pub struct Engine {
    config: EngineConfig,
    passes: HashMap<(String, String), Pass>,
    tracks: HashMap<VehicleKey, Track>,
    /// Last read time of a tag per TID, in its zone.
    sightings: HashMap<String, Sighting>,
    /// Last tag read of a vehicle (by registry id, VIN and phone): missing_tag looks here.
    tagged: HashMap<String, Ms>,
    /// Telemetry-only passages made per vehicle id (a vehicle reporting over 808 and 32960 makes one).
    visited: HashMap<i64, Ms>,
    /// Per source: (minute of the edge clock, smallest offset seen in it).
    clocks: HashMap<String, VecDeque<(Ms, Ms)>>,
    readers: HashMap<String, ReaderState>,
    stats: EngineStats,
    started: Ms,
}

fn angle_ok(direction: Option<f64>, heading: Option<f64>) -> bool {
    match (direction, heading) {
        (Some(d), Some(h)) => heading_difference(d, h) <= LANE_HEADING_TOLERANCE_DEG,
        _ => true,
    }
}

impl Engine {
    /// A new engine at `now`; configured readers count as offline until they are reported up.
    pub fn new(config: EngineConfig, now: Ms) -> Engine {
        let readers = config
            .readers
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    ReaderState {
                        online: false,
                        offline: VecDeque::from([(now, None)]),
                        seen: false,
                    },
                )
            })
            .collect();
        Engine {
            config,
            passes: HashMap::new(),
            tracks: HashMap::new(),
            sightings: HashMap::new(),
            tagged: HashMap::new(),
            visited: HashMap::new(),
            clocks: HashMap::new(),
            readers,
            stats: EngineStats::default(),
            started: now,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Passes not yet ended.
    pub fn open_passes(&self) -> usize {
        self.passes.len()
    }

    /// (vehicles, positions) in the telemetry index.
    pub fn index_size(&self) -> (usize, usize) {
        (self.tracks.len(), self.tracks.values().map(|t| t.points.len()).sum())
    }

    /// The lowest tag-report `seq` an open pass still needs (everything below is accounted for).
    pub fn low_water(&self) -> Option<i64> {
        self.passes.values().map(|p| p.min_seq).min()
    }

    fn zone_of(&self, reader: &str) -> String {
        match self.config.readers.get(reader).and_then(|r| r.position) {
            Some(p) if p.distance_m(&self.config.site) > self.config.radius_m => reader.to_string(),
            _ => String::new(),
        }
    }

    fn reader_position(&self, reader: &str) -> GeoPoint {
        self.config
            .readers
            .get(reader)
            .and_then(|r| r.position)
            .unwrap_or(self.config.site)
    }

    /// Whether a read of `tid` at `reader` joins an open pass (the shell then needs no registry
    /// lookup for it).
    pub fn has_open_pass(&self, tid: &str, reader: &str) -> bool {
        self.passes.contains_key(&(tid.to_string(), self.zone_of(reader)))
    }

    /// The time of an observation by `source`'s clock policy (see the module documentation).
    fn clock(&mut self, source: &str, source_ms: Option<Ms>, received: Ms) -> (Ms, Basis) {
        let Some(source_ms) = source_ms else {
            return (received, Basis::Edge);
        };
        if !self.clocks.contains_key(source) && self.clocks.len() >= MAX_CLOCKS {
            return (received, Basis::Edge);
        }
        let samples = self.clocks.entry(source.to_string()).or_default();
        let minute = received.div_euclid(60_000);
        let observed = received - source_ms;
        match samples.back_mut() {
            Some((m, least)) if *m == minute => *least = (*least).min(observed),
            _ => samples.push_back((minute, observed)),
        }
        while samples
            .front()
            .is_some_and(|(m, _)| *m <= minute - CLOCK_MINUTES as Ms || samples.len() > CLOCK_MINUTES)
        {
            samples.pop_front();
        }
        let offset = samples.iter().map(|(_, o)| *o).min().unwrap_or(0);
        if offset.abs() <= self.config.max_skew_ms {
            (source_ms, Basis::Source)
        } else {
            (source_ms + offset, Basis::Corrected)
        }
    }

    /// A tag read, with the vehicle the registry found for it (looked up when
    /// [`Engine::has_open_pass`] is false; ignored when the read joins an open pass). Returns
    /// `false` when the read was refused (too many open passes).
    pub fn tag_read(&mut self, read: TagRead, found: Option<(Identity, MatchKind)>) -> bool {
        let (time, basis) = self.clock(&format!("reader/{}", read.reader), read.source_ms, read.received_ms);
        let zone = self.zone_of(&read.reader);
        let position = self.reader_position(&read.reader);
        let mut clone = None;
        if let Some(last) = self.sightings.get(&read.tid) {
            if last.zone != zone {
                let distance = last.position.distance_m(&position);
                let dt_s = ((time - last.time).abs() as f64 / 1000.0).max(0.001);
                if distance > self.config.radius_m && distance / dt_s > MAX_SPEED_MPS {
                    clone = Some(json!({
                        "reason": "read by two readers too far apart for any vehicle",
                        "tid": read.tid,
                        "distance_m": distance.round(),
                        "seconds_apart": (dt_s * 10.0).round() / 10.0,
                    }));
                }
            }
        }
        if self.sightings.contains_key(&read.tid) || self.sightings.len() < MAX_SIGHTINGS {
            self.sightings.insert(
                read.tid.clone(),
                Sighting {
                    zone: zone.clone(),
                    position,
                    time,
                },
            );
        }
        let key = (read.tid.clone(), zone);
        let checks = self.config.checks;
        if let Some(pass) = self.passes.get_mut(&key) {
            pass.reads += 1;
            pass.last_time = pass.last_time.max(time);
            pass.last_received = pass.last_received.max(read.received_ms);
            pass.min_seq = pass.min_seq.min(read.report_seq);
            if let Some(a) = read.antenna {
                if !pass.antennas.contains(&a) && pass.antennas.len() < 16 {
                    pass.antennas.push(a);
                }
            }
            if !pass.readers.contains(&read.reader) && pass.readers.len() < 16 {
                pass.readers.push(read.reader.clone());
            }
            pass.rssi = match (pass.rssi, read.rssi) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if let Some(n) = read.seen_count {
                pass.seen_count = Some(pass.seen_count.unwrap_or(0).saturating_add(n));
            }
            pass.plate = pass.plate.take().or(read.plate);
            pass.cid = pass.cid.take().or(read.cid);
            pass.plate_type = pass.plate_type.or(read.plate_type);
            if let (Some(detail), true) = (clone, checks.cloned_tag) {
                if !pass.anomalies.iter().any(|a| a.kind == AnomalyKind::ClonedTag) {
                    pass.anomalies.push(Anomaly {
                        kind: AnomalyKind::ClonedTag,
                        subject: read.tid.clone(),
                        detail,
                    });
                }
            }
            return true;
        }
        if self.passes.len() >= MAX_OPEN_PASSES {
            self.stats.passes_refused += 1;
            return false;
        }
        let (identity, kind) = match found {
            Some((identity, kind)) => (Some(identity), kind),
            None => (None, MatchKind::None),
        };
        if let Some(identity) = &identity {
            self.note_tagged(identity, time);
        }
        let mut anomalies = Vec::new();
        if let (Some(detail), true) = (clone, checks.cloned_tag) {
            anomalies.push(Anomaly {
                kind: AnomalyKind::ClonedTag,
                subject: read.tid.clone(),
                detail,
            });
        }
        let pass = Pass {
            first_time: time,
            basis,
            last_time: time,
            first_received: read.received_ms,
            last_received: read.received_ms,
            identity,
            kind,
            reads: 1,
            antennas: read.antenna.into_iter().collect(),
            readers: vec![read.reader.clone()],
            rssi: read.rssi,
            seen_count: read.seen_count,
            plate: read.plate.clone(),
            cid: read.cid.clone(),
            plate_type: read.plate_type,
            anomalies,
            min_seq: read.report_seq,
            first: read,
        };
        self.passes.insert(key, pass);
        true
    }

    fn note_tagged(&mut self, identity: &Identity, time: Ms) {
        let keys = [
            Some(format!("id/{}", identity.id)),
            identity.vin.as_ref().map(|v| format!("vin/{v}")),
            identity.phone.as_ref().map(|p| format!("phone/{p}")),
        ];
        for key in keys.into_iter().flatten() {
            if self.tagged.contains_key(&key) || self.tagged.len() < MAX_SIGHTINGS {
                let t = self.tagged.entry(key).or_insert(time);
                *t = (*t).max(time);
            }
        }
    }

    /// A position report. Returns the vehicle key when the vehicle just entered the zone and
    /// its identity is not known yet: the shell looks it up and calls [`Engine::identify`].
    pub fn telemetry(&mut self, data: TelemetryPoint) -> Option<VehicleKey> {
        let clock_key = format!("{}/{}", data.source.name(), data.key.text());
        let (time, basis) = self.clock(&clock_key, data.source_ms, data.received_ms);
        if !self.tracks.contains_key(&data.key) && self.tracks.len() >= MAX_TRACKS {
            self.stats.tracks_refused += 1;
            return None;
        }
        let site = self.config.site;
        let radius = self.config.radius_m;
        let key = data.key.clone();
        let received = data.received_ms;
        let distance = data.position.distance_m(&site);
        let point = Point {
            time,
            basis,
            received,
            data,
        };
        let track = self.tracks.entry(key.clone()).or_insert_with(|| Track {
            points: VecDeque::new(),
            last_received: received,
            visit: None,
            identity: IdentityState::Unknown,
        });
        track.last_received = track.last_received.max(received);
        // Keep points in time order; late ones are inserted where they belong.
        let at = track.points.iter().rposition(|p| p.time <= time).map_or(0, |i| i + 1);
        track.points.insert(at, point.clone());
        if track.points.len() > MAX_POINTS_PER_TRACK {
            track.points.pop_front();
            self.stats.points_dropped += 1;
        }
        if distance <= radius {
            match &mut track.visit {
                Some(v) => {
                    v.last_in_zone = v.last_in_zone.max(time);
                    v.entered = v.entered.min(time);
                    v.entered_received = v.entered_received.min(received);
                    v.last_in_zone_received = v.last_in_zone_received.max(received);
                    v.left_received = None;
                    v.points += 1;
                    if distance < v.closest_distance {
                        v.closest = point;
                        v.closest_distance = distance;
                    }
                }
                None => {
                    track.visit = Some(Visit {
                        entered: time,
                        entered_received: received,
                        last_in_zone: time,
                        last_in_zone_received: received,
                        left_received: None,
                        closest: point,
                        closest_distance: distance,
                        points: 1,
                    });
                }
            }
            if track.identity == IdentityState::Unknown {
                track.identity = IdentityState::Asked;
                return Some(key);
            }
        } else if let Some(v) = &mut track.visit {
            if time > v.last_in_zone {
                v.left_received.get_or_insert(received);
            }
        }
        None
    }

    /// The registry's answer for a vehicle key ([`Engine::telemetry`] asked for it).
    pub fn identify(&mut self, key: &VehicleKey, identity: Option<Identity>) {
        if let Some(track) = self.tracks.get_mut(key) {
            track.identity = IdentityState::Resolved(identity);
        }
    }

    /// A reader's link state at `now` (the shell reports every reader it knows, regularly).
    pub fn reader_status(&mut self, reader: &str, online: bool, now: Ms) {
        let state = self.readers.entry(reader.to_string()).or_insert_with(|| ReaderState {
            online: false,
            offline: VecDeque::from([(now, None)]),
            seen: false,
        });
        state.seen = true;
        if online == state.online {
            return;
        }
        state.online = online;
        if online {
            if let Some(open) = state.offline.back_mut().filter(|p| p.1.is_none()) {
                open.1 = Some(now);
            }
        } else {
            if state.offline.len() >= MAX_OFFLINE_PERIODS {
                state.offline.pop_front();
            }
            state.offline.push_back((now, None));
        }
    }

    /// The reader whose being offline between `from` and `until` (edge times) leaves a vehicle
    /// heading `heading` unread, if any; "no reader" when the site has none at all.
    fn offline_cover(&self, from: Ms, until: Ms, heading: Option<f64>) -> Option<String> {
        if self.readers.is_empty() {
            return Some("no reader is configured at the site".into());
        }
        let mut ids: Vec<&String> = self.readers.keys().collect();
        ids.sort();
        for id in ids {
            let state = &self.readers[id];
            let direction = self.config.readers.get(id).and_then(|r| r.direction);
            if !angle_ok(direction, heading) {
                continue;
            }
            let overlaps = state
                .offline
                .iter()
                .any(|(start, end)| *start <= until && end.is_none_or(|e| e >= from));
            if overlaps {
                return Some(format!("reader {id} was offline"));
            }
        }
        None
    }

    /// Ends what is due at `now`: passes and zone visits. Returns their passages.
    pub fn tick(&mut self, now: Ms) -> Vec<Passage> {
        let mut out = Vec::new();
        let window = self.config.window_ms;
        let merge = self.config.merge_ms;
        let due: Vec<(String, String)> = self
            .passes
            .iter()
            .filter(|(_, p)| now >= p.last_received + merge && now >= p.first_received + window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut ended: Vec<Pass> = due.into_iter().filter_map(|k| self.passes.remove(&k)).collect();
        ended.sort_by_key(|p| (p.first_time, p.first.report_seq, p.first.index));
        for pass in ended {
            out.push(self.finish_pass(pass));
        }
        // Zone visits: over once the vehicle left (or went silent) and `window` passed for tags.
        let mut visits = Vec::new();
        for (key, track) in &mut self.tracks {
            let Some(v) = &track.visit else { continue };
            let left = v.left_received.unwrap_or(v.last_in_zone_received + window);
            if now >= left + window {
                let identity = match &track.identity {
                    IdentityState::Resolved(i) => i.clone(),
                    _ => None,
                };
                let heading = visit_heading(&track.points, v);
                if let Some(v) = track.visit.take() {
                    visits.push((key.clone(), v, identity, heading));
                }
            }
        }
        visits.sort_by_key(|(_, v, _, _)| (v.entered, v.closest.data.seq));
        for (key, visit, identity, heading) in visits {
            if let Some(p) = self.finish_visit(&key, visit, identity, heading) {
                out.push(p);
            }
        }
        self.expire(now);
        out
    }

    fn expire(&mut self, now: Ms) {
        let keep = now - 2 * self.config.window_ms - self.config.merge_ms;
        for track in self.tracks.values_mut() {
            while track.points.front().is_some_and(|p| p.received < keep) {
                track.points.pop_front();
            }
        }
        self.tracks
            .retain(|_, t| t.visit.is_some() || t.last_received >= keep || !t.points.is_empty());
        let horizon = now - 10 * self.config.window_ms.max(60_000);
        self.sightings.retain(|_, s| s.time >= horizon);
        self.tagged.retain(|_, t| *t >= horizon);
        self.visited.retain(|_, t| *t >= horizon);
        if self.clocks.len() > MAX_CLOCKS / 2 {
            let live: std::collections::HashSet<String> = self
                .tracks
                .iter()
                .map(|(k, t)| {
                    let source = t.points.back().map_or(Source::Jt808, |p| p.data.source);
                    format!("{}/{}", source.name(), k.text())
                })
                .collect();
            self.clocks.retain(|k, _| k.starts_with("reader/") || live.contains(k));
        }
    }

    /// Keys of the tracks of a vehicle.
    fn tracks_of(identity: &Identity) -> Vec<VehicleKey> {
        let mut keys = Vec::new();
        if let Some(v) = &identity.vin {
            keys.push(VehicleKey::Vin(v.clone()));
        }
        if let Some(p) = &identity.phone {
            keys.push(VehicleKey::Phone(p.clone()));
        }
        keys
    }

    fn finish_pass(&mut self, pass: Pass) -> Passage {
        let reader_position = self.reader_position(&pass.first.reader);
        let window = self.config.window_ms;
        let t = pass.first_time;
        let mut anomalies = pass.anomalies.clone();
        let mut notes = Vec::new();
        let mut telemetry = None;
        if let Some(identity) = &pass.identity {
            let mut best: Option<(&Track, usize)> = None;
            for key in Self::tracks_of(identity) {
                let Some(track) = self.tracks.get(&key) else { continue };
                for (i, p) in track.points.iter().enumerate() {
                    let gap = (p.time - t).abs();
                    if gap > window {
                        continue;
                    }
                    let better = best.is_none_or(|(bt, bi)| gap < (bt.points[bi].time - t).abs());
                    if better {
                        best = Some((track, i));
                    }
                }
            }
            if let Some((track, i)) = best {
                let p = &track.points[i];
                let distance = p.data.position.distance_m(&reader_position);
                // Where the vehicle was at the read: between the reports around it, or the
                // nearest report with the slack a fast vehicle needs for the gap.
                let before = track.points.iter().rev().find(|q| q.time <= t && t - q.time <= window);
                let after = track.points.iter().find(|q| q.time >= t && q.time - t <= window);
                let (at_read, slack) = match (before, after) {
                    (Some(b), Some(a)) if a.time > b.time => {
                        // Between two reports the path may bend: a quarter of their distance.
                        let f = (t - b.time) as f64 / (a.time - b.time) as f64;
                        let slack = 0.25 * b.data.position.distance_m(&a.data.position);
                        (b.data.position.towards(&a.data.position, f), slack)
                    }
                    _ => {
                        let gap = (p.time - t).abs();
                        let speed = p.data.speed_kmh.map_or(0.0, |s| s / 3.6).max(MAX_SPEED_MPS);
                        let slack = if gap <= SAME_TIME_MS {
                            0.0
                        } else {
                            speed * gap as f64 / 1000.0
                        };
                        (p.data.position, slack)
                    }
                };
                let away = at_read.distance_m(&reader_position);
                if away - slack > self.config.radius_m {
                    if self.config.checks.cloned_tag {
                        if !anomalies.iter().any(|a| a.kind == AnomalyKind::ClonedTag) {
                            anomalies.push(Anomaly {
                                kind: AnomalyKind::ClonedTag,
                                subject: pass.first.tid.clone(),
                                detail: json!({
                                    "reason": "the matched vehicle's own telemetry puts it away from the reader at the read",
                                    "tid": pass.first.tid,
                                    "reader": pass.first.reader,
                                    "distance_m": away.round(),
                                    "radius_m": self.config.radius_m,
                                    "vehicle": identity.plate.as_deref().or(identity.vin.as_deref()).or(identity.phone.as_deref()),
                                    "telemetry_source": p.data.source.name(),
                                }),
                            });
                        }
                    } else {
                        notes.push("cloned_tag not checked (fusion.checks)".into());
                    }
                }
                telemetry = Some(MatchedTelemetry {
                    point: p.data.clone(),
                    time_ms: p.time,
                    basis: p.basis,
                    time_gap_ms: p.time - t,
                    distance_m: distance,
                });
            }
            if pass.kind == MatchKind::Tid {
                if let (Some(tag_plate), Some(registered)) = (&pass.plate, &identity.plate) {
                    if tag_plate != registered {
                        if self.config.checks.plate_mismatch {
                            anomalies.push(Anomaly {
                                kind: AnomalyKind::PlateMismatch,
                                subject: pass.first.tid.clone(),
                                detail: json!({
                                    "tid": pass.first.tid,
                                    "tag_plate": tag_plate,
                                    "registry_plate": registered,
                                }),
                            });
                        } else {
                            notes.push("plate_mismatch not checked (fusion.checks)".into());
                        }
                    }
                }
            }
        }
        Passage {
            origin_seq: pass.first.report_seq,
            origin_index: pass.first.index,
            time_ms: t,
            basis: pass.basis,
            reader: Some((pass.first.reader.clone(), pass.first.antenna)),
            tag: Some(PassTag {
                tid: pass.first.tid.clone(),
                cid: pass.cid.clone(),
                plate: pass.plate.clone(),
                plate_type: pass.plate_type,
                rssi: pass.rssi,
                seen_count: pass.seen_count,
                reads: pass.reads,
                antennas: pass.antennas.clone(),
                readers: pass.readers.clone(),
            }),
            vehicle: pass.identity.clone(),
            telemetry,
            match_kind: pass.kind,
            anomalies,
            notes,
            first_seq: pass.min_seq,
        }
    }

    fn finish_visit(
        &mut self,
        key: &VehicleKey,
        visit: Visit,
        identity: Option<Identity>,
        heading: Option<f64>,
    ) -> Option<Passage> {
        let window = self.config.window_ms;
        if visit.points < MIN_ZONE_POINTS {
            return None;
        }
        let (from, until) = (visit.entered - window, visit.last_in_zone + window);
        let read_between = |t: Option<&Ms>| t.is_some_and(|t| *t >= from && *t <= until);
        let mut keys = vec![match key {
            VehicleKey::Vin(v) => format!("vin/{v}"),
            VehicleKey::Phone(p) => format!("phone/{p}"),
        }];
        if let Some(i) = &identity {
            keys.push(format!("id/{}", i.id));
            keys.extend(i.vin.as_ref().map(|v| format!("vin/{v}")));
            keys.extend(i.phone.as_ref().map(|p| format!("phone/{p}")));
        }
        if keys.iter().any(|k| read_between(self.tagged.get(k))) {
            return None;
        }
        // The same vehicle over another protocol: one telemetry-only passage for both.
        if let Some(i) = &identity {
            if self.visited.get(&i.id).is_some_and(|t| *t >= from) {
                return None;
            }
            self.visited.insert(i.id, visit.last_in_zone);
        }
        let subject = identity
            .as_ref()
            .and_then(|i| i.plate.clone())
            .unwrap_or_else(|| key.text().to_string());
        let mut anomalies = Vec::new();
        let mut notes = Vec::new();
        let edge_from = visit.entered_received - window;
        let edge_until = visit.last_in_zone_received + window;
        if !self.config.checks.missing_tag {
            notes.push("missing_tag not checked (fusion.checks)".into());
        } else if let Some(why) = self.offline_cover(edge_from, edge_until, heading) {
            notes.push(format!("missing_tag suppressed: {why}"));
        } else {
            anomalies.push(Anomaly {
                kind: AnomalyKind::MissingTag,
                subject: subject.clone(),
                detail: json!({
                    "reason": "the vehicle's telemetry crossed the zone and no tag of it was read",
                    "vehicle": subject,
                    "source": visit.closest.data.source.name(),
                    "closest_m": visit.closest_distance.round(),
                }),
            });
        }
        let p = &visit.closest;
        Some(Passage {
            origin_seq: p.data.seq,
            origin_index: 0,
            time_ms: p.time,
            basis: p.basis,
            reader: None,
            tag: None,
            vehicle: identity,
            telemetry: Some(MatchedTelemetry {
                point: p.data.clone(),
                time_ms: p.time,
                basis: p.basis,
                time_gap_ms: 0,
                distance_m: visit.closest_distance,
            }),
            match_kind: MatchKind::TelemetryOnly,
            anomalies,
            notes,
            first_seq: p.data.seq,
        })
    }

    /// Whether the engine started long enough ago for reader states to be meaningful.
    pub fn started_ms(&self) -> Ms {
        self.started
    }
}

/// A visit's heading: the closest report's own, else the bearing between two reports around it.
fn visit_heading(points: &VecDeque<Point>, visit: &Visit) -> Option<f64> {
    if let Some(h) = visit.closest.data.heading {
        return Some(h);
    }
    let i = points.iter().position(|p| p.time >= visit.closest.time)?;
    let (a, b) = match (i.checked_sub(1), points.get(i + 1)) {
        (Some(j), _) => (&points[j], &points[i]),
        (None, Some(next)) => (&points[i], next),
        _ => return None,
    };
    (a.data.position.distance_m(&b.data.position) > 5.0).then(|| a.data.position.bearing_deg(&b.data.position))
}

fn round_to(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

impl Passage {
    /// `<edge_id>-<seq>-<n>` (CONTRACT 4): the same passage derived again gets the same id.
    pub fn passage_id(&self, edge_id: &str) -> String {
        format!("{edge_id}-{}-{}", self.origin_seq, self.origin_index)
    }

    /// The passage record's JSON (CONTRACT 4), without the edge envelope (the store adds it).
    pub fn to_json(&self, edge_id: &str, config: &EngineConfig) -> Value {
        let mut out = Map::new();
        out.insert("passage_id".into(), json!(self.passage_id(edge_id)));
        out.insert("time".into(), json!(crate::time::rfc3339_ms(self.time_ms)));
        let device = if self.tag.is_some() { "reader" } else { "terminal" };
        out.insert("time_basis".into(), json!(self.basis.name(device)));
        out.insert(
            "site".into(),
            json!({"name": config.site_name, "latitude": config.site.latitude, "longitude": config.site.longitude}),
        );
        if let Some((id, antenna)) = &self.reader {
            let mut reader = Map::new();
            reader.insert("id".into(), json!(id));
            if let Some(a) = antenna {
                reader.insert("antenna".into(), json!(a));
            }
            if let Some(place) = config.readers.get(id) {
                if let Some(lane) = &place.lane {
                    reader.insert("lane".into(), json!(lane));
                }
                if let Some(direction) = place.direction {
                    reader.insert("direction".into(), json!(direction));
                }
            }
            out.insert("reader".into(), Value::Object(reader));
        }
        if let Some(tag) = &self.tag {
            let mut t = Map::new();
            t.insert("tid".into(), json!(tag.tid));
            let optional = [
                ("cid", tag.cid.as_ref().map(|v| json!(v))),
                ("plate", tag.plate.as_ref().map(|v| json!(v))),
                ("plate_type", tag.plate_type.map(|v| json!(v))),
                ("rssi", tag.rssi.map(|v| json!(v))),
                ("seen_count", tag.seen_count.map(|v| json!(v))),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    t.insert(k.into(), v);
                }
            }
            t.insert("reads".into(), json!(tag.reads));
            if !tag.antennas.is_empty() {
                t.insert("antennas".into(), json!(tag.antennas));
            }
            if tag.readers.len() > 1 {
                t.insert("readers".into(), json!(tag.readers));
            }
            out.insert("tag".into(), Value::Object(t));
        }
        if let Some(v) = &self.vehicle {
            let mut vehicle = Map::new();
            let optional = [
                ("plate", v.plate.as_ref().map(|x| json!(x))),
                ("plate_color", v.plate_color.map(|x| json!(x))),
                ("vin", v.vin.as_ref().map(|x| json!(x))),
                ("phone", v.phone.as_ref().map(|x| json!(x))),
            ];
            for (k, x) in optional {
                if let Some(x) = x {
                    vehicle.insert(k.into(), x);
                }
            }
            out.insert("vehicle".into(), Value::Object(vehicle));
        }
        if let Some(m) = &self.telemetry {
            let p = &m.point;
            let mut t = Map::new();
            t.insert("source".into(), json!(p.source.name()));
            t.insert("time".into(), json!(crate::time::rfc3339_ms(m.time_ms)));
            t.insert("time_basis".into(), json!(m.basis.name("terminal")));
            t.insert("latitude".into(), json!(round_to(p.position.latitude, 6)));
            t.insert("longitude".into(), json!(round_to(p.position.longitude, 6)));
            let optional = [
                ("speed_kmh", p.speed_kmh.map(|v| round_to(v, 1))),
                ("heading", p.heading),
                ("soc", p.soc),
                ("mileage_km", p.mileage_km.map(|v| round_to(v, 1))),
            ];
            for (k, v) in optional {
                if let Some(v) = v {
                    t.insert(k.into(), json!(v));
                }
            }
            t.insert("time_gap_ms".into(), json!(m.time_gap_ms));
            t.insert("distance_m".into(), json!(round_to(m.distance_m, 1)));
            out.insert("telemetry".into(), Value::Object(t));
        }
        out.insert("match".into(), json!(self.match_kind.name()));
        out.insert(
            "anomalies".into(),
            json!(self.anomalies.iter().map(|a| a.kind.name()).collect::<Vec<_>>()),
        );
        if !self.notes.is_empty() {
            out.insert("notes".into(), json!(self.notes));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Ms = 1_800_000_000_000;

    fn site() -> GeoPoint {
        GeoPoint::new(31.2304, 121.4737)
    }

    fn config(readers: &[(&str, Option<GeoPoint>, Option<f64>)]) -> EngineConfig {
        EngineConfig {
            site_name: "G15 K123+400".into(),
            site: site(),
            window_ms: 10_000,
            radius_m: 300.0,
            merge_ms: 5_000,
            max_skew_ms: 2_000,
            checks: FusionChecks {
                cloned_tag: true,
                missing_tag: true,
                plate_mismatch: true,
            },
            readers: readers
                .iter()
                .map(|(id, position, direction)| {
                    (
                        id.to_string(),
                        ReaderPlace {
                            position: *position,
                            lane: Some("1".into()),
                            direction: *direction,
                        },
                    )
                })
                .collect(),
        }
    }

    fn gantry() -> EngineConfig {
        config(&[("north", None, Some(90.0))])
    }

    fn identity(id: i64, plate: &str, vin: Option<&str>, phone: Option<&str>, tid: &str) -> Identity {
        Identity {
            id,
            plate: Some(plate.into()),
            plate_color: Some(1),
            vin: vin.map(str::to_string),
            phone: phone.map(str::to_string),
            tid: Some(tid.into()),
        }
    }

    /// A read at reader time `at`, received 50 ms later.
    fn read(seq: i64, reader: &str, tid: &str, at: Ms, antenna: u64) -> TagRead {
        TagRead {
            report_seq: seq,
            index: 0,
            reader: reader.into(),
            antenna: Some(antenna),
            tid: tid.into(),
            cid: Some("0200004008".into()),
            plate: Some("京A12345".into()),
            plate_type: Some(2),
            rssi: Some(-40 - antenna as i64),
            seen_count: Some(1),
            source_ms: Some(at),
            received_ms: at + 50,
        }
    }

    /// A report at terminal time `at`, received 200 ms later, at `position`.
    fn report(key: VehicleKey, seq: i64, at: Ms, position: GeoPoint) -> TelemetryPoint {
        TelemetryPoint {
            source: match key {
                VehicleKey::Vin(_) => Source::Gbt32960,
                VehicleKey::Phone(_) => Source::Jt808,
            },
            key,
            seq,
            source_ms: Some(at),
            received_ms: at + 200,
            position,
            speed_kmh: Some(72.0),
            heading: Some(90.0),
            soc: None,
            mileage_km: Some(1234.5),
        }
    }

    /// A vehicle driving east at 20 m/s through the site, at it at `pass_at`: reports once a
    /// second from 30 s before to 30 s after.
    fn drive(key: &VehicleKey, seq0: i64, pass_at: Ms) -> Vec<TelemetryPoint> {
        (-30..=30)
            .map(|s| {
                let at = pass_at + s * 1000;
                report(key.clone(), seq0 + s + 30, at, site().offset(90.0, 20.0 * s as f64))
            })
            .collect()
    }

    enum Ev {
        Read(TagRead, Option<(Identity, MatchKind)>),
        Point(TelemetryPoint),
        Reader(&'static str, bool, Ms),
    }

    impl Ev {
        fn received(&self) -> Ms {
            match self {
                Ev::Read(r, _) => r.received_ms,
                Ev::Point(p) => p.received_ms,
                Ev::Reader(_, _, at) => *at,
            }
        }
    }

    /// Feeds the events in receive order, ticking as time goes, as the shell does; the registry
    /// answers telemetry lookups from `registry`.
    fn run(engine: &mut Engine, mut events: Vec<Ev>, registry: &[Identity]) -> Vec<Passage> {
        events.sort_by_key(Ev::received);
        let mut out = Vec::new();
        let mut last = T0;
        for ev in events {
            let now = ev.received();
            out.extend(engine.tick(now));
            match ev {
                Ev::Read(r, found) => {
                    engine.tag_read(r, found);
                }
                Ev::Point(p) => {
                    if let Some(key) = engine.telemetry(p) {
                        let found = registry
                            .iter()
                            .find(|i| match &key {
                                VehicleKey::Vin(v) => i.vin.as_ref() == Some(v),
                                VehicleKey::Phone(p) => i.phone.as_ref() == Some(p),
                            })
                            .cloned();
                        engine.identify(&key, found);
                    }
                }
                Ev::Reader(id, online, at) => engine.reader_status(id, online, at),
            }
            last = now;
        }
        for s in 1..=120 {
            out.extend(engine.tick(last + s * 1000));
        }
        out
    }

    fn online(engine: &mut Engine) {
        engine.reader_status("north", true, T0 - 60_000);
    }

    fn kinds(p: &Passage) -> Vec<&'static str> {
        p.anomalies.iter().map(|a| a.kind.name()).collect()
    }

    #[test]
    fn a_tag_seen_forty_times_by_two_antennas_in_three_seconds_is_one_passage_with_its_telemetry() {
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let phone = VehicleKey::Phone("013900000001".into());
        let car = identity(7, "京A12345", None, Some("013900000001"), "e2800001");
        let pass_at = T0 + 60_000;
        let mut events: Vec<Ev> = drive(&phone, 1000, pass_at).into_iter().map(Ev::Point).collect();
        for i in 0..40 {
            let at = pass_at - 1_500 + i * 75;
            let found = Some((car.clone(), MatchKind::Tid));
            events.push(Ev::Read(
                read(100 + i, "north", "e2800001", at, 1 + (i as u64 % 2)),
                found,
            ));
        }
        let passages = run(&mut engine, events, std::slice::from_ref(&car));
        assert_eq!(passages.len(), 1, "{passages:#?}");
        let p = &passages[0];
        assert_eq!(p.match_kind, MatchKind::Tid);
        assert_eq!(p.passage_id("cab"), "cab-100-0");
        let tag = p.tag.as_ref().unwrap();
        assert_eq!((tag.reads, tag.antennas.clone()), (40, vec![1, 2]));
        assert_eq!(tag.seen_count, Some(40));
        assert_eq!(tag.rssi, Some(-41));
        let t = p.telemetry.as_ref().unwrap();
        assert_eq!(t.point.source, Source::Jt808);
        assert!(t.time_gap_ms.abs() <= 500, "{}", t.time_gap_ms);
        // The pass's time is its first read, 1.5 s (30 m) before the vehicle reached the gantry.
        assert!(t.distance_m < 50.0, "{}", t.distance_m);
        assert!(p.anomalies.is_empty(), "{:?}", p.anomalies);
        assert_eq!(p.basis, Basis::Source);
        let json = p.to_json("cab", engine.config());
        assert_eq!(json["match"], "tid");
        assert_eq!(json["reader"]["lane"], "1");
        assert_eq!(json["vehicle"]["phone"], "013900000001");
        assert_eq!(json["telemetry"]["source"], "jt808");
        assert_eq!(json["telemetry"]["speed_kmh"], 72.0);
        assert_eq!(json["time_basis"], "reader");
        assert_eq!(json["anomalies"], json!([]));
        assert_eq!(engine.open_passes(), 0);
    }

    #[test]
    fn the_three_match_kinds_tid_plate_and_none_are_told_apart() {
        let mut engine = Engine::new(gantry(), T0);
        online(&mut engine);
        let car = identity(1, "京A12345", None, None, "e2800001");
        let events = vec![
            Ev::Read(
                read(1, "north", "e2800001", T0 + 1_000, 1),
                Some((car.clone(), MatchKind::Tid)),
            ),
            Ev::Read(
                read(2, "north", "e2800002", T0 + 1_000, 1),
                Some((car.clone(), MatchKind::Plate)),
            ),
            Ev::Read(read(3, "north", "e2800003", T0 + 1_000, 1), None),
        ];
        let passages = run(&mut engine, events, &[]);
        let kinds: Vec<_> = passages.iter().map(|p| p.match_kind).collect();
        assert_eq!(kinds, [MatchKind::Tid, MatchKind::Plate, MatchKind::None]);
        assert!(passages.iter().all(|p| p.telemetry.is_none() && p.anomalies.is_empty()));
        assert!(passages[2].vehicle.is_none());
        assert_eq!(passages[2].to_json("cab", engine.config())["tag"]["plate"], "京A12345");
    }

    #[test]
    fn a_tag_read_here_while_its_vehicle_reports_thirty_km_away_is_a_cloned_tag() {
        let mut engine = Engine::new(gantry(), T0);
        online(&mut engine);
        let vin = VehicleKey::Vin("LSIM0000000000001".into());
        let car = identity(3, "京A12345", Some("LSIM0000000000001"), None, "e2800001");
        let far = site().offset(0.0, 30_000.0);
        let mut events: Vec<Ev> = (0..30)
            .map(|s| {
                Ev::Point(report(
                    vin.clone(),
                    500 + s,
                    T0 + s * 1000,
                    far.offset(90.0, 20.0 * s as f64),
                ))
            })
            .collect();
        events.push(Ev::Read(
            read(9, "north", "e2800001", T0 + 15_000, 1),
            Some((car.clone(), MatchKind::Tid)),
        ));
        let passages = run(&mut engine, events, &[car]);
        assert_eq!(passages.len(), 1, "{passages:#?}");
        assert_eq!(kinds(&passages[0]), ["cloned_tag"]);
        assert!(passages[0].telemetry.as_ref().unwrap().distance_m > 29_000.0);
        assert_eq!(passages[0].anomalies[0].subject, "e2800001");
    }

    #[test]
    fn two_readers_far_apart_reading_one_tid_within_seconds_is_a_cloned_tag() {
        let east = site().offset(90.0, 5_000.0);
        let mut engine = Engine::new(config(&[("north", None, None), ("east", Some(east), None)]), T0);
        engine.reader_status("north", true, T0);
        engine.reader_status("east", true, T0);
        let events = vec![
            Ev::Read(read(1, "north", "e2800001", T0 + 1_000, 1), None),
            Ev::Read(read(2, "east", "e2800001", T0 + 11_000, 1), None),
            // The same TID at the far reader again much later: a vehicle could have driven it.
            Ev::Read(read(3, "north", "e2800001", T0 + 900_000, 1), None),
        ];
        let passages = run(&mut engine, events, &[]);
        assert_eq!(passages.len(), 3, "{passages:#?}");
        assert!(passages[0].anomalies.is_empty());
        assert_eq!(kinds(&passages[1]), ["cloned_tag"]);
        assert!(passages[2].anomalies.is_empty());
    }

    #[test]
    fn a_vehicle_crossing_the_zone_with_no_tag_read_is_a_telemetry_only_passage_with_missing_tag() {
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let phone = VehicleKey::Phone("013900000002".into());
        let van = identity(4, "沪B00002", None, Some("013900000002"), "e2800002");
        let events = drive(&phone, 1, T0 + 60_000).into_iter().map(Ev::Point).collect();
        let passages = run(&mut engine, events, &[van]);
        assert_eq!(passages.len(), 1, "{passages:#?}");
        let p = &passages[0];
        assert_eq!(p.match_kind, MatchKind::TelemetryOnly);
        assert_eq!(kinds(p), ["missing_tag"]);
        assert_eq!(p.anomalies[0].subject, "沪B00002");
        assert!(p.telemetry.as_ref().unwrap().distance_m < 20.0);
        let json = p.to_json("cab", engine.config());
        assert_eq!(json["match"], "telemetry_only");
        assert!(json.get("reader").is_none() && json.get("tag").is_none());
        assert_eq!(json["vehicle"]["plate"], "沪B00002");
        // A vehicle that never comes near makes no passage.
        let far = VehicleKey::Phone("013900000003".into());
        let events = (0..20)
            .map(|s| {
                Ev::Point(report(
                    far.clone(),
                    900 + s,
                    T0 + 200_000 + s * 1000,
                    site().offset(0.0, 5_000.0),
                ))
            })
            .collect();
        assert!(run(&mut engine, events, &[]).is_empty());
    }

    #[test]
    fn an_offline_reader_suppresses_missing_tag_for_its_lanes_only() {
        let phone = VehicleKey::Phone("013900000002".into());
        // The gantry covers eastbound traffic and is down while an eastbound vehicle passes.
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let mut events: Vec<Ev> = drive(&phone, 1, T0 + 60_000).into_iter().map(Ev::Point).collect();
        events.push(Ev::Reader("north", false, T0 + 40_000));
        events.push(Ev::Reader("north", true, T0 + 70_000));
        let passages = run(&mut engine, events, &[]);
        assert_eq!(passages.len(), 1);
        assert!(passages[0].anomalies.is_empty(), "{:?}", passages[0]);
        assert!(
            passages[0].notes[0].contains("reader north was offline"),
            "{:?}",
            passages[0].notes
        );
        // A westbound vehicle is not in that lane: its missing tag is still an anomaly.
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let mut events: Vec<Ev> = drive(&phone, 1, T0 + 60_000)
            .into_iter()
            .map(|mut p| {
                p.heading = Some(270.0);
                Ev::Point(p)
            })
            .collect();
        events.push(Ev::Reader("north", false, T0 + 40_000));
        let passages = run(&mut engine, events, &[]);
        assert_eq!(kinds(&passages[0]), ["missing_tag"]);
        // A gantry that never came up since the start is offline too.
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        let events = drive(&phone, 1, T0 + 60_000).into_iter().map(Ev::Point).collect();
        assert!(run(&mut engine, events, &[])[0].anomalies.is_empty());
    }

    #[test]
    fn a_tag_whose_plate_differs_from_the_registry_is_a_plate_mismatch() {
        let mut engine = Engine::new(gantry(), T0);
        online(&mut engine);
        let car = identity(1, "京A99999", None, None, "e2800001");
        let events = vec![Ev::Read(
            read(1, "north", "e2800001", T0 + 1_000, 1),
            Some((car, MatchKind::Tid)),
        )];
        let passages = run(&mut engine, events, &[]);
        assert_eq!(kinds(&passages[0]), ["plate_mismatch"]);
        assert_eq!(passages[0].anomalies[0].detail["tag_plate"], "京A12345");
        assert_eq!(passages[0].anomalies[0].detail["registry_plate"], "京A99999");
    }

    #[test]
    fn switched_off_checks_raise_nothing_and_say_so() {
        let mut cfg = gantry();
        cfg.checks = FusionChecks {
            cloned_tag: false,
            missing_tag: false,
            plate_mismatch: false,
        };
        let mut engine = Engine::new(cfg, T0 - 60_000);
        online(&mut engine);
        let phone = VehicleKey::Phone("013900000002".into());
        let mut events: Vec<Ev> = drive(&phone, 1, T0 + 60_000).into_iter().map(Ev::Point).collect();
        let other = identity(1, "京A99999", Some("LFAR0000000000001"), None, "e2800001");
        let far = VehicleKey::Vin("LFAR0000000000001".into());
        events.extend((0..30).map(|s| {
            Ev::Point(report(
                far.clone(),
                500 + s,
                T0 + s * 1000,
                site().offset(0.0, 30_000.0),
            ))
        }));
        events.push(Ev::Read(
            read(9, "north", "e2800001", T0 + 15_000, 1),
            Some((other, MatchKind::Tid)),
        ));
        let passages = run(&mut engine, events, &[]);
        assert_eq!(passages.len(), 2, "{passages:#?}");
        assert!(passages.iter().all(|p| p.anomalies.is_empty()));
        let notes: Vec<String> = passages.iter().flat_map(|p| p.notes.clone()).collect();
        assert!(notes.iter().any(|n| n.contains("cloned_tag not checked")), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("plate_mismatch not checked")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("missing_tag not checked")), "{notes:?}");
    }

    #[test]
    fn skewed_reader_and_terminal_clocks_are_corrected_by_their_observed_offsets() {
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let vin = VehicleKey::Vin("LSIM0000000000001".into());
        let car = identity(3, "京A12345", Some("LSIM0000000000001"), None, "e2800001");
        let pass_at = T0 + 60_000;
        // The terminal's clock is 8 minutes behind, the reader's one hour ahead.
        let mut events: Vec<Ev> = drive(&vin, 1000, pass_at)
            .into_iter()
            .map(|mut p| {
                p.source_ms = p.source_ms.map(|t| t - 480_000);
                Ev::Point(p)
            })
            .collect();
        for i in 0..5 {
            let mut r = read(100 + i, "north", "e2800001", pass_at + i * 100, 1);
            r.source_ms = r.source_ms.map(|t| t + 3_600_000);
            events.push(Ev::Read(r, Some((car.clone(), MatchKind::Tid))));
        }
        let passages = run(&mut engine, events, &[car]);
        assert_eq!(passages.len(), 1, "{passages:#?}");
        let p = &passages[0];
        assert_eq!(p.basis, Basis::Corrected);
        assert!(
            (p.time_ms - pass_at).abs() <= 100,
            "read time {} vs {pass_at}",
            p.time_ms - pass_at
        );
        let t = p.telemetry.as_ref().unwrap();
        assert_eq!(t.basis, Basis::Corrected);
        assert!(t.time_gap_ms.abs() <= 1_000, "{}", t.time_gap_ms);
        assert!(p.anomalies.is_empty(), "{:?}", p.anomalies);
        let json = p.to_json("cab", engine.config());
        assert_eq!(json["time_basis"], "reader_corrected");
        assert_eq!(json["telemetry"]["time_basis"], "terminal_corrected");
        // A reader that sends no time at all: the edge's receive time.
        let mut r = read(200, "north", "e2800009", T0 + 400_000, 1);
        r.source_ms = None;
        let passages = run(&mut engine, vec![Ev::Read(r, None)], &[]);
        assert_eq!(passages[0].basis, Basis::Edge);
        assert_eq!(passages[0].time_ms, T0 + 400_050);
    }

    #[test]
    fn telemetry_arriving_after_the_tag_read_still_matches_it() {
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let phone = VehicleKey::Phone("013900000001".into());
        let car = identity(7, "京A12345", None, Some("013900000001"), "e2800001");
        let pass_at = T0 + 60_000;
        // The terminal buffered its reports and sends them 6 s late (blind-area re-send).
        let mut events: Vec<Ev> = drive(&phone, 1000, pass_at)
            .into_iter()
            .map(|mut p| {
                p.received_ms += 6_000;
                Ev::Point(p)
            })
            .collect();
        // Some earlier, timely reports made the terminal's clock known.
        for s in 0..5 {
            events.push(Ev::Point(report(
                phone.clone(),
                10 + s,
                T0 + s * 1000,
                site().offset(270.0, 2_000.0),
            )));
        }
        events.push(Ev::Read(
            read(5, "north", "e2800001", pass_at, 1),
            Some((car.clone(), MatchKind::Tid)),
        ));
        let passages = run(&mut engine, events, &[car]);
        assert_eq!(passages.len(), 1, "{passages:#?}");
        let t = passages[0].telemetry.as_ref().expect("late telemetry matched");
        assert_eq!(t.basis, Basis::Source);
        assert!(t.time_gap_ms.abs() <= 500 && t.distance_m < 30.0, "{t:?}");
    }

    #[test]
    fn a_vehicle_reported_by_both_808_and_32960_gets_the_nearest_report_and_one_missing_tag() {
        let mut engine = Engine::new(gantry(), T0 - 60_000);
        online(&mut engine);
        let vin = VehicleKey::Vin("LSIM0000000000001".into());
        let phone = VehicleKey::Phone("013900000001".into());
        let bus = identity(
            5,
            "京A12345",
            Some("LSIM0000000000001"),
            Some("013900000001"),
            "e2800001",
        );
        let pass_at = T0 + 60_000;
        // 32960 every 10 s, 808 every second: the 808 report is nearer the read.
        let mut events: Vec<Ev> = drive(&vin, 1000, pass_at)
            .into_iter()
            .filter(|p| p.seq % 10 == 0)
            .map(|mut p| {
                p.source_ms = p.source_ms.map(|t| t + 3_000);
                p.received_ms += 3_000;
                p.position = site().offset(90.0, 20.0 * ((p.source_ms.unwrap() - pass_at) / 1000) as f64);
                Ev::Point(p)
            })
            .collect();
        events.extend(drive(&phone, 2000, pass_at).into_iter().map(Ev::Point));
        events.push(Ev::Read(
            read(5, "north", "e2800001", pass_at + 300, 1),
            Some((bus.clone(), MatchKind::Tid)),
        ));
        let passages = run(&mut engine, events, std::slice::from_ref(&bus));
        assert_eq!(passages.len(), 1, "{passages:#?}");
        let t = passages[0].telemetry.as_ref().unwrap();
        assert_eq!(t.point.source, Source::Jt808);
        assert!(t.time_gap_ms.abs() <= 700, "{}", t.time_gap_ms);
        // The same vehicle later without its tag: one telemetry-only passage, not two.
        let later = pass_at + 600_000;
        let mut events: Vec<Ev> = drive(&vin, 3000, later).into_iter().map(Ev::Point).collect();
        events.extend(drive(&phone, 4000, later).into_iter().map(Ev::Point));
        let passages = run(&mut engine, events, &[bus]);
        assert_eq!(passages.len(), 1, "{passages:#?}");
        assert_eq!(kinds(&passages[0]), ["missing_tag"]);
    }

    #[test]
    fn a_flood_of_unknown_tids_is_bounded_and_one_tid_read_ten_thousand_times_is_one_pass() {
        let mut engine = Engine::new(gantry(), T0);
        online(&mut engine);
        for i in 0..10_000 {
            assert!(engine.tag_read(read(i, "north", "e2800001", T0 + i / 10, 1), None));
        }
        assert_eq!(engine.open_passes(), 1);
        let mut refused = 0;
        for i in 0..(MAX_OPEN_PASSES as i64 + 500) {
            if !engine.tag_read(read(20_000 + i, "north", &format!("{i:016x}"), T0 + 1_000, 1), None) {
                refused += 1;
            }
        }
        assert_eq!(refused, 501);
        assert_eq!(engine.stats().passes_refused, 501);
        assert_eq!(engine.low_water(), Some(0));
        let passages = engine.tick(T0 + 60_000);
        assert_eq!(passages.len(), MAX_OPEN_PASSES);
        assert_eq!(passages[0].tag.as_ref().unwrap().reads, 10_000);
        assert_eq!(engine.open_passes(), 0);
        assert_eq!(engine.low_water(), None);
    }

    #[test]
    fn the_telemetry_index_keeps_only_recent_points_and_a_bounded_number_of_vehicles() {
        let mut engine = Engine::new(gantry(), T0);
        let far = site().offset(0.0, 50_000.0);
        for i in 0..(MAX_TRACKS + 100) {
            engine.telemetry(report(VehicleKey::Phone(format!("{i:012}")), i as i64, T0, far));
        }
        assert_eq!(engine.index_size().0, MAX_TRACKS);
        assert_eq!(engine.stats().tracks_refused, 100);
        let one = VehicleKey::Phone("000000000001".into());
        for s in 0..200 {
            engine.telemetry(report(one.clone(), s, T0 + s * 100, far));
        }
        assert!(engine.index_size().1 <= MAX_TRACKS + MAX_POINTS_PER_TRACK);
        engine.tick(T0 + 3_600_000);
        assert_eq!(engine.index_size(), (0, 0));
    }
}
