//! The demo's cloud: an embedded rumqttd broker on loopback with TLS and required client
//! certificates (behind the `demo-broker` feature; cabinet builds can leave it out).

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::sim::pki::CertFiles;

/// Starts the broker on a free loopback port and returns the port.
pub fn start(_dir: &Path, ca_file: &Path, cert: &CertFiles) -> anyhow::Result<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104857600,
            "max_segment_count": 10
        },
        "v4": {
            "1": {
                "name": "demo-v4-tls",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "tls": {
                    "capath": ca_file.display().to_string(),
                    "certpath": cert.cert.display().to_string(),
                    "keypath": cert.key.display().to_string()
                },
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 4194304,
                    "max_inflight_count": 500,
                    "dynamic_filters": true
                }
            }
        }
    });
    let config: rumqttd::Config = serde_json::from_value(config).context("demo broker configuration")?;
    std::thread::Builder::new().name("demo-broker".into()).spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!("demo broker stopped: {e}");
        }
    })?;
    // Wait until it accepts connections.
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("the demo broker did not start listening on 127.0.0.1:{port}")
}
