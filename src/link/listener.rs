//! TCP/TLS listener shared by the device servers: a connection cap, a TLS handshake with a
//! deadline (client certificates required when the server config says so), per-connection tasks,
//! and graceful shutdown.

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
}

/// Listener settings.
#[derive(Clone)]
pub struct ListenerSettings {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Name used in logs (`gbt32960`, `jt808`, `gbt37987`).
    pub protocol: &'static str,
}

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
    let Some(acceptor) = acceptor else {
        return Some(Accepted {
            stream: Box::new(tcp),
            peer,
            client_certificate: false,
        });
    };
    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let client_certificate = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            Some(Accepted {
                stream: Box::new(tls),
                peer,
                client_certificate,
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
