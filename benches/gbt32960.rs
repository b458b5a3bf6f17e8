//! GB/T 32960: codec decode rate per core, and real-time frames end to end from 1,000 simulated
//! vehicles (mutual TLS) through the gateway, the store and the uplink to a loopback mosquitto
//! (mutual TLS, QoS 1), with the login-reply latency. Run: `cargo bench --bench gbt32960`
//! (figures in docs/BENCHMARKS.md; `-- --codec-only` for the codec figures alone). Bounded: 3 s
//! per codec case; load steps of 10 s measured (at most five, each with a 20 s drain cap).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{free_port, write_config, Mosquitto, Pki};
use roadedge::app::{self, RunOptions};
use roadedge::config::{Config, FileCheck};
use roadedge::protocol::gbt32960::{decode_frame, Edition, FrameDecoder, Origin, Time, Vin};
use roadedge::sim::gbt32960::{self as sim, ClientTls, LoadOptions, LoadStats};
use roadedge::sim::pki::TestCa;
use tokio_util::sync::CancellationToken;

const CODEC_CASE: Duration = Duration::from_secs(3);
const VEHICLES: usize = 1000;
/// Measuring window of one load step.
const WINDOW: Duration = Duration::from_secs(10);
/// Longest wait for the backlog to drain after a step.
const DRAIN: Duration = Duration::from_secs(20);

/// Runs `f` repeatedly for `CODEC_CASE`; returns calls per second. With
/// `ROADEDGE_BENCH_ITERATIONS=N` it makes exactly N calls instead (for instruction counts under
/// `valgrind --tool=callgrind`, where time means nothing).
fn rate(mut f: impl FnMut() -> usize) -> f64 {
    let fixed: Option<usize> = std::env::var("ROADEDGE_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok());
    let start = Instant::now();
    let mut n = 0;
    match fixed {
        Some(iterations) => {
            for _ in 0..iterations {
                n += f();
            }
        }
        None => {
            while start.elapsed() < CODEC_CASE {
                for _ in 0..256 {
                    n += f();
                }
            }
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn codec() {
    println!("codec, one core (real-time frame with every information type of the edition):");
    let only: Option<String> = std::env::var("ROADEDGE_BENCH_CASE").ok();
    let wanted = |case: &str| only.as_deref().is_none_or(|o| o == case);
    for edition in [Edition::V2016, Edition::V2025] {
        let frame = sim::realtime_frame(Vin::from_text("LSIMBENCH00000001"), edition, Time::default(), 1, false);
        let bytes = frame.encode().unwrap();
        let json_len = frame.to_json_bytes().len();
        let one_shot = if wanted("decode") {
            rate(|| {
                std::hint::black_box(decode_frame(std::hint::black_box(&bytes), Origin::Terminal).unwrap());
                1
            })
        } else {
            0.0
        };
        // The server's path: the stream decoder over a buffer of back-to-back frames.
        let stream: Vec<u8> = bytes.iter().copied().cycle().take(bytes.len() * 64).collect();
        let streamed = if wanted("stream") {
            rate(|| {
                let mut buf = BytesMut::from(&stream[..]);
                let mut decoder = FrameDecoder::new(Origin::Terminal);
                let mut n = 0;
                while let Ok(Some(f)) = decoder.decode(&mut buf) {
                    std::hint::black_box(f);
                    n += 1;
                }
                n
            })
        } else {
            0.0
        };
        // The gateway's path per frame: decode, then the record body (EMQX JSON, serialised).
        let with_json = if wanted("json") {
            rate(|| {
                let f = decode_frame(std::hint::black_box(&bytes), Origin::Terminal).unwrap();
                std::hint::black_box(f.to_json_bytes());
                1
            })
        } else {
            0.0
        };
        // The previous path, kept while both exist: a `serde_json::Value` tree, then serialised.
        let with_value = if wanted("json-value") {
            rate(|| {
                let f = decode_frame(std::hint::black_box(&bytes), Origin::Terminal).unwrap();
                std::hint::black_box(serde_json::to_vec(&f.to_json()).unwrap());
                1
            })
        } else {
            0.0
        };
        let json_cost = |rate: f64| {
            if rate > 0.0 && one_shot > 0.0 {
                one_shot / rate - 1.0
            } else {
                0.0
            }
        };
        println!(
            "  {edition:?}: {} bytes/frame ({json_len} bytes of JSON): decode {one_shot:.0} frames/s ({:.0} MB/s), stream decode {streamed:.0} frames/s, decode + EMQX JSON {with_json:.0} frames/s (JSON = {:.2}x the decode alone); via a Value tree {with_value:.0} frames/s (JSON = {:.2}x the decode)",
            bytes.len(),
            one_shot * bytes.len() as f64 / 1e6,
            json_cost(with_json),
            json_cost(with_value),
        );
    }
}

struct Sample {
    at: Instant,
    sent: u64,
    committed: u64,
    published: u64,
}

/// One world (mosquitto, appliance); load steps of rising rate, each with fresh logins, a
/// 10 s measuring window and a bounded drain. Stops after the first step the chain cannot carry.
async fn end_to_end(steps: &[f64]) {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target".into())).unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let vehicles_ca = TestCa::new(dir.path(), "vehicles").unwrap();
    let server = vehicles_ca.server("gbt32960-server").unwrap();
    let client = vehicles_ca.client("vehicle", "bench").unwrap();
    let port = free_port();
    let config_path = write_config(dir.path(), &pki, &broker.url(), "", "4GiB");
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text = text.replace("logging: {level: info}", "logging: {level: warn}");
    text.push_str(&format!(
        "gbt32960:\n  listen: 127.0.0.1:{port}\n  tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n",
        server.cert.display(),
        server.key.display(),
        vehicles_ca.ca_file.display()
    ));
    std::fs::write(&config_path, text).unwrap();
    let config = Config::load(&config_path, FileCheck::Check).unwrap();

    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = shutdown.clone();
    let task = tokio::spawn(app::run_with(config, RunOptions::default(), s, move |a| {
        let _ = tx.send(a.metrics.clone());
    }));
    let metrics = rx.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.uplink.connected.load(Relaxed) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tls = ClientTls::from_files(&vehicles_ca.ca_file, Some((&client.cert, &client.key)), "localhost").unwrap();

    for &per_vehicle in steps {
        let offered = per_vehicle * VEHICLES as f64;
        let stats = Arc::new(LoadStats::default());
        let options = LoadOptions {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            vehicles: VEHICLES,
            rate: offered,
            edition: Edition::V2016,
            tls: Some(tls.clone()),
            duration: None,
            vin_prefix: "LBENCH".into(),
            heartbeat: Duration::from_secs(30),
            ramp: Duration::from_secs(3),
        };
        let load_stop = CancellationToken::new();
        let load = tokio::spawn(sim::run_load(options, stats.clone(), load_stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.logins.load(Relaxed) < VEHICLES as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let logins = stats.logins.load(Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sample = || Sample {
            at: Instant::now(),
            sent: stats.frames_sent.load(Relaxed),
            committed: metrics.store.committed_total.load(Relaxed),
            published: metrics.uplink.published_total.load(Relaxed),
        };
        let a = sample();
        tokio::time::sleep(WINDOW).await;
        let b = sample();
        let backlog_at_end = metrics.store.backlog_rows.load(Relaxed);
        load_stop.cancel();
        let _ = load.await;
        let secs = (b.at - a.at).as_secs_f64();
        let drain_start = Instant::now();
        while metrics.store.backlog_rows.load(Relaxed) > 0 && drain_start.elapsed() < DRAIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (p50, p99) = metrics.uplink.puback_percentiles();
        let delivered = (b.published - a.published) as f64 / secs;
        println!(
            "  offered {offered:>5.0}/s: {logins}/{VEHICLES} logged in (login reply p50 {:.1} ms, p99 {:.1} ms); sent {:.0}/s, committed {:.0}/s, PUBACKed by mosquitto {delivered:.0}/s (PUBACK p50 {p50} ms, p99 {p99} ms); backlog {backlog_at_end} rows at the end of the window, {} after {:.1} s of drain; frames_bad {}",
            stats.login_latency_ms(50),
            stats.login_latency_ms(99),
            (b.sent - a.sent) as f64 / secs,
            (b.committed - a.committed) as f64 / secs,
            metrics.store.backlog_rows.load(Relaxed),
            drain_start.elapsed().as_secs_f64(),
            metrics.gbt32960.frames_bad.load(Relaxed),
        );
        if delivered < 0.9 * offered {
            break;
        }
    }
    shutdown.cancel();
    let _ = task.await;
    drop(broker);
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    codec();
    // `cargo bench --bench gbt32960 -- --codec-only` stops after the codec figures.
    if std::env::args().any(|a| a == "--codec-only") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "end to end: {VEHICLES} vehicles (2016, mutual TLS) -> gateway -> store -> mosquitto (mutual TLS, QoS 1):"
    );
    rt.block_on(end_to_end(&[1.0, 2.0, 4.0, 5.0, 6.0]));
}
