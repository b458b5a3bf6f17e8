//! TCP/TLS listener shared by the device servers: a connection cap, a TLS handshake with a
//! deadline (client certificates required when the server config says so), per-connection tasks,
//! and graceful shutdown. With `allow_plain`, a TLS port also takes plain TCP (told apart by the
//! first byte: a TLS handshake record starts with 0x16, no device protocol's frame does).
//!
//! The identities of a verified client certificate travel with the connection
//! ([`PeerIdentity`]) so the gateway can bind the device's claimed identity to them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::ProtocolCounters;

/// A byte stream a connection task reads frames from.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// An accepted (and, with TLS, handshaken) connection.
pub struct Accepted {
    pub stream: Box<dyn ByteStream>,
    pub peer: SocketAddr,
    /// Whether the peer presented a verified client certificate.
    pub client_certificate: bool,
    /// What the peer's certificate says it is.
    pub identity: PeerIdentity,
}

/// The identities of the peer's verified client certificate (none without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// A verified client certificate was presented.
    pub certificate: bool,
    /// Its CN and SANs.
    pub names: Vec<String>,
}

/// How a claimed identity relates to the connection's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The certificate names the claimed identity.
    Bound,
    /// No binding applies (binding off, or a connection without a certificate where the port
    /// allows those).
    Unbound,
    /// Binding is on and the certificate names someone else: the session must close.
    Mismatch,
}

impl PeerIdentity {
    /// Binds `claimed` (a VIN, a phone, a reader serial or id) when `bind_identity` is on.
    /// Names compare without case; any of `claimed` may match.
    pub fn binding(&self, bind_identity: bool, claimed: &[&str]) -> Binding {
        if !bind_identity || !self.certificate {
            return Binding::Unbound;
        }
        let matches = self.names.iter().any(|n| {
            claimed
                .iter()
                .any(|c| !c.is_empty() && n.trim().eq_ignore_ascii_case(c.trim()))
        });
        if matches {
            Binding::Bound
        } else {
            Binding::Mismatch
        }
    }
}

/// Listener settings.
#[derive(Clone)]
pub struct ListenerSettings {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Name used in logs (`gbt32960`, `jt808`, `gbt37987`).
    pub protocol: &'static str,
    /// With TLS: also take plain TCP connections (unbound).
    pub allow_plain: bool,
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Binds `addr`; separate from [`serve`] so callers (and tests) learn the bound address first.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until `shutdown`, running `handle` for each; then waits (at most 5 s) for
/// the connection tasks, which are expected to watch the same token, and aborts the rest.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    settings: ListenerSettings,
    counters: Arc<ProtocolCounters>,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(Accepted) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let acceptor = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut tasks = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(protocol = settings.protocol, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(protocol = settings.protocol, %peer, "connection limit {} reached; refused", settings.max_connections);
            counters.refused_total.fetch_add(1, Relaxed);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handle = handle.clone();
        let acceptor = acceptor.clone();
        let counters = counters.clone();
        let settings = settings.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let Some(accepted) = handshake(tcp, peer, acceptor, &settings, &counters).await else {
                return;
            };
            counters.connections.fetch_add(1, Relaxed);
            handle(accepted).await;
            counters.connections.fetch_sub(1, Relaxed);
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                tasks.abort_all();
                break;
            }
        }
    }
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    settings: &ListenerSettings,
    counters: &ProtocolCounters,
) -> Option<Accepted> {
    let plain = |tcp: TcpStream| Accepted {
        stream: Box::new(tcp),
        peer,
        client_certificate: false,
        identity: PeerIdentity::default(),
    };
    let Some(acceptor) = acceptor else {
        return Some(plain(tcp));
    };
    if settings.allow_plain {
        let mut first = [0u8; 1];
        match tokio::time::timeout(settings.handshake_timeout, tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] != TLS_HANDSHAKE_RECORD => return Some(plain(tcp)),
            Ok(Ok(1)) => {}
            _ => return None,
        }
    }
    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let certs = tls.get_ref().1.peer_certificates();
            let client_certificate = certs.is_some_and(|c| !c.is_empty());
            let names = certs
                .and_then(|c| c.first())
                .map(|leaf| crate::tls::certificate_identities(leaf))
                .unwrap_or_default();
            Some(Accepted {
                stream: Box::new(tls),
                peer,
                client_certificate,
                identity: PeerIdentity {
                    certificate: client_certificate,
                    names,
                },
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(protocol = settings.protocol, %peer, "TLS handshake refused: {e}");
            counters.handshake_failures.fetch_add(1, Relaxed);
            None
        }
        Err(_) => {
            tracing::warn!(protocol = settings.protocol, %peer, "TLS handshake timed out");
            counters.handshake_failures.fetch_add(1, Relaxed);
            None
        }
    }
}
