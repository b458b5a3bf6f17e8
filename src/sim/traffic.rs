//! Scripted traffic past a site (`roadedge sim traffic`, the demo, the fusion tests): JT/T 808
//! and GB/T 32960 vehicles whose positions approach the site, pass its gantry and leave, and a
//! simulated GB/T 37987 reader at the gantry whose antennas see each vehicle's tag while it is
//! under the gantry. Two vehicles are wrong on purpose: one drives past with no tag
//! (`missing_tag`), and the tag of a vehicle that reports 30 km away is read at the gantry
//! (`cloned_tag`).
//!
//! The script is a cycle: every `gap` one vehicle reaches the gantry, driving east at `speed`;
//! outside its drive a vehicle waits `approach_m` west of the site, and after it `approach_m`
//! east (both outside the zone), so each cycle is one pass of each. Everything is computed from
//! the time since the start: a restart of the appliance (or of a link) loses nothing of the
//! script. Never used by production paths.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fusion::geo::GeoPoint;
use crate::fusion::VehicleInput;
use crate::protocol::gbt37987::Dialect;
use crate::sim::reader::{SimMode, SimReader, SimReaderOptions, SimTag};

/// The reader's antennas see a tag this close to the gantry.
pub const READ_ZONE_M: f64 = 15.0;
/// Offset of the cloned tag's vehicle from the site (north).
pub const FAR_AWAY_M: f64 = 30_000.0;

/// What one scripted vehicle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Passes with its tag read.
    Tagged,
    /// Passes with no tag (`missing_tag`).
    Untagged,
    /// Stays 30 km away while a copy of its tag is read at the gantry (`cloned_tag`).
    Cloned,
}

/// Which terminal a vehicle has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// A JT/T 808 terminal (2013) with this phone (12 digits).
    Jt808(String),
    /// A GB/T 32960 (2016) vehicle with this VIN.
    Gbt32960(String),
}

/// One scripted vehicle.
#[derive(Debug, Clone)]
pub struct Vehicle {
    pub plate: String,
    pub terminal: Terminal,
    pub role: Role,
    /// Its tag's TID (lowercase hex); `None` for the untagged vehicle.
    pub tid: Option<String>,
    /// When in the cycle it reaches the gantry (or its tag is read there).
    pub at: Duration,
}

/// The script.
#[derive(Debug, Clone)]
pub struct Script {
    pub site: GeoPoint,
    pub speed_mps: f64,
    pub approach_m: f64,
    pub cycle: Duration,
    pub vehicles: Vec<Vehicle>,
}

impl Script {
    /// `jt808` tagged 808 vehicles, `gbt32960` tagged 32960 vehicles, then the untagged and the
    /// cloned one (both 808), one every `gap`.
    pub fn new(
        site: GeoPoint,
        jt808: usize,
        gbt32960: usize,
        gap: Duration,
        speed_mps: f64,
        approach_m: f64,
    ) -> Script {
        let mut vehicles = Vec::new();
        let mut at = gap;
        let mut next = |v: &mut Vec<Vehicle>, plate: String, terminal: Terminal, role: Role, tid: Option<String>| {
            v.push(Vehicle {
                plate,
                terminal,
                role,
                tid,
                at,
            });
            at += gap;
        };
        for i in 0..jt808 {
            next(
                &mut vehicles,
                format!("京A1{i:04}"),
                Terminal::Jt808(format!("0139{:08}", 1000 + i)),
                Role::Tagged,
                Some(format!("e2801000{i:08x}")),
            );
        }
        for i in 0..gbt32960 {
            next(
                &mut vehicles,
                format!("京B2{i:04}"),
                Terminal::Gbt32960(format!("LTRAFFIC{i:09}")),
                Role::Tagged,
                Some(format!("e2802000{i:08x}")),
            );
        }
        next(
            &mut vehicles,
            "京C30000".into(),
            Terminal::Jt808("013900003000".into()),
            Role::Untagged,
            None,
        );
        next(
            &mut vehicles,
            "京D40000".into(),
            Terminal::Jt808("013900004000".into()),
            Role::Cloned,
            Some("e2804000000000aa".into()),
        );
        // One drive lasts 2 × approach / speed; the cycle leaves room for the last one to end.
        let drive = Duration::from_secs_f64(2.0 * approach_m / speed_mps.max(1.0));
        let cycle = at + drive.max(gap * 2);
        Script {
            site,
            speed_mps,
            approach_m,
            cycle,
            vehicles,
        }
    }

    /// Where `vehicle` is `t` into the script: metres east of the gantry (clamped to the
    /// approach) and its position.
    pub fn position(&self, vehicle: &Vehicle, t: Duration) -> (f64, GeoPoint) {
        let in_cycle = Duration::from_nanos((t.as_nanos() % self.cycle.as_nanos().max(1)) as u64);
        let along = ((in_cycle.as_secs_f64() - vehicle.at.as_secs_f64()) * self.speed_mps)
            .clamp(-self.approach_m, self.approach_m);
        let base = match vehicle.role {
            Role::Cloned => self.site.offset(0.0, FAR_AWAY_M),
            _ => self.site,
        };
        let p = if along >= 0.0 {
            base.offset(90.0, along)
        } else {
            base.offset(270.0, -along)
        };
        (along, p)
    }

    /// The tags (indexes into [`Script::tags`]) under the gantry `t` into the script.
    pub fn present(&self, t: Duration) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, v) in self.vehicles.iter().filter(|v| v.tid.is_some()).enumerate() {
            // The cloned tag rides a vehicle with no terminal, on the same schedule.
            let mut carrier = v.clone();
            carrier.role = Role::Tagged;
            let (along, _) = self.position(&carrier, t);
            if along.abs() <= READ_ZONE_M {
                out.push(i);
            }
        }
        out
    }

    /// The reader's tag population: one tag per tagged vehicle, carrying its plate.
    pub fn tags(&self) -> Vec<SimTag> {
        self.vehicles
            .iter()
            .filter_map(|v| v.tid.as_ref().map(|t| (v, t)))
            .enumerate()
            .map(|(i, (v, tid))| {
                let bytes = (0..tid.len())
                    .step_by(2)
                    .filter_map(|j| u8::from_str_radix(&tid[j..j + 2], 16).ok())
                    .collect();
                SimTag::vehicle(bytes, &v.plate, i as u32 + 1)
            })
            .collect()
    }

    /// What the registry cannot learn by itself: which plate and tag a 32960 VIN belongs to (a
    /// 32960 login carries only the VIN). Upsert these (`registry.upsert`, the page, a CSV).
    pub fn registry(&self) -> Vec<VehicleInput> {
        self.vehicles
            .iter()
            .filter_map(|v| match &v.terminal {
                Terminal::Gbt32960(vin) => Some(VehicleInput {
                    plate: v.plate.clone(),
                    vin: Some(vin.clone()),
                    tid: v.tid.clone(),
                    ..Default::default()
                }),
                Terminal::Jt808(_) => None,
            })
            .collect()
    }

    /// [`Script::registry`] as a CSV for the registry import.
    pub fn registry_csv(&self) -> String {
        let mut out = String::from("plate,vin,tid\n");
        for v in self.registry() {
            out.push_str(&format!(
                "{},{},{}\n",
                v.plate,
                v.vin.unwrap_or_default(),
                v.tid.unwrap_or_default()
            ));
        }
        out
    }
}

/// Where the traffic goes.
#[derive(Clone)]
pub struct Targets {
    pub jt808: Option<String>,
    pub gbt32960: Option<SocketAddr>,
    /// TLS of the GB/T 32960 connections (when `gbt32960.tls` is configured).
    pub gbt32960_tls: Option<crate::sim::gbt32960::ClientTls>,
    /// How the gantry reader reaches the edge.
    pub reader: SimMode,
    pub reader_sn: [u8; 8],
    pub dialect: Dialect,
}

/// Counters of a traffic run.
#[derive(Debug, Default)]
pub struct TrafficStats {
    pub positions_sent: AtomicU64,
    pub connects: AtomicU64,
    pub errors: AtomicU64,
}

/// A running traffic script.
pub struct Traffic {
    pub script: Arc<Script>,
    pub reader: SimReader,
    pub stats: Arc<TrafficStats>,
    pub started: Instant,
}

/// Starts the reader and every vehicle; they run until `shutdown`.
pub async fn start(script: Script, targets: Targets, shutdown: CancellationToken) -> std::io::Result<Traffic> {
    let script = Arc::new(script);
    let mut options = SimReaderOptions::new(targets.reader_sn, targets.dialect, targets.reader.clone());
    options.report_interval = Duration::from_millis(200);
    options.tags = 0;
    let reader = SimReader::spawn(options, shutdown.clone()).await?;
    reader.script_tags(script.tags());
    let started = Instant::now();
    let stats = Arc::new(TrafficStats::default());
    for vehicle in script.vehicles.clone() {
        let (script, stats, stop) = (script.clone(), stats.clone(), shutdown.clone());
        match &vehicle.terminal {
            Terminal::Jt808(_) => {
                if let Some(server) = targets.jt808.clone() {
                    tokio::spawn(drive_jt808(script, vehicle, server, started, stats, stop));
                }
            }
            Terminal::Gbt32960(_) => {
                if let Some(addr) = targets.gbt32960 {
                    let tls = targets.gbt32960_tls.clone();
                    tokio::spawn(drive_gbt32960(script, vehicle, addr, tls, started, stats, stop));
                }
            }
        }
    }
    Ok(Traffic {
        script,
        reader,
        stats,
        started,
    })
}

impl Traffic {
    /// Moves the tags under the gantry as the script goes, until `shutdown`.
    pub async fn run_reader(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.reader.present(self.script.present(self.started.elapsed())),
            }
        }
    }
}

fn location_at(script: &Script, vehicle: &Vehicle, t: Duration, n: u32) -> crate::protocol::jt808::Location {
    let (_, p) = script.position(vehicle, t);
    let mut l = crate::sim::jt808::location(n, 0);
    l.basic.latitude = (p.latitude.abs() * 1e6).round() as u32;
    l.basic.longitude = (p.longitude.abs() * 1e6).round() as u32;
    // Positioned; south and west bits as the signs say.
    l.basic.status = 0b10 | u32::from(p.latitude < 0.0) << 2 | u32::from(p.longitude < 0.0) << 3;
    l.basic.speed = (script.speed_mps * 36.0).round() as u16;
    l.basic.direction = 90;
    let now = crate::gateway::gbt32960::session::beijing_time(crate::time::now_ms());
    let text = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}",
        now.year % 100,
        now.month,
        now.day,
        now.hour,
        now.minute,
        now.second
    );
    if let Some(time) = crate::protocol::jt808::BcdTime::parse(&text) {
        l.basic.time = time;
    }
    l
}

async fn drive_jt808(
    script: Arc<Script>,
    vehicle: Vehicle,
    server: String,
    started: Instant,
    stats: Arc<TrafficStats>,
    shutdown: CancellationToken,
) {
    use crate::protocol::jt808::{Edition, Phone};
    let Terminal::Jt808(phone) = &vehicle.terminal else {
        return;
    };
    let Some(phone) = Phone::parse(phone) else { return };
    let limit = Duration::from_secs(10);
    let mut n = 0u32;
    while !shutdown.is_cancelled() {
        let session = async {
            let mut t = crate::sim::jt808::Terminal::connect(&server, None, phone, Edition::V2013).await?;
            stats.connects.fetch_add(1, Relaxed);
            t.plate = vehicle.plate.clone();
            t.plate_color = 1;
            let code = t.register(limit).await?;
            t.authenticate(&code, limit).await?;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                n = n.wrapping_add(1);
                t.report(location_at(&script, &vehicle, started.elapsed(), n), limit)
                    .await?;
                stats.positions_sent.fetch_add(1, Relaxed);
            }
            #[allow(unreachable_code)]
            Ok::<(), crate::sim::jt808::SimError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session => if let Err(e) = r {
                stats.errors.fetch_add(1, Relaxed);
                tracing::debug!(plate = %vehicle.plate, "808 traffic terminal: {e}; reconnecting");
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn drive_gbt32960(
    script: Arc<Script>,
    vehicle: Vehicle,
    addr: SocketAddr,
    tls: Option<crate::sim::gbt32960::ClientTls>,
    started: Instant,
    stats: Arc<TrafficStats>,
    shutdown: CancellationToken,
) {
    use crate::protocol::gbt32960::Edition;
    let Terminal::Gbt32960(vin) = &vehicle.terminal else {
        return;
    };
    let mut n = 0u64;
    while !shutdown.is_cancelled() {
        let session = async {
            let mut t = crate::sim::gbt32960::Terminal::connect(addr, tls.as_ref(), vin, Edition::V2016).await?;
            stats.connects.fetch_add(1, Relaxed);
            t.login().await?;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        n += 1;
                        let (_, p) = script.position(&vehicle, started.elapsed());
                        let frame = crate::sim::gbt32960::realtime_frame_at(
                            t.vin,
                            crate::sim::gbt32960::local_now(),
                            n,
                            p.latitude,
                            p.longitude,
                            script.speed_mps * 3.6,
                        );
                        t.send(&frame).await?;
                        stats.positions_sent.fetch_add(1, Relaxed);
                    }
                    frame = t.next_frame() => {
                        let frame = frame?;
                        t.answer_if_command(&frame).await?;
                    }
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), crate::sim::gbt32960::SimError>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session => if let Err(e) = r {
                stats.errors.fetch_add(1, Relaxed);
                tracing::debug!(plate = %vehicle.plate, "32960 traffic vehicle: {e}; reconnecting");
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Options of `roadedge sim traffic`.
#[derive(clap::Args, Debug)]
pub struct TrafficArgs {
    /// The appliance's `jt808.listen` address.
    #[arg(long)]
    pub jt808: Option<String>,
    /// The appliance's `gbt32960.listen` address.
    #[arg(long)]
    pub gbt32960: Option<SocketAddr>,
    /// The gantry reader waits for the edge to dial it here (`readers.devices[].tcp`).
    #[arg(long, conflicts_with = "reader_dial")]
    pub reader_listen: Option<SocketAddr>,
    /// The gantry reader dials the edge's `readers.listen`.
    #[arg(long)]
    pub reader_dial: Option<SocketAddr>,
    /// The gantry reader's serial number (16 hex digits or up to 8 characters).
    #[arg(long, default_value = "GANTRY01")]
    pub reader_sn: String,
    /// The reader's dialect.
    #[arg(long, default_value = "gbt37987-2019")]
    pub dialect: String,
    /// The site (`edge.site`): latitude and longitude in degrees.
    #[arg(long, default_value_t = 31.2304)]
    pub latitude: f64,
    #[arg(long, default_value_t = 121.4737)]
    pub longitude: f64,
    /// Tagged JT/T 808 vehicles.
    #[arg(long, default_value_t = 2)]
    pub jt808_vehicles: usize,
    /// Tagged GB/T 32960 vehicles.
    #[arg(long, default_value_t = 2)]
    pub gbt32960_vehicles: usize,
    /// Time between two vehicles at the gantry.
    #[arg(long, default_value = "8s")]
    pub gap: String,
    /// Speed of every vehicle, km/h.
    #[arg(long, default_value_t = 72.0)]
    pub speed_kmh: f64,
    /// Where vehicles wait before and after their pass, metres from the site (beyond
    /// `fusion.radius_m`).
    #[arg(long, default_value_t = 600.0)]
    pub approach_m: f64,
    /// Writes the registry entries the appliance cannot learn by itself (32960 VIN to plate and
    /// tag) to this CSV, for the registry import.
    #[arg(long)]
    pub registry_csv: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub run: crate::sim::run::RunArgs,
}

/// `roadedge sim traffic`.
pub async fn run_cli(args: TrafficArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let dialect: Dialect = args.dialect.parse().map_err(|e| anyhow::anyhow!("--dialect: {e}"))?;
    let sn =
        crate::sim::reader::parse_sn(&args.reader_sn).context("--reader-sn: 16 hex digits or up to 8 characters")?;
    let reader = match (args.reader_listen, args.reader_dial) {
        (Some(a), None) => SimMode::Listen(a),
        (None, Some(a)) => SimMode::Dial(a),
        _ => anyhow::bail!("give one of --reader-listen or --reader-dial"),
    };
    let gap = crate::config::parse_duration(&args.gap).map_err(|e| anyhow::anyhow!("--gap: {e}"))?;
    if gap < Duration::from_secs(1) {
        anyhow::bail!("--gap must be at least 1s");
    }
    if !(5.0..=250.0).contains(&args.speed_kmh) {
        anyhow::bail!("--speed-kmh must be 5 to 250");
    }
    if !(50.0..=10_000.0).contains(&args.approach_m) {
        anyhow::bail!("--approach-m must be 50 to 10000");
    }
    if args.jt808_vehicles + args.gbt32960_vehicles > 1000 {
        anyhow::bail!("at most 1000 tagged vehicles");
    }
    let script = Script::new(
        GeoPoint::new(args.latitude, args.longitude),
        args.jt808_vehicles,
        args.gbt32960_vehicles,
        gap,
        args.speed_kmh / 3.6,
        args.approach_m,
    );
    if let Some(path) = &args.registry_csv {
        std::fs::write(path, script.registry_csv()).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "registry entries for the 32960 vehicles written to {} (import them on the page)",
            path.display()
        );
    }
    let sim = args.run.start()?;
    let shutdown = sim.shutdown.clone();
    let targets = Targets {
        jt808: args.jt808,
        gbt32960: args.gbt32960,
        gbt32960_tls: None,
        reader,
        reader_sn: sn,
        dialect,
    };
    let traffic = start(script, targets, shutdown.clone()).await?;
    if let Some(addr) = traffic.reader.local_addr {
        println!("gantry reader listening on {addr}");
    }
    for v in &traffic.script.vehicles {
        println!(
            "{:>8.1}s {} {:?} {:?} tag {}",
            v.at.as_secs_f64(),
            v.plate,
            v.terminal,
            v.role,
            v.tid.as_deref().unwrap_or("-")
        );
    }
    println!(
        "cycle {:.0}s; the reader reports only while the edge gives it an active select rule",
        traffic.script.cycle.as_secs_f64()
    );
    let summary = || {
        let (reports, tags) = traffic.reader.reports_sent();
        format!(
            "{} positions sent, {reports} tag reports ({tags} tags), reader {}",
            traffic.stats.positions_sent.load(Relaxed),
            if traffic.reader.is_connected() {
                "connected"
            } else {
                "not connected"
            }
        )
    };
    sim.report(traffic.run_reader(shutdown.clone()), summary).await;
    Ok(())
}
