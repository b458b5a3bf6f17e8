//! `roadedge demo`: the whole appliance on one machine with nothing installed. A loopback MQTT
//! broker with TLS and client certificates (embedded rumqttd, throwaway CA made at start) stands
//! in for the cloud; simulated devices feed the appliance; a "cloud" client subscribed to
//! everything prints what arrives.

#[cfg(feature = "demo-broker")]
mod broker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

use crate::app::{self, RunOptions};
use crate::config::{parse_duration, Config, FileCheck};
use crate::sim::pki::TestCa;
use crate::sim::synthetic::SyntheticOptions;

/// Options of `roadedge demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Simulated devices.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Records per second over all simulated devices.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Stop after this long (e.g. 60s, 5m); runs until Ctrl-C when absent.
    #[arg(long)]
    pub duration: Option<String>,
    /// Simulated GB/T 32960 vehicles (half 2016, half 2025; 0 = none).
    #[arg(long, default_value_t = 20)]
    pub gbt32960_vehicles: usize,
    /// Simulated JT/T 808 terminals (half 2013, half 2019), one location per second each.
    #[arg(long, default_value_t = 4)]
    pub jt808_terminals: usize,
    /// State directory (certificates, configuration, database); a new temporary one by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs the demo until Ctrl-C or `--duration`.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::ops::logging::init("info,rumqttd=off,rumqttc=warn");
    let duration = args
        .duration
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("roadedge-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let ca = TestCa::new(&dir, "demo").context("making the demo CA")?;
    let broker_cert = ca.server("broker").context("broker certificate")?;
    let edge_cert = ca.client("edge", "demo-cabinet").context("edge certificate")?;
    let cloud_cert = ca.client("cloud", "cloud-viewer").context("cloud certificate")?;

    let port = broker_port(&dir, &ca.ca_file, &broker_cert)?;
    let gbt32960 = (args.gbt32960_vehicles > 0)
        .then(|| crate::sim::gbt32960::DemoVehicles::prepare(&ca, args.gbt32960_vehicles))
        .transpose()
        .context("GB/T 32960 vehicles")?;

    // Simulated GB/T 37987 readers on loopback; the appliance dials two, one dials in.
    let sims_stop = CancellationToken::new();
    let demo_readers = crate::sim::reader::demo_readers(sims_stop.clone())
        .await
        .context("starting the simulated readers")?;

    let jt808_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut config_text = format!(
        "# Written by `roadedge demo`.\nedge: {{id: demo-cabinet, site: {{name: \"demo site\", latitude: 31.2304, longitude: 121.4737}}}}\n\
         storage: {{path: {db}, max_bytes: 256MiB}}\n\
         uplink:\n  url: mqtts://127.0.0.1:{port}\n  ca_file: {ca}\n  cert_file: {cert}\n  key_file: {key}\n  metrics_interval: 10s\n\
         jt808: {{listen: \"127.0.0.1:{jt808_port}\"}}\n\
         logging: {{level: info}}\n{gbt32960}",
        db = dir.join("roadedge.db").display(),
        ca = ca.ca_file.display(),
        cert = edge_cert.cert.display(),
        key = edge_cert.key.display(),
        gbt32960 = gbt32960.as_ref().map(|g| g.config_section.as_str()).unwrap_or(""),
    );
    config_text.push_str(&demo_readers.yaml);
    let config_path = dir.join("roadedge.yaml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::parse(&config_text, FileCheck::Check).map_err(|e| anyhow::anyhow!("{e}"))?;

    let sub = format!(
        "mosquitto_sub -h 127.0.0.1 -p {port} --cafile {} --cert {} --key {} -t '#' -v",
        ca.ca_file.display(),
        cloud_cert.cert.display(),
        cloud_cert.key.display()
    );
    println!("roadedge demo {}", app::VERSION);
    println!("  state directory : {}", dir.display());
    println!("  configuration   : {}", config_path.display());
    println!(
        "  cloud broker    : mqtts://127.0.0.1:{port} (TLS, client certificates from {})",
        ca.ca_file.display()
    );
    println!("  watch the uplink: {sub}");
    println!(
        "  send a command  : mosquitto_pub -h 127.0.0.1 -p {port} --cafile {} --cert {} --key {} -t edge/demo-cabinet/cmd -m '{{\"request_id\":\"1\",\"action\":\"status\"}}'",
        ca.ca_file.display(),
        cloud_cert.cert.display(),
        cloud_cert.key.display()
    );
    println!("  web page        : not served by this build yet");
    println!("  readers         : {}; watch gbt37987/+/up/#", demo_readers.summary);
    println!(
        "  simulated       : {} devices at {} records/s; Ctrl-C to stop",
        args.devices, args.rate
    );

    let shutdown = crate::cli::stop_token(duration);
    let tls = Arc::new(crate::tls::client_config(
        Some(&ca.ca_file),
        Some((&cloud_cert.cert, &cloud_cert.key)),
    )?);
    if let Some(vehicles) = gbt32960 {
        println!("  GB/T 32960      : {}", vehicles.describe());
        tokio::spawn(vehicles.run(shutdown.clone()));
    }
    let received = Arc::new(AtomicU64::new(0));
    tokio::spawn(watch_cloud(port, tls, received.clone(), shutdown.clone()));

    {
        // Simulated JT/T 808 terminals; they retry until the appliance listens.
        let options = crate::sim::jt808::SimOptions {
            server: format!("127.0.0.1:{jt808_port}"),
            terminals: args.jt808_terminals,
            edition: crate::sim::jt808::SimEdition::Mixed,
            rate: args.jt808_terminals as f64,
            subpackage_every: 10,
            ..Default::default()
        };
        println!(
            "  JT/T 808        : {} simulated terminals (2013 and 2019) on 127.0.0.1:{jt808_port}; query one: mosquitto_pub ... -t jt808/013900000000/013900000000/dn -m '{{\"request_id\":\"q1\",\"header\":{{\"msg_id\":33028}}}}'",
            args.jt808_terminals
        );
        let stats = Arc::new(crate::sim::jt808::SimStats::default());
        tokio::spawn(crate::sim::jt808::run(options, stats, shutdown.clone()));
    }
    let options = RunOptions {
        synthetic: Some(SyntheticOptions {
            devices: args.devices,
            rate: args.rate,
            critical_every: 50,
            run_id: "demo".into(),
            report_commits: false,
            padding: 0,
        }),
    };
    app::run_with(config, options, shutdown, |a| {
        if let Some(service) = &a.readers {
            demo_readers.apply_rules(service.clone());
        }
    })
    .await?;
    sims_stop.cancel();
    println!("demo stopped: the cloud received {} messages", received.load(Relaxed));
    Ok(())
}

#[cfg(feature = "demo-broker")]
fn broker_port(
    dir: &std::path::Path,
    ca_file: &std::path::Path,
    cert: &crate::sim::pki::CertFiles,
) -> anyhow::Result<u16> {
    broker::start(dir, ca_file, cert)
}

#[cfg(not(feature = "demo-broker"))]
fn broker_port(_: &std::path::Path, _: &std::path::Path, _: &crate::sim::pki::CertFiles) -> anyhow::Result<u16> {
    anyhow::bail!("this build has no embedded demo broker (built without the `demo-broker` feature)")
}

/// The "cloud": prints a line per second with what arrived.
async fn watch_cloud(port: u16, tls: Arc<rustls::ClientConfig>, received: Arc<AtomicU64>, shutdown: CancellationToken) {
    let mut options = MqttOptions::new("demo-cloud", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let _ = client.subscribe("#", QoS::AtLeastOnce).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_topic = String::new();
    let mut last_len = 0;
    let mut printed = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let n = received.load(Relaxed);
                if n != printed {
                    println!("cloud: {n} messages received; latest {last_topic} ({last_len} bytes)");
                    printed = n;
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received.fetch_add(1, Relaxed);
                    last_len = p.payload.len();
                    last_topic = p.topic;
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("#", QoS::AtLeastOnce).await;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}
