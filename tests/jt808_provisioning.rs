//! JT/T 808 provisioning through a real mosquitto with mutual TLS: under `jt808.auth: registry` a
//! refused terminal registers once `jt808.provision` names it, and `jt808.deprovision` revokes it
//! and closes its live session. Every command gets exactly one result on `edge/{id}/cmd/result`.

mod common;

use std::time::Duration;

use common::*;
use roadedge::protocol::jt808::{Edition, Phone};
use roadedge::sim::jt808::{location, phone_for, SimError, Terminal, PLATE};
use serde_json::{json, Value};

const STEP: Duration = Duration::from_secs(10);

fn config_with_registry(dir: &std::path::Path, pki: &Pki, broker: &Mosquitto) -> (std::path::PathBuf, String) {
    let path = write_config(dir, pki, &broker.url(), "", "64MiB");
    let port = free_port();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("jt808:\n  listen: 127.0.0.1:{port}\n  auth: registry\n"));
    std::fs::write(&path, text).unwrap();
    (path, format!("127.0.0.1:{port}"))
}

async fn connect(server: &str, phone: Phone) -> Terminal {
    tokio::time::timeout(STEP, Terminal::connect(server, None, phone, Edition::V2013))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Sends one edge command and returns its only result (waiting a moment for a second one).
async fn command(cloud: &Cloud, document: Value, id: &str) -> Value {
    let first = cloud.edge_command(id, document, STEP).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let results = cloud.results("edge/cab-1/cmd/result", id);
    assert_eq!(results.len(), 1, "{id}: {results:?}");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_terminal_registers_after_provision_and_is_cut_off_by_deprovision() {
    let (dir, pki, broker, cloud) = World::start("provision").await.into_parts();
    let (config, server) = config_with_registry(dir.path(), &pki, &broker);
    let edge = start_appliance(&config).await;
    cloud.wait_edge_online().await;
    let phone = phone_for(13_800_000_000, 31, Edition::V2013);
    assert_eq!(phone.to_string(), "013800000031");

    let mut t = connect(&server, phone).await;
    let refused = t.register(STEP).await;
    assert!(
        matches!(&refused, Err(SimError::Refused(r)) if r.contains("result 4")),
        "an unprovisioned terminal registered: {refused:?}"
    );

    // Invalid input changes nothing and says why.
    let bad = command(
        &cloud,
        json!({"action": "jt808.provision", "terminals": [
            {"phone": "13800000031", "plate": PLATE},
            {"phone": "1380000003x"},
            {"phone": "13800000032", "plate_color": 7}
        ]}),
        "p-bad",
    )
    .await;
    assert_eq!(bad["result"], "rejected", "{bad}");
    let reason = bad["error"].as_str().unwrap();
    assert!(reason.contains("item 1") && reason.contains("digits only"), "{reason}");
    assert!(reason.contains("item 2") && reason.contains("colour"), "{reason}");
    let listed = command(&cloud, json!({"action": "jt808.terminals"}), "l0").await;
    assert_eq!(listed["answer"]["total"], 0, "{listed}");

    // The 11-digit mobile number is the 12-digit BCD phone of a 2013 header.
    let provisioned = command(
        &cloud,
        json!({"action": "jt808.provision", "terminals": [{"phone": "13800000031", "plate": PLATE, "plate_color": 1}]}),
        "p1",
    )
    .await;
    assert_eq!(provisioned["ok"], true, "{provisioned}");
    assert_eq!(provisioned["answer"]["added"], json!(["013800000031"]));
    assert_eq!(provisioned["answer"]["auth"], "registry");

    let mut t = connect(&server, phone).await;
    let code = t.register(STEP).await.expect("the provisioned terminal registers");
    assert!(
        t.authenticate(&code, STEP).await.expect("auth answered"),
        "auth refused"
    );
    t.report(location(1, 0), STEP).await.unwrap();
    let listed = command(&cloud, json!({"action": "jt808.terminals"}), "l1").await;
    assert_eq!(listed["answer"]["total"], 1, "{listed}");
    let row = &listed["answer"]["terminals"][0];
    assert_eq!(row["phone"], "013800000031");
    assert_eq!(row["plate"], PLATE);
    assert_eq!(row["plate_color"], 1);
    assert_eq!(row["registered"], true);
    assert_eq!(listed["answer"]["online"], json!(["013800000031"]));

    let removed = command(
        &cloud,
        json!({"action": "jt808.deprovision", "phones": ["013800000031", "13800000099"]}),
        "d1",
    )
    .await;
    assert_eq!(removed["ok"], true, "{removed}");
    assert_eq!(removed["answer"]["removed"], json!(["013800000031"]));
    assert_eq!(removed["answer"]["not_found"], json!(["013800000099"]));
    assert_eq!(removed["answer"]["disconnected"], json!(["013800000031"]));
    // The live session is closed by the appliance.
    let closed = loop {
        match t.recv(STEP).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(closed, SimError::Closed | SimError::Io(_)), "{closed:?}");
    // Neither the old code nor a new registration gets it back in.
    let mut t = connect(&server, phone).await;
    assert!(
        !t.authenticate(&code, STEP).await.unwrap_or(false),
        "the revoked code still authenticates"
    );
    let mut t = connect(&server, phone).await;
    let refused = t.register(STEP).await;
    assert!(
        matches!(&refused, Err(SimError::Refused(r)) if r.contains("result 4")),
        "a deprovisioned terminal registered: {refused:?}"
    );
    let bad = command(&cloud, json!({"action": "jt808.deprovision", "phones": "x"}), "d-bad").await;
    assert_eq!(bad["result"], "rejected", "{bad}");
    let listed = command(&cloud, json!({"action": "jt808.terminals"}), "l2").await;
    assert_eq!(listed["answer"]["total"], 0, "{listed}");
    assert!(edge.jt808.is_some());
    edge.stop().await;
}
