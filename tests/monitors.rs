//! The edge's own alarms end to end, published through a real mosquitto with mutual TLS on
//! `edge/{id}/alarm`: `reader_offline` (a simulated reader stops and comes back), `cert_expiry`
//! (certificates generated to expire within 30 days, then replaced by longer ones), `clock_jump`
//! (the wall clock of the real binary moved with libfaketime, the monotonic clock left alone) and
//! `disk_low` (the store on a small tmpfs that a filler file fills). Each condition raises once
//! and clears once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::disk::SmallDisk;
use common::*;
use roadedge::protocol::gbt37987::Dialect;
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

/// The test world's configuration with checks every 500 ms, plus `extra` sections.
fn config(dir: &Path, pki: &Pki, broker: &Mosquitto, extra: &str) -> PathBuf {
    let path = write_config(dir, pki, &broker.url(), "", "64MiB");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("edge: {id: cab-1}", "edge: {id: cab-1, monitor_interval: 500ms}");
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    path
}

/// The alarm records named `name` whose detail's `key` is `value`, as `(state, detail)`.
fn alarms(cloud: &Cloud, name: &str, key: &str, value: &str) -> Vec<(String, Value)> {
    cloud
        .on_topic("edge/cab-1/alarm")
        .into_iter()
        .filter(|m| m.payload["alarm"] == name && m.payload["detail"][key] == value)
        .map(|m| {
            (
                m.payload["state"].as_str().unwrap_or("").to_string(),
                m.payload["detail"].clone(),
            )
        })
        .collect()
}

async fn wait_state(cloud: &Cloud, name: &str, key: &str, value: &str, state: &str, n: usize) {
    let (name_, key_, value_, state_) = (name.to_string(), key.to_string(), value.to_string(), state.to_string());
    cloud
        .wait_for(&format!("{name} {state} for {value}"), LIMIT, move |m| {
            m.iter()
                .filter(|m| {
                    m.topic == "edge/cab-1/alarm"
                        && m.payload["alarm"] == name_.as_str()
                        && m.payload["detail"][key_.as_str()] == value_.as_str()
                        && m.payload["state"] == state_.as_str()
                })
                .count()
                >= n
        })
        .await;
}

fn states(records: &[(String, Value)]) -> Vec<&str> {
    records.iter().map(|(s, _)| s.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_down_longer_than_offline_after_raises_reader_offline_once_and_it_clears_once_when_back() {
    let (dir, pki, broker, cloud) = World::start("monitors-reader").await.into_parts();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sim = |stop: CancellationToken| {
        let options = SimReaderOptions::new(*b"MONITOR1", Dialect::Gbt37987_2019, SimMode::Listen(addr));
        SimReader::spawn(options, stop)
    };
    let first = CancellationToken::new();
    let reader = sim(first.clone()).await.unwrap();
    let path = config(
        dir.path(),
        &pki,
        &broker,
        &format!(
            "readers:\n  keepalive_interval: 1s\n  offline_after: 2s\n  devices:\n    - {{id: gate, tcp: '{addr}'}}\n"
        ),
    );
    let edge = start_appliance(&path).await;
    cloud.wait_edge_online().await;
    let deadline = Instant::now() + LIMIT;
    while !reader.is_connected() {
        assert!(Instant::now() < deadline, "the edge did not reach the reader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        alarms(&cloud, "reader_offline", "reader", "gate").is_empty(),
        "raised while the reader was up"
    );

    first.cancel();
    let stopped = Instant::now();
    wait_state(&cloud, "reader_offline", "reader", "gate", "raised", 1).await;
    let after = stopped.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "raised {after:?} after the reader stopped"
    );
    let raised = alarms(&cloud, "reader_offline", "reader", "gate");
    assert!(raised[0].1["down_s"].as_u64().unwrap() >= 2, "{raised:?}");
    assert_eq!(raised[0].1["offline_after_s"], 2);

    let second = CancellationToken::new();
    let _back = sim(second.clone()).await.unwrap();
    wait_state(&cloud, "reader_offline", "reader", "gate", "cleared", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = alarms(&cloud, "reader_offline", "reader", "gate");
    assert_eq!(states(&records), ["raised", "cleared"], "{records:?}");
    assert!(!edge.alarms.is_active("reader_offline", "gate"));
    second.cancel();
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_within_thirty_days_raise_cert_expiry_and_a_renewed_file_clears_it() {
    let (dir, pki, broker, cloud) = World::start("monitors-cert").await.into_parts();
    // The edge's client certificate (same CA as the broker's) expires in 10 days; the JT/T 808
    // server certificate in 3; the web page's in a year.
    let now = time::OffsetDateTime::now_utc();
    let edge_ca = &pki.issuer;
    let client = edge_ca
        .issue_valid_until("short-edge", "cab-1", false, now + time::Duration::days(10))
        .unwrap();
    let jt808 = edge_ca
        .issue_valid_until("short-jt808", "localhost", true, now + time::Duration::days(3))
        .unwrap();
    let web = edge_ca
        .issue_valid_until("long-web", "localhost", true, now + time::Duration::days(365))
        .unwrap();
    let hash = roadedge::web::auth::hash_password("pw").unwrap();
    let path = write_config_with_client(dir.path(), &pki, &broker, &client.cert, &client.key);
    let mut text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("edge: {id: cab-1}", "edge: {id: cab-1, monitor_interval: 500ms}");
    text.push_str(&format!(
        "jt808:\n  listen: 127.0.0.1:{}\n  tls: {{cert_file: {}, key_file: {}}}\nweb:\n  listen: 127.0.0.1:0\n  tls: {{cert_file: {}, key_file: {}}}\n  users: [{{name: admin, role: admin, password_hash: '{hash}'}}]\n",
        free_port(),
        jt808.cert.display(),
        jt808.key.display(),
        web.cert.display(),
        web.key.display(),
    ));
    std::fs::write(&path, text).unwrap();
    let edge = start_appliance(&path).await;
    cloud.wait_edge_online().await;
    let client_file = client.cert.display().to_string();
    let jt808_file = jt808.cert.display().to_string();
    let web_file = web.cert.display().to_string();
    wait_state(&cloud, "cert_expiry", "file", &client_file, "raised", 1).await;
    wait_state(&cloud, "cert_expiry", "file", &jt808_file, "raised", 1).await;
    let raised = alarms(&cloud, "cert_expiry", "file", &client_file);
    let detail = &raised[0].1;
    assert!(detail["days_left"] == 9 || detail["days_left"] == 10, "{detail}");
    assert_eq!(detail["expired"], false);
    let not_after = roadedge::time::parse_rfc3339_ms(detail["not_after"].as_str().unwrap()).unwrap();
    let expected = (now + time::Duration::days(10)).unix_timestamp() * 1000;
    assert!((not_after - expected).abs() <= 1000, "{detail}");

    // Renewed: the same file now holds a certificate valid for a year.
    edge_ca
        .issue_valid_until("short-edge", "cab-1", false, now + time::Duration::days(365))
        .unwrap();
    wait_state(&cloud, "cert_expiry", "file", &client_file, "cleared", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        states(&alarms(&cloud, "cert_expiry", "file", &client_file)),
        ["raised", "cleared"]
    );
    assert_eq!(
        states(&alarms(&cloud, "cert_expiry", "file", &jt808_file)),
        ["raised"],
        "the JT/T 808 certificate was not renewed"
    );
    assert!(alarms(&cloud, "cert_expiry", "file", &web_file).is_empty());
    assert!(edge.alarms.is_active("cert_expiry", &jt808_file));
    edge.stop().await;
}

/// `write_config` with the uplink's client certificate replaced.
fn write_config_with_client(dir: &Path, pki: &Pki, broker: &Mosquitto, cert: &Path, key: &Path) -> PathBuf {
    let path = write_config(dir, pki, &broker.url(), "", "64MiB");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&pki.edge.cert.display().to_string(), &cert.display().to_string())
        .replace(&pki.edge.key.display().to_string(), &key.display().to_string());
    std::fs::write(&path, text).unwrap();
    path
}

/// libfaketime's preload library, where Debian's `libfaketime` puts it.
fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
}

/// The binary under test; ended (and its log shown when the test failed) when dropped.
struct Edge {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Edge {
    #[allow(clippy::print_stdout, reason = "a failed test shows the binary's log")]
    fn drop(&mut self) {
        terminate(&mut self.child);
        if std::thread::panicking() {
            println!(
                "roadedge log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Ends the child with SIGTERM (the graceful path), or SIGKILL when it does not stop in time.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout, reason = "a skipped test says why in the test output")]
async fn a_wall_clock_jump_of_the_running_binary_raises_clock_jump_once_and_it_clears_once_stable() {
    let Some(faketime) = libfaketime() else {
        println!("SKIPPED: libfaketime is not installed (scripts/test installs the Debian package libfaketime)");
        return;
    };
    let (dir, pki, broker, cloud) = World::start("monitors-clock").await.into_parts();
    let path = config(dir.path(), &pki, &broker, "");
    let offset = dir.path().join("faketime.offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let log = dir.path().join("edge.log");
    let child = Command::new(env!("CARGO_BIN_EXE_roadedge"))
        .args(["run", "-c"])
        .arg(&path)
        .env("LD_PRELOAD", &faketime)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start roadedge under libfaketime");
    let _edge = Edge { child, log };
    cloud.wait_edge_online().await;
    // Several checks without a jump first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .all(|m| m.payload["alarm"] != "clock_jump"));
    // The wall clock steps two hours ahead (an NTP step, an RTC reset).
    std::fs::write(&offset, "+7200\n").unwrap();
    let clock_jump = |cloud: &Cloud| -> Vec<Value> {
        cloud
            .on_topic("edge/cab-1/alarm")
            .into_iter()
            .filter(|m| m.payload["alarm"] == "clock_jump")
            .map(|m| m.payload)
            .collect()
    };
    cloud
        .wait_for("clock_jump raised", LIMIT, |m| {
            m.iter()
                .any(|m| m.payload["alarm"] == "clock_jump" && m.payload["state"] == "raised")
        })
        .await;
    let raised = clock_jump(&cloud);
    let delta = raised[0]["detail"]["delta_ms"].as_i64().unwrap();
    assert!((delta - 7_200_000).abs() < 5_000, "{raised:?}");
    assert_eq!(raised[0]["detail"]["threshold_ms"], 60_000);
    // Stable again: cleared after 6 checks (3 s) without a jump.
    cloud
        .wait_for("clock_jump cleared", LIMIT, |m| {
            m.iter()
                .any(|m| m.payload["alarm"] == "clock_jump" && m.payload["state"] == "cleared")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<String> = clock_jump(&cloud)
        .iter()
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(all, ["raised", "cleared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_file_system_under_disk_low_bytes_raises_disk_low_once_and_it_clears_once_space_returns() {
    let Some(disk) = SmallDisk::mount("32m") else { return };
    let (dir, pki, broker, cloud) = World::start("monitors-disk").await.into_parts();
    let path = write_config(dir.path(), &pki, &broker.url(), "", "8MiB");
    let db = disk.dir.join("edge.db");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("path: {}, max_bytes: 8MiB", dir.path().join("edge.db").display()),
        &format!(
            "path: {}, max_bytes: 8MiB, reserve_bytes: 256KiB, disk_low_bytes: 8MiB",
            db.display()
        ),
    );
    assert!(text.contains("disk_low_bytes"), "{text}");
    std::fs::write(&path, text).unwrap();
    let edge = start_appliance(&path).await;
    cloud.wait_edge_online().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let disk_low = |cloud: &Cloud| -> Vec<String> {
        cloud
            .on_topic("edge/cab-1/alarm")
            .into_iter()
            .filter(|m| m.payload["alarm"] == "disk_low")
            .map(|m| m.payload["state"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(disk_low(&cloud).is_empty(), "raised with {} bytes free", disk.free());
    // A filler leaves about 4 MiB free: under disk_low_bytes, above the full-disk guard.
    let filler = disk.dir.join("filler");
    let size = disk.free().saturating_sub(4 << 20);
    std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
    cloud
        .wait_for("disk_low raised", LIMIT, |m| {
            m.iter()
                .any(|m| m.payload["alarm"] == "disk_low" && m.payload["state"] == "raised")
        })
        .await;
    let raised = cloud
        .on_topic("edge/cab-1/alarm")
        .into_iter()
        .find(|m| m.payload["alarm"] == "disk_low")
        .unwrap()
        .payload;
    assert!(raised["detail"]["free_bytes"].as_u64().unwrap() < 8 << 20, "{raised}");
    assert_eq!(raised["detail"]["disk_low_bytes"], 8 << 20);
    std::fs::remove_file(&filler).unwrap();
    cloud
        .wait_for("disk_low cleared", LIMIT, |m| {
            m.iter()
                .any(|m| m.payload["alarm"] == "disk_low" && m.payload["state"] == "cleared")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(disk_low(&cloud), ["raised", "cleared"]);
    assert!(cloud
        .on_topic("edge/cab-1/alarm")
        .iter()
        .all(|m| m.payload["alarm"] != "disk_full"));
    edge.stop().await;
}
