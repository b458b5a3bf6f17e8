//! JT/T 808 durability under kill -9: 20 simulated terminals report locations as fast as the
//! acknowledgements return while the appliance process (`roadedge run`) is SIGKILLed and
//! restarted several times. Every location whose 0x8001 a terminal received must reach the broker.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use roadedge::sim::jt808::{run, SimEdition, SimOptions, SimStats};
use tokio_util::sync::CancellationToken;

/// Waits (bounded) until `n` more locations were acknowledged than `from`.
async fn wait_acks(stats: &SimStats, from: u64, n: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let now = stats.acked.load(Relaxed);
        if now >= from + n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "only {} acknowledgements within {limit:?}",
            now - from
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_location_reaches_the_broker_across_kill_9_restarts() {
    let world = World::start("jt808-crash").await;
    let cloud = &world.cloud;
    let port = free_port();
    let config = world.config().jt808(port, "").write();

    let mut edge = EdgeChild::spawn(&config, "0");
    let stats = Arc::new(SimStats::default());
    let stop_sim = CancellationToken::new();
    let sim = tokio::spawn(run(
        SimOptions {
            server: format!("127.0.0.1:{port}"),
            terminals: 20,
            edition: SimEdition::Mixed,
            rate: 0.0,
            record_acks: true,
            ..SimOptions::default()
        },
        stats.clone(),
        stop_sim.clone(),
    ));

    let kills = 4;
    let mut acked = wait_acks(&stats, 0, 200, Duration::from_secs(30)).await;
    for round in 1..=kills {
        // Kill at an arbitrary moment of the flow, mid-commit for some terminals.
        tokio::time::sleep(Duration::from_millis(300 + 170 * round as u64)).await;
        edge.kill9();
        let at_kill = stats.acked.load(Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        edge = EdgeChild::spawn(&config, &round.to_string());
        acked = wait_acks(&stats, at_kill.max(acked), 200, Duration::from_secs(30)).await;
    }
    stop_sim.cancel();
    tokio::time::timeout(Duration::from_secs(20), sim)
        .await
        .expect("simulator stopped")
        .unwrap();

    let acknowledged: BTreeSet<(String, u64)> = stats
        .acked_log
        .lock()
        .unwrap()
        .iter()
        .map(|(p, n)| (p.clone(), u64::from(*n)))
        .collect();
    let delivered = |m: &[Received]| -> BTreeSet<(String, u64)> {
        m.iter()
            .filter(|m| m.topic.starts_with("jt808/") && m.payload["header"]["msg_id"] == 0x0200)
            .filter_map(|m| {
                Some((
                    m.payload["header"]["phone"].as_str()?.to_string(),
                    m.payload["body"]["extra"]["mileage"].as_u64()?,
                ))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = delivered(&cloud.messages.lock().unwrap());
        let lost = acknowledged.difference(&got).count();
        if lost == 0 || Instant::now() > deadline {
            println!(
                "JT/T 808 kill -9 x{kills}: acked {} / delivered {} / lost {lost} (duplicates are allowed; {} sim reconnects)",
                acknowledged.len(),
                got.intersection(&acknowledged).count(),
                stats.connects.load(Relaxed)
            );
            assert_eq!(lost, 0, "acknowledged locations never reached the broker");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        acknowledged.len() >= 1000,
        "the load was too light to mean anything: {}",
        acknowledged.len()
    );
    assert!(
        stats.connects.load(Relaxed) >= 20 * (kills as u64 + 1) / 2,
        "terminals did not reconnect"
    );
    edge.kill9();
}
