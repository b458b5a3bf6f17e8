//! JT/T 808 end to end: simulated 2013 and 2019 terminals against the appliance (in process),
//! publishing through a real mosquitto with mutual TLS on loopback, and cloud commands on the
//! `dn` topic answered by the terminals.

mod common;

use std::time::Duration;

use common::*;
use roadedge::gateway::jt808::terminals;
use roadedge::protocol::jt808::{ids, Body, Edition, Param, ParamsReply, Phone};
use roadedge::sim::jt808::{location, phone_for, SimTls, Terminal};
use serde_json::{json, Value};

const STEP: Duration = Duration::from_secs(10);

/// A config for the test world with a `jt808` section on a free loopback port.
fn config_with_jt808(
    dir: &std::path::Path,
    pki: &Pki,
    broker: &Mosquitto,
    extra: &str,
) -> (std::path::PathBuf, String) {
    let path = write_config(dir, pki, &broker.url(), "", "64MiB");
    let port = free_port();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("jt808:\n  listen: 127.0.0.1:{port}\n{extra}"));
    std::fs::write(&path, text).unwrap();
    (path, format!("127.0.0.1:{port}"))
}

async fn connect(server: &str, phone: Phone, edition: Edition) -> Terminal {
    tokio::time::timeout(STEP, Terminal::connect(server, None, phone, edition))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn online(server: &str, phone: Phone, edition: Edition) -> (Terminal, Vec<u8>) {
    let mut t = connect(server, phone, edition).await;
    let code = t.register(STEP).await.expect("registered");
    assert!(!code.is_empty());
    assert!(
        t.authenticate(&code, STEP).await.expect("auth answered"),
        "auth refused"
    );
    (t, code)
}

fn up(phone: &Phone) -> String {
    format!("jt808/{phone}/{phone}/up")
}

fn messages(cloud: &Cloud, phone: &Phone, msg_id: u16) -> Vec<Value> {
    cloud
        .on_topic(&up(phone))
        .into_iter()
        .map(|m| m.payload)
        .filter(|p| p["header"]["msg_id"] == msg_id)
        .collect()
}

/// For `Cloud::wait_for` predicates, which already hold the message lock.
fn count_in(m: &[Received], phone: &Phone, msg_id: u16) -> usize {
    m.iter()
        .filter(|m| m.topic == up(phone) && m.payload["header"]["msg_id"] == msg_id)
        .count()
}

fn has_result_in(m: &[Received], phone: &Phone, request_id: &str) -> bool {
    m.iter()
        .any(|m| m.topic == up(phone) && m.payload["request_id"] == request_id)
}

fn result_for(cloud: &Cloud, phone: &Phone, request_id: &str) -> Vec<Value> {
    cloud
        .on_topic(&up(phone))
        .into_iter()
        .map(|m| m.payload)
        .filter(|p| p["request_id"] == request_id)
        .collect()
}

/// Lets `t` answer platform commands until the cloud holds a result for every request id.
async fn serve_until_results(t: &mut Terminal, cloud: &Cloud, phone: &Phone, requests: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !requests.iter().all(|r| !result_for(cloud, phone, r).is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result for {requests:?} within 15 s"
        );
        t.serve_until(tokio::time::Instant::now() + Duration::from_millis(200))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_of_both_editions_report_and_answer_cloud_commands_through_the_broker() {
    let (dir, pki, broker, cloud) = World::start("jt808").await.into_parts();
    let (config, server) = config_with_jt808(dir.path(), &pki, &broker, "");
    let edge = start_appliance(&config).await;
    cloud.wait_edge_online().await;

    let p13 = phone_for(13_800_000_000, 1, Edition::V2013);
    let p19 = phone_for(13_800_000_000, 2, Edition::V2019);
    assert_eq!(p13.to_string(), "013800000001");
    assert_eq!(p19.to_string(), "00000000013800000002");
    let (mut t13, _) = online(&server, p13, Edition::V2013).await;
    let (mut t19, _) = online(&server, p19, Edition::V2019).await;

    // Locations, each acknowledged only after its commit.
    for n in 1..=3 {
        t13.report(location(n, 0), STEP).await.unwrap();
        t19.report(location(100 + n, 0), STEP).await.unwrap();
    }
    // Blind-area batches of 40 locations: subpackaged, packets sent in reverse order.
    t13.report_batch((0..40).map(|i| location(1000 + i, 0)).collect(), STEP)
        .await
        .unwrap();
    t19.report_batch((0..40).map(|i| location(2000 + i, 0)).collect(), STEP)
        .await
        .unwrap();

    for (phone, base, version) in [(&p13, 0u64, None), (&p19, 100, Some(1u64))] {
        cloud
            .wait_for("locations and the batch", Duration::from_secs(10), |m| {
                count_in(m, phone, ids::LOCATION) >= 3 && count_in(m, phone, ids::BATCH_LOCATION) >= 1
            })
            .await;
        let locations = messages(&cloud, phone, ids::LOCATION);
        let mileages: Vec<u64> = locations
            .iter()
            .map(|l| l["body"]["extra"]["mileage"].as_u64().unwrap())
            .collect();
        assert_eq!(
            mileages,
            [base + 1, base + 2, base + 3],
            "{phone}: order kept, each once"
        );
        let first = &locations[0];
        assert_eq!(first["header"]["phone"], phone.to_string());
        assert_eq!(first["header"].get("proto_ver").and_then(Value::as_u64), version);
        assert_eq!(first["body"]["latitude"], 31_230_401 + base);
        assert_eq!(first["edge"]["id"], "cab-1", "the edge envelope: {first}");
        assert!(first["edge"]["seq"].as_i64().unwrap() > 0);
        let batches = messages(&cloud, phone, ids::BATCH_LOCATION);
        assert_eq!(batches.len(), 1, "{phone}: a subpackaged batch is published once");
        assert_eq!(batches[0]["body"]["type"], 1);
        let items = batches[0]["body"]["location"].as_array().unwrap();
        assert_eq!(items.len(), 40);
        assert!(batches[0]["header"].get("frag_total").is_none());
        // Register and authentication are published too (critical records).
        assert_eq!(messages(&cloud, phone, ids::REGISTER).len(), 1);
        assert_eq!(messages(&cloud, phone, ids::AUTHENTICATE).len(), 1);
    }
    let register13 = &messages(&cloud, &p13, ids::REGISTER)[0];
    assert_eq!(register13["body"]["license_number"], "沪A12345", "GBK text by default");
    assert_eq!(register13["body"]["dev_id"], "SIM0001");
    let auth19 = &messages(&cloud, &p19, ids::AUTHENTICATE)[0];
    assert_eq!(auth19["body"]["imei"], "860000000000001");

    // A parameter query: the 2013 terminal's answer is scripted here, subpackaged, packets out of
    // order and with serials that skip (as real terminals do).
    cloud
        .publish(
            &format!("jt808/{p13}/{p13}/dn"),
            json!({"request_id": "q13", "header": {"msg_id": 0x8104}}),
        )
        .await;
    let query = tokio::time::timeout(STEP, async {
        loop {
            let m = t13.recv(STEP).await.unwrap();
            if m.header.msg_id == ids::QUERY_ALL_PARAMS {
                return m;
            }
        }
    })
    .await
    .expect("the query reached the terminal");
    let answer = Body::ParamsReply(ParamsReply {
        reply_serial: query.header.serial,
        params: (0..150u32)
            .map(|i| Param {
                id: 0xF000 + i,
                value: (i * 7).to_be_bytes().to_vec(),
            })
            .collect(),
    });
    let packets = t13.split(&answer, 460, 17).unwrap();
    assert_eq!(packets.len(), 3);
    assert_eq!(packets[1].header.serial, packets[0].header.serial.wrapping_add(17));
    t13.send_packets(&packets, &[1, 2, 0]).await.unwrap();
    let serials: Vec<u16> = packets.iter().map(|p| p.header.serial).collect();
    t13.await_acks(ids::PARAMS_REPLY, &serials, STEP).await.unwrap();

    // The 2019 terminal answers its query by itself (also subpackaged, reversed) and a terminal
    // control with 0x0001.
    t19.long_answers = true;
    cloud
        .publish(
            &format!("jt808/{p19}/{p19}/dn"),
            json!({"request_id": "q19", "header": {"msg_id": 0x8104}}),
        )
        .await;
    cloud
        .publish(
            &format!("jt808/{p19}/{p19}/dn"),
            json!({"request_id": "c19", "header": {"msg_id": 0x8105}, "body": {"command": 4, "param": ""}}),
        )
        .await;
    serve_until_results(&mut t19, &cloud, &p19, &["q19", "c19"]).await;
    cloud
        .publish(
            &format!("jt808/{p13}/{p13}/dn"),
            json!({"request_id": "c13", "header": {"msg_id": 0x8105}, "body": {"command": 5, "param": ""}}),
        )
        .await;
    serve_until_results(&mut t13, &cloud, &p13, &["q13", "c13"]).await;

    cloud
        .wait_for("four command results", Duration::from_secs(15), |m| {
            ["q19", "c19"].iter().all(|r| has_result_in(m, &p19, r))
                && ["q13", "c13"].iter().all(|r| has_result_in(m, &p13, r))
        })
        .await;
    let q13 = result_for(&cloud, &p13, "q13");
    assert_eq!(q13.len(), 1, "one result per command");
    assert_eq!(q13[0]["result"], "answer", "{}", q13[0]);
    let answer = &q13[0]["answer"];
    assert_eq!(answer["header"]["msg_id"], 0x0104);
    assert_eq!(answer["body"]["seq"], query.header.serial);
    let params = answer["body"]["params"].as_array().unwrap();
    assert_eq!(params.len(), 150, "the reassembled answer carries every parameter");
    assert_eq!(params[149]["id"], 0xF000 + 149);
    assert_eq!(
        params[149]["value"],
        json!(roadedge::protocol::jt808::base64_encode(&(149u32 * 7).to_be_bytes()))
    );
    assert!(
        messages(&cloud, &p13, ids::PARAMS_REPLY).is_empty(),
        "the matched answer is not published twice"
    );
    let q19 = result_for(&cloud, &p19, "q19");
    assert_eq!(q19.len(), 1);
    assert_eq!(q19[0]["answer"]["header"]["proto_ver"], 1);
    assert!(q19[0]["answer"]["body"]["length"].as_u64().unwrap() > 100);
    for (phone, id, command) in [(&p19, "c19", 0x8105), (&p13, "c13", 0x8105)] {
        let r = result_for(&cloud, phone, id);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["answer"]["header"]["msg_id"], 0x0001, "{}", r[0]);
        assert_eq!(r[0]["answer"]["body"]["id"], command);
        assert_eq!(r[0]["answer"]["body"]["result"], 0);
    }
    assert!(t19
        .commands_seen
        .iter()
        .any(|m| matches!(&m.body, Body::TerminalControl(c) if c.command == 4)));

    // An upgrade package larger than a packet goes down subpackaged; the terminal merges it.
    let firmware: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    cloud
        .publish(
            &format!("jt808/{p13}/{p13}/dn"),
            json!({"request_id": "fw", "header": {"msg_id": 0x8108}, "body": {"type": 0, "manufacturer": "ROADE",
                   "version": "2.0.1", "firmware": roadedge::protocol::jt808::base64_encode(&firmware)}}),
        )
        .await;
    serve_until_results(&mut t13, &cloud, &p13, &["fw"]).await;
    let upgrade = t13
        .commands_seen
        .iter()
        .find_map(|m| match &m.body {
            Body::Upgrade(u) => Some(u.clone()),
            _ => None,
        })
        .expect("the terminal received the upgrade");
    assert_eq!(upgrade.package, firmware, "the merged package is intact");
    assert_eq!(upgrade.version, b"2.0.1");
    let fw = result_for(&cloud, &p13, "fw");
    assert_eq!(fw[0]["answer"]["body"]["id"], 0x8108, "{}", fw[0]);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_connect_over_tls_and_a_client_certificate_can_be_required() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let tls = format!(
        "  tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n",
        pki.broker.cert.display(),
        pki.broker.key.display(),
        pki.ca_file.display()
    );
    let (config, server) = config_with_jt808(dir.path(), &pki, &broker, &tls);
    let edge = start_appliance(&config).await;
    let phone = phone_for(13_800_000_000, 30, Edition::V2019);
    let with_cert = SimTls {
        ca_file: pki.ca_file.clone(),
        client: Some((pki.edge.cert.clone(), pki.edge.key.clone())),
    };
    let mut t = tokio::time::timeout(
        STEP,
        Terminal::connect(&server, Some(&with_cert), phone, Edition::V2019),
    )
    .await
    .unwrap()
    .expect("TLS with a client certificate");
    let code = t.register(STEP).await.unwrap();
    assert!(t.authenticate(&code, STEP).await.unwrap());
    t.report(location(1, 0), STEP).await.unwrap();

    let without_cert = SimTls {
        ca_file: pki.ca_file.clone(),
        client: None,
    };
    let refused = async {
        let mut t = Terminal::connect(&server, Some(&without_cert), phone, Edition::V2019).await?;
        t.register(STEP).await
    };
    let outcome = tokio::time::timeout(STEP, refused).await.expect("refused in time");
    assert!(outcome.is_err(), "a terminal without a client certificate was served");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_code_survives_a_restart_and_a_command_waits_for_its_offline_terminal() {
    let (dir, pki, broker, cloud) = World::start("jt808-restart").await.into_parts();
    let (config, server) = config_with_jt808(dir.path(), &pki, &broker, "");
    let phone = phone_for(13_800_000_000, 7, Edition::V2013);

    let edge = start_appliance(&config).await;
    let (mut t, code) = online(&server, phone, Edition::V2013).await;
    t.report(location(1, 0), STEP).await.unwrap();
    drop(t);
    edge.stop().await;

    let edge = start_appliance(&config).await;
    cloud.wait_edge_online().await;
    // While the terminal is away, the cloud asks for its attributes.
    cloud
        .publish(
            &format!("jt808/{phone}/{phone}/dn"),
            json!({"request_id": "attr", "header": {"msg_id": 0x8107}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(result_for(&cloud, &phone, "attr").is_empty(), "no result while offline");

    let mut wrong = connect(&server, phone, Edition::V2013).await;
    assert!(
        !wrong.authenticate(b"not-the-code", STEP).await.unwrap(),
        "a wrong code is refused"
    );
    let mut t = connect(&server, phone, Edition::V2013).await;
    assert!(
        t.authenticate(&code, STEP).await.unwrap(),
        "the code issued before the restart still works"
    );
    t.report(location(2, 0), STEP).await.unwrap();
    serve_until_results(&mut t, &cloud, &phone, &["attr"]).await;
    let r = result_for(&cloud, &phone, "attr");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["answer"]["header"]["msg_id"], 0x0107);
    assert_eq!(r[0]["answer"]["body"]["model"], "SIM-808");
    cloud
        .wait_for("both locations", Duration::from_secs(10), |m| {
            count_in(m, &phone, ids::LOCATION) >= 2
        })
        .await;
    let stored = edge
        .store
        .read(move |c| terminals::auth_code(c, &phone.to_string()))
        .await
        .unwrap();
    assert_eq!(stored, Some(code));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_mode_admits_only_provisioned_terminals() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let (config, server) = config_with_jt808(dir.path(), &pki, &broker, "  auth: registry\n  encoding: utf8\n");
    let edge = start_appliance(&config).await;
    let known = phone_for(13_800_000_000, 20, Edition::V2013);
    let stranger = phone_for(13_800_000_000, 21, Edition::V2013);
    let k = known.to_string();
    edge.store
        .write(move |ctx| {
            let p = terminals::Provisioned {
                phone: k,
                terminal_id: Some("SIM0001".into()),
                ..terminals::Provisioned::default()
            };
            terminals::provision(ctx.conn(), &p)
        })
        .await
        .unwrap();

    let mut t = connect(&server, stranger, Edition::V2013).await;
    let refused = t.register(STEP).await;
    assert!(
        matches!(&refused, Err(roadedge::sim::jt808::SimError::Refused(r)) if r.contains("result 4")),
        "{refused:?}"
    );
    let (mut t, _) = online(&server, known, Edition::V2013).await;
    t.report(location(1, 0), STEP).await.unwrap();
    edge.stop().await;
}
