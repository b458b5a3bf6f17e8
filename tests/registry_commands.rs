//! The identity registry's edge commands through a real mosquitto with mutual TLS: each
//! `registry.*` command sent on `edge/{id}/cmd` gets exactly one result on `edge/{id}/cmd/result`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_commands_through_the_broker_each_get_exactly_one_result() {
    let (dir, pki, broker, cloud) = World::start("registry").await.into_parts();
    let config = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let edge = start_appliance(&config).await;
    cloud.wait_edge_online().await;

    let commands = [
        json!({"request_id": "u1", "action": "registry.upsert", "vehicles": [
            {"plate": "京A12345", "plate_color": 1, "phone": "013900000001", "tid": "e2801234"},
            {"plate": "京B00001", "vin": "LSIM0000000000001"},
            {"plate": "bad plate!"}
        ]}),
        json!({"request_id": "l1", "action": "registry.list", "query": "京", "limit": 10}),
        json!({"request_id": "d1", "action": "registry.delete", "plates": ["京B00001", "京Z99999"]}),
        json!({"request_id": "l2", "action": "registry.list"}),
        json!({"request_id": "u2", "action": "registry.upsert", "vehicles": "not a list"}),
    ];
    // One after the other: each must see the previous one's effect.
    for command in &commands {
        let id = command["request_id"].as_str().unwrap().to_string();
        cloud.publish("edge/cab-1/cmd", command.clone()).await;
        cloud
            .wait_for(&format!("the result of {id}"), Duration::from_secs(10), |m| {
                m.iter()
                    .any(|m| m.topic == "edge/cab-1/cmd/result" && m.payload["request_id"] == id.as_str())
            })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results = cloud.on_topic("edge/cab-1/cmd/result");
    assert_eq!(results.len(), commands.len(), "{results:?}");
    let by_id = |id: &str| {
        let of_id: Vec<_> = results.iter().filter(|r| r.payload["request_id"] == id).collect();
        assert_eq!(of_id.len(), 1, "{id}: {results:?}");
        of_id[0].payload.clone()
    };
    let up = by_id("u1");
    assert_eq!(up["ok"], true, "{up}");
    assert_eq!(up["answer"]["created"], 2);
    assert_eq!(up["answer"]["errors"][0]["index"], 2);
    let listed = by_id("l1");
    assert_eq!(listed["answer"]["total"], 2, "{listed}");
    let deleted = by_id("d1");
    assert_eq!(deleted["answer"]["deleted"], 1);
    assert_eq!(deleted["answer"]["not_found"], json!(["京Z99999"]));
    let after = by_id("l2");
    assert_eq!(after["answer"]["total"], 1);
    assert_eq!(after["answer"]["vehicles"][0]["plate"], "京A12345");
    assert_eq!(after["answer"]["vehicles"][0]["phone"], "013900000001");
    assert_eq!(after["answer"]["vehicles"][0]["manual"], true);
    assert_eq!(by_id("u2")["result"], "rejected");
    // The page reaches the same rows through the service.
    let v = edge.registry.get("京A12345").await.unwrap().unwrap();
    assert_eq!(v.tid.as_deref(), Some("e2801234"));
    edge.stop().await;
}
