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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::gbt37987::builders::{self, Addressing, Alarm};
use crate::protocol::gbt37987::serial::encode_serial_frame;
use crate::protocol::gbt37987::{
    Body, Dialect, Header, Message, Parameter, SerialDeframer, TagReport, TcpFrameDecoder, Value, VehicleTagData,
};
use crate::reader::rules::{self, transition, SpecEvent, SpecState};
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

#[derive(Debug, Clone)]
struct SimSpec {
    param: Parameter,
    state: SpecState,
    since: Instant,
    last_report: Instant,
    cursor: usize,
}

#[derive(Debug, Clone)]
struct SimAccess {
    param: Parameter,
    enabled: bool,
    operations_left: Option<u16>,
}

#[derive(Debug, Clone)]
struct LogEntry {
    sequence: u64,
    kind: u8,
    code: u32,
    text: String,
    tid: Vec<u8>,
    at_us: u64,
}

/// Firmware of one VerType: what runs and what was downloaded beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub running: String,
    pub spare: Option<String>,
}

#[derive(Debug)]
enum Outbound {
    Alarm(Alarm),
    Restore(u32),
    /// A reply finished in the background (a firmware download).
    Message(Box<Message>),
}

/// A segmented upload in progress: the request it answers and what is left.
#[derive(Debug)]
struct Upload {
    request: Header,
    kind: UploadKind,
    next_sequence: u16,
    /// The last segment went out; its confirmation ends the upload.
    finished: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadKind {
    TagLog,
    DeviceLog,
    Cached,
}

struct State {
    specs: BTreeMap<u32, SimSpec>,
    access: BTreeMap<u32, SimAccess>,
    tags: Vec<SimTag>,
    alarms: BTreeMap<u32, Alarm>,
    next_alarm: u32,
    device_log: Vec<LogEntry>,
    tag_log: Vec<LogEntry>,
    cache: VecDeque<TagReport>,
    firmware: BTreeMap<u8, Firmware>,
    outbound: VecDeque<Outbound>,
    upload: Option<Upload>,
    number: u32,
    time_set: Option<u64>,
    resets: u64,
    /// Scripted traffic: the tags in front of the antennas now (indexes into `tags`); every
    /// report of an active spec carries exactly these, and none is sent while it is empty.
    present: Option<Vec<usize>>,
}

/// Reports kept while no link is up (tags).
const CACHE_CAP: usize = 10_000;

struct Shared {
    options: SimReaderOptions,
    state: Mutex<State>,
    wake: Notify,
    answer_keepalives: AtomicBool,
    stall_uploads: AtomicBool,
    mute: AtomicBool,
    offline: AtomicBool,
    connected: AtomicBool,
    /// Number of the current connection.
    generation: AtomicU64,
    connection: Mutex<Option<CancellationToken>>,
    reports_sent: AtomicU64,
    tags_sent: AtomicU64,
    connections: AtomicU64,
}

/// A running simulated reader.
pub struct SimReader {
    shared: Arc<Shared>,
    /// The listening address (listen mode).
    pub local_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl SimReader {
    /// Starts the reader; it runs until `shutdown`.
    pub async fn spawn(options: SimReaderOptions, shutdown: CancellationToken) -> std::io::Result<SimReader> {
        let log = |kind: u8| -> Vec<LogEntry> {
            (0..options.log_entries)
                .map(|i| LogEntry {
                    sequence: i as u64 + 1,
                    kind,
                    code: 100 + i as u32,
                    text: format!("simulated log entry {}", i + 1),
                    tid: vec![0xE2, 0x80, 0, i as u8],
                    at_us: 1_700_000_000_000_000 + i as u64 * 1_000_000,
                })
                .collect()
        };
        let state = State {
            specs: BTreeMap::new(),
            access: BTreeMap::new(),
            tags: population(options.tags, options.sn, options.plate_prefix),
            alarms: BTreeMap::new(),
            next_alarm: 1,
            device_log: log(2),
            tag_log: log(0),
            cache: VecDeque::new(),
            firmware: [0u8, 1, 2]
                .into_iter()
                .map(|t| {
                    (
                        t,
                        Firmware {
                            running: format!("sim-{t}.1.0"),
                            spare: None,
                        },
                    )
                })
                .collect(),
            outbound: VecDeque::new(),
            upload: None,
            number: 0,
            time_set: None,
            resets: 0,
            present: None,
        };
        let shared = Arc::new(Shared {
            options: options.clone(),
            state: Mutex::new(state),
            wake: Notify::new(),
            answer_keepalives: AtomicBool::new(true),
            stall_uploads: AtomicBool::new(false),
            mute: AtomicBool::new(false),
            offline: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            connection: Mutex::new(None),
            reports_sent: AtomicU64::new(0),
            tags_sent: AtomicU64::new(0),
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
        // The background rule clock runs while no link is up too (reports go to the cache).
        Ok(SimReader {
            shared,
            local_addr,
            task,
        })
    }

    /// Scripted traffic: replaces the tag population with `tags`; from now on reports carry
    /// only the tags [`SimReader::present`] puts in front of the antennas.
    pub fn script_tags(&self, tags: Vec<SimTag>) {
        let mut state = lock(&self.shared);
        state.tags = tags;
        state.present = Some(Vec::new());
    }

    /// Scripted traffic: the tags (indexes into [`SimReader::script_tags`]' list) in front of
    /// the antennas now.
    pub fn present(&self, tags: Vec<usize>) {
        let mut state = lock(&self.shared);
        let n = state.tags.len();
        state.present = Some(tags.into_iter().filter(|i| *i < n).collect());
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
        (
            self.shared.reports_sent.load(Relaxed),
            self.shared.tags_sent.load(Relaxed),
        )
    }

    /// Plates of the population.
    pub fn plates(&self) -> Vec<String> {
        self.lock().tags.iter().map(|t| t.plate.clone()).collect()
    }

    /// Select specs held and their states.
    pub fn select_specs(&self) -> BTreeMap<u32, SpecState> {
        self.lock().specs.iter().map(|(id, s)| (*id, s.state)).collect()
    }

    /// Access specs held (id, enabled).
    pub fn access_specs(&self) -> BTreeMap<u32, bool> {
        self.lock().access.iter().map(|(id, a)| (*id, a.enabled)).collect()
    }

    /// Firmware by VerType.
    pub fn firmware(&self, ver_type: u8) -> Option<Firmware> {
        self.lock().firmware.get(&ver_type).cloned()
    }

    /// The time the edge last set (seconds since the epoch).
    pub fn time_set(&self) -> Option<u64> {
        self.lock().time_set
    }

    /// Active alarm ids.
    pub fn alarms(&self) -> Vec<u32> {
        self.lock().alarms.keys().copied().collect()
    }

    /// Tags waiting in the cache for a link.
    pub fn cached(&self) -> usize {
        self.lock().cache.len()
    }

    /// Resets performed (ResetDevice).
    pub fn resets(&self) -> u64 {
        self.lock().resets
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Raises an alarm (sent at once when a link is up); returns its AlarmID.
    pub fn raise_alarm(&self, alarm_code: u32, level: u8, description: &str) -> u32 {
        let mut s = self.lock();
        let id = s.next_alarm;
        s.next_alarm += 1;
        let alarm = Alarm {
            alarm_id: id,
            alarm_code,
            reason: 0,
            level,
            seconds: (crate::time::now_ms() / 1000) as u32,
            description: description.to_string(),
        };
        s.alarms.insert(id, alarm.clone());
        s.outbound.push_back(Outbound::Alarm(alarm));
        drop(s);
        self.shared.wake.notify_one();
        id
    }

    /// Ends an alarm (AlarmRestore, automatic).
    pub fn restore_alarm(&self, id: u32) {
        let mut s = self.lock();
        if s.alarms.remove(&id).is_some() {
            s.outbound.push_back(Outbound::Restore(id));
        }
        drop(s);
        self.shared.wake.notify_one();
    }

    /// Ends an alarm without telling anyone (the edge learns it at the next alarm sync).
    pub fn forget_alarm(&self, id: u32) {
        self.lock().alarms.remove(&id);
    }

    /// Loses every rule, as a reboot does.
    pub fn wipe_rules(&self) {
        let mut s = self.lock();
        s.specs.clear();
        s.access.clear();
    }

    /// Closes the current link (the edge or the reader re-establishes it).
    pub fn drop_link(&self) {
        if let Some(token) = self.shared.connection.lock().ok().and_then(|c| c.clone()) {
            token.cancel();
        }
    }

    /// Whether edge keepalives get a KeepaliveAck.
    pub fn answer_keepalives(&self, on: bool) {
        self.shared.answer_keepalives.store(on, Relaxed);
    }

    /// Whether log and cached-report uploads stop after their first segment.
    pub fn stall_uploads(&self, on: bool) {
        self.shared.stall_uploads.store(on, Relaxed);
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

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    match shared.state.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

async fn listen_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener, shutdown: CancellationToken) {
    let mut clock = tokio::time::interval(shared.options.report_interval.max(Duration::from_millis(1)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.tick() => {
                // While no link is up the rules go on and their reports go to the cache.
                if !shared.connected.load(Relaxed) {
                    run_rules(&shared, None);
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
            Err(_) => {
                run_rules(&shared, None);
            }
        }
        // Retry pace; the rules keep running meanwhile (reports are cached).
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(until) => break,
                _ = clock.tick() => {
                    run_rules(&shared, None);
                }
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

enum Decoder {
    Tcp(TcpFrameDecoder),
    Serial(SerialDeframer),
}

impl Decoder {
    fn next(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, ()>> {
        match self {
            Decoder::Tcp(d) => match d.decode(buf) {
                Ok(Some(b)) => Some(Ok(b)),
                Ok(None) => None,
                Err(_) => Some(Err(())),
            },
            Decoder::Serial(d) => match d.decode(buf) {
                Ok(Some(f)) if f.dst != 0 => Some(Ok(f.message)),
                Ok(Some(_)) => Some(Err(())),
                Ok(None) => None,
                Err(_) => Some(Err(())),
            },
        }
    }
}

/// One link to the edge: the reader's side of the protocol until the link drops.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut stream: S,
    wire: Wire,
    token: CancellationToken,
    generation: u64,
) {
    let options = shared.options.clone();
    let dialect = options.dialect;
    shared.connections.fetch_add(1, Relaxed);
    let mut decoder = match wire {
        Wire::Tcp => Decoder::Tcp(TcpFrameDecoder::new()),
        Wire::Serial { .. } => Decoder::Serial(SerialDeframer::new(dialect)),
    };
    let mut out: Vec<Message> = Vec::new();
    // On TCP the acknowledgement opens the link; on a serial line it announces a (re)start.
    let to = next_addressing(&shared);
    if let Ok(ack) = builders::connection_ack(dialect, to, 0, now_us()) {
        out.push(ack);
    }
    let mut buf = BytesMut::with_capacity(8192);
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
                if let Ok(encoded) = m.encode(dialect) {
                    match wire {
                        Wire::Tcp => bytes.extend_from_slice(&encoded),
                        Wire::Serial { address } => bytes.extend(encode_serial_frame(dialect, address, 0, &encoded)),
                    }
                }
            }
            let write = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&bytes)).await;
            if !matches!(write, Ok(Ok(()))) {
                break;
            }
        }
        out.clear();
        if close {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => break,
            _ = shared.wake.notified() => out.extend(outbound(&shared)),
            _ = clock.tick() => {
                out.extend(outbound(&shared));
                out.extend(run_rules(&shared, Some(())));
            }
            _ = keepalive.tick(), if options.keepalive_interval.is_some() => {
                let to = next_addressing(&shared);
                out.extend(builders::keepalive(to));
            }
            read = stream.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.len() > 1 << 20 {
                    break;
                }
                while let Some(frame) = decoder.next(&mut buf) {
                    let Ok(bytes) = frame else { continue };
                    let Ok(message) = Message::decode(&bytes, dialect) else { continue };
                    let (replies, then_close) = handle(&shared, &message);
                    out.extend(replies);
                    close |= then_close;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    // Unless a newer connection took over already: then its state stays.
    if shared.generation.load(Relaxed) == generation {
        shared.connected.store(false, Relaxed);
        // A cut link ends any upload in progress (the edge asks again).
        lock(&shared).upload = None;
    }
}

fn now_us() -> u64 {
    (crate::time::now_ms().max(0) as u64) * 1000
}

fn next_addressing(shared: &Shared) -> Addressing {
    let mut s = lock(shared);
    s.number = s.number.checked_add(1).unwrap_or(1);
    Addressing {
        device_sn: shared.options.sn,
        number: s.number,
    }
}

fn outbound(shared: &Shared) -> Vec<Message> {
    let pending: Vec<Outbound> = lock(shared).outbound.drain(..).collect();
    pending
        .into_iter()
        .filter_map(|o| {
            let to = next_addressing(shared);
            match o {
                Outbound::Alarm(a) => builders::alarm_report(to, &a).ok(),
                Outbound::Restore(id) => builders::alarm_restore(to, id, 0, (crate::time::now_ms() / 1000) as u32).ok(),
                Outbound::Message(m) => Some(*m),
            }
        })
        .collect()
}

/// Advances the rules by one clock tick: start/stop triggers, reports of the active specs.
/// With no link (`link` is `None`) the reports go to the cache.
fn run_rules(shared: &Shared, link: Option<()>) -> Vec<Message> {
    let options = &shared.options;
    let now = Instant::now();
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut reports: Vec<Vec<Parameter>> = Vec::new();
    {
        let mut guard = lock(shared);
        let state = &mut *guard;
        let ids: Vec<u32> = state.specs.keys().copied().collect();
        for id in ids {
            let Some(spec) = state.specs.get_mut(&id) else { continue };
            // The stop trigger: Duration.
            if spec.state == SpecState::Active {
                let stop = spec.param.child("SelectSpecStopTrigger");
                let kind = stop.and_then(|t| t.field("Type")).and_then(Value::as_u64).unwrap_or(0);
                let ms = stop
                    .and_then(|t| t.field("DurationValue"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if kind == 1 && now.duration_since(spec.since) >= Duration::from_millis(ms) {
                    spec.state = SpecState::Inactive;
                    events.push((1u8, id));
                    continue;
                }
            }
            if spec.state != SpecState::Active || now.duration_since(spec.last_report) < options.report_interval {
                continue;
            }
            spec.last_report = now;
            let tags = match &state.present {
                Some(present) if present.is_empty() => continue,
                Some(present) => present.clone(),
                None => {
                    let n = options.tags_per_report.min(state.tags.len());
                    let mut tags = Vec::with_capacity(n);
                    for _ in 0..n {
                        let index = spec.cursor % state.tags.len().max(1);
                        spec.cursor = spec.cursor.wrapping_add(1);
                        tags.push(index);
                    }
                    tags
                }
            };
            let spec = spec.clone();
            let mut params = Vec::new();
            for index in tags {
                params.extend(tag_report(state, &spec, id, index));
            }
            reports.push(params);
        }
        if link.is_none() {
            for params in reports.drain(..) {
                for p in params {
                    if state.cache.len() < CACHE_CAP {
                        if let Some(t) = TagReport::from_param(&p) {
                            state.cache.push_back(t);
                        }
                    }
                }
            }
        }
    }
    for (kind, id) in events {
        let to = next_addressing(shared);
        if let Ok(event) = builders::select_spec_event(kind, id, 0) {
            out.extend(builders::event_notification(to, now_us(), event));
        }
    }
    for params in reports {
        let to = next_addressing(shared);
        let count = params.len() as u64;
        if let Ok(m) = Message::named(
            "TagSelectAccessReport",
            to.device_sn,
            to.number,
            Body::from_params(params),
        ) {
            shared.reports_sent.fetch_add(1, Relaxed);
            shared.tags_sent.fetch_add(count, Relaxed);
            out.push(m);
        }
    }
    out
}

/// The TagReportData of one tag seen by `spec`, with the report fields the spec enables, the
/// vehicle data when its RfSpec reads, and the results of matching access specs.
fn tag_report(state: &mut State, spec: &SimSpec, spec_id: u32, index: usize) -> Option<Parameter> {
    let report_spec = spec.param.child("SelectReportSpec");
    let flags = report_spec
        .and_then(|r| r.field("Flags"))
        .and_then(Value::as_u64)
        .unwrap_or(0xFF80);
    let on = |bit: u32| flags >> (15 - bit) & 1 == 1;
    let antenna_spec = spec.param.child("AntennaSpec");
    let antenna = antenna_spec
        .and_then(|a| a.field("AntennaIDs"))
        .and_then(Value::as_bytes)
        .and_then(|ids| ids.get(index % ids.len().max(1)).copied())
        .unwrap_or(1);
    let reads = antenna_spec
        .and_then(|a| a.child("RfSpec"))
        .and_then(|r| r.field("SelectType"))
        .and_then(Value::as_u64)
        == Some(1);
    let tag = state.tags.get(index)?.clone();
    let seen = now_us();
    let report = TagReport {
        tid: tag.tid.clone(),
        select_spec_id: on(0).then_some(u64::from(spec_id)),
        spec_index: on(1).then_some(1),
        rf_spec_id: on(2).then_some(1),
        antenna: on(3).then_some(u64::from(antenna)),
        rssi: on(4).then_some(-40 - (index % 30) as i64),
        first_seen: on(5).then_some(seen),
        last_seen: on(6).then_some(seen),
        seen_count: on(7).then_some(1 + (index % 4) as u64),
        tag_data: reads.then(|| tag.data.clone()),
        read_result: reads.then_some(0),
        ..TagReport::default()
    };
    let mut param = report.to_param().ok()?;
    let results = run_access_specs(state, spec_id, index);
    if let crate::protocol::gbt37987::Content::Decoded(body) = &mut param.body {
        body.params.extend(results);
    }
    Some(param)
}

fn run_access_specs(state: &mut State, spec_id: u32, index: usize) -> Vec<Parameter> {
    let mut results = Vec::new();
    let ids: Vec<u32> = state.access.keys().copied().collect();
    for id in ids {
        let Some(access) = state.access.get(&id).cloned() else {
            continue;
        };
        let bound = access.param.field("SelectSpecID").and_then(Value::as_u64).unwrap_or(0);
        if !access.enabled || (bound != 0 && bound != u64::from(spec_id)) {
            continue;
        }
        let Some(command) = access.param.child("AccessCommand") else {
            continue;
        };
        let Some(tag) = state.tags.get(index).cloned() else {
            continue;
        };
        let matches = command
            .child("HbMatchSpec")
            .map(|m| m.params().iter().all(|target| target_matches(target, &tag.tid)))
            .unwrap_or(true);
        if !matches {
            continue;
        }
        for op in command.params() {
            match op.name() {
                Some("HbReadSpec") => {
                    let op_id = op.field("OpSpecID").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let bank = op.child("MemoryBank");
                    let pointer = bank
                        .and_then(|b| b.field("Pointer"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as usize;
                    let count = bank.and_then(|b| b.field("Count")).and_then(Value::as_u64).unwrap_or(0) as usize;
                    let words: Vec<u16> = tag.user.iter().skip(pointer).take(count).copied().collect();
                    results.extend(Parameter::named(
                        "HbReadSpecResult",
                        Body::from_fields(vec![Value::U8(0), Value::U16(op_id), Value::Words(words)]),
                    ));
                }
                Some("HbWriteSpec") => {
                    let op_id = op.field("OpSpecID").and_then(Value::as_u64).unwrap_or(0) as u16;
                    let pointer = op.field("Pointer").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let data = match op.field("Data") {
                        Some(Value::Words(w)) => w.clone(),
                        _ => Vec::new(),
                    };
                    if let Some(tag) = state.tags.get_mut(index) {
                        for (i, w) in data.iter().enumerate() {
                            if let Some(slot) = tag.user.get_mut(pointer + i) {
                                *slot = *w;
                            }
                        }
                    }
                    results.extend(Parameter::named(
                        "HbWriteSpecResult",
                        Body::from_fields(vec![Value::U8(0), Value::Bytes(Vec::new()), Value::U16(op_id)]),
                    ));
                }
                _ => {}
            }
        }
        if let Some(access) = state.access.get_mut(&id) {
            if let Some(left) = access.operations_left.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    state.access.remove(&id);
                }
            }
        }
    }
    results
}

fn target_matches(target: &Parameter, tid: &[u8]) -> bool {
    let bits = |name: &str| match target.field(name) {
        Some(Value::Bits { data, .. }) => data.clone(),
        _ => Vec::new(),
    };
    let (mask, data) = (bits("TagMask"), bits("TagData"));
    let inverse = target.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x80 != 0;
    let equal = data.iter().enumerate().all(|(i, d)| {
        tid.get(i)
            .is_some_and(|t| t & mask.get(i).copied().unwrap_or(0xFF) == d & mask.get(i).copied().unwrap_or(0xFF))
    });
    equal != inverse
}

fn ok_reply(request: &Header) -> Vec<Message> {
    builders::status_reply(request, 0, "").into_iter().collect()
}

fn error_reply(request: &Header, code: u32, text: &str) -> Vec<Message> {
    builders::status_reply(request, code, text).into_iter().collect()
}

fn status_param() -> Vec<Parameter> {
    builders::status(0, "").into_iter().collect()
}

/// The reader's answer to one message from the edge, and whether to close the link after it.
fn handle(shared: &Arc<Shared>, m: &Message) -> (Vec<Message>, bool) {
    let h = &m.header;
    let id_field = |name: &str| m.field(name).and_then(Value::as_u64).unwrap_or(0) as u32;
    let reply = |body: Body| builders::reply_to(h, body).into_iter().collect::<Vec<_>>();
    let name = m.name().unwrap_or("");
    let replies = match name {
        "Keepalive" => {
            if shared.answer_keepalives.load(Relaxed) {
                builders::keepalive_ack(h).into_iter().collect()
            } else {
                Vec::new()
            }
        }
        "KeepaliveAck" | "CachedSelectAccessReportAck" | "UploadTagLogConfirm" | "UploadDeviceLogConfirm" => {
            return (next_segment(shared, m), false)
        }
        "Disconnect" => return (builders::reply_to(h, Body::default()).into_iter().collect(), true),
        "GetDeviceCapabilities" => {
            let general = Parameter::named(
                "GenaralCapabilities",
                Body::new(
                    vec![
                        Value::Text(b"roadedge-sim".to_vec()),
                        Value::Bytes(shared.options.sn.to_vec()),
                        Value::U16(1),
                        Value::U16(match shared.options.dialect {
                            Dialect::Gbt37987_2019 => 2019,
                            Dialect::Hb2017 => 2017,
                        }),
                        Value::U8(4),
                        Value::U8(0x80),
                    ],
                    Parameter::named("GPIOCapabilities", Body::from_fields(vec![Value::U8(0), Value::U8(0)]))
                        .into_iter()
                        .collect(),
                ),
            );
            let mut params = status_param();
            params.extend(general);
            reply(Body::from_params(params))
        }
        "GetDeviceConfig" => {
            let mut params = status_param();
            params.extend(Parameter::single(
                "Identification",
                Value::Text(b"simulated reader".to_vec()),
            ));
            for antenna in 1..=4u8 {
                params.extend(Parameter::named(
                    "AntennaProperties",
                    Body::from_fields(vec![Value::U8(0x80), Value::U8(antenna), Value::S16(6)]),
                ));
            }
            reply(Body::from_params(params))
        }
        "SetDeviceConfig" => {
            let rtc = m
                .child("SecurityModuleConfiguration")
                .and_then(|s| s.child("GenaralConfigData"))
                .and_then(|g| g.child("RTCTime"))
                .and_then(|r| r.single_value())
                .and_then(Value::as_u64);
            if let Some(seconds) = rtc {
                lock(shared).time_set = Some(seconds);
            }
            ok_reply(h)
        }
        "AddSelectSpec" => match m.child("SelectSpec").cloned() {
            Some(param) => {
                let id = rules::spec_id(&param).unwrap_or(0);
                let mut s = lock(shared);
                if id == 0 || s.specs.contains_key(&id) {
                    drop(s);
                    error_reply(h, 100, "duplicate or zero SelectSpecID")
                } else {
                    let now = Instant::now();
                    s.specs.insert(
                        id,
                        SimSpec {
                            param: rules::with_select_state(&param, SpecState::Disabled),
                            state: SpecState::Disabled,
                            since: now,
                            last_report: now,
                            cursor: 0,
                        },
                    );
                    drop(s);
                    ok_reply(h)
                }
            }
            None => error_reply(h, 103, "missing SelectSpec"),
        },
        "DeleteSelectSpec" => {
            let id = id_field("SelectSpecID");
            let mut s = lock(shared);
            let found = if id == 0 {
                s.specs.clear();
                true
            } else {
                s.specs.remove(&id).is_some()
            };
            drop(s);
            if found {
                ok_reply(h)
            } else {
                error_reply(h, 300, "no such SelectSpec")
            }
        }
        "EnableSelectSpec" | "DisableSelectSpec" | "StartSelectSpec" | "StopSelectSpec" => {
            let event = match name {
                "EnableSelectSpec" => SpecEvent::Enable,
                "DisableSelectSpec" => SpecEvent::Disable,
                "StartSelectSpec" => SpecEvent::Start,
                _ => SpecEvent::Stop,
            };
            let id = id_field("SelectSpecID");
            let mut events = Vec::new();
            let result = {
                let mut s = lock(shared);
                match s.specs.get_mut(&id) {
                    None => Err("no such SelectSpec".to_string()),
                    Some(spec) => match transition(spec.state, event) {
                        Err(e) => Err(e.to_string()),
                        Ok(mut to) => {
                            // An Immediate (or Periodic) start trigger runs the spec as soon as it is enabled.
                            if event == SpecEvent::Enable
                                && to == SpecState::Inactive
                                && matches!(rules::start_trigger(&spec.param), 1 | 2)
                            {
                                to = SpecState::Active;
                            }
                            if to == SpecState::Active && spec.state != SpecState::Active {
                                spec.since = Instant::now();
                                events.push(0u8);
                            } else if to != SpecState::Active && spec.state == SpecState::Active {
                                events.push(1u8);
                            }
                            spec.state = to;
                            Ok(())
                        }
                    },
                }
            };
            let mut out = match result {
                Ok(()) => ok_reply(h),
                Err(e) => error_reply(h, 300, &e),
            };
            for kind in events {
                let to = next_addressing(shared);
                if let Ok(event) = builders::select_spec_event(kind, id, 0) {
                    out.extend(builders::event_notification(to, now_us(), event));
                }
            }
            out
        }
        "GetSelectSpec" => {
            let mut params = status_param();
            let s = lock(shared);
            params.extend(
                s.specs
                    .values()
                    .map(|spec| rules::with_select_state(&spec.param, spec.state)),
            );
            drop(s);
            reply(Body::from_params(params))
        }
        "AddAccessSpec" => match m.child("AccessSpec").cloned() {
            Some(param) => {
                let id = rules::spec_id(&param).unwrap_or(0);
                let stop = param.child("AccessSpecStopTrigger");
                let operations_left = match stop.and_then(|t| t.field("Type")).and_then(Value::as_u64) {
                    Some(1) => stop
                        .and_then(|t| t.field("OperationCountValue"))
                        .and_then(Value::as_u64)
                        .map(|n| n as u16),
                    _ => None,
                };
                let mut s = lock(shared);
                if id == 0 || s.access.contains_key(&id) {
                    drop(s);
                    error_reply(h, 100, "duplicate or zero AccessSpecID")
                } else {
                    s.access.insert(
                        id,
                        SimAccess {
                            param: rules::with_access_enabled(&param, false),
                            enabled: false,
                            operations_left,
                        },
                    );
                    drop(s);
                    ok_reply(h)
                }
            }
            None => error_reply(h, 103, "missing AccessSpec"),
        },
        "DeleteAccessSpec" | "EnableAccessSpec" | "DisableAccessSpec" => {
            let id = id_field("AccessSpecID");
            let mut s = lock(shared);
            let found = match name {
                "DeleteAccessSpec" if id == 0 => {
                    s.access.clear();
                    true
                }
                "DeleteAccessSpec" => s.access.remove(&id).is_some(),
                _ => match s.access.get_mut(&id) {
                    Some(a) => {
                        a.enabled = name == "EnableAccessSpec";
                        true
                    }
                    None => false,
                },
            };
            drop(s);
            if found {
                ok_reply(h)
            } else {
                error_reply(h, 300, "no such AccessSpec")
            }
        }
        "GetAccessSpec" => {
            let mut params = status_param();
            let s = lock(shared);
            params.extend(
                s.access
                    .values()
                    .map(|a| rules::with_access_enabled(&a.param, a.enabled)),
            );
            drop(s);
            reply(Body::from_params(params))
        }
        "DeviceLogCount" | "TagLogCount" => {
            let s = lock(shared);
            let n = if name == "DeviceLogCount" {
                s.device_log.len()
            } else {
                s.tag_log.len()
            };
            drop(s);
            reply(Body::new(vec![Value::U32(n as u32)], status_param()))
        }
        "ClearDeviceLog" | "ClearTagLog" => {
            let mut s = lock(shared);
            if name == "ClearDeviceLog" {
                s.device_log.clear();
            } else {
                s.tag_log.clear();
            }
            drop(s);
            ok_reply(h)
        }
        "UploadDeviceLog" | "UploadTagLog" => {
            let kind = if name == "UploadDeviceLog" {
                UploadKind::DeviceLog
            } else {
                UploadKind::TagLog
            };
            lock(shared).upload = Some(Upload {
                request: *h,
                kind,
                next_sequence: 1,
                finished: false,
            });
            segment(shared)
        }
        "EnableCachedEventsAndReport" => {
            let empty = lock(shared).cache.is_empty();
            if empty {
                Vec::new()
            } else {
                let to = next_addressing(shared);
                lock(shared).upload = Some(Upload {
                    request: Header::new(to.device_sn, 581, to.number),
                    kind: UploadKind::Cached,
                    next_sequence: 1,
                    finished: false,
                });
                segment(shared)
            }
        }
        "AlarmSync" => {
            let listed: Vec<u32> = match m.child("AlarmSyncInfo").and_then(|i| i.field("AlarmIDs")) {
                Some(Value::Dwords(ids)) => ids.clone(),
                _ => Vec::new(),
            };
            let seq = m
                .child("AlarmSyncInfo")
                .and_then(|i| i.field("SyncSeq"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32;
            let active: Vec<Alarm> = lock(shared).alarms.values().cloned().collect();
            let mut out = Vec::new();
            for alarm in active.iter().filter(|a| !listed.contains(&a.alarm_id)) {
                let to = next_addressing(shared);
                out.extend(builders::alarm_report(to, alarm));
            }
            let ids: Vec<u32> = active.iter().map(|a| a.alarm_id).collect();
            let info = Parameter::named(
                "AlarmSyncInfo",
                Body::from_fields(vec![
                    Value::U32(seq),
                    Value::U8(1),
                    Value::U16(1),
                    Value::U16(1),
                    Value::Dwords(ids),
                ]),
            );
            if let Ok(info) = info {
                let to = next_addressing(shared);
                out.extend(builders::alarm_sync(to, info));
            }
            out
        }
        "GetVersion" => {
            let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
            let firmware = lock(shared).firmware.get(&ver_type).cloned();
            match firmware {
                None => error_reply(h, 300, "no such VerType"),
                Some(fw) => {
                    let mut params = status_param();
                    params.extend(version_info(&fw.running, true, "running"));
                    if let Some(spare) = &fw.spare {
                        params.extend(version_info(spare, false, "downloaded"));
                    }
                    reply(Body::from_params(params))
                }
            }
        }
        "SetVersion" => {
            // The download runs beside the link (keepalives go on); the answer follows it.
            let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
            let (shared, request) = (shared.clone(), m.clone());
            tokio::spawn(async move {
                let reply = match download(&request).await {
                    Ok(version) => {
                        if let Some(fw) = lock(&shared).firmware.get_mut(&ver_type) {
                            fw.spare = Some(version);
                        }
                        ok_reply(&request.header)
                    }
                    Err(e) => error_reply(&request.header, 401, &e),
                };
                let mut s = lock(&shared);
                s.outbound
                    .extend(reply.into_iter().map(|m| Outbound::Message(Box::new(m))));
                drop(s);
                shared.wake.notify_one();
            });
            Vec::new()
        }
        "ActiveVersion" | "UnActiveVersion" => {
            let ver_type = m.field("VerType").and_then(Value::as_u64).unwrap_or(1) as u8;
            let mut s = lock(shared);
            let swapped = match s.firmware.get_mut(&ver_type) {
                Some(fw) if fw.spare.is_some() => {
                    let spare = fw.spare.take().unwrap_or_default();
                    fw.spare = Some(std::mem::replace(&mut fw.running, spare));
                    true
                }
                _ => false,
            };
            drop(s);
            if swapped {
                ok_reply(h)
            } else {
                error_reply(h, 401, "no other version to switch to")
            }
        }
        "DiagnosticTest" => {
            let mut params = status_param();
            for item in m.body.children("DiagnosticTestItem") {
                let test = item.field("TestID").and_then(Value::as_u64).unwrap_or(0) as u16;
                let (code, results): (u32, Vec<Parameter>) = match test {
                    2 => (
                        0,
                        (1..=4u8)
                            .filter_map(|a| {
                                Parameter::named(
                                    "AntennaVswrResult",
                                    Body::from_fields(vec![Value::U8(a), Value::U16(115 + u16::from(a) * 5)]),
                                )
                                .ok()
                            })
                            .collect(),
                    ),
                    1 => (
                        0,
                        (1..=4u8)
                            .filter_map(|a| {
                                Parameter::named(
                                    "AntennaConnectionResult",
                                    Body::from_fields(vec![Value::U8(a), Value::U8(0x80)]),
                                )
                                .ok()
                            })
                            .collect(),
                    ),
                    _ => (1, Vec::new()),
                };
                params.extend(Parameter::named(
                    "DiagnosticTestResultItem",
                    Body::new(vec![Value::U16(test), Value::U32(code)], results),
                ));
            }
            reply(Body::from_params(params))
        }
        "ResetDevice" => {
            let mut s = lock(shared);
            s.resets += 1;
            // A reboot keeps only the rules marked persistent.
            s.specs
                .retain(|_, spec| spec.param.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x80 != 0);
            s.access
                .retain(|_, a| a.param.field("Flags").and_then(Value::as_u64).unwrap_or(0) & 0x40 != 0);
            drop(s);
            return (ok_reply(h), true);
        }
        _ => Message::named(
            "ErrorAck",
            shared.options.sn,
            h.number,
            Body::from_params(builders::status(109, "unsupported message").into_iter().collect()),
        )
        .into_iter()
        .collect(),
    };
    (replies, false)
}

fn version_info(version: &str, running: bool, description: &str) -> Option<Parameter> {
    // Flags: UsedOrSpare (in use), SetUse, HasRun, CanRun.
    let flags = if running { 0x80 | 0x40 | 0x20 | 0x10 } else { 0x10 };
    Parameter::named(
        "VersionInfo",
        Body::from_fields(vec![
            Value::Bytes(version.as_bytes().to_vec()),
            Value::U8(flags),
            Value::Text(description.as_bytes().to_vec()),
        ]),
    )
    .ok()
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

/// The next segment of the upload in progress, after a confirmation of the previous one.
fn next_segment(shared: &Shared, m: &Message) -> Vec<Message> {
    let confirms = matches!(
        m.name(),
        Some("CachedSelectAccessReportAck") | Some("UploadTagLogConfirm") | Some("UploadDeviceLogConfirm")
    );
    if !confirms {
        return Vec::new();
    }
    let confirmed = m
        .field("SequenceID")
        .or_else(|| m.field("SequenceId"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as u16;
    {
        let mut s = lock(shared);
        let size = shared.options.segment_size.max(1);
        let Some((kind, next, finished)) = s.upload.as_ref().map(|u| (u.kind, u.next_sequence, u.finished)) else {
            return Vec::new();
        };
        if confirmed.wrapping_add(1) != next {
            return Vec::new();
        }
        // The confirmed segment's data is delivered: drop it from the reader.
        match kind {
            UploadKind::Cached => {
                let n = size.min(s.cache.len());
                s.cache.drain(..n);
            }
            UploadKind::DeviceLog | UploadKind::TagLog => {}
        }
        if finished {
            s.upload = None;
            return Vec::new();
        }
        if shared.stall_uploads.load(Relaxed) {
            return Vec::new();
        }
    }
    segment(shared)
}

/// Sends the segment `next_sequence` of the upload in progress.
fn segment(shared: &Shared) -> Vec<Message> {
    let size = shared.options.segment_size.max(1);
    let mut s = lock(shared);
    let Some(upload) = s.upload.as_mut() else {
        return Vec::new();
    };
    let sequence = upload.next_sequence;
    let kind = upload.kind;
    let request = upload.request;
    upload.next_sequence = sequence.wrapping_add(1);
    let start = usize::from(sequence.wrapping_sub(1)) * size;
    let (params, last) = match kind {
        UploadKind::Cached => {
            let take: Vec<TagReport> = s.cache.iter().take(size).cloned().collect();
            let last = s.cache.len() <= size;
            (take.iter().filter_map(|t| t.to_param().ok()).collect::<Vec<_>>(), last)
        }
        UploadKind::DeviceLog => {
            let entries = &s.device_log;
            let chunk: Vec<Parameter> = entries
                .iter()
                .skip(start)
                .take(size)
                .filter_map(|e| {
                    Parameter::named(
                        "DeviceLog",
                        Body::new(
                            vec![
                                Value::U64(e.sequence),
                                Value::U8(e.kind),
                                Value::U32(e.code),
                                Value::Text(e.text.as_bytes().to_vec()),
                            ],
                            Parameter::single("UTCTimestamp", Value::U64(e.at_us))
                                .into_iter()
                                .collect(),
                        ),
                    )
                    .ok()
                })
                .collect();
            (chunk, start + size >= entries.len())
        }
        UploadKind::TagLog => {
            let entries = &s.tag_log;
            let chunk: Vec<Parameter> = entries
                .iter()
                .skip(start)
                .take(size)
                .filter_map(|e| {
                    Parameter::named(
                        "TagLog",
                        Body::new(
                            vec![
                                Value::U64(e.sequence),
                                Value::Bytes(e.tid.clone()),
                                Value::Bytes(e.tid.clone()),
                                Value::U32(1),
                            ],
                            Parameter::single("UTCTimestamp", Value::U64(e.at_us))
                                .into_iter()
                                .collect(),
                        ),
                    )
                    .ok()
                })
                .collect();
            (chunk, start + size >= entries.len())
        }
    };
    if let (true, Some(upload)) = (last, s.upload.as_mut()) {
        upload.finished = true;
    }
    drop(s);
    let mut all = status_param();
    all.extend(params);
    let code = match kind {
        UploadKind::Cached => "CachedSelectAccessReport",
        UploadKind::DeviceLog => "UploadDeviceLogAck",
        UploadKind::TagLog => "UploadTagLogAck",
    };
    let number = if kind == UploadKind::Cached {
        next_addressing(shared).number
    } else {
        request.number
    };
    Message::named(
        code,
        shared.options.sn,
        number,
        Body::new(vec![Value::U16(sequence), Value::U8(u8::from(last))], all),
    )
    .into_iter()
    .collect()
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
