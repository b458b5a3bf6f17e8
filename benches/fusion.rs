//! Fusion cost, side by side in one run (figures in docs/BENCHMARKS.md):
//!
//! 1. **Engine alone** (pure, no store): passages/s and CPU per passage, 100,000 identities, each
//!    pass 4 reads with the vehicle's telemetry in the index.
//! 2. **Fused vs unfused tag-report path** through the real store (SQLite file, group commit):
//!    100,000 registered vehicles, 10,000 JT/T 808 positions/s (10,000 vehicles at 1 Hz) and 500
//!    tag reports/s (4 reports per pass: 125 passages/s), rows acknowledged as the uplink does.
//!    Four phases of the same length: telemetry only and telemetry + tag reports, first without
//!    fusion (today's path: the report's JSON committed), then with the fusion service (journal
//!    row in the report's transaction, tap, parse, registry lookup, engine, passage commit and
//!    journal clean-up). CPU per tag report = (CPU with reports - CPU without) / reports, for
//!    each; the ratio is the fused path's added cost.
//!
//! Bounded: `ROADEDGE_BENCH_SECS` per phase (default 6). Run: `cargo bench --bench fusion`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roadedge::config::FusionChecks;
use roadedge::fusion::engine::{
    Engine, EngineConfig, Identity, MatchKind, Source, TagRead, TelemetryPoint, VehicleKey,
};
use roadedge::fusion::geo::GeoPoint;
use roadedge::fusion::service::{FusionDeps, FusionSettings};
use roadedge::fusion::{Registry, VehicleInput};
use roadedge::metrics::Metrics;
use roadedge::store::{Record, RecordClass, Store, StoreOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const REGISTERED: usize = 100_000;
const TELEMETRY_VEHICLES: usize = 10_000;
const TELEMETRY_PER_S: u64 = 10_000;
const REPORTS_PER_S: u64 = 500;
const READS_PER_PASS: u64 = 4;

fn site() -> GeoPoint {
    GeoPoint::new(31.2304, 121.4737)
}

fn tid(i: usize) -> String {
    format!("e280{i:012x}")
}

fn phone(i: usize) -> String {
    format!("0139{i:08}")
}

fn plate(i: usize) -> String {
    format!("京{}{:05}", (b'A' + (i / 100_000) as u8) as char, i % 100_000)
}

/// Process CPU time (user + system) from /proc/self/stat.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the `)` (state is not numeric).
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn engine_config() -> EngineConfig {
    EngineConfig {
        site_name: "bench".into(),
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
        readers: HashMap::new(),
    }
}

fn engine_alone() {
    let identities: HashMap<String, Identity> = (0..REGISTERED)
        .map(|i| {
            (
                tid(i),
                Identity {
                    id: i as i64,
                    plate: Some(plate(i)),
                    plate_color: Some(1),
                    vin: None,
                    phone: Some(phone(i)),
                    tid: Some(tid(i)),
                },
            )
        })
        .collect();
    let t0: i64 = 1_800_000_000_000;
    let mut engine = Engine::new(engine_config(), t0);
    engine.reader_status("gantry", true, t0);
    let passes = 50_000usize;
    let cpu0 = cpu();
    let start = Instant::now();
    let mut made = 0;
    for p in 0..passes {
        let now = t0 + p as i64 * 20;
        let i = (p * 7) % REGISTERED;
        // The vehicle's own position, at the gantry.
        engine.telemetry(TelemetryPoint {
            key: VehicleKey::Phone(phone(i)),
            source: Source::Jt808,
            seq: p as i64,
            source_ms: Some(now),
            received_ms: now,
            position: site().offset(90.0, 5.0),
            speed_kmh: Some(60.0),
            heading: Some(90.0),
            soc: None,
            mileage_km: None,
        });
        for r in 0..READS_PER_PASS {
            let read = TagRead {
                report_seq: p as i64 * 10 + r as i64,
                index: 0,
                reader: "gantry".into(),
                antenna: Some(1 + r % 2),
                tid: tid(i),
                cid: None,
                plate: Some(plate(i)),
                plate_type: Some(2),
                rssi: Some(-40),
                seen_count: Some(1),
                source_ms: Some(now + r as i64 * 5),
                received_ms: now + r as i64 * 5,
            };
            let found = (!engine.has_open_pass(&read.tid, &read.reader))
                .then(|| identities.get(&read.tid).map(|v| (v.clone(), MatchKind::Tid)))
                .flatten();
            engine.tag_read(read, found);
        }
        if p % 50 == 0 {
            made += engine.tick(now).len();
        }
    }
    made += engine.tick(t0 + passes as i64 * 20 + 60_000).len();
    let wall = start.elapsed();
    let used = cpu() - cpu0;
    println!(
        "engine alone: {made} passages from {} reads in {:.2} s: {:.0} passages/s, {:.1} µs CPU per passage (100,000 identities)",
        passes as u64 * READS_PER_PASS,
        wall.as_secs_f64(),
        made as f64 / wall.as_secs_f64(),
        used.as_secs_f64() * 1e6 / made.max(1) as f64
    );
}

fn location(i: usize, n: u64) -> serde_json::Value {
    let p = site().offset(90.0, (i % 200) as f64);
    let now = roadedge::gateway::gbt32960::session::beijing_time(roadedge::time::now_ms());
    json!({"header": {"msg_id": 512, "encrypt": 0, "len": 28, "phone": phone(i), "msg_sn": n % 65536},
           "body": {"alarm": 0, "status": 3, "latitude": (p.latitude * 1e6).round() as u64,
                    "longitude": (p.longitude * 1e6).round() as u64, "altitude": 12, "speed": 600, "direction": 90,
                    "time": format!("{:02}{:02}{:02}{:02}{:02}{:02}", now.year % 100, now.month, now.day, now.hour, now.minute, now.second),
                    "extra": {"mileage": 12345}}})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_report(i: usize, n: u64) -> serde_json::Value {
    let (authority, characters) = roadedge::fusion::plate::tag_bytes(&plate(i)).unwrap_or_default();
    json!({"msg": "TagSelectAccessReport", "code": 500, "device_sn": "47414e5452593031", "seq": n, "body": {"tags": [
        {"tid": tid(i), "antenna": 1 + n % 2, "rssi": -40, "first_seen": roadedge::time::now_rfc3339(), "seen_count": 1,
         "select_spec_id": 1, "tag_data": {"card_id": format!("{i:08x}"), "plate_type": 2,
         "raw": {"FPDH": hex(&authority), "HPHMXH": hex(&characters), "HPZL": "02"}}}
    ]}})
}

/// Appends `per_s` records a second from 16 tasks for `secs`; returns how many committed.
async fn paced(store: &Store, per_s: u64, secs: Duration, report: bool) -> u64 {
    let tasks = 16u64;
    let done = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (store, done) = (store.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(tasks as f64 / per_s as f64);
            let mut k = 0u64;
            loop {
                let at = start + period * k as u32;
                if at >= start + secs {
                    return;
                }
                tokio::time::sleep_until(at).await;
                let n = k * tasks + t;
                let record = if report {
                    // Each vehicle's tag is read READS_PER_PASS times in a row.
                    let i = ((n / READS_PER_PASS) as usize * 7) % TELEMETRY_VEHICLES;
                    Record::new(
                        "gbt37987/gantry",
                        "gbt37987/gantry/up/report",
                        RecordClass::Telemetry,
                        &tag_report(i, n),
                    )
                } else {
                    let i = (n as usize) % TELEMETRY_VEHICLES;
                    let p = phone(i);
                    Record::new(
                        format!("jt808/{p}"),
                        format!("jt808/{p}/{p}/up"),
                        RecordClass::Telemetry,
                        &location(i, n),
                    )
                };
                if store.append(record).await.is_ok() {
                    done.fetch_add(1, Relaxed);
                }
                k += 1;
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    done.load(Relaxed)
}

/// Deletes committed rows every 100 ms, as PUBACKs do.
async fn drain(store: Store, stop: Arc<AtomicBool>) {
    let mut acked = 0i64;
    let committed = store.committed_seq();
    while !stop.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let top = *committed.borrow();
        if top > acked {
            let seqs: Vec<i64> = ((acked + 1).max(top - 50_000)..=top).collect();
            let _ = store.acknowledge(seqs).await;
            acked = top;
        }
    }
}

struct Phase {
    cpu: Duration,
    reports: u64,
    telemetry: u64,
}

async fn phase(store: &Store, secs: Duration, with_reports: bool) -> Phase {
    let cpu0 = cpu();
    let telemetry = paced(store, TELEMETRY_PER_S, secs, false);
    let reports = async {
        if with_reports {
            paced(store, REPORTS_PER_S, secs, true).await
        } else {
            tokio::time::sleep(secs).await;
            0
        }
    };
    let (telemetry, reports) = tokio::join!(telemetry, reports);
    Phase {
        cpu: cpu() - cpu0,
        reports,
        telemetry,
    }
}

async fn through_the_store(secs: Duration) {
    let dir = tempfile::tempdir_in("target").unwrap();
    let metrics = Arc::new(Metrics::default());
    let (store, _) = Store::open(
        StoreOptions {
            path: dir.path().join("bench.db"),
            max_bytes: 2 << 30,
            edge_id: "bench".into(),
        },
        metrics.clone(),
    )
    .unwrap();
    let registry = Registry::open(store.clone(), 200_000, metrics.clone()).await.unwrap();
    let t = Instant::now();
    for chunk in (0..REGISTERED).collect::<Vec<_>>().chunks(10_000) {
        let vehicles = chunk
            .iter()
            .map(|&i| VehicleInput {
                plate: plate(i),
                plate_color: Some(1),
                vin: None,
                phone: Some(phone(i)),
                tid: Some(tid(i)),
            })
            .collect();
        let report = registry.upsert(vehicles).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors.first());
    }
    println!(
        "registry: {} vehicles registered in {:.1} s",
        registry.len(),
        t.elapsed().as_secs_f64()
    );
    let stop_drain = Arc::new(AtomicBool::new(false));
    tokio::spawn(drain(store.clone(), stop_drain.clone()));

    let a0 = phase(&store, secs, false).await;
    let a1 = phase(&store, secs, true).await;

    let shutdown = CancellationToken::new();
    let mut config_text = String::from(
        "edge: {id: bench, site: {name: bench, latitude: 31.2304, longitude: 121.4737}}\nuplink: {url: 'mqtt://127.0.0.1:1'}\nfusion:\n",
    );
    config_text.push_str("readers:\n  devices:\n    - {id: gantry, tcp: '127.0.0.1:1'}\n");
    let config = roadedge::config::Config::parse(&config_text, roadedge::config::FileCheck::Skip).unwrap();
    let settings = FusionSettings::from_config(&config).unwrap();
    metrics.readers.lock().unwrap().insert(
        "gantry".into(),
        roadedge::metrics::ReaderState {
            link_up: true,
            ..Default::default()
        },
    );
    let deps = FusionDeps {
        store: store.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
    };
    let (_service, task) = roadedge::fusion::service::start(settings, deps, shutdown.clone());
    // Let it identify the 10,000 vehicles in the zone (one lookup each) before measuring.
    let _ = phase(&store, Duration::from_secs(3), false).await;
    let b0 = phase(&store, secs, false).await;
    let passages0 = passages(&metrics);
    let b1 = phase(&store, secs, true).await;
    // The passes of the last reads end one window later.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let passages = passages(&metrics) - passages0;
    shutdown.cancel();
    let _ = task.await;
    stop_drain.store(true, Relaxed);

    let per = |with: &Phase, without: &Phase| {
        (with.cpu.as_secs_f64() - without.cpu.as_secs_f64()).max(0.0) * 1e6 / with.reports.max(1) as f64
    };
    let unfused = per(&a1, &a0);
    let fused = per(&b1, &b0);
    println!(
        "phases of {} s: telemetry {}/{}/{}/{} records; tag reports {} (unfused) and {} (fused)",
        secs.as_secs(),
        a0.telemetry,
        a1.telemetry,
        b0.telemetry,
        b1.telemetry,
        a1.reports,
        b1.reports
    );
    println!(
        "CPU: unfused {:.2} s (telemetry only) / {:.2} s (with reports); fused {:.2} s / {:.2} s",
        a0.cpu.as_secs_f64(),
        a1.cpu.as_secs_f64(),
        b0.cpu.as_secs_f64(),
        b1.cpu.as_secs_f64()
    );
    println!(
        "fusion of the telemetry alone: {:.1} µs CPU per position ({:.0}% of one core at 10,000/s)",
        (b0.cpu.as_secs_f64() - a0.cpu.as_secs_f64()) * 1e6 / b0.telemetry.max(1) as f64,
        (b0.cpu.as_secs_f64() - a0.cpu.as_secs_f64()) * 100.0 / secs.as_secs_f64()
    );
    println!(
        "CPU per tag report: unfused {unfused:.1} µs, fused {fused:.1} µs: ratio {:.2} (+{:.0}%)",
        fused / unfused.max(1e-9),
        (fused / unfused.max(1e-9) - 1.0) * 100.0
    );
    println!(
        "passages: {passages} from {} fused reports ({:.0} passages/s offered), {:.1} µs CPU per passage (the reports' added CPU / passages)",
        b1.reports,
        passages as f64 / secs.as_secs_f64(),
        (b1.cpu.as_secs_f64() - b0.cpu.as_secs_f64()) * 1e6 / passages.max(1) as f64
    );
    println!(
        "inputs dropped by the tap: {}, journal rows left: {}",
        metrics.fusion.inputs_dropped_total.load(Relaxed),
        metrics.fusion.journal_rows.load(Relaxed)
    );
    store.close().await;
}

fn passages(metrics: &Metrics) -> u64 {
    let f = &metrics.fusion;
    f.passages_tid.load(Relaxed) + f.passages_plate.load(Relaxed) + f.passages_none.load(Relaxed)
}

fn main() {
    let secs = std::env::var("ROADEDGE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6u64);
    engine_alone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(through_the_store(Duration::from_secs(secs)));
}
