//! The cabinet binary for 64-bit ARM (scripts/cross-build) under `qemu-aarch64`: `--version`,
//! `check-config`, and a 20 s `run` fed by simulated GB/T 32960 vehicles (the host binary's
//! `sim gbt32960`) that publishes every real-time frame to a loopback mosquitto over mutual TLS.
//!
//! Ignored in a plain `cargo test` (it needs the cross build); scripts/test builds the binary and
//! runs these with `ROADEDGE_ARM_BINARY` set: `cargo test --test arm_qemu -- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, write_config, World};

/// The cross-built binary and the qemu that runs it.
struct Arm {
    binary: PathBuf,
    qemu: PathBuf,
}

impl Arm {
    fn new() -> Arm {
        let binary = PathBuf::from(
            std::env::var_os("ROADEDGE_ARM_BINARY")
                .expect("ROADEDGE_ARM_BINARY names the binary scripts/cross-build made"),
        );
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/cross-build",
            binary.display()
        );
        let qemu = ["/usr/bin/qemu-aarch64", "/usr/bin/qemu-aarch64-static"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("qemu-aarch64 is not installed (scripts/test installs qemu-user)");
        Arm { binary, qemu }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.qemu);
        // The target's dynamic loader and libc (Debian's libc6-arm64-cross).
        c.arg("-L").arg("/usr/aarch64-linux-gnu").arg(&self.binary);
        c
    }
}

#[test]
#[ignore = "needs the aarch64 build: scripts/test runs it"]
fn the_arm_binary_prints_its_version_and_target_under_qemu() {
    let arm = Arm::new();
    let out = arm.command().arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).unwrap();
    assert!(version.contains("aarch64-unknown-linux-gnu, release"), "{version}");
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

#[test]
#[ignore = "needs the aarch64 build: scripts/test runs it"]
fn the_arm_binary_checks_configurations_under_qemu() {
    let arm = Arm::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/roadedge.example.yaml");
    let out = arm
        .command()
        .args(["check-config", "--no-file-checks", "-c", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "edge: {id: 'not valid'}\nuplink: {url: 'mqtt://127.0.0.1:1'}\n").unwrap();
    let out = arm.command().args(["check-config", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("edge.id:"));
}

/// Waits for `child` to exit within `limit`; kills it otherwise.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the aarch64 build: scripts/test runs it"]
async fn the_arm_binary_runs_20_s_under_qemu_and_publishes_every_simulated_frame_to_mosquitto() {
    let arm = Arm::new();
    let (dir, pki, broker, cloud) = World::start("arm").await.into_parts();
    let gateway_port = free_port();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("gbt32960:\n  listen: 127.0.0.1:{gateway_port}\n"));
    std::fs::write(&config, text).unwrap();

    let out = arm
        .command()
        .args(["check-config", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let log = dir.path().join("edge-arm.log");
    let mut edge = arm
        .command()
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Emulation makes start-up slower than native; the wait is bounded all the same.
    let online = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let up = cloud
                .on_topic("edge/cab-1/status")
                .iter()
                .any(|m| m.payload["state"] == "online");
            if up && std::net::TcpStream::connect(("127.0.0.1", gateway_port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if online.is_err() {
        let _ = edge.kill();
        panic!("the ARM binary did not come online within 60 s:\n{}", log_tail(&log));
    }

    let started = Instant::now();
    let sim = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_roadedge"))
            .args(["sim", "gbt32960", "--addr"])
            .arg(format!("127.0.0.1:{gateway_port}"))
            .args([
                "--vehicles",
                "5",
                "--rate",
                "10",
                "--duration",
                "20s",
                "--ramp",
                "500ms",
            ])
            .output()
            .unwrap()
    });
    let sim = tokio::time::timeout(Duration::from_secs(60), sim)
        .await
        .expect("the simulator finished within 60 s")
        .unwrap();
    let summary = String::from_utf8_lossy(&sim.stdout).to_string();
    assert!(
        sim.status.success(),
        "{summary}\n{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    // The progress lines ("[    5s] ...") carry running counts; the final line
    // ("done in 20.0s: ...") carries the totals.
    let frames: usize = summary
        .lines()
        .find(|l| l.starts_with("done in "))
        .and_then(|l| l.split(" real-time frames").next())
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in the simulator's summary:\n{summary}"));
    assert!(frames >= 150, "about 10 frames/s for 20 s: {summary}");

    let infos = |m: &[common::Received]| {
        m.iter()
            .filter(|m| m.topic.starts_with("gbt32960/") && m.topic.ends_with("/upstream/info"))
            .count()
    };
    let delivered = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = infos(&cloud.messages.lock().unwrap());
            if n >= frames {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let Ok(delivered) = delivered else {
        let n = infos(&cloud.messages.lock().unwrap());
        let _ = edge.kill();
        panic!(
            "{n} of {frames} real-time frames reached the cloud:\n{}",
            log_tail(&log)
        );
    };
    let logins = cloud
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic.ends_with("/upstream/vlogin"))
        .count();
    assert!(logins >= 5, "every vehicle's login was published: {logins}");
    eprintln!(
        "arm under qemu: {frames} frames sent, {delivered} info messages published in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // SIGTERM reaches the emulated process; it drains and exits 0 within the contract's 10 s.
    let _ = Command::new("kill").arg("-TERM").arg(edge.id().to_string()).status();
    let code = wait_exit(&mut edge, Duration::from_secs(15));
    assert_eq!(code, Some(0), "graceful exit under qemu:\n{}", log_tail(&log));
    drop(broker);
}
