//! Remote management through a real mosquitto with mutual TLS, against the real binary
//! (`roadedge run`): `config.get`, `config.set` confirmed, unconfirmed (reverted by itself),
//! invalid (refused, file unchanged), losing the uplink (reverted, the edge comes back online),
//! `log_level`, `restart`, and a kill -9 while an apply is pending (restored at the next start).
//! Every command gets exactly one result on `edge/{id}/cmd/result`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const RESULT: &str = "edge/cab-1/cmd/result";
/// `web.confirm_within` of the test configuration.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// `roadedge run` with the uplink client's chatter kept down.
fn start_edge(config: &Path, name: &str) -> EdgeChild {
    EdgeChild::spawn_with(config, name, |c| {
        c.env("RUST_LOG", "info,rumqttc=warn");
    })
}

/// SIGTERM and the exit code.
fn stop(edge: EdgeChild) -> Option<i32> {
    edge.terminate(Duration::from_secs(15))
}

/// The test configuration with a web section (ephemeral port) carrying `confirm_within`.
fn config(dir: &Path, pki: &Pki, broker_url: &str) -> PathBuf {
    let extra = format!(
        "  keep_alive: 5s\nweb: {{listen: '127.0.0.1:0', confirm_within: {}s}}\n",
        CONFIRM_WITHIN.as_secs()
    );
    write_config(dir, pki, broker_url, &extra, "64MiB")
}

fn online_count(cloud: &Cloud) -> usize {
    cloud
        .on_topic("edge/cab-1/status")
        .iter()
        .filter(|m| m.payload["state"] == "online")
        .count()
}

async fn wait_online_after(cloud: &Cloud, before: usize, limit: Duration, what: &str) {
    cloud
        .wait_for(what, limit, |m| {
            m.iter()
                .filter(|m| m.topic == "edge/cab-1/status" && m.payload["state"] == "online")
                .count()
                > before
        })
        .await;
}

/// Sends one edge command and returns its one result.
async fn command(cloud: &Cloud, body: Value, id: &str) -> Value {
    let result = cloud.edge_command(id, body, Duration::from_secs(20)).await;
    assert!(
        result["edge"]["seq"].is_u64(),
        "results carry the edge envelope: {result}"
    );
    result
}

/// Distinct results of `id`: a delivery again of the same record (same `edge.seq`, at least once
/// across a kill -9 before its PUBACK was booked) is the same result.
fn results_of(cloud: &Cloud, id: &str) -> usize {
    let seqs: std::collections::BTreeSet<String> = cloud
        .on_topic(RESULT)
        .iter()
        .filter(|m| m.payload["request_id"] == id)
        .map(|m| m.payload["edge"]["seq"].to_string())
        .collect();
    seqs.len()
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_commands_through_the_broker_apply_confirm_revert_and_refuse_with_one_result_each() {
    let (dir, pki, broker, cloud) = World::start("manage").await.into_parts();
    let path = config(dir.path(), &pki, &broker.url());
    let original = read(&path);
    let edge = start_edge(&path, "main");
    cloud.wait_edge_online().await;

    // config.get: the file as it is, nothing pending.
    let got = command(&cloud, json!({"action": "config.get"}), "get1").await;
    assert_eq!(got["ok"], true, "{got}");
    assert_eq!(got["answer"]["yaml"], original.as_str());
    assert_eq!(got["answer"]["pending"], Value::Null);
    assert_eq!(got["answer"]["confirm_within_s"], CONFIRM_WITHIN.as_secs());

    // config.set of a valid change, then config.confirm: it stays.
    let changed = original.replace("metrics_interval: 1s", "metrics_interval: 2s");
    assert_ne!(changed, original);
    let online = online_count(&cloud);
    let set = command(&cloud, json!({"action": "config.set", "yaml": changed}), "set1").await;
    assert_eq!(set["ok"], true, "{set}");
    assert_eq!(set["answer"]["uplink_required"], true, "{set}");
    assert_eq!(read(&path), changed);
    assert_eq!(read(&path.with_file_name("roadedge.yaml.previous")), original);
    wait_online_after(
        &cloud,
        online,
        Duration::from_secs(15),
        "online with the new configuration",
    )
    .await;
    let pending = command(&cloud, json!({"action": "config.get"}), "get2").await;
    assert!(pending["answer"]["pending"]["seconds_left"].as_u64().unwrap() <= CONFIRM_WITHIN.as_secs());
    assert_eq!(pending["answer"]["pending"]["request_id"], "set1");
    // A second apply while this one waits is refused.
    let refused = command(&cloud, json!({"action": "config.set", "yaml": original}), "set-busy").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("waiting for confirmation"),
        "{refused}"
    );
    // And so is a restart.
    let refused = command(&cloud, json!({"action": "restart"}), "restart-busy").await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("request `set1`"),
        "{refused}"
    );
    let confirmed = command(&cloud, json!({"action": "config.confirm"}), "confirm1").await;
    assert_eq!(confirmed["ok"], true, "{confirmed}");
    tokio::time::sleep(CONFIRM_WITHIN + Duration::from_secs(1)).await;
    assert_eq!(read(&path), changed, "a confirmed configuration stays");
    let after = command(&cloud, json!({"action": "config.get"}), "get3").await;
    assert_eq!(after["answer"]["pending"], Value::Null);
    assert_eq!(after["answer"]["last"]["state"], "confirmed", "{after}");
    // Nothing to confirm now.
    let nothing = command(&cloud, json!({"action": "config.confirm"}), "confirm-none").await;
    assert_eq!(nothing["ok"], false, "{nothing}");

    // config.set not confirmed: reverted by itself within confirm_within.
    let unconfirmed = changed.replace("level: info", "level: debug");
    let online = online_count(&cloud);
    let set = command(&cloud, json!({"action": "config.set", "yaml": unconfirmed}), "set2").await;
    assert_eq!(set["ok"], true, "{set}");
    assert_eq!(read(&path), unconfirmed);
    let applied = Instant::now();
    until("the revert", CONFIRM_WITHIN + Duration::from_secs(10), || {
        read(&path) == changed
    })
    .await;
    assert!(
        applied.elapsed() >= CONFIRM_WITHIN - Duration::from_millis(500),
        "reverted too early"
    );
    wait_online_after(
        &cloud,
        online + 1,
        Duration::from_secs(15),
        "online again after the revert",
    )
    .await;
    let after = command(&cloud, json!({"action": "config.get"}), "get4").await;
    assert_eq!(after["answer"]["last"]["state"], "reverted", "{after}");
    assert!(
        after["answer"]["last"]["reason"]
            .as_str()
            .unwrap()
            .contains("nobody confirmed"),
        "{after}"
    );
    assert_eq!(after["answer"]["pending"], Value::Null);

    // Invalid YAML, an invalid value and a missing file: refused, nothing changed.
    let before = read(&path);
    let invalid = [
        ("bad1", "edge: {id: cab-1\nuplink: [".to_string()),
        ("bad2", before.replace("metrics_interval: 2s", "metrics_interval: soon")),
        (
            "bad3",
            before.replace(&pki.edge.key.display().to_string(), "/nonexistent/edge.key"),
        ),
    ];
    for (id, yaml) in &invalid {
        let r = command(&cloud, json!({"action": "config.set", "yaml": yaml}), id).await;
        assert_eq!(r["ok"], false, "{id}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("nothing was changed"),
            "{id}: {r}"
        );
        assert_eq!(read(&path), before, "{id}");
    }
    // Counted (in this run of the core, which started with the revert): three refusals, all invalid.
    cloud
        .wait_for("the refusals in the metrics", Duration::from_secs(10), |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/metrics"
                    && m.payload["config"]["invalid_total"] == 3
                    && m.payload["config"]["refused_total"] == 3
            })
        })
        .await;
    let r = command(
        &cloud,
        json!({"action": "config.set", "yaml": invalid[1].1}),
        "bad2-line",
    )
    .await;
    assert!(r["error"].as_str().unwrap().contains("uplink.metrics_interval"), "{r}");
    assert!(r["error"].as_str().unwrap().contains("line "), "{r}");
    let v = command(
        &cloud,
        json!({"action": "config.validate", "yaml": invalid[1].1}),
        "validate1",
    )
    .await;
    assert_eq!(v["answer"]["valid"], false);
    let line = before.lines().position(|l| l.contains("metrics_interval")).unwrap() + 1;
    assert_eq!(v["answer"]["errors"][0]["path"], "uplink.metrics_interval");
    assert_eq!(v["answer"]["errors"][0]["line"], line);

    // log_level at run time.
    let lvl = command(&cloud, json!({"action": "log_level", "level": "debug"}), "lvl1").await;
    assert_eq!(lvl["ok"], true, "{lvl}");
    assert_eq!(lvl["answer"]["level"], "debug");
    until("a debug line in the log", Duration::from_secs(10), || {
        edge.log_text().contains("DEBUG")
    })
    .await;
    let lvl = command(&cloud, json!({"action": "log_level", "level": "info"}), "lvl2").await;
    assert_eq!(lvl["answer"]["previous"], "debug", "{lvl}");
    let lvl = command(&cloud, json!({"action": "log_level"}), "lvl3").await;
    assert_eq!(lvl["ok"], false, "{lvl}");

    // restart: the core stops gracefully and starts again, the process stays.
    let online = online_count(&cloud);
    let r = command(&cloud, json!({"action": "restart"}), "restart1").await;
    assert_eq!(r["ok"], true, "{r}");
    wait_online_after(&cloud, online, Duration::from_secs(15), "online after the restart").await;
    assert!(
        edge.log_text().contains("starting the core again"),
        "{}",
        edge.log_text()
    );
    let pong = command(&cloud, json!({"action": "ping"}), "ping1").await;
    assert_eq!(pong["ok"], true);

    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in [
        "get1",
        "set1",
        "get2",
        "set-busy",
        "restart-busy",
        "confirm1",
        "get3",
        "confirm-none",
        "set2",
        "get4",
        "bad1",
        "bad2",
        "bad3",
        "bad2-line",
        "validate1",
        "lvl1",
        "lvl2",
        "lvl3",
        "restart1",
        "ping1",
    ] {
        assert_eq!(results_of(&cloud, id), 1, "{id}: exactly one result");
    }
    assert_eq!(stop(edge), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_loses_the_uplink_is_reverted_and_the_edge_comes_back_online() {
    let (dir, pki, broker, cloud) = World::start("manage-lost").await.into_parts();
    let path = config(dir.path(), &pki, &broker.url());
    let original = read(&path);
    let edge = start_edge(&path, "lost");
    cloud.wait_edge_online().await;

    let nowhere = format!("mqtts://127.0.0.1:{}", free_port());
    let lost = original.replace(&broker.url(), &nowhere);
    let online = online_count(&cloud);
    let set = command(&cloud, json!({"action": "config.set", "yaml": lost}), "lose").await;
    assert_eq!(set["ok"], true, "{set}");
    until("the new file", Duration::from_secs(5), || read(&path) == lost).await;
    until("the revert", CONFIRM_WITHIN + Duration::from_secs(10), || {
        read(&path) == original
    })
    .await;
    wait_online_after(
        &cloud,
        online,
        Duration::from_secs(20),
        "online again with the previous configuration",
    )
    .await;
    let got = command(&cloud, json!({"action": "config.get"}), "get-lost").await;
    let reason = got["answer"]["last"]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("uplink did not come back"), "{got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(results_of(&cloud, "lose"), 1);
    assert_eq!(results_of(&cloud, "get-lost"), 1);
    assert_eq!(stop(edge), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_pending_apply_restores_the_previous_configuration_at_the_next_start() {
    let (dir, pki, broker, cloud) = World::start("manage-kill").await.into_parts();
    let path = config(dir.path(), &pki, &broker.url());
    let original = read(&path);
    let edge = start_edge(&path, "kill1");
    cloud.wait_edge_online().await;

    let changed = original.replace("metrics_interval: 1s", "metrics_interval: 3s");
    let set = command(&cloud, json!({"action": "config.set", "yaml": changed}), "set-kill").await;
    assert_eq!(set["ok"], true, "{set}");
    assert_eq!(read(&path), changed);
    assert!(dir.path().join("config-apply/pending.json").is_file());
    edge.kill9();
    // Past the deadline while nothing runs.
    tokio::time::sleep(CONFIRM_WITHIN + Duration::from_secs(1)).await;
    assert_eq!(read(&path), changed, "nothing reverts while nothing runs");
    let online = online_count(&cloud);
    let edge = start_edge(&path, "kill2");
    wait_online_after(&cloud, online, Duration::from_secs(15), "online after the restart").await;
    assert_eq!(read(&path), original, "restored at the start");
    assert!(!dir.path().join("config-apply/pending.json").exists());
    let got = command(&cloud, json!({"action": "config.get"}), "get-kill").await;
    assert_eq!(got["answer"]["last"]["state"], "reverted", "{got}");
    assert!(
        got["answer"]["last"]["reason"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{got}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(results_of(&cloud, "set-kill"), 1);
    assert_eq!(results_of(&cloud, "get-kill"), 1);
    assert_eq!(stop(edge), Some(0));
}
