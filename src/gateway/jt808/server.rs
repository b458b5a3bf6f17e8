//! The JT/T 808 connection task: the thin shell around a [`Session`]. Reads frames, runs the
//! session, and performs its actions: commits records and sends their replies only after the
//! commit, runs registration and authentication against the terminals table, claims the phone in
//! the [`Registry`] (a new connection with the same phone replaces the old one), and reports
//! command outcomes to the [`CommandPlane`].
//!
//! Commits are pipelined per connection: one store write in flight while the next messages
//! accumulate into the following batch, so order per terminal is kept and a terminal that sends
//! without waiting for acks is not limited to one message per fsync. Reading stops while the
//! accumulating batch is full (backpressure). Must not contain protocol decisions.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::session::{Action, Commit, Limit, Now, Session, Settings};
use super::terminals::{self, AuthRequest, AuthVerdict, RegisterOutcome, RegisterRequest};
use crate::command::{CommandPlane, DeviceCommand, Protocol};
use crate::config::Jt808Auth;
use crate::limits::ByteBudget;
use crate::link::{
    self, Accepted, Binding, Claim, FramedIo, LinkError, ListenerSettings, PeerIdentity, Read, Registry,
};
use crate::metrics::{Metrics, ProtocolCounters};
use crate::protocol::jt808::{self as codec, FrameError, Packet};
use crate::store::{Record, Store, StoreError};
use crate::time::now_ms;

/// Everything the server needs besides its collaborators.
#[derive(Clone)]
pub struct ServerSettings {
    /// Per-connection limits and timings.
    pub session: Settings,
    /// Who may register: anyone, or only provisioned terminals.
    pub auth: Jt808Auth,
    /// TLS (with client certificates when the config has a client CA); plain TCP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// The phone a terminal registers or authenticates as must be named by its certificate.
    pub bind_identity: bool,
    /// The TLS port also takes plain TCP (unbound sessions).
    pub allow_plain: bool,
    /// Rows of `jt808_terminals` at most.
    pub max_terminals: usize,
    /// Incomplete frames buffered across all connections.
    pub buffered: Arc<ByteBudget>,
}

/// Bytes buffered per connection: one maximal escaped frame and its flags. The codec drops a run
/// longer than that itself, so the link's overflow never needs to fire.
const MAX_BUFFER: usize = codec::MAX_ESCAPED_CONTENT_LEN + 4;
/// Messages accumulated behind the write in flight before reading pauses.
const MAX_BATCH_MESSAGES: usize = 256;
/// How long a closing connection waits for its last commits.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

struct Decoder(codec::FrameDecoder);

impl link::FrameDecoder for Decoder {
    type Frame = Packet;
    type Error = FrameError;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, FrameError> {
        self.0.decode(buf)
    }
}

/// The gateway's shared parts.
struct Gateway {
    settings: Arc<Settings>,
    bind_identity: bool,
    max_terminals: usize,
    buffered: Arc<ByteBudget>,
    metrics: Arc<Metrics>,
    auth: Jt808Auth,
    store: Store,
    plane: Arc<CommandPlane>,
    registry: Arc<Registry>,
    counters: Arc<ProtocolCounters>,
}

/// Registers the gateway with the command plane (so commands for JT/T 808 are queued from now on)
/// and serves `listener` until `shutdown`.
pub fn spawn(
    listener: TcpListener,
    settings: ServerSettings,
    store: Store,
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_with(
        listener,
        settings,
        store,
        plane,
        metrics,
        Arc::new(Registry::default()),
        shutdown,
    )
}

/// Like [`spawn`], with the registry of live phones given by the caller (the provisioning
/// service closes a revoked terminal's session through it).
pub fn spawn_with(
    listener: TcpListener,
    settings: ServerSettings,
    store: Store,
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    plane.register(Protocol::Jt808, registry.clone());
    let gateway = Arc::new(Gateway {
        settings: Arc::new(settings.session),
        bind_identity: settings.bind_identity,
        max_terminals: settings.max_terminals,
        buffered: settings.buffered.clone(),
        metrics: metrics.clone(),
        auth: settings.auth,
        store,
        plane,
        registry,
        counters: metrics.jt808.clone(),
    });
    let listener_settings = ListenerSettings {
        tls: settings.tls,
        max_connections: settings.max_connections,
        handshake_timeout: Duration::from_secs(10),
        protocol: "jt808",
        allow_plain: settings.allow_plain,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = listener_settings.tls.is_some(), "JT/T 808 gateway listening");
    }
    let counters = gateway.counters.clone();
    let stop = shutdown.clone();
    tokio::spawn(link::serve(
        listener,
        listener_settings,
        counters,
        shutdown,
        move |accepted| {
            let gateway = gateway.clone();
            let stop = stop.clone();
            async move { gateway.connection(accepted, stop).await }
        },
    ))
}

struct Clock {
    base: Instant,
}

impl Clock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.base.elapsed().as_millis() as u64,
            wall_ms: now_ms(),
        }
    }

    fn at(&self, mono_ms: u64) -> Instant {
        self.base + Duration::from_millis(mono_ms)
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// The replies a write releases: what to send once it committed, what to send if it failed.
#[derive(Default)]
struct Outcomes {
    replies: Vec<Bytes>,
    refusals: Vec<Bytes>,
}

/// One write in flight, the next batch accumulating behind it.
struct Writes {
    store: Store,
    running: Option<(WriteFuture, Outcomes)>,
    next: Vec<Commit>,
    /// A write failed: nothing after it is committed (the terminal resends in order on a new
    /// connection).
    failed: bool,
}

impl Writes {
    fn push(&mut self, commit: Commit) {
        self.next.push(commit);
        if self.running.is_none() {
            self.start();
        }
    }

    /// The refusals of everything queued behind a failed write, which will not be committed.
    fn abandon(&mut self) -> Vec<Bytes> {
        self.failed = true;
        std::mem::take(&mut self.next)
            .into_iter()
            .flat_map(|c| c.refusals)
            .collect()
    }

    fn start(&mut self) {
        if self.next.is_empty() || self.failed {
            return;
        }
        let batch = std::mem::take(&mut self.next);
        let mut records: Vec<Record> = Vec::new();
        let mut deregister = Vec::new();
        let mut outcomes = Outcomes::default();
        for c in batch {
            records.extend(c.records);
            deregister.extend(c.deregister);
            outcomes.replies.extend(c.replies);
            outcomes.refusals.extend(c.refusals);
        }
        let store = self.store.clone();
        let future: WriteFuture = Box::pin(async move {
            store
                .write(move |ctx| {
                    for r in &records {
                        ctx.append(r)?;
                    }
                    for phone in &deregister {
                        terminals::deregister(ctx.conn(), phone)?;
                    }
                    Ok(())
                })
                .await
        });
        self.running = Some((future, outcomes));
    }

    fn busy(&self) -> bool {
        self.running.is_some()
    }

    fn accepting(&self) -> bool {
        self.next.len() < MAX_BATCH_MESSAGES
    }

    /// Waits for the write in flight; returns its outcome and the replies it releases.
    async fn finish(&mut self) -> (Result<(), StoreError>, Outcomes) {
        match self.running.as_mut() {
            Some((future, _)) => {
                let result = future.await;
                let outcomes = self.running.take().map(|(_, r)| r).unwrap_or_default();
                (result, outcomes)
            }
            None => std::future::pending().await,
        }
    }
}

/// The connection's claim on its phone, once authenticated.
struct Online {
    device: String,
    claim: Claim,
}

enum EventKind {
    Read,
    Other,
}

enum Event {
    Shutdown,
    Replaced,
    Written(Result<(), StoreError>, Outcomes),
    Command(Option<DeviceCommand>),
    Tick,
    Read(Result<Read<Packet, FrameError>, LinkError>),
}

async fn next_command(online: &mut Option<Online>) -> Option<DeviceCommand> {
    match online {
        Some(o) => o.claim.commands.recv().await,
        None => std::future::pending().await,
    }
}

async fn replaced(token: Option<CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The per-connection state the shell owns.
struct Connection<S> {
    io: FramedIo<S, Decoder>,
    session: Session,
    writes: Writes,
    online: Option<Online>,
    connection_id: u64,
    peer: std::net::SocketAddr,
    clock: Clock,
    closing: Option<String>,
    /// What the client certificate names.
    identity: PeerIdentity,
    /// Refusals and bad frames logged so far on this connection.
    bad_logged: u32,
}

/// Refusals and bad frames logged per connection before the rest are only counted.
const BAD_LOGGED_PER_CONNECTION: u32 = 8;

impl Gateway {
    async fn connection(self: Arc<Self>, accepted: Accepted, shutdown: CancellationToken) {
        let clock = Clock { base: Instant::now() };
        // The session owns the idle rule; the link's timeout is only a backstop.
        let backstop = Duration::from_millis(
            self.settings
                .idle_timeout_ms
                .max(self.settings.auth_timeout_ms)
                .saturating_add(30_000),
        );
        let io = FramedIo::new(
            accepted.stream,
            Decoder(codec::FrameDecoder::new()),
            MAX_BUFFER,
            backstop,
            self.counters.clone(),
        )
        .with_budget(self.buffered.clone());
        let mut c = Connection {
            io,
            session: Session::new(self.settings.clone(), clock.now()),
            writes: Writes {
                store: self.store.clone(),
                running: None,
                next: Vec::new(),
                failed: false,
            },
            online: None,
            connection_id: self.registry.connection_id(),
            peer: accepted.peer,
            clock,
            closing: None,
            identity: accepted.identity,
            bad_logged: 0,
        };
        tracing::debug!(peer = %c.peer, "JT/T 808 connection accepted");
        while c.closing.is_none() {
            let deadline = c.clock.at(c.session.next_deadline(c.clock.now()));
            let replaced_token = c.online.as_ref().map(|o| o.claim.replaced.clone());
            let take_command = c.session.can_take_command();
            let busy = c.writes.busy();
            let accepting = c.writes.accepting();
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                _ = replaced(replaced_token) => Event::Replaced,
                (result, outcomes) = c.writes.finish(), if busy => Event::Written(result, outcomes),
                command = next_command(&mut c.online), if take_command => Event::Command(command),
                _ = tokio::time::sleep_until(deadline) => Event::Tick,
                read = c.io.next(), if accepting => Event::Read(read),
            };
            let event_kind = if matches!(event, Event::Read(Ok(_))) {
                EventKind::Read
            } else {
                EventKind::Other
            };
            let actions = match event {
                Event::Shutdown => {
                    c.closing = Some("the appliance is shutting down".into());
                    Vec::new()
                }
                Event::Replaced => {
                    c.closing = Some("replaced by a newer connection of the same phone, or deprovisioned".into());
                    Vec::new()
                }
                Event::Written(result, outcomes) => {
                    self.written(&mut c, result, outcomes).await;
                    c.writes.start();
                    Vec::new()
                }
                Event::Command(Some(command)) => c.session.handle_command(command, c.clock.now()),
                Event::Command(None) => {
                    // The registry dropped this connection's channel: a newer one holds the phone.
                    c.closing = Some("replaced by a newer connection of the same phone".into());
                    Vec::new()
                }
                Event::Tick => c.session.handle_tick(c.clock.now()),
                Event::Read(Ok(Read::Frame(packet))) => c.session.handle_frame(packet, c.clock.now()),
                Event::Read(Ok(Read::Bad(e))) => {
                    tracing::warn!(peer = %c.peer, device = c.session.device().unwrap_or("-"), "corrupt JT/T 808 frame: {e}");
                    c.session.handle_bad_frame()
                }
                Event::Read(Err(e)) => {
                    c.closing = Some(e.to_string());
                    Vec::new()
                }
            };
            let frame_read = matches!(event_kind, EventKind::Read);
            self.perform(&mut c, actions).await;
            // One frame per turn: a connection whose socket is full of frames (a flood) would
            // otherwise run through its coop budget of I/O before yielding, and every other
            // connection's acknowledgement would wait behind each flooding connection in turn.
            if frame_read {
                tokio::task::yield_now().await;
            }
        }
        self.close(c).await;
    }

    async fn send(&self, c: &mut Connection<impl link::ByteStream>, frames: &[Bytes]) {
        for frame in frames {
            if let Err(e) = c.io.send(frame).await {
                c.closing.get_or_insert_with(|| format!("send failed: {e}"));
                return;
            }
        }
    }

    async fn written(
        &self,
        c: &mut Connection<impl link::ByteStream>,
        result: Result<(), StoreError>,
        outcomes: Outcomes,
    ) {
        match result {
            Ok(()) => self.send(c, &outcomes.replies).await,
            // Not accepted: the terminal is told so (0x8001 result 1), keeps the data and sends
            // it again. Nothing queued behind is committed, and the connection closes, so what
            // it sends again arrives in order.
            Err(e) => {
                let mut refusals = outcomes.refusals;
                refusals.extend(c.writes.abandon());
                self.counters.commit_refusals.fetch_add(1, Relaxed);
                tracing::warn!(peer = %c.peer, device = c.session.device().unwrap_or("-"),
                    "commit failed, {} messages refused: {e}", refusals.len());
                self.send(c, &refusals).await;
                c.closing
                    .get_or_insert_with(|| format!("the store could not commit ({e}); the terminal resends in order"));
            }
        }
    }

    /// Waits until everything committed so far is acknowledged.
    async fn flush(&self, c: &mut Connection<impl link::ByteStream>) {
        while c.writes.busy() {
            let (result, outcomes) = c.writes.finish().await;
            self.written(c, result, outcomes).await;
            c.writes.start();
        }
    }

    async fn perform(&self, c: &mut Connection<impl link::ByteStream>, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            // After a failed commit nothing more is sent or committed on this connection; command
            // bookkeeping still runs so no command is left without its result.
            if c.writes.failed
                && matches!(
                    action,
                    Action::Send(_)
                        | Action::Commit(_)
                        | Action::Register { .. }
                        | Action::Authenticate { .. }
                        | Action::Online { .. }
                )
            {
                continue;
            }
            match action {
                Action::Send(frames) => self.send(c, &frames).await,
                Action::Commit(commit) => c.writes.push(commit),
                Action::Register { request, record } => {
                    self.flush(c).await;
                    if c.writes.failed || !self.bound(c, &request.phone) {
                        continue;
                    }
                    let outcome = self.register(request, record).await;
                    for a in c.session.on_register(outcome).into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Authenticate { request, record } => {
                    self.flush(c).await;
                    if c.writes.failed || !self.bound(c, &request.phone) {
                        continue;
                    }
                    let verdict = self.authenticate(request, record).await;
                    for a in c.session.on_auth(verdict).into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Online { device } => {
                    let claim = self.registry.claim(&device, c.connection_id);
                    tracing::info!(peer = %c.peer, device, edition = ?c.session.edition(), "JT/T 808 terminal online");
                    c.online = Some(Online {
                        device: device.clone(),
                        claim,
                    });
                    let plane = self.plane.clone();
                    tokio::spawn(async move {
                        if let Err(e) = plane.device_online(Protocol::Jt808, &device).await {
                            tracing::warn!(device, "delivering queued commands failed: {e}");
                        }
                    });
                }
                Action::Complete { id, outcome } => {
                    let plane = self.plane.clone();
                    tokio::spawn(async move {
                        if let Err(e) = plane.complete(id, outcome).await {
                            tracing::error!(command = id, "recording the command result failed: {e}");
                        }
                    });
                }
                Action::Release { id } => self.release(vec![id], c.online.as_ref().map(|o| o.device.clone())),
                Action::LimitHit(Limit::Reassembly) => {
                    self.metrics.limits.reassembly_refused_total.fetch_add(1, Relaxed);
                }
                Action::Bad(why) => {
                    self.counters.frames_bad.fetch_add(1, Relaxed);
                    // The first few per connection are logged, the rest only counted: a flood of
                    // refused packets (thousands of connections pushing unfinished transfers past
                    // the global budget) must not turn into a flood of log lines, whose writing
                    // would slow every other connection.
                    c.bad_logged += 1;
                    match c.bad_logged {
                        n if n <= BAD_LOGGED_PER_CONNECTION => {
                            tracing::warn!(peer = %c.peer, "JT/T 808: {why}")
                        }
                        n if n == BAD_LOGGED_PER_CONNECTION + 1 => tracing::warn!(
                            peer = %c.peer,
                            "JT/T 808: {why}; further refusals on this connection are counted (jt808.frames_bad), not logged"
                        ),
                        _ => tracing::debug!(peer = %c.peer, "JT/T 808: {why}"),
                    }
                }
                Action::Close(why) => {
                    c.closing.get_or_insert(why);
                }
                // Only this connection waits; the replies before it are already sent.
                Action::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        }
    }

    /// Whether the phone `c` claims may be used on this connection (`tls.bind_identity`); a
    /// mismatch closes the connection without an answer.
    fn bound(&self, c: &mut Connection<impl link::ByteStream>, phone: &str) -> bool {
        if c.identity.binding(self.bind_identity, &[phone]) != Binding::Mismatch {
            return true;
        }
        self.metrics.limits.identity_mismatch_total.fetch_add(1, Relaxed);
        let why = format!(
            "the client certificate ({}) does not name phone {phone}",
            c.identity.names.join(", ")
        );
        tracing::warn!(peer = %c.peer, "JT/T 808: {why}");
        c.closing.get_or_insert(why);
        false
    }

    async fn register(&self, request: RegisterRequest, record: Record) -> Option<RegisterOutcome> {
        let mode = self.auth;
        let code = terminals::fresh_code();
        let phone = request.phone.clone();
        let max_terminals = self.max_terminals;
        let result = self
            .store
            .write(move |ctx| {
                let outcome = terminals::register(ctx.conn(), mode, &request, &code, now_ms(), max_terminals)?;
                if outcome.result == codec::register_result::OK {
                    ctx.append(&record)?;
                }
                Ok(outcome)
            })
            .await;
        match result {
            Ok(outcome) => {
                if outcome.table_full {
                    self.metrics.limits.terminals_refused_total.fetch_add(1, Relaxed);
                    tracing::warn!(
                        phone,
                        max = self.max_terminals,
                        "JT/T 808 registration refused: jt808.max_terminals reached"
                    );
                } else if outcome.replaced_code {
                    tracing::warn!(phone, "JT/T 808 re-registration: a new auth code is issued and the previous one no longer authenticates");
                } else {
                    tracing::info!(phone, result = outcome.result, "JT/T 808 registration");
                }
                Some(outcome)
            }
            Err(e) => {
                tracing::error!(phone, "registration could not be stored: {e}");
                None
            }
        }
    }

    async fn authenticate(&self, request: AuthRequest, record: Record) -> Option<AuthVerdict> {
        let mode = self.auth;
        let phone = request.phone.clone();
        let result = self
            .store
            .write(move |ctx| {
                let verdict = terminals::authenticate(ctx.conn(), mode, &request, now_ms())?;
                if verdict.ok {
                    ctx.append(&record)?;
                }
                Ok(verdict)
            })
            .await;
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(phone, "authentication could not be checked: {e}");
                None
            }
        }
    }

    /// Hands commands back to the plane; if the phone is (again) online on another connection,
    /// delivers them there.
    fn release(&self, ids: Vec<i64>, device: Option<String>) {
        if ids.is_empty() {
            return;
        }
        let plane = self.plane.clone();
        let registry = self.registry.clone();
        tokio::spawn(async move {
            for id in ids {
                if let Err(e) = plane.release(id).await {
                    tracing::warn!(command = id, "releasing a command failed: {e}");
                }
            }
            if let Some(device) = device.filter(|d| registry.is_online(d)) {
                let _ = plane.device_online(Protocol::Jt808, &device).await;
            }
        });
    }

    async fn close(&self, mut c: Connection<impl link::ByteStream>) {
        let reason = c.closing.take().unwrap_or_default();
        // Commits already under way still get their acknowledgements if the socket allows.
        let _ = tokio::time::timeout(FLUSH_LIMIT, self.flush(&mut c)).await;
        let mut released: Vec<i64> = c
            .session
            .close()
            .into_iter()
            .filter_map(|a| match a {
                Action::Release { id } => Some(id),
                _ => None,
            })
            .collect();
        let device = c.online.as_ref().map(|o| o.device.clone());
        if let Some(mut online) = c.online.take() {
            online.claim.commands.close();
            while let Ok(command) = online.claim.commands.try_recv() {
                released.push(command.id);
            }
            self.registry.release(&online.device, c.connection_id);
        }
        self.release(released, device.clone());
        c.io.shutdown().await;
        match device {
            Some(device) => tracing::info!(peer = %c.peer, device, "JT/T 808 connection closed: {reason}"),
            None => tracing::debug!(peer = %c.peer, "JT/T 808 connection closed before authentication: {reason}"),
        }
    }
}
