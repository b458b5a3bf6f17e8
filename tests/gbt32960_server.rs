//! The GB/T 32960 server against hostile and broken terminals, in-process on loopback TCP with a
//! real store and command plane (no broker needed: what would be published is read from the
//! outbox). Tests are named after the attack or fault they stop.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roadedge::command::{CommandPlane, Protocol, Target};
use roadedge::gateway::gbt32960::{self as gateway, GatewaySettings, SessionSettings};
use roadedge::metrics::Metrics;
use roadedge::protocol::gbt32960::{Command, Edition, ResponseFlag, Time, Vin};
use roadedge::sim::gbt32960::{self as sim, SimError, Terminal};
use roadedge::store::Store;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(5);

struct Server {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    store: Store,
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn server_with(idle: Duration, session: SessionSettings) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (store, plane, metrics) = common::store_and_plane(dir.path(), Duration::from_secs(3600));
    let settings = GatewaySettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        idle_timeout: idle,
        login_timeout: idle,
        max_connections: 100,
        handshake_timeout: Duration::from_secs(5),
        session,
        bind_identity: false,
        allow_plain: false,
        replace: roadedge::config::Replace::Allow,
        buffered: Arc::new(roadedge::limits::ByteBudget::default()),
    };
    let shutdown = CancellationToken::new();
    let gw = gateway::start(
        settings,
        store.clone(),
        plane.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    Server {
        _dir: dir,
        addr: gw.local_addr,
        store,
        plane,
        metrics,
        shutdown,
        task: gw.task,
    }
}

async fn server() -> Server {
    server_with(Duration::from_secs(30), SessionSettings::default()).await
}

impl Server {
    async fn terminal(&self, vin: &str) -> Terminal {
        Terminal::connect(self.addr, None, vin, Edition::V2016).await.unwrap()
    }

    async fn logged_in(&self, vin: &str) -> Terminal {
        let mut t = self.terminal(vin).await;
        let reply = t.login().await.unwrap();
        assert_eq!(reply.response, ResponseFlag::SUCCESS);
        t
    }

    /// (topic, payload) of every committed record, in order.
    async fn outbox(&self) -> Vec<(String, Value)> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare("SELECT topic, payload FROM outbox ORDER BY seq")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap()
            .into_iter()
            .map(|(t, p)| (t, serde_json::from_slice(&p).unwrap()))
            .collect()
    }

    async fn wait_outbox(&self, what: &str, pred: impl Fn(&[(String, Value)]) -> bool) -> Vec<(String, Value)> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let rows = self.outbox().await;
            if pred(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {rows:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.store.close())
            .await
            .unwrap();
    }
}

/// Reads until the server closes the connection; fails if it stays open past `limit`.
async fn assert_closed(t: &mut Terminal, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, t.next_frame()).await {
            Err(_) => panic!("the connection is still open after {limit:?}"),
            Ok(Ok(frame)) => assert!(
                frame.response.is_command() || frame.command != Command::VEHICLE_LOGIN,
                "unexpected login reply {frame:?}"
            ),
            Ok(Err(SimError::BadFrame(_))) => {}
            Ok(Err(_)) => return,
        }
    }
}

fn topics(rows: &[(String, Value)]) -> Vec<&str> {
    rows.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_before_login_closes_the_connection_and_nothing_is_published() {
    let s = server().await;
    let mut t = s.terminal("LSIMATTACK0000001").await;
    t.send(&sim::realtime_frame(t.vin, Edition::V2016, Time::default(), 1, false))
        .await
        .unwrap();
    assert_closed(&mut t, LIMIT).await;
    let mut t = s.terminal("LSIMATTACK0000001").await;
    t.send(&sim::heartbeat_frame(t.vin, Edition::V2016)).await.unwrap();
    assert_closed(&mut t, LIMIT).await;
    assert!(s.outbox().await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_another_vin_after_login_closes_the_connection() {
    let s = server().await;
    let mut t = s.logged_in("LSIMVICTIM0000001").await;
    let other = Vin::from_text("LSIMOTHER00000002");
    t.send(&sim::realtime_frame(other, Edition::V2016, Time::default(), 1, false))
        .await
        .unwrap();
    assert_closed(&mut t, LIMIT).await;
    // A second login for another VIN on one connection is the same attack.
    let mut t = s.logged_in("LSIMVICTIM0000003").await;
    t.send(&sim::login_frame(other, Edition::V2016, Time::default(), 2))
        .await
        .unwrap();
    assert_closed(&mut t, LIMIT).await;
    let rows = s.outbox().await;
    assert!(rows.iter().all(|(topic, _)| !topic.contains("LSIMOTHER")), "{rows:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_a_vin_that_would_break_mqtt_topics_is_refused() {
    let s = server().await;
    for vin in ["LSIM/../#", "LSIM+WILDCARD", "\u{0}"] {
        let mut t = s.terminal(vin).await;
        t.send(&sim::login_frame(t.vin, Edition::V2016, Time::default(), 1))
            .await
            .unwrap();
        assert_closed(&mut t, LIMIT).await;
    }
    assert!(s.outbox().await.is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_bcc_gets_an_error_reply_and_a_counter_and_the_session_goes_on() {
    let s = server().await;
    let mut t = s.logged_in("LSIMBADBCC0000001").await;
    let time = Time::from_bytes([25, 11, 21, 16, 0, 0]);
    let mut bytes = sim::realtime_frame(t.vin, Edition::V2016, time, 1, false)
        .encode()
        .unwrap();
    *bytes.last_mut().unwrap() ^= 0x55;
    t.send_raw(&bytes).await.unwrap();
    let reply = t.recv(LIMIT).await.unwrap();
    assert_eq!(reply.command, Command::REALTIME);
    assert_eq!(reply.response, ResponseFlag::ERROR, "error reply 0x02");
    assert_eq!(reply.message_time(), Some(time), "the reply keeps the frame's time");
    assert_eq!(s.metrics.gbt32960.frames_bad.load(Relaxed), 1);
    // The terminal resends it correctly: accepted and published, the link stays up.
    t.send(&sim::realtime_frame(t.vin, Edition::V2016, time, 1, false))
        .await
        .unwrap();
    t.send(&sim::heartbeat_frame(t.vin, Edition::V2016)).await.unwrap();
    assert_eq!(t.recv(LIMIT).await.unwrap().command, Command::HEARTBEAT);
    let rows = s.wait_outbox("the resent frame", |r| r.len() == 2).await;
    assert!(rows[1].0.ends_with("/upstream/info"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_length_is_refused_without_buffering_it_and_the_stream_resynchronises() {
    let s = server().await;
    let mut t = s.logged_in("LSIMOVERSIZE00001").await;
    // A header declaring 65535 bytes (over the standard's 65531), then 100 bytes of filler.
    let mut bytes = sim::heartbeat_frame(t.vin, Edition::V2016).encode().unwrap();
    bytes.truncate(22);
    bytes.extend_from_slice(&[0xFF, 0xFF]);
    bytes.extend_from_slice(&[0x00; 100]);
    t.send_raw(&bytes).await.unwrap();
    let reply = t.recv(LIMIT).await.unwrap();
    assert_eq!(reply.response, ResponseFlag::ERROR);
    t.send(&sim::heartbeat_frame(t.vin, Edition::V2016)).await.unwrap();
    let reply = t.recv(LIMIT).await.unwrap();
    assert_eq!(
        (reply.command, reply.response),
        (Command::HEARTBEAT, ResponseFlag::SUCCESS),
        "the next good frame is answered at once"
    );
    assert!(s.metrics.gbt32960.frames_bad.load(Relaxed) >= 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_terminal_trickling_one_frame_is_closed_at_the_idle_timeout() {
    let s = server_with(Duration::from_secs(1), SessionSettings::default()).await;
    let mut t = s.logged_in("LSIMSLOWLORIS0001").await;
    let bytes = sim::realtime_frame(t.vin, Edition::V2016, Time::default(), 1, false)
        .encode()
        .unwrap();
    let started = Instant::now();
    // One byte every 200 ms: each read is well inside the timeout, the frame never completes.
    let mut closed_after = None;
    for byte in bytes.iter().take(40) {
        if t.send_raw(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(1), t.next_frame()).await {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("still open after 8 s of trickling");
    assert!(closed_after < Duration::from_secs(3), "closed after {closed_after:?}");
    assert!(s.outbox().await.iter().all(|(t, _)| !t.ends_with("/info")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_that_never_logs_in_is_closed() {
    let s = server_with(Duration::from_millis(500), SessionSettings::default()).await;
    let mut t = s.terminal("LSIMIDLE000000001").await;
    let started = Instant::now();
    assert_closed(&mut t, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_is_counted_and_closes_the_connection() {
    let s = server().await;
    let mut t = s.logged_in("LSIMGARBAGE000001").await;
    for _ in 0..40 {
        if t.send_raw(b"#GARBAGE$").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_closed(&mut t, LIMIT).await;
    assert!(s.metrics.gbt32960.frames_bad.load(Relaxed) > 16);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_with_the_same_vin_replaces_the_old_one() {
    let s = server().await;
    let mut old = s.logged_in("LSIMTWICE00000001").await;
    let mut new = s.logged_in("LSIMTWICE00000001").await;
    assert_closed(&mut old, LIMIT).await;
    new.send(&sim::heartbeat_frame(new.vin, Edition::V2016)).await.unwrap();
    assert_eq!(new.recv(LIMIT).await.unwrap().command, Command::HEARTBEAT);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_cannot_be_committed_gets_no_reply() {
    let s = server().await;
    s.store.clone().close().await;
    let mut t = s.terminal("LSIMNOCOMMIT00001").await;
    let err = t.login().await.expect_err("a login reply without a commit");
    assert!(!matches!(err, SimError::Timeout(_)), "closed, not left hanging: {err}");
    s.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_command_is_resent_three_times_then_ends_in_timeout() {
    let session = SessionSettings {
        retry_interval: Duration::from_millis(300),
        ..SessionSettings::default()
    };
    let s = server_with(Duration::from_secs(30), session).await;
    let mut t = s.logged_in("LSIMDEAF000000001").await;
    s.plane
        .submit(
            Target::Device {
                protocol: Protocol::Gbt32960,
                device: "LSIMDEAF000000001".into(),
            },
            json!({"request_id": "c1", "Action": "Control", "Command": "0x03"})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut copies = 0;
    while let Ok(frame) = t.recv(Duration::from_secs(2)).await {
        assert_eq!(frame.command, Command::TERMINAL_CONTROL);
        copies += 1;
    }
    assert_eq!(copies, 4, "first send and 3 resends");
    let rows = s
        .wait_outbox("the timeout result", |r| {
            r.iter()
                .any(|(topic, p)| topic.ends_with("/upstream/response") && p["request_id"] == "c1")
        })
        .await;
    let results: Vec<_> = rows.iter().filter(|(_, p)| p["request_id"] == "c1").collect();
    assert_eq!(results.len(), 1, "exactly one result");
    assert_eq!(results[0].1["result"], "timeout");
    assert_eq!(results[0].0, "gbt32960/LSIMDEAF000000001/upstream/response");
    assert_eq!(topics(&rows)[0], "gbt32960/LSIMDEAF000000001/upstream/vlogin");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_command_logs_vehicles_in_sends_data_and_logs_them_out() {
    let s = server().await;
    let addr = s.addr.to_string();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_roadedge"))
            .args(["sim", "gbt32960", "--addr", &addr, "--vehicles", "3", "--rate", "15"])
            .args([
                "--edition",
                "2025",
                "--duration",
                "2s",
                "--ramp",
                "100ms",
                "--vin-prefix",
                "LCLI",
            ])
            .output(),
    )
    .await
    .expect("the simulator stops after its duration")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3 logins (0 failed)"), "{stdout}");
    let rows = s
        .wait_outbox("3 logouts", |r| {
            r.iter().filter(|(t, _)| t.ends_with("/vlogout")).count() == 3
        })
        .await;
    let infos: Vec<_> = rows.iter().filter(|(t, _)| t.ends_with("/upstream/info")).collect();
    assert!(infos.len() >= 15, "{} real-time records", infos.len());
    assert!(infos.iter().all(|(t, _)| t.starts_with("gbt32960/LCLI")));
    let login = &rows.iter().find(|(t, _)| t.ends_with("/vlogin")).unwrap().1;
    assert!(login["Data"]["BmsNum"].is_number(), "a 2025 login: {login}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_command_with_nothing_listening_fails_with_exit_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_roadedge"))
            .args([
                "sim",
                "gbt32960",
                "--addr",
                &port.to_string(),
                "--vehicles",
                "1",
                "--duration",
                "1s",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.status.code(), Some(1));
}
