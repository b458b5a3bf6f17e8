//! Simulated GB/T 32960 vehicles: sample frames of every information type of both editions, a
//! scriptable [`Terminal`] (tests drive it frame by frame), and a load generator (`roadedge sim
//! gbt32960`, the demo and the benchmark) that logs many vehicles in over TCP or TLS, sends
//! real-time data at a rate, heartbeats, and answers the platform's query/set/control commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::gateway::gbt32960::session::beijing_time;
use crate::link::{ByteStream, FramedIo, LinkError, Read};
use crate::protocol::gbt32960::control::{ControlParam, TerminalControl};
use crate::protocol::gbt32960::info::*;
use crate::protocol::gbt32960::message::{Activation, Login2016, Login2025, Logout, Signature};
use crate::protocol::gbt32960::param::{param_width, Param, ParamList, ParamValue, ParamWidth};
use crate::protocol::gbt32960::{
    Body, Command, Edition, EncodeError, Frame, FrameDecoder, Listed, Origin, ResponseFlag, TextToEnd, Time,
    VehicleLogin, Vin, MAX_FRAME_LEN,
};
use crate::time::now_ms;

/// Errors of a simulated terminal.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS set-up: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("link: {0}")]
    Link(#[from] LinkError),
    #[error("encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the platform sent a corrupt frame: {0}")]
    BadFrame(String),
    #[error("{0}")]
    Usage(String),
}

// ---------------------------------------------------------------------------------------------
// Sample frames

/// A vehicle login (0x01) in `edition`.
pub fn login_frame(vin: Vin, edition: Edition, time: Time, serial: u16) -> Frame {
    let iccid = *b"89860012345678901234";
    let login = match edition {
        Edition::V2016 => VehicleLogin::V2016(Login2016 {
            time,
            serial,
            iccid,
            subsystem_count: 1,
            code_len: 4,
            codes: TextToEnd(b"B001".to_vec()),
        }),
        Edition::V2025 => VehicleLogin::V2025(Login2025 {
            time,
            serial,
            iccid,
            bms_pack_codes: vec![vec![*b"PACK0000000000000000001A"]],
        }),
    };
    command(edition, Command::VEHICLE_LOGIN, vin, Body::VehicleLogin(login))
}

/// A vehicle logout (0x04).
pub fn logout_frame(vin: Vin, edition: Edition, time: Time, serial: u16) -> Frame {
    command(
        edition,
        Command::VEHICLE_LOGOUT,
        vin,
        Body::VehicleLogout(Logout { time, serial }),
    )
}

/// A heartbeat (0x07), empty data unit.
pub fn heartbeat_frame(vin: Vin, edition: Edition) -> Frame {
    command(edition, Command::HEARTBEAT, vin, Body::Empty)
}

/// A time-sync request (0x08), empty data unit.
pub fn time_sync_frame(vin: Vin, edition: Edition) -> Frame {
    command(edition, Command::TIME_SYNC, vin, Body::Empty)
}

/// A 2025 activation (0x09).
pub fn activation_frame(vin: Vin, time: Time) -> Frame {
    let activation = Activation {
        time,
        chip_id: *b"CHIP0001        ",
        public_key: vec![0x04; 65],
        vin: vin.0,
        signature: Signature {
            signature_type: 1,
            r: vec![0x11; 32],
            s: vec![0x22; 32],
        },
    };
    command(Edition::V2025, Command::ACTIVATION, vin, Body::Activation(activation))
}

/// Real-time (0x02) or, with `reissue`, re-issued (0x03) data carrying every information type of
/// the edition (2016: the nine of 0x01-0x09; 2025: 0x01-0x08, 0x30-0x32 and the signature).
/// `n` varies the values.
pub fn realtime_frame(vin: Vin, edition: Edition, time: Time, n: u64, reissue: bool) -> Frame {
    let items = match edition {
        Edition::V2016 => items_2016(n),
        Edition::V2025 => items_2025(n),
    };
    let cmd = if reissue { Command::REISSUE } else { Command::REALTIME };
    command(edition, cmd, vin, Body::RealTime(RealTimeReport { time, items }))
}

/// 2016 real-time data like [`realtime_frame`], the vehicle at `latitude`/`longitude` (degrees)
/// driving at `speed_kmh` (scripted traffic).
pub fn realtime_frame_at(vin: Vin, time: Time, n: u64, latitude: f64, longitude: f64, speed_kmh: f64) -> Frame {
    let mut items = items_2016(n);
    for item in &mut items {
        match item {
            InfoItem::Location2016(l) => {
                l.status = u8::from(latitude < 0.0) << 1 | u8::from(longitude < 0.0) << 2;
                l.latitude = (latitude.abs() * 1e6).round() as u32;
                l.longitude = (longitude.abs() * 1e6).round() as u32;
            }
            InfoItem::Vehicle2016(v) => v.speed = (speed_kmh * 10.0).round().clamp(0.0, 2200.0) as u16,
            _ => {}
        }
    }
    command(
        Edition::V2016,
        Command::REALTIME,
        vin,
        Body::RealTime(RealTimeReport { time, items }),
    )
}

/// The `Type` names the real-time JSON lists, in frame order, for [`realtime_frame`].
pub fn info_type_names(edition: Edition) -> Vec<&'static str> {
    let items = match edition {
        Edition::V2016 => items_2016(0),
        Edition::V2025 => items_2025(0),
    };
    items.iter().map(InfoItem::type_name).collect()
}

fn command(edition: Edition, cmd: Command, vin: Vin, body: Body) -> Frame {
    Frame::new(edition, cmd, ResponseFlag::COMMAND, vin, body)
}

const CELLS: usize = 48;
const PROBES: usize = 16;

fn wave(n: u64, span: u64) -> u16 {
    (n % span) as u16
}

fn alarm(general_flags: u32) -> Alarm {
    Alarm {
        max_level: u8::from(general_flags != 0),
        general_flags,
        ress_faults: Listed::Items(Vec::new()),
        motor_faults: Listed::Items(vec![0x0000_007B]),
        engine_faults: Listed::Items(Vec::new()),
        other_faults: Listed::Items(Vec::new()),
    }
}

fn hydrogen() -> HydrogenSystem {
    HydrogenSystem {
        max_temp: 65,
        max_temp_probe: 1,
        max_concentration: 120,
        concentration_sensor: 2,
        max_pressure: 350,
        pressure_sensor: 3,
        dc_dc_status: 1,
    }
}

fn items_2016(n: u64) -> Vec<InfoItem> {
    vec![
        InfoItem::Vehicle2016(Vehicle2016 {
            status: 1,
            charging: 3,
            mode: 1,
            speed: 600 + wave(n, 200),
            mileage: 1_234_567 + n as u32,
            voltage: 3_500,
            current: 10_120,
            soc: 80,
            dc_dc: 1,
            gear: 0x0E,
            insulation: 5_000,
            accelerator_pedal: 20,
            brake_pedal: 0,
        }),
        InfoItem::DriveMotors2016(Listed::Items(vec![Motor2016 {
            no: 1,
            status: 1,
            controller_temp: 70,
            speed: 23_000 + wave(n, 500),
            torque: 20_500,
            motor_temp: 75,
            input_voltage: 3_480,
            dc_bus_current: 10_150,
        }])),
        InfoItem::FuelCell2016(FuelCell2016 {
            head: FuelCellHead2016 {
                voltage: 3_000,
                current: 1_000,
                consumption: 150,
            },
            probe_temps: Listed::Items(vec![60; 4]),
            hydrogen: HydrogenSystem {
                max_temp: 650,
                ..hydrogen()
            },
        }),
        InfoItem::Engine2016(Engine2016 {
            status: 2,
            crankshaft_speed: 0,
            fuel_consumption: 0,
        }),
        InfoItem::Location2016(Location2016 {
            status: 0,
            longitude: 121_473_700 + n as u32 % 1000,
            latitude: 31_230_400,
        }),
        InfoItem::Extremes2016(Extremes {
            max_voltage_subsystem: 1,
            max_voltage_cell: 7,
            max_cell_voltage: 3_350,
            min_voltage_subsystem: 1,
            min_voltage_cell: 21,
            min_cell_voltage: 3_290,
            max_temp_subsystem: 1,
            max_temp_probe: 3,
            max_temp: 68,
            min_temp_subsystem: 1,
            min_temp_probe: 9,
            min_temp: 62,
        }),
        InfoItem::Alarm2016(alarm(0)),
        InfoItem::CellVoltages2016(Listed::Items(vec![CellVoltageSubsystem {
            head: CellVoltageHead {
                no: 1,
                voltage: 3_500,
                current: 10_120,
                cells_total: CELLS as u16,
                first_cell: 1,
            },
            cell_voltages: Listed::Items((0..CELLS).map(|i| 3_290 + (i % 60) as u16).collect()),
        }])),
        InfoItem::ProbeTemps2016(Listed::Items(vec![ProbeGroup {
            no: 1,
            temps: Listed::Items((0..PROBES).map(|i| 62 + (i % 7) as u8).collect()),
        }])),
    ]
}

fn items_2025(n: u64) -> Vec<InfoItem> {
    vec![
        InfoItem::Vehicle2025(Vehicle2025 {
            status: 1,
            charging: 3,
            mode: 1,
            speed: 600 + wave(n, 200),
            mileage: 1_234_567 + n as u32,
            voltage: 3_500,
            current: 30_120,
            soc: 80,
            dc_dc: 1,
            gear: 0x0E,
            insulation: 5_000,
        }),
        InfoItem::DriveMotors2025(Listed::Items(vec![Motor2025 {
            no: 1,
            status: 1,
            controller_temp: 70,
            speed: 33_000 + wave(n, 500),
            torque: 200_500,
            motor_temp: 75,
        }])),
        InfoItem::FuelCell2025(FuelCell2025 {
            hydrogen: hydrogen(),
            tail: FuelCellTail2025 {
                remaining_h2: 70,
                dc_dc_temp: 60,
            },
        }),
        InfoItem::Engine2025(Engine2025 { crankshaft_speed: 0 }),
        InfoItem::Location2025(Location2025 {
            status: 0,
            coordinate_system: 1,
            longitude: 121_473_700 + n as u32 % 1000,
            latitude: 31_230_400,
        }),
        InfoItem::Alarm2025(Alarm2025 {
            alarm: alarm(1 << 19),
            flag_levels: Listed::Items(vec![FlagLevel { flag_bit: 19, level: 1 }]),
        }),
        InfoItem::PackVoltages2025(Listed::Items(vec![PackVoltages {
            head: PackVoltageHead {
                no: 1,
                voltage: 3_500,
                current: 30_120,
            },
            unit_voltages: Listed::Items((0..CELLS).map(|i| 3_290 + (i % 60) as u16).collect()),
        }])),
        InfoItem::PackTemps2025(Listed::Items(vec![ProbeGroup {
            no: 1,
            temps: Listed::Items((0..PROBES).map(|i| 62 + (i % 7) as u8).collect()),
        }])),
        InfoItem::FuelCellStacks2025(Listed::Items(vec![FuelCellStack {
            head: FuelCellStackHead {
                no: 1,
                voltage: 3_000,
                current: 1_000,
                h2_inlet_pressure: 1_500,
                air_inlet_pressure: 1_200,
                air_inlet_temp: 65,
            },
            probe_temps: Listed::Items(vec![70; 4]),
        }])),
        InfoItem::SuperCapacitor2025(SuperCapacitor {
            head: SuperCapacitorHead {
                system_no: 1,
                total_voltage: 4_000,
                total_current: 30_050,
            },
            cell_voltages: Listed::Items(vec![2_700; 8]),
            probe_temps: Listed::Items(vec![60; 4]),
        }),
        InfoItem::SuperCapacitorExtremes2025(SuperCapacitorExtremes {
            max_voltage_system: 1,
            max_voltage_cell: 3,
            max_voltage: 2_710,
            min_voltage_system: 1,
            min_voltage_cell: 5,
            min_voltage: 2_690,
            max_temp_system: 1,
            max_temp_probe: 2,
            max_temp: 61,
            min_temp_system: 1,
            min_temp_probe: 4,
            min_temp: 59,
        }),
        InfoItem::Signature2025(Signature {
            signature_type: 1,
            r: vec![0xA5; 32],
            s: vec![0x5A; 32],
        }),
    ]
}

/// The domain a simulated terminal reports for parameters 0x05/0x0E.
const DOMAIN: &[u8] = b"platform.example";

fn param_value(edition: Edition, id: u8) -> Option<ParamValue> {
    Some(match param_width(edition, id)? {
        ParamWidth::Byte if matches!(id, 0x04 | 0x0D) => ParamValue::Byte(DOMAIN.len() as u8),
        ParamWidth::Byte => ParamValue::Byte(10),
        ParamWidth::Word => ParamValue::Word(60),
        ParamWidth::Text5 => ParamValue::Text(b"V1.00".to_vec()),
        ParamWidth::TextSizedBy(_) => ParamValue::Text(DOMAIN.to_vec()),
    })
}

/// The terminal's answer to a platform command (query 0x80, set 0x81, control 0x82): success,
/// stamped `now`. `None` for any other frame.
pub fn answer(platform_command: &Frame, now: Time) -> Option<Frame> {
    if !platform_command.response.is_command() {
        return None;
    }
    let edition = platform_command.edition;
    let body = match &platform_command.body {
        Body::ParamQuery(query) => {
            let mut params: Vec<Param> = Vec::new();
            for id in &query.ids {
                // A sized text needs its length parameter before it.
                if let Some(ParamWidth::TextSizedBy(length_id)) = param_width(edition, *id) {
                    if !params.iter().any(|p| p.id == length_id) {
                        params.extend(param_value(edition, length_id).map(|value| Param { id: length_id, value }));
                    }
                }
                if params.iter().any(|p| p.id == *id) {
                    continue;
                }
                params.extend(param_value(edition, *id).map(|value| Param { id: *id, value }));
            }
            Body::Params(ParamList::new(now, params))
        }
        Body::Params(set) => Body::Params(ParamList {
            time: now,
            ..set.clone()
        }),
        Body::TerminalControl(control) => Body::TerminalControl(TerminalControl {
            time: now,
            command: control.command,
            param: ControlParam::None,
        }),
        _ => return None,
    };
    Some(Frame::new(
        edition,
        platform_command.command,
        ResponseFlag::SUCCESS,
        platform_command.vin,
        body,
    ))
}

// ---------------------------------------------------------------------------------------------
// One terminal

/// TLS settings of a simulated terminal.
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl ClientTls {
    /// Trusts `ca_file`, presents `cert_and_key` when given, expects the server to be
    /// `server_name` (a DNS name or an IP address).
    pub fn from_files(
        ca_file: &std::path::Path,
        cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
        server_name: &str,
    ) -> Result<ClientTls, SimError> {
        let config = crate::tls::client_config(Some(ca_file), cert_and_key)?;
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| SimError::Usage(format!("server name {server_name:?}: {e}")))?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// The standard's time for now (GMT+8).
pub fn local_now() -> Time {
    beijing_time(now_ms())
}

/// A simulated terminal on one connection.
pub struct Terminal {
    io: FramedIo<Box<dyn ByteStream>, FrameDecoder>,
    pub vin: Vin,
    pub edition: Edition,
    pub serial: u16,
}

impl Terminal {
    /// Connects (TCP, then TLS when given) within 10 s.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
        vin: &str,
        edition: Edition,
    ) -> Result<Terminal, SimError> {
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn ByteStream> = match tls {
                Some(tls) => Box::new(
                    tokio_rustls::TlsConnector::from(tls.config.clone())
                        .connect(tls.server_name.clone(), tcp)
                        .await?,
                ),
                None => Box::new(tcp),
            };
            Ok::<_, SimError>(stream)
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| SimError::Timeout("the connection"))??;
        Ok(Terminal {
            io: FramedIo::new(
                stream,
                FrameDecoder::new(Origin::Platform),
                MAX_FRAME_LEN + 4096,
                Duration::from_secs(24 * 3600),
                Arc::default(),
            ),
            vin: Vin::from_text(vin),
            edition,
            serial: 1,
        })
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), SimError> {
        self.send_raw(&frame.encode()?).await
    }

    /// Sends raw bytes (for malformed-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), SimError> {
        Ok(self.io.send(bytes).await?)
    }

    /// The next frame from the platform. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Frame, SimError> {
        match self.io.next().await? {
            Read::Frame(frame) => Ok(frame),
            Read::Bad(e) => Err(SimError::BadFrame(e.to_string())),
        }
    }

    /// The next frame from the platform within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<Frame, SimError> {
        tokio::time::timeout(limit, self.next_frame())
            .await
            .map_err(|_| SimError::Timeout("a frame from the platform"))?
    }

    /// Sends a login and waits (10 s) for its reply, which it returns.
    pub async fn login(&mut self) -> Result<Frame, SimError> {
        let frame = login_frame(self.vin, self.edition, local_now(), self.serial);
        self.send(&frame).await?;
        self.reply_to(Command::VEHICLE_LOGIN, Duration::from_secs(10)).await
    }

    /// Waits for the platform's response to `command`, answering platform commands meanwhile.
    pub async fn reply_to(&mut self, command: Command, limit: Duration) -> Result<Frame, SimError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .map_err(|_| SimError::Timeout("the platform's reply"))??;
            if frame.command == command && !frame.response.is_command() {
                return Ok(frame);
            }
            self.answer_if_command(&frame).await?;
        }
    }

    /// Answers `frame` if it is a platform command; returns whether it was one.
    pub async fn answer_if_command(&mut self, frame: &Frame) -> Result<bool, SimError> {
        match answer(frame, local_now()) {
            Some(reply) => {
                self.send(&reply).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits for a platform command, answers it and returns the command.
    pub async fn answer_next_command(&mut self, limit: Duration) -> Result<Frame, SimError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .map_err(|_| SimError::Timeout("a platform command"))??;
            if self.answer_if_command(&frame).await? {
                return Ok(frame);
            }
        }
    }

    /// Sends real-time data (every information type of the edition).
    pub async fn realtime(&mut self, n: u64) -> Result<Frame, SimError> {
        let frame = realtime_frame(self.vin, self.edition, local_now(), n, false);
        self.send(&frame).await?;
        Ok(frame)
    }

    /// Sends a logout.
    pub async fn logout(&mut self) -> Result<Frame, SimError> {
        let frame = logout_frame(self.vin, self.edition, local_now(), self.serial);
        self.send(&frame).await?;
        Ok(frame)
    }

    /// Closes the write side.
    pub async fn close(mut self) {
        self.io.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Load generator

/// What a load run does.
#[derive(Clone)]
pub struct LoadOptions {
    pub addr: SocketAddr,
    pub vehicles: usize,
    /// Real-time frames per second over all vehicles; 0 = as fast as the link takes them.
    pub rate: f64,
    pub edition: Edition,
    pub tls: Option<ClientTls>,
    /// Stop after this long (each vehicle logs out); until `shutdown` when absent.
    pub duration: Option<Duration>,
    /// VINs are this prefix followed by the vehicle's number, 17 characters in all.
    pub vin_prefix: String,
    pub heartbeat: Duration,
    /// Logins are spread over this time.
    pub ramp: Duration,
}

/// Counters of a load run, readable while it runs.
#[derive(Debug, Default)]
pub struct LoadStats {
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub frames_sent: AtomicU64,
    pub commands_answered: AtomicU64,
    pub disconnects: AtomicU64,
    login_latency_us: Mutex<Vec<u64>>,
}

/// Login-reply latencies kept for the percentiles.
const LATENCY_SAMPLES: usize = 100_000;

impl LoadStats {
    fn record_login(&self, latency: Duration) {
        self.logins.fetch_add(1, Relaxed);
        if let Ok(mut v) = self.login_latency_us.lock() {
            if v.len() < LATENCY_SAMPLES {
                v.push(latency.as_micros() as u64);
            }
        }
    }

    /// Login-reply latency percentile `p` (0-100), in ms.
    pub fn login_latency_ms(&self, p: usize) -> f64 {
        let mut v = self.login_latency_us.lock().map(|v| v.clone()).unwrap_or_default();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_unstable();
        let idx = (v.len() * p).div_ceil(100).saturating_sub(1).min(v.len() - 1);
        v[idx] as f64 / 1000.0
    }
}

/// The VIN of vehicle `i`.
pub fn vin_of(prefix: &str, i: usize) -> String {
    let width = 17usize.saturating_sub(prefix.len());
    let mut vin = format!("{prefix}{i:0width$}");
    vin.truncate(17);
    vin
}

/// Runs the load until `duration` or `shutdown`; every vehicle logs out at the end.
pub async fn run_load(options: LoadOptions, stats: Arc<LoadStats>, shutdown: CancellationToken) {
    let stop = shutdown.child_token();
    if let Some(d) = options.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let options = Arc::new(options);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..options.vehicles {
        tasks.spawn(vehicle(i, options.clone(), stats.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn vehicle(i: usize, options: Arc<LoadOptions>, stats: Arc<LoadStats>, stop: CancellationToken) {
    let delay = options.ramp.mul_f64(i as f64 / options.vehicles.max(1) as f64);
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(delay) => {}
    }
    let vin = vin_of(&options.vin_prefix, i);
    let mut n = 0u64;
    while !stop.is_cancelled() {
        match drive(&vin, &options, &stats, &stop, &mut n).await {
            Ok(()) => return,
            Err(e) => {
                stats.disconnects.fetch_add(1, Relaxed);
                tracing::debug!(vin, "simulated vehicle disconnected: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn drive(
    vin: &str,
    options: &LoadOptions,
    stats: &LoadStats,
    stop: &CancellationToken,
    n: &mut u64,
) -> Result<(), SimError> {
    let mut t = Terminal::connect(options.addr, options.tls.as_ref(), vin, options.edition).await?;
    let started = Instant::now();
    if let Err(e) = t.login().await {
        stats.login_failures.fetch_add(1, Relaxed);
        return Err(e);
    }
    stats.record_login(started.elapsed());
    let period = (options.rate > 0.0).then(|| Duration::from_secs_f64(options.vehicles as f64 / options.rate));
    let mut report = period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + options.heartbeat, options.heartbeat);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                t.logout().await?;
                t.close().await;
                return Ok(());
            }
            _ = next_report(&mut report) => {
                t.send(&realtime_frame(t.vin, t.edition, local_now(), *n, false)).await?;
                *n += 1;
                stats.frames_sent.fetch_add(1, Relaxed);
            }
            _ = heartbeat.tick() => t.send(&heartbeat_frame(t.vin, t.edition)).await?,
            frame = t.next_frame() => {
                if t.answer_if_command(&frame?).await? {
                    stats.commands_answered.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

async fn next_report(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        // Unpaced: ready at once; the select still polls the read side fairly.
        None => tokio::task::yield_now().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

/// `roadedge sim gbt32960`: many simulated vehicles against a GB/T 32960 server.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8999")]
    pub addr: SocketAddr,
    /// Simulated vehicles.
    #[arg(long, default_value_t = 10)]
    pub vehicles: usize,
    /// Real-time frames per second over all vehicles (0 = as fast as the server takes them).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Protocol edition: 2016 (`##`) or 2025 (`$$`).
    #[arg(long, default_value = "2016", value_parser = ["2016", "2025"])]
    pub edition: String,
    /// CA that signed the server's certificate; enables TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (mutual TLS), with --key-file.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Client key, with --cert-file.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Name expected in the server certificate [default: the address's IP].
    #[arg(long)]
    pub server_name: Option<String>,
    /// VIN prefix; each vehicle's number fills the VIN to 17 characters.
    #[arg(long, default_value = "LSIM")]
    pub vin_prefix: String,
    /// Heartbeat period.
    #[arg(long, default_value = "30s")]
    pub heartbeat: String,
    /// Spread the logins over this time.
    #[arg(long, default_value = "1s")]
    pub ramp: String,
    #[command(flatten)]
    pub run: crate::sim::run::RunArgs,
}

impl SimArgs {
    /// The load options these arguments describe.
    pub fn options(&self) -> Result<LoadOptions, SimError> {
        let duration = |what: &str, text: &str| {
            crate::config::parse_duration(text).map_err(|e| SimError::Usage(format!("--{what}: {e}")))
        };
        let tls = match &self.ca_file {
            Some(ca) => {
                let name = self.server_name.clone().unwrap_or_else(|| self.addr.ip().to_string());
                let pair = self.cert_file.as_deref().zip(self.key_file.as_deref());
                Some(ClientTls::from_files(ca, pair, &name)?)
            }
            None if self.cert_file.is_some() => return Err(SimError::Usage("--cert-file needs --ca-file".into())),
            None => None,
        };
        if self.vin_prefix.len() > 16 || !self.vin_prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SimError::Usage("--vin-prefix: at most 16 letters or digits".into()));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(SimError::Usage("--rate: a number >= 0".into()));
        }
        Ok(LoadOptions {
            addr: self.addr,
            vehicles: self.vehicles,
            rate: self.rate,
            edition: if self.edition == "2025" {
                Edition::V2025
            } else {
                Edition::V2016
            },
            tls,
            // `--duration` is the run's stop token (crate::sim::run), which ends the load too.
            duration: None,
            vin_prefix: self.vin_prefix.clone(),
            heartbeat: duration("heartbeat", &self.heartbeat)?,
            ramp: duration("ramp", &self.ramp)?,
        })
    }
}

/// Runs the simulator from the command line, printing progress every 5 s and a summary.
pub async fn run_cli(args: SimArgs) -> anyhow::Result<()> {
    let options = args.options()?;
    let sim = args.run.start()?;
    let stats = Arc::new(LoadStats::default());
    println!(
        "gbt32960 sim: {} vehicles ({:?}) -> {}{}, {} frames/s",
        options.vehicles,
        options.edition,
        options.addr,
        if options.tls.is_some() { " over TLS" } else { "" },
        options.rate
    );
    let summary = || {
        let secs = sim.elapsed().as_secs_f64();
        let frames = stats.frames_sent.load(Relaxed);
        format!(
            "{} logins ({} failed), {frames} real-time frames ({:.0}/s), login reply p50 {:.1} ms p99 {:.1} ms, {} commands answered, {} disconnects",
            stats.logins.load(Relaxed),
            stats.login_failures.load(Relaxed),
            frames as f64 / secs.max(0.001),
            stats.login_latency_ms(50),
            stats.login_latency_ms(99),
            stats.commands_answered.load(Relaxed),
            stats.disconnects.load(Relaxed),
        )
    };
    sim.report(run_load(options, stats.clone(), sim.shutdown.clone()), summary)
        .await;
    if stats.logins.load(Relaxed) == 0 {
        anyhow::bail!("no vehicle could log in at {}", args.addr);
    }
    Ok(())
}

/// The demo's GB/T 32960 part: a server section on a free loopback port with mutual TLS (the
/// demo CA signs the server and the vehicles), and the vehicles that connect to it.
pub struct DemoVehicles {
    /// The `gbt32960:` section to append to the demo configuration.
    pub config_section: String,
    pub addr: SocketAddr,
    tls: ClientTls,
    vehicles: usize,
}

impl DemoVehicles {
    /// Issues the certificates into the CA's directory and picks a free port.
    pub fn prepare(ca: &crate::sim::pki::TestCa, vehicles: usize) -> anyhow::Result<DemoVehicles> {
        let server = ca.server("gbt32960-server")?;
        let client = ca.client("gbt32960-vehicles", "demo-vehicles")?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config_section = format!(
            "gbt32960:\n  listen: {addr}\n  tls: {{cert_file: {}, key_file: {}, client_ca_file: {}}}\n",
            server.cert.display(),
            server.key.display(),
            ca.ca_file.display()
        );
        let tls = ClientTls::from_files(&ca.ca_file, Some((&client.cert, &client.key)), "localhost")?;
        Ok(DemoVehicles {
            config_section,
            addr,
            tls,
            vehicles,
        })
    }

    /// The client TLS settings the demo's vehicles use (for the demo's scripted traffic).
    pub fn tls(&self) -> ClientTls {
        self.tls.clone()
    }

    /// One line for the demo's banner.
    pub fn describe(&self) -> String {
        format!(
            "{} vehicles (half 2016, half 2025) over mutual TLS to {}, one real-time frame each per 10 s",
            self.vehicles, self.addr
        )
    }

    /// Runs the vehicles until `shutdown` (they retry until the server listens).
    pub async fn run(self, shutdown: CancellationToken) {
        run_demo(self.addr, self.tls, self.vehicles, shutdown).await
    }
}

/// The demo's vehicles: half 2016, half 2025, until `shutdown`.
pub async fn run_demo(addr: SocketAddr, tls: ClientTls, vehicles: usize, shutdown: CancellationToken) {
    let base = LoadOptions {
        addr,
        vehicles: vehicles.div_ceil(2),
        rate: vehicles.div_ceil(2) as f64 / 10.0,
        edition: Edition::V2016,
        tls: Some(tls),
        duration: None,
        vin_prefix: "LDEMO16".into(),
        heartbeat: Duration::from_secs(30),
        ramp: Duration::from_secs(2),
    };
    let newer = LoadOptions {
        vehicles: vehicles / 2,
        rate: (vehicles / 2) as f64 / 10.0,
        edition: Edition::V2025,
        vin_prefix: "LDEMO25".into(),
        ..base.clone()
    };
    let stats = Arc::new(LoadStats::default());
    tokio::join!(
        run_load(base, stats.clone(), shutdown.clone()),
        run_load(newer, stats, shutdown)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::gbt32960::decode_frame;

    #[test]
    fn sample_frames_of_both_editions_round_trip_through_the_codec() {
        for edition in [Edition::V2016, Edition::V2025] {
            let vin = Vin::from_text("LSIM0000000000001");
            for frame in [
                login_frame(vin, edition, Time::default(), 1),
                realtime_frame(vin, edition, Time::default(), 7, false),
                realtime_frame(vin, edition, Time::default(), 7, true),
                logout_frame(vin, edition, Time::default(), 1),
                heartbeat_frame(vin, edition),
                time_sync_frame(vin, edition),
            ] {
                let bytes = frame.encode().unwrap();
                assert_eq!(decode_frame(&bytes, Origin::Terminal).unwrap(), frame);
            }
        }
        let activation = activation_frame(Vin::from_text("LSIM0000000000001"), Time::default());
        assert_eq!(
            decode_frame(&activation.encode().unwrap(), Origin::Terminal).unwrap(),
            activation
        );
        assert_eq!(info_type_names(Edition::V2016).len(), 9);
        assert_eq!(info_type_names(Edition::V2025).len(), 12);
    }

    #[test]
    fn answers_to_platform_commands_decode_as_terminal_replies() {
        let vin = Vin::from_text("LSIM0000000000001");
        for json in [
            serde_json::json!({"Action": "Query", "Ids": ["0x01", "0x05", "0x07"]}),
            serde_json::json!({"Action": "Setting", "Params": [{"0x01": 5000}]}),
            serde_json::json!({"Action": "Control", "Command": "0x02"}),
        ] {
            let command =
                crate::protocol::gbt32960::downlink_from_json(&json, vin, Edition::V2016, Time::default()).unwrap();
            let on_wire = decode_frame(&command.encode().unwrap(), Origin::Platform).unwrap();
            let reply = answer(&on_wire, Time::default()).unwrap();
            let decoded = decode_frame(&reply.encode().unwrap(), Origin::Terminal).unwrap();
            assert_eq!(decoded, reply, "{json}");
            assert_eq!(decoded.response, ResponseFlag::SUCCESS);
        }
    }

    #[test]
    fn vins_are_seventeen_characters() {
        assert_eq!(vin_of("LSIM", 42), "LSIM0000000000042");
        assert_eq!(vin_of("LSIM", 42).len(), 17);
    }
}
