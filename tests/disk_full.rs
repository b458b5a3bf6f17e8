//! A full disk is an operating state: the store on a small tmpfs the test mounts (skipped with a
//! message only where mounting is forbidden). The disk fills while nothing is delivered: the
//! database stops growing, `disk_full` is raised once, telemetry is evicted oldest first while
//! critical records are still committed, what fits nowhere is refused (never half-accepted), and
//! once delivered rows free their space the reserve comes back and `disk_full` clears by itself.

mod common;

use std::path::Path;
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
