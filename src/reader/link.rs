//! The thin shell around a reader session: transports (TCP the edge dials, TCP a reader dials in
//! on, serial lines), framing per transport, the supervisor that re-establishes a link with
//! jittered backoff, and the connection task that performs the session's actions in order —
//! records committed before their acknowledgements go out, command outcomes after the records
//! that precede them.
//!
//! Owns: sockets, serial ports, timers, the link's entry in the hub, the link's status records
//! and metrics. Must not: interpret messages (the session does) or block other readers (each
//! link is its own task; every wait is bounded by the session's timers or the I/O limits).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::db::{self, AlarmChange};
use super::records::{self, Leaf};
use super::request::{version_download, Request};
use super::session::{Action, Now, Persist, Session, SessionSettings, Token};
use super::{dialect_of, finish, tftp, LinkInput, Origin, ReaderDeps, ReaderService};
use crate::command::{Outcome, Protocol};
use crate::config::{ReaderDevice, ReaderLink, ReadersConfig};
use crate::limits::ByteBudget;
use crate::link::{Accepted, Binding, ByteStream, FrameDecoder, FramedIo, ListenerSettings, PeerIdentity, Read};
use crate::protocol::gbt37987::codec::decode_header;
use crate::protocol::gbt37987::model::hex_string;
use crate::protocol::gbt37987::serial::{encode_serial_frame, PLACEHOLDER_SRC};
use crate::protocol::gbt37987::{Dialect, FrameError, Message, SerialDeframer, TcpFrameDecoder};
use crate::store::Record;
use crate::time::{now_ms, now_rfc3339};
use crate::uplink::Backoff;

/// Bytes a link may buffer without a complete frame (twice the codec's frame caps).
const MAX_BUFFER: usize = 512 * 1024;
/// Frames taken off the buffer in one round before the actions are performed (commit batching).
const MAX_FRAMES_PER_ROUND: usize = 256;
/// How long a TCP connect to a reader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a served firmware file waits for the reader's request.
const FIRMWARE_SERVE_WAIT: Duration = Duration::from_secs(600);

/// Splits a reader's byte stream into messages, per transport.
pub enum LinkDecoder {
    /// Header-delimited messages.
    Tcp(TcpFrameDecoder),
    /// 0x7E-framed, escaped, check-coded frames; only those from `address` are kept.
    Serial { deframer: SerialDeframer, address: u8 },
}

impl FrameDecoder for LinkDecoder {
    type Frame = Bytes;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self {
            LinkDecoder::Tcp(d) => d.decode(buf),
            LinkDecoder::Serial { deframer, address } => loop {
                match deframer.decode(buf)? {
                    Some(frame) if frame.src == *address => return Ok(Some(frame.message)),
                    // Another station on the bus, or our own frame echoed by a half-duplex line.
                    Some(_) => continue,
                    None => return Ok(None),
                }
            },
        }
    }
}

/// How messages are written on a link.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Tcp,
    /// The edge is the bus master at address 0; the reader is at `address`.
    Serial {
        address: u8,
    },
}

impl Framing {
    fn encode(self, dialect: Dialect, message: &Message) -> Result<Vec<u8>, String> {
        let bytes = message.encode(dialect).map_err(|e| e.to_string())?;
        Ok(match self {
            Framing::Tcp => bytes,
            Framing::Serial { address } => encode_serial_frame(dialect, PLACEHOLDER_SRC, address, &bytes),
        })
    }

    fn decoder(self, dialect: Dialect) -> LinkDecoder {
        match self {
            Framing::Tcp => LinkDecoder::Tcp(TcpFrameDecoder::new()),
            Framing::Serial { address } => LinkDecoder::Serial {
                deframer: SerialDeframer::new(dialect),
                address,
            },
        }
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall_ms: now_ms(),
    }
}

/// Keeps one configured dialled or serial reader connected.
pub(crate) struct Supervisor {
    pub service: Arc<ReaderService>,
    pub deps: ReaderDeps,
    pub device: ReaderDevice,
    pub keepalive: Duration,
}

impl Supervisor {
    pub async fn run(self, shutdown: CancellationToken) {
        let id = self.device.id.to_string();
        let dialect = dialect_of(self.device.dialect);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_error: Option<String> = None;
        loop {
            let mut settings = SessionSettings::new(&id, dialect, self.keepalive);
            settings.expected_sn = self.device.sn;
            let attempt = match &self.device.link {
                ReaderLink::Tcp(addr) => self.dial(*addr, settings, &shutdown).await,
                ReaderLink::Serial { port, baud, address } => {
                    settings.serial = true;
                    self.open_serial(port, *baud, *address, settings, &shutdown).await
                }
                ReaderLink::DialIn => return,
            };
            match attempt {
                Ok(end) if end.was_up => {
                    backoff.reset();
                    last_error = None;
                }
                Ok(_) => {}
                Err(e) => {
                    // Logged when the failure changes, not at every retry.
                    if last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(reader = %id, "link attempt failed (retrying with backoff): {e}");
                    }
                    self.service.update_info(&id, |i| i.reason = Some(e.clone()));
                    last_error = Some(e);
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn dial(
        &self,
        addr: SocketAddr,
        settings: SessionSettings,
        shutdown: &CancellationToken,
    ) -> Result<LinkEnd, String> {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return Err("shutting down".into()),
            r = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)) => r
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|e| format!("connect to {addr}: {e}"))?,
        };
        let _ = stream.set_nodelay(true);
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        let io = FramedIo::new(
            stream,
            Framing::Tcp.decoder(settings.dialect),
            MAX_BUFFER,
            settings.silence_timeout + Duration::from_secs(1),
            self.deps.metrics.gbt37987.clone(),
        );
        // Dial-in links are counted by the listener; the supervisor counts its own.
        let connections = &self.deps.metrics.gbt37987.connections;
        connections.fetch_add(1, Relaxed);
        let end = run_link(&self.service, io, Framing::Tcp, settings, None, local_ip, shutdown).await;
        connections.fetch_sub(1, Relaxed);
        Ok(end)
    }

    async fn open_serial(
        &self,
        port: &std::path::Path,
        baud: u32,
        address: u8,
        settings: SessionSettings,
        shutdown: &CancellationToken,
    ) -> Result<LinkEnd, String> {
        use tokio_serial::SerialPortBuilderExt;
        let path = port.to_string_lossy().into_owned();
        let stream = tokio_serial::new(&path, baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .stop_bits(tokio_serial::StopBits::One)
            .parity(tokio_serial::Parity::None)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(|e| format!("opening {path}: {e}"))?;
        let framing = Framing::Serial { address };
        let io = FramedIo::new(
            stream,
            framing.decoder(settings.dialect),
            MAX_BUFFER,
            settings.silence_timeout + Duration::from_secs(1),
            self.deps.metrics.gbt37987.clone(),
        );
        let connections = &self.deps.metrics.gbt37987.connections;
        connections.fetch_add(1, Relaxed);
        let end = run_link(&self.service, io, framing, settings, None, None, shutdown).await;
        connections.fetch_sub(1, Relaxed);
        Ok(end)
    }
}

/// Accepts readers that dial in, identifies each by the device SN of its first message
/// (configured ids win, others are named by their SN in hex) and runs its link.
pub(crate) async fn listen(
    listener: TcpListener,
    service: Arc<ReaderService>,
    deps: ReaderDeps,
    config: ReadersConfig,
    shutdown: CancellationToken,
) {
    let tls = match &config.tls {
        Some(t) => {
            match crate::tls::server_config(&t.cert_file, &t.key_file, t.client_ca_file.as_deref(), t.allow_plain) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::error!("readers.tls: {e}; readers cannot dial in");
                    return;
                }
            }
        }
        None => None,
    };
    let settings = ListenerSettings {
        tls,
        max_connections: 256,
        handshake_timeout: Duration::from_secs(10),
        protocol: "gbt37987",
        allow_plain: config.tls.as_ref().is_some_and(|t| t.allow_plain),
    };
    let counters = deps.metrics.gbt37987.clone();
    let stop = shutdown.clone();
    let buffered = Arc::new(ByteBudget::new(config.max_buffered_bytes));
    crate::link::serve(listener, settings, counters, shutdown, move |accepted| {
        let service = service.clone();
        let deps = deps.clone();
        let config = config.clone();
        let stop = stop.clone();
        let buffered = buffered.clone();
        async move {
            let peer = accepted.peer;
            if let Err(e) = accept_one(accepted, &service, &deps, &config, buffered, &stop).await {
                tracing::info!(%peer, "reader connection dropped: {e}");
            }
        }
    })
    .await;
}

/// Whether the reader that says it is `sn` may dial in on a connection with `identity`: an
/// unconfigured serial must be in `readers.allowed_serials` (when set); with
/// `readers.tls.bind_identity`, the certificate must name the serial (hex) or the configured id,
/// and a configured reader must always prove itself so no one takes over its link.
fn admit(
    config: &ReadersConfig,
    sn: [u8; 8],
    configured: Option<&crate::config::ReaderDevice>,
    identity: &PeerIdentity,
    metrics: &crate::metrics::Metrics,
) -> Result<(), String> {
    let hex = hex_string(&sn);
    if configured.is_none() {
        if let Some(allowed) = &config.allowed_serials {
            if !allowed.contains(&sn) {
                metrics.limits.reader_refused_total.fetch_add(1, Relaxed);
                return Err(format!("serial {hex} is not configured nor in readers.allowed_serials"));
            }
        }
    }
    let bind = config.tls.as_ref().is_some_and(|t| t.bind_identity);
    let id = configured.map(|d| d.id.to_string()).unwrap_or_default();
    match identity.binding(bind, &[&hex, &id]) {
        Binding::Mismatch => {
            metrics.limits.identity_mismatch_total.fetch_add(1, Relaxed);
            Err(format!(
                "the client certificate ({}) names neither serial {hex} nor reader `{id}`",
                identity.names.join(", ")
            ))
        }
        Binding::Unbound if bind && configured.is_some() => {
            metrics.limits.identity_mismatch_total.fetch_add(1, Relaxed);
            Err(format!("configured reader `{id}` dialled in without a certificate"))
        }
        _ => Ok(()),
    }
}

async fn accept_one(
    accepted: Accepted,
    service: &Arc<ReaderService>,
    deps: &ReaderDeps,
    config: &ReadersConfig,
    buffered: Arc<ByteBudget>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let Accepted {
        stream, peer, identity, ..
    } = accepted;
    let handshake = config.keepalive_interval.saturating_mul(2).max(Duration::from_secs(10));
    let mut io = FramedIo::new(
        stream,
        Framing::Tcp.decoder(dialect_of(config.dialect)),
        MAX_BUFFER,
        handshake,
        deps.metrics.gbt37987.clone(),
    )
    .with_budget(buffered);
    let deadline = tokio::time::Instant::now() + handshake;
    let mut bad = 0;
    let first = loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout_at(deadline, io.next()) => r.map_err(|_| "no message within the handshake time".to_string())?,
        };
        match read.map_err(|e| e.to_string())? {
            Read::Frame(bytes) => break bytes,
            Read::Bad(e) => {
                bad += 1;
                tracing::debug!(%peer, "bad frame before identification: {e}");
                if bad >= 8 {
                    return Err("garbage before identification".into());
                }
            }
        }
    };
    let (header, _) = decode_header(&first).map_err(|e| e.to_string())?;
    let sn = header.device_sn;
    let configured = config.devices.iter().find(|d| d.sn == Some(sn));
    admit(config, sn, configured, &identity, &deps.metrics)?;
    let (id, dialect) = match configured {
        Some(d) => (d.id.to_string(), dialect_of(d.dialect)),
        None => (hex_string(&sn), dialect_of(config.dialect)),
    };
    if configured.is_none() && !service.admit_unknown(&id) {
        return Err(format!(
            "readers.max_unknown ({}) unconfigured readers are connected",
            config.max_unknown
        ));
    }
    service.update_info(&id, |i| {
        if !i.configured {
            i.transport = "tcp-listen".into();
            i.dialect = dialect.as_str().into();
        }
        i.address = peer.to_string();
    });
    let mut settings = SessionSettings::new(&id, dialect, config.keepalive_interval);
    settings.expected_sn = Some(sn);
    io.set_idle(settings.silence_timeout + Duration::from_secs(1));
    let local_ip = local_ip_toward(peer);
    run_link(service, io, Framing::Tcp, settings, Some(first), local_ip, shutdown).await;
    Ok(())
}

/// The edge's address as seen from `peer` (no packet is sent: a connected UDP socket only
/// resolves the route).
fn local_ip_toward(peer: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// How a link ended.
pub(crate) struct LinkEnd {
    pub was_up: bool,
}

/// Records, alarm changes and acknowledgements of several frames, committed together.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    alarms: Vec<AlarmChange>,
    then_send: Vec<Message>,
    tags: u64,
}

impl Batch {
    fn add(&mut self, p: Persist) {
        self.records.extend(p.records);
        self.alarms.extend(p.alarms);
        self.then_send.extend(p.then_send);
        self.tags += p.tags;
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.alarms.is_empty() && self.then_send.is_empty()
    }
}

struct Link<'a, S> {
    service: &'a Arc<ReaderService>,
    io: FramedIo<S, LinkDecoder>,
    framing: Framing,
    session: Session,
    reader: String,
    dialect: Dialect,
    local_ip: Option<IpAddr>,
    origins: HashMap<Token, Origin>,
    next_token: Token,
    inputs: Option<mpsc::Receiver<LinkInput>>,
    connection: Option<u64>,
    up_sn: Option<[u8; 8]>,
    /// Cancelled when a newer link takes this reader's id.
    replaced: CancellationToken,
    bad_logged: u64,
    last_seen_at: Option<Instant>,
    /// Spec states last shown in the reader list (updated only when they change).
    shown_specs: std::collections::BTreeMap<u32, super::rules::SpecState>,
}

async fn recv(inputs: &mut Option<mpsc::Receiver<LinkInput>>) -> Option<LinkInput> {
    match inputs.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs one established transport until it closes; returns whether the link came up.
async fn run_link<S: ByteStream>(
    service: &Arc<ReaderService>,
    io: FramedIo<S, LinkDecoder>,
    framing: Framing,
    settings: SessionSettings,
    first: Option<Bytes>,
    local_ip: Option<IpAddr>,
    shutdown: &CancellationToken,
) -> LinkEnd {
    let reader = settings.reader_id.clone();
    let dialect = settings.dialect;
    let (r, d) = (reader.clone(), dialect);
    let loaded = service
        .store()
        .read(move |c| Ok((db::load_rules(c, &r, d)?, db::load_alarms(c, &r)?)))
        .await;
    let (desired, alarms) = match loaded {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%reader, "reading the reader's rules and alarms failed: {e}");
            return LinkEnd { was_up: false };
        }
    };
    let alarm_ids: Vec<u32> = alarms.iter().map(|a| a.alarm_id).collect();
    let session = Session::new(settings, desired, &alarm_ids, now());
    let mut link = Link {
        service,
        io,
        framing,
        session,
        reader,
        dialect,
        local_ip,
        origins: HashMap::new(),
        next_token: 1,
        inputs: None,
        connection: None,
        up_sn: None,
        replaced: CancellationToken::new(),
        bad_logged: 0,
        last_seen_at: None,
        shown_specs: std::collections::BTreeMap::new(),
    };
    let reason = link.run(first, shutdown).await;
    link.end(&reason, shutdown.is_cancelled()).await;
    LinkEnd {
        was_up: link.up_sn.is_some(),
    }
}

impl<S: ByteStream> Link<'_, S> {
    async fn run(&mut self, first: Option<Bytes>, shutdown: &CancellationToken) -> String {
        let mut tick = tokio::time::interval(self.session.tick_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut actions = self.session.start(now());
        if let Some(first) = first {
            actions.extend(self.session.handle_frame(&first, now()));
        }
        loop {
            if let Some(reason) = self.perform(actions).await {
                return reason;
            }
            actions = tokio::select! {
                _ = shutdown.cancelled() => return "edge shutting down".into(),
                _ = self.replaced.cancelled() => return "replaced by a new connection".into(),
                input = recv(&mut self.inputs) => match input {
                    Some(LinkInput::Command { origin, request }) => self.command(origin, request).await,
                    Some(LinkInput::Rules { origin, desired, request }) => {
                        self.session.set_desired(desired);
                        self.command(origin, request).await
                    }
                    Some(LinkInput::Close(reason)) => return reason,
                    None => Vec::new(),
                },
                _ = tick.tick() => self.session.handle_tick(now()),
                read = self.io.next() => match read {
                    Ok(read) => {
                        let mut actions = self.read(read);
                        // Whatever else is already buffered joins this round (one commit for all).
                        for _ in 0..MAX_FRAMES_PER_ROUND {
                            match tokio::time::timeout(Duration::ZERO, self.io.next()).await {
                                Ok(Ok(read)) => actions.extend(self.read(read)),
                                Ok(Err(e)) => {
                                    actions.push(Action::Close(e.to_string()));
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        actions
                    }
                    Err(e) => vec![Action::Close(e.to_string())],
                },
            };
        }
    }

    fn read(&mut self, read: Read<Bytes, FrameError>) -> Vec<Action> {
        match read {
            Read::Frame(bytes) => {
                self.seen();
                self.session.handle_frame(&bytes, now())
            }
            Read::Bad(e) => {
                self.log_bad(&e.to_string());
                self.session.handle_bad_frame(now())
            }
        }
    }

    fn seen(&mut self) {
        // The RFC 3339 text is made at most once a second per link.
        if self.up_sn.is_some() && self.last_seen_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last_seen_at = Some(Instant::now());
            if let Ok(mut m) = self.service.metrics().readers.lock() {
                m.entry(self.reader.clone()).or_default().last_seen = Some(now_rfc3339());
            }
        }
    }

    fn log_bad(&mut self, reason: &str) {
        self.bad_logged += 1;
        if self.bad_logged <= 5 || self.bad_logged % 100 == 0 {
            tracing::warn!(reader = %self.reader, n = self.bad_logged, "bad frame: {reason}");
        }
    }

    async fn command(&mut self, origin: Origin, request: Request) -> Vec<Action> {
        let request = match request {
            Request::FirmwareServe { ver_type, file } => match self.serve_firmware(&file).await {
                Ok(download) => Request::FirmwareDownload { ver_type, download },
                Err(reason) => {
                    finish(origin, Outcome::Rejected(reason), self.service.plane()).await;
                    return Vec::new();
                }
            },
            other => other,
        };
        let token = self.next_token;
        self.next_token += 1;
        self.origins.insert(token, origin);
        self.session.handle_command(token, request, now())
    }

    /// Starts a one-transfer TFTP server for `file` on the address the reader reaches the edge by.
    async fn serve_firmware(&mut self, file: &str) -> Result<crate::protocol::gbt37987::Parameter, String> {
        let Some(IpAddr::V4(ip)) = self.local_ip else {
            return Err("the edge serves firmware over TFTP to readers on IPv4 networks; give `url` instead".into());
        };
        let path = self.service.firmware_dir.join(file);
        let size = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("firmware file `{file}`: {e}"))?
            .len();
        if size > tftp::MAX_FILE {
            return Err(format!(
                "firmware file `{file}` of {size} bytes exceeds {}",
                tftp::MAX_FILE
            ));
        }
        let socket = tokio::net::UdpSocket::bind((ip, 0))
            .await
            .map_err(|e| format!("binding the TFTP server: {e}"))?;
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        let (reader, name) = (self.reader.clone(), file.to_string());
        tokio::spawn(async move {
            match tftp::serve_one(socket, &path, &name, FIRMWARE_SERVE_WAIT).await {
                Ok(bytes) => tracing::info!(%reader, file = %name, bytes, "firmware served"),
                Err(e) => tracing::warn!(%reader, file = %name, "firmware transfer failed: {e}"),
            }
        });
        version_download(1, "", "", file, ip, port)
    }

    /// Performs actions in order; returns the close reason if the link must close.
    async fn perform(&mut self, actions: Vec<Action>) -> Option<String> {
        let mut batch = Batch::default();
        let mut close = None;
        for action in actions {
            match action {
                Action::Persist(p) => batch.add(p),
                Action::Send(m) => {
                    if let Err(e) = self.send(&m).await {
                        close.get_or_insert(e);
                    }
                }
                Action::Bad(reason) => {
                    self.service.metrics().gbt37987.frames_bad.fetch_add(1, Relaxed);
                    self.log_bad(&reason);
                }
                Action::Log(text) => tracing::warn!(reader = %self.reader, "{text}"),
                Action::Capabilities(general) => self
                    .service
                    .update_info(&self.reader, |i| i.capabilities = Some(general)),
                Action::Up { device_sn } => {
                    if let Err(e) = self.flush(std::mem::take(&mut batch)).await {
                        close.get_or_insert(e);
                    }
                    self.up(device_sn).await;
                }
                Action::Complete { token, outcome } => {
                    if let Err(e) = self.flush(std::mem::take(&mut batch)).await {
                        close.get_or_insert(e);
                    }
                    if let Some(origin) = self.origins.remove(&token) {
                        finish(origin, outcome, self.service.plane()).await;
                    }
                }
                Action::Close(reason) => {
                    close.get_or_insert(reason);
                }
            }
        }
        if let Err(e) = self.flush(batch).await {
            close.get_or_insert(e);
        }
        if self.session.spec_states() != &self.shown_specs {
            self.shown_specs = self.session.spec_states().clone();
            let shown: std::collections::BTreeMap<u32, String> = self
                .shown_specs
                .iter()
                .map(|(id, s)| (*id, s.name().to_string()))
                .collect();
            self.service.update_info(&self.reader, |i| i.select_specs = shown);
        }
        close
    }

    async fn send(&mut self, message: &Message) -> Result<(), String> {
        let bytes = self.framing.encode(self.dialect, message)?;
        self.io.send(&bytes).await.map_err(|e| e.to_string())
    }

    /// Commits the batch, then sends its acknowledgements.
    async fn flush(&mut self, batch: Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let Batch {
            records,
            alarms,
            then_send,
            tags,
        } = batch;
        let reader = self.reader.clone();
        let alarm_changes = !alarms.is_empty();
        self.service
            .store()
            .write(move |ctx| {
                for change in &alarms {
                    db::apply_alarm(ctx.conn(), &reader, change)?;
                }
                for record in &records {
                    ctx.append(record)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("store: {e}"))?;
        if tags > 0 || alarm_changes {
            if let Ok(mut m) = self.service.metrics().readers.lock() {
                let state = m.entry(self.reader.clone()).or_default();
                state.tag_reports_total += tags;
                state.alarms_active = self.session.active_alarms() as u64;
            }
        }
        for message in &then_send {
            self.send(message).await?;
        }
        Ok(())
    }

    async fn status(&mut self, up: bool, reason: &str, sn: Option<[u8; 8]>) {
        let body = records::status_body(up, reason, self.dialect, sn);
        let record = records::record(&self.reader, Leaf::Status, &body, now_ms());
        if let Err(e) = self.service.store().append(record).await {
            tracing::warn!(reader = %self.reader, "recording the link status failed: {e}");
        }
    }

    async fn up(&mut self, sn: [u8; 8]) {
        self.up_sn = Some(sn);
        let (connection, rx, replaced) = self.service.claim(&self.reader);
        self.connection = Some(connection);
        self.inputs = Some(rx);
        self.replaced = replaced;
        tracing::info!(reader = %self.reader, device_sn = %hex_string(&sn), dialect = %self.dialect, "reader link up");
        self.service
            .set_link(&self.reader, true, "connected", self.dialect, Some(sn));
        self.status(true, "connected", Some(sn)).await;
        if let Some(plane) = self.service.plane() {
            if let Err(e) = plane.device_online(Protocol::Gbt37987, &self.reader).await {
                tracing::warn!(reader = %self.reader, "delivering queued commands failed: {e}");
            }
        }
    }

    /// Hands unfinished commands back, leaves the hub, records the link going down.
    async fn end(&mut self, reason: &str, shutting_down: bool) {
        if shutting_down && self.up_sn.is_some() {
            if let Ok(m) =
                crate::protocol::gbt37987::builders::disconnect(crate::protocol::gbt37987::builders::Addressing {
                    device_sn: self.session.device_sn(),
                    number: 0,
                })
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), self.send(&m)).await;
            }
        }
        let mut unfinished: Vec<Origin> = self
            .session
            .close()
            .into_iter()
            .filter_map(|t| self.origins.remove(&t))
            .collect();
        unfinished.extend(self.origins.drain().map(|(_, o)| o));
        if let Some(connection) = self.connection {
            self.service.release(&self.reader, connection);
        }
        if let Some(mut rx) = self.inputs.take() {
            rx.close();
            while let Ok(input) = rx.try_recv() {
                if let LinkInput::Command { origin, .. } | LinkInput::Rules { origin, .. } = input {
                    unfinished.push(origin);
                }
            }
        }
        let plane = self.service.plane();
        for origin in unfinished {
            match origin {
                // Back in the queue until the reader returns or the TTL passes.
                Origin::Plane(id) => {
                    if let Some(plane) = &plane {
                        if let Err(e) = plane.release(id).await {
                            tracing::warn!(id, "re-queueing a command failed: {e}");
                        }
                    }
                }
                other => finish(other, Outcome::Rejected(format!("the link closed: {reason}")), None).await,
            }
        }
        self.io.shutdown().await;
        if let Some(sn) = self.up_sn {
            tracing::info!(reader = %self.reader, "reader link down: {reason}");
            self.service
                .set_link(&self.reader, false, reason, self.dialect, Some(sn));
            self.status(false, reason, Some(sn)).await;
        } else {
            tracing::debug!(reader = %self.reader, "link closed before it came up: {reason}");
            self.service
                .update_info(&self.reader, |i| i.reason = Some(reason.to_string()));
        }
    }
}
