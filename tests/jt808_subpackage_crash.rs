//! JT/T 808 subpackages across kill -9 of the appliance (`roadedge run` as a child process):
//! a packet that got 0x8001 must end up in the published message after the restart, or the
//! restarted appliance must ask the terminal for it again with 0x8003. Intermediate packets are
//! acknowledged on arrival while the reassembly lives in memory, so after a kill the new process
//! learns of the transfer from the packets that follow and asks for the ones it lacks.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use roadedge::protocol::jt808::{ids, BatchLocation, Body, Edition, Packet, Phone};
use roadedge::sim::jt808::{location, phone_for, SimError, Terminal};

const STEP: Duration = Duration::from_secs(10);
/// Mileages of the batch's 40 locations (unique within the test).
const MILEAGE: u32 = 7000;

/// Connects (retrying while the restarted appliance is not listening yet) and authenticates.
async fn reconnect(server: &str, phone: Phone, code: &[u8]) -> Terminal {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(Ok(mut t)) = tokio::time::timeout(STEP, Terminal::connect(server, None, phone, Edition::V2013)).await
        {
            if let Ok(true) = t.authenticate(code, STEP).await {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted appliance did not take the terminal back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the platform's 0x8003 and resends the packets it names, from `packets`; returns the
/// indexes asked for.
async fn serve_resend_request(t: &mut Terminal, packets: &[Packet]) -> Vec<u16> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no 0x8003 from the restarted appliance");
        match t.recv(left).await {
            Ok(m) => {
                if let Body::PlatformResendRequest(request) = &m.body {
                    let order: Vec<usize> = request.indexes.iter().map(|i| usize::from(*i) - 1).collect();
                    t.send_packets(packets, &order).await.unwrap();
                    let serials: Vec<u16> = order.iter().map(|i| packets[*i].header.serial).collect();
                    t.await_acks(ids::BATCH_LOCATION, &serials, STEP).await.unwrap();
                    return request.indexes.clone();
                }
            }
            Err(SimError::Timeout(_)) => {}
            Err(e) => panic!("the terminal's link failed: {e}"),
        }
    }
}

/// The published batches of `phone`: the mileages of each.
fn batches(cloud: &Cloud, phone: &Phone) -> Vec<BTreeSet<u64>> {
    cloud
        .on_topic(&format!("jt808/{phone}/{phone}/up"))
        .into_iter()
        .map(|m| m.payload)
        .filter(|p| p["header"]["msg_id"] == ids::BATCH_LOCATION)
        .map(|p| {
            p["body"]["location"]
                .as_array()
                .map(|items| items.iter().filter_map(|l| l["extra"]["mileage"].as_u64()).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// The world of one test: the broker and cloud, the configuration, the 808 server address.
struct Setup {
    world: World,
    config: std::path::PathBuf,
    server: String,
}

async fn world(name: &str) -> Setup {
    let world = World::start(name).await;
    let port = free_port();
    // A short timeout: the restarted appliance asks for the missing packets 2 s after the last one.
    let config = world
        .config()
        .max_bytes("64MiB")
        .jt808(port, "  reassembly_timeout: 2s\n")
        .write();
    Setup {
        world,
        config,
        server: format!("127.0.0.1:{port}"),
    }
}

fn batch_body() -> Body {
    Body::BatchLocation(BatchLocation {
        location_type: 1,
        items: (0..40).map(|i| location(MILEAGE + i, 0)).collect(),
    })
}

fn expected() -> BTreeSet<u64> {
    (0..40).map(|i| u64::from(MILEAGE + i)).collect()
}

async fn wait_published(cloud: &Cloud, phone: &Phone) -> Vec<BTreeSet<u64>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = batches(cloud, phone);
        if got.iter().any(|b| *b == expected()) || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_acknowledged_before_a_kill_between_packets_are_asked_for_again_and_published() {
    let w = world("between").await;
    let mut edge = EdgeChild::spawn(&w.config, "1");
    let phone = phone_for(13_900_000_800, 1, Edition::V2013);
    let mut t = reconnect_first(&w.server, phone).await;
    let code = t.1.clone();
    let packets = t.0.split(&batch_body(), 200, 1).unwrap();
    let n = packets.len();
    assert!(n >= 4, "the batch must span several packets: {n}");
    let k = n / 2;
    // The first half, each acknowledged on arrival.
    t.0.send_packets(&packets, &(0..k).collect::<Vec<_>>()).await.unwrap();
    let first: Vec<u16> = packets[..k].iter().map(|p| p.header.serial).collect();
    t.0.await_acks(ids::BATCH_LOCATION, &first, STEP).await.unwrap();

    edge.kill9();
    edge = EdgeChild::spawn(&w.config, "2");
    let mut t = reconnect(&w.server, phone, &code).await;
    // The rest of the transfer on the new connection; the restarted appliance lacks the first half.
    t.send_packets(&packets, &(k..n - 1).collect::<Vec<_>>()).await.unwrap();
    let rest: Vec<u16> = packets[k..n - 1].iter().map(|p| p.header.serial).collect();
    t.await_acks(ids::BATCH_LOCATION, &rest, STEP).await.unwrap();
    t.send_packets(&packets, &[n - 1]).await.unwrap();
    let asked = serve_resend_request(&mut t, &packets).await;
    assert_eq!(
        asked,
        (1..=k as u16).collect::<Vec<_>>(),
        "0x8003 names exactly the packets acknowledged before the kill"
    );
    let published = wait_published(&w.world.cloud, &phone).await;
    println!("kill -9 between packets: {n} packets, {k} acknowledged before the kill, 0x8003 asked for {asked:?}, published batches {}", published.len());
    assert!(
        published.iter().any(|b| *b == expected()),
        "the batch with every acknowledged packet was not published: {published:?}"
    );
    edge.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_the_last_packet_and_its_commit_loses_nothing_acknowledged() {
    let w = world("last").await;
    let mut edge = EdgeChild::spawn(&w.config, "1");
    let phone = phone_for(13_900_000_800, 2, Edition::V2013);
    let mut t = reconnect_first(&w.server, phone).await;
    let code = t.1.clone();
    let packets = t.0.split(&batch_body(), 200, 1).unwrap();
    let n = packets.len();
    let all_but_last: Vec<u16> = packets[..n - 1].iter().map(|p| p.header.serial).collect();
    t.0.send_packets(&packets, &(0..n - 1).collect::<Vec<_>>())
        .await
        .unwrap();
    t.0.await_acks(ids::BATCH_LOCATION, &all_but_last, STEP).await.unwrap();
    // The last packet completes the transfer; the appliance dies while committing it.
    t.0.send_packets(&packets, &[n - 1]).await.unwrap();
    edge.kill9();
    let last_acked =
        t.0.await_acks(
            ids::BATCH_LOCATION,
            &[packets[n - 1].header.serial],
            Duration::from_millis(300),
        )
        .await
        .is_ok();
    edge = EdgeChild::spawn(&w.config, "2");
    if !last_acked {
        // Not acknowledged: the terminal sends it again, and the new process asks for the rest.
        let mut t = reconnect(&w.server, phone, &code).await;
        t.send_packets(&packets, &[n - 1]).await.unwrap();
        let asked = serve_resend_request(&mut t, &packets).await;
        assert_eq!(asked, (1..n as u16).collect::<Vec<_>>());
    }
    let published = wait_published(&w.world.cloud, &phone).await;
    println!(
        "kill -9 between the last packet and its commit: last packet acknowledged before the kill: {last_acked}; published batches {}",
        published.len()
    );
    assert!(
        published.iter().any(|b| *b == expected()),
        "the acknowledged batch was not published: {published:?}"
    );
    edge.kill9();
}

/// The first connection: register and authenticate; returns the terminal and its auth code.
async fn reconnect_first(server: &str, phone: Phone) -> (Terminal, Vec<u8>) {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(Ok(mut t)) = tokio::time::timeout(STEP, Terminal::connect(server, None, phone, Edition::V2013)).await
        {
            let code = t.register(STEP).await.expect("registered");
            assert!(
                t.authenticate(&code, STEP).await.expect("auth answered"),
                "auth refused"
            );
            return (t, code);
        }
        assert!(Instant::now() < deadline, "the appliance did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
