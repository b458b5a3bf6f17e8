//! `roadedge demo`: the whole appliance on one machine with nothing installed. A loopback MQTT
//! broker with TLS and client certificates (embedded rumqttd, throwaway CA made at start) stands
//! in for the cloud; simulated GB/T 37987 readers, GB/T 32960 vehicles and JT/T 808 terminals
//! speak their real protocols to the appliance; the web page is served with a generated admin
//! password; a "cloud" client subscribed to everything prints what arrives.
//!
//! What it prints goes to stdout and is meant to be copied: the `mosquitto_sub`/`mosquitto_pub`
//! lines name the broker `localhost` (the name its certificate carries; an IP literal is no TLS
//! server name). When stdout goes away (piped into `head`, a closed terminal), the demo stops
//! cleanly instead of panicking on the write.

#[cfg(feature = "demo-broker")]
mod broker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

use crate::app::{self, RunOptions};
use crate::config::{parse_duration, Config, FileCheck};
use crate::sim::pki::TestCa;

/// Options of `roadedge demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 60s, 5m); runs until Ctrl-C when absent.
    #[arg(long)]
    pub duration: Option<String>,
    /// Simulated GB/T 32960 vehicles (half 2016, half 2025; 0 = none).
    #[arg(long, default_value_t = 20)]
    pub gbt32960_vehicles: usize,
    /// Simulated JT/T 808 terminals (half 2013, half 2019), one location per second each.
    #[arg(long, default_value_t = 4)]
    pub jt808_terminals: usize,
    /// Where the web page listens (another free port is taken when this one is busy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub web: std::net::SocketAddr,
    /// State directory (certificates, configuration, database); a new temporary one by default.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Prints a line for the user; when stdout is gone, stops the demo instead of panicking.
struct Out {
    stop: CancellationToken,
}

impl Out {
    fn line(&self, text: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() && !self.stop.is_cancelled() {
            tracing::info!("stdout is closed: stopping the demo");
            self.stop.cancel();
        }
    }
}

/// A password for the demo's admin: 12 characters nobody misreads (no 0/O, 1/l/I).
fn demo_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..12)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// `preferred` when it is free, else a free port on the same address.
fn web_address(preferred: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    match std::net::TcpListener::bind(preferred) {
        Ok(l) => Ok(l.local_addr()?),
        Err(_) => Ok(std::net::TcpListener::bind((preferred.ip(), 0))?.local_addr()?),
    }
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
    // Scripted traffic past the site (the same as `roadedge sim traffic`): a gantry reader the
    // appliance dials, one tagged 808 and one tagged 32960 vehicle, one without a tag, one
    // cloned tag.
    let site = crate::fusion::geo::GeoPoint::new(31.2304, 121.4737);
    let script = crate::sim::traffic::Script::new(
        site,
        1,
        usize::from(gbt32960.is_some()),
        Duration::from_secs(5),
        25.0,
        450.0,
    );
    let gantry = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let traffic = crate::sim::traffic::start(
        script.clone(),
        crate::sim::traffic::Targets {
            jt808: Some(format!("127.0.0.1:{jt808_port}")),
            gbt32960: gbt32960.as_ref().map(|g| g.addr),
            gbt32960_tls: gbt32960.as_ref().map(|g| g.tls()),
            reader: crate::sim::reader::SimMode::Listen(gantry),
            reader_sn: *b"GANTRY01",
            dialect: crate::protocol::gbt37987::Dialect::Gbt37987_2019,
        },
        sims_stop.clone(),
    )
    .await
    .context("starting the scripted traffic")?;
    let traffic = Arc::new(traffic);
    {
        let (t, stop) = (traffic.clone(), sims_stop.clone());
        tokio::spawn(async move { t.run_reader(stop).await });
    }
    let web = web_address(args.web)?;
    let password = demo_password();
    let password_hash = crate::web::auth::hash_password(&password).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let mut config_text = format!(
        "# Written by `roadedge demo`.\nedge: {{id: demo-cabinet, site: {{name: \"demo site\", latitude: 31.2304, longitude: 121.4737}}}}\n\
         storage: {{path: {db}, max_bytes: 256MiB}}\n\
         uplink:\n  url: mqtts://localhost:{port}\n  ca_file: {ca}\n  cert_file: {cert}\n  key_file: {key}\n  metrics_interval: 10s\n\
         jt808: {{listen: \"127.0.0.1:{jt808_port}\"}}\n\
         web:\n  listen: \"{web}\"\n  users: [{{name: admin, role: admin, password_hash: \"{password_hash}\"}}]\n\
         logging: {{level: info}}\n{gbt32960}",
        db = dir.join("roadedge.db").display(),
        ca = ca.ca_file.display(),
        cert = edge_cert.cert.display(),
        key = edge_cert.key.display(),
        gbt32960 = gbt32960.as_ref().map(|g| g.config_section.as_str()).unwrap_or(""),
    );
    config_text.push_str(&demo_readers.yaml);
    config_text.push_str(&format!(
        "    - {{id: gantry, tcp: '{gantry}', position: {{lane: '1', direction: 90}}}}\nfusion: {{window: 10s, radius_m: 300}}\n"
    ));
    let config_path = dir.join("roadedge.yaml");
    std::fs::write(&config_path, &config_text)?;
    Config::parse(&config_text, FileCheck::Check).map_err(|e| anyhow::anyhow!("{e}"))?;

    let tls_options = format!(
        "-h localhost -p {port} --cafile {} --cert {} --key {}",
        ca.ca_file.display(),
        cloud_cert.cert.display(),
        cloud_cert.key.display()
    );
    let shutdown = crate::ops::shutdown::stop_token(duration);
    let out = Out { stop: shutdown.clone() };
    let mut banner = Vec::new();
    banner.push(format!("roadedge demo {}", app::version()));
    banner.push(format!("  state directory : {}", dir.display()));
    banner.push(format!("  configuration   : {}", config_path.display()));
    banner.push(format!(
        "  cloud broker    : mqtts://localhost:{port} (TLS, client certificates from {})",
        dir.display()
    ));
    banner.push(format!("  watch the uplink: mosquitto_sub {tls_options} -t '#' -v"));
    banner.push(format!(
        "  send a command  : mosquitto_pub {tls_options} -t edge/demo-cabinet/cmd -m '{{\"request_id\":\"1\",\"action\":\"status\"}}'"
    ));
    banner.push(format!(
        "  readers         : {}; watch gbt37987/+/up/#",
        demo_readers.summary
    ));
    banner.push(format!(
        "  start a rule    : mosquitto_pub {tls_options} -t gbt37987/north/dn -m '{{\"request_id\":\"r1\",\"action\":\"start_rule\",\"spec_id\":1}}'"
    ));

    let tls = Arc::new(crate::tls::client_config(
        Some(&ca.ca_file),
        Some((&cloud_cert.cert, &cloud_cert.key)),
    )?);
    if let Some(vehicles) = gbt32960 {
        banner.push(format!("  GB/T 32960      : {}", vehicles.describe()));
        tokio::spawn(vehicles.run(shutdown.clone()));
    }
    let received = Arc::new(Traffic::default());
    if args.jt808_terminals > 0 {
        // Simulated JT/T 808 terminals; they retry until the appliance listens.
        let options = crate::sim::jt808::SimOptions {
            server: format!("127.0.0.1:{jt808_port}"),
            terminals: args.jt808_terminals,
            edition: crate::sim::jt808::SimEdition::Mixed,
            rate: args.jt808_terminals as f64,
            subpackage_every: 10,
            ..Default::default()
        };
        banner.push(format!(
            "  JT/T 808        : {} simulated terminals (2013 and 2019) on 127.0.0.1:{jt808_port}; query one: mosquitto_pub {tls_options} -t jt808/013900000000/013900000000/dn -m '{{\"request_id\":\"q1\",\"header\":{{\"msg_id\":33281}}}}'",
            args.jt808_terminals
        ));
        let stats = Arc::new(crate::sim::jt808::SimStats::default());
        tokio::spawn(crate::sim::jt808::run(options, stats, shutdown.clone()));
    }
    banner.push(format!(
        "  fusion          : scripted traffic past the site every {:.0}s (gantry reader; 808 and 32960 vehicles; one without a tag, one cloned tag); passages on edge/demo-cabinet/passage",
        script.cycle.as_secs_f64()
    ));
    banner.push("  stop            : Ctrl-C".into());
    let mut first_start = Some((banner, out, (tls, received.clone(), shutdown.clone())));
    // From the file, like `roadedge run`: the page's Configuration and `config.set` can change it
    // (the core restarts in process; `started` runs at every start).
    app::run_from_file(&config_path, RunOptions::default(), shutdown, move |a| {
        if let Some((mut banner, out, cloud_watch)) = first_start.take() {
            // Printed once everything is up, so each line works the moment it is read.
            let web = a.web.map(|w| w.to_string()).unwrap_or_default();
            banner.insert(
                1,
                format!("  web page        : http://{web}/  (user admin, password {password})"),
            );
            for line in &banner {
                out.line(line);
            }
            let (tls, received, stop) = cloud_watch;
            tokio::spawn(watch_cloud(port, tls, received, out, stop));
        }
        if let Some(service) = &a.readers {
            demo_readers.apply_rules(service.clone());
            let service = service.clone();
            let rule =
                crate::reader::rules::default_select_spec(1, crate::reader::rules::SpecState::Active, 1, &[1, 2]);
            tokio::spawn(async move {
                let command = serde_json::json!({"action": "set_rules", "select_specs": [rule]});
                if let Err(e) = service.execute("gantry", &command).await {
                    tracing::warn!("demo gantry rules: {e}");
                }
            });
        }
        // What the registry cannot learn by itself: the 32960 vehicles' plates and tags.
        let registry = a.registry.clone();
        let entries = script.registry();
        tokio::spawn(async move {
            if let Err(e) = registry.upsert(entries).await {
                tracing::warn!("demo registry: {e}");
            }
        });
    })
    .await?;
    sims_stop.cancel();
    Out {
        stop: CancellationToken::new(),
    }
    .line(&format!(
        "demo stopped: the cloud received {} messages",
        received.total()
    ));
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

/// What the "cloud" received, by protocol family (the first topic level).
#[derive(Default)]
struct Traffic {
    by_family: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Traffic {
    fn count(&self, topic: &str) {
        let family = topic.split('/').next().unwrap_or("").to_string();
        if let Ok(mut m) = self.by_family.lock() {
            *m.entry(family).or_default() += 1;
        }
    }

    fn total(&self) -> u64 {
        self.by_family.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    fn summary(&self) -> String {
        self.by_family
            .lock()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    }
}

/// A line for a passage of the scripted traffic (the gantry's, and telemetry-only ones) or a
/// fusion alarm; `None` for anything else (the other readers' tags make passages too).
fn fusion_line(topic: &str, payload: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    if topic.ends_with("/passage") {
        if v["reader"]["id"] != "gantry" && v["match"] != "telemetry_only" {
            return None;
        }
        let telemetry = match v["telemetry"].as_object() {
            Some(t) => format!(
                "{} {:.0} m away, {} km/h",
                text(&t["source"]),
                t["distance_m"].as_f64().unwrap_or(0.0),
                t["speed_kmh"].as_f64().map_or("-".into(), |s| format!("{s:.0}"))
            ),
            None => "no telemetry".into(),
        };
        return Some(format!(
            "passage {}: match {}, plate {}, tag {}, {telemetry}, anomalies {}",
            text(&v["passage_id"]),
            text(&v["match"]),
            text(&v["vehicle"]["plate"]),
            text(&v["tag"]["tid"]),
            v["anomalies"]
        ));
    }
    if topic.ends_with("/alarm")
        && matches!(
            v["alarm"].as_str(),
            Some("cloned_tag" | "missing_tag" | "plate_mismatch")
        )
    {
        return Some(format!(
            "ALARM {} {} ({})",
            text(&v["alarm"]),
            text(&v["state"]),
            text(&v["detail"]["subject"])
        ));
    }
    None
}

/// The "cloud": prints a line every few seconds with what arrived.
async fn watch_cloud(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    received: Arc<Traffic>,
    out: Out,
    shutdown: CancellationToken,
) {
    let mut options = MqttOptions::new("demo-cloud", "localhost", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_transport(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let _ = client.subscribe("#", QoS::AtLeastOnce).await;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_topic = String::new();
    let mut printed = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let n = received.total();
                if n != printed {
                    out.line(&format!("cloud: {n} messages ({}); latest {last_topic}", received.summary()));
                    printed = n;
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received.count(&p.topic);
                    if let Some(line) = fusion_line(&p.topic, &p.payload) {
                        out.line(&line);
                    }
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
