//! OTA end to end against the real binary (binary-swap path), through a real mosquitto with
//! mutual TLS: the test plays systemd (`Restart=on-failure`: it starts `ota.binary_path` again
//! whenever the process ends other than by the test's stop).
//!
//! The newer build an update carries is the test's own roadedge binary with another version
//! stamped into it (`scripts/ota-stamp`, the release mechanism: the binary carries its version
//! and reports it with `--version`, which is where the OTA service reads it), signed with a
//! test ed25519 key like a release is (`scripts/ota-sign`).

mod common;
#[path = "common/rauc.rs"]
mod rauc_world;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The tests each run a broker and the appliance; one at a time on a 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONFIRM_WITHIN_S: u64 = 8;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A copy of the test's roadedge binary with `version` stamped in (scripts/ota-stamp).
fn stamped(dir: &Path, version: &str) -> PathBuf {
    let out = dir.join(format!("roadedge-{version}"));
    let status = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ota-stamp"))
        .arg(env!("CARGO_BIN_EXE_roadedge"))
        .arg(version)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs scripts/ota-stamp");
    assert!(status.success());
    out
}

fn version_of(binary: &Path) -> String {
    for _ in 0..20 {
        match Command::new(binary).arg("--version").output() {
            Ok(out) => {
                return String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string()
            }
            // ETXTBSY right after a copy: try again.
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot run {}: {e}", binary.display()),
        }
    }
    panic!("{} stayed busy", binary.display())
}

/// The test plays systemd: starts the binary at `path` again after every exit but its stop.
struct Supervisor {
    stop: Arc<AtomicBool>,
    /// While set, a restart waits (the test changes the world between two runs).
    pub hold: Arc<AtomicBool>,
    pub exits: Arc<Mutex<Vec<Option<i32>>>>,
    pub starts: Arc<AtomicU32>,
    pid: Arc<Mutex<Option<u32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn start(binary: &Path, config: &Path, log: &Path, env: Vec<(String, String)>) -> Supervisor {
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let exits = Arc::new(Mutex::new(Vec::new()));
        let starts = Arc::new(AtomicU32::new(0));
        let pid = Arc::new(Mutex::new(None));
        let (binary, config, log) = (binary.to_path_buf(), config.to_path_buf(), log.to_path_buf());
        let thread = {
            let (stop, hold, exits, starts, pid) =
                (stop.clone(), hold.clone(), exits.clone(), starts.clone(), pid.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(300);
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    let logf = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap();
                    let spawned = Command::new(&binary)
                        .args(["run", "-c"])
                        .arg(&config)
                        .env("RUST_LOG", "info")
                        .envs(env.iter().cloned())
                        .stdout(Stdio::null())
                        .stderr(logf)
                        .spawn();
                    let mut child = match spawned {
                        Ok(c) => c,
                        Err(e) if e.raw_os_error() == Some(26) => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        Err(e) => panic!("cannot start {}: {e}", binary.display()),
                    };
                    starts.fetch_add(1, SeqCst);
                    *pid.lock().unwrap() = Some(child.id());
                    let status = loop {
                        if let Some(s) = child.try_wait().unwrap() {
                            break s;
                        }
                        if stop.load(SeqCst) {
                            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                            let end = Instant::now() + Duration::from_secs(15);
                            while child.try_wait().unwrap().is_none() && Instant::now() < end {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            let _ = child.kill();
                            break child.wait().unwrap();
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    *pid.lock().unwrap() = None;
                    exits.lock().unwrap().push(status.code());
                    if stop.load(SeqCst) {
                        break;
                    }
                    // Restart=on-failure, RestartSec (short here).
                    std::thread::sleep(Duration::from_millis(200));
                    let held = Instant::now() + Duration::from_secs(60);
                    while hold.load(SeqCst) && !stop.load(SeqCst) && Instant::now() < held {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        };
        Supervisor {
            stop,
            hold,
            exits,
            starts,
            pid,
            thread: Some(thread),
        }
    }

    fn exits(&self) -> Vec<Option<i32>> {
        self.exits.lock().unwrap().clone()
    }

    async fn wait_exits(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.exits().len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for exit #{n}: {:?}",
                self.exits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&self) {
        let pid = self.pid.lock().unwrap().expect("a running process");
        Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    }

    fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

struct World {
    dir: tempfile::TempDir,
    pki: Pki,
    broker: Mosquitto,
    cloud: Cloud,
    key: SigningKey,
    binary: PathBuf,
    original_sha: String,
    _config: PathBuf,
    supervisor: Supervisor,
    next: AtomicU32,
}

impl World {
    async fn new(extra_ota: &str) -> World {
        World::with_env(&format!("  installer: binary\n{extra_ota}"), Vec::new()).await
    }

    async fn with_env(extra_ota: &str, env: Vec<(String, String)>) -> World {
        let (dir, pki, broker, cloud) = common::World::start("ota").await.into_parts();
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let public = dir.path().join("ota.pub");
        std::fs::write(&public, key.verifying_key().to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
        let bin_dir = dir.path().join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let binary = bin_dir.join("roadedge");
        std::fs::copy(env!("CARGO_BIN_EXE_roadedge"), &binary).unwrap();
        let original_sha = sha256_hex(&std::fs::read(&binary).unwrap());
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let config = dir.path().join("roadedge.yaml");
        std::fs::write(
            &config,
            format!(
                "edge: {{id: cab-1}}\nstorage: {{path: {}, max_bytes: 64MiB}}\nuplink:\n  url: {}\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n  metrics_interval: 1s\nlogging: {{level: info}}\nota:\n  public_key_file: {}\n  confirm_within: {CONFIRM_WITHIN_S}s\n  binary_path: {}\n  max_bytes: 200MiB\n  ca_file: {}\n  stall_timeout: 2s\n{extra_ota}",
                state.join("edge.db").display(),
                broker.url(),
                pki.ca_file.display(),
                pki.edge.cert.display(),
                pki.edge.key.display(),
                public.display(),
                binary.display(),
                pki.ca_file.display(),
            ),
        )
        .unwrap();
        let supervisor = Supervisor::start(&binary, &config, &dir.path().join("edge.log"), env);
        let w = World {
            dir,
            pki,
            broker,
            cloud,
            key,
            binary,
            original_sha,
            _config: config,
            supervisor,
            next: AtomicU32::new(0),
        };
        w.cloud.wait_edge_online().await;
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> PathBuf {
        self.path("state/ota")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("edge.log")).unwrap_or_default()
    }

    /// A signed update file of `version`: (path, sha256 hex, base64 signature).
    fn update(&self, version: &str) -> (PathBuf, String, String) {
        let file = stamped(self.dir.path(), version);
        let bytes = std::fs::read(&file).unwrap();
        let digest = Sha256::digest(&bytes);
        let sig = self.key.sign(&digest);
        (
            file,
            hex::encode(digest),
            base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        )
    }

    fn request_id(&self) -> String {
        format!("ota-{}", self.next.fetch_add(1, SeqCst))
    }

    async fn send(&self, mut command: Value) -> String {
        let rid = self.request_id();
        command["request_id"] = json!(rid);
        self.cloud.publish("edge/cab-1/cmd", command).await;
        rid
    }

    fn results(&self, rid: &str) -> Vec<Value> {
        self.cloud
            .on_topic("edge/cab-1/cmd/result")
            .into_iter()
            .map(|m| m.payload)
            .filter(|p| p["request_id"] == rid)
            .collect()
    }

    async fn result(&self, rid: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.results(rid).into_iter().next() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {rid} within {limit:?}; log:\n{}",
                tail(&self.log())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, command: Value) -> Value {
        let rid = self.send(command).await;
        self.result(&rid, Duration::from_secs(30)).await
    }

    fn binary_sha(&self) -> String {
        sha256_hex(&std::fs::read(&self.binary).unwrap())
    }

    /// Nothing changed on disk outside the staging area, and the staging area is empty.
    fn assert_untouched(&self) {
        assert_eq!(self.binary_sha(), self.original_sha, "the binary changed");
        let bin_dir: Vec<String> = std::fs::read_dir(self.path("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(bin_dir, ["roadedge"], "files beside the binary");
        assert!(
            !self.state().join("journal.json").exists(),
            "an install journal was written"
        );
        let staged: Vec<_> = std::fs::read_dir(self.state().join("staging"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(staged.is_empty(), "staging not cleaned: {staged:?}");
    }

    fn journal(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state().join("journal.json")).unwrap()).unwrap()
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn install(path: &Path, sha: &str, sig: &str) -> Value {
    json!({"action": "ota.install", "path": path.display().to_string(), "sha256": sha, "signature": sig})
}

/// The online status the edge retains carries `version`.
async fn wait_online_version(cloud: &Cloud, version: &str, limit: Duration) {
    cloud
        .wait_for(&format!("edge online at {version}"), limit, |m| {
            m.iter()
                .rev()
                .find(|m| m.topic == "edge/cab-1/status")
                .is_some_and(|m| m.payload["state"] == "online" && m.payload["version"] == version)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_signed_update_installs_restarts_and_confirms_with_one_result() {
    let _serial = SERIAL.lock().await;
    let w = World::new("").await;
    let (file, sha, sig) = w.update("0.2.0");
    let started = Instant::now();
    let rid = w.send(install(&file, &sha, &sig)).await;
    let result = w.result(&rid, Duration::from_secs(60)).await;
    println!("good update: result after {:?}: {result}", started.elapsed());
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["answer"]["installed"], "0.2.0");
    assert_eq!(result["answer"]["previous"], "0.1.0");
    assert_eq!(w.supervisor.exits(), [Some(75)], "one restart, by exit code 75");
    assert_eq!(version_of(&w.binary), "0.2.0");
    assert_eq!(
        version_of(&w.path("bin/roadedge.previous")),
        "0.1.0",
        "the previous binary is kept beside"
    );
    wait_online_version(&w.cloud, "0.2.0", Duration::from_secs(10)).await;
    assert_eq!(w.journal()["state"], "confirmed");

    let status = w.call(json!({"action": "ota.status"})).await;
    println!("ota.status: {status}");
    let s = &status["answer"];
    assert_eq!(s["current_version"], "0.2.0");
    assert_eq!(s["previous_version"], "0.1.0");
    assert_eq!(s["last_result"]["request_id"], rid.as_str());
    assert_eq!(s["last_result"]["result"]["ok"], true);

    // The same version again is a replay now.
    let again = w.call(install(&file, &sha, &sig)).await;
    assert_eq!(again["result"], "rejected", "{again}");
    assert!(again["error"].as_str().unwrap().contains("not newer"), "{again}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.results(&rid).len(), 1, "exactly one result for the install");
    assert!(!w
        .cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .any(|m| m.payload["alarm"] == "update_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_refused_with_clear_results_and_nothing_changes_on_disk() {
    let _serial = SERIAL.lock().await;
    let w = World::new("").await;
    let (file, sha, sig) = w.update("0.2.0");
    let bytes = std::fs::read(&file).unwrap();

    // Unsigned.
    let r = w
        .call(json!({"action": "ota.install", "path": file.display().to_string(), "sha256": sha}))
        .await;
    println!("unsigned: {r}");
    assert_eq!(r["result"], "rejected");
    assert!(r["error"].as_str().unwrap().contains("unsigned"), "{r}");
    w.assert_untouched();

    // Signed by another key.
    let other = SigningKey::from_bytes(&[9u8; 32]).sign(&Sha256::digest(&bytes));
    let other = base64::engine::general_purpose::STANDARD.encode(other.to_bytes());
    let r = w.call(install(&file, &sha, &other)).await;
    println!("wrongly signed: {r}");
    assert!(r["error"].as_str().unwrap().contains("bad signature"), "{r}");
    w.assert_untouched();

    // Truncated (the digest and signature of the whole file).
    let cut = w.path("truncated");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = w.call(install(&cut, &sha, &sig)).await;
    println!("truncated: {r}");
    assert!(r["error"].as_str().unwrap().contains("sha256 mismatch"), "{r}");
    assert!(r["error"].as_str().unwrap().contains("truncated"), "{r}");
    w.assert_untouched();

    // Older and equal versions, correctly signed: replays.
    for v in ["0.0.9", "0.1.0"] {
        let (old, old_sha, old_sig) = w.update(v);
        let r = w.call(install(&old, &old_sha, &old_sig)).await;
        println!("version {v}: {r}");
        assert_eq!(r["result"], "rejected");
        assert!(r["error"].as_str().unwrap().contains("replay"), "{r}");
        w.assert_untouched();
    }

    // Oversized (ota.max_bytes 200MiB): refused before a byte is copied.
    let big = w.path("big");
    std::fs::File::create(&big).unwrap().set_len(300 << 20).unwrap();
    let r = w.call(install(&big, &sha, &sig)).await;
    println!("oversized: {r}");
    assert!(r["error"].as_str().unwrap().contains("ota.max_bytes"), "{r}");
    w.assert_untouched();

    // A signed file that is not a roadedge binary.
    let script = w.path("not-roadedge");
    std::fs::write(&script, b"#!/bin/sh\necho hello\n").unwrap();
    let d = Sha256::digest(std::fs::read(&script).unwrap());
    let s = base64::engine::general_purpose::STANDARD.encode(w.key.sign(&d).to_bytes());
    let r = w.call(install(&script, &hex::encode(d), &s)).await;
    println!("not roadedge: {r}");
    assert!(r["error"].as_str().unwrap().contains("not a roadedge binary"), "{r}");
    w.assert_untouched();

    // No source, a bad signature encoding.
    let r = w.call(json!({"action": "ota.install", "signature": sig})).await;
    assert_eq!(r["result"], "rejected");
    let r = w.call(install(&file, &sha, "not base64!")).await;
    assert!(r["error"].as_str().unwrap().contains("base64"), "{r}");
    w.assert_untouched();

    assert!(w.supervisor.exits().is_empty(), "the running version never stopped");
    let status = w.call(json!({"action": "ota.status"})).await;
    assert_eq!(status["answer"]["current_version"], "0.1.0");
    assert_eq!(status["answer"]["last_result"]["result"]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_cannot_reach_the_broker_rolls_back_by_itself_and_reports_update_failed() {
    let _serial = SERIAL.lock().await;
    let mut w = World::new("").await;
    let (file, sha, sig) = w.update("0.2.0");
    w.supervisor.hold.store(true, SeqCst);
    let rid = w.send(install(&file, &sha, &sig)).await;
    w.supervisor.wait_exits(1, Duration::from_secs(60)).await;
    assert_eq!(w.supervisor.exits(), [Some(75)]);
    assert_eq!(version_of(&w.binary), "0.2.0");
    // The new version starts into a world without its broker.
    w.broker.stop();
    let new_started = Instant::now();
    w.supervisor.hold.store(false, SeqCst);
    w.supervisor
        .wait_exits(2, Duration::from_secs(CONFIRM_WITHIN_S + 20))
        .await;
    let rolled_back_after = new_started.elapsed();
    println!("rolled back after {rolled_back_after:?} (confirm_within {CONFIRM_WITHIN_S}s)");
    assert_eq!(w.supervisor.exits(), [Some(75), Some(75)]);
    assert!(rolled_back_after < Duration::from_secs(CONFIRM_WITHIN_S + 5));
    assert_eq!(version_of(&w.binary), "0.1.0", "the previous binary is back");
    w.broker.resume();

    let result = w.result(&rid, Duration::from_secs(30)).await;
    println!("rollback result: {result}");
    assert_eq!(result["ok"], false);
    assert_eq!(result["result"], "failed");
    assert!(result["error"].as_str().unwrap().contains("update_failed"), "{result}");
    assert!(result["error"].as_str().unwrap().contains("no PUBACK"), "{result}");
    w.cloud
        .wait_for("update_failed raised", Duration::from_secs(10), |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/alarm" && m.payload["alarm"] == "update_failed" && m.payload["state"] == "raised"
            })
        })
        .await;
    wait_online_version(&w.cloud, "0.1.0", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.results(&rid).len(), 1, "exactly one result");
    let raised = w
        .cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .filter(|m| m.payload["alarm"] == "update_failed")
        .count();
    assert_eq!(raised, 1, "raised once");
    assert_eq!(w.journal()["state"], "rolled_back");
    let status = w.call(json!({"action": "ota.status"})).await;
    assert_eq!(status["answer"]["current_version"], "0.1.0");
    assert_eq!(status["answer"]["last_result"]["result"]["ok"], false);

    // A good update afterwards is kept and clears update_failed, once.
    let (file, sha, sig) = w.update("0.2.1");
    let rid = w.send(install(&file, &sha, &sig)).await;
    let result = w.result(&rid, Duration::from_secs(60)).await;
    assert_eq!(result["ok"], true, "{result}");
    w.cloud
        .wait_for("update_failed cleared", Duration::from_secs(10), |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/alarm"
                    && m.payload["alarm"] == "update_failed"
                    && m.payload["state"] == "cleared"
            })
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let states: Vec<String> = w
        .cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .filter(|m| m.payload["alarm"] == "update_failed")
        .map(|m| m.payload["state"].as_str().unwrap_or("").to_string())
        .collect();
    println!("update_failed alarm records: {states:?}");
    assert_eq!(states, ["raised", "cleared"]);
    w.supervisor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_restart_before_the_confirmation_leaves_a_working_version_that_confirms() {
    let _serial = SERIAL.lock().await;
    let mut w = World::new("").await;
    let (file, sha, sig) = w.update("0.2.0");
    w.supervisor.hold.store(true, SeqCst);
    let rid = w.send(install(&file, &sha, &sig)).await;
    w.supervisor.wait_exits(1, Duration::from_secs(60)).await;
    w.broker.stop();
    w.supervisor.hold.store(false, SeqCst);
    // The new version runs and waits for its PUBACK: killed there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.supervisor.starts.load(SeqCst) < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.journal()["state"], "confirming");
    w.supervisor.kill9();
    w.supervisor.wait_exits(2, Duration::from_secs(10)).await;
    println!("killed while confirming: exits {:?}", w.supervisor.exits());
    w.broker.resume();
    let result = w.result(&rid, Duration::from_secs(30)).await;
    println!("after kill -9 while confirming: {result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(version_of(&w.binary), "0.2.0");
    let j = w.journal();
    assert_eq!(j["state"], "confirmed");
    assert_eq!(j["boots"], 2, "{j}");
    wait_online_version(&w.cloud, "0.2.0", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.results(&rid).len(), 1);
    w.supervisor.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_staging_verification_and_swap_always_leaves_a_working_version() {
    let _serial = SERIAL.lock().await;
    // Each step is recognised on disk (polled every millisecond) and the process killed in it:
    // staging = `staging/update.part` being written; verifying = `staging/update` hashed, its
    // signature and version checked, no journal yet; swapping = the journal written, the binaries
    // being copied and renamed.
    const STEPS: [&str; 3] = ["staging", "verifying", "swapping"];
    for step in STEPS {
        let w = World::new("").await;
        let (file, sha, sig) = w.update("0.2.0");
        let rid = w.send(install(&file, &sha, &sig)).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            let seen = if w.state().join("journal.json").exists() {
                "swapping"
            } else if w.state().join("staging/update").exists() {
                "verifying"
            } else if w.state().join("staging/update.part").exists() {
                "staging"
            } else {
                ""
            };
            if seen == step {
                w.supervisor.kill9();
                break seen;
            }
            let rank = |s: &str| STEPS.iter().position(|x| *x == s);
            assert!(
                rank(seen).unwrap_or(0) <= rank(step).unwrap_or(0) || seen.is_empty(),
                "step {step} passed unseen (at {seen})"
            );
            assert!(Instant::now() < deadline, "step {step} never came");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        assert!(w.supervisor.exits().is_empty(), "killed before any restart");
        // Whatever was hit: a complete binary is in place and the appliance comes back.
        w.supervisor.wait_exits(1, Duration::from_secs(5)).await;
        let v = version_of(&w.binary);
        assert!(v == "0.1.0" || v == "0.2.0", "{v}");
        w.cloud.wait_edge_online().await;
        // The broker delivers the unacknowledged command again; it ends in exactly one result.
        let result = w.result(&rid, Duration::from_secs(60)).await;
        println!("kill -9 while {seen}: binary after the kill {v}; result {}", {
            let mut r = result.clone();
            r.as_object_mut().unwrap().remove("edge");
            r
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(w.results(&rid).len(), 1, "exactly one result");
        let v = version_of(&w.binary);
        if result["ok"] == true {
            assert_eq!(v, "0.2.0");
        } else {
            assert_eq!(v, "0.1.0");
            assert_eq!(w.binary_sha(), w.original_sha);
            assert!(result["error"].as_str().unwrap().contains("interrupted"), "{result}");
        }
        let staged: Vec<_> = std::fs::read_dir(w.state().join("staging"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(staged.is_empty(), "staging cleaned: {staged:?}");
        drop(w);
    }
}

// ----- HTTPS downloads -----

/// A tiny HTTPS/1.1 server on 127.0.0.1 for update downloads, with failure modes per path:
/// `/file` (Range supported), `/cut-once` (the first transfer breaks off half way),
/// `/stall` (sends half, then nothing), `/to-http` (302 to plain http), `/to-https` (302 to
/// `/file`), `/missing` (404).
struct Https {
    port: u16,
    connections: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Https {
    async fn start(pki: &Pki, body: Arc<Vec<u8>>) -> Https {
        let config = roadedge::tls::server_config(&pki.broker.cert, &pki.broker.key, None, false).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicU32::new(0));
        let cut_once = Arc::new(AtomicBool::new(true));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                count.fetch_add(1, SeqCst);
                let (acceptor, body, cut_once) = (acceptor.clone(), body.clone(), cut_once.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(120), serve(acceptor, tcp, body, cut_once, port))
                        .await;
                });
            }
        });
        Https {
            port,
            connections,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    body: Arc<Vec<u8>>,
    cut_once: Arc<AtomicBool>,
    port: u16,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if tls.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let from: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("range: bytes=")
                .map(|r| r.trim_end_matches('-').to_string())
        })
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let redirect =
        |to: String| format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    match path.as_str() {
        "/to-http" => {
            tls.write_all(redirect(format!("http://localhost:{port}/file")).as_bytes())
                .await?;
        }
        "/to-https" => {
            tls.write_all(redirect("/file".into()).as_bytes()).await?;
        }
        "/missing" => {
            tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
        }
        "/file" | "/cut-once" | "/stall" => {
            let part = &body[from.min(body.len())..];
            let header = if from > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    part.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    part.len()
                )
            };
            tls.write_all(header.as_bytes()).await?;
            let half = part.len() / 2;
            match path.as_str() {
                "/cut-once" if cut_once.swap(false, SeqCst) => {
                    tls.write_all(&part[..half]).await?;
                    tls.flush().await?;
                    return Ok(()); // dropped: the connection breaks off
                }
                "/stall" => {
                    tls.write_all(&part[..half.min(1 << 20)]).await?;
                    tls.flush().await?;
                    tokio::time::sleep(Duration::from_secs(100)).await;
                    return Ok(());
                }
                _ => {
                    for chunk in part.chunks(1 << 20) {
                        tls.write_all(chunk).await?;
                    }
                }
            }
        }
        _ => {
            tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
        }
    }
    tls.flush().await?;
    let _ = tls.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_downloads_refuse_plain_http_redirects_and_stalls_resume_cuts_and_a_second_install_is_busy() {
    let _serial = SERIAL.lock().await;
    let w = World::new("").await;
    let (file, sha, sig) = w.update("0.2.0");
    let body = Arc::new(std::fs::read(&file).unwrap());
    let server = Https::start(&w.pki, body.clone()).await;
    let url_install = |url: String| json!({"action": "ota.install", "url": url, "sha256": sha, "signature": sig});

    let r = w.call(url_install(server.url("/to-http"))).await;
    println!("redirect to http: {r}");
    assert!(r["error"].as_str().unwrap().contains("refused a redirect"), "{r}");
    w.assert_untouched();

    let r = w
        .call(url_install(format!("http://localhost:{}/file", server.port)))
        .await;
    println!("plain http url: {r}");
    assert!(r["error"].as_str().unwrap().contains("only https"), "{r}");

    let r = w.call(url_install(server.url("/missing"))).await;
    println!("404: {r}");
    assert!(r["error"].as_str().unwrap().contains("404"), "{r}");
    w.assert_untouched();

    // A stalled download; meanwhile a second install is busy.
    let stalled = w.send(url_install(server.url("/stall"))).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w.state().join("staging/update.part").exists() {
        assert!(Instant::now() < deadline, "the download did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = w.call(json!({"action": "ota.status"})).await;
    println!("status while downloading: {}", status["answer"]["progress"]);
    assert_eq!(status["answer"]["progress"]["phase"], "downloading");
    assert!(status["answer"]["progress"]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        status["answer"]["progress"]["total"].as_u64().unwrap(),
        body.len() as u64
    );
    let busy = w.call(install(&file, &sha, &sig)).await;
    println!("second install meanwhile: {busy}");
    assert!(busy["error"].as_str().unwrap().starts_with("busy"), "{busy}");
    let r = w.result(&stalled, Duration::from_secs(40)).await;
    println!("stall: {r}");
    assert!(r["error"].as_str().unwrap().contains("stalled"), "{r}");
    w.assert_untouched();

    // Cut half way once: resumed with Range on a new connection, then installed.
    let before = server.connections.load(SeqCst);
    let rid = w.send(url_install(server.url("/cut-once"))).await;
    let r = w.result(&rid, Duration::from_secs(90)).await;
    println!(
        "cut once and resumed: {r} ({} connections)",
        server.connections.load(SeqCst) - before
    );
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        server.connections.load(SeqCst) - before >= 2,
        "resumed on a new connection"
    );
    assert_eq!(version_of(&w.binary), "0.2.0");
    assert!(w.log().contains("resuming"), "the cut was resumed");
}

// ----- RAUC -----

/// A slot image (bundles need some content: squashfs is larger than one block).
fn rootfs(version: &str) -> Vec<u8> {
    // 16 KiB that do not compress, the same for the same version.
    let mut bytes = format!("rootfs {version}\n").into_bytes();
    let mut block = Sha256::digest(version.as_bytes());
    for _ in 0..512 {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    bytes
}

/// RAUC path: a real bundle built and checked with Debian's `rauc`, signed for OTA like any
/// update, installed by the real binary over D-Bus into the RAUC stand-in (the one mock: real A/B
/// slots need a bootloader), "rebooted" by the test (the stand-in plays the bootloader, the test
/// restarts the process), marked good after health; a second update without a broker is marked
/// bad, and the bootloader falls back to the old slot, where the old version reports
/// update_failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rauc_bundles_install_over_dbus_mark_good_after_health_and_mark_bad_and_fall_back_without_it() {
    let _serial = SERIAL.lock().await;
    let base = tempfile::tempdir().unwrap();
    let bus = rauc_world::DbusDaemon::start(base.path());
    let keys = rauc_world::SigningKeys::new(base.path(), "release");
    let rauc = rauc_world::RaucStandIn::start(&bus.address, base.path(), "roadedge-cabinet", &keys.keyring).await;
    let rebooted = base.path().join("rebooted");
    let w = World::with_env(
        &format!(
            "  installer: rauc\n  reboot_command: [/bin/sh, -c, 'echo reboot >> {}']\n",
            rebooted.display()
        ),
        vec![("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address.clone())],
    )
    .await;
    let mut w = w;
    let sign = |bundle: &Path| {
        let bytes = std::fs::read(bundle).unwrap();
        let digest = Sha256::digest(&bytes);
        (
            hex::encode(digest),
            base64::engine::general_purpose::STANDARD.encode(w.key.sign(&digest).to_bytes()),
        )
    };
    let reboots = |n: usize| {
        let path = rebooted.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::fs::read_to_string(&path).map(|t| t.lines().count()).unwrap_or(0) < n {
                assert!(Instant::now() < deadline, "no reboot #{n}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // A bundle RAUC itself verifies.
    let bundle = rauc_world::build_bundle(base.path(), &keys, "roadedge-cabinet", "0.2.0", &rootfs("0.2.0"));
    let info = rauc_world::rauc_info(&bundle, &keys.keyring).expect("rauc info verifies the bundle");
    println!(
        "rauc info: compatible {} version {}",
        info["compatible"], info["version"]
    );
    let (sha, sig) = sign(&bundle);
    let rid = w.send(install(&bundle, &sha, &sig)).await;
    reboots(1).await;
    assert_eq!(rauc.slot("rootfs.1").state, "good");
    assert_eq!(std::fs::read(rauc.slot("rootfs.1").device).unwrap(), rootfs("0.2.0"));
    // The bootloader boots the new slot; the appliance starts there.
    rauc.reboot();
    assert_eq!(rauc.booted_bootname(), "B");
    w.supervisor.kill9();
    let result = w.result(&rid, Duration::from_secs(30)).await;
    println!("RAUC install: {result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["answer"]["installer"], "rauc");
    assert_eq!(result["answer"]["installed"], "0.2.0");
    let calls = rauc.calls();
    println!("stand-in calls: {calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("InstallBundle")), "{calls:?}");
    assert!(
        calls.iter().any(|c| c.contains("Mark") && c.contains("good")),
        "{calls:?}"
    );
    assert_eq!(w.binary_sha(), w.original_sha, "a RAUC update leaves the binary alone");

    // A second update whose system cannot reach the broker: marked bad, rebooted back.
    let bundle = rauc_world::build_bundle(base.path(), &keys, "roadedge-cabinet", "0.3.0", &rootfs("0.3.0"));
    let (sha, sig) = sign(&bundle);
    let rid = w.send(install(&bundle, &sha, &sig)).await;
    reboots(2).await;
    rauc.reboot();
    assert_eq!(rauc.booted_bootname(), "A");
    w.supervisor.hold.store(true, SeqCst);
    w.supervisor.kill9();
    w.broker.stop();
    let started = Instant::now();
    w.supervisor.hold.store(false, SeqCst);
    reboots(3).await;
    println!("marked bad and rebooting after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(CONFIRM_WITHIN_S + 5));
    assert_eq!(rauc.slot("rootfs.0").state, "bad");
    // The bootloader falls back to the other slot (B, the good 0.2.0).
    rauc.reboot();
    assert_eq!(rauc.booted_bootname(), "B");
    w.supervisor.kill9();
    w.broker.resume();
    let result = w.result(&rid, Duration::from_secs(30)).await;
    println!("RAUC rollback: {result}");
    assert_eq!(result["result"], "failed");
    assert!(result["error"].as_str().unwrap().contains("update_failed"), "{result}");
    w.cloud
        .wait_for("update_failed raised", Duration::from_secs(10), |m| {
            m.iter()
                .any(|m| m.topic == "edge/cab-1/alarm" && m.payload["alarm"] == "update_failed")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.results(&rid).len(), 1);
    assert!(rauc.calls().iter().any(|c| c.contains("Mark") && c.contains("bad")));
    w.supervisor.stop();
}

/// ProtectSystem=strict leaves the OTA paths writable: the staging area, uploads and journal
/// live in the state directory, the unit restarts the exit code a swap exits with, and the
/// documented binary location for swaps is inside the state directory too.
#[test]
fn the_unit_keeps_the_ota_paths_writable_under_protect_system_strict() {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/roadedge.service")).unwrap();
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")).map(str::to_string))
            .collect()
    };
    assert_eq!(value("ProtectSystem"), ["strict"]);
    assert_eq!(value("StateDirectory"), ["roadedge"]);
    assert_eq!(value("Restart"), ["on-failure"]);
    let code = roadedge::ops::ota::RESTART_EXIT_CODE.to_string();
    assert!(
        !value("RestartPreventExitStatus")
            .iter()
            .any(|v| v.split_whitespace().any(|c| c == code)),
        "exit {code} must restart"
    );
    assert!(
        unit.contains("/var/lib/roadedge/bin/roadedge"),
        "the unit documents where a swappable binary lives"
    );
    let config = roadedge::config::Config::parse(
        "edge: {id: cab}\nstorage: {path: /var/lib/roadedge/roadedge.db}\nuplink: {url: 'mqtt://localhost:1883'}\n\
         ota: {public_key_file: /etc/roadedge/ota.pub, binary_path: /var/lib/roadedge/bin/roadedge}\n",
        roadedge::config::FileCheck::Skip,
    )
    .unwrap();
    let s = roadedge::ops::ota::OtaSettings::new(config.ota.as_ref().unwrap(), &config.storage.path);
    assert_eq!(s.state_dir, Path::new("/var/lib/roadedge/ota"));
    assert!(s.previous_path().starts_with("/var/lib/roadedge/"));
}
