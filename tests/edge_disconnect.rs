//! Commands across an edge disconnect: the appliance (`roadedge run`) reaches mosquitto through a
//! TCP proxy in this test, which is severed for 30 s (every connection dropped, new ones refused)
//! while the cloud stays connected to the broker and a JT/T 808 terminal stays connected to the
//! edge. The cloud publishes an edge command (`ping`) and a device command (0x8107 to the
//! terminal) during the cut; the persistent MQTT session keeps them at the broker, and once the
//! link is back each is delivered and answered exactly once.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use roadedge::protocol::jt808::Edition;
use roadedge::sim::jt808::{location, phone_for, Terminal};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy that can be severed: `cut` drops every connection through it and refuses new
/// ones (accepted and closed at once, as a dead uplink does) until `restore`.
struct Proxy {
    port: u16,
    state: Arc<Mutex<(bool, CancellationToken)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new((false, CancellationToken::new())));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let (cut, token) = {
                    let s = shared.lock().unwrap();
                    (s.0, s.1.clone())
                };
                if cut {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                    // Dropping both sockets closes them: the edge and the broker each see the
                    // connection end without an MQTT DISCONNECT.
                });
            }
        });
        Proxy { port, state, task }
    }

    fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        s.1.cancel();
    }

    fn restore(&self) {
        let mut s = self.state.lock().unwrap();
        *s = (false, CancellationToken::new());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

struct Edge(Child);

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn statuses(cloud: &Cloud) -> Vec<String> {
    cloud
        .on_topic("edge/cab-1/status")
        .iter()
        .filter_map(|m| m.payload["state"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_published_while_the_edge_is_cut_off_for_30_s_are_answered_once_when_it_returns() {
    let (dir, pki, broker, cloud) = World::start("edge-disconnect").await.into_parts();
    let proxy = Proxy::start(broker.port).await;
    let config = write_config(
        dir.path(),
        &pki,
        &format!("mqtts://127.0.0.1:{}", proxy.port),
        "  keep_alive: 5s\n",
        "64MiB",
    );
    let jt808_port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("jt808:\n  listen: 127.0.0.1:{jt808_port}\n"));
    std::fs::write(&config, text).unwrap();
    let _edge = Edge(
        Command::new(env!("CARGO_BIN_EXE_roadedge"))
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("edge.log")).unwrap())
            .spawn()
            .expect("start roadedge run"),
    );
    cloud.wait_edge_online().await;

    // A terminal online at the edge the whole time.
    let server = format!("127.0.0.1:{jt808_port}");
    let phone = phone_for(13_800_000_000, 31, Edition::V2013);
    let mut terminal = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Terminal::connect(&server, None, phone, Edition::V2013).await {
                Ok(t) => break t,
                Err(e) => {
                    assert!(Instant::now() < deadline, "the 808 listener did not come up: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    let step = Duration::from_secs(10);
    let code = terminal.register(step).await.unwrap();
    assert!(terminal.authenticate(&code, step).await.unwrap());
    terminal.report(location(1, 0), step).await.unwrap();
    let up = format!("jt808/{phone}/{phone}/up");
    cloud
        .wait_for("the first location", step, |m| m.iter().any(|m| m.topic == up))
        .await;
    // The terminal answers whatever the edge sends it, until the test ends.
    let serving = CancellationToken::new();
    let stop_serving = serving.clone();
    let terminal_task = tokio::spawn(async move {
        while !stop_serving.is_cancelled() {
            terminal
                .serve_until(tokio::time::Instant::now() + Duration::from_millis(200))
                .await
                .expect("the terminal stays connected to the edge");
        }
        terminal
    });

    // The uplink is severed; the broker notices (the Last Will says offline).
    let cut_at = Instant::now();
    proxy.cut();
    cloud
        .wait_for("the edge's Last Will", Duration::from_secs(15), |m| {
            m.iter()
                .filter(|m| m.topic == "edge/cab-1/status")
                .filter_map(|m| m.payload["state"].as_str())
                .next_back()
                == Some("offline")
        })
        .await;
    let dn = format!("jt808/{phone}/{phone}/dn");
    cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "ping-while-away", "action": "ping"}),
        )
        .await;
    cloud
        .publish(
            &dn,
            json!({"request_id": "attr-while-away", "header": {"msg_id": 0x8107}}),
        )
        .await;
    let results = |rid: &'static str| {
        let cloud = &cloud;
        move || {
            cloud
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.payload["request_id"] == rid && !m.topic.ends_with("/cmd") && !m.topic.ends_with("/dn"))
                .map(|m| m.payload.clone())
                .collect::<Vec<_>>()
        }
    };
    let ping = results("ping-while-away");
    let attr = results("attr-while-away");
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed())).await;
    assert!(ping().is_empty() && attr().is_empty(), "answered while cut off?");
    let away = cut_at.elapsed();

    proxy.restore();
    let restored = Instant::now();
    cloud
        .wait_for("both results after the return", Duration::from_secs(60), |m| {
            let has = |rid: &str| {
                m.iter()
                    .any(|m| m.payload["request_id"] == rid && m.topic != "edge/cab-1/cmd" && !m.topic.ends_with("/dn"))
            };
            has("ping-while-away") && has("attr-while-away")
        })
        .await;
    let answered_after = restored.elapsed();
    // Duplicates would come within moments (a redelivery, a second dispatch): wait a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    serving.cancel();
    let _terminal = terminal_task.await.unwrap();

    let ping = ping();
    let attr = attr();
    println!(
        "edge cut off {away:?}: ping answered {} time(s), 0x8107 answered {} time(s), {answered_after:?} after the link returned; status sequence {:?}",
        ping.len(),
        attr.len(),
        statuses(&cloud)
    );
    assert_eq!(ping.len(), 1, "ping answered exactly once: {ping:?}");
    assert_eq!(ping[0]["ok"], true, "{ping:?}");
    assert_eq!(ping[0]["answer"]["pong"], true, "{ping:?}");
    assert_eq!(attr.len(), 1, "the device command answered exactly once: {attr:?}");
    assert_eq!(attr[0]["answer"]["header"]["msg_id"], 0x0107, "{attr:?}");
    let s = statuses(&cloud);
    assert_eq!(s.last().map(String::as_str), Some("online"), "{s:?}");
    assert!(s.iter().any(|x| x == "offline"), "{s:?}");
}
