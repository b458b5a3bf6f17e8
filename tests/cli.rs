//! The command line from outside: exit codes and messages of CONTRACT section 1.

use std::io::Write;
use std::process::{Command, Stdio};

use roadedge::config::{Config, FileCheck};

fn roadedge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roadedge"))
}

#[test]
fn the_example_configuration_is_complete_and_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/roadedge.example.yaml");
    let config = Config::load(path.as_ref(), FileCheck::Skip).unwrap_or_else(|e| panic!("{e}"));
    // Every section of CONTRACT 2 is present in the reference.
    assert!(config.gbt32960.is_some() && config.jt808.is_some() && config.readers.is_some());
    assert!(config.web.is_some() && config.ota.is_some() && config.edge.site.is_some());
    assert_eq!(config.schedule.len(), 6);
    // With file checks on, the only complaints are the certificate and key files of a real cabinet.
    let errors = Config::load(path.as_ref(), FileCheck::Check).unwrap_err().0;
    assert!(
        errors.iter().all(|e| e.message.contains("does not exist")),
        "{errors:?}"
    );
}

#[test]
fn check_config_prints_every_mistake_with_its_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "edge: {id: 'cabinet 1'}\nuplink: {url: 'http://cloud:8883', keep_alive: 30 seconds}\nreaders:\n  devices:\n    - {id: r1, tcp: 'nowhere'}\n",
    )
    .unwrap();
    let out = roadedge().args(["check-config", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for path in [
        "edge.id:",
        "uplink.url:",
        "uplink.keep_alive:",
        "readers.devices[0].tcp:",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(path)),
            "{path} missing in:\n{stdout}"
        );
    }
}

#[test]
fn check_config_no_file_checks_passes_the_example_that_names_absent_certificates_but_not_other_mistakes() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/roadedge.example.yaml");
    let out = roadedge().args(["check-config", "-c", example]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "the example names a cabinet's certificates");
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not exist"));
    let out = roadedge()
        .args(["check-config", "--no-file-checks", "-c", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "edge: {id: cab-1}\nuplink: {url: 'mqtts://cloud:8883', ca_file: /nowhere/ca.pem, keep_alive: soon}\n",
    )
    .unwrap();
    let out = roadedge()
        .args(["check-config", "--no-file-checks", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.lines().any(|l| l.starts_with("uplink.keep_alive:")), "{stdout}");
    assert!(!stdout.contains("uplink.ca_file"), "{stdout}");
}

#[test]
fn check_config_accepts_a_valid_file_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, "edge: {id: cab-1}\nuplink: {url: 'mqtt://127.0.0.1:1883'}\n").unwrap();
    let out = roadedge().args(["check-config", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn config_path_falls_back_to_the_environment_variable() {
    let out = roadedge()
        .arg("check-config")
        .env("ROADEDGE_CONFIG", "/nonexistent/roadedge.yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/roadedge.yaml"));
}

#[test]
fn run_with_an_invalid_config_exits_2_and_bad_usage_exits_2() {
    let out = roadedge().args(["run", "-c", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = roadedge().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn version_names_the_build() {
    let out = roadedge().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("linux"),
        "{text}"
    );
}

#[test]
fn passwd_prints_an_argon2id_hash_that_verifies_and_the_config_accepts() {
    use argon2::{PasswordHash, PasswordVerifier};
    let mut child = roadedge()
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let parsed = PasswordHash::new(&hash).unwrap();
    assert!(argon2::Argon2::default()
        .verify_password(b"correct horse", &parsed)
        .is_ok());
    assert!(argon2::Argon2::default().verify_password(b"wrong", &parsed).is_err());
    let yaml = format!("edge: {{id: a}}\nuplink: {{url: 'mqtt://h:1'}}\nweb: {{users: [{{name: admin, password_hash: '{hash}', role: admin}}]}}\n");
    assert!(Config::parse(&yaml, FileCheck::Skip).is_ok());
}

#[test]
fn sigterm_stops_the_daemon_gracefully_within_10_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    // Nothing listens on this port: the uplink keeps retrying, shutdown must not wait for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "edge: {{id: cab-1}}\nstorage: {{path: {}}}\nuplink: {{url: 'mqtt://127.0.0.1:{port}'}}\n",
            dir.path().join("x.db").display()
        ),
    )
    .unwrap();
    let mut child = roadedge()
        .args(["run", "-c"])
        .arg(&path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
