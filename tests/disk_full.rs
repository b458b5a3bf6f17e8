//! A full disk is an operating state: the store on a small tmpfs the test mounts (skipped with a
//! message only where mounting is forbidden). The disk fills while nothing is delivered: the
//! database stops growing, `disk_full` is raised once, telemetry is evicted oldest first while
//! critical records are still committed, what fits nowhere is refused (never half-accepted), and
//! once delivered rows free their space the reserve comes back and `disk_full` clears by itself.
//! The same against the real binary (`roadedge run`): JT/T 808 terminals reporting, broker down,
//! the disk fills; nothing acknowledged is lost but the telemetry counted as evicted.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::disk::SmallDisk;
use roadedge::metrics::Metrics;
use roadedge::store::{Record, RecordClass, SpaceOptions, Store, StoreError, StoreOptions};
use serde_json::json;

fn files(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", db.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}

fn record(class: RecordClass, n: u64) -> Record {
    Record::new(
        "dev",
        "t/dev",
        class,
        &json!({"n": n, "critical": class == RecordClass::Critical, "pad": "p".repeat(600)}),
    )
}

async fn alarm_states(store: &Store, name: &'static str) -> Vec<String> {
    store
        .read(move |c| {
            let mut stmt = c.prepare("SELECT payload FROM outbox WHERE topic = 'edge/cab-1/alarm' ORDER BY seq")?;
            let rows = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .iter()
                .filter_map(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                .filter(|v| v["alarm"] == name)
                .map(|v| v["state"].as_str().unwrap_or("").to_string())
                .collect())
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_full_disk_evicts_telemetry_keeps_critical_records_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("3m") else { return };
    let db = disk.dir.join("edge.db");
    // Something else on the disk (logs, firmware) takes a megabyte.
    std::fs::write(disk.dir.join("other.bin"), vec![1u8; 1 << 20]).unwrap();
    let metrics = Arc::new(Metrics::default());
    let max_bytes = 8 << 20; // more than the disk: the disk fills first
    let (store, _) = Store::open_with(
        StoreOptions {
            path: db.clone(),
            max_bytes,
            edge_id: "cab-1".into(),
        },
        SpaceOptions {
            reserve_bytes: 384 << 10,
            disk_low_bytes: 1 << 20,
        },
        metrics.clone(),
    )
    .unwrap();
    // Let the writer write its reserve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(disk.dir.join("edge.db.reserve").exists(), "the reserve was not written");

    let mut accepted_critical = Vec::new();
    let mut accepted = 0u64;
    let mut refused = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    // Fill well past the disk: 6 MiB of records into ~1.6 MiB of room.
    while n < 10_000 && Instant::now() < deadline {
        let class = if n % 10 == 0 {
            RecordClass::Critical
        } else {
            RecordClass::Telemetry
        };
        match tokio::time::timeout(Duration::from_secs(10), store.append(record(class, n)))
            .await
            .expect("an append hung on the full disk")
        {
            Ok(seq) => {
                accepted += 1;
                if class == RecordClass::Critical {
                    accepted_critical.push((n, seq));
                }
            }
            Err(StoreError::Full(_)) => refused += 1,
            Err(e) => panic!("append {n} failed with {e} instead of a clear refusal"),
        }
        assert!(files(&db) <= max_bytes);
        n += 1;
    }
    let full_free = disk.free();
    println!(
        "full disk: {accepted} accepted, {refused} refused, evicted {}, {} bytes free, files {} bytes",
        metrics.store.evicted_total.load(std::sync::atomic::Ordering::Relaxed),
        full_free,
        files(&db)
    );
    assert_eq!(
        alarm_states(&store, "disk_full").await,
        ["raised"],
        "disk_full raised once"
    );
    assert_eq!(alarm_states(&store, "backlog_eviction").await, ["raised"]);
    assert!(metrics.store.evicted_total.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // Every accepted critical record is still there; telemetry was evicted to make room.
    let (kept_critical, kept_telemetry): (i64, i64) = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT SUM(class = 2 AND topic = 't/dev'), SUM(class = 0) FROM outbox",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(
        kept_critical as usize,
        accepted_critical.len(),
        "an accepted critical record was lost"
    );
    assert!(
        accepted_critical.len() >= 1000,
        "critical records stopped being committed: {}",
        accepted_critical.len()
    );
    assert!(kept_telemetry > 0);

    // Critical records keep coming: they push the remaining telemetry out, and once none is
    // left, telemetry is refused (its device gets no acknowledgement) while critical records
    // are still committed.
    let mut pushed = 0;
    loop {
        store
            .append(record(RecordClass::Critical, n))
            .await
            .expect("a critical record on the full disk");
        n += 1;
        pushed += 1;
        let left: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM outbox WHERE class = 0", [], |r| r.get(0))?))
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(pushed < 20_000, "telemetry was never pushed out");
    }
    let refused = store.append(record(RecordClass::Telemetry, n)).await;
    assert!(matches!(refused, Err(StoreError::Full(_))), "{refused:?}");
    store
        .append(record(RecordClass::Critical, n + 1))
        .await
        .expect("critical records are still committed");
    println!("{pushed} more critical records pushed the telemetry out; then telemetry was refused: {refused:?}");
    assert!(files(&db) <= max_bytes);

    // The uplink delivers everything: the rows go, their space goes back to the disk, the reserve
    // returns and the alarm clears without a restart.
    let seqs: Vec<i64> = store
        .read(|c| {
            let mut stmt = c.prepare("SELECT seq FROM outbox")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    let delivered = Instant::now();
    for chunk in seqs.chunks(256) {
        store.acknowledge(chunk.to_vec()).await.unwrap();
    }
    let recover_deadline = Instant::now() + Duration::from_secs(10);
    // (The delivered rows included the `raised` record.)
    while alarm_states(&store, "disk_full").await != ["cleared"] {
        assert!(
            Instant::now() < recover_deadline,
            "disk_full did not clear within 10 s of the backlog's delivery ({} bytes free): {:?}",
            disk.free(),
            alarm_states(&store, "disk_full").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "space returned: disk_full cleared {:?} after delivery, {} bytes free",
        delivered.elapsed(),
        disk.free()
    );
    assert!(
        disk.dir.join("edge.db.reserve").exists(),
        "the reserve was not rewritten"
    );
    store
        .append(record(RecordClass::Telemetry, 99_999))
        .await
        .expect("telemetry is accepted again");
    store.close().await;
}

/// The database files' sizes, sampled every 20 ms while the appliance runs; the largest total.
fn sample_files(db: PathBuf, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.is_cancelled() {
            let total = files(&db);
            if total > max {
                max = total;
                let each: Vec<u64> = ["", "-wal", "-shm"]
                    .iter()
                    .map(|s| {
                        std::fs::metadata(format!("{}{s}", db.display()))
                            .map(|m| m.len())
                            .unwrap_or(0)
                    })
                    .collect();
                tracing_or_print(&format!(
                    "files {total} = main {} + wal {} + shm {}",
                    each[0], each[1], each[2]
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    })
}

#[allow(clippy::print_stdout, reason = "figures of the run")]
fn tracing_or_print(line: &str) {
    if std::env::var_os("DISK_FULL_VERBOSE").is_some() {
        println!("{}: {line}", roadedge::time::now_rfc3339());
    }
}

/// Writes `path` in 64 KiB chunks until the file system refuses (a burst of logs filling it).
fn fill_until_enospc(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    let _ = f.sync_all();
    written
}

/// An 808 terminal that reports alarm locations (critical records) one after the other, each
/// again until its 0x8001 OK arrives (reconnecting after a refusal); records what was acked.
async fn critical_terminal(
    server: String,
    acked: Arc<std::sync::Mutex<Vec<u32>>>,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    use roadedge::protocol::jt808::Edition;
    use roadedge::sim::jt808::{location, phone_for, Terminal};
    let phone = phone_for(13_700_000_000, 1, Edition::V2013);
    let step = Duration::from_secs(10);
    let mut code = None;
    let mut n = 0u32;
    let mut refusals = 0u64;
    while !stop.is_cancelled() {
        let attempt = async {
            let mut t = Terminal::connect(&server, None, phone, Edition::V2013).await?;
            let c = match &code {
                Some(c) => c,
                None => {
                    code = Some(t.register(step).await?);
                    code.as_ref().unwrap()
                }
            };
            if !t.authenticate(c, step).await? {
                code = None;
                return Err(roadedge::sim::jt808::SimError::Refused("authentication".into()));
            }
            while !stop.is_cancelled() {
                // Alarm bit 0 (emergency): a critical record.
                t.report(location(n, 1), step).await?;
                acked.lock().unwrap().push(n);
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        };
        if attempt.await.is_err() {
            refusals += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    refusals
}

/// The alarm changes the cloud received for `name`, once per edge seq (redeliveries allowed).
fn alarm_changes(cloud: &common::Cloud, name: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for m in cloud.on_topic("edge/cab-1/alarm") {
        if m.payload["alarm"] == name {
            let seq = m.payload["edge"]["seq"].as_i64().unwrap_or(-1);
            seen.insert(seq, m.payload["state"].as_str().unwrap_or("").to_string());
        }
    }
    seen.into_values().collect()
}

/// `(phone, n)` of the locations (0x0200) the cloud received, and the alarm flag of each.
fn published_locations(cloud: &common::Cloud) -> std::collections::BTreeMap<(String, u32), bool> {
    cloud
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic.starts_with("jt808/") && m.payload["header"]["msg_id"] == 0x0200)
        .filter_map(|m| {
            Some((
                (
                    m.payload["header"]["phone"].as_str()?.to_string(),
                    m.payload["body"]["extra"]["mileage"].as_u64()? as u32,
                ),
                m.payload["body"]["alarm"].as_u64().unwrap_or(0) != 0,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout, reason = "the figures of the run go to the test output")]
async fn the_appliance_on_a_full_disk_loses_no_acknowledged_record_and_recovers_by_itself() {
    use common::*;
    use roadedge::sim::jt808::{run, SimEdition, SimOptions, SimStats};
    use std::sync::atomic::Ordering::Relaxed;
    use tokio_util::sync::CancellationToken;

    let Some(disk) = SmallDisk::mount("8m") else { return };
    let (dir, pki, mut broker, cloud) = World::start("disk-full").await.into_parts();
    // The broker is down before the appliance starts and stays down while the disk fills.
    broker.stop();
    let db = disk.dir.join("edge.db");
    let max_bytes: u64 = 3 << 20;
    let config = write_config(dir.path(), &pki, &broker.url(), "", "3MiB");
    let port = free_port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("path: {}", dir.path().join("edge.db").display()),
        &format!("path: {}, reserve_bytes: 512KiB, disk_low_bytes: 1MiB", db.display()),
    );
    assert!(text.contains("reserve_bytes"), "{text}");
    std::fs::write(&config, format!("{text}jt808:\n  listen: 127.0.0.1:{port}\n")).unwrap();
    let log = dir.path().join("edge.log");
    let mut edge = std::process::Command::new(env!("CARGO_BIN_EXE_roadedge"))
        .args(["run", "-c"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start roadedge run");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let edge = Kill(&mut edge);
    let stop_sampling = CancellationToken::new();
    let sampler = sample_files(db.clone(), stop_sampling.clone());

    // Twenty terminals report telemetry (500 locations/s together), one reports alarms.
    let server = format!("127.0.0.1:{port}");
    let stats = Arc::new(SimStats::default());
    let stop_sim = CancellationToken::new();
    let sim = tokio::spawn(run(
        SimOptions {
            server: server.clone(),
            terminals: 20,
            edition: SimEdition::V2013,
            rate: 500.0,
            record_acks: true,
            ..SimOptions::default()
        },
        stats.clone(),
        stop_sim.clone(),
    ));
    let critical_acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let critical = tokio::spawn(critical_terminal(
        server.clone(),
        critical_acked.clone(),
        stop_sim.clone(),
    ));

    // 1. The backlog reaches storage.max_bytes (the disk still has room): telemetry is evicted.
    let started = Instant::now();
    while stats.acked.load(Relaxed) < 12_000 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {} locations acknowledged in 90 s",
            stats.acked.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "budget phase: {} locations acked in {:?}, files {} bytes, {} bytes free",
        stats.acked.load(Relaxed),
        started.elapsed(),
        files(&db),
        disk.free()
    );

    // 2. Something else fills the disk (a burst of logs until ENOSPC) and stays.
    let errors_before = stats.errors.load(Relaxed);
    let filler = fill_until_enospc(&disk.dir.join("burst.log"));
    let acked_at_full = stats.acked.load(Relaxed);
    let critical_at_full = critical_acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let critical_during_full = critical_acked.lock().unwrap().len() - critical_at_full;
    let telemetry_during_full = stats.acked.load(Relaxed) - acked_at_full;
    let refused_during_full = stats.errors.load(Relaxed) - errors_before;
    println!(
        "full disk ({filler} bytes of logs, {} bytes free): in 10 s {critical_during_full} alarm locations and {telemetry_during_full} telemetry locations acked, {refused_during_full} terminal connections refused/closed",
        disk.free()
    );
    assert!(
        critical_during_full >= 20,
        "critical records stopped being committed on the full disk: {critical_during_full}"
    );

    // 3. The broker returns: the delivered backlog gives its space back, disk_full clears.
    broker.resume();
    let back = Instant::now();
    loop {
        let changes = alarm_changes(&cloud, "disk_full");
        if changes.last().map(String::as_str) == Some("cleared") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(90),
            "disk_full not cleared 90 s after the broker returned: {changes:?} ({} bytes free); log {}",
            disk.free(),
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cleared_after = back.elapsed();
    // Accepted again by themselves: every telemetry terminal online and acknowledged within 10 s.
    let acked_at_clear = stats.acked.load(Relaxed);
    let clear = Instant::now();
    while !(stats.online.load(Relaxed) == 20 && stats.acked.load(Relaxed) >= acked_at_clear + 200) {
        assert!(
            clear.elapsed() < Duration::from_secs(10),
            "terminals not accepted again within 10 s of the space returning: {} online",
            stats.online.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accepted_again = clear.elapsed();

    // Stop the load; everything acked is published, except the telemetry the budget evicted.
    stop_sim.cancel();
    tokio::time::timeout(Duration::from_secs(20), sim)
        .await
        .unwrap()
        .unwrap();
    let critical_refusals = tokio::time::timeout(Duration::from_secs(20), critical)
        .await
        .unwrap()
        .unwrap();
    let acked: Vec<(String, u32)> = stats.acked_log.lock().unwrap().clone();
    let critical_phone =
        roadedge::sim::jt808::phone_for(13_700_000_000, 1, roadedge::protocol::jt808::Edition::V2013).to_string();
    let critical_acked: Vec<u32> = critical_acked.lock().unwrap().clone();
    let evicted = |cloud: &Cloud| {
        cloud
            .on_topic("edge/cab-1/metrics")
            .last()
            .and_then(|m| m.payload["store"]["evicted_total"].as_u64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (lost_telemetry, lost_critical) = loop {
        let published = published_locations(&cloud);
        let lost_telemetry: Vec<&(String, u32)> = acked.iter().filter(|k| !published.contains_key(*k)).collect();
        let lost_critical: Vec<u32> = critical_acked
            .iter()
            .copied()
            .filter(|n| !published.contains_key(&(critical_phone.clone(), *n)))
            .collect();
        let settled = lost_critical.is_empty() && (lost_telemetry.len() as u64) <= evicted(&cloud);
        if settled || Instant::now() > deadline {
            break (lost_telemetry.len(), lost_critical);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop_sampling.cancel();
    let max_files = sampler.await.unwrap();
    let evicted_total = evicted(&cloud);
    let disk_full = alarm_changes(&cloud, "disk_full");
    println!(
        "acked {} telemetry + {} alarm locations; not published: {lost_telemetry} telemetry (evicted_total {evicted_total}), {} alarm; \
         disk_full {disk_full:?}, cleared {cleared_after:?} after the broker returned, terminals accepted again {accepted_again:?} after; \
         largest database files {max_files} bytes (max_bytes {max_bytes}); critical terminal reconnects {critical_refusals}",
        acked.len(),
        critical_acked.len(),
        lost_critical.len()
    );
    assert!(
        lost_critical.is_empty(),
        "acknowledged alarm locations lost: {lost_critical:?}"
    );
    assert!(
        lost_telemetry as u64 <= evicted_total,
        "{lost_telemetry} acknowledged locations missing but only {evicted_total} evicted"
    );
    assert!(evicted_total > 0, "the budget never bit: the test proved nothing");
    assert_eq!(
        disk_full,
        ["raised", "cleared"],
        "disk_full raised once and cleared once"
    );
    assert!(
        max_files <= max_bytes,
        "database files reached {max_files} > {max_bytes}"
    );
    drop(edge);
}
