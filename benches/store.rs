//! Store append throughput with commit completions, next to the raw SQLite insert rate on the
//! same disk (the physical limit). Run: `cargo bench --bench store` (figures in docs/BENCHMARKS.md).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark reports its figures on stdout"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use roadedge::metrics::Metrics;
use roadedge::store::{Record, RecordClass, Store, StoreOptions};
use serde_json::json;

const RECORDS: usize = 40_000;

fn body(n: usize) -> serde_json::Value {
    // About the size of a decoded JT/T 808 location report.
    json!({"header": {"msg_id": 512, "phone": "013800138000", "msg_sn": n % 65536},
           "body": {"alarm": 0, "status": 786435, "latitude": 31230400, "longitude": 121473700,
                    "altitude": 12, "speed": 600, "direction": 90, "time": "261122083000",
                    "extra": {"mileage": 12345, "fuel_meter": 321}}})
}

fn raw_sqlite(dir: &std::path::Path, rows_per_txn: usize) -> f64 {
    let path = dir.join(format!("raw-{rows_per_txn}.db"));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, topic TEXT NOT NULL,
           class INTEGER NOT NULL, created_ms INTEGER NOT NULL, bytes INTEGER NOT NULL, payload BLOB NOT NULL);
         CREATE INDEX outbox_by_device ON outbox(device, seq);
         CREATE INDEX outbox_by_class ON outbox(class, seq);",
    )
    .unwrap();
    let payload = serde_json::to_vec(&body(0)).unwrap();
    let total = if rows_per_txn == 1 { 2_000 } else { RECORDS };
    let start = Instant::now();
    let mut n = 0;
    while n < total {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO outbox(device, topic, class, created_ms, bytes, payload) VALUES (?1,?2,0,0,?3,?4)",
                )
                .unwrap();
            for _ in 0..rows_per_txn {
                stmt.execute(rusqlite::params![
                    format!("d{}", n % 64),
                    "jt808/x/x/up",
                    payload.len() as i64,
                    payload
                ])
                .unwrap();
                n += 1;
            }
        }
        tx.commit().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

async fn store_append(dir: &std::path::Path, appenders: usize) -> (f64, Duration, Duration, u64) {
    let metrics = Arc::new(Metrics::default());
    let (store, _) = Store::open(
        StoreOptions {
            path: dir.join(format!("store-{appenders}.db")),
            max_bytes: 4 << 30,
            edge_id: "bench".into(),
        },
        metrics.clone(),
    )
    .unwrap();
    let per = RECORDS / appenders;
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|a| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for n in 0..per {
                    let r = Record::new(format!("d{a}"), "jt808/x/x/up", RecordClass::Telemetry, &body(n));
                    let t = Instant::now();
                    store.append(r).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = (per * appenders) as f64 / start.elapsed().as_secs_f64();
    let commits = metrics.store.commits_total.load(std::sync::atomic::Ordering::Relaxed);
    store.close().await;
    (rate, percentile(&mut lat, 50), percentile(&mut lat, 99), commits)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target".into())).unwrap();
    println!("raw SQLite (WAL, synchronous=FULL, same schema):");
    for rows in [1, 100, 1000] {
        println!(
            "  {rows:>5} rows/commit: {:>9.0} inserts/s",
            raw_sqlite(dir.path(), rows)
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("roadedge store append, each caller waits for its commit ({RECORDS} records):");
    for appenders in [1, 16, 256, 1000] {
        let (rate, p50, p99, commits) = rt.block_on(store_append(dir.path(), appenders));
        println!(
            "  {appenders:>5} concurrent appenders: {rate:>9.0} records/s, commit latency p50 {p50:?} p99 {p99:?}, {:.1} records/commit",
            RECORDS as f64 / commits.max(1) as f64
        );
    }
}
