//! The soak (`scripts/soak`, default 10 minutes; ignored by `cargo test`): the appliance as a child
//! process (`roadedge sim synthetic`, which is `roadedge run` plus a synthetic source that prints
//! every commit) with JT/T 808 terminals, GB/T 32960 vehicles and GB/T 37987 readers on loopback,
//! a real mosquitto with mutual TLS, and faults on a schedule: SIGKILL and restart, broker outages,
//! a squeeze of the disk budget during an outage (telemetry is evicted, counted), then a quiet
//! phase in one process life where RSS is watched.
//!
//! At the end: acknowledged vs delivered for the 808 locations (by phone and mileage, which the
//! simulator makes unique) and the synthetic records (by run, device and n), lost (critical
//! records: must be 0; telemetry: must not exceed what the appliance counted as evicted),
//! duplicates, peak RSS and its growth over the quiet phase, alarms raised and cleared, panics in
//! the logs. The report goes to stdout and to `target/soak-report.txt`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

/// What the cloud saw, reduced to keys (millions of messages must not be kept whole).
#[derive(Default)]
struct Seen {
    locations: HashSet<(String, u64)>,
    synthetic: HashSet<(String, String, u64)>,
    messages: u64,
    duplicates: u64,
    passages: u64,
    /// The edge's retained status said online at least once.
    edge_online: bool,
    tag_reports: u64,
    gbt32960: u64,
    alarms: BTreeMap<(String, String), u64>,
    /// The highest `evicted_total` each process life published in its metrics (metrics are
    /// published live, so a message belongs to the life running when it arrives).
    evicted_by_life: BTreeMap<usize, u64>,
    life: Arc<AtomicUsize>,
}

impl Seen {
    fn evicted(&self) -> u64 {
        self.evicted_by_life.values().sum()
    }

    fn take(&mut self, topic: &str, payload: &[u8]) {
        self.messages += 1;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let fresh = if topic.starts_with("jt808/") && v["header"]["msg_id"] == 0x0200 {
            match (v["header"]["phone"].as_str(), v["body"]["extra"]["mileage"].as_u64()) {
                (Some(p), Some(m)) => self.locations.insert((p.to_string(), m)),
                _ => true,
            }
        } else if topic.starts_with("sim/") {
            match (v["run"].as_str(), v["device"].as_str(), v["n"].as_u64()) {
                (Some(r), Some(d), Some(n)) => self.synthetic.insert((r.to_string(), d.to_string(), n)),
                _ => true,
            }
        } else if topic.ends_with("/metrics") {
            let evicted = v["store"]["evicted_total"].as_u64().unwrap_or(0);
            let life = self.evicted_by_life.entry(self.life.load(Relaxed)).or_default();
            *life = (*life).max(evicted);
            true
        } else if topic.starts_with("edge/") && topic.ends_with("/status") {
            self.edge_online |= v["state"] == "online";
            true
        } else if topic.starts_with("edge/") && topic.ends_with("/alarm") {
            let key = (
                v["alarm"].as_str().unwrap_or("?").to_string(),
                v["state"].as_str().unwrap_or("?").to_string(),
            );
            *self.alarms.entry(key).or_default() += 1;
            true
        } else {
            if topic.ends_with("/passage") {
                self.passages += 1;
            } else if topic.ends_with("/up/report") {
                self.tag_reports += 1;
            } else if topic.starts_with("gbt32960/") {
                self.gbt32960 += 1;
            }
            true
        };
        if !fresh {
            self.duplicates += 1;
        }
    }
}

/// A persistent-session subscriber to `#` that reconnects through broker outages.
fn subscribe(
    port: u16,
    pki: &Pki,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut o = MqttOptions::new("soak-cloud", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false)
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            client_tls(&pki.ca_file, &pki.cloud),
        )));
    let (client, mut eventloop) = AsyncClient::new(o, 10_000);
    let subscriber = client.clone();
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = eventloop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.subscribe("#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => seen.lock().unwrap().take(&p.topic, &p.payload),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    (client, task)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn config_text(dir: &Path, pki: &Pki, broker: &str, max_bytes: &str, ports: (u16, u16), readers: &str) -> String {
    let base = std::fs::read_to_string(write_config(dir, pki, broker, "", max_bytes)).unwrap();
    format!(
        "{base}jt808:\n  listen: 127.0.0.1:{}\ngbt32960:\n  listen: 127.0.0.1:{}\n{readers}",
        ports.0, ports.1
    )
}

fn minutes() -> f64 {
    std::env::var("ROADEDGE_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak runs for minutes: scripts/soak"]
async fn soak() {
    let total = Duration::from_secs_f64(minutes() * 60.0);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut broker = Mosquitto::start(dir.path(), &pki);
    let current_life = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Seen {
        life: current_life.clone(),
        ..Seen::default()
    }));
    let stop_cloud = CancellationToken::new();
    let (cloud_client, cloud) = subscribe(broker.port, &pki, seen.clone(), stop_cloud.clone());

    let sims_stop = CancellationToken::new();
    let readers = roadedge::sim::reader::demo_readers(sims_stop.clone())
        .await
        .expect("simulated readers");
    let ports = (free_port(), free_port());
    let normal = config_text(dir.path(), &pki, &broker.url(), "64MiB", ports, &readers.yaml);
    let squeezed = config_text(dir.path(), &pki, &broker.url(), "4MiB", ports, &readers.yaml);
    let config = dir.path().join("roadedge.yaml");
    std::fs::write(&config, &normal).unwrap();

    // Synthetic: 10 devices at 100 records/s in all, every 10th critical.
    let synthetic = [
        "--devices",
        "10",
        "--rate",
        "100",
        "--critical-every",
        "10",
        "--padding",
        "200",
    ];
    let mut life = 0usize;
    let mut edge = EdgeProcess::start(&config, &format!("life{life}"), &synthetic);
    let mut committed = Vec::new();
    let mut logs = vec![edge.stderr_path.clone()];

    let jt808 = Arc::new(roadedge::sim::jt808::SimStats::default());
    let jt808_task = tokio::spawn(roadedge::sim::jt808::run(
        roadedge::sim::jt808::SimOptions {
            server: format!("127.0.0.1:{}", ports.0),
            terminals: 100,
            edition: roadedge::sim::jt808::SimEdition::Mixed,
            rate: 1000.0,
            record_acks: true,
            ..roadedge::sim::jt808::SimOptions::default()
        },
        jt808.clone(),
        sims_stop.clone(),
    ));
    let vehicles = Arc::new(roadedge::sim::gbt32960::LoadStats::default());
    let vehicles_task = tokio::spawn(roadedge::sim::gbt32960::run_load(
        roadedge::sim::gbt32960::LoadOptions {
            addr: format!("127.0.0.1:{}", ports.1).parse().unwrap(),
            vehicles: 50,
            rate: 50.0,
            edition: roadedge::protocol::gbt32960::Edition::V2016,
            tls: None,
            duration: None,
            vin_prefix: "LSOAK".into(),
            heartbeat: Duration::from_secs(30),
            ramp: Duration::from_secs(3),
        },
        vehicles.clone(),
        sims_stop.clone(),
    ));

    // Every reader gets an active inventory rule from the cloud, as an operator would set one,
    // once the edge is subscribed (before its first connection the broker has no session to keep
    // the command in).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.lock().unwrap().edge_online {
        assert!(Instant::now() < deadline, "the edge did not come online");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, id) in ["north", "south", "east"].iter().enumerate() {
        let rule = roadedge::reader::rules::default_select_spec(
            n as u32 + 1,
            roadedge::reader::rules::SpecState::Active,
            1,
            &[1, 2],
        );
        let command =
            serde_json::json!({"request_id": format!("soak-rule-{id}"), "action": "set_rules", "select_specs": [rule]});
        let _ = cloud_client
            .publish(
                format!("gbt37987/{id}/dn"),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&command).unwrap(),
            )
            .await;
    }

    // The fault schedule over the first 60%; the quiet phase after it is one process life.
    let faulty = total.mul_f64(0.6);
    let squeeze_at = total.mul_f64(0.35);
    let mut next_kill = Duration::from_secs(45);
    let mut next_outage = Duration::from_secs(70);
    let mut squeezed_done = false;
    let (mut kills, mut outages) = (0u32, 0u32);
    let mut peak_rss = 0u64;
    let mut quiet_rss: Vec<(Duration, u64)> = Vec::new();
    let restart =
        |edge: EdgeProcess, life: &mut usize, committed: &mut Vec<Committed>, logs: &mut Vec<std::path::PathBuf>| {
            committed.extend(edge.kill9());
            *life += 1;
            current_life.store(*life, Relaxed);
            std::thread::sleep(Duration::from_millis(300));
            let next = EdgeProcess::start(&config, &format!("life{life}"), &synthetic);
            logs.push(next.stderr_path.clone());
            next
        };
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = started.elapsed();
        if let Some(rss) = rss_kib(edge.child.id()) {
            peak_rss = peak_rss.max(rss);
            if at > faulty + Duration::from_secs(20) {
                quiet_rss.push((at, rss));
            }
        }
        if at >= faulty {
            continue;
        }
        if !squeezed_done && at >= squeeze_at {
            // The budget squeeze: a small budget and the broker away long enough to fill it.
            squeezed_done = true;
            std::fs::write(&config, &squeezed).unwrap();
            edge = restart(edge, &mut life, &mut committed, &mut logs);
            broker.stop();
            tokio::time::sleep(Duration::from_secs(30)).await;
            broker.resume();
            outages += 1;
            // Its metrics (with the eviction count) reach the cloud before it goes.
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::fs::write(&config, &normal).unwrap();
            edge = restart(edge, &mut life, &mut committed, &mut logs);
            kills += 2;
            continue;
        }
        if at >= next_kill {
            edge = restart(edge, &mut life, &mut committed, &mut logs);
            kills += 1;
            next_kill = at + Duration::from_secs(60);
        }
        if at >= next_outage {
            broker.stop();
            tokio::time::sleep(Duration::from_secs(15)).await;
            broker.resume();
            outages += 1;
            next_outage = started.elapsed() + Duration::from_secs(75);
        }
    }

    // Stop the load, let the backlog drain, then count.
    sims_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), jt808_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), vehicles_task).await;
    let (last, _) = edge.terminate();
    committed.extend(last);
    let acked: HashSet<(String, u64)> = jt808
        .acked_log
        .lock()
        .unwrap()
        .iter()
        .map(|(p, n)| (p.clone(), u64::from(*n)))
        .collect();
    let synthetic_committed: HashSet<(String, String, u64)> = committed
        .iter()
        .map(|c| (c.run.clone(), c.device.clone(), c.n))
        .collect();
    // The last life was stopped gracefully; a fresh one delivers what is left of the backlog.
    current_life.store(life + 1, Relaxed);
    let drain = EdgeProcess::start(&config, "drain", &["--devices", "0"]);
    logs.push(drain.stderr_path.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let lost = |seen: &Seen| {
        let locations = acked.iter().filter(|k| !seen.locations.contains(*k)).count() as u64;
        let (mut critical, mut telemetry) = (0u64, 0u64);
        for k in synthetic_committed.iter().filter(|k| !seen.synthetic.contains(*k)) {
            if k.2 % 10 == 0 {
                critical += 1;
            } else {
                telemetry += 1;
            }
        }
        (locations, critical, telemetry)
    };
    loop {
        let done = {
            let s = seen.lock().unwrap();
            lost(&s) == (0, 0, 0)
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = drain.terminate();
    stop_cloud.cancel();
    let _ = cloud.await;
    sims_stop.cancel();

    let s = seen.lock().unwrap();
    let (lost_locations, lost_critical, lost_telemetry) = lost(&s);
    let panics: Vec<String> = logs
        .iter()
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("panicked")))
        .map(|p| p.display().to_string())
        .collect();
    let growth = match (quiet_rss.get(quiet_rss.len() / 4), quiet_rss.last()) {
        (Some(a), Some(b)) => b.1 as f64 / a.1.max(1) as f64,
        _ => 1.0,
    };
    let alarms: Vec<String> = s.alarms.iter().map(|((a, st), n)| format!("{a} {st} x{n}")).collect();
    let report = format!(
        "soak: {:.1} min, {kills} SIGKILLs, {outages} broker outages (one with the budget squeezed to 4MiB), \
         {} process lives\n\
         808 locations: acknowledged {} / delivered {} / lost {lost_locations}\n\
         synthetic records: committed {} ({} critical) / delivered {} / lost critical {lost_critical} / lost telemetry {lost_telemetry}\n\
         evicted by the budget (counted by the appliance): {}\n\
         duplicates delivered: {} of {} messages; GB/T 32960 messages {} ({} logins answered); tag reports {}; passages {}\n\
         peak RSS {:.1} MiB; RSS over the quiet phase x{growth:.2} ({} samples)\n\
         alarms: {}\n\
         panics: {}\n",
        started.elapsed().as_secs_f64() / 60.0,
        life + 1,
        acked.len(),
        acked.iter().filter(|k| s.locations.contains(*k)).count(),
        synthetic_committed.len(),
        synthetic_committed.iter().filter(|k| k.2 % 10 == 0).count(),
        synthetic_committed.iter().filter(|k| s.synthetic.contains(*k)).count(),
        s.evicted(),
        s.duplicates,
        s.messages,
        s.gbt32960,
        vehicles.logins.load(Relaxed),
        s.tag_reports,
        s.passages,
        peak_rss as f64 / 1024.0,
        quiet_rss.len(),
        if alarms.is_empty() { "none".to_string() } else { alarms.join(", ") },
        if panics.is_empty() { "none".to_string() } else { panics.join(", ") },
    );
    print!("{report}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak-report.txt"),
        &report,
    );
    drop(readers);

    assert!(
        acked.len() > 1000 && synthetic_committed.len() > 1000,
        "the load was too light to mean anything"
    );
    assert_eq!(lost_critical, 0, "critical records were lost");
    assert!(
        lost_locations + lost_telemetry <= s.evicted(),
        "acknowledged telemetry lost beyond what the budget evicted: {lost_locations} + {lost_telemetry} > {}",
        s.evicted()
    );
    assert!(panics.is_empty(), "panics in {panics:?}");
    assert!(growth < 1.25, "RSS grew by x{growth:.2} over the quiet phase");
}
