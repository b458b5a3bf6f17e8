//! The JT/T 808 server under hostile or broken clients, on loopback, with the gateway in process
//! (no broker needed: the outbox is checked directly). Each test is named after what it stops.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roadedge::config::Jt808Auth;
use roadedge::gateway::jt808::{spawn, ServerSettings, Settings};
use roadedge::metrics::Metrics;
use roadedge::protocol::jt808::{
    general_result, ids, Body, Edition, Header, Message, Packet, PassThrough, ReassemblyLimits, Subpackage,
};
use roadedge::sim::jt808::{location, phone_for, SimError, Terminal};
use roadedge::store::Store;
use tokio_util::sync::CancellationToken;

const STEP: Duration = Duration::from_secs(5);

struct Server {
    address: String,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (store, plane, metrics) = common::store_and_plane(dir.path(), Duration::from_secs(60));
    let listener = roadedge::link::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let settings = ServerSettings {
        session: Settings {
            auth_timeout_ms: 400,
            idle_timeout_ms: 800,
            reassembly: ReassemblyLimits {
                timeout_ms: 300,
                ..Settings::default().reassembly
            },
            ..Settings::default()
        },
        auth: Jt808Auth::Open,
        tls: None,
        max_connections: 64,
        bind_identity: false,
        allow_plain: false,
        max_terminals: 100_000,
        buffered: Arc::new(roadedge::limits::ByteBudget::default()),
    };
    spawn(
        listener,
        settings,
        store.clone(),
        plane,
        metrics.clone(),
        shutdown.clone(),
    );
    Server {
        address,
        store,
        metrics,
        shutdown,
        _dir: dir,
    }
}

impl Server {
    async fn terminal(&self, index: usize) -> Terminal {
        let phone = phone_for(13_700_000_000, index, Edition::V2013);
        tokio::time::timeout(STEP, Terminal::connect(&self.address, None, phone, Edition::V2013))
            .await
            .unwrap()
            .unwrap()
    }

    async fn online(&self, index: usize) -> Terminal {
        let mut t = self.terminal(index).await;
        let code = t.register(STEP).await.unwrap();
        assert!(t.authenticate(&code, STEP).await.unwrap());
        t
    }

    async fn outbox_rows(&self, msg_id: u16) -> i64 {
        let pattern = format!("%\"msg_id\":{msg_id},%");
        self.store
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM outbox WHERE CAST(payload AS TEXT) LIKE ?1",
                    [pattern],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap()
    }

    fn bad(&self) -> u64 {
        self.metrics.jt808.frames_bad.load(Relaxed)
    }
}

/// Waits for the server to close `t`, answering nothing; returns how long it took.
async fn closed_within(t: &mut Terminal, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match t.recv(limit).await {
            Err(SimError::Closed) | Err(SimError::Io(_)) => return start.elapsed(),
            Err(SimError::Timeout(_)) => panic!("the connection was still open after {limit:?}"),
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_authentication_is_refused_stored_nowhere_and_the_connection_closed() {
    let s = server().await;
    let mut t = s.terminal(1).await;
    let serial = t.send(Body::Location(location(1, 0))).await.unwrap();
    let reply = t.recv(STEP).await.unwrap();
    match reply.body {
        Body::PlatformGeneralReply(g) => {
            assert_eq!(
                (g.reply_id, g.reply_serial, g.result),
                (ids::LOCATION, serial, general_result::FAILED)
            )
        }
        other => panic!("{other:?}"),
    }
    closed_within(&mut t, STEP).await;
    assert_eq!(s.outbox_rows(ids::LOCATION).await, 0);
    assert!(s.bad() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_frame_is_cut_at_the_frame_cap_and_the_connection_still_serves() {
    let s = server().await;
    let mut t = s.terminal(2).await;
    // A start flag and then 256 KiB without an end flag: never buffered whole.
    let mut junk = vec![0x7E];
    junk.extend(std::iter::repeat_n(0x30, 256 * 1024));
    t.write_raw(&junk).await.unwrap();
    let code = t.register(STEP).await.expect("a valid frame after the junk is served");
    assert!(t.authenticate(&code, STEP).await.unwrap());
    assert!(s.bad() >= 1, "the oversized frame is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_oversized_frames_closes_the_connection() {
    let s = server().await;
    let mut t = s.online(3).await;
    let mut junk = Vec::new();
    for _ in 0..8 {
        junk.push(0x7E);
        junk.extend(std::iter::repeat_n(0x31, 2200));
    }
    junk.push(0x7E);
    t.write_raw(&junk).await.unwrap();
    closed_within(&mut t, STEP).await;
    assert!(s.bad() >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_corrupt_frames_are_skipped_and_counted_and_valid_frames_still_work() {
    let s = server().await;
    let mut t = s.online(4).await;
    let before = s.bad();
    // Line noise, then a frame with a bad checksum, then a good location.
    t.write_raw(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let header = t.header(ids::LOCATION);
    let mut frame = Message::new(header, Body::Location(location(9, 0)))
        .to_bytes()
        .unwrap()
        .to_vec();
    let checksum_at = frame.len() - 2;
    frame[checksum_at] ^= 0x55;
    if frame[checksum_at] == 0x7E || frame[checksum_at] == 0x7D {
        frame[checksum_at] ^= 0x01;
    }
    t.write_raw(&frame).await.unwrap();
    t.report(location(10, 0), STEP)
        .await
        .expect("the good location is acknowledged");
    assert!(s.bad() >= before + 2, "garbage and the bad checksum are both counted");
    assert_eq!(
        s.outbox_rows(ids::LOCATION).await,
        1,
        "only the good location is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_corrupt_frames_closes_the_connection() {
    let s = server().await;
    let mut t = s.online(5).await;
    for _ in 0..8 {
        // Well delimited, but 0x7D 0x03 is no escape.
        t.write_raw(&[0x7E, 0x02, 0x00, 0x7D, 0x03, 0x7E]).await.unwrap();
    }
    closed_within(&mut t, STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subpackage_flood_is_refused_past_the_reassembly_bounds_and_the_terminal_keeps_working() {
    let s = server().await;
    let mut t = s.online(6).await;
    let mut failed = 0;
    let mut ok = 0;
    for n in 0..100u16 {
        // Each packet opens its own transfer (a different total) that never completes.
        let mut header: Header = t.header(ids::UPLINK_PASS_THROUGH);
        header.subpackage = Some(Subpackage {
            total: 10 + n,
            index: 1,
        });
        let packet = Packet {
            header,
            body: bytes::Bytes::from(vec![0x41; 1000]),
        };
        t.write_raw(&packet.to_bytes().unwrap()).await.unwrap();
        match t.recv(STEP).await.unwrap().body {
            Body::PlatformGeneralReply(g) if g.result == general_result::OK => ok += 1,
            Body::PlatformGeneralReply(g) if g.result == general_result::FAILED => failed += 1,
            other => panic!("{other:?}"),
        }
    }
    let limits = Settings::default().reassembly;
    assert_eq!(ok, limits.max_transfers, "only the bounded number of transfers is held");
    assert_eq!(failed, 100 - limits.max_transfers);
    t.report(location(1, 0), STEP).await.expect("still served");
    assert_eq!(s.outbox_rows(ids::UPLINK_PASS_THROUGH).await, 0);
    // A complete small transfer still goes through.
    let packets = t
        .split(
            &Body::UplinkPassThrough(PassThrough {
                kind: 0x41,
                data: vec![1; 300],
            }),
            100,
            1,
        )
        .unwrap();
    let serials: Vec<u16> = packets.iter().map(|p| p.header.serial).collect();
    t.send_packets(&packets, &[0, 1, 2, 3]).await.unwrap();
    let answer = t.await_acks(ids::UPLINK_PASS_THROUGH, &serials, STEP).await;
    // The reassembler is full of the flood's transfers until they time out: a fifth is refused.
    assert!(matches!(answer, Err(SimError::Refused(_))), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subpackage_is_asked_for_with_0x8003_and_the_message_published_once_it_arrives() {
    let s = server().await;
    let mut t = s.online(11).await;
    let body = Body::UplinkPassThrough(PassThrough {
        kind: 0x41,
        data: vec![7; 250],
    });
    let packets = t.split(&body, 100, 1).unwrap();
    t.send_packets(&packets, &[0, 2]).await.unwrap();
    let first = packets[0].header.serial;
    let request = loop {
        let m = t.recv(STEP).await.unwrap();
        if let Body::PlatformResendRequest(r) = m.body {
            break r;
        }
    };
    assert_eq!(request.first_serial, first);
    assert_eq!(request.indexes, [2]);
    t.answer(&Message::new(
        Header::new(ids::PLATFORM_RESEND_REQUEST, t.phone, None, 0),
        Body::PlatformResendRequest(request),
    ))
    .await
    .unwrap();
    t.await_acks(ids::UPLINK_PASS_THROUGH, &[packets[1].header.serial], STEP)
        .await
        .unwrap();
    assert_eq!(s.outbox_rows(ids::UPLINK_PASS_THROUGH).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_authenticates_is_closed_after_the_auth_timeout() {
    let s = server().await;
    let mut t = s.terminal(7).await;
    let took = closed_within(&mut t, STEP).await;
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_client_that_goes_quiet_is_closed_after_the_idle_timeout() {
    let s = server().await;
    let mut t = s.online(8).await;
    let took = closed_within(&mut t, STEP).await;
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_phone_replaces_the_first() {
    let s = server().await;
    let mut first = s.online(9).await;
    let mut second = s.terminal(9).await;
    let code = second.register(STEP).await.unwrap();
    assert!(second.authenticate(&code, STEP).await.unwrap());
    closed_within(&mut first, STEP).await;
    second.report(location(1, 0), STEP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_under_another_phone_closes_the_connection() {
    let s = server().await;
    let mut t = s.online(10).await;
    t.phone = phone_for(13_700_000_000, 99, Edition::V2013);
    let _ = t.send(Body::Location(location(1, 0))).await;
    closed_within(&mut t, STEP).await;
    assert_eq!(s.outbox_rows(ids::LOCATION).await, 0);
}
