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
async fn counting_cloud(port: u16, pki: &Pki, reports: Arc<AtomicU64>, tags: Arc<AtomicU64>, stop: CancellationToken) {
    let mut o = MqttOptions::new("bench-cloud", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            client_tls(&pki.ca_file, &pki.cloud),
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

async fn run(tags_per_report: usize, window: Duration) {
    let dir = tempfile::tempdir_in("target").unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let stop = CancellationToken::new();
    let (reports, tags) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    counting_cloud(broker.port, &pki, reports.clone(), tags.clone(), stop.clone()).await;

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
        // As fast as the link takes it: TCP backpressure sets the pace.
        o.report_interval = Duration::from_millis(1);
        sims.push(SimReader::spawn(o, stop.clone()).await.unwrap());
    }
    let config_path = write_config(dir.path(), &pki, &broker.url(), "  max_inflight: 500\n", "4GiB");
    let mut text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("level: info", "level: warn");
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
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let secs = start.elapsed().as_secs_f64();
    let (r1, t1, c1) = (
        reports.load(Relaxed),
        tags.load(Relaxed),
        metrics.store.committed_total.load(Relaxed),
    );
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
        sim.stop().await;
    }
    drop(broker);
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
    println!("GB/T 37987 tag reports, simulated readers -> edge (commit) -> loopback mosquitto (mutual TLS, QoS 1):");
    for tags_per_report in [1, 8] {
        rt.block_on(run(tags_per_report, Duration::from_secs(secs)));
    }
}
