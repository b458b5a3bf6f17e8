//! Hostile tag data through the real store and the fusion service (issue 8, bad input): reports
//! with no plate, plate characters out of range, non-JSON and wrong-shaped bodies, and one
//! unknown TID read 10,000 times in about a second. Each is a counter, never a panic; the data
//! path (the store's commits) is not held up by fusion; what fusion keeps stays bounded and the
//! journal is emptied once the passes end.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roadedge::fusion::service::{FusionDeps, FusionSettings};
use roadedge::fusion::Registry;
use roadedge::metrics::Metrics;
use roadedge::store::{Record, RecordClass, Store, StoreOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn report(tid: &str, tag_data: serde_json::Value) -> Record {
    let body = json!({"msg": "TagSelectAccessReport", "seq": 1, "body": {"tags": [
        {"tid": tid, "antenna": 1, "first_seen": roadedge::time::now_rfc3339(), "tag_data": tag_data}]}});
    Record::new(
        "gbt37987/gate",
        "gbt37987/gate/up/report",
        RecordClass::Telemetry,
        &body,
    )
}

fn raw(body: &[u8]) -> Record {
    let mut r = Record::new(
        "gbt37987/gate",
        "gbt37987/gate/up/report",
        RecordClass::Telemetry,
        &json!({}),
    );
    r.body = body.to_vec();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tag_reports_are_counted_bounded_and_never_hold_up_commits() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (store, _) = Store::open(
        StoreOptions {
            path: dir.path().join("edge.db"),
            max_bytes: 256 << 20,
            edge_id: "cab-1".into(),
        },
        metrics.clone(),
    )
    .unwrap();
    let registry = Registry::open(store.clone(), 1000, metrics.clone()).await.unwrap();
    let config = roadedge::config::Config::parse(
        "edge: {id: cab-1, site: {latitude: 31.2304, longitude: 121.4737}}\nuplink: {url: 'mqtt://127.0.0.1:1'}\n\
         fusion: {window: 1s, merge_window: 500ms}\n",
        roadedge::config::FileCheck::Skip,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let (service, task) = roadedge::fusion::service::start(
        FusionSettings::from_config(&config).unwrap(),
        FusionDeps {
            store: store.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
        },
        stop.clone(),
    );

    // Garbage: each is committed (the data path does not care) and counted by fusion.
    let garbage = [
        report("e2800a0000000001", json!({})), // no plate at all
        report("e2800a0000000002", json!({"raw": {"FPDH": "0100", "HPHMXH": "ff2428"}})), // codes out of range
        report(
            "e2800a0000000003",
            json!({"raw": {"FPDH": "ee00", "HPHMXH": "0001020304"}}),
        ), // no such province
        report("not hex", json!({})),          // a TID that is no TID
        raw(b"\xff\xfe not json"),
        raw(br#"{"body": {"tags": "many"}}"#),
    ];
    for r in garbage {
        store.append(r).await.unwrap();
    }
    // One unknown TID read 10,000 times, as fast as the store commits them.
    let flood = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..625 {
                store.append(report("e2800bad0000beef", json!({}))).await.unwrap();
            }
            t
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = flood.elapsed();
    let m = &metrics.fusion;
    // The flood is one pass; fusion keeps one open pass whatever the rate.
    assert!(m.open_passes.load(Relaxed) <= 5, "{}", m.open_passes.load(Relaxed));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = service.list(&Default::default()).unwrap();
        let flood_passages = page
            .passages
            .iter()
            .filter(|p| p["tag"]["tid"] == "e2800bad0000beef")
            .count();
        if m.journal_rows.load(Relaxed) == 0 && flood_passages >= 1 && page.total >= 4 {
            // At this rate reads are far closer than the merge window: a handful of passes at most.
            assert!(
                flood_passages <= 5,
                "{flood_passages} passes for one continuously read tag"
            );
            let reads: u64 = page
                .passages
                .iter()
                .filter(|p| p["tag"]["tid"] == "e2800bad0000beef")
                .map(|p| p["tag"]["reads"].as_u64().unwrap())
                .sum();
            assert_eq!(reads, 10_000, "every read is in a passage");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "journal {} rows, {page:?}",
            m.journal_rows.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        m.tag_plate_invalid_total.load(Relaxed) >= 2,
        "{}",
        m.tag_plate_invalid_total.load(Relaxed)
    );
    assert!(
        m.inputs_bad_total.load(Relaxed) >= 3,
        "{}",
        m.inputs_bad_total.load(Relaxed)
    );
    let page = service.list(&Default::default()).unwrap();
    let no_plate = page
        .passages
        .iter()
        .find(|p| p["tag"]["tid"] == "e2800a0000000001")
        .unwrap();
    assert!(
        no_plate["tag"].get("plate").is_none() && no_plate["match"] == "none",
        "{no_plate}"
    );
    assert!(metrics.store.committed_total.load(Relaxed) >= 10_006);
    // 10,000 commits in well under the time fusion would need if it were on the path.
    assert!(took < Duration::from_secs(20), "{took:?}");
    stop.cancel();
    task.await.unwrap();
    store.close().await;
}
