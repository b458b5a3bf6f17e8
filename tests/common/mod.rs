//! Test harness: a real mosquitto broker with TLS and required client certificates on loopback,
//! a "cloud" subscriber that records everything, and the roadedge binary as a child process.
//! Every wait is bounded.

#![allow(dead_code)]

pub mod disk;
pub mod web;
pub mod world;

#[allow(unused_imports, reason = "each test binary uses part of the harness")]
pub use world::{init_logging, EdgeChild, EdgeConfig, World};

use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roadedge::sim::pki::{CertFiles, TestCa};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};

/// Certificates of one test world: the cloud CA, broker, edge and cloud clients, and a rogue CA.
pub struct Pki {
    pub ca_file: PathBuf,
    pub broker: CertFiles,
    pub edge: CertFiles,
    pub cloud: CertFiles,
    pub rogue_ca_file: PathBuf,
    pub rogue_edge: CertFiles,
    /// The cloud CA itself, to issue more certificates the broker trusts.
    pub issuer: TestCa,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = TestCa::new(dir, "cloud").unwrap();
        let rogue = TestCa::new(dir, "rogue").unwrap();
        Pki {
            ca_file: ca.ca_file.clone(),
            broker: ca.server("broker").unwrap(),
            edge: ca.client("edge", "cab-1").unwrap(),
            cloud: ca.client("cloud", "cloud").unwrap(),
            rogue_ca_file: rogue.ca_file.clone(),
            rogue_edge: rogue.client("rogue-edge", "cab-1").unwrap(),
            issuer: ca,
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Installs nothing: `scripts/test` makes sure mosquitto is there.
pub fn mosquitto_binary() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto is not installed (scripts/test installs it)");
}

/// A mosquitto process with mutual TLS on a loopback port, persistence in its own directory.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(dir: &Path, pki: &Pki) -> Mosquitto {
        let dir = dir.join("mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let conf = format!(
            "user root\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             allow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\n\
             max_inflight_messages 100\nset_tcp_nodelay true\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n",
            pki.ca_file.display(),
            pki.broker.cert.display(),
            pki.broker.key.display(),
            dir.display(),
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto { port, dir, child: None };
        m.resume();
        m
    }

    /// Starts (again) on the same port.
    pub fn resume(&mut self) {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops gracefully (SIGTERM: persistence is saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message the cloud received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: serde_json::Value,
    pub retain: bool,
}

/// A persistent-session subscriber to `#`: records everything, reconnects by itself.
pub struct Cloud {
    pub messages: Arc<Mutex<Vec<Received>>>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

pub fn client_tls(ca: &Path, cert: &CertFiles) -> Arc<rustls::ClientConfig> {
    Arc::new(roadedge::tls::client_config(Some(ca), Some((&cert.cert, &cert.key))).unwrap())
}

impl Cloud {
    pub async fn connect(port: u16, pki: &Pki, client_id: &str) -> Cloud {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
                client_tls(&pki.ca_file, &pki.cloud),
            )));
        let (client, mut eventloop) = AsyncClient::new(o, 1000);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let sub = client.clone();
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe("#", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let payload = serde_json::from_slice(&p.payload)
                            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&p.payload).into()));
                        sink.lock().unwrap().push(Received {
                            topic: p.topic,
                            payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("cloud subscriber did not get its SUBACK")
            .unwrap();
        Cloud { messages, client, task }
    }

    pub fn on_topic(&self, topic: &str) -> Vec<Received> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic == topic)
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds over the received messages, or panics after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if pred(&self.messages.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the edge's retained "online" status, then gives its downstream SUBACKs a moment.
    pub async fn wait_edge_online(&self) {
        self.wait_for("edge online", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == "edge/cab-1/status" && m.payload["state"] == "online")
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pub async fn publish(&self, topic: &str, payload: serde_json::Value) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, serde_json::to_vec(&payload).unwrap())
            .await
            .unwrap();
    }

    /// The payloads on `result_topic` that answer `request_id`, in arrival order.
    pub fn results(&self, result_topic: &str, request_id: &str) -> Vec<serde_json::Value> {
        self.on_topic(result_topic)
            .into_iter()
            .map(|m| m.payload)
            .filter(|p| p["request_id"] == request_id)
            .collect()
    }

    /// Publishes `payload` with `request_id` on `topic` and returns the first payload on
    /// `result_topic` that answers it; panics after `limit`.
    pub async fn request(
        &self,
        topic: &str,
        result_topic: &str,
        request_id: &str,
        mut payload: serde_json::Value,
        limit: Duration,
    ) -> serde_json::Value {
        payload["request_id"] = serde_json::json!(request_id);
        self.publish(topic, payload).await;
        self.wait_for(&format!("the result of {request_id}"), limit, |m| {
            m.iter()
                .any(|m| m.topic == result_topic && m.payload["request_id"] == request_id)
        })
        .await;
        self.results(result_topic, request_id).remove(0)
    }

    /// An edge command (`edge/cab-1/cmd`) and its first result.
    pub async fn edge_command(
        &self,
        request_id: &str,
        payload: serde_json::Value,
        limit: Duration,
    ) -> serde_json::Value {
        self.request("edge/cab-1/cmd", "edge/cab-1/cmd/result", request_id, payload, limit)
            .await
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A roadedge configuration file for the test world (see [`world::EdgeConfig`] for more sections).
pub fn write_config(dir: &Path, pki: &Pki, broker_url: &str, extra_uplink: &str, max_bytes: &str) -> PathBuf {
    world::EdgeConfig::new(dir, pki, broker_url)
        .uplink(extra_uplink)
        .max_bytes(max_bytes)
        .write()
}

/// A committed record as reported by `roadedge sim synthetic --report-commits`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Committed {
    pub device: String,
    pub n: u64,
    pub run: String,
}

/// The roadedge binary running the synthetic source; collects its COMMITTED lines.
pub struct EdgeProcess {
    pub child: Child,
    pub committed: Arc<Mutex<Vec<Committed>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub stderr_path: PathBuf,
}

impl EdgeProcess {
    pub fn start(config: &Path, run_id: &str, extra: &[&str]) -> EdgeProcess {
        let stderr_path = config.with_file_name(format!("edge-{run_id}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_roadedge"))
            .args(["sim", "synthetic", "-c"])
            .arg(config)
            .args(["--report-commits", "--run-id", run_id])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start roadedge");
        let stdout = child.stdout.take().unwrap();
        let committed = Arc::new(Mutex::new(Vec::new()));
        let sink = committed.clone();
        let run = run_id.to_string();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let ["COMMITTED", device, n, _seq, _kind] = parts.as_slice() {
                    sink.lock().unwrap().push(Committed {
                        device: device.to_string(),
                        n: n.parse().unwrap(),
                        run: run.clone(),
                    });
                }
            }
        });
        EdgeProcess {
            child,
            committed,
            reader: Some(reader),
            stderr_path,
        }
    }

    pub fn committed_count(&self) -> usize {
        self.committed.lock().unwrap().len()
    }

    /// SIGKILL, then collect every line it printed before dying.
    pub fn kill9(mut self) -> Vec<Committed> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let v = self.committed.lock().unwrap().clone();
        v
    }

    /// SIGTERM and wait for a graceful exit (at most 15 s).
    pub fn terminate(mut self) -> (Vec<Committed>, Option<i32>) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut code = None;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let v = self.committed.lock().unwrap().clone();
        (v, code)
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The synthetic records the cloud received: (run, device, n) in arrival order.
pub fn synthetic_received(messages: &[Received]) -> Vec<Committed> {
    messages
        .iter()
        .filter(|m| m.topic.starts_with("sim/"))
        .filter_map(|m| {
            Some(Committed {
                device: m.payload.get("device")?.as_str()?.to_string(),
                n: m.payload.get("n")?.as_u64()?,
                run: m.payload.get("run")?.as_str()?.to_string(),
            })
        })
        .collect()
}

/// The appliance running inside the test process, for tests that look at its store, command plane,
/// metrics or reader service.
pub struct RunningAppliance {
    pub appliance: roadedge::app::Appliance,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl std::ops::Deref for RunningAppliance {
    type Target = roadedge::app::Appliance;
    fn deref(&self) -> &roadedge::app::Appliance {
        &self.appliance
    }
}

/// Starts the appliance from a configuration file and waits until it is up.
pub async fn start_appliance(config_path: &Path) -> RunningAppliance {
    let config = roadedge::config::Config::load(config_path, roadedge::config::FileCheck::Check).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        roadedge::app::run_with(config, roadedge::app::RunOptions::default(), token, move |a| {
            let _ = tx.send(a.clone());
        })
        .await
    });
    let appliance = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the appliance started within 10 s")
        .expect("the appliance reported itself");
    RunningAppliance {
        appliance,
        shutdown,
        task,
    }
}

impl RunningAppliance {
    /// Graceful shutdown, which must finish within the contract's 10 s.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A store and a command plane on a file in `dir`, for gateway tests that run without the uplink.
pub fn store_and_plane(
    dir: &Path,
    command_ttl: Duration,
) -> (
    roadedge::store::Store,
    Arc<roadedge::command::CommandPlane>,
    Arc<roadedge::metrics::Metrics>,
) {
    let metrics = Arc::new(roadedge::metrics::Metrics::default());
    let (store, _) = roadedge::store::Store::open(
        roadedge::store::StoreOptions {
            path: dir.join("edge.db"),
            max_bytes: 64 << 20,
            edge_id: "cab-1".into(),
        },
        metrics.clone(),
    )
    .unwrap();
    let edge = roadedge::command::EdgeInfo {
        edge_id: "cab-1".into(),
        version: "test".into(),
        started_ms: 0,
    };
    let plane = Arc::new(roadedge::command::CommandPlane::new(
        store.clone(),
        edge,
        command_ttl,
        metrics.clone(),
    ));
    (store, plane, metrics)
}
