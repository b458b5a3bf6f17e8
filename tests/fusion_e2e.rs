//! Fusion end to end: `roadedge run` (the binary) with `fusion:` against a real mosquitto with
//! mutual TLS, and the scripted traffic (`roadedge sim traffic`'s library: JT/T 808 and GB/T
//! 32960 vehicles driving past the site, the gantry reader reading their tags) on loopback.
//! Passages arrive on `edge/{id}/passage` with the vehicles' telemetry; the untagged vehicle
//! raises `missing_tag`; the cloned tag raises `cloned_tag`; a kill -9 while a pass is open
//! loses no passage of a tag report that was committed (the cloud saw it).

mod common;

use std::time::{Duration, Instant};

use common::{free_port, init_logging, Cloud, EdgeChild, Received, World};
use roadedge::fusion::geo::GeoPoint;
use roadedge::protocol::gbt37987::Dialect;
use roadedge::reader::rules::{default_select_spec, SpecState};
use roadedge::sim::reader::SimMode;
use roadedge::sim::traffic::{self, Role, Script, Targets};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(90);

fn on(cloud: &Cloud, topic: &str) -> Vec<Value> {
    cloud.on_topic(topic).into_iter().map(|m| m.payload).collect()
}

fn passages(cloud: &Cloud) -> Vec<Value> {
    on(cloud, "edge/cab-1/passage")
}

/// Payloads on `topic` (for `wait_for` predicates, which hold the messages' lock).
fn of(messages: &[Received], topic: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| m.payload.clone())
        .collect()
}

/// (tid, edge receive time) of every tag the cloud saw in a tag report.
fn tag_reads(messages: &[Received]) -> Vec<(String, i64, i64)> {
    messages
        .iter()
        .filter(|m| m.topic == "gbt37987/gantry/up/report")
        .flat_map(|m| {
            let seq = m.payload["edge"]["seq"].as_i64().unwrap_or(0);
            let at = m.payload["edge"]["received_at"]
                .as_str()
                .and_then(roadedge::time::parse_rfc3339_ms)
                .unwrap_or(0);
            m.payload["body"]["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| t["tid"].as_str().map(|tid| (tid.to_string(), seq, at)))
        })
        .collect()
}

/// Whether a passage of `tid` covers a read received at `at`: its pass started no later than
/// the read (a pass begun after a restart cannot cover a read from before it) and not long
/// before.
fn covered(passages: &[Value], tid: &str, at: i64) -> bool {
    passages.iter().any(|p| {
        p["tag"]["tid"] == tid
            && p["time"]
                .as_str()
                .and_then(roadedge::time::parse_rfc3339_ms)
                .is_some_and(|t| t <= at + 100 && at - t <= 15_000)
    })
}

fn alarm(messages: &[Received], name: &str, subject: &str) -> bool {
    of(messages, "edge/cab-1/alarm")
        .iter()
        .any(|a| a["alarm"] == name && a["state"] == "raised" && a["detail"]["subject"] == subject)
}

async fn command(cloud: &Cloud, topic: &str, result_topic: &str, request_id: &str, payload: Value) -> Value {
    cloud
        .request(topic, result_topic, request_id, payload, Duration::from_secs(20))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_traffic_gives_passages_with_telemetry_both_frauds_and_survives_kill_9() {
    init_logging();
    let world = World::start("fusion").await;
    let cloud = &world.cloud;
    let (jt808_port, gbt32960_port) = (free_port(), free_port());
    let site = GeoPoint::new(31.2304, 121.4737);

    // The gantry reader listens; the edge dials it.
    let stop = CancellationToken::new();
    let reader_port = free_port();
    let script = Script::new(site, 2, 1, Duration::from_secs(3), 30.0, 240.0);
    let registry: Vec<Value> = script
        .registry()
        .into_iter()
        .map(|v| json!({"plate": v.plate, "vin": v.vin, "tid": v.tid}))
        .collect();
    let targets = Targets {
        jt808: Some(format!("127.0.0.1:{jt808_port}")),
        gbt32960: Some(format!("127.0.0.1:{gbt32960_port}").parse().unwrap()),
        gbt32960_tls: None,
        reader: SimMode::Listen(format!("127.0.0.1:{reader_port}").parse().unwrap()),
        reader_sn: *b"GANTRY01",
        dialect: Dialect::Gbt37987_2019,
    };

    let config = world
        .config()
        .edge("{id: cab-1, site: {name: test site, latitude: 31.2304, longitude: 121.4737}}")
        .max_bytes("64MiB")
        .jt808(jt808_port, "")
        .gbt32960(gbt32960_port, "")
        .readers(&format!(
            "  devices:\n    - {{id: gantry, tcp: '127.0.0.1:{reader_port}', position: {{lane: '1', direction: 90}}}}\n"
        ))
        .fusion("{window: 4s, merge_window: 2s, radius_m: 150}")
        .write();
    let edge = EdgeChild::spawn(&config, "1");
    cloud.wait_edge_online().await;

    // What the registry cannot learn by itself (the 32960 VIN's plate and tag), by command.
    let upsert = command(
        cloud,
        "edge/cab-1/cmd",
        "edge/cab-1/cmd/result",
        "reg-1",
        json!({"action": "registry.upsert", "vehicles": registry}),
    )
    .await;
    assert_eq!(upsert["ok"], true, "{upsert}");
    let traffic = traffic::start(script.clone(), targets, stop.clone()).await.unwrap();
    let traffic = std::sync::Arc::new(traffic);
    let t = traffic.clone();
    let s = stop.clone();
    tokio::spawn(async move { t.run_reader(s).await });
    let rules = command(
        cloud,
        "gbt37987/gantry/dn",
        "gbt37987/gantry/up/response",
        "rules-1",
        json!({"action": "set_rules", "select_specs": [default_select_spec(1, SpecState::Active, 1, &[1, 2])]}),
    )
    .await;
    assert_ne!(rules["result"], "rejected", "{rules}");

    // One cycle: every vehicle's passage, both frauds.
    let tagged: Vec<_> = script
        .vehicles
        .iter()
        .filter(|v| v.role == Role::Tagged)
        .cloned()
        .collect();
    let untagged = script
        .vehicles
        .iter()
        .find(|v| v.role == Role::Untagged)
        .unwrap()
        .clone();
    let cloned = script.vehicles.iter().find(|v| v.role == Role::Cloned).unwrap().clone();
    let cloned_tid = cloned.tid.clone().unwrap();
    cloud
        .wait_for("a passage of every vehicle and both alarms", LIMIT, |m| {
            let ps = of(m, "edge/cab-1/passage");
            tagged.iter().all(|v| {
                ps.iter()
                    .any(|p| p["tag"]["tid"] == v.tid.as_deref().unwrap() && p["telemetry"].is_object())
            }) && ps
                .iter()
                .any(|p| p["match"] == "telemetry_only" && p["vehicle"]["plate"] == untagged.plate.as_str())
                && ps.iter().any(|p| p["tag"]["tid"] == cloned_tid.as_str())
                && alarm(m, "missing_tag", &untagged.plate)
                && alarm(m, "cloned_tag", &cloned_tid)
        })
        .await;
    let ps = passages(cloud);
    for v in &tagged {
        let p = ps
            .iter()
            .find(|p| p["tag"]["tid"] == v.tid.as_deref().unwrap() && p["telemetry"].is_object())
            .unwrap();
        let source = match v.terminal {
            traffic::Terminal::Jt808(_) => "jt808",
            traffic::Terminal::Gbt32960(_) => "gbt32960",
        };
        assert_eq!(p["telemetry"]["source"], source, "{p}");
        assert!(p["telemetry"]["distance_m"].as_f64().unwrap() < 100.0, "{p}");
        assert!(p["telemetry"]["time_gap_ms"].as_i64().unwrap().abs() <= 4_000, "{p}");
        assert!(
            (p["telemetry"]["speed_kmh"].as_f64().unwrap() - 108.0).abs() < 1.0,
            "{p}"
        );
        assert_eq!(p["vehicle"]["plate"], v.plate.as_str(), "{p}");
        assert!(matches!(p["match"].as_str(), Some("tid" | "plate")), "{p}");
        assert_eq!(p["anomalies"], json!([]), "{p}");
        assert_eq!(p["reader"]["id"], "gantry");
        assert_eq!(p["reader"]["lane"], "1");
        assert_eq!(p["site"]["name"], "test site");
        let id = p["passage_id"].as_str().unwrap();
        assert!(id.starts_with("cab-1-"), "{id}");
        assert!(p["edge"]["seq"].as_i64().is_some());
    }
    let missing = ps.iter().find(|p| p["match"] == "telemetry_only").unwrap();
    assert_eq!(missing["anomalies"], json!(["missing_tag"]), "{missing}");
    assert!(missing["telemetry"]["distance_m"].as_f64().unwrap() < 150.0);
    let clone = ps.iter().find(|p| p["tag"]["tid"] == cloned_tid.as_str()).unwrap();
    assert_eq!(clone["anomalies"], json!(["cloned_tag"]), "{clone}");
    assert!(clone["telemetry"]["distance_m"].as_f64().unwrap() > 29_000.0, "{clone}");
    assert_eq!(clone["vehicle"]["plate"], cloned.plate.as_str());

    // Metrics count them.
    cloud
        .wait_for("fusion metrics", Duration::from_secs(10), |m| {
            m.iter().rev().any(|m| {
                m.topic == "edge/cab-1/metrics"
                    && m.payload["fusion"]["anomalies_total"]["missing_tag"].as_u64() >= Some(1)
                    && m.payload["fusion"]["anomalies_total"]["cloned_tag"].as_u64() >= Some(1)
                    && m.payload["fusion"]["passages_total"]["telemetry_only"].as_u64() >= Some(1)
            })
        })
        .await;

    // Kill -9 right after the cloud saw a tag report whose pass is still open.
    let before = passages(cloud).len();
    let deadline = Instant::now() + LIMIT;
    let (tid, at) = loop {
        let msgs = cloud.messages.lock().unwrap().clone();
        let ps = passages(cloud);
        if let Some((tid, _, at)) = tag_reads(&msgs)
            .into_iter()
            .rev()
            .find(|(tid, _, at)| !covered(&ps, tid, *at))
        {
            break (tid, at);
        }
        assert!(Instant::now() < deadline, "no open pass to kill in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    edge.kill9();
    let killed_at = Instant::now();
    assert!(
        !covered(&passages(cloud), &tid, at),
        "the pass was still open at the kill"
    );
    let edge = EdgeChild::spawn(&config, "2");
    // Every tag the cloud saw in a report before the kill gets its passage (derived again from
    // the journal after the restart).
    let seen_before: Vec<(String, i64, i64)> = tag_reads(&cloud.messages.lock().unwrap());
    cloud
        .wait_for("a passage for every tag report committed before the kill", LIMIT, |m| {
            let ps = of(m, "edge/cab-1/passage");
            seen_before.iter().all(|(tid, _, at)| covered(&ps, tid, *at))
        })
        .await;
    assert!(passages(cloud).len() > before);
    // ... and it was derived again from the journal, not from new reads.
    cloud
        .wait_for("journal replay in the metrics", Duration::from_secs(10), |m| {
            m.iter().rev().any(|m| {
                m.topic == "edge/cab-1/metrics" && m.payload["fusion"]["journal_replayed_total"].as_u64() >= Some(1)
            })
        })
        .await;
    assert!(killed_at.elapsed() < LIMIT);
    // Passage ids are unique up to the cloud's de-duplication: a repeat is the same passage.
    let mut by_id = std::collections::BTreeMap::new();
    for p in passages(cloud) {
        let id = p["passage_id"].as_str().unwrap().to_string();
        let mut body = p.clone();
        body.as_object_mut().unwrap().remove("edge");
        if let Some(prev) = by_id.insert(id.clone(), body.clone()) {
            assert_eq!(
                prev["tag"]["tid"], body["tag"]["tid"],
                "passage {id} differs when repeated"
            );
        }
    }
    stop.cancel();
    drop(edge);
}
