//! The uplink against a real mosquitto with mutual TLS on loopback: envelope, status, commands,
//! refused foreign certificates.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use roadedge::command::{DeviceCommand, DeviceGateway, Outcome, Protocol};
use roadedge::store::{Record, RecordClass};
use serde_json::json;

/// A broker, a cloud subscriber and a running appliance that has announced itself online.
struct World {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    cloud: Cloud,
    edge: RunningAppliance,
}

async fn online_world(cloud_id: &str) -> World {
    let (dir, pki, broker, cloud) = common::World::start(cloud_id).await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let edge = start_appliance(&config).await;
    cloud.wait_edge_online().await;
    World {
        _dir: dir,
        _broker: broker,
        cloud,
        edge,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_arrive_with_the_edge_envelope_under_the_topic_prefix() {
    let (dir, pki, broker, cloud) = common::World::start("envelope").await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "  topic_prefix: site7/\n", "64MiB");
    let edge = start_appliance(&config).await;

    let mut seqs = Vec::new();
    for n in 0..20 {
        let mut r = Record::new(
            "jt808/013800000000",
            "jt808/013800000000/013800000000/up",
            RecordClass::Telemetry,
            &json!({"n": n}),
        );
        if n == 0 {
            r.envelope = roadedge::store::EnvelopeKey::Capitalised;
        }
        seqs.push(edge.store.append(r).await.unwrap());
    }
    let topic = "site7/jt808/013800000000/013800000000/up";
    cloud
        .wait_for("20 records", Duration::from_secs(20), |m| {
            m.iter().filter(|m| m.topic == topic).count() >= 20
        })
        .await;
    let got = cloud.on_topic(topic);
    let first = &got[0].payload;
    assert_eq!(first["Edge"]["id"], "cab-1", "{first}");
    assert_eq!(first["Edge"]["seq"], seqs[0]);
    let later = &got[5].payload;
    assert_eq!(later["edge"]["seq"], seqs[5]);
    let at = later["edge"]["received_at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
        "received_at {at} is not RFC 3339 UTC with ms"
    );
    let ns: Vec<i64> = got.iter().map(|m| m.payload["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>(), "order of one device must be kept");

    cloud
        .wait_for("retained online status", Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m.topic == "site7/edge/cab-1/status" && m.payload["state"] == "online")
        })
        .await;
    cloud
        .wait_for("metrics", Duration::from_secs(5), |m| {
            m.iter().any(|m| m.topic == "site7/edge/cab-1/metrics")
        })
        .await;
    let metrics = cloud.on_topic("site7/edge/cab-1/metrics").pop().unwrap().payload;
    assert!(metrics["store"]["committed_total"].as_u64().unwrap() >= 20, "{metrics}");
    assert_eq!(metrics["uplink"]["connected"], true);

    // Everything acknowledged leaves the backlog.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while edge.metrics.store.backlog_rows.load(Relaxed) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "backlog not drained after PUBACKs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge.stop().await;
    cloud
        .wait_for("offline status at shutdown", Duration::from_secs(5), |m| {
            m.iter()
                .any(|m| m.topic == "site7/edge/cab-1/status" && m.payload["state"] == "offline")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (dir, pki, broker, cloud) = common::World::start("rogue").await.into_parts();

    // The same edge, but holding a certificate issued by a CA the broker does not trust.
    let text = format!(
        "edge: {{id: cab-1}}\nstorage: {{path: {}}}\nuplink:\n  url: {}\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
        dir.path().join("rogue.db").display(),
        broker.url(),
        pki.ca_file.display(),
        pki.rogue_edge.cert.display(),
        pki.rogue_edge.key.display()
    );
    let path = dir.path().join("rogue.yaml");
    std::fs::write(&path, text).unwrap();
    let edge = start_appliance(&path).await;
    edge.store
        .append(Record::new(
            "d",
            "sim/d/telemetry",
            RecordClass::Telemetry,
            &json!({"n": 1}),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        edge.metrics.uplink.connected.load(Relaxed),
        0,
        "connected with a foreign certificate"
    );
    assert!(
        edge.metrics.uplink.reconnects_total.load(Relaxed) >= 1,
        "no refused attempt recorded"
    );
    assert!(cloud.on_topic("sim/d/telemetry").is_empty());
    assert_eq!(
        edge.metrics.store.backlog_rows.load(Relaxed),
        1,
        "the record must stay in the backlog"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_commands_get_exactly_one_result_each() {
    let World {
        _dir,
        _broker,
        cloud,
        edge,
    } = online_world("cloud-cmd").await;

    cloud
        .publish("edge/cab-1/cmd", json!({"request_id": "p1", "action": "ping"}))
        .await;
    cloud
        .publish("edge/cab-1/cmd", json!({"request_id": "s1", "action": "status"}))
        .await;
    cloud
        .publish("edge/cab-1/cmd", json!({"request_id": "x1", "action": "selfdestruct"}))
        .await;
    cloud
        .client
        .publish(
            "edge/cab-1/cmd",
            rumqttc::QoS::AtLeastOnce,
            false,
            b"{not json".to_vec(),
        )
        .await
        .unwrap();
    cloud
        .wait_for("4 results", Duration::from_secs(10), |m| {
            m.iter().filter(|m| m.topic == "edge/cab-1/cmd/result").count() >= 4
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = cloud.on_topic("edge/cab-1/cmd/result");
    assert_eq!(results.len(), 4, "{results:?}");
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r.payload["request_id"] == id)
            .unwrap()
            .payload
            .clone()
    };
    assert_eq!(by_id("p1")["ok"], true);
    assert_eq!(by_id("p1")["answer"]["pong"], true);
    assert_eq!(by_id("s1")["answer"]["edge_id"], "cab-1");
    assert_eq!(by_id("x1")["result"], "rejected");
    let bad = results.iter().find(|r| r.payload["request_id"] == "").unwrap();
    assert!(bad.payload["error"].as_str().unwrap().contains("not JSON"));
    edge.stop().await;
}

/// A stand-in device gateway: the real ones (GB/T 32960, JT/T 808, GB/T 37987) plug in the same way.
#[derive(Default)]
struct ScriptedGateway {
    online: Mutex<bool>,
    delivered: Mutex<Vec<DeviceCommand>>,
}

impl DeviceGateway for ScriptedGateway {
    fn deliver(&self, command: DeviceCommand) -> Result<(), DeviceCommand> {
        if *self.online.lock().unwrap() {
            self.delivered.lock().unwrap().push(command);
            Ok(())
        } else {
            Err(command)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_offline_devices_wait_for_them_or_expire() {
    let World {
        _dir,
        _broker,
        cloud,
        edge,
    } = online_world("cloud-offline").await;
    let gateway = Arc::new(ScriptedGateway::default());
    edge.plane.register(Protocol::Gbt32960, gateway.clone());

    cloud
        .publish(
            "gbt32960/VIN00000000000001/dnstream",
            json!({"request_id": "q1", "Action": "Query", "Total": 1, "Ids": [1]}),
        )
        .await;
    cloud
        .publish(
            "gbt32960/VIN00000000000002/dnstream",
            json!({"request_id": "q2", "Action": "Query", "ttl_s": 1}),
        )
        .await;
    cloud
        .publish("jt808/013800000000/013800000000/dn", json!({"request_id": "j1"}))
        .await;

    // Not enabled here: rejected at once. The offline one with a 1 s TTL expires.
    cloud
        .wait_for("rejection and expiry", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == "jt808/013800000000/013800000000/up" && m.payload["result"] == "rejected")
                && m.iter().any(|m| {
                    m.topic == "gbt32960/VIN00000000000002/upstream/response" && m.payload["result"] == "expired"
                })
        })
        .await;
    assert!(
        gateway.delivered.lock().unwrap().is_empty(),
        "delivered to an offline device"
    );

    // The device connects: its queued command is delivered, and its answer ends it.
    *gateway.online.lock().unwrap() = true;
    edge.plane
        .device_online(Protocol::Gbt32960, "VIN00000000000001")
        .await
        .unwrap();
    let delivered = gateway.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].request_id, "q1");
    assert_eq!(delivered[0].payload["Action"], "Query");
    assert!(edge
        .plane
        .complete(delivered[0].id, Outcome::Answer(json!({"Cmd": 128})))
        .await
        .unwrap());
    assert!(
        !edge.plane.complete(delivered[0].id, Outcome::Timeout).await.unwrap(),
        "a second result"
    );
    cloud
        .wait_for("the answer", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == "gbt32960/VIN00000000000001/upstream/response" && m.payload["result"] == "answer")
        })
        .await;
    let answers = cloud.on_topic("gbt32960/VIN00000000000001/upstream/response");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].payload["answer"]["Cmd"], 128);
    assert_eq!(
        answers[0].payload["Edge"]["id"], "cab-1",
        "32960 topics carry the capitalised envelope"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_before_a_restart_is_delivered_again_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let config = write_config(dir.path(), &pki, "mqtt://127.0.0.1:1", "", "64MiB");
    let target = roadedge::command::Target::Device {
        protocol: Protocol::Gbt32960,
        device: "VIN00000000000009".into(),
    };
    // First run: the command reaches the device, then the appliance stops before any answer.
    let edge = start_appliance(&config).await;
    let gateway = Arc::new(ScriptedGateway::default());
    *gateway.online.lock().unwrap() = true;
    edge.plane.register(Protocol::Gbt32960, gateway.clone());
    edge.plane
        .submit(target.clone(), br#"{"request_id":"again","Action":"Query"}"#)
        .await
        .unwrap();
    assert_eq!(gateway.delivered.lock().unwrap().len(), 1);
    edge.stop().await;
    // Second run: the device reconnects and gets the command again.
    let edge = start_appliance(&config).await;
    let gateway = Arc::new(ScriptedGateway::default());
    *gateway.online.lock().unwrap() = true;
    edge.plane.register(Protocol::Gbt32960, gateway.clone());
    edge.plane
        .device_online(Protocol::Gbt32960, "VIN00000000000009")
        .await
        .unwrap();
    let delivered = gateway.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "the unanswered command must be delivered again");
    assert_eq!(delivered[0].request_id, "again");
    edge.stop().await;
}
