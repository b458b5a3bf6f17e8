//! CONTRACT 5 from outside the process: SIGKILL under load, a broker outage, a full backlog
//! budget, a corrupt database. The appliance is the real binary; the broker is mosquitto.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

/// Every committed record is among the received ones; returns the number lost.
fn lost(committed: &[Committed], received: &[Committed]) -> Vec<Committed> {
    let got: BTreeSet<&Committed> = received.iter().collect();
    committed.iter().filter(|c| !got.contains(c)).cloned().collect()
}

/// Per device, the first arrival of each record must come in increasing `n` (duplicates aside).
fn order_violations(received: &[Committed]) -> Vec<String> {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut bad = Vec::new();
    for r in received {
        if !seen.insert(r.clone()) {
            continue;
        }
        let key = (r.run.clone(), r.device.clone());
        if let Some(prev) = last.get(&key) {
            if r.n <= *prev {
                bad.push(format!("{}/{}: {} after {}", r.run, r.device, r.n, prev));
            }
        }
        last.insert(key, r.n);
    }
    bad
}

async fn wait_until_all_arrived(cloud: &Cloud, committed: &[Committed], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let received = synthetic_received(&cloud.messages.lock().unwrap());
        let missing = lost(committed, &received);
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} committed records never reached the broker, e.g. {:?}",
            missing.len(),
            committed.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_under_load_loses_no_committed_record() {
    let (dir, pki, broker, cloud) = World::start("kill9").await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "256MiB");

    let mut committed = Vec::new();
    let kills = 6;
    for round in 0..kills {
        let edge = EdgeProcess::start(&config, &format!("k{round}"), &["--devices", "16"]);
        // Let it get going, then kill at a random moment of full-speed appending.
        let deadline = Instant::now() + Duration::from_secs(20);
        while edge.committed_count() < 200 {
            assert!(Instant::now() < deadline, "no commits from round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let extra = rand::rng().random_range(50..1500);
        std::thread::sleep(Duration::from_millis(extra));
        let got = edge.kill9();
        eprintln!("round {round}: {} commits acknowledged before SIGKILL", got.len());
        committed.extend(got);
    }
    // The broker saw each killed connection drop and published the Last Will.
    cloud
        .wait_for("the Last Will after a SIGKILL", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == "edge/cab-1/status" && m.payload["state"] == "offline")
        })
        .await;
    // A last run, stopped gracefully, lets the backlog drain.
    let edge = EdgeProcess::start(&config, "final", &["--devices", "2", "--rate", "20"]);
    wait_until_all_arrived(&cloud, &committed, Duration::from_secs(90)).await;
    let (last, code) = edge.terminate();
    assert_eq!(code, Some(0), "graceful shutdown exit code");
    let received = synthetic_received(&cloud.messages.lock().unwrap());
    let duplicates = received.len() - received.iter().collect::<BTreeSet<_>>().len();
    eprintln!(
        "kill -9 x{kills}: committed {} delivered {} lost 0 duplicates {duplicates}",
        committed.len(),
        committed.len()
    );
    drop(last);
    let bad = order_violations(&received);
    assert!(
        bad.is_empty(),
        "per-device order broken: {:?}",
        &bad[..bad.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_broker_outage_under_load_loses_nothing_and_keeps_order() {
    let (dir, pki, mut broker, cloud) = World::start("outage").await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "256MiB");
    let edge = EdgeProcess::start(&config, "outage", &["--devices", "8", "--rate", "400"]);
    std::thread::sleep(Duration::from_secs(3));
    broker.stop();
    let before = edge.committed_count();
    std::thread::sleep(Duration::from_secs(30));
    let during = edge.committed_count() - before;
    assert!(
        during > 1000,
        "appending must go on during the outage ({during} commits)"
    );
    broker.resume();
    std::thread::sleep(Duration::from_secs(3));
    let (committed, code) = edge.terminate();
    assert_eq!(code, Some(0));
    // Restart to drain what the graceful stop left in the backlog.
    let drain = EdgeProcess::start(&config, "outage-drain", &["--devices", "1", "--rate", "1"]);
    wait_until_all_arrived(&cloud, &committed, Duration::from_secs(120)).await;
    drop(drain);
    let received = synthetic_received(&cloud.messages.lock().unwrap());
    let bad = order_violations(&received);
    eprintln!(
        "outage 30s: committed {} ({during} during the outage), delivered all, order violations {}",
        committed.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "per-device order broken: {:?}",
        &bad[..bad.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_evicts_telemetry_first_counts_it_and_alarms_when_the_broker_returns() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut broker = Mosquitto::start(dir.path(), &pki);
    broker.stop();
    let budget: i64 = 2 << 20;
    let config = write_config(dir.path(), &pki, &broker.url(), "", "2MiB");
    let edge = EdgeProcess::start(
        &config,
        "budget",
        &[
            "--devices",
            "4",
            "--rate",
            "1000",
            "--critical-every",
            "200",
            "--padding",
            "300",
        ],
    );
    // Watch the database files from outside while the broker is down: the budget bounds what is
    // on disk (main file + WAL + shared memory), not an estimate.
    let db = dir.path().join("edge.db");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut max_seen = 0;
    while Instant::now() < deadline {
        let files: i64 = ["", "-wal", "-shm"]
            .iter()
            .map(|s| {
                std::fs::metadata(format!("{}{s}", db.display()))
                    .map(|m| m.len() as i64)
                    .unwrap_or(0)
            })
            .sum();
        max_seen = max_seen.max(files);
        assert!(
            files <= budget,
            "the database files take {files} bytes, over the budget {budget}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (committed, code) = edge.terminate();
    assert_eq!(code, Some(0));
    assert!(committed.len() > 3000, "too little load: {}", committed.len());
    eprintln!(
        "budget {budget}: the database files took at most {max_seen} bytes, {} records committed",
        committed.len()
    );

    // Priority: every critical record survived; only telemetry was evicted, oldest first.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(i64, serde_json::Value)> = {
        let mut stmt = conn.prepare("SELECT class, payload FROM outbox ORDER BY seq").unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, serde_json::from_slice(&r.get::<_, Vec<u8>>(1)?).unwrap()))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    let critical_committed = committed.iter().filter(|c| c.n % 200 == 0).count();
    let critical_kept = rows.iter().filter(|(c, p)| *c == 2 && p["kind"] == "login").count();
    assert_eq!(critical_kept, critical_committed, "a critical record was evicted");
    let telemetry_kept: Vec<(String, u64)> = rows
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|(_, p)| (p["device"].as_str().unwrap().to_string(), p["n"].as_u64().unwrap()))
        .collect();
    for device in ["sim-000", "sim-001"] {
        let kept: Vec<u64> = telemetry_kept
            .iter()
            .filter(|(d, _)| d == device)
            .map(|(_, n)| *n)
            .collect();
        let all: Vec<u64> = committed
            .iter()
            .filter(|c| c.device == device && c.n % 200 != 0)
            .map(|c| c.n)
            .collect();
        assert!(!kept.is_empty());
        assert_eq!(
            &all[all.len() - kept.len()..],
            &kept[..],
            "{device}: kept telemetry is not the newest"
        );
    }
    drop(conn);

    // The broker returns: the eviction alarm and the counter reach the cloud.
    broker.resume();
    let cloud = Cloud::connect(broker.port, &pki, "cloud-budget").await;
    let edge = EdgeProcess::start(&config, "budget-2", &["--devices", "1", "--rate", "1"]);
    cloud
        .wait_for("the eviction alarm", Duration::from_secs(60), |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/alarm"
                    && m.payload["alarm"] == "backlog_eviction"
                    && m.payload["state"] == "raised"
            })
        })
        .await;
    let raised = cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .filter(|m| m.payload["state"] == "raised")
        .count();
    assert_eq!(raised, 1, "the alarm must be raised once");
    cloud
        .wait_for("metrics with evictions", Duration::from_secs(30), |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/metrics" && m.payload["store"]["evicted_total"].as_u64().unwrap_or(0) > 0
            })
        })
        .await;
    drop(edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_moved_aside_and_alarmed_and_the_appliance_starts() {
    let (dir, pki, broker, cloud) = World::start("corrupt").await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let mut garbage = vec![0u8; 64 * 1024];
    rand::rng().fill(&mut garbage[..]);
    std::fs::write(dir.path().join("edge.db"), &garbage).unwrap();

    let edge = EdgeProcess::start(&config, "corrupt", &["--devices", "1", "--rate", "10"]);
    cloud
        .wait_for("the store_corrupt alarm", Duration::from_secs(20), |m| {
            m.iter()
                .any(|m| m.topic == "edge/cab-1/alarm" && m.payload["alarm"] == "store_corrupt")
        })
        .await;
    cloud
        .wait_for("records from the fresh store", Duration::from_secs(20), |m| {
            !synthetic_received(m).is_empty()
        })
        .await;
    let (_, code) = edge.terminate();
    assert_eq!(code, Some(0));
    let moved: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("edge.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the corrupt file must be kept aside");
    assert_eq!(std::fs::read(moved[0].path()).unwrap(), garbage);
    let alarm = cloud.on_topic("edge/cab-1/alarm")[0].payload.clone();
    assert!(
        alarm["detail"]["moved_to"]
            .as_str()
            .unwrap()
            .contains("edge.db.corrupt-"),
        "{alarm}"
    );
}
