//! `roadedge demo` as a new user runs it: the real binary, its output piped, nothing set up
//! beforehand. Every line it prints is tried: the web page and its password, the state directory
//! and configuration, the broker, and each printed `mosquitto_sub`/`mosquitto_pub` command, run
//! through `sh` exactly as printed (`scripts/test` installs `mosquitto-clients`). The cloud must
//! see real protocol traffic, and closing the demo's stdout (as `| head` does) must end it
//! cleanly, without a panic.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// The command after `label:` in the demo's output.
fn printed<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix(label)
                .map(|rest| rest.trim_start_matches([' ', ':']).trim())
        })
        .unwrap_or_else(|| panic!("the demo printed no `{label}` line: {lines:#?}"))
}

/// Runs a shell command line with a time limit; returns (success, stdout).
fn sh(line: &str, limit: Duration) -> (bool, String) {
    let child = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .args(["sh", "-c", line])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let out = child.wait_with_output().expect("sh output");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The `--cafile ... --key FILE` options of a printed mosquitto line, and its host and port.
fn broker_options(line: &str) -> String {
    let start = line.find("-h ").expect("-h in the line");
    let end = line.find(" -t ").expect("-t in the line");
    line[start..end].to_string()
}

fn mosquitto_client(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn every_line_the_demo_prints_works_when_tried_as_printed() {
    assert!(
        mosquitto_client("mosquitto_sub") && mosquitto_client("mosquitto_pub"),
        "mosquitto-clients is not installed (scripts/test installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let stderr_path = dir.path().join("demo.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_roadedge"))
        .args(["demo", "--duration", "300s", "--web", "127.0.0.1:0", "--dir"])
        .arg(&state)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start the demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Read until told to stop, then drop the pipe (as `| head` does).
        while let Ok(n) = stdout.read_line(&mut line) {
            if n == 0 || tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while !lines.iter().any(|l| l.trim_start().starts_with("stop")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l.trim_end().to_string()),
            Err(_) => panic!("the demo's banner did not complete: {lines:#?}"),
        }
    }

    // The web page, and the password printed with it.
    let web = printed(&lines, "web page");
    let url = web.split_whitespace().next().unwrap();
    let password = web.rsplit("password ").next().unwrap().trim_end_matches(')');
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut c = common::web::Client::new(addr);
        let page = c.get("/").await;
        assert_eq!(page.status, 200);
        assert!(String::from_utf8_lossy(&page.body).contains("app.js"));
        assert_eq!(
            c.login("admin", password).await.status,
            200,
            "the printed password logs in"
        );
        let deadline = Instant::now() + LIMIT;
        loop {
            let status = c.get("/api/status").await.json();
            if status["uplink"]["connected"] == true && status["readers"].as_array().is_some_and(|r| r.len() == 4) {
                break;
            }
            assert!(Instant::now() < deadline, "the demo's appliance came up: {status}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    // The state directory and the configuration (valid as written).
    assert!(std::path::Path::new(printed(&lines, "state directory")).is_dir());
    let config = printed(&lines, "configuration");
    let check = Command::new(env!("CARGO_BIN_EXE_roadedge"))
        .args(["check-config", "-c", config])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // The broker address.
    let broker = printed(&lines, "cloud broker");
    let host_port = broker.split_whitespace().next().unwrap().trim_start_matches("mqtts://");
    assert!(host_port.starts_with("localhost:"), "{broker}");
    assert!(std::net::TcpStream::connect(host_port).is_ok());

    // `watch the uplink`, as printed (plus a message count so it ends): real protocol traffic.
    let watch = printed(&lines, "watch the uplink");
    assert!(watch.contains("-h localhost"), "{watch}");
    let (ok, seen) = sh(&format!("{watch} -C 60 -W 30"), Duration::from_secs(40));
    assert!(ok, "the printed mosquitto_sub line works: {seen}");
    for family in ["gbt37987/", "jt808/", "gbt32960/"] {
        assert!(
            seen.lines().any(|l| l.starts_with(family)),
            "{family} traffic in: {seen}"
        );
    }
    assert!(
        !seen.lines().any(|l| l.starts_with("sim/")),
        "no synthetic source in the demo"
    );

    // Each printed mosquitto_pub line ends in its result on the response topic.
    let options = broker_options(watch);
    for (label, response_topic, request_id) in [
        ("send a command", "edge/demo-cabinet/cmd/result", "\"request_id\":\"1\""),
        ("start a rule", "gbt37987/north/up/response", "\"request_id\":\"r1\""),
    ] {
        let publish = printed(&lines, label);
        assert!(
            publish.starts_with("mosquitto_pub") && publish.contains("-h localhost"),
            "{publish}"
        );
        let listen = format!("mosquitto_sub {options} -t '{response_topic}' -C 1 -W 30");
        let results = std::thread::spawn(move || sh(&listen, Duration::from_secs(40)));
        std::thread::sleep(Duration::from_millis(800));
        let (ok, out) = sh(publish, Duration::from_secs(20));
        assert!(ok, "`{label}` works as printed: {out}");
        let (ok, result) = results.join().unwrap();
        assert!(
            ok && result.contains(request_id) && result.contains("\"ok\":true"),
            "{label}: {result}"
        );
    }
    let jt808 = printed(&lines, "JT/T 808");
    let query = &jt808[jt808.find("mosquitto_pub").expect("a query line")..];
    let listen = format!("mosquitto_sub {options} -t 'jt808/013900000000/013900000000/up' -W 30 | grep -m1 q1");
    let results = std::thread::spawn(move || sh(&listen, Duration::from_secs(40)));
    std::thread::sleep(Duration::from_millis(800));
    let (ok, out) = sh(query, Duration::from_secs(20));
    assert!(ok, "the JT/T 808 query works as printed: {out}");
    let (ok, result) = results.join().unwrap();
    assert!(ok && result.contains("\"ok\":true"), "{result}");

    // The cloud line shows the protocols' traffic.
    let deadline = Instant::now() + LIMIT;
    while !lines.iter().any(|l| l.starts_with("cloud:") && l.contains("gbt37987")) {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(rx.recv_timeout(left).expect("a cloud line").trim_end().to_string());
    }

    // The scripted traffic: passages of tagged vehicles with their telemetry, and both frauds.
    let deadline = Instant::now() + Duration::from_secs(150);
    let fused = |lines: &[String]| {
        lines
            .iter()
            .any(|l| l.starts_with("passage ") && l.contains("anomalies []") && l.contains(" m away"))
            && lines.iter().any(|l| l.starts_with("ALARM missing_tag raised"))
            && lines.iter().any(|l| l.starts_with("ALARM cloned_tag raised"))
            && lines
                .iter()
                .any(|l| l.starts_with("passage ") && l.contains("match telemetry_only") && l.contains("missing_tag"))
    };
    while !fused(&lines) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l.trim_end().to_string()),
            Err(_) => panic!("the demo printed no passages and fusion alarms: {lines:#?}"),
        }
    }

    // Closing stdout, as `| head` does, ends the demo cleanly.
    drop(rx);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the demo kept running after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes in piped output");
    assert!(status.success(), "{status:?}: {stderr}");
}
