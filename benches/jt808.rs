//! JT/T 808 end to end: simulated terminals (in this process) against `roadedge run` (a child
//! process) that publishes to a loopback mosquitto with mutual TLS. Measures locations per second
//! acknowledged after commit from 1,000 and 10,000 terminals reporting as fast as their acks
//! return, how fast the uplink delivers them to the broker, and the appliance's RSS with 10,000
//! idle authenticated connections. Every phase is bounded in time.
//! Run: `cargo bench --bench jt808` (needs `ulimit -n` of at least 12000; figures in
//! docs/BENCHMARKS.md).
//!
//! First, the codec on one core against the `jt808` crate (0.1.1, a dev-dependency of this bench
//! only) on the shared vectors (tests/vectors/jt808.json), in the same run: each side turns one
//! frame's bytes into a typed header and body. The crate panics on some vectors; each of its
//! decodes runs under `catch_unwind`, the panicking vectors are listed and left out of both
//! sides' rate. `-- --codec-only` stops after the codec figures; `ROADEDGE_BENCH_ITERATIONS=N`
//! makes exactly N passes (for `valgrind --tool=callgrind`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{client_tls, free_port, write_config, Mosquitto, Pki};
use roadedge::protocol::jt808::{Edition, FrameDecoder, Message, TextEncoding};
use roadedge::sim::jt808::{run, SimEdition, SimOptions, SimStats};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The appliance as a child process, with its file limit raised.
struct Edge {
    child: Child,
}

impl Edge {
    fn start(config: &std::path::Path, log: &std::path::Path) -> Edge {
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 20000 2>/dev/null || ulimit -n $(ulimit -Hn); exec \"$0\" run -c \"$1\"")
            .arg(env!("CARGO_BIN_EXE_roadedge"))
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Edge { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts the locations the broker delivers on `jt808/+/+/up`.
fn count_deliveries(port: u16, pki: &Pki, counter: Arc<AtomicU64>, stop: CancellationToken) {
    let mut o = MqttOptions::new("bench-cloud", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            client_tls(&pki.ca_file, &pki.cloud),
        )));
    let (client, mut eventloop) = AsyncClient::new(o, 10_000);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe("jt808/+/+/up", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if memchr_msg_id(&p.payload) {
                            counter.fetch_add(1, Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    });
}

/// A location record (`"msg_id":512`), without parsing the JSON.
fn memchr_msg_id(payload: &[u8]) -> bool {
    payload.windows(13).any(|w| w == b"\"msg_id\":512,")
}

struct World {
    _dir: tempfile::TempDir,
    pki: Pki,
    broker: Mosquitto,
}

fn edge_config(world: &World, name: &str) -> (std::path::PathBuf, String) {
    let dir = world._dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = write_config(&dir, &world.pki, &world.broker.url(), "", "4GiB");
    let port = free_port();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("level: info", "level: warn");
    std::fs::write(&path, format!("{text}jt808:\n  listen: 127.0.0.1:{port}\n")).unwrap();
    (path, format!("127.0.0.1:{port}"))
}

async fn wait_online(stats: &SimStats, n: u64, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while stats.online.load(Relaxed) < n {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(start.elapsed())
}

async fn load(world: &World, terminals: usize, window: Duration) {
    let (config, server) = edge_config(world, &format!("load-{terminals}"));
    let edge = Edge::start(&config, &config.with_file_name("edge.log"));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop_counter = CancellationToken::new();
    count_deliveries(world.broker.port, &world.pki, delivered.clone(), stop_counter.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let sim = tokio::spawn(run(
        SimOptions {
            server,
            terminals,
            edition: SimEdition::Mixed,
            rate: 0.0,
            connect_rate: 2000.0,
            ..SimOptions::default()
        },
        stats.clone(),
        stop.clone(),
    ));
    let Some(ramp) = wait_online(&stats, terminals as u64, Duration::from_secs(90)).await else {
        println!(
            "  {terminals:>6} terminals: only {} online after 90 s; skipped",
            stats.online.load(Relaxed)
        );
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), sim).await;
        edge.stop();
        return;
    };
    let (a0, t0) = (stats.acked.load(Relaxed), Instant::now());
    let rss_start = rss_mib(edge.pid());
    tokio::time::sleep(window).await;
    let (a1, secs) = (stats.acked.load(Relaxed), t0.elapsed().as_secs_f64());
    let rss_load = rss_mib(edge.pid());
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), sim).await;
    let total = stats.acked.load(Relaxed);
    let drain_start = Instant::now();
    while delivered.load(Relaxed) < total && drain_start.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = delivered.load(Relaxed);
    println!(
        "  {terminals:>6} terminals (2013+2019, ramp {:.1}s): {:>7.0} locations/s acknowledged after commit over {:.0}s \
         ({:.1}/s per terminal); appliance RSS {rss_start:.0} -> {rss_load:.0} MiB; {got}/{total} acked locations at the \
         broker {:.1}s after the terminals stopped; {} sim errors",
        ramp.as_secs_f64(),
        (a1 - a0) as f64 / secs,
        secs,
        (a1 - a0) as f64 / secs / terminals as f64,
        drain_start.elapsed().as_secs_f64(),
        stats.errors.load(Relaxed),
    );
    stop_counter.cancel();
    edge.stop();
}

async fn idle(world: &World, terminals: usize) {
    let (config, server) = edge_config(world, &format!("idle-{terminals}"));
    let edge = Edge::start(&config, &config.with_file_name("edge.log"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_empty = rss_mib(edge.pid());
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let sim = tokio::spawn(run(
        SimOptions {
            server,
            terminals,
            edition: SimEdition::Mixed,
            idle: true,
            heartbeat: Duration::from_secs(60),
            connect_rate: 2000.0,
            ..SimOptions::default()
        },
        stats.clone(),
        stop.clone(),
    ));
    let online = wait_online(&stats, terminals as u64, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_mib(edge.pid());
    println!(
        "  {terminals:>6} idle authenticated connections ({}): appliance RSS {rss:.1} MiB (empty {rss_empty:.1} MiB, \
         {:.1} KiB per connection)",
        match online {
            Some(d) => format!("all online after {:.1}s", d.as_secs_f64()),
            None => format!("only {} online", stats.online.load(Relaxed)),
        },
        (rss - rss_empty) * 1024.0 / terminals as f64,
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), sim).await;
    edge.stop();
}

/// What one frame gave: typed messages, and frames refused with a classified error.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Handled {
    messages: usize,
    refused: usize,
}

/// Our full decode of one frame: framing, unescaping, checksum, header, typed body.
fn ours(frame: &[u8]) -> Handled {
    let mut buf = BytesMut::from(frame);
    let mut decoder = FrameDecoder::new();
    let mut handled = Handled::default();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(packet)) => match Message::decode(&packet, Edition::V2013) {
                Ok(message) => {
                    std::hint::black_box(message);
                    handled.messages += 1;
                }
                Err(_) => handled.refused += 1,
            },
            Ok(None) => return handled,
            Err(_) => handled.refused += 1,
        }
    }
}

/// Ours, and the EMQX JSON of each message (what the gateway stores per location).
fn ours_with_json(frame: &[u8]) -> usize {
    let mut buf = BytesMut::from(frame);
    let mut decoder = FrameDecoder::new();
    let mut n = 0;
    while let Ok(Some(packet)) = decoder.decode(&mut buf) {
        if let Ok(message) = Message::decode(&packet, Edition::V2013) {
            std::hint::black_box(message.to_json_bytes(TextEncoding::Gbk).ok());
            n += 1;
        }
    }
    n
}

/// The crate's full decode of one frame: its codec (framing, unescaping, header), then the
/// typed body for the ids it models and exports (0x0001/0x8001, 0x0100, 0x0102, 0x8100, 0x0200,
/// 0x0201). It returns how many messages it gave.
fn peer(frame: &[u8]) -> usize {
    use jt808_peer::bytes::JtBytes;
    use jt808_peer::models::jt0x0200::Jt0x0200;
    use jt808_peer::models::jt0x0201::Jt0x0201;
    use jt808_peer::models::{Jt0x0001, Jt0x0100, Jt0x0102, Jt0x8100, Jt808BodyTrans};
    use tokio_util::codec::Decoder;
    let mut buf = BytesMut::from(frame);
    let mut codec = jt808_peer::codec::Jt808Codec::new();
    let mut n = 0;
    while let Ok(Some(message)) = codec.decode(&mut buf) {
        let mut body = JtBytes::from(message.get_body());
        match message.id {
            0x0001 | 0x8001 => drop(std::hint::black_box(Jt0x0001::fill_new(&mut body, &message))),
            0x0100 => drop(std::hint::black_box(Jt0x0100::fill_new(&mut body, &message))),
            0x0102 => drop(std::hint::black_box(Jt0x0102::fill_new(&mut body, &message))),
            0x8100 => drop(std::hint::black_box(Jt0x8100::fill_new(&mut body, &message))),
            0x0200 => drop(std::hint::black_box(Jt0x0200::fill_new(&mut body, &message))),
            0x0201 => drop(std::hint::black_box(Jt0x0201::fill_new(&mut body, &message))),
            _ => {}
        }
        std::hint::black_box(&message);
        n += 1;
    }
    n
}

/// Passes over `frames` per second with `decode` (fixed passes with `ROADEDGE_BENCH_ITERATIONS`).
fn passes_per_second(frames: &[Vec<u8>], mut decode: impl FnMut(&[u8]) -> usize) -> f64 {
    let fixed: Option<usize> = std::env::var("ROADEDGE_BENCH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok());
    let start = Instant::now();
    let mut passes = 0usize;
    loop {
        for frame in frames {
            std::hint::black_box(decode(std::hint::black_box(frame)));
        }
        passes += 1;
        match fixed {
            Some(n) if passes >= n => break,
            None if start.elapsed() >= Duration::from_secs(3) => break,
            _ => {}
        }
    }
    passes as f64 / start.elapsed().as_secs_f64()
}

fn codec() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/jt808.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let frames: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| hex::decode(e["hex"].as_str().unwrap()).unwrap())
        .collect();
    // Ours must handle every vector (a message or a classified refusal), never panic.
    let handled: Vec<Handled> = frames
        .iter()
        .map(|f| std::panic::catch_unwind(|| ours(f)).expect("our codec never panics"))
        .collect();
    let refused: Vec<usize> = (0..frames.len())
        .filter(|i| handled.get(*i).is_some_and(|h| h.messages == 0))
        .collect();
    // The crate, each vector under catch_unwind, its panic messages silenced.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let peer_panics: Vec<usize> = (0..frames.len())
        .filter(|i| std::panic::catch_unwind(|| peer(&frames[*i])).is_err())
        .collect();
    std::panic::set_hook(hook);
    let survivors: Vec<Vec<u8>> = (0..frames.len())
        .filter(|i| !peer_panics.contains(i))
        .map(|i| frames[i].clone())
        .collect();
    let n = survivors.len() as f64;
    let peer_rate = passes_per_second(&survivors, peer) * n;
    let ours_rate = passes_per_second(&survivors, |f| ours(f).messages) * n;
    let ours_all = passes_per_second(&frames, |f| ours(f).messages) * frames.len() as f64;
    let ours_json = passes_per_second(&survivors, ours_with_json) * n;
    println!(
        "JT/T 808 codec, one core, tests/vectors/jt808.json ({} frames):",
        frames.len()
    );
    println!(
        "  ours: every frame handled ({} typed messages; refused with a classified error: vectors {refused:?})",
        handled.iter().map(|h| h.messages).sum::<usize>()
    );
    println!(
        "  the jt808 crate 0.1.1 panics on {} vectors: {peer_panics:?}",
        peer_panics.len()
    );
    println!(
        "  on the {} frames it survives: jt808 crate {peer_rate:.0} frames/s, ours {ours_rate:.0} frames/s = {:.2}x; ours on all {} frames {ours_all:.0} frames/s; ours + EMQX JSON {ours_json:.0} frames/s",
        survivors.len(),
        ours_rate / peer_rate,
        frames.len()
    );
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    codec();
    if std::env::args().any(|a| a == "--codec-only") {
        return;
    }
    let limit = open_files_limit();
    if limit < 12_000 {
        println!("ulimit -n is {limit}; 10,000 terminals need at least 12000 (raise it and run again)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target".into())).unwrap();
        let pki = Pki::new(dir.path());
        let broker = Mosquitto::start(dir.path(), &pki);
        let world = World { _dir: dir, pki, broker };
        println!(
            "JT/T 808 end to end (terminals in the bench process, `roadedge run` child, mosquitto over mutual TLS):"
        );
        load(&world, 1_000, Duration::from_secs(15)).await;
        load(&world, 10_000, Duration::from_secs(20)).await;
        idle(&world, 10_000).await;
    });
}
