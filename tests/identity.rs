//! Stolen identities: a device's claimed identity bound to its client certificate
//! (`tls.bind_identity`). A GB/T 32960 certificate for one VIN cannot log in as another; an
//! unbound plain-TCP login cannot evict a bound vehicle; a JT/T 808 re-registration invalidates
//! the old auth code; a dial-in reader with another reader's certificate, or an unlisted serial,
//! is refused. The appliance runs in the test process (no broker needed: the uplink retries).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::{free_port, start_appliance, RunningAppliance};
use roadedge::protocol::gbt32960::{Command, Edition};
use roadedge::protocol::gbt37987::Dialect;
use roadedge::protocol::jt808::{Edition as Jt808Edition, Phone};
use roadedge::sim::gbt32960::{heartbeat_frame, ClientTls, Terminal};
use roadedge::sim::pki::{CertFiles, TestCa};
use roadedge::sim::reader::{SimMode, SimReader, SimReaderOptions};
use tokio_util::sync::CancellationToken;

const VIN_A: &str = "LSVAX60E1N2000001";
const VIN_B: &str = "LSVAX60E1N2000002";

fn config(dir: &Path, sections: &str) -> PathBuf {
    let text = format!(
        "edge: {{id: cab-1}}\nstorage: {{path: {}, max_bytes: 64MiB}}\nuplink: {{url: 'mqtt://127.0.0.1:{}'}}\nlogging: {{level: info}}\n{sections}",
        dir.join("edge.db").display(),
        free_port()
    );
    let path = dir.join("roadedge.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_section(ca: &TestCa, server: &CertFiles, extra: &str) -> String {
    format!(
        "{{cert_file: {}, key_file: {}, client_ca_file: {}{extra}}}",
        server.cert.display(),
        server.key.display(),
        ca.ca_file.display()
    )
}

fn client(ca: &TestCa, cert: &CertFiles) -> ClientTls {
    ClientTls::from_files(&ca.ca_file, Some((&cert.cert, &cert.key)), "127.0.0.1").unwrap()
}

async fn heartbeat_answered(t: &mut Terminal) -> bool {
    let frame = heartbeat_frame(t.vin, t.edition);
    if t.send(&frame).await.is_err() {
        return false;
    }
    t.reply_to(Command::HEARTBEAT, Duration::from_secs(5)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_one_vin_cannot_log_in_as_another_and_plain_tcp_cannot_evict_a_bound_vehicle() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "vehicles").unwrap();
    let server = ca.server("gateway").unwrap();
    let cert_a = ca.client("vehicle-a", VIN_A).unwrap();
    let port = free_port();
    let path = config(
        dir.path(),
        &format!(
            "gbt32960:\n  listen: 127.0.0.1:{port}\n  tls: {}\n",
            tls_section(&ca, &server, ", bind_identity: true, allow_plain: true")
        ),
    );
    let app = start_appliance(&path).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();

    // The certificate names VIN A: logging in as B closes the connection without a reply.
    let mut thief = Terminal::connect(addr, Some(&client(&ca, &cert_a)), VIN_B, Edition::V2016)
        .await
        .unwrap();
    let stolen = thief.login().await;
    assert!(
        stolen.is_err(),
        "a certificate for {VIN_A} logged in as {VIN_B}: {stolen:?}"
    );
    assert_eq!(app.metrics.limits.identity_mismatch_total.load(Relaxed), 1);

    // The real vehicle A logs in, bound to its certificate.
    let mut vehicle = Terminal::connect(addr, Some(&client(&ca, &cert_a)), VIN_A, Edition::V2016)
        .await
        .unwrap();
    vehicle.login().await.expect("the bound vehicle logs in");

    // A plain-TCP login as A (unbound) may not take the VIN from the bound vehicle.
    let mut plain = Terminal::connect(addr, None, VIN_A, Edition::V2016).await.unwrap();
    let evicted = plain.login().await;
    assert!(
        evicted.is_err(),
        "an unbound login replaced the bound vehicle: {evicted:?}"
    );
    assert_eq!(app.metrics.limits.replace_refused_total.load(Relaxed), 1);
    assert!(
        heartbeat_answered(&mut vehicle).await,
        "the bound vehicle lost its session"
    );

    // An unbound login of a VIN nobody holds is fine on this port (a mixed fleet).
    let mut other = Terminal::connect(addr, None, VIN_B, Edition::V2016).await.unwrap();
    other.login().await.expect("an unbound vehicle of its own VIN");
    println!(
        "32960 identity: mismatch refused {}, replacement refused {}",
        app.metrics.limits.identity_mismatch_total.load(Relaxed),
        app.metrics.limits.replace_refused_total.load(Relaxed)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_deny_unbound_even_a_plain_reconnect_cannot_replace_and_a_bound_one_can() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "vehicles").unwrap();
    let server = ca.server("gateway").unwrap();
    let cert_a = ca.client("vehicle-a", VIN_A).unwrap();
    let port = free_port();
    let path = config(
        dir.path(),
        &format!(
            "gbt32960:\n  listen: 127.0.0.1:{port}\n  replace: deny-unbound\n  tls: {}\n",
            tls_section(&ca, &server, ", bind_identity: true, allow_plain: true")
        ),
    );
    let app = start_appliance(&path).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut first = Terminal::connect(addr, None, VIN_B, Edition::V2016).await.unwrap();
    first.login().await.unwrap();
    let mut second = Terminal::connect(addr, None, VIN_B, Edition::V2016).await.unwrap();
    assert!(
        second.login().await.is_err(),
        "deny-unbound let an unbound login replace"
    );
    assert!(heartbeat_answered(&mut first).await);
    let mut bound = Terminal::connect(addr, Some(&client(&ca, &cert_a)), VIN_A, Edition::V2016)
        .await
        .unwrap();
    bound.login().await.unwrap();
    let mut bound_again = Terminal::connect(addr, Some(&client(&ca, &cert_a)), VIN_A, Edition::V2016)
        .await
        .unwrap();
    bound_again.login().await.expect("a bound login replaces its own VIN");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_808_re_registration_invalidates_the_old_auth_code() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = config(dir.path(), &format!("jt808:\n  listen: 127.0.0.1:{port}\n"));
    let app = start_appliance(&path).await;
    let server = format!("127.0.0.1:{port}");
    let phone = Phone::parse("013912345678").unwrap();
    let limit = Duration::from_secs(10);
    let mut t = roadedge::sim::jt808::Terminal::connect(&server, None, phone, Jt808Edition::V2013)
        .await
        .unwrap();
    let old = t.register(limit).await.unwrap();
    // Someone registers the phone again (the terminal after a reset, or an impostor): a new code.
    let mut again = roadedge::sim::jt808::Terminal::connect(&server, None, phone, Jt808Edition::V2013)
        .await
        .unwrap();
    let new = again.register(limit).await.unwrap();
    assert_ne!(old, new, "re-registration handed out the existing code");
    let mut with_old = roadedge::sim::jt808::Terminal::connect(&server, None, phone, Jt808Edition::V2013)
        .await
        .unwrap();
    assert!(
        !with_old.authenticate(&old, limit).await.unwrap(),
        "the old code still authenticates"
    );
    let mut with_new = roadedge::sim::jt808::Terminal::connect(&server, None, phone, Jt808Edition::V2013)
        .await
        .unwrap();
    assert!(with_new.authenticate(&new, limit).await.unwrap());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_808_certificate_for_another_phone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "terminals").unwrap();
    let server = ca.server("gateway").unwrap();
    let cert = ca.client("terminal", "013900000001").unwrap();
    let port = free_port();
    let path = config(
        dir.path(),
        &format!(
            "jt808:\n  listen: 127.0.0.1:{port}\n  tls: {}\n",
            tls_section(&ca, &server, ", bind_identity: true")
        ),
    );
    let app = start_appliance(&path).await;
    let tls = roadedge::sim::jt808::SimTls {
        ca_file: ca.ca_file.clone(),
        client: Some((cert.cert.clone(), cert.key.clone())),
    };
    let server = format!("127.0.0.1:{port}");
    let limit = Duration::from_secs(5);
    let mine = Phone::parse("013900000001").unwrap();
    let mut t = roadedge::sim::jt808::Terminal::connect(&server, Some(&tls), mine, Jt808Edition::V2013)
        .await
        .unwrap();
    let code = t.register(limit).await.expect("its own phone registers");
    assert!(t.authenticate(&code, limit).await.unwrap());
    let other = Phone::parse("013900000002").unwrap();
    let mut thief = roadedge::sim::jt808::Terminal::connect(&server, Some(&tls), other, Jt808Edition::V2013)
        .await
        .unwrap();
    assert!(
        thief.register(limit).await.is_err(),
        "registered a phone its certificate does not name"
    );
    assert_eq!(app.metrics.limits.identity_mismatch_total.load(Relaxed), 1);
    app.stop().await;
}

fn reader(sn: [u8; 8], listen: u16, tls: Option<(&TestCa, &CertFiles)>) -> SimReaderOptions {
    let mut o = SimReaderOptions::new(
        sn,
        Dialect::Gbt37987_2019,
        SimMode::Dial(format!("127.0.0.1:{listen}").parse().unwrap()),
    );
    o.tls = tls.map(|(ca, cert)| {
        std::sync::Arc::new(roadedge::tls::client_config(Some(&ca.ca_file), Some((&cert.cert, &cert.key))).unwrap())
    });
    o
}

fn hex(sn: &[u8; 8]) -> String {
    sn.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether reader `id` is up within `limit`.
async fn reader_up(app: &RunningAppliance, id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let up = app.metrics.readers.lock().unwrap().get(id).is_some_and(|s| s.link_up);
        if up {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_in_reader_with_another_readers_certificate_or_an_unlisted_serial_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "readers").unwrap();
    let server = ca.server("edge").unwrap();
    let east: [u8; 8] = *b"BL000001";
    let west: [u8; 8] = *b"BL000002";
    let guest: [u8; 8] = *b"BL000003";
    let stranger: [u8; 8] = *b"BL000009";
    let east_cert = ca.client("east", &hex(&east)).unwrap();
    let guest_cert = ca.client("guest", &hex(&guest)).unwrap();
    let listen = free_port();
    let path = config(
        dir.path(),
        &format!(
            "readers:\n  listen: 127.0.0.1:{listen}\n  keepalive_interval: 1s\n  tls: {}\n  allowed_serials: [{}]\n  devices:\n    - {{id: east, sn: {}}}\n    - {{id: west, sn: {}}}\n",
            tls_section(&ca, &server, ", bind_identity: true"),
            hex(&guest),
            hex(&east),
            hex(&west)
        ),
    );
    let app = start_appliance(&path).await;
    let stop = CancellationToken::new();
    // East with its own certificate: up.
    let _east = SimReader::spawn(reader(east, listen, Some((&ca, &east_cert))), stop.clone())
        .await
        .unwrap();
    assert!(
        reader_up(&app, "east", Duration::from_secs(10)).await,
        "east did not come up"
    );
    // West presenting east's certificate: refused, and east keeps its link.
    let _west = SimReader::spawn(reader(west, listen, Some((&ca, &east_cert))), stop.clone())
        .await
        .unwrap();
    assert!(
        !reader_up(&app, "west", Duration::from_secs(3)).await,
        "west came up with east's certificate"
    );
    assert!(app.metrics.limits.identity_mismatch_total.load(Relaxed) >= 1);
    // A listed guest with its certificate: up under its serial.
    let _guest = SimReader::spawn(reader(guest, listen, Some((&ca, &guest_cert))), stop.clone())
        .await
        .unwrap();
    assert!(
        reader_up(&app, &hex(&guest), Duration::from_secs(10)).await,
        "the listed guest was refused"
    );
    // An unlisted serial: refused even with a valid certificate naming it.
    let stranger_cert = ca.client("stranger", &hex(&stranger)).unwrap();
    let _stranger = SimReader::spawn(reader(stranger, listen, Some((&ca, &stranger_cert))), stop.clone())
        .await
        .unwrap();
    assert!(!reader_up(&app, &hex(&stranger), Duration::from_secs(3)).await);
    assert!(app.metrics.limits.reader_refused_total.load(Relaxed) >= 1);
    assert!(
        reader_up(&app, "east", Duration::from_secs(1)).await,
        "east lost its link"
    );
    println!(
        "readers: identity mismatches {}, unlisted serials refused {}",
        app.metrics.limits.identity_mismatch_total.load(Relaxed),
        app.metrics.limits.reader_refused_total.load(Relaxed)
    );
    stop.cancel();
    app.stop().await;
}
