//! The web API against CONTRACT 6, over real loopback sockets: the appliance in process with a
//! real mosquitto (mutual TLS), a simulated GB/T 37987 reader the edge dials, a simulated JT/T 808
//! terminal, and the web server on an ephemeral port. Every rule of CONTRACT 6 has its test
//! (401, 403 without or with a wrong CSRF token, 413, 400, 429, viewer read-only, logout), plus
//! the attacks of issue 9 (paths with `..`, slow-loris, 1,000 parallel requests) and the "two
//! doors" proof: a write from the page reaches the same command-plane function as the matching
//! MQTT command, so both leave the same result record on the same response topic.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::web::{Client, Response};
use common::{Cloud, Mosquitto, RunningAppliance};
use roadedge::protocol::gbt37987::Dialect;
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const ADMIN: (&str, &str) = ("admin", "correct horse");
const VIEWER: (&str, &str) = ("watcher", "look only");
const LIMIT: Duration = Duration::from_secs(30);

use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
use ed25519_dalek::Signer;
use sha2::Digest;

/// The release key of the test world's updates.
fn ota_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[3u8; 32])
}

struct World {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    cloud: Cloud,
    app: RunningAppliance,
    reader: SimReader,
    web: std::net::SocketAddr,
    ca_file: std::path::PathBuf,
    stop: CancellationToken,
}

impl World {
    async fn start(tls: bool) -> World {
        World::start_with(tls, false).await
    }

    /// With `fusion:` (and the site it needs): window 1 s, merge window 500 ms.
    async fn start_fusion() -> World {
        World::start_with(false, true).await
    }

    async fn start_with(tls: bool, fusion: bool) -> World {
        roadedge::ops::logging::init("info,rumqttc=warn");
        let (dir, pki, broker, cloud) = common::World::start(&format!("cloud-web-{}", common::free_port()))
            .await
            .into_parts();
        let stop = CancellationToken::new();
        let mut options = SimReaderOptions::new(
            *b"WEBTEST1",
            Dialect::Gbt37987_2019,
            SimMode::Listen("127.0.0.1:0".parse().unwrap()),
        );
        options.report_interval = Duration::from_millis(300);
        let reader = SimReader::spawn(options, stop.clone()).await.unwrap();
        let reader_addr = reader.local_addr.unwrap();
        let jt808_port = common::free_port();
        let hash = |p: &str| roadedge::web::auth::hash_password(p).unwrap();
        let tls_section = if tls {
            format!(
                "  tls: {{cert_file: {}, key_file: {}}}\n",
                pki.broker.cert.display(),
                pki.broker.key.display()
            )
        } else {
            String::new()
        };
        let extra = format!(
            "jt808: {{listen: '127.0.0.1:{jt808_port}'}}\nreaders:\n  keepalive_interval: 1s\n  devices:\n    - {{id: gate, tcp: '{reader_addr}'}}\n\
             web:\n  listen: 127.0.0.1:0\n{tls_section}  users:\n    - {{name: {}, role: admin, password_hash: '{}'}}\n    - {{name: {}, role: viewer, password_hash: '{}'}}\n",
            ADMIN.0,
            hash(ADMIN.1),
            VIEWER.0,
            hash(VIEWER.1),
        );
        let config = common::write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&extra);
        if fusion {
            text = text.replace(
                "edge: {id: cab-1}",
                "edge: {id: cab-1, site: {name: web site, latitude: 31.2304, longitude: 121.4737}}",
            );
            text.push_str("fusion: {window: 1s, merge_window: 500ms}\n");
        }
        // Updates: signed by OTA_KEY, at most 1 MiB (so an oversized upload is cheap).
        let ota_pub = dir.path().join("ota.pub");
        std::fs::write(
            &ota_pub,
            ota_key().verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
        )
        .unwrap();
        text.push_str(&format!(
            "ota: {{public_key_file: {}, binary_path: {}, installer: binary, max_bytes: 1MiB}}\n",
            ota_pub.display(),
            dir.path().join("bin/roadedge").display()
        ));
        std::fs::write(&config, text).unwrap();
        let app = common::start_appliance(&config).await;
        let web = app.web.expect("the web page is served");
        let terminals = roadedge::sim::jt808::SimOptions {
            server: format!("127.0.0.1:{jt808_port}"),
            terminals: 1,
            rate: 1.0,
            ..Default::default()
        };
        tokio::spawn(roadedge::sim::jt808::run(
            terminals,
            Arc::new(roadedge::sim::jt808::SimStats::default()),
            stop.clone(),
        ));
        cloud.wait_edge_online().await;
        World {
            _dir: dir,
            _broker: broker,
            cloud,
            app,
            reader,
            web,
            ca_file: pki.ca_file.clone(),
            stop,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.web)
    }

    async fn admin(&self) -> Client {
        let mut c = self.client();
        assert_eq!(c.login(ADMIN.0, ADMIN.1).await.status, 200);
        c
    }

    async fn stop(self) {
        self.stop.cancel();
        self.app.stop().await;
    }

    /// Waits for the command result with `request_id` on `topic`.
    async fn result_on(&self, topic: &str, request_id: &str) -> Value {
        let rid = request_id.to_string();
        let t = topic.to_string();
        self.cloud
            .wait_for(&format!("result {request_id} on {topic}"), LIMIT, move |m| {
                m.iter()
                    .any(|m| m.topic == t && m.payload["request_id"] == rid.as_str())
            })
            .await;
        self.cloud
            .on_topic(topic)
            .into_iter()
            .find(|m| m.payload["request_id"] == request_id)
            .unwrap()
            .payload
    }
}

fn assert_error_says_what_to_do(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    assert!(body["hint"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

#[tokio::test]
async fn contract_6_rules_hold_for_every_route() {
    let w = World::start(false).await;
    let anon = w.client();

    // healthz without a session; the page itself without a session, with strict headers.
    let health = anon.get("/healthz").await;
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    let page = anon.get("/").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    for part in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "{csp}");
    }
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    // 401: every API route without a session.
    for path in [
        "/api/status",
        "/api/readers",
        "/api/overview",
        "/api/logs",
        "/api/session",
    ] {
        assert_error_says_what_to_do(&anon.get(path).await, 401);
    }
    assert_error_says_what_to_do(&anon.post("/api/logout", &json!({})).await, 401);

    // Login: wrong password and unknown user 401; right one 200 with the cookie's flags.
    let mut c = w.client();
    assert_error_says_what_to_do(&c.login(ADMIN.0, "wrong").await, 401);
    assert_error_says_what_to_do(&c.login("nobody", ADMIN.1).await, 401);
    let ok = c.login(ADMIN.0, ADMIN.1).await;
    assert_eq!(ok.status, 200);
    assert!(ok.json()["csrf_token"].as_str().is_some_and(|t| t.len() == 64));
    let cookie = ok.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "no Secure without TLS: {cookie}");

    // GET /api/status has the contract's keys.
    let status = c.get("/api/status").await.json();
    for k in ["edge_id", "version", "uptime_s", "uplink", "readers", "vehicles"] {
        assert!(status.get(k).is_some(), "{k}: {status}");
    }
    for k in ["connected", "backlog_rows", "backlog_bytes", "oldest_unsent_age_s"] {
        assert!(status["uplink"].get(k).is_some(), "{k}");
    }
    assert!(status["vehicles"].get("gbt32960").is_some() && status["vehicles"].get("jt808").is_some());

    // 403: a non-GET without the CSRF token, or with a forged one.
    let ping = serde_json::to_vec(&json!({"action": "ping"})).unwrap();
    let mut no_csrf = c.clone();
    no_csrf.csrf = None;
    assert_error_says_what_to_do(&no_csrf.send("POST", "/api/edge/command", Some(&ping), &[]).await, 403);
    let forged = c
        .send(
            "POST",
            "/api/edge/command",
            Some(&ping),
            &[("X-CSRF-Token", &"0".repeat(64))],
        )
        .await;
    assert_error_says_what_to_do(&forged, 403);
    // Another session's token is no good either.
    let other = w.admin().await;
    let crossed = c
        .send(
            "POST",
            "/api/edge/command",
            Some(&ping),
            &[("X-CSRF-Token", other.csrf.as_deref().unwrap())],
        )
        .await;
    assert_error_says_what_to_do(&crossed, 403);
    let answered = c.send("POST", "/api/edge/command", Some(&ping), &[]).await;
    assert_eq!(answered.status, 200, "{:?}", answered.json());
    assert_eq!(answered.json()["answer"]["pong"], true);

    // 400: bad JSON, with a message.
    let bad = c.send("POST", "/api/edge/command", Some(b"{\"action\": "), &[]).await;
    assert_error_says_what_to_do(&bad, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("not valid JSON"));
    let not_object = c.send("POST", "/api/edge/command", Some(b"[1,2]"), &[]).await;
    assert_error_says_what_to_do(&not_object, 400);

    // 413: a 10 MB body, announced or chunked.
    let big = vec![b' '; 10 << 20];
    assert_error_says_what_to_do(&c.send("POST", "/api/edge/command", Some(&big), &[]).await, 413);
    let chunked = chunked_post(&c, "/api/edge/command", 10 << 20).await;
    assert_eq!(chunked.status, 413, "{:?}", String::from_utf8_lossy(&chunked.body));

    // Viewer: reads, but no write.
    let mut viewer = w.client();
    assert_eq!(viewer.login(VIEWER.0, VIEWER.1).await.json()["role"], "viewer");
    assert_eq!(viewer.get("/api/readers").await.status, 200);
    assert_error_says_what_to_do(&viewer.post("/api/edge/command", &json!({"action": "ping"})).await, 403);
    assert_error_says_what_to_do(
        &viewer
            .post(
                "/api/readers/gate/command",
                &json!({"action": "start_rule", "spec_id": 1}),
            )
            .await,
        403,
    );

    // Logout ends the session; its cookie and token (replayed) are refused afterwards.
    assert_eq!(c.post("/api/logout", &json!({})).await.status, 200);
    assert_error_says_what_to_do(&c.get("/api/status").await, 401);
    assert_error_says_what_to_do(&c.post("/api/edge/command", &json!({"action": "ping"})).await, 401);

    // Every refusal was counted.
    let web = &w.app.metrics.web;
    use std::sync::atomic::Ordering::Relaxed;
    assert!(web.unauthorized_total.load(Relaxed) >= 8);
    assert!(web.forbidden_total.load(Relaxed) >= 5);
    assert!(web.bad_request_total.load(Relaxed) >= 2);
    assert!(web.too_large_total.load(Relaxed) >= 2);
    w.stop().await;
}

/// POSTs `size` bytes with chunked transfer encoding (no Content-Length).
async fn chunked_post(c: &Client, path: &str, size: usize) -> Response {
    use tokio::io::AsyncWriteExt;
    let mut s = c.connect().await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: roadedge_session={}\r\nX-CSRF-Token: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        c.cookie.as_deref().unwrap_or(""),
        c.csrf.as_deref().unwrap_or("")
    );
    let _ = s.write_all(head.as_bytes()).await;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if tokio::time::timeout(Duration::from_secs(5), s.write_all(&frame))
            .await
            .map_or(true, |r| r.is_err())
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    common::web::read_response(&mut s).await
}

#[tokio::test]
async fn five_failed_logins_from_one_address_block_it_for_a_minute_and_only_it() {
    let w = World::start(false).await;
    let mut attacker = w.client().from("127.0.0.2");
    for _ in 0..5 {
        assert_eq!(attacker.login(ADMIN.0, "guess").await.status, 401);
    }
    let blocked = attacker.login(ADMIN.0, ADMIN.1).await;
    assert_error_says_what_to_do(&blocked, 429);
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another address logs in as usual.
    let mut technician = w.client().from("127.0.0.3");
    assert_eq!(technician.login(ADMIN.0, ADMIN.1).await.status, 200);
    use std::sync::atomic::Ordering::Relaxed;
    assert!(w.app.metrics.web.rate_limited_total.load(Relaxed) >= 1);
    assert!(w.app.metrics.web.login_failures_total.load(Relaxed) >= 5);
    w.stop().await;
}

#[tokio::test]
async fn paths_with_dot_dot_and_unknown_files_get_404_and_nothing_from_disk() {
    let w = World::start(false).await;
    let c = w.client();
    for path in [
        "/../../../../etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/Cargo.toml",
        "/static/../Cargo.toml",
        "/app.js/../../src/main.rs",
        "/src/web/static/app.js",
    ] {
        let r = c.get(path).await;
        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.status);
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("root:") && !body.contains("[package]") && !body.contains("fn main"),
            "{path}"
        );
    }
    let admin = w.admin().await;
    // A firmware upload named like a path is refused before anything is written.
    for name in ["../../evil", "..%2Fevil", ".hidden", "a%2Fb"] {
        let r = admin
            .send("POST", &format!("/api/readers/firmware?name={name}"), Some(b"x"), &[])
            .await;
        assert_error_says_what_to_do(&r, 400);
    }
    w.stop().await;
}

#[tokio::test]
async fn slow_loris_clients_are_closed_and_others_are_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::start(false).await;
    // 80 connections from one address that never finish their headers (more than one address's
    // share of the connection slots).
    let slow = w.client().from("127.0.0.5");
    let mut loris = Vec::new();
    for _ in 0..80 {
        let mut s = slow.connect().await;
        let _ = s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
        loris.push(s);
    }
    // Meanwhile a technician from another address is served at once.
    let started = Instant::now();
    let health = w.client().from("127.0.0.6").get("/healthz").await;
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The slow ones are closed (headers not in within 10 s) or answered 503 (no slot).
    let deadline = Instant::now() + Duration::from_secs(40);
    for mut s in loris {
        let mut buf = Vec::new();
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow-loris connection stayed open");
        if !buf.is_empty() {
            assert!(
                buf.starts_with(b"HTTP/1.1 503") || buf.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
    use std::sync::atomic::Ordering::Relaxed;
    let m = &w.app.metrics.web;
    assert!(m.slow_closed_total.load(Relaxed) + m.refused_total.load(Relaxed) >= 80);
    assert_eq!(w.client().get("/healthz").await.status, 200);
    w.stop().await;
}

#[tokio::test]
async fn a_thousand_parallel_requests_are_all_answered_and_nothing_breaks() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let c = admin.clone();
        tasks.spawn(async move {
            let path = if i % 2 == 0 { "/api/status" } else { "/api/overview" };
            c.get(path).await.status
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        *statuses.entry(r.unwrap()).or_insert(0) += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let answered: u32 = statuses
        .iter()
        .filter(|(s, _)| [200, 503].contains(*s))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(answered, 1000, "{statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) >= 900, "{statuses:?}");
    assert_eq!(admin.get("/api/status").await.status, 200);
    w.stop().await;
}

#[tokio::test]
async fn under_tls_the_page_is_served_over_https_and_the_cookie_is_secure() {
    let w = World::start(true).await;
    // A plain-text request to the TLS port gets no HTTP answer.
    let plain = w.client().get("/healthz").await;
    assert_ne!(plain.status, 200);
    let tls = roadedge::tls::client_config(Some(&w.ca_file), None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let login = br#"{"username":"admin","password":"correct horse"}"#;
    let request = format!(
        "POST /api/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        login.len()
    );
    let tcp = w.client().connect().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio::time::timeout(LIMIT, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(login).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw)).await;
    let r = common::web::parse_response(&raw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&raw));
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(r.header("strict-transport-security").is_some());
    w.stop().await;
}

/// Sends `command` to reader `gate` through the page and returns the job's final JSON.
async fn page_command(c: &Client, path: &str, command: Value) -> Value {
    let mut r = c.post(path, &command).await;
    assert!(r.status == 200 || r.status == 202, "{} {:?}", r.status, r.json());
    let deadline = Instant::now() + LIMIT;
    while r.json()["state"] == "running" {
        assert!(Instant::now() < deadline, "job did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
        r = c.get(&format!("/api/jobs/{}", r.json()["id"])).await;
    }
    r.json()
}

#[tokio::test]
async fn a_rule_added_from_the_page_and_one_from_mqtt_go_through_the_same_command_plane_function() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    let wait_reader_up = || async {
        let deadline = Instant::now() + LIMIT;
        while !w.reader.is_connected() {
            assert!(Instant::now() < deadline, "reader connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_reader_up().await;
    let template = |id: u32| {
        roadedge::reader::rules::default_select_spec(id, roadedge::reader::rules::SpecState::Disabled, 1, &[1])
    };

    // Door 1: the page.
    let job = page_command(
        &admin,
        "/api/readers/gate/command",
        json!({"action": "add_rule", "select_spec": template(21)}),
    )
    .await;
    assert_eq!(job["ok"], true, "{job}");
    let started = page_command(
        &admin,
        "/api/readers/gate/command",
        json!({"action": "start_rule", "spec_id": 21}),
    )
    .await;
    assert_eq!(started["ok"], true, "{started}");
    // Door 2: MQTT.
    w.cloud
        .publish(
            "gbt37987/gate/dn",
            json!({"request_id": "cloud-22", "action": "add_rule", "select_spec": template(22)}),
        )
        .await;
    let from_cloud = w.result_on("gbt37987/gate/up/response", "cloud-22").await;
    // The page's command left the same kind of result record on the same topic: both went
    // through CommandPlane::submit and the reader service's hub action.
    let page_request_id = job["request_id"].as_str().unwrap();
    assert!(page_request_id.starts_with("web-"), "{job}");
    let from_page = w.result_on("gbt37987/gate/up/response", page_request_id).await;
    let shape = |v: &Value| {
        let mut keys: Vec<String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "edge")
            .cloned()
            .collect();
        keys.sort();
        (keys, v["answer"]["stored"].clone(), v["answer"]["kind"].clone())
    };
    assert_eq!(shape(&from_page), shape(&from_cloud), "{from_page} vs {from_cloud}");
    // Both rules are the edge's desired rules and the reader holds them; 21 runs.
    let held = w.app.readers.as_ref().unwrap().rules("gate").await.unwrap();
    assert!(held.select.contains_key(&21) && held.select.contains_key(&22));
    let deadline = Instant::now() + LIMIT;
    loop {
        let specs = w.reader.select_specs();
        if specs.get(&21) == Some(&roadedge::reader::rules::SpecState::Active) && specs.contains_key(&22) {
            break;
        }
        assert!(Instant::now() < deadline, "reader holds both rules: {specs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page shows the rule and its reports arrive on the reader's page.
    let deadline = Instant::now() + LIMIT;
    loop {
        let page = admin.get("/api/readers/gate").await.json();
        let rule = page["select_rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["spec_id"] == 21)
            .cloned();
        let tags_of_21 = page["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["select_spec_id"] == 21);
        if rule.is_some_and(|r| r["desired"] == "active") && tags_of_21 {
            break;
        }
        assert!(Instant::now() < deadline, "reports of rule 21 on the page: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A bad rule from the page is rejected with the reader service's own reason and a hint.
    let bad = page_command(
        &admin,
        "/api/readers/gate/command",
        json!({"action": "start_rule", "spec_id": 99}),
    )
    .await;
    assert_eq!(
        (bad["ok"].clone(), bad["result"].clone()),
        (json!(false), json!("rejected"))
    );
    assert!(
        bad["error"].as_str().unwrap().contains("99") && bad["hint"].is_string(),
        "{bad}"
    );
    w.stop().await;
}

#[tokio::test]
async fn vehicle_and_edge_commands_from_the_page_go_through_the_command_plane_like_mqtt_ones() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    // The simulated terminal comes online.
    let deadline = Instant::now() + LIMIT;
    let phone = loop {
        let v = admin.get("/api/vehicles").await.json();
        if let Some(id) = v["jt808"]["vehicles"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["online"] == true))
            .and_then(|x| x["id"].as_str())
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "a terminal online: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let topic = format!("jt808/{phone}/{phone}/up");
    // Door 1: the page; door 2: MQTT. Same query (location, 0x8201).
    let job = page_command(
        &admin,
        &format!("/api/vehicles/jt808/{phone}/command"),
        json!({"header": {"msg_id": 0x8201}}),
    )
    .await;
    assert_eq!(job["ok"], true, "{job}");
    w.cloud
        .publish(
            &format!("jt808/{phone}/{phone}/dn"),
            json!({"request_id": "cloud-q", "header": {"msg_id": 0x8201}}),
        )
        .await;
    let from_cloud = w.result_on(&topic, "cloud-q").await;
    assert_eq!(from_cloud["ok"], true, "{from_cloud}");
    w.cloud
        .wait_for("the page's query result on the response topic", LIMIT, |m| {
            m.iter()
                .any(|m| m.topic == topic && m.payload["request_id"].as_str().is_some_and(|r| r.starts_with("web-")))
        })
        .await;
    // Edge commands: the page's ping is answered on edge/{id}/cmd/result like the cloud's.
    let ping = page_command(&admin, "/api/edge/command", json!({"action": "ping"})).await;
    assert_eq!(ping["answer"]["pong"], true);
    w.cloud
        .wait_for("the page's ping result", LIMIT, |m| {
            m.iter().any(|m| {
                m.topic == "edge/cab-1/cmd/result"
                    && m.payload["request_id"].as_str().is_some_and(|r| r.starts_with("web-"))
            })
        })
        .await;
    // Unknown actions are rejected with the plane's reason.
    let unknown = page_command(&admin, "/api/edge/command", json!({"action": "fly"})).await;
    assert_eq!(unknown["result"], "rejected");
    assert!(unknown["error"].as_str().unwrap().contains("unknown action"));
    w.stop().await;
}

#[tokio::test]
async fn the_log_ring_shows_the_appliances_own_events_filtered_and_live() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    let all = admin.get("/api/logs").await.json();
    assert!(all["lines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"].as_str().unwrap().contains("roadedge running")));
    let warn = admin.get("/api/logs?level=warn").await.json();
    assert!(warn["lines"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["level"] == "warn" || l["level"] == "error"));
    let readers = admin.get("/api/logs?module=roadedge%3A%3Areader").await.json();
    assert!(readers["lines"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["target"].as_str().unwrap().contains("roadedge::reader")));
    // Live: the event stream carries a line logged after it opened.
    let last = all["last_seq"].as_u64().unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = admin.connect().await;
    let req = format!(
        "GET /api/events?topics=logs&q=marker-for-the-live-test&after={last} HTTP/1.1\r\nHost: x\r\nCookie: roadedge_session={}\r\n\r\n",
        admin.cookie.as_deref().unwrap()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tracing::info!("marker-for-the-live-test");
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while !String::from_utf8_lossy(&seen).contains("marker-for-the-live-test") {
        assert!(
            Instant::now() < deadline,
            "live log line: {}",
            String::from_utf8_lossy(&seen)
        );
        let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("event:logs"));
    w.stop().await;
}

#[tokio::test]
async fn registry_writes_from_the_page_and_from_mqtt_reach_the_same_registry_and_csv_round_trips() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    // Door 1: the page (the registry.upsert edge action through the command plane).
    let job = page_command(
        &admin,
        "/api/edge/command",
        json!({"action": "registry.upsert", "vehicles": [{"plate": "京A12345", "plate_color": 1, "vin": "LVIN0000000000001"}]}),
    )
    .await;
    assert_eq!(job["ok"], true, "{job}");
    let from_page = w
        .result_on("edge/cab-1/cmd/result", job["request_id"].as_str().unwrap())
        .await;
    // Door 2: MQTT.
    w.cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "cloud-reg", "action": "registry.upsert", "vehicles": [{"plate": "沪B54321", "phone": "013900000042"}]}),
        )
        .await;
    let from_cloud = w.result_on("edge/cab-1/cmd/result", "cloud-reg").await;
    assert_eq!(
        from_page["answer"]["created"], from_cloud["answer"]["created"],
        "{from_page} {from_cloud}"
    );
    let list = admin.get("/api/registry?query=").await.json();
    let plates: Vec<&str> = list["vehicles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["plate"].as_str())
        .collect();
    assert!(plates.contains(&"京A12345") && plates.contains(&"沪B54321"), "{list}");
    let found = admin.get("/api/registry?query=LVIN0000000000001").await.json();
    assert_eq!(found["total"], 1, "{found}");
    // CSV import (the page's door to the registry's own import) and export.
    let csv = "plate,plate_color,vin,phone,tid\n粤C11111,2,,,e2801160\nnot a plate!,,,,\n";
    let imported = admin
        .send("POST", "/api/registry/import", Some(csv.as_bytes()), &[])
        .await;
    assert_eq!(imported.status, 200, "{:?}", imported.json());
    let report = imported.json();
    assert_eq!(
        (report["rows"].clone(), report["created"].clone()),
        (json!(2), json!(1)),
        "{report}"
    );
    assert_eq!(report["errors_total"], 1);
    let export = admin.get("/api/registry/export").await;
    assert_eq!(export.status, 200);
    assert!(export.header("content-type").unwrap().starts_with("text/csv"));
    let text = String::from_utf8(export.body.clone()).unwrap();
    assert!(text.contains("粤C11111") && text.contains("京A12345"), "{text}");
    // Delete through the page; the viewer may only read.
    let deleted = page_command(
        &admin,
        "/api/edge/command",
        json!({"action": "registry.delete", "plates": ["沪B54321"]}),
    )
    .await;
    assert_eq!(deleted["ok"], true, "{deleted}");
    let mut viewer = w.client();
    viewer.login(VIEWER.0, VIEWER.1).await;
    assert_eq!(viewer.get("/api/registry").await.status, 200);
    assert_error_says_what_to_do(
        &viewer
            .send("POST", "/api/registry/import", Some(csv.as_bytes()), &[])
            .await,
        403,
    );
    w.stop().await;
}

#[tokio::test]
async fn an_update_uploaded_from_the_page_goes_through_the_same_ota_install_as_mqtt_with_one_result() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    let upload = |name: &str, body: Vec<u8>| {
        let c = &admin;
        let path = format!("/api/ota/upload?name={name}");
        async move { c.send("POST", &path, Some(&body), &[]).await }
    };
    // The status: this version, nothing uploaded.
    let status = admin.get("/api/ota").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["current_version"], "0.1.0");
    assert_eq!(status.json()["configured"], true);

    // A signed file that is no roadedge binary: the signature check passes, the version check
    // refuses it; before its .sig is there it is refused as unsigned.
    let update = b"#!/bin/sh\necho not roadedge\n".repeat(1000);
    let r = upload("fake-1.bin", update.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["bytes"], update.len());
    let listed = admin.get("/api/ota").await.json();
    assert_eq!(listed["uploads"][0]["name"], "fake-1.bin", "{listed}");
    let job = page_command(&admin, "/api/ota/install", json!({"name": "fake-1.bin"})).await;
    println!("install without .sig: {job}");
    assert_eq!(job["result"], "rejected");
    assert!(job["error"].as_str().unwrap().contains("unsigned"), "{job}");
    // Its result is the edge command's result on the cloud's topic: the same door as MQTT.
    let on_topic = w
        .result_on("edge/cab-1/cmd/result", job["request_id"].as_str().unwrap())
        .await;
    assert_eq!(on_topic["error"], job["error"]);

    let r = upload("fake-1.bin", update.clone()).await;
    assert_eq!(r.status, 200);
    let sig = ota_key().sign(&sha2::Sha256::digest(&update));
    assert_eq!(upload("fake-1.bin.sig", sig.to_bytes().to_vec()).await.status, 200);
    let job = page_command(&admin, "/api/ota/install", json!({"name": "fake-1.bin"})).await;
    println!("install with .sig: {job}");
    assert!(
        job["error"].as_str().unwrap().contains("not a roadedge binary"),
        "{job}"
    );
    // The same file from MQTT with a wrong signature gets the signature refusal.
    std::fs::write(w._dir.path().join("fake-2.bin"), &update).unwrap();
    let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]).sign(&sha2::Sha256::digest(&update));
    w.cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "mqtt-ota-1", "action": "ota.install",
                   "path": w._dir.path().join("fake-2.bin").display().to_string(),
                   "signature": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, other.to_bytes())}),
        )
        .await;
    let mqtt = w.result_on("edge/cab-1/cmd/result", "mqtt-ota-1").await;
    assert!(mqtt["error"].as_str().unwrap().contains("bad signature"), "{mqtt}");
    let status = admin.get("/api/ota").await.json();
    assert_eq!(status["last_result"]["request_id"], "mqtt-ota-1");
    assert!(
        status["uploads"].as_array().unwrap().is_empty(),
        "the upload was consumed: {status}"
    );
    assert!(!w._dir.path().join("bin/roadedge").exists(), "nothing installed");

    // Bounds and names.
    let big = admin
        .send(
            "POST",
            "/api/ota/upload?name=big.bin",
            Some(&vec![0u8; (1 << 20) + 1]),
            &[],
        )
        .await;
    assert_error_says_what_to_do(&big, 413);
    let bad = upload("..%2Fescape", b"x".to_vec()).await;
    assert_error_says_what_to_do(&bad, 400);
    assert!(!w._dir.path().join("escape").exists());
    let sig_big = upload("fake-1.bin.sig", vec![b'A'; 5000]).await;
    assert_error_says_what_to_do(&sig_big, 413);
    let missing = admin.post("/api/ota/install", &json!({})).await;
    assert_error_says_what_to_do(&missing, 400);
    // A viewer looks but cannot upload or install.
    let mut viewer = w.client();
    assert_eq!(viewer.login(VIEWER.0, VIEWER.1).await.status, 200);
    assert_eq!(viewer.get("/api/ota").await.status, 200);
    assert_error_says_what_to_do(
        &viewer.send("POST", "/api/ota/upload?name=v.bin", Some(b"x"), &[]).await,
        403,
    );
    assert_error_says_what_to_do(&viewer.post("/api/ota/install", &json!({"name": "v.bin"})).await, 403);
    w.stop().await;
}

#[tokio::test]
async fn a_terminal_provisioned_from_the_page_is_listed_by_mqtt_and_one_provisioned_by_mqtt_by_the_page() {
    let w = World::start(false).await;
    let admin = w.admin().await;
    // Door 1: the page provisions (the jt808.provision edge command through the command plane).
    let job = page_command(
        &admin,
        "/api/jt808/provision",
        json!({"terminals": [{"phone": "13900000061", "plate": "京A00061", "plate_color": 2}]}),
    )
    .await;
    assert_eq!(job["ok"], true, "{job}");
    assert_eq!(job["answer"]["added"], json!(["013900000061"]));
    let from_page = w
        .result_on("edge/cab-1/cmd/result", job["request_id"].as_str().unwrap())
        .await;
    assert_eq!(from_page["answer"]["added"], json!(["013900000061"]), "{from_page}");
    // ... and the cloud's listing sees it.
    w.cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "cloud-l1", "action": "jt808.terminals"}),
        )
        .await;
    let listed = w.result_on("edge/cab-1/cmd/result", "cloud-l1").await;
    assert_eq!(listed["answer"]["terminals"][0]["phone"], "013900000061", "{listed}");
    assert_eq!(listed["answer"]["terminals"][0]["plate_color"], 2);
    // Door 2: the cloud provisions; the page lists both.
    w.cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "cloud-p1", "action": "jt808.provision", "terminals": [{"phone": "013900000062"}]}),
        )
        .await;
    let from_cloud = w.result_on("edge/cab-1/cmd/result", "cloud-p1").await;
    assert_eq!(from_cloud["answer"]["added"], json!(["013900000062"]), "{from_cloud}");
    let page_list = admin.get("/api/jt808/terminals").await;
    assert_eq!(page_list.status, 200);
    let page_list = page_list.json();
    assert_eq!(page_list["total"], 2, "{page_list}");
    assert_eq!(page_list["auth"], "open");
    assert_eq!(page_list["terminals"][1]["plate"], Value::Null);
    // Bad input is refused with the reason, as a job result.
    let bad = page_command(
        &admin,
        "/api/jt808/provision",
        json!({"terminals": [{"phone": "139-0000"}]}),
    )
    .await;
    assert_eq!(bad["ok"], false, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("digits only"), "{bad}");
    // The same rules as every write: a CSRF token and an admin.
    let no_csrf = admin
        .send(
            "POST",
            "/api/jt808/deprovision",
            Some(br#"{"phones":["013900000061"]}"#),
            &[("X-CSRF-Token", "wrong")],
        )
        .await;
    assert_error_says_what_to_do(&no_csrf, 403);
    let mut viewer = w.client();
    viewer.login(VIEWER.0, VIEWER.1).await;
    assert_eq!(viewer.get("/api/jt808/terminals").await.status, 200);
    assert_error_says_what_to_do(
        &viewer
            .post("/api/jt808/deprovision", &json!({"phones": ["013900000061"]}))
            .await,
        403,
    );
    let removed = page_command(&admin, "/api/jt808/deprovision", json!({"phones": ["013900000061"]})).await;
    assert_eq!(removed["answer"]["removed"], json!(["013900000061"]), "{removed}");
    let rid = removed["request_id"].as_str().unwrap().to_string();
    w.result_on("edge/cab-1/cmd/result", &rid).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [rid.as_str(), "cloud-p1", "cloud-l1"] {
        let n = w
            .cloud
            .on_topic("edge/cab-1/cmd/result")
            .iter()
            .filter(|m| m.payload["request_id"] == id)
            .count();
        assert_eq!(n, 1, "{id}: one result");
    }
    let after = admin.get("/api/jt808/terminals").await.json();
    assert_eq!(after["total"], 1, "{after}");
    assert_eq!(after["terminals"][0]["phone"], "013900000062");
    w.stop().await;
}

/// The appliance run from its file by the in-process supervisor (`app::run_from_file`), as
/// `roadedge run` does, with the web page on a fixed port so it comes back there after each
/// restart of the core; `starts` counts the core's starts.
struct ConfigWorld {
    dir: tempfile::TempDir,
    _broker: Mosquitto,
    cloud: Cloud,
    path: std::path::PathBuf,
    web: std::net::SocketAddr,
    starts: tokio::sync::watch::Receiver<usize>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ConfigWorld {
    async fn start() -> ConfigWorld {
        roadedge::ops::logging::init("info,rumqttc=warn");
        let (dir, pki, broker, cloud) = common::World::start(&format!("cloud-config-{}", common::free_port()))
            .await
            .into_parts();
        let hash = |p: &str| roadedge::web::auth::hash_password(p).unwrap();
        let port = common::free_port();
        let extra = format!(
            "web:\n  listen: 127.0.0.1:{port}\n  confirm_within: 8s\n  users:\n    - {{name: {}, role: admin, password_hash: '{}'}}\n    - {{name: {}, role: viewer, password_hash: '{}'}}\n",
            ADMIN.0,
            hash(ADMIN.1),
            VIEWER.0,
            hash(VIEWER.1),
        );
        let path = common::write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&extra);
        std::fs::write(&path, text).unwrap();
        let shutdown = CancellationToken::new();
        let (tx, starts) = tokio::sync::watch::channel(0usize);
        let (p, token) = (path.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            roadedge::app::run_from_file(&p, roadedge::app::RunOptions::default(), token, move |_| {
                tx.send_modify(|n| *n += 1);
            })
            .await
        });
        let mut w = ConfigWorld {
            dir,
            _broker: broker,
            cloud,
            path,
            web: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            starts,
            shutdown,
            task,
        };
        w.wait_starts(1).await;
        w.cloud.wait_edge_online().await;
        w
    }

    async fn wait_starts(&mut self, n: usize) {
        tokio::time::timeout(LIMIT, self.starts.wait_for(|s| *s >= n))
            .await
            .expect("the core started again")
            .unwrap();
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap()
    }

    /// Until the pending apply's uplink has come back (the page shows it).
    async fn until_uplink_back(&self, c: &Client) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let got = c.get("/api/config").await.json();
            if got["pending"]["uplink_back"] == true {
                return;
            }
            assert!(Instant::now() < deadline, "the uplink did not come back: {got}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn mqtt(&self, mut command: Value, id: &str) -> Value {
        command["request_id"] = json!(id);
        self.cloud.publish("edge/cab-1/cmd", command).await;
        let rid = id.to_string();
        self.cloud
            .wait_for(&format!("result {id}"), LIMIT, move |m| {
                m.iter()
                    .any(|m| m.topic == "edge/cab-1/cmd/result" && m.payload["request_id"] == rid.as_str())
            })
            .await;
        self.cloud
            .on_topic("edge/cab-1/cmd/result")
            .into_iter()
            .find(|m| m.payload["request_id"] == id)
            .unwrap()
            .payload
    }

    async fn mqtt_result(&self, id: &str) -> Value {
        let rid = id.to_string();
        self.cloud
            .wait_for(&format!("result {id}"), LIMIT, move |m| {
                m.iter()
                    .any(|m| m.topic == "edge/cab-1/cmd/result" && m.payload["request_id"] == rid.as_str())
            })
            .await;
        self.cloud
            .on_topic("edge/cab-1/cmd/result")
            .into_iter()
            .find(|m| m.payload["request_id"] == id)
            .unwrap()
            .payload
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("graceful shutdown")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn the_configuration_routes_read_validate_diff_apply_and_confirm_through_the_config_set_service() {
    let mut w = ConfigWorld::start().await;
    let mut admin = Client::new(w.web);
    assert_eq!(admin.login(ADMIN.0, ADMIN.1).await.status, 200);
    let mut viewer = Client::new(w.web);
    assert_eq!(viewer.login(VIEWER.0, VIEWER.1).await.status, 200);
    let original = w.file();

    // Read: admins only (the file holds password hashes).
    let got = admin.get("/api/config").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["yaml"], original.as_str());
    assert_eq!(got.json()["pending"], Value::Null);
    assert_eq!(got.json()["confirm_within_s"], 8);
    assert_error_says_what_to_do(&viewer.get("/api/config").await, 403);

    // Validate: every error with its path and line.
    let bad = original
        .replace("metrics_interval: 1s", "metrics_interval: soon")
        .replace("edge: {id: cab-1}", "edge: {id: 'cab 1'}");
    let v = admin.post("/api/config/validate", &json!({"yaml": bad})).await;
    assert_eq!(v.status, 200);
    let errors = v.json()["errors"].as_array().unwrap().clone();
    let line_of = |needle: &str| json!(original.lines().position(|l| l.contains(needle)).unwrap() + 1);
    assert!(
        errors.contains(&json!({"path": "edge.id", "line": line_of("edge:"), "message": errors[0]["message"]})),
        "{errors:?}"
    );
    let interval = errors.iter().find(|e| e["path"] == "uplink.metrics_interval").unwrap();
    assert_eq!(interval["line"], line_of("metrics_interval"));
    assert_eq!(
        admin
            .post("/api/config/validate", &json!({"yaml": original}))
            .await
            .json()["valid"],
        true
    );
    assert_error_says_what_to_do(&admin.post("/api/config/validate", &json!({})).await, 400);

    // Diff.
    let changed = original.replace("metrics_interval: 1s", "metrics_interval: 2s");
    let d = admin.post("/api/config/diff", &json!({"yaml": changed})).await.json();
    assert_eq!(
        (d["changed"].clone(), d["added"].clone(), d["removed"].clone()),
        (json!(true), json!(1), json!(1))
    );
    assert!(
        d["unified"].as_str().unwrap().contains("+  metrics_interval: 2s"),
        "{d}"
    );

    // Writes: CSRF, admin, bounded bodies.
    assert_error_says_what_to_do(
        &admin
            .send(
                "POST",
                "/api/config/apply",
                Some(br#"{"yaml":""}"#),
                &[("X-CSRF-Token", "wrong")],
            )
            .await,
        403,
    );
    assert_error_says_what_to_do(&viewer.post("/api/config/apply", &json!({"yaml": changed})).await, 403);
    assert_error_says_what_to_do(&viewer.post("/api/restart", &json!({})).await, 403);
    let huge = json!({"yaml": "#".repeat(300 * 1024)});
    assert_error_says_what_to_do(&admin.post("/api/config/apply", &huge).await, 413);
    assert_eq!(w.file(), original);

    // Invalid from the page: refused by config.set, nothing changed.
    let job = page_command(&admin, "/api/config/apply", json!({"yaml": bad})).await;
    assert_eq!(job["ok"], false, "{job}");
    assert!(job["error"].as_str().unwrap().contains("nothing was changed"), "{job}");
    assert_eq!(w.file(), original);

    // Two doors, one service: the page's apply is the edge command config.set (its result is on
    // the cloud's topic and its marker is the one MQTT's config.set finds and is refused by).
    let job = page_command(&admin, "/api/config/apply", json!({"yaml": changed})).await;
    assert_eq!(job["ok"], true, "{job}");
    let rid = job["request_id"].as_str().unwrap().to_string();
    let on_topic = w.mqtt_result(&rid).await;
    assert_eq!(on_topic["answer"]["deadline"], job["answer"]["deadline"]);
    let marker: Value =
        serde_json::from_slice(&std::fs::read(w.dir.path().join("config-apply/pending.json")).unwrap()).unwrap();
    assert_eq!(marker["request_id"], rid.as_str());
    w.wait_starts(2).await;
    assert_eq!(w.file(), changed);
    let refused = w
        .mqtt(json!({"action": "config.set", "yaml": original}), "mqtt-set-1")
        .await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains(&format!("request `{rid}`")),
        "{refused}"
    );
    let job = page_command(&admin, "/api/restart", json!({})).await;
    assert_eq!(job["ok"], false, "a restart waits for the pending apply: {job}");
    // The session survived the in-process restart; the page shows the countdown and confirms.
    let got = admin.get("/api/config").await.json();
    assert_eq!(got["pending"]["request_id"], rid.as_str(), "{got}");
    assert!(got["pending"]["seconds_left"].as_u64().unwrap() <= 8);
    w.until_uplink_back(&admin).await;
    let job = page_command(&admin, "/api/config/confirm", json!({})).await;
    assert_eq!(job["ok"], true, "{job}");
    assert_eq!(admin.get("/api/config").await.json()["last"]["state"], "confirmed");

    // And the other way round: MQTT's apply refuses the page's, the page confirms MQTT's.
    let set = w
        .mqtt(json!({"action": "config.set", "yaml": original}), "mqtt-set-2")
        .await;
    assert_eq!(set["ok"], true, "{set}");
    w.wait_starts(3).await;
    let job = page_command(&admin, "/api/config/apply", json!({"yaml": changed})).await;
    assert_eq!(job["ok"], false, "{job}");
    assert!(job["error"].as_str().unwrap().contains("request `mqtt-set-2`"), "{job}");
    w.until_uplink_back(&admin).await;
    assert_eq!(page_command(&admin, "/api/config/confirm", json!({})).await["ok"], true);
    assert_eq!(w.file(), original);

    // log_level and restart.
    let job = page_command(&admin, "/api/log_level", json!({"level": "debug"})).await;
    assert_eq!(job["answer"]["level"], "debug", "{job}");
    assert_error_says_what_to_do(&admin.post("/api/log_level", &json!({})).await, 400);
    let job = page_command(&admin, "/api/log_level", json!({"level": "info"})).await;
    assert_eq!(job["ok"], true, "{job}");
    let job = page_command(&admin, "/api/restart", json!({})).await;
    assert_eq!(job["ok"], true, "{job}");
    w.wait_starts(4).await;
    assert_eq!(admin.get("/api/config").await.status, 200, "still logged in");
    w.stop().await;
}

/// A tag report as the reader gateway commits it (`gbt37987/{reader}/up/report`).
fn tag_report(reader: &str, tid: &str, plate_chars: &str) -> roadedge::store::Record {
    let body = json!({"msg": "TagSelectAccessReport", "code": 500, "device_sn": "5745425445535431", "seq": 1, "body": {"tags": [
        {"tid": tid, "antenna": 1, "rssi": -40, "first_seen": roadedge::time::now_rfc3339(), "seen_count": 1,
         "tag_data": {"raw": {"FPDH": "0100", "HPHMXH": plate_chars, "HPZL": "02"}}}
    ]}});
    roadedge::store::Record::new(
        format!("gbt37987/{reader}"),
        format!("gbt37987/{reader}/up/report"),
        roadedge::store::RecordClass::Telemetry,
        &body,
    )
}

#[tokio::test]
async fn passages_are_listed_and_filtered_by_the_page_and_by_mqtt_from_the_same_fusion_service() {
    let w = World::start_fusion().await;
    let admin = w.admin().await;
    // Two committed tag reports (京A12345, and a tag whose plate characters are out of range).
    w.app
        .store
        .append(tag_report("gate", "e2805a0000000001", "001b1c1d1e1f"))
        .await
        .unwrap();
    w.app
        .store
        .append(tag_report("gate", "e2805a0000000002", "ff"))
        .await
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let page = loop {
        let page = admin.get("/api/passages?query=e2805a").await;
        assert_eq!(page.status, 200, "{:?}", page.json());
        let page = page.json();
        if page["total"] == 2 {
            break page;
        }
        assert!(Instant::now() < deadline, "no passages: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let passages = page["passages"].as_array().unwrap();
    // Newest first; the unreadable plate is counted and the passage kept without it.
    assert_eq!(passages[0]["tag"]["tid"], "e2805a0000000002", "{page}");
    assert!(passages[0]["tag"].get("plate").is_none(), "{page}");
    assert_eq!(passages[1]["tag"]["plate"], "京AA12345", "{page}");
    assert_eq!(passages[1]["match"], "none");
    assert_eq!(passages[1]["reader"]["id"], "gate");
    assert!(page["metrics"]["tag_plate_invalid_total"].as_u64() >= Some(1), "{page}");
    assert!(page["metrics"]["passages_total"]["none"].as_u64() >= Some(2), "{page}");
    // Filters: by plate text, by match kind, by anomaly; bad ones are refused with a hint.
    let by_plate = admin.get("/api/passages?query=AA12345").await.json();
    assert_eq!(by_plate["total"], 1, "{by_plate}");
    let telemetry_only = admin.get("/api/passages?match=telemetry_only").await.json();
    assert_eq!(telemetry_only["total"], 0, "{telemetry_only}");
    let with_anomaly = admin.get("/api/passages?anomaly=any&query=e2805a").await.json();
    assert_eq!(with_anomaly["total"], 0, "{with_anomaly}");
    let limited = admin.get("/api/passages?query=e2805a&limit=1").await.json();
    assert_eq!(
        (limited["total"].clone(), limited["passages"].as_array().unwrap().len()),
        (json!(2), 1)
    );
    assert_error_says_what_to_do(&admin.get("/api/passages?match=sideways").await, 400);
    assert_error_says_what_to_do(&admin.get("/api/passages?anomaly=speeding").await, 400);
    assert_error_says_what_to_do(&admin.get("/api/passages?limit=many").await, 400);
    // The other door: `passages.list` on edge/{id}/cmd answers from the same service.
    w.cloud
        .publish(
            "edge/cab-1/cmd",
            json!({"request_id": "pl-1", "action": "passages.list", "query": "e2805a", "limit": 10}),
        )
        .await;
    let result = w.result_on("edge/cab-1/cmd/result", "pl-1").await;
    assert_eq!(result["ok"], true, "{result}");
    let ids = |v: &Value| -> Vec<Value> { v.as_array().unwrap().iter().map(|p| p["passage_id"].clone()).collect() };
    assert_eq!(ids(&result["answer"]["passages"]), ids(&page["passages"]), "{result}");
    // The viewer may read passages too.
    let mut viewer = w.client();
    viewer.login(VIEWER.0, VIEWER.1).await;
    assert_eq!(viewer.get("/api/passages").await.status, 200);
    w.stop().await;
}
