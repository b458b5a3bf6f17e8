//! A simulated GB/T 37987 reader in either dialect, for the demo, the tests and the load bench:
//! listens for the edge or dials it (TCP), or sits on a serial line (a pty pair in tests).
//!
//! It holds what a reader holds: a tag population with vehicle data (plates, plate types,
//! colours...), select and access specs run by the facts sheet's state machine (reports follow the
//! active select specs; access specs read and write tag user memory), alarms, device and tag
//! logs uploaded in confirmed segments, reports cached while no link is up, and a firmware store
//! (downloads over TFTP, activate, deactivate). Rules without `Persistence` are lost on a reset.
//! Test hooks: raise/restore alarms, wipe rules (a reboot), drop the link, stop answering
//! keepalives, stall an upload after its first segment, go mute.
//! Never used by production paths.

mod device;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use device::{After, Device, Firmware, Handled, Now};

use crate::link::{FramedIo, Read};
use crate::protocol::gbt37987::serial::{encode_serial_frame, PLACEHOLDER_SRC};
use crate::protocol::gbt37987::TcpFrameDecoder;
use crate::protocol::gbt37987::{Dialect, Message, SerialDeframer, Value, VehicleTagData};
use crate::reader::link::LinkDecoder;
use crate::reader::rules::{self, SpecState};
use crate::reader::tftp;

/// How the simulated reader reaches the edge.
#[derive(Debug, Clone)]
pub enum SimMode {
    /// Wait for the edge to dial (the configured `readers.devices[].tcp`).
    Listen(SocketAddr),
    /// Dial the edge's `readers.listen`.
    Dial(SocketAddr),
    /// A serial line (a pty in tests) at a bus address.
    Serial { path: PathBuf, baud: u32, address: u8 },
}

/// Settings of one simulated reader.
#[derive(Debug, Clone)]
pub struct SimReaderOptions {
    pub sn: [u8; 8],
    pub dialect: Dialect,
    pub mode: SimMode,
    /// Tags in the population.
    pub tags: usize,
    /// An active select spec reports this often.
    pub report_interval: Duration,
    /// Tags per report.
    pub tags_per_report: usize,
    /// The reader's own Keepalive period (`None`: only answers the edge's).
    pub keepalive_interval: Option<Duration>,
    /// Device log entries held at start (tag log entries: the same number).
    pub log_entries: usize,
    /// Entries per log segment and tags per cached-report segment.
    pub segment_size: usize,
    /// Distinguishes the plates of several readers.
    pub plate_prefix: char,
    /// Dial mode: TLS to the edge (with the client certificate the configuration holds).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl SimReaderOptions {
    /// Defaults for a reader with serial number `sn`.
    pub fn new(sn: [u8; 8], dialect: Dialect, mode: SimMode) -> SimReaderOptions {
        SimReaderOptions {
            sn,
            dialect,
            mode,
            tags: 20,
            report_interval: Duration::from_millis(200),
            tags_per_report: 2,
            keepalive_interval: Some(Duration::from_secs(5)),
            log_entries: 10,
            segment_size: 4,
            plate_prefix: 'A',
            tls: None,
        }
    }
}

/// A serial number from 16 hex digits or up to 8 ASCII characters (padded with '0').
pub fn parse_sn(text: &str) -> Option<[u8; 8]> {
    if let Some(sn) = crate::config::parse_device_sn(text) {
        return Some(sn);
    }
    if text.is_empty() || text.len() > 8 || !text.is_ascii() {
        return None;
    }
    let mut sn = [b'0'; 8];
    sn[..text.len()].copy_from_slice(text.as_bytes());
    Some(sn)
}

/// One tag of the population.
#[derive(Debug, Clone)]
pub struct SimTag {
    pub tid: Vec<u8>,
    pub plate: String,
    data: VehicleTagData,
    /// User memory (words), written by access specs.
    pub user: Vec<u16>,
}

impl SimTag {
    /// The tag of a vehicle with `plate` as printed (`京A12345`: issuing authority from the
    /// province and letter, then the plate characters), for scripted traffic.
    pub fn vehicle(tid: Vec<u8>, plate: &str, cid: u32) -> SimTag {
        let (authority, characters) =
            crate::fusion::plate::tag_bytes(plate).unwrap_or_else(|| (vec![0x0B, 0x00], plate_codes(plate)));
        let data = VehicleTagData {
            items: vec![
                ("CID", cid.to_be_bytes().to_vec()),
                ("FPDH", authority),
                ("SYXZ", vec![0x41]),
                ("CLLX", vec![0x1A, 0x00]),
                ("HPZL", vec![2]),
                ("HPHMXH", characters),
            ],
        };
        SimTag {
            tid,
            plate: plate.to_string(),
            data,
            user: vec![0; 16],
        }
    }
}

/// Plate characters as the tag codes them (0–25 = A–Z, 26–35 = 0–9).
fn plate_codes(plate: &str) -> Vec<u8> {
    plate
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c as u8 - b'A'),
            '0'..='9' => Some(c as u8 - b'0' + 26),
            _ => None,
        })
        .collect()
}

fn population(n: usize, sn: [u8; 8], prefix: char) -> Vec<SimTag> {
    (0..n)
        .map(|i| {
            let mut tid = vec![0xE2, 0x80, sn[6], sn[7]];
            tid.extend_from_slice(&(i as u32).to_be_bytes());
            let plate = format!("{prefix}{:05}", i % 100_000);
            let data = VehicleTagData {
                items: vec![
                    ("CID", (i as u32 + 1).to_be_bytes().to_vec()),
                    ("FPDH", vec![0x0B, 0x00]),
                    ("SYXZ", vec![0x41]),
                    ("CCRQ", ((2018 - 1990) * 12 + (i % 12) as u16).to_le_bytes().to_vec()),
                    ("CLLX", vec![0x1A, 0x00]),
                    ("HPZL", vec![2]),
                    ("HPHMXH", plate_codes(&plate)),
                    ("JYYXQ", ((2027 - 2013) * 12u16).to_le_bytes().to_vec()),
                    ("CSYS", vec![(i % 9) as u8 + 1]),
                ],
            };
            SimTag {
                tid,
                plate,
                data,
                user: (0..16).map(|w| (i as u16) << 8 | w).collect(),
            }
        })
        .collect()
}

struct Shared {
    device: Mutex<Device>,
    /// The device's options (read without the lock).
    options: SimReaderOptions,
    /// Something waits in the device's outbound queue.
    wake: Notify,
    mute: AtomicBool,
    offline: AtomicBool,
    connected: AtomicBool,
    /// Number of the current connection.
    generation: AtomicU64,
    connection: Mutex<Option<CancellationToken>>,
    connections: AtomicU64,
}

/// A running simulated reader.
pub struct SimReader {
    shared: Arc<Shared>,
    /// The listening address (listen mode).
    pub local_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall_ms: crate::time::now_ms(),
    }
}

impl SimReader {
    /// Starts the reader; it runs until `shutdown`.
    pub async fn spawn(options: SimReaderOptions, shutdown: CancellationToken) -> std::io::Result<SimReader> {
        let shared = Arc::new(Shared {
            device: Mutex::new(Device::new(options.clone())),
            options: options.clone(),
            wake: Notify::new(),
            mute: AtomicBool::new(false),
            offline: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            connection: Mutex::new(None),
            connections: AtomicU64::new(0),
        });
        let (local_addr, task) = match options.mode.clone() {
            SimMode::Listen(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let local = listener.local_addr()?;
                let s = shared.clone();
                (Some(local), tokio::spawn(listen_loop(s, listener, shutdown)))
            }
            SimMode::Dial(addr) => {
                let s = shared.clone();
                (None, tokio::spawn(dial_loop(s, addr, shutdown)))
            }
            SimMode::Serial { path, baud, address } => {
                let s = shared.clone();
                (None, tokio::spawn(serial_loop(s, path, baud, address, shutdown)))
            }
        };
        Ok(SimReader {
            shared,
            local_addr,
            task,
        })
    }

    fn device(&self) -> std::sync::MutexGuard<'_, Device> {
        lock(&self.shared)
    }

    /// Runs `change` on the device and sends what it queued at once (when a link is up).
    fn change<T>(&self, change: impl FnOnce(&mut Device) -> T) -> T {
        let out = change(&mut self.device());
        self.shared.wake.notify_one();
        out
    }

    /// Scripted traffic: replaces the tag population with `tags`; from now on reports carry
    /// only the tags [`SimReader::present`] puts in front of the antennas.
    pub fn script_tags(&self, tags: Vec<SimTag>) {
        self.device().script_tags(tags);
    }

    /// Scripted traffic: the tags (indexes into [`SimReader::script_tags`]' list) in front of
    /// the antennas now.
    pub fn present(&self, tags: Vec<usize>) {
        self.device().present(tags);
    }

    /// The serial number.
    pub fn sn(&self) -> [u8; 8] {
        self.shared.options.sn
    }

    /// Whether an edge is connected now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Relaxed)
    }

    /// Connections accepted or made so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Relaxed)
    }

    /// Tag reports sent live (messages, tags).
    pub fn reports_sent(&self) -> (u64, u64) {
        let d = self.device();
        (d.reports_sent, d.tags_sent)
    }

    /// Plates of the population.
    pub fn plates(&self) -> Vec<String> {
        self.device().plates()
    }

    /// Select specs held and their states.
    pub fn select_specs(&self) -> BTreeMap<u32, SpecState> {
        self.device().select_specs()
    }

    /// Access specs held (id, enabled).
    pub fn access_specs(&self) -> BTreeMap<u32, bool> {
        self.device().access_specs()
    }

    /// Firmware by VerType.
    pub fn firmware(&self, ver_type: u8) -> Option<Firmware> {
        self.device().firmware(ver_type)
    }

    /// The time the edge last set (seconds since the epoch).
    pub fn time_set(&self) -> Option<u64> {
        self.device().time_set()
    }

    /// Active alarm ids.
    pub fn alarms(&self) -> Vec<u32> {
        self.device().alarms()
    }

    /// Tags waiting in the cache for a link.
    pub fn cached(&self) -> usize {
        self.device().cached()
    }

    /// Resets performed (ResetDevice).
    pub fn resets(&self) -> u64 {
        self.device().resets()
    }

    /// Raises an alarm (sent at once when a link is up); returns its AlarmID.
    pub fn raise_alarm(&self, alarm_code: u32, level: u8, description: &str) -> u32 {
        self.change(|d| d.raise_alarm(alarm_code, level, description, now()))
    }

    /// Ends an alarm (AlarmRestore, automatic).
    pub fn restore_alarm(&self, id: u32) {
        self.change(|d| d.restore_alarm(id));
    }

    /// Ends an alarm without telling anyone (the edge learns it at the next alarm sync).
    pub fn forget_alarm(&self, id: u32) {
        self.device().forget_alarm(id);
    }

    /// Loses every rule, as a reboot does.
    pub fn wipe_rules(&self) {
        self.device().wipe_rules();
    }

    /// Closes the current link (the edge or the reader re-establishes it).
    pub fn drop_link(&self) {
        if let Some(token) = self.shared.connection.lock().ok().and_then(|c| c.clone()) {
            token.cancel();
        }
    }

    /// Whether edge keepalives get a KeepaliveAck.
    pub fn answer_keepalives(&self, on: bool) {
        self.device().answer_keepalives = on;
    }

    /// Whether log and cached-report uploads stop after their first segment.
    pub fn stall_uploads(&self, on: bool) {
        self.device().stall_uploads = on;
    }

    /// Whether the reader sends nothing at all (it still reads).
    pub fn mute(&self, on: bool) {
        self.shared.mute.store(on, Relaxed);
    }

    /// Whether the reader is cut off the network: no connection is accepted or made (rules keep
    /// running and reports go to the cache).
    pub fn offline(&self, on: bool) {
        self.shared.offline.store(on, Relaxed);
        if on {
            self.drop_link();
        }
    }

    /// Stops the reader.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Device> {
    match shared.device.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The rules go on while no link is up; their reports go to the cache.
fn tick_unlinked(shared: &Shared) {
    lock(shared).tick(now(), false);
}

async fn listen_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let mut clock = tokio::time::interval(shared.options.report_interval.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.tick() => {
                if !shared.connected.load(Relaxed) {
                    tick_unlinked(&shared);
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if shared.offline.load(Relaxed) {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                // A new connection replaces the current one.
                let (token, generation) = replace_connection(&shared, &shutdown);
                let s = shared.clone();
                tokio::spawn(async move { connection(s, stream, Wire::Tcp, token, generation).await });
            }
        }
    }
}

/// Makes a new connection the current one (closing the previous); marks the reader connected
/// before the connection's task runs, so no report slips into the cache meanwhile.
fn replace_connection(shared: &Shared, shutdown: &CancellationToken) -> (CancellationToken, u64) {
    let token = shutdown.child_token();
    let generation = shared.generation.fetch_add(1, Relaxed) + 1;
    shared.connected.store(true, Relaxed);
    if let Ok(mut c) = shared.connection.lock() {
        if let Some(old) = c.replace(token.clone()) {
            old.cancel();
        }
    }
    (token, generation)
}

async fn dial_loop(shared: Arc<Shared>, addr: SocketAddr, shutdown: CancellationToken) {
    let mut clock = tokio::time::interval(shared.options.report_interval.max(Duration::from_millis(1)));
    loop {
        let connected = if shared.offline.load(Relaxed) {
            Err(std::io::Error::other("offline"))
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::net::TcpStream::connect(addr) => r,
            }
        };
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                match shared.options.tls.clone() {
                    None => {
                        let (token, generation) = replace_connection(&shared, &shutdown);
                        connection(shared.clone(), stream, Wire::Tcp, token, generation).await;
                    }
                    Some(config) => {
                        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                        match tokio_rustls::TlsConnector::from(config).connect(name, stream).await {
                            Ok(tls) => {
                                let (token, generation) = replace_connection(&shared, &shutdown);
                                connection(shared.clone(), tls, Wire::Tcp, token, generation).await;
                            }
                            Err(e) => tracing::debug!("sim reader: TLS to {addr}: {e}"),
                        }
                    }
                }
            }
            Err(_) => tick_unlinked(&shared),
        }
        // Retry pace; the rules keep running meanwhile (reports are cached).
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                _ = clock.tick() => tick_unlinked(&shared),
            }
        }
    }
}

async fn serial_loop(shared: Arc<Shared>, path: PathBuf, baud: u32, address: u8, shutdown: CancellationToken) {
    use tokio_serial::SerialPortBuilderExt;
    loop {
        let port = tokio_serial::new(path.to_string_lossy(), baud).open_native_async();
        match port {
            Ok(port) => {
                let (token, generation) = replace_connection(&shared, &shutdown);
                connection(shared.clone(), port, Wire::Serial { address }, token, generation).await;
            }
            Err(e) => tracing::debug!("sim reader: opening {}: {e}", path.display()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Tcp,
    /// The reader at `address`; the edge (bus master) is 0.
    Serial {
        address: u8,
    },
}

impl Wire {
    /// The edge's frames: on a serial bus those the master (address 0) sent.
    fn decoder(self, dialect: Dialect) -> LinkDecoder {
        match self {
            Wire::Tcp => LinkDecoder::Tcp(TcpFrameDecoder::new()),
            Wire::Serial { .. } => LinkDecoder::Serial {
                deframer: SerialDeframer::new(dialect),
                address: PLACEHOLDER_SRC,
            },
        }
    }

    fn encode(self, dialect: Dialect, message: &Message) -> Option<Vec<u8>> {
        let bytes = message.encode(dialect).ok()?;
        Some(match self {
            Wire::Tcp => bytes,
            Wire::Serial { address } => encode_serial_frame(dialect, address, 0, &bytes),
        })
    }
}

/// Bytes a link may hold of an incomplete frame.
const MAX_BUFFER: usize = 1 << 20;

/// One link to the edge: the reader's side of the protocol until the link drops. The device
/// decides everything; this loop only moves its messages, ticks and downloads.
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: Arc<Shared>,
    stream: S,
    wire: Wire,
    token: CancellationToken,
    generation: u64,
) {
    let options = shared.options.clone();
    let dialect = options.dialect;
    shared.connections.fetch_add(1, Relaxed);
    // The simulator keeps no counters of its own link; the frame I/O wants somewhere to count.
    let counters = Arc::new(crate::metrics::ProtocolCounters::default());
    // Nothing from the edge for an hour is a dead link; the edge's keepalives come far sooner.
    let mut io = FramedIo::new(
        stream,
        wire.decoder(dialect),
        MAX_BUFFER,
        Duration::from_secs(3600),
        counters,
    );
    let mut out: Vec<Message> = lock(&shared).link_up(now());
    let mut clock = tokio::time::interval(options.report_interval.max(Duration::from_millis(1)));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keepalive_every = options.keepalive_interval.unwrap_or(Duration::from_secs(3600));
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive_every, keepalive_every);
    let mut close = false;
    loop {
        if !out.is_empty() && !shared.mute.load(Relaxed) {
            let mut bytes = Vec::new();
            for mut m in out.drain(..) {
                // Replies echo the request's header; the reader's own SN is what it always sends.
                m.header.device_sn = options.sn;
                bytes.extend(wire.encode(dialect, &m).unwrap_or_default());
            }
            if io.send(&bytes).await.is_err() {
                break;
            }
        }
        out.clear();
        if close {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = shared.wake.notified() => out.extend(lock(&shared).outbound(now())),
            _ = clock.tick() => {
                let mut device = lock(&shared);
                out.extend(device.outbound(now()));
                out.extend(device.tick(now(), true));
            }
            _ = keepalive.tick(), if options.keepalive_interval.is_some() => out.extend(lock(&shared).keepalive()),
            read = io.next() => match read {
                Err(_) => break,
                // A corrupt frame is skipped: a reader answers what it can read.
                Ok(Read::Bad(_)) => {}
                Ok(Read::Frame(bytes)) => {
                    let Ok(message) = Message::decode(&bytes, dialect) else { continue };
                    let handled = lock(&shared).handle(&message, now());
                    out.extend(handled.replies);
                    match handled.then {
                        After::Continue => {}
                        After::Close => close = true,
                        After::Download { ver_type, request } => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let result = download(&request).await;
                                lock(&shared).download_finished(ver_type, &request, result);
                                shared.wake.notify_one();
                            });
                        }
                    }
                }
            },
        }
    }
    io.shutdown().await;
    // Unless a newer connection took over already: then its state stays.
    if shared.generation.load(Relaxed) == generation {
        shared.connected.store(false, Relaxed);
        lock(&shared).link_down();
    }
}

/// Downloads the image a SetVersion points at (TFTP only); its version is the text after
/// `VERSION=` on the image's first line, else the file name.
async fn download(m: &Message) -> Result<String, String> {
    let d = m.child("VersionDownload").ok_or("missing VersionDownload")?;
    let server_type = d.field("ServerType").and_then(Value::as_u64).unwrap_or(0);
    if server_type != 1 {
        return Err("this reader downloads over TFTP only".into());
    }
    let path = d.field("VersionPath").and_then(Value::as_text).unwrap_or_default();
    let port = d.field("ServerPort").and_then(Value::as_u64).unwrap_or(69) as u16;
    let ip = match d.child("IPAddress").and_then(|a| a.field("Address")) {
        Some(Value::Dwords(words)) if !words.is_empty() => std::net::Ipv4Addr::from(words[0]),
        _ => return Err("missing IPAddress".into()),
    };
    let image = tokio::time::timeout(
        Duration::from_secs(60),
        tftp::fetch(SocketAddr::from((ip, port)), &path, tftp::MAX_FILE),
    )
    .await
    .map_err(|_| "download timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let first_line = image.split(|b| *b == b'\n').next().unwrap_or_default();
    let version = std::str::from_utf8(first_line)
        .ok()
        .and_then(|l| l.strip_prefix("VERSION="))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or(path);
    Ok(version)
}

/// Runs `count` simulated readers (the CLI): in listen mode on consecutive ports from
/// `mode`'s port, in dial mode all dialling the same address with consecutive serial numbers.
pub async fn run_many(
    base: SimReaderOptions,
    count: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<SimReader>> {
    let mut readers = Vec::with_capacity(count);
    for i in 0..count {
        let mut options = base.clone();
        let mut sn = u64::from_be_bytes(base.sn);
        sn = sn.wrapping_add(i as u64);
        options.sn = sn.to_be_bytes();
        options.plate_prefix = (b'A' + (i % 26) as u8) as char;
        if let SimMode::Listen(addr) = &mut options.mode {
            if addr.port() != 0 {
                addr.set_port(addr.port().wrapping_add(i as u16));
            }
        }
        readers.push(SimReader::spawn(options, shutdown.clone()).await?);
    }
    Ok(readers)
}

/// Options of `roadedge sim reader`.
#[derive(clap::Args, Debug)]
pub struct ReaderSimArgs {
    /// Wire dialect: gbt37987-2019 or hb-2017.
    #[arg(long, default_value = "gbt37987-2019")]
    pub dialect: String,
    /// Listen for the edge on this address (readers.devices[].tcp points here).
    #[arg(long, conflicts_with_all = ["dial", "serial"])]
    pub listen: Option<SocketAddr>,
    /// Dial the edge's readers.listen address.
    #[arg(long, conflicts_with = "serial")]
    pub dial: Option<SocketAddr>,
    /// A serial port (e.g. one end of `socat -d -d pty,raw,echo=0 pty,raw,echo=0`).
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Serial bit rate.
    #[arg(long, default_value_t = 19200)]
    pub baud: u32,
    /// Serial bus address of the reader.
    #[arg(long, default_value_t = 1)]
    pub address: u8,
    /// Device serial number: 16 hex digits or up to 8 characters (several readers count up from it).
    #[arg(long, default_value = "SIM00001")]
    pub sn: String,
    /// Readers to run (listen mode: consecutive ports).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Tags in each reader's population.
    #[arg(long, default_value_t = 20)]
    pub tags: usize,
    /// Reports per second of each active select spec.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Tags per report.
    #[arg(long, default_value_t = 2)]
    pub tags_per_report: usize,
    /// The reader's own keepalive period (0s: none).
    #[arg(long, default_value = "5s")]
    pub keepalive: String,
    #[command(flatten)]
    pub run: crate::sim::run::RunArgs,
}

/// `roadedge sim reader`: runs simulated readers and prints what they do every few seconds.
pub async fn run_cli(args: ReaderSimArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let dialect: Dialect = args.dialect.parse().map_err(|e| anyhow::anyhow!("--dialect: {e}"))?;
    let sn = parse_sn(&args.sn).context("--sn: 16 hex digits or up to 8 ASCII characters")?;
    let mode = match (args.listen, args.dial, args.serial) {
        (Some(addr), None, None) => SimMode::Listen(addr),
        (None, Some(addr), None) => SimMode::Dial(addr),
        (None, None, Some(path)) => SimMode::Serial {
            path,
            baud: args.baud,
            address: args.address,
        },
        _ => anyhow::bail!("give exactly one of --listen, --dial or --serial"),
    };
    if args.count == 0 || args.count > 1000 {
        anyhow::bail!("--count must be 1 to 1000");
    }
    if matches!(mode, SimMode::Serial { .. }) && args.count != 1 {
        anyhow::bail!("a serial port carries one simulated reader");
    }
    if !(args.rate > 0.0 && args.rate <= 10_000.0) {
        anyhow::bail!("--rate must be above 0 and at most 10000");
    }
    let keepalive = crate::config::parse_duration(&args.keepalive).map_err(|e| anyhow::anyhow!("--keepalive: {e}"))?;
    let mut options = SimReaderOptions::new(sn, dialect, mode);
    options.tags = args.tags.clamp(1, 100_000);
    options.report_interval = Duration::from_secs_f64(1.0 / args.rate);
    options.tags_per_report = args.tags_per_report.clamp(1, 1000);
    options.keepalive_interval = (!keepalive.is_zero()).then_some(keepalive);
    let sim = args.run.start()?;
    let readers = run_many(options, args.count, sim.shutdown.clone()).await?;
    for r in &readers {
        match r.local_addr {
            Some(addr) => println!(
                "reader {} ({dialect}) listening on {addr}",
                crate::protocol::gbt37987::model::hex_string(&r.sn())
            ),
            None => println!(
                "reader {} ({dialect}) started",
                crate::protocol::gbt37987::model::hex_string(&r.sn())
            ),
        }
    }
    let summary = || {
        let connected = readers.iter().filter(|r| r.is_connected()).count();
        let (reports, tags) = readers
            .iter()
            .map(SimReader::reports_sent)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let specs: usize = readers.iter().map(|r| r.select_specs().len()).sum();
        format!(
            "{connected}/{} connected, {specs} select specs held, {reports} reports ({tags} tags) sent",
            readers.len()
        )
    };
    // The readers run until the stop token; they have nothing to wind down.
    sim.report(sim.shutdown.cancelled(), summary).await;
    for r in readers {
        r.stop().await;
    }
    Ok(())
}

/// The demo's readers: three simulated readers on loopback and the `readers` section that
/// points the appliance at them.
pub struct DemoReaders {
    /// YAML of the `readers` section.
    pub yaml: String,
    /// One line describing them.
    pub summary: String,
    pub readers: Vec<SimReader>,
    ids: Vec<String>,
}

/// Starts the demo readers: `north` (hb-2017) and `south` (gbt37987-2019) wait for the edge to
/// dial them, `east` (gbt37987-2019) dials the edge's reader listener.
pub async fn demo_readers(shutdown: CancellationToken) -> anyhow::Result<DemoReaders> {
    let listen_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut readers = Vec::new();
    for (sn, dialect, mode, plate) in [
        (
            *b"DEMO0001",
            Dialect::Hb2017,
            SimMode::Listen("127.0.0.1:0".parse()?),
            'N',
        ),
        (
            *b"DEMO0002",
            Dialect::Gbt37987_2019,
            SimMode::Listen("127.0.0.1:0".parse()?),
            'S',
        ),
        (
            *b"DEMO0003",
            Dialect::Gbt37987_2019,
            SimMode::Dial(SocketAddr::from(([127, 0, 0, 1], listen_port))),
            'E',
        ),
    ] {
        let mut options = SimReaderOptions::new(sn, dialect, mode);
        options.plate_prefix = plate;
        options.report_interval = Duration::from_millis(1000);
        readers.push(SimReader::spawn(options, shutdown.clone()).await?);
    }
    let addr = |i: usize| readers[i].local_addr.map(|a| a.to_string()).unwrap_or_default();
    let yaml = format!(
        "readers:\n  listen: 127.0.0.1:{listen_port}\n  dialect: gbt37987-2019\n  keepalive_interval: 5s\n  devices:\n    - {{id: north, tcp: '{}', dialect: hb-2017}}\n    - {{id: south, tcp: '{}'}}\n    - {{id: east, sn: {}}}\n",
        addr(0),
        addr(1),
        crate::protocol::gbt37987::model::hex_string(b"DEMO0003"),
    );
    Ok(DemoReaders {
        yaml,
        summary: "north (hb-2017, dialled), south (gbt37987-2019, dialled), east (gbt37987-2019, dials in); one select rule each".into(),
        readers,
        ids: vec!["north".into(), "south".into(), "east".into()],
    })
}

impl DemoReaders {
    /// Gives each demo reader an active inventory rule through the reader service (stored as
    /// its desired rules, applied when its link is up).
    pub fn apply_rules(&self, service: std::sync::Arc<crate::reader::ReaderService>) {
        for (n, id) in self.ids.iter().enumerate() {
            let service = service.clone();
            let id = id.clone();
            let rule = rules::default_select_spec(n as u32 + 1, SpecState::Active, 1, &[1, 2]);
            tokio::spawn(async move {
                let command = serde_json::json!({"action": "set_rules", "select_specs": [rule]});
                if let Err(e) = service.execute(&id, &command).await {
                    tracing::warn!(reader = %id, "demo rules: {e}");
                }
            });
        }
    }
}
