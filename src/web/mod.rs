//! The local management web page (CONTRACT 6): a warp service behind our own accept loop, on its
//! own single-threaded runtime so that no amount of web traffic takes more than one core from
//! the data path. Static files are embedded in the binary (`assets`); the JSON API (`api`) reads
//! the services directly and sends every write through the command plane
//! ([`CommandPlane::submit_and_wait`]), the same door the MQTT commands use.
//!
//! Bounds, all global: connections at once ([`MAX_CONNECTIONS`], [`MAX_PER_ADDRESS`]; beyond,
//! a connection waits up to [`CONNECTION_WAIT`] and is then answered 503), headers within
//! [`HEADER_TIMEOUT`] (slow-loris), bodies by size and time (`api`), live event streams, command
//! jobs, sessions and login failures (`auth`).
//!
//! Owns: the listener, TLS, the connection limits. Must not: hold logic of the services it shows.

pub mod api;
pub mod assets;
pub mod auth;
pub mod live;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hyper::service::Service as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::command::CommandPlane;
use crate::config::WebConfig;
use crate::metrics::Metrics;
use crate::ops::alarms::Alarms;
use crate::reader::ReaderService;
use crate::store::Store;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections of one client address served at once (a slow client cannot take every slot).
pub const MAX_PER_ADDRESS: usize = 64;
/// Connections that may wait for a slot; beyond, they are answered 503 at once.
pub const MAX_WAITING: usize = 1024;
/// How long a connection waits for a slot before it is answered 503.
pub const CONNECTION_WAIT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this time (also closes idle keep-alive connections).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes must finish within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the page shows and steers: the appliance's services.
#[derive(Clone)]
pub struct Services {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub plane: Arc<CommandPlane>,
    pub alarms: Arc<Alarms>,
    pub readers: Option<Arc<ReaderService>>,
    /// The identity registry (plates, VINs, phones, tags).
    pub registry: Arc<crate::fusion::Registry>,
    /// Updates of roadedge itself (the Update page).
    pub ota: Arc<crate::ops::ota::OtaService>,
    /// Vehicle data fusion (the Passages page), when `fusion` is configured.
    pub fusion: Option<Arc<crate::fusion::FusionService>>,
    /// The configuration file (the Configuration page).
    pub config: Arc<crate::ops::config_apply::ConfigService>,
    /// Sessions kept across in-process restarts of the core.
    pub sessions: Arc<auth::SessionCarry>,
    /// JT/T 808 terminal provisioning (when `jt808` is configured).
    pub jt808: Option<Arc<crate::gateway::jt808::Provisioning>>,
    /// Whether the vehicle gateways are configured (the vehicles page says so when not).
    pub gbt32960_enabled: bool,
    pub jt808_enabled: bool,
    /// The runtime the services run on: writes are spawned there, not on the web's own thread.
    pub core: tokio::runtime::Handle,
}

/// The client's address, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A started web server.
pub struct WebServer {
    /// The bound address (useful when the configuration asked for port 0).
    pub local_addr: SocketAddr,
    /// Ends once the server has stopped after `shutdown`.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `config.listen` and serves the page on a thread of its own until `shutdown`.
pub async fn start(config: &WebConfig, services: Services, shutdown: CancellationToken) -> anyhow::Result<WebServer> {
    let tls = match &config.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            crate::tls::server_config(&t.cert_file, &t.key_file, None, false).context("web.tls")?,
        ))),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("web.listen: binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let std_listener = listener.into_std()?;
    if config.users.is_empty() {
        tracing::warn!("web: no users in web.users, nobody can log in (make a password hash with `roadedge passwd`)");
    }
    let state = api::State::new(config, services, tls.is_some(), shutdown.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("web".into())
        .spawn(move || {
            lower_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(4)
                .thread_name("web-blocking")
                .on_thread_start(lower_priority)
                .build();
            match runtime {
                Ok(rt) => {
                    rt.block_on(async move {
                        state.spawn_live();
                        match TcpListener::from_std(std_listener) {
                            Ok(listener) => serve(listener, tls, state.clone(), shutdown).await,
                            Err(e) => tracing::error!("web: cannot use the listener: {e}"),
                        }
                        state.keep_sessions();
                    });
                    // Reads still running on the blocking pool do not hold up the shutdown.
                    rt.shutdown_timeout(Duration::from_secs(1));
                }
                Err(e) => tracing::error!("web: cannot start the runtime: {e}"),
            }
            let _ = done_tx.send(());
        })
        .context("spawning the web thread")?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(url = %format!("{scheme}://{local_addr}/"), "web page served");
    let task = tokio::spawn(async move {
        let _ = done_rx.await;
    });
    Ok(WebServer { local_addr, task })
}

/// Per-address slots.
#[derive(Default)]
struct AddressSlots {
    slots: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl AddressSlots {
    fn for_address(&self, ip: IpAddr) -> Arc<Semaphore> {
        let Ok(mut s) = self.slots.lock() else {
            return Arc::new(Semaphore::new(MAX_PER_ADDRESS));
        };
        s.entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_PER_ADDRESS)))
            .clone()
    }

    /// Forgets an address nobody holds or waits for.
    fn tidy(&self, ip: IpAddr) {
        if let Ok(mut s) = self.slots.lock() {
            if s.get(&ip)
                .is_some_and(|sem| Arc::strong_count(sem) == 1 && sem.available_permits() == MAX_PER_ADDRESS)
            {
                s.remove(&ip);
            }
        }
    }
}

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<api::State>,
    shutdown: CancellationToken,
) {
    let global = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let addresses = Arc::new(AddressSlots::default());
    let waiting = Arc::new(AtomicUsize::new(0));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("web: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (global, addresses, waiting, state, tls, shutdown) = (
            global.clone(),
            addresses.clone(),
            waiting.clone(),
            state.clone(),
            tls.clone(),
            shutdown.clone(),
        );
        tracker.spawn(async move {
            let ip = peer.ip();
            let address = addresses.for_address(ip);
            let slots = acquire_slots(&address, &global, &waiting).await;
            drop(address);
            match slots {
                Some(permits) => {
                    state.metrics().web.connections.fetch_add(1, Relaxed);
                    serve_connection(stream, peer, tls, state.clone(), shutdown).await;
                    state.metrics().web.connections.fetch_sub(1, Relaxed);
                    drop(permits);
                }
                None => {
                    state.metrics().web.refused_total.fetch_add(1, Relaxed);
                    refuse(stream).await;
                }
            }
            addresses.tidy(ip);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("web: connections still open at shutdown were dropped");
    }
    tracing::info!("web page stopped");
}

/// A slot of the client's address and a global one: at once when free, else after waiting up to
/// [`CONNECTION_WAIT`] (at most [`MAX_WAITING`] connections wait).
async fn acquire_slots(
    address: &Arc<Semaphore>,
    global: &Arc<Semaphore>,
    waiting: &AtomicUsize,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    if let Ok(a) = address.clone().try_acquire_owned() {
        if let Ok(g) = global.clone().try_acquire_owned() {
            return Some((a, g));
        }
    }
    if waiting.fetch_add(1, Relaxed) >= MAX_WAITING {
        waiting.fetch_sub(1, Relaxed);
        return None;
    }
    let acquired = tokio::time::timeout(CONNECTION_WAIT, async {
        let a = address.clone().acquire_owned().await.ok()?;
        let g = global.clone().acquire_owned().await.ok()?;
        Some((a, g))
    })
    .await
    .ok()
    .flatten();
    waiting.fetch_sub(1, Relaxed);
    acquired
}

/// Answers a connection that found no slot: 503 without reading its request.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"the appliance's web server is at its connection limit","hint":"wait a few seconds and reload the page"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<api::State>,
    shutdown: CancellationToken,
) {
    match tls {
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => http(tls_stream, peer, state, shutdown).await,
            Ok(Err(e)) => tracing::debug!(%peer, "web: TLS handshake failed: {e}"),
            Err(_) => {
                state.metrics().web.slow_closed_total.fetch_add(1, Relaxed);
                tracing::debug!(%peer, "web: TLS handshake timed out");
            }
        },
        None => http(stream, peer, state, shutdown).await,
    }
}

async fn http<I>(io: I, peer: SocketAddr, state: Arc<api::State>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let warp_service = hyper_util::service::TowerToHyperService::new(warp::service(api::routes(state.clone())));
    let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        warp_service.call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .keep_alive(true);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(3), connection.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            state.metrics().web.slow_closed_total.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "web: connection closed: headers not received in time");
        } else {
            tracing::debug!(%peer, "web: connection ended: {e}");
        }
    }
}

/// The page's threads yield the CPU to the data path: under a flood of web requests the devices'
/// acknowledgements keep their pace (docs/BENCHMARKS.md, web page). Nice 10 on the calling thread
/// (Linux keeps the nice value per thread); a failure only costs that preference.
fn lower_priority() {
    // SAFETY: setpriority takes plain integers and changes only the calling thread's nice value.
    #[allow(unsafe_code)]
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if result != 0 {
        tracing::debug!(
            "web: could not lower the thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
