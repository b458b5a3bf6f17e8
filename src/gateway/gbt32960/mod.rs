//! GB/T 32960 gateway: the TCP/TLS server vehicles connect to, and the thin connection task that
//! performs what the pure [`session::Session`] decides.
//!
//! Per connection: frames are read with a bounded buffer; the idle deadline counts from the last
//! good frame (so a terminal trickling bytes or sending only garbage is closed too); every
//! published frame is committed to the store before anything that depends on it is sent (the
//! login reply, the plane's delivery of queued commands); downstream commands arrive through the
//! [`Registry`] the command plane delivers to, and each ends in exactly one result or goes back to
//! the plane's queue when the connection ends.
//!
//! Owns: listener settings from the configuration, the connection loop, the registry of online
//! vehicles. Must not: contain protocol decisions (the session makes them) or decode bytes
//! itself (the codec does).

pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::command::{CommandPlane, DeviceCommand, Protocol};
use crate::config::{Gbt32960Config, Replace};
use crate::limits::ByteBudget;
use crate::link::{self, Accepted, Binding, ByteStream, FramedIo, ListenerSettings, PeerIdentity, Read, Registry};
use crate::metrics::{Metrics, ProtocolCounters};
use crate::protocol::gbt32960::{self as codec, DecodeError, Frame, Origin};
use crate::store::Store;
use crate::time::now_ms;

pub use session::{Action, CloseReason, Now, Session, SessionSettings};

impl link::FrameDecoder for codec::FrameDecoder {
    type Frame = Frame;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        codec::FrameDecoder::decode(self, buf)
    }
}

/// Bytes a connection may buffer: one frame of the largest size the standard allows, plus room
/// for the start of the next.
pub const MAX_BUFFER: usize = codec::MAX_FRAME_LEN + 4096;
/// How often the session's timers are looked at.
const TICK: Duration = Duration::from_secs(1);
/// Bad frames logged at warning level per connection (the rest at debug level).
const MAX_BAD_LOGGED: u32 = 5;
/// A connection must log in within this time (or the idle timeout, if shorter).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the server needs.
#[derive(Clone)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    /// Server TLS (client certificates required when it was built with a client CA).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A connection with no good frame for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the login after connecting (capped by `idle_timeout`).
    pub login_timeout: Duration,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub session: SessionSettings,
    /// The VIN a session claims must be named by its client certificate.
    pub bind_identity: bool,
    /// The TLS port also takes plain TCP (unbound sessions).
    pub allow_plain: bool,
    /// Whether an unbound login may take a VIN from an unbound holder.
    pub replace: Replace,
    /// Incomplete frames buffered across all connections.
    pub buffered: Arc<ByteBudget>,
}

impl GatewaySettings {
    /// Settings from the `gbt32960` configuration section (loads the TLS files).
    pub fn from_config(section: &Gbt32960Config) -> Result<GatewaySettings, crate::tls::TlsError> {
        let config = &section.server;
        let tls = config
            .tls
            .as_ref()
            .map(|t| crate::tls::server_config(&t.cert_file, &t.key_file, t.client_ca_file.as_deref(), t.allow_plain))
            .transpose()?
            .map(Arc::new);
        Ok(GatewaySettings {
            listen: config.listen,
            tls,
            idle_timeout: config.idle_timeout,
            login_timeout: LOGIN_TIMEOUT,
            max_connections: config.max_connections,
            handshake_timeout: Duration::from_secs(10),
            session: SessionSettings::default(),
            bind_identity: config.tls.as_ref().is_some_and(|t| t.bind_identity),
            allow_plain: config.tls.as_ref().is_some_and(|t| t.allow_plain),
            replace: section.replace,
            buffered: Arc::new(ByteBudget::new(config.max_buffered_bytes)),
        })
    }
}

/// A started server.
pub struct Gateway {
    /// The bound address (useful when the configuration asked for port 0).
    pub local_addr: SocketAddr,
    /// Online vehicles by VIN.
    pub registry: Arc<Registry>,
    /// Ends after `shutdown` once the connections have closed.
    pub task: JoinHandle<()>,
}

struct Ctx {
    store: Store,
    plane: Arc<CommandPlane>,
    registry: Arc<Registry>,
    counters: Arc<ProtocolCounters>,
    metrics: Arc<Metrics>,
    settings: GatewaySettings,
    shutdown: CancellationToken,
}

/// Binds the listener, registers the gateway with the command plane and serves until `shutdown`.
pub async fn start(
    settings: GatewaySettings,
    store: Store,
    plane: Arc<CommandPlane>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<Gateway> {
    let listener = link::bind(settings.listen).await?;
    let local_addr = listener.local_addr()?;
    let registry = Arc::new(Registry::default());
    plane.register(Protocol::Gbt32960, registry.clone());
    let counters = metrics.gbt32960.clone();
    let listener_settings = ListenerSettings {
        tls: settings.tls.clone(),
        max_connections: settings.max_connections,
        handshake_timeout: settings.handshake_timeout,
        protocol: "gbt32960",
        allow_plain: settings.allow_plain,
    };
    let ctx = Arc::new(Ctx {
        store,
        plane,
        registry: registry.clone(),
        counters: counters.clone(),
        metrics: metrics.clone(),
        settings,
        shutdown: shutdown.clone(),
    });
    tracing::info!(%local_addr, tls = ctx.settings.tls.is_some(), "GB/T 32960 gateway listening");
    let task = tokio::spawn(link::serve(
        listener,
        listener_settings,
        counters,
        shutdown,
        move |accepted| {
            let ctx = ctx.clone();
            async move { Connection::new(&ctx).run(accepted, &ctx).await }
        },
    ));
    Ok(Gateway {
        local_addr,
        registry,
        task,
    })
}

fn now() -> Now {
    Now::new(std::time::Instant::now(), now_ms())
}

/// The shell around one session.
struct Connection {
    id: u64,
    session: Session,
    /// The VIN this connection holds in the registry, its command channel and replacement token.
    vin: Option<String>,
    commands: Option<mpsc::Receiver<DeviceCommand>>,
    replaced: Option<CancellationToken>,
    /// Commands were given back to the plane while the vehicle may be online elsewhere.
    released_any: bool,
    /// What the client certificate names.
    identity: PeerIdentity,
}

impl Connection {
    fn new(ctx: &Ctx) -> Connection {
        Connection {
            id: ctx.registry.connection_id(),
            session: Session::new(ctx.settings.session.clone()),
            vin: None,
            commands: None,
            replaced: None,
            released_any: false,
            identity: PeerIdentity::default(),
        }
    }

    async fn run(mut self, accepted: Accepted, ctx: &Ctx) {
        let peer = accepted.peer;
        self.identity = accepted.identity;
        let idle = ctx.settings.idle_timeout;
        let mut io = FramedIo::new(
            accepted.stream,
            codec::FrameDecoder::new(Origin::Terminal),
            MAX_BUFFER,
            idle,
            ctx.counters.clone(),
        )
        .with_budget(ctx.settings.buffered.clone());
        let mut deadline = tokio::time::Instant::now() + ctx.settings.login_timeout.min(idle);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::debug!(%peer, "GB/T 32960 connection");
        let mut bad_logged = 0u32;
        let reason = loop {
            let actions = tokio::select! {
                _ = ctx.shutdown.cancelled() => break "the edge is shutting down".to_string(),
                _ = cancelled(&self.replaced) => break "a new connection with the same VIN replaced it".to_string(),
                _ = tokio::time::sleep_until(deadline) => break format!("no frame for {:?}", if self.vin.is_some() { idle } else { ctx.settings.login_timeout.min(idle) }),
                Some(command) = recv(&mut self.commands) => self.session.handle_command(command, now()),
                _ = tick.tick() => self.session.handle_tick(now()),
                read = io.next() => match read {
                    Ok(Read::Frame(frame)) => {
                        deadline = tokio::time::Instant::now() + idle;
                        self.session.handle_frame(frame, now())
                    }
                    Ok(Read::Bad(error)) => {
                        // Every bad frame is counted; only the first few per connection are
                        // logged, so a hostile terminal cannot flood the journal.
                        bad_logged += 1;
                        if bad_logged <= MAX_BAD_LOGGED {
                            tracing::warn!(%peer, vin = self.vin.as_deref().unwrap_or(""), "bad GB/T 32960 input: {error}");
                        } else {
                            tracing::debug!(%peer, vin = self.vin.as_deref().unwrap_or(""), "bad GB/T 32960 input: {error}");
                        }
                        self.session.handle_bad(&error, now())
                    }
                    Err(e) => break e.to_string(),
                },
            };
            if let Err(reason) = self.perform(actions, &mut io, ctx).await {
                break reason;
            }
        };
        tracing::info!(%peer, vin = self.vin.as_deref().unwrap_or(""), "GB/T 32960 connection closed: {reason}");
        self.finish(ctx).await;
        io.shutdown().await;
    }

    /// Performs actions in order; `Err` closes the connection.
    async fn perform<S: ByteStream>(
        &mut self,
        actions: Vec<Action>,
        io: &mut FramedIo<S, codec::FrameDecoder>,
        ctx: &Ctx,
    ) -> Result<(), String> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Claim { vin } => self.claim(vin, ctx)?,
                Action::Commit { records, then } => {
                    if let Err(e) = ctx.store.append_all(records).await {
                        return Err(format!("could not commit the frame, nothing acknowledged: {e}"));
                    }
                    for (i, a) in then.into_iter().enumerate() {
                        queue.insert(i, a);
                    }
                }
                Action::Send { frame, what } => {
                    io.send(&frame).await.map_err(|e| format!("sending the {what}: {e}"))?;
                }
                Action::Online { vin } => {
                    tracing::info!(vin, "GB/T 32960 vehicle logged in");
                    if let Err(e) = ctx.plane.device_online(Protocol::Gbt32960, &vin).await {
                        tracing::warn!(vin, "queued commands not delivered: {e}");
                    }
                }
                Action::Offline { vin } => {
                    tracing::info!(vin, "GB/T 32960 vehicle logged out");
                    self.unclaim(ctx).await;
                }
                Action::Complete { id, outcome } => {
                    if let Err(e) = ctx.plane.complete(id, outcome).await {
                        tracing::warn!(id, "command result not stored: {e}");
                    }
                }
                Action::Release { id } => self.release(id, ctx).await,
                Action::Close(reason) => return Err(reason.to_string()),
            }
        }
        Ok(())
    }

    /// Takes the VIN for this connection, unless the certificate names another vehicle or the
    /// connection may not replace the one holding it (`Err` closes: no login reply).
    fn claim(&mut self, vin: String, ctx: &Ctx) -> Result<(), String> {
        let limits = &ctx.metrics.limits;
        let bound = match self.identity.binding(ctx.settings.bind_identity, &[&vin]) {
            Binding::Mismatch => {
                limits
                    .identity_mismatch_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(format!(
                    "the client certificate ({}) does not name VIN {vin}",
                    self.identity.names.join(", ")
                ));
            }
            Binding::Bound => true,
            Binding::Unbound => false,
        };
        let Some(claim) = ctx
            .registry
            .claim_as(&vin, self.id, bound, ctx.settings.replace == Replace::Allow)
        else {
            limits
                .replace_refused_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(format!(
                "VIN {vin} is held by another connection this {} login may not replace",
                if bound { "bound" } else { "unbound" }
            ));
        };
        self.commands = Some(claim.commands);
        self.replaced = Some(claim.replaced);
        self.vin = Some(vin);
        Ok(())
    }

    /// Leaves the registry and gives back the commands still in the channel.
    async fn unclaim(&mut self, ctx: &Ctx) {
        if let Some(mut rx) = self.commands.take() {
            if let Some(vin) = &self.vin {
                ctx.registry.release(vin, self.id);
            }
            rx.close();
            while let Ok(command) = rx.try_recv() {
                self.release(command.id, ctx).await;
            }
        }
        self.replaced = None;
    }

    async fn release(&mut self, id: i64, ctx: &Ctx) {
        self.released_any = true;
        if let Err(e) = ctx.plane.release(id).await {
            tracing::warn!(id, "command not given back to the queue: {e}");
        }
    }

    /// End of the connection: every held command goes back to the plane's queue.
    async fn finish(&mut self, ctx: &Ctx) {
        for action in self.session.release_all() {
            if let Action::Release { id } = action {
                self.release(id, ctx).await;
            }
        }
        self.unclaim(ctx).await;
        // A newer connection of the same vehicle may have asked for its queue before these
        // commands were given back; ask again so they reach it now rather than at its next login.
        if let Some(vin) = &self.vin {
            if self.released_any && ctx.registry.is_online(vin) {
                if let Err(e) = ctx.plane.device_online(Protocol::Gbt32960, vin).await {
                    tracing::warn!(vin, "released commands not redelivered: {e}");
                }
            }
        }
    }
}

async fn cancelled(token: &Option<CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<DeviceCommand>>) -> Option<DeviceCommand> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
