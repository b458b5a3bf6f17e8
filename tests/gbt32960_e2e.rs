//! GB/T 32960 end to end: simulated vehicles over mutual TLS -> the appliance -> a real mosquitto
//! (mutual TLS, loopback) -> a cloud subscriber, and cloud commands back down to the vehicles.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use roadedge::app::{self, RunOptions};
use roadedge::config::{Config, FileCheck};
use roadedge::metrics::Metrics;
use roadedge::protocol::gbt32960::{Body, Command, Edition, Encryption, Frame, ResponseFlag, Time, Vin};
use roadedge::sim::gbt32960::{self as sim, ClientTls, Terminal};
use roadedge::sim::pki::TestCa;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(15);

struct World {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    cloud: Cloud,
    addr: std::net::SocketAddr,
    /// A vehicle certificate from the CA the gateway trusts.
    vehicle_tls: ClientTls,
    /// The gateway's CA, but a client certificate from another CA.
    rogue_tls: ClientTls,
    /// The gateway's CA and no client certificate at all.
    anonymous_tls: ClientTls,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn world(name: &str) -> World {
    let (dir, pki, broker, cloud) = common::World::start(name).await.into_parts();

    let vehicles_ca = TestCa::new(dir.path(), "vehicles").unwrap();
    let server = vehicles_ca.server("gbt32960-server").unwrap();
    let vehicle = vehicles_ca.client("vehicle", "LSIME2E0000000001").unwrap();
    let rogue_ca = TestCa::new(dir.path(), "rogue-vehicles").unwrap();
    let rogue = rogue_ca.client("rogue-vehicle", "LSIME2E0000000001").unwrap();

    let port = free_port();
    let config_path = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str(&format!(
        "gbt32960:\n  listen: 127.0.0.1:{port}\n  tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n  idle_timeout: 60s\n",
        server.cert.display(),
        server.key.display(),
        vehicles_ca.ca_file.display()
    ));
    std::fs::write(&config_path, text).unwrap();

    let config = Config::load(&config_path, FileCheck::Check).unwrap();
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        app::run_with(config, RunOptions::default(), s, move |a| {
            let _ = tx.send(a.metrics.clone());
        })
        .await
    });
    let metrics = tokio::time::timeout(LIMIT, rx).await.unwrap().unwrap();
    cloud.wait_edge_online().await;

    let tls = |ca: &Path, pair: Option<(&Path, &Path)>| ClientTls::from_files(ca, pair, "localhost").unwrap();
    World {
        vehicle_tls: tls(&vehicles_ca.ca_file, Some((&vehicle.cert, &vehicle.key))),
        rogue_tls: tls(&vehicles_ca.ca_file, Some((&rogue.cert, &rogue.key))),
        anonymous_tls: tls(&vehicles_ca.ca_file, None),
        _dir: dir,
        _broker: broker,
        cloud,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        metrics,
        shutdown,
        task,
    }
}

impl World {
    async fn vehicle(&self, vin: &str, edition: Edition) -> Terminal {
        Terminal::connect(self.addr, Some(&self.vehicle_tls), vin, edition)
            .await
            .unwrap()
    }

    /// The cloud's messages on `topic`, waiting until there are at least `n`.
    async fn on_topic(&self, topic: &str, n: usize) -> Vec<Value> {
        self.cloud
            .wait_for(topic, LIMIT, |m| m.iter().filter(|m| m.topic == topic).count() >= n)
            .await;
        self.cloud.on_topic(topic).into_iter().map(|m| m.payload).collect()
    }

    /// The one result for `request_id` on `vin`'s response topic.
    async fn result(&self, vin: &str, request_id: &str) -> Value {
        let topic = format!("gbt32960/{vin}/upstream/response");
        self.cloud
            .wait_for(request_id, LIMIT, |m| {
                m.iter()
                    .any(|m| m.topic == topic && m.payload["request_id"] == request_id)
            })
            .await;
        // Any duplicate result would have been published right behind the first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut results: Vec<Value> = self
            .cloud
            .on_topic(&topic)
            .into_iter()
            .map(|m| m.payload)
            .filter(|p| p["request_id"] == request_id)
            .collect();
        assert_eq!(results.len(), 1, "exactly one result for {request_id}: {results:?}");
        results.remove(0)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// The published payload without the edge envelope, which must be there and well formed.
fn without_edge(mut payload: Value) -> Value {
    let edge = payload
        .as_object_mut()
        .and_then(|o| o.remove("Edge"))
        .expect("an Edge envelope");
    assert_eq!(edge["id"], "cab-1");
    assert!(edge["seq"].as_i64().is_some(), "{edge}");
    assert!(edge["received_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{edge}");
    payload
}

async fn send_and_expect(w: &World, t: &mut Terminal, frame: &Frame, topic: &str) -> Value {
    let before = w.cloud.on_topic(topic).len();
    t.send(frame).await.unwrap();
    let got = w.on_topic(topic, before + 1).await;
    let payload = without_edge(got[before].clone());
    assert_eq!(payload, frame.to_json(), "{topic} carries EMQX's JSON of the frame");
    payload
}

fn type_names(payload: &Value) -> Vec<String> {
    payload["Data"]["Infos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vehicles_over_mutual_tls_publish_every_message_on_its_topic_with_emqx_json() {
    let w = world("cloud-gbt-types").await;
    let time = Time::from_bytes([25, 11, 21, 16, 30, 0]);

    // 2016 (##).
    let vin16 = "LSIME2E2016000001";
    let v16 = Vin::from_text(vin16);
    let mut t = w.vehicle(vin16, Edition::V2016).await;
    let login = sim::login_frame(v16, Edition::V2016, time, 1);
    t.send(&login).await.unwrap();
    let reply = t.reply_to(Command::VEHICLE_LOGIN, LIMIT).await.unwrap();
    assert_eq!(reply.response, ResponseFlag::SUCCESS);
    assert!(
        w.metrics.store.committed_total.load(Relaxed) >= 1,
        "the login reply came before the login was committed"
    );
    let vlogin = without_edge(w.on_topic(&format!("gbt32960/{vin16}/upstream/vlogin"), 1).await[0].clone());
    assert_eq!(vlogin, login.to_json());
    assert_eq!(vlogin["Cmd"], 1);
    assert_eq!(vlogin["Vin"], vin16);
    assert_eq!(vlogin["Data"]["Seq"], 1);
    assert_eq!(vlogin["Data"]["ICCID"], "89860012345678901234");

    let info = send_and_expect(
        &w,
        &mut t,
        &sim::realtime_frame(v16, Edition::V2016, time, 1, false),
        &format!("gbt32960/{vin16}/upstream/info"),
    )
    .await;
    assert_eq!(
        type_names(&info),
        [
            "Vehicle",
            "DriveMotor",
            "FuelCell",
            "Engine",
            "Location",
            "Extreme",
            "Alarm",
            "ChargeableVoltage",
            "ChargeableTemp"
        ]
    );
    assert_eq!(info["Cmd"], 2);
    assert_eq!(info["Encrypt"], 1);
    assert_eq!(info["Data"]["Infos"][0]["Current"], 10_120, "raw wire integers");
    let reinfo = send_and_expect(
        &w,
        &mut t,
        &sim::realtime_frame(v16, Edition::V2016, time, 2, true),
        &format!("gbt32960/{vin16}/upstream/reinfo"),
    )
    .await;
    assert_eq!(reinfo["Cmd"], 3);

    t.send(&sim::heartbeat_frame(v16, Edition::V2016)).await.unwrap();
    let hb = t.reply_to(Command::HEARTBEAT, LIMIT).await.unwrap();
    assert_eq!(hb.response, ResponseFlag::SUCCESS);
    t.send(&sim::time_sync_frame(v16, Edition::V2016)).await.unwrap();
    let sync = t.reply_to(Command::TIME_SYNC, LIMIT).await.unwrap();
    assert_eq!(sync.response, ResponseFlag::SUCCESS);
    let gateway_time = sync.message_time().expect("the time-sync reply carries the time");
    let local = sim::local_now();
    assert_eq!((gateway_time.year, gateway_time.month), (local.year, local.month));

    // 2025 ($$) on another vehicle.
    let vin25 = "LSIME2E2025000001";
    let v25 = Vin::from_text(vin25);
    let mut t25 = w.vehicle(vin25, Edition::V2025).await;
    let login25 = sim::login_frame(v25, Edition::V2025, time, 7);
    t25.send(&login25).await.unwrap();
    let reply = t25.reply_to(Command::VEHICLE_LOGIN, LIMIT).await.unwrap();
    assert_eq!(reply.edition, Edition::V2025, "answered in the vehicle's edition");
    let vlogin25 = without_edge(w.on_topic(&format!("gbt32960/{vin25}/upstream/vlogin"), 1).await[0].clone());
    assert_eq!(vlogin25, login25.to_json());
    assert_eq!(vlogin25["Data"]["BmsNum"], 1);
    let info25 = send_and_expect(
        &w,
        &mut t25,
        &sim::realtime_frame(v25, Edition::V2025, time, 1, false),
        &format!("gbt32960/{vin25}/upstream/info"),
    )
    .await;
    assert_eq!(
        type_names(&info25),
        [
            "Vehicle",
            "DriveMotor",
            "FuelCell",
            "Engine",
            "Location",
            "Alarm",
            "MinVoltageOfPowerBattery",
            "TempOfPowerBattery",
            "FuelCellStack",
            "SuperCapacitor",
            "SuperCapacitorExtreme",
            "Signature"
        ]
    );
    send_and_expect(
        &w,
        &mut t25,
        &sim::realtime_frame(v25, Edition::V2025, time, 2, true),
        &format!("gbt32960/{vin25}/upstream/reinfo"),
    )
    .await;
    // An SM4-encrypted data unit (no key configured): relayed as received, never read as text.
    let mut encrypted = sim::realtime_frame(v25, Edition::V2025, time, 3, false);
    let plain = encrypted.encode().unwrap();
    let ciphertext: Vec<u8> = plain[24..plain.len() - 1].iter().map(|b| b ^ 0x5A).collect();
    encrypted.encryption = Encryption::SM4;
    encrypted.body = Body::Encrypted(ciphertext.clone());
    let relayed = send_and_expect(&w, &mut t25, &encrypted, &format!("gbt32960/{vin25}/upstream/info")).await;
    assert_eq!(relayed["Encrypt"], 5);
    assert_eq!(relayed["Data"], json!({"Ciphertext": hex::encode_upper(&ciphertext)}));
    let activation = send_and_expect(
        &w,
        &mut t25,
        &sim::activation_frame(v25, time),
        &format!("gbt32960/{vin25}/upstream/activation"),
    )
    .await;
    assert_eq!(activation["Data"]["ChipID"], "CHIP0001        ");
    t25.send(&sim::heartbeat_frame(v25, Edition::V2025)).await.unwrap();
    assert_eq!(
        t25.reply_to(Command::HEARTBEAT, LIMIT).await.unwrap().edition,
        Edition::V2025
    );

    // Logouts.
    for (t, vin, edition) in [(&mut t, vin16, Edition::V2016), (&mut t25, vin25, Edition::V2025)] {
        let vlogout = send_and_expect(
            &w,
            t,
            &sim::logout_frame(Vin::from_text(vin), edition, time, 1),
            &format!("gbt32960/{vin}/upstream/vlogout"),
        )
        .await;
        assert_eq!(vlogout["Cmd"], 4);
    }

    // Heartbeat and time sync are answered, not published; nothing went to other topics.
    let topics: Vec<String> = w
        .cloud
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.topic.clone())
        .filter(|t| t.starts_with("gbt32960/"))
        .collect();
    let expected: Vec<String> = [
        (vin16, "vlogin"),
        (vin16, "info"),
        (vin16, "reinfo"),
        (vin25, "vlogin"),
        (vin25, "info"),
        (vin25, "reinfo"),
        (vin25, "info"),
        (vin25, "activation"),
        (vin16, "vlogout"),
        (vin25, "vlogout"),
    ]
    .iter()
    .map(|(vin, suffix)| format!("gbt32960/{vin}/upstream/{suffix}"))
    .collect();
    assert_eq!(topics, expected);
    assert_eq!(w.metrics.gbt32960.frames_bad.load(Relaxed), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_commands_reach_the_vehicle_wait_for_it_offline_and_expire_after_their_ttl() {
    let w = world("cloud-gbt-commands").await;

    // Query and Control to a vehicle that is online.
    let vin = "LSIME2ECMD0000001";
    let mut t = w.vehicle(vin, Edition::V2016).await;
    t.login().await.unwrap();
    w.on_topic(&format!("gbt32960/{vin}/upstream/vlogin"), 1).await;
    let dnstream = format!("gbt32960/{vin}/dnstream");
    w.cloud
        .publish(
            &dnstream,
            json!({"request_id": "q1", "Action": "Query", "Total": 2, "Ids": ["0x01", "0x09"]}),
        )
        .await;
    let query = t.recv(LIMIT).await.unwrap();
    assert_eq!(query.command, Command::PARAM_QUERY);
    assert_eq!(query.to_json()["Data"]["Ids"], json!([1, 9]));
    let answer = sim::answer(&query, sim::local_now()).unwrap();
    t.send(&answer).await.unwrap();
    let result = w.result(vin, "q1").await;
    assert_eq!(result["result"], "answer");
    assert_eq!(result["ok"], true);
    assert_eq!(
        result["answer"],
        answer.to_json(),
        "the answer is EMQX's JSON of the reply"
    );
    assert_eq!(result["answer"]["Cmd"], 0x80);
    assert_eq!(result["answer"]["Data"]["Params"], json!([{"0x01": 60}, {"0x09": 10}]));
    assert_eq!(result["Edge"]["id"], "cab-1");

    w.cloud
        .publish(
            &dnstream,
            json!({"request_id": "c1", "Action": "Control", "Command": "0x06", "Param": {"Level": 2, "Message": "SLOW DOWN"}}),
        )
        .await;
    let control = t.answer_next_command(LIMIT).await.unwrap();
    assert_eq!(control.command, Command::TERMINAL_CONTROL);
    assert_eq!(control.to_json()["Data"]["Command"], 6);
    let result = w.result(vin, "c1").await;
    assert_eq!(result["result"], "answer");
    assert_eq!(result["answer"]["Cmd"], 0x82);
    assert_eq!(result["answer"]["Data"]["Command"], 6);

    // A Setting the gateway cannot encode is rejected with a reason, not sent.
    w.cloud
        .publish(
            &dnstream,
            json!({"request_id": "bad1", "Action": "Setting", "Params": [{"0x07": "TOO-LONG"}]}),
        )
        .await;
    let result = w.result(vin, "bad1").await;
    assert_eq!(result["result"], "rejected");
    assert!(result["error"].as_str().unwrap().contains("5 bytes"), "{result}");

    // A vehicle that is offline gets its command when it logs in.
    let late = "LSIME2ELATE000001";
    w.cloud
        .publish(
            &format!("gbt32960/{late}/dnstream"),
            json!({"request_id": "s1", "Action": "Setting", "Total": 1, "Params": [{"0x01": 5000}]}),
        )
        .await;
    // ... and one whose TTL passes before its vehicle shows up ends `expired`.
    let never = "LSIME2ENEVER00001";
    w.cloud
        .publish(
            &format!("gbt32960/{never}/dnstream"),
            json!({"request_id": "e1", "Action": "Query", "Ids": ["0x01"], "ttl_s": 1}),
        )
        .await;
    let expired = w.result(never, "e1").await;
    assert_eq!(expired["result"], "expired");
    assert_eq!(expired["ok"], false);

    let mut t2 = w.vehicle(late, Edition::V2025).await;
    t2.login().await.unwrap();
    let setting = t2.answer_next_command(LIMIT).await.unwrap();
    assert_eq!(setting.command, Command::PARAM_SET);
    assert_eq!(
        setting.edition,
        Edition::V2025,
        "sent in the edition the vehicle logged in with"
    );
    let result = w.result(late, "s1").await;
    assert_eq!(result["result"], "answer");
    assert_eq!(result["answer"]["Cmd"], 0x81);
    assert_eq!(result["answer"]["Data"]["Params"], json!([{"0x01": 5000}]));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_with_a_rogue_client_certificate_is_refused_at_the_handshake() {
    let w = world("cloud-gbt-rogue").await;
    for (who, tls) in [
        ("rogue certificate", &w.rogue_tls),
        ("no certificate", &w.anonymous_tls),
    ] {
        // With TLS 1.3 the client may finish its side before the server rejects the certificate;
        // either way no login can get through.
        match Terminal::connect(w.addr, Some(tls), "LSIME2EROGUE00001", Edition::V2016).await {
            Err(_) => {}
            Ok(mut t) => {
                let err = t.login().await.expect_err(who);
                assert!(
                    !matches!(err, sim::SimError::Timeout(_)),
                    "{who}: refused, not left hanging: {err}"
                );
            }
        }
    }
    assert!(w.metrics.gbt32960.handshake_failures.load(Relaxed) >= 2);
    // The genuine certificate works on the same listener.
    let mut t = w.vehicle("LSIME2EGOOD000001", Edition::V2016).await;
    t.login().await.unwrap();
    w.on_topic("gbt32960/LSIME2EGOOD000001/upstream/vlogin", 1).await;
    assert!(w
        .cloud
        .on_topic("gbt32960/LSIME2EROGUE00001/upstream/vlogin")
        .is_empty());
    w.stop().await;
}
