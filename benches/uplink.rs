//! Uplink drain throughput: a backlog of records published to a loopback mosquitto (mutual TLS)
//! with QoS 1, each row deleted on its PUBACK. Run: `cargo bench --bench uplink`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::{write_config, Mosquitto, Pki};
use roadedge::app::{self, RunOptions};
use roadedge::config::{Config, FileCheck};
use roadedge::metrics::Metrics;
use roadedge::store::{Record, RecordClass, Store, StoreOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const BACKLOG: usize = 50_000;
const DEVICES: usize = 100;

async fn drain(devices_extra_uplink: &str, label: &str) {
    let dir = tempfile::tempdir_in("target").unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let config_path = write_config(dir.path(), &pki, &broker.url(), devices_extra_uplink, "4GiB");
    let config = Config::load(&config_path, FileCheck::Check).unwrap();

    // Fill the backlog first (no uplink running).
    let metrics = std::sync::Arc::new(Metrics::default());
    let (store, _) = Store::open(
        StoreOptions {
            path: config.storage.path.clone(),
            max_bytes: config.storage.max_bytes,
            edge_id: "cab-1".into(),
        },
        metrics,
    )
    .unwrap();
    let records: Vec<Record> = (0..BACKLOG)
        .map(|n| {
            Record::new(
                format!("d{}", n % DEVICES),
                format!("jt808/d{0}/d{0}/up", n % DEVICES),
                RecordClass::Telemetry,
                &json!({"n": n, "body": {"latitude": 31230400, "longitude": 121473700, "speed": 600}}),
            )
        })
        .collect();
    for chunk in records.chunks(1000) {
        store.append_all(chunk.to_vec()).await.unwrap();
    }
    store.close().await;

    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = shutdown.clone();
    let task = tokio::spawn(app::run_with(config, RunOptions::default(), s, move |a| {
        let _ = tx.send(a.metrics.clone());
    }));
    let metrics = rx.await.unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    while metrics.store.backlog_rows.load(Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (p50, p99) = metrics.uplink.puback_percentiles();
    println!(
        "  {label}: {BACKLOG} records from {DEVICES} devices drained in {secs:.2}s = {:.0} records/s (PUBACK latency p50 {p50} ms, p99 {p99} ms)",
        BACKLOG as f64 / secs
    );
    shutdown.cancel();
    let _ = task.await;
    drop(broker);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("uplink drain to loopback mosquitto over mutual TLS, QoS 1, delete on PUBACK:");
    for inflight in [20, 100, 500] {
        rt.block_on(drain(
            &format!("  max_inflight: {inflight}\n"),
            &format!("max_inflight {inflight:>3}"),
        ));
    }
}
