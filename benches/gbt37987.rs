//! GB/T 37987 tag reports end to end: 16 simulated readers (8 per dialect, the edge dials them)
//! run an active select rule as fast as their link takes it; the appliance commits every report
//! and publishes it to a loopback mosquitto (mutual TLS, QoS 1); a subscriber counts what
//! arrives. Bounded: a warm-up, then a fixed measuring window (`ROADEDGE_BENCH_SECS`, default 20).
//! Run: `cargo bench --bench gbt37987` (figures in docs/BENCHMARKS.md).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_tls, write_config, Mosquitto, Pki};
use roadedge::app::{self, RunOptions};
use roadedge::config::{Config, FileCheck};
use roadedge::protocol::gbt37987::Dialect;
use roadedge::reader::rules::{default_select_spec, SpecState};
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const READERS: usize = 16;

/// Counts report messages and the tags in them (by their `"tid"` keys, without parsing).
async fn counting_cloud(
    port: u16,
    ca_file: &std::path::Path,
    cloud: &roadedge::sim::pki::CertFiles,
    reports: Arc<AtomicU64>,
    tags: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut o = MqttOptions::new("bench-cloud", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            client_tls(ca_file, cloud),
        )));
    let (client, mut eventloop) = AsyncClient::new(o, 1000);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("gbt37987/+/up/report", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    reports.fetch_add(1, Relaxed);
                    let n = p.payload.windows(6).filter(|w| w == b"\"tid\":").count();
                    tags.fetch_add(n as u64, Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("the counting subscriber did not get its SUBACK")
        .unwrap();
}

/// One run's shape: report pace and whether the appliance fuses.
#[derive(Clone, Copy)]
struct Shape {
    tags_per_report: usize,
    /// Each reader's report interval; 1 ms = as fast as its link takes them.
    interval: Duration,
    fusion: bool,
}

/// User + system CPU ticks of this process, and of its threads named `bench-sim` (the readers
/// and the counting subscriber run there, so the appliance's share is the difference).
fn cpu_ticks() -> (u64, u64) {
    fn ticks(stat: &str) -> u64 {
        // Fields after the command name in parentheses: utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0)
    }
    let total = std::fs::read_to_string("/proc/self/stat").map_or(0, |s| ticks(&s));
    let mut sims = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for task in dir.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "bench-sim" {
                sims += std::fs::read_to_string(task.path().join("stat")).map_or(0, |s| ticks(&s));
            }
        }
    }
    (total, sims)
}

fn fusion_passages(f: &roadedge::metrics::FusionCounters) -> u64 {
    [
        &f.passages_tid,
        &f.passages_plate,
        &f.passages_none,
        &f.passages_telemetry_only,
    ]
    .iter()
    .map(|c| c.load(Relaxed))
    .sum()
}

/// What one run measured.
struct Measured {
    reports_per_s: f64,
    /// The appliance's CPU per report at the cloud, in microseconds (10 ms ticks over the window).
    appliance_us_per_report: f64,
    passages: u64,
}

async fn run(shape: Shape, window: Duration, sim_rt: &tokio::runtime::Handle) -> Measured {
    let tags_per_report = shape.tags_per_report;
    let dir = tempfile::tempdir_in("target").unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let stop = CancellationToken::new();
    let (reports, tags) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    {
        let (port, ca, cloud) = (broker.port, pki.ca_file.clone(), pki.cloud.clone());
        let (reports, tags, stop) = (reports.clone(), tags.clone(), stop.clone());
        sim_rt
            .spawn(async move { counting_cloud(port, &ca, &cloud, reports, tags, stop).await })
            .await
            .unwrap();
    }

    let mut sims = Vec::new();
    for i in 0..READERS {
        let dialect = if i % 2 == 0 {
            Dialect::Hb2017
        } else {
            Dialect::Gbt37987_2019
        };
        let mut sn = *b"BENCH000";
        sn[6] = b'0' + (i / 10) as u8;
        sn[7] = b'0' + (i % 10) as u8;
        let mut o = SimReaderOptions::new(sn, dialect, SimMode::Listen("127.0.0.1:0".parse().unwrap()));
        o.tags = 200;
        o.tags_per_report = tags_per_report;
        // 1 ms: as fast as the link takes it (TCP backpressure sets the pace).
        o.report_interval = shape.interval;
        let stop = stop.clone();
        sims.push(
            sim_rt
                .spawn(async move { SimReader::spawn(o, stop).await })
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let config_path = write_config(dir.path(), &pki, &broker.url(), "  max_inflight: 500\n", "4GiB");
    let mut text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("level: info", "level: warn");
    if shape.fusion {
        // Every report's tag is a new pass (200 tags per reader, each read again only after the
        // 1 s merge window): one passage per report, fusion's worst case; at a gantry a pass is
        // tens of reads.
        text = text.replace(
            "edge: {id: cab-1}",
            "edge: {id: cab-1, site: {name: bench, latitude: 31.2304, longitude: 121.4737}}",
        );
        text.push_str("fusion: {window: 10s, radius_m: 300, merge_window: 1s}\n");
    }
    text.push_str("readers:\n  keepalive_interval: 5s\n  devices:\n");
    for (i, sim) in sims.iter().enumerate() {
        let dialect = if i % 2 == 0 { "hb-2017" } else { "gbt37987-2019" };
        text.push_str(&format!(
            "    - {{id: r{i:02}, tcp: '{}', dialect: {dialect}}}\n",
            sim.local_addr.unwrap()
        ));
    }
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path, FileCheck::Check).unwrap();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(app::run_with(
        config,
        RunOptions::default(),
        shutdown.clone(),
        move |a| {
            let _ = tx.send((a.metrics.clone(), a.readers.clone().unwrap()));
        },
    ));
    let (metrics, service) = rx.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.readers().iter().any(|r| r.link != "up") {
        assert!(Instant::now() < deadline, "readers did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..READERS {
        let rule = default_select_spec(1, SpecState::Active, 1, &[1, 2, 3, 4]);
        service
            .execute(
                &format!("r{i:02}"),
                &json!({"action": "set_rules", "select_specs": [rule]}),
            )
            .await
            .unwrap();
    }

    // Warm-up, then the measuring window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r0, t0, c0) = (
        reports.load(Relaxed),
        tags.load(Relaxed),
        metrics.store.committed_total.load(Relaxed),
    );
    let passages0 = fusion_passages(&metrics.fusion);
    let cpu0 = cpu_ticks();
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks();
    let (r1, t1, c1) = (
        reports.load(Relaxed),
        tags.load(Relaxed),
        metrics.store.committed_total.load(Relaxed),
    );
    let passages = fusion_passages(&metrics.fusion) - passages0;
    let appliance_ticks = (cpu1.0 - cpu0.0).saturating_sub(cpu1.1 - cpu0.1);
    let tick_us = 1e6 / 100.0;
    let appliance_us_per_report = appliance_ticks as f64 * tick_us / (r1 - r0).max(1) as f64;
    let backlog = metrics.store.backlog_rows.load(Relaxed);
    let (p50, p99) = metrics.uplink.puback_percentiles();
    let sent: u64 = sims.iter().map(|s| s.reports_sent().0).sum();
    println!(
        "  {READERS} readers x {tags_per_report} tags/report: {:.0} reports/s = {:.0} tags/s at the cloud over {secs:.1}s; \
         {:.0} records/s committed; backlog {backlog} rows at the end; PUBACK p50 {p50} ms, p99 {p99} ms; {sent} reports sent by the readers",
        (r1 - r0) as f64 / secs,
        (t1 - t0) as f64 / secs,
        (c1 - c0) as f64 / secs,
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    stop.cancel();
    for sim in sims {
        let _ = sim_rt.spawn(async move { sim.stop().await }).await;
    }
    drop(broker);
    Measured {
        reports_per_s: (r1 - r0) as f64 / secs,
        appliance_us_per_report,
        passages,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = std::env::var("ROADEDGE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The readers and the counting subscriber run on a runtime of their own, so the appliance's
    // CPU is the process's minus these threads'.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-sim")
        .enable_all()
        .build()
        .unwrap();
    let window = Duration::from_secs(secs);
    let only_fusion = std::env::var("ROADEDGE_BENCH_CASE").is_ok_and(|c| c == "fusion");
    println!("GB/T 37987 tag reports, simulated readers -> edge (commit) -> loopback mosquitto (mutual TLS, QoS 1):");
    for tags_per_report in [1, 8].into_iter().filter(|_| !only_fusion) {
        let shape = Shape {
            tags_per_report,
            interval: Duration::from_millis(1),
            fusion: false,
        };
        rt.block_on(run(shape, window, sim_rt.handle()));
    }
    // The fused path against today's, side by side at the same offered load (16 readers x 100
    // reports/s), appliance CPU per report.
    println!("tag reports fused vs unfused, 16 readers x 100 reports/s, appliance CPU per report at the cloud:");
    let mut ratios = Vec::new();
    for round in 1..=3 {
        let mut per_report = [0.0f64; 2];
        for (i, fusion) in [false, true].into_iter().enumerate() {
            let shape = Shape {
                tags_per_report: 1,
                interval: Duration::from_millis(10),
                fusion,
            };
            let m = rt.block_on(run(shape, window, sim_rt.handle()));
            per_report[i] = m.appliance_us_per_report;
            println!(
                "  round {round} {}: {:.0} reports/s, appliance {:.1} us CPU per report, {} passages",
                if fusion { "fused  " } else { "unfused" },
                m.reports_per_s,
                m.appliance_us_per_report,
                m.passages
            );
        }
        ratios.push(per_report[1] / per_report[0].max(f64::MIN_POSITIVE));
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  fused / unfused per report: median {:.2} of {:?} (target: under 1.20)",
        ratios[1],
        ratios.iter().map(|r| (r * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
}
