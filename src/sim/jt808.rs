//! Simulated JT/T 808 terminals: one [`Terminal`] is a scriptable client (tests drive it message by
//! message), and [`run`] is the load generator behind `roadedge sim jt808` and the demo: many
//! terminals (2013, 2019 or mixed) that register, authenticate, report locations at a rate or as
//! fast as acknowledgements return, send subpackaged batches, answer parameter queries, terminal
//! control and the other platform commands, and reconnect when the link drops.
//!
//! A terminal only counts a location as delivered once the platform's 0x8001 for it arrived, and
//! sends an unacknowledged location again after reconnecting, like a real terminal. Never used by
//! production paths.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::link::ByteStream;
use crate::protocol::jt808::{
    general_result, ids, split_into_packets, Attributes, AuthExtension2019, Authenticate, BatchLocation, BcdTime, Body,
    Edition, FrameDecoder, GeneralReply, Header, Location, LocationBasic, LocationExtra, LocationReply, Message,
    Packet, Param, ParamsReply, Phone, PushOutcome, Reassembler, ReassemblyLimits, Register, TextEncoding,
};

/// The plate simulated terminals register with.
pub const PLATE: &str = "沪A12345";

/// Why a simulated terminal gave up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the platform closed the connection")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("encoding: {0}")]
    Encode(String),
}

/// TLS settings of simulated terminals.
#[derive(Debug, Clone)]
pub struct SimTls {
    /// CA that signed the server certificate.
    pub ca_file: PathBuf,
    /// Client certificate and key, for servers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl SimTls {
    fn connector(&self) -> Result<tokio_rustls::TlsConnector, SimError> {
        let client = self.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let config =
            crate::tls::client_config(Some(&self.ca_file), client).map_err(|e| SimError::Tls(e.to_string()))?;
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

/// Which header layout simulated terminals use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimEdition {
    V2013,
    V2019,
    /// Even-numbered terminals 2013, odd ones 2019.
    Mixed,
}

/// The phone of simulated terminal `index`: `base + index`, as 12 digits (2013) or 20 (2019).
pub fn phone_for(base: u64, index: usize, edition: Edition) -> Phone {
    let number = base + index as u64;
    let digits = match edition {
        Edition::V2019 => format!("{number:020}"),
        _ => format!("{number:012}"),
    };
    Phone::parse(&digits).unwrap_or_else(|| Phone::parse("000000000000").expect("twelve zeros are BCD"))
}

/// A location whose mileage extra carries `n`, so the cloud side can tell reports apart.
pub fn location(n: u32, alarm: u32) -> Location {
    Location {
        basic: LocationBasic {
            alarm,
            status: 0b11,
            latitude: 31_230_400 + (n % 1000),
            longitude: 121_473_700 + (n % 1000),
            altitude: 12,
            speed: (n % 1200) as u16,
            direction: (n % 360) as u16,
            time: BcdTime::parse("261122083000").unwrap_or_default(),
        },
        extras: vec![LocationExtra::Mileage(n), LocationExtra::Fuel(321)],
        trailing: Vec::new(),
    }
}

/// The parameters a simulated terminal reports for 0x8104.
fn default_params(edition: Edition, long: bool) -> Vec<Param> {
    let mut params: Vec<Param> = [
        (0x0001u32, 60u32),
        (0x0002, 10),
        (0x0003, 3),
        (0x0029, 30),
        (0x0055, 120),
    ]
    .iter()
    .filter_map(|(id, v)| Param::int(*id, *v, edition))
    .collect();
    params.push(Param {
        id: 0x0013,
        value: b"127.0.0.1".to_vec(),
    });
    if long {
        // Enough vendor parameters that the answer needs subpackages.
        params.extend((0..120u32).map(|i| Param {
            id: 0xF000 + i,
            value: i.to_be_bytes().to_vec(),
        }));
    }
    params
}

/// One simulated terminal on one connection.
pub struct Terminal {
    stream: Box<dyn ByteStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    /// The terminal's phone.
    pub phone: Phone,
    /// `Some(1)` for a 2019 terminal.
    pub version: Option<u8>,
    serial: u16,
    /// Subpackaged transfers sent, by first serial, for 0x8003.
    transfers: VecDeque<(u16, Vec<Bytes>)>,
    /// Answer 0x8104 with a parameter list long enough to be subpackaged.
    pub long_answers: bool,
    /// Platform commands answered so far.
    pub commands_answered: u64,
    /// Platform commands seen, newest last (bounded), for tests.
    pub commands_seen: VecDeque<Message>,
    /// The plate (colour 1..) or, with colour 0, the VIN the terminal registers with.
    pub plate: String,
    pub plate_color: u8,
}

impl Terminal {
    /// Connects to `server` (`host:port`), with TLS when given.
    pub async fn connect(
        server: &str,
        tls: Option<&SimTls>,
        phone: Phone,
        edition: Edition,
    ) -> Result<Terminal, SimError> {
        let tcp = TcpStream::connect(server).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn ByteStream> = match tls {
            None => Box::new(tcp),
            Some(t) => {
                let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| SimError::Tls(e.to_string()))?;
                Box::new(t.connector()?.connect(name, tcp).await?)
            }
        };
        Ok(Terminal {
            stream,
            buf: BytesMut::with_capacity(2048),
            decoder: FrameDecoder::new(),
            reassembler: Reassembler::new(ReassemblyLimits::default()),
            phone,
            version: (edition == Edition::V2019).then_some(1),
            serial: 0,
            transfers: VecDeque::new(),
            long_answers: false,
            commands_answered: 0,
            commands_seen: VecDeque::new(),
            plate: PLATE.to_string(),
            plate_color: 1,
        })
    }

    /// The terminal's edition.
    pub fn edition(&self) -> Edition {
        if self.version.is_some() {
            Edition::V2019
        } else {
            Edition::V2013
        }
    }

    /// The next header for `msg_id`, taking a serial.
    pub fn header(&mut self, msg_id: u16) -> Header {
        let serial = self.serial;
        self.serial = self.serial.wrapping_add(1);
        Header::new(msg_id, self.phone, self.version, serial)
    }

    /// Skips `n` serials (real terminals do; the platform must not care).
    pub fn skip_serials(&mut self, n: u16) {
        self.serial = self.serial.wrapping_add(n);
    }

    /// Writes raw bytes.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SimError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends `body` in one packet; returns its serial.
    pub async fn send(&mut self, body: Body) -> Result<u16, SimError> {
        let id = body.msg_id().unwrap_or(0);
        let header = self.header(id);
        let message = Message::new(header, body);
        let frame = message.to_bytes().map_err(|e| SimError::Encode(e.to_string()))?;
        self.write_raw(&frame).await?;
        Ok(header.serial)
    }

    /// Subpackages of `body` (`chunk` bytes each) with serials `gap` apart, not yet sent.
    pub fn split(&mut self, body: &Body, chunk: usize, gap: u16) -> Result<Vec<Packet>, SimError> {
        let id = body.msg_id().unwrap_or(0);
        let header = self.header(id);
        let bytes = Message::new(header, body.clone())
            .encode_body()
            .map_err(|e| SimError::Encode(e.to_string()))?;
        let mut packets = split_into_packets(&header, &bytes, chunk).map_err(|e| SimError::Encode(e.to_string()))?;
        for (i, p) in packets.iter_mut().enumerate() {
            p.header.serial = header.serial.wrapping_add(i as u16 * gap.max(1));
        }
        let used = packets.len() as u16 * gap.max(1);
        self.serial = header.serial.wrapping_add(used);
        let frames: Vec<Bytes> = packets.iter().filter_map(|p| p.to_bytes().ok()).collect();
        if self.transfers.len() == 4 {
            self.transfers.pop_front();
        }
        self.transfers.push_back((header.serial, frames));
        Ok(packets)
    }

    /// Sends packets in the given order.
    pub async fn send_packets(&mut self, packets: &[Packet], order: &[usize]) -> Result<(), SimError> {
        for i in order {
            if let Some(p) = packets.get(*i) {
                let frame = p.to_bytes().map_err(|e| SimError::Encode(e.to_string()))?;
                self.write_raw(&frame).await?;
            }
        }
        Ok(())
    }

    /// The next message from the platform (subpackaged downlinks come merged, after the terminal
    /// acknowledged each packet as the standard allows).
    pub async fn recv(&mut self, limit: Duration) -> Result<Message, SimError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(packet)) => {
                    if packet.header.subpackage.is_some() {
                        if let Ok(PushOutcome::Complete(done)) = self.reassembler.push(&packet, 0) {
                            // One general reply for the whole transfer, quoting its last packet.
                            self.reply(&packet.header, general_result::OK).await?;
                            let m = Message::from_parts(done.header, &done.body, self.edition())
                                .map_err(|e| SimError::Refused(e.to_string()))?;
                            return Ok(m);
                        }
                        continue;
                    }
                    match Message::decode(&packet, self.edition()) {
                        Ok(m) => return Ok(m),
                        Err(e) => return Err(SimError::Refused(format!("undecodable platform message: {e}"))),
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(SimError::Refused(format!("corrupt platform frame: {e}"))),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => return Err(SimError::Timeout("a platform message")),
                Ok(Ok(0)) => return Err(SimError::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    async fn reply(&mut self, to: &Header, result: u8) -> Result<(), SimError> {
        self.send(Body::TerminalGeneralReply(GeneralReply {
            reply_serial: to.serial,
            reply_id: to.msg_id,
            result,
        }))
        .await
        .map(|_| ())
    }

    /// Answers a platform command the way a terminal does; replies addressed to the terminal
    /// (0x8001, 0x8100) are ignored here.
    pub async fn answer(&mut self, m: &Message) -> Result<(), SimError> {
        let edition = self.edition();
        let serial = m.header.serial;
        match &m.body {
            Body::PlatformGeneralReply(_) | Body::RegisterReply(_) | Body::ServerTimeReply(_) => return Ok(()),
            Body::QueryAllParams | Body::QueryParams(_) => {
                let all = default_params(edition, self.long_answers);
                let params = match &m.body {
                    Body::QueryParams(wanted) => all.into_iter().filter(|p| wanted.contains(&p.id)).collect(),
                    _ => all,
                };
                let body = Body::ParamsReply(ParamsReply {
                    reply_serial: serial,
                    params,
                });
                let packets = self.split(&body, 500, 3)?;
                // Out of order, as some terminals send them.
                let order: Vec<usize> = (0..packets.len()).rev().collect();
                self.send_packets(&packets, &order).await?;
            }
            Body::QueryAttributes => {
                self.send(Body::Attributes(Attributes {
                    edition,
                    terminal_type: 0b110,
                    manufacturer: b"ROADE".to_vec(),
                    model: b"SIM-808".to_vec(),
                    terminal_id: b"SIM0001".to_vec(),
                    iccid: [0x89, 0x86, 0x01, 0x23, 0x45, 0x67, 0x89, 0x01, 0x23, 0x45],
                    hardware_version: b"HW1".to_vec(),
                    firmware_version: b"FW1.0".to_vec(),
                    gnss: 0b11,
                    comm: 0b1,
                }))
                .await?;
            }
            Body::QueryLocation => {
                self.send(Body::LocationQueryReply(LocationReply {
                    reply_serial: serial,
                    location: location(0, 0),
                }))
                .await?;
            }
            Body::PlatformResendRequest(request) => {
                let frames = self
                    .transfers
                    .iter()
                    .find(|(first, _)| *first == request.first_serial)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default();
                for index in &request.indexes {
                    if let Some(f) = usize::from(*index).checked_sub(1).and_then(|i| frames.get(i)) {
                        let f = f.clone();
                        self.write_raw(&f).await?;
                    }
                }
            }
            // 0x8108 arrives merged by `recv`, which already acknowledged it.
            Body::Upgrade(_) => {}
            _ if m.header.msg_id >= 0x8000 => self.reply(&m.header, general_result::OK).await?,
            _ => return Ok(()),
        }
        self.commands_answered += 1;
        if self.commands_seen.len() == 32 {
            self.commands_seen.pop_front();
        }
        self.commands_seen.push_back(m.clone());
        Ok(())
    }

    /// Waits for the platform's 0x8001 to every serial in `serials` (for message `msg_id`),
    /// answering platform commands meanwhile. A failure result is an error.
    pub async fn await_acks(&mut self, msg_id: u16, serials: &[u16], limit: Duration) -> Result<(), SimError> {
        let deadline = Instant::now() + limit;
        let mut missing: Vec<u16> = serials.to_vec();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv(left).await.map_err(|e| match e {
                SimError::Timeout(_) => SimError::Timeout("the platform's acknowledgement"),
                e => e,
            })?;
            match &m.body {
                Body::PlatformGeneralReply(g) if g.reply_id == msg_id && missing.contains(&g.reply_serial) => {
                    if g.result != general_result::OK {
                        return Err(SimError::Refused(format!(
                            "0x{msg_id:04X} answered with result {}",
                            g.result
                        )));
                    }
                    missing.retain(|s| *s != g.reply_serial);
                }
                _ => self.answer(&m).await?,
            }
        }
        Ok(())
    }

    /// Registers; returns the auth code.
    pub async fn register(&mut self, limit: Duration) -> Result<Vec<u8>, SimError> {
        let edition = self.edition();
        let (manufacturer, terminal_id) = match edition {
            Edition::V2019 => (b"ROADEDGE-SI".to_vec(), format!("SIM{}", self.phone).into_bytes()),
            _ => (b"ROADE".to_vec(), b"SIM0001".to_vec()),
        };
        let serial = self
            .send(Body::Register(Register {
                edition,
                province: 31,
                city: 115,
                manufacturer,
                model: b"SIM-808".to_vec(),
                terminal_id,
                plate_color: self.plate_color,
                // STRING fields are GBK, as the standard says.
                plate: TextEncoding::Gbk.encode(&self.plate).unwrap_or_default(),
            }))
            .await?;
        let deadline = Instant::now() + limit;
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now())).await?;
            match m.body {
                Body::RegisterReply(r) if r.reply_serial == serial => {
                    if r.result != 0 {
                        return Err(SimError::Refused(format!("register result {}", r.result)));
                    }
                    return Ok(r.auth_code);
                }
                Body::PlatformGeneralReply(g) if g.reply_serial == serial => {
                    return Err(SimError::Refused(format!(
                        "register answered 0x8001 result {}",
                        g.result
                    )))
                }
                _ => {}
            }
        }
    }

    /// Authenticates with `code`; `Ok(false)` when the platform refuses it.
    pub async fn authenticate(&mut self, code: &[u8], limit: Duration) -> Result<bool, SimError> {
        let extension = self.version.map(|_| AuthExtension2019 {
            imei: b"860000000000001".to_vec(),
            software_version: b"SIM-1.0".to_vec(),
        });
        let serial = self
            .send(Body::Authenticate(Authenticate {
                code: code.to_vec(),
                extension,
            }))
            .await?;
        let deadline = Instant::now() + limit;
        loop {
            let m = self.recv(deadline.saturating_duration_since(Instant::now())).await?;
            if let Body::PlatformGeneralReply(g) = m.body {
                if g.reply_serial == serial && g.reply_id == ids::AUTHENTICATE {
                    return Ok(g.result == general_result::OK);
                }
            }
        }
    }

    /// Sends a location and waits for its acknowledgement.
    pub async fn report(&mut self, location: Location, limit: Duration) -> Result<(), SimError> {
        let serial = self.send(Body::Location(location)).await?;
        self.await_acks(ids::LOCATION, &[serial], limit).await
    }

    /// Sends a blind-area batch of `items`, subpackaged when large, packets in reverse order with
    /// serial gaps; waits for every packet's acknowledgement.
    pub async fn report_batch(&mut self, items: Vec<Location>, limit: Duration) -> Result<(), SimError> {
        let body = Body::BatchLocation(BatchLocation {
            location_type: 1,
            items,
        });
        let packets = self.split(&body, 700, 2)?;
        let order: Vec<usize> = (0..packets.len()).rev().collect();
        self.send_packets(&packets, &order).await?;
        let serials: Vec<u16> = packets.iter().map(|p| p.header.serial).collect();
        self.await_acks(ids::BATCH_LOCATION, &serials, limit).await
    }

    /// Answers platform commands until `until`.
    pub async fn serve_until(&mut self, until: Instant) -> Result<(), SimError> {
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.recv(left).await {
                Ok(m) => self.answer(&m).await?,
                Err(SimError::Timeout(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Settings of the load generator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `host:port` of the appliance's JT/T 808 listener.
    pub server: String,
    /// Connect with TLS.
    pub tls: Option<SimTls>,
    /// How many terminals.
    pub terminals: usize,
    /// Header layout of the terminals.
    pub edition: SimEdition,
    /// Terminal i has phone `phone_base + i`.
    pub phone_base: u64,
    /// Locations per second over all terminals; 0 = each terminal as fast as acks return.
    pub rate: f64,
    /// Every n-th report of a terminal is a subpackaged blind-area batch (0 = never).
    pub subpackage_every: u64,
    /// Connect and authenticate, then only heartbeat (for memory measurements).
    pub idle: bool,
    /// Heartbeat period while idle.
    pub heartbeat: Duration,
    /// New connections per second while ramping up.
    pub connect_rate: f64,
    /// Keep every acknowledged `(phone, n)` in [`SimStats::acked_log`].
    pub record_acks: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            server: "127.0.0.1:7999".into(),
            tls: None,
            terminals: 10,
            edition: SimEdition::V2013,
            phone_base: 13_900_000_000,
            rate: 10.0,
            subpackage_every: 0,
            idle: false,
            heartbeat: Duration::from_secs(60),
            connect_rate: 2000.0,
            record_acks: false,
        }
    }
}

/// What the simulated terminals achieved.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Terminals currently authenticated.
    pub online: AtomicU64,
    /// Locations whose 0x8001 arrived (batch items included).
    pub acked: AtomicU64,
    /// Subpackaged batches whose packets were all acknowledged.
    pub batches_acked: AtomicU64,
    /// Platform commands answered.
    pub commands_answered: AtomicU64,
    /// Connections made (reconnections included).
    pub connects: AtomicU64,
    /// Connections that ended in an error.
    pub errors: AtomicU64,
    /// `(phone, n)` of every acknowledged location when `record_acks` is set.
    pub acked_log: Mutex<Vec<(String, u32)>>,
    /// The last error, for the summary line.
    pub last_error: Mutex<String>,
}

/// Runs the terminals until `shutdown`.
pub async fn run(options: SimOptions, stats: Arc<SimStats>, shutdown: CancellationToken) {
    let options = Arc::new(options);
    let mut tasks = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / options.connect_rate.max(1.0));
    for index in 0..options.terminals {
        if shutdown.is_cancelled() {
            break;
        }
        let (options, stats, shutdown) = (options.clone(), stats.clone(), shutdown.clone());
        tasks.spawn(async move { terminal_loop(index, &options, &stats, &shutdown).await });
        tokio::time::sleep(gap).await;
    }
    while tasks.join_next().await.is_some() {}
}

fn edition_of(options: &SimOptions, index: usize) -> Edition {
    match options.edition {
        SimEdition::V2013 => Edition::V2013,
        SimEdition::V2019 => Edition::V2019,
        SimEdition::Mixed if index % 2 == 1 => Edition::V2019,
        SimEdition::Mixed => Edition::V2013,
    }
}

const STEP_LIMIT: Duration = Duration::from_secs(15);

async fn terminal_loop(index: usize, options: &SimOptions, stats: &SimStats, shutdown: &CancellationToken) {
    let edition = edition_of(options, index);
    let phone = phone_for(options.phone_base, index, edition);
    let mut state = TerminalState {
        code: None,
        next: 0,
        reports: 0,
    };
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connection(options, stats, phone, edition, &mut state) => r,
        };
        if let Err(e) = outcome {
            stats.errors.fetch_add(1, Relaxed);
            if let Ok(mut last) = stats.last_error.lock() {
                *last = format!("{phone}: {e}");
            }
            if matches!(e, SimError::Refused(_)) {
                // A refused code (e.g. after the platform lost it) is dropped: register again.
                state.code = None;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

struct TerminalState {
    code: Option<Vec<u8>>,
    /// The next location number; advanced only once acknowledged.
    next: u32,
    reports: u64,
}

struct OnlineGuard<'a>(&'a SimStats);

impl Drop for OnlineGuard<'_> {
    fn drop(&mut self) {
        self.0.online.fetch_sub(1, Relaxed);
    }
}

async fn connection(
    options: &SimOptions,
    stats: &SimStats,
    phone: Phone,
    edition: Edition,
    state: &mut TerminalState,
) -> Result<(), SimError> {
    let mut t = Terminal::connect(&options.server, options.tls.as_ref(), phone, edition).await?;
    stats.connects.fetch_add(1, Relaxed);
    t.long_answers = options.subpackage_every > 0;
    let code = match state.code.clone() {
        Some(c) => c,
        None => {
            let c = t.register(STEP_LIMIT).await?;
            state.code = Some(c.clone());
            c
        }
    };
    if !t.authenticate(&code, STEP_LIMIT).await? {
        return Err(SimError::Refused("authentication refused".into()));
    }
    stats.online.fetch_add(1, Relaxed);
    let _online = OnlineGuard(stats);
    let period = if options.idle {
        Some(options.heartbeat)
    } else if options.rate > 0.0 {
        Some(Duration::from_secs_f64(options.terminals as f64 / options.rate))
    } else {
        None
    };
    let mut next_at = Instant::now();
    loop {
        if let Some(p) = period {
            next_at += p;
            let before = t.commands_answered;
            t.serve_until(next_at).await?;
            stats.commands_answered.fetch_add(t.commands_answered - before, Relaxed);
        }
        let before = t.commands_answered;
        if options.idle {
            let serial = t.send(Body::Heartbeat(Vec::new())).await?;
            t.await_acks(ids::HEARTBEAT, &[serial], STEP_LIMIT).await?;
        } else if options.subpackage_every > 0 && (state.reports + 1) % options.subpackage_every == 0 {
            let first = state.next;
            let items: Vec<Location> = (0..40).map(|i| location(first + i, 0)).collect();
            t.report_batch(items, STEP_LIMIT).await?;
            record(stats, options, &t.phone, first..first + 40);
            stats.batches_acked.fetch_add(1, Relaxed);
            state.next += 40;
        } else {
            t.report(location(state.next, 0), STEP_LIMIT).await?;
            record(stats, options, &t.phone, state.next..state.next + 1);
            state.next += 1;
        }
        state.reports += 1;
        stats.commands_answered.fetch_add(t.commands_answered - before, Relaxed);
    }
}

fn record(stats: &SimStats, options: &SimOptions, phone: &Phone, numbers: std::ops::Range<u32>) {
    stats.acked.fetch_add(u64::from(numbers.end - numbers.start), Relaxed);
    if options.record_acks {
        if let Ok(mut log) = stats.acked_log.lock() {
            let phone = phone.to_string();
            log.extend(numbers.map(|n| (phone.clone(), n)));
        }
    }
}

/// A one-line summary of `stats`.
pub fn summary(stats: &SimStats) -> String {
    format!(
        "online {} | locations acked {} | batches {} | commands answered {} | connects {} | errors {}",
        stats.online.load(Relaxed),
        stats.acked.load(Relaxed),
        stats.batches_acked.load(Relaxed),
        stats.commands_answered.load(Relaxed),
        stats.connects.load(Relaxed),
        stats.errors.load(Relaxed),
    )
}

/// Options of `roadedge sim jt808`.
#[derive(clap::Args, Debug)]
pub struct Jt808Args {
    /// The appliance's JT/T 808 listener.
    #[arg(long, default_value = "127.0.0.1:7999")]
    pub server: String,
    /// Simulated terminals.
    #[arg(long, default_value_t = 10)]
    pub terminals: usize,
    /// Header layout: 2013, 2019 or mixed.
    #[arg(long, default_value = "2013")]
    pub edition: String,
    /// Locations per second over all terminals; 0 = as fast as acknowledgements return.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Every n-th report is a subpackaged blind-area batch (0 = never); also makes parameter
    /// answers long enough to be subpackaged.
    #[arg(long, default_value_t = 0)]
    pub subpackage_every: u64,
    /// Terminal i has phone number phone_base + i.
    #[arg(long, default_value_t = 13_900_000_000)]
    pub phone_base: u64,
    /// Only connect, authenticate and heartbeat.
    #[arg(long)]
    pub idle: bool,
    /// Heartbeat period while idle.
    #[arg(long, default_value = "60s")]
    pub heartbeat: String,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Connect with TLS, trusting this CA.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for servers that require one (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub run: crate::sim::run::RunArgs,
}

impl Jt808Args {
    /// The load generator's options; `Err` names the bad argument.
    pub fn options(&self) -> Result<SimOptions, String> {
        let edition = match self.edition.as_str() {
            "2013" => SimEdition::V2013,
            "2019" => SimEdition::V2019,
            "mixed" => SimEdition::Mixed,
            other => return Err(format!("--edition: `{other}` is not one of 2013, 2019, mixed")),
        };
        let heartbeat = crate::config::parse_duration(&self.heartbeat).map_err(|e| format!("--heartbeat: {e}"))?;
        let tls = self.tls_ca.clone().map(|ca_file| SimTls {
            ca_file,
            client: self.tls_cert.clone().zip(self.tls_key.clone()),
        });
        Ok(SimOptions {
            server: self.server.clone(),
            tls,
            terminals: self.terminals,
            edition,
            phone_base: self.phone_base,
            rate: self.rate,
            subpackage_every: self.subpackage_every,
            idle: self.idle,
            heartbeat,
            connect_rate: self.connect_rate,
            record_acks: false,
        })
    }
}

/// `roadedge sim jt808`: runs the terminals, printing a summary every second.
pub async fn run_cli(args: Jt808Args) -> anyhow::Result<()> {
    let options = args.options().map_err(anyhow::Error::msg)?;
    let sim = args.run.start()?;
    let stats = Arc::new(SimStats::default());
    println!(
        "simulating {} JT/T 808 terminals against {} ({:?}, {} locations/s{})",
        options.terminals,
        options.server,
        options.edition,
        options.rate,
        if options.tls.is_some() { ", TLS" } else { "" }
    );
    sim.report(run(options, stats.clone(), sim.shutdown.clone()), || summary(&stats))
        .await;
    if let Ok(last) = stats.last_error.lock() {
        if !last.is_empty() {
            println!("last error: {last}");
        }
    }
    Ok(())
}
