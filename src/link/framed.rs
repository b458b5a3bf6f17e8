//! Buffered frame I/O over any byte stream (TCP, TLS, serial): reads into a bounded buffer, asks
//! the protocol's pure decoder for frames, enforces the idle timeout and counts frames and bytes.
//! The bytes a connection holds of incomplete frames are drawn from its protocol's global budget
//! (`max_buffered_bytes`): a connection that would take it past the ceiling is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::ByteBudget;
use crate::metrics::ProtocolCounters;

/// A protocol's stream decoder: `Ok(None)` = need more bytes, `Err` = a corrupt frame was
/// consumed (the stream goes on).
pub trait FrameDecoder: Send {
    type Frame: Send;
    type Error: std::fmt::Display + Send;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Frame>, Self::Error>;
}

/// What ended a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("peer closed the connection")]
    Closed,
    #[error("no frame for {0:?}")]
    Idle(Duration),
    #[error("{0} bytes buffered without a complete frame")]
    Overflow(usize),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("write timed out")]
    WriteTimeout,
    #[error("the protocol's connections together buffer their limit of incomplete frames")]
    BudgetExhausted,
}

/// Outcome of one read step.
pub enum Read<F, E> {
    Frame(F),
    /// A corrupt frame (counted in `frames_bad`); the caller decides whether to answer it.
    Bad(E),
}

/// Frame reader/writer with limits.
pub struct FramedIo<S, D> {
    stream: S,
    decoder: D,
    buf: BytesMut,
    max_buffer: usize,
    idle: Duration,
    counters: Arc<ProtocolCounters>,
    eof: bool,
    /// The protocol's global budget of buffered bytes, and what this connection holds of it.
    budget: Option<Arc<ByteBudget>>,
    accounted: u64,
}

/// Bytes requested per read; frames larger than this arrive over several reads.
const READ_CHUNK: usize = 4096;

/// Slow readers on the other side must not stall the connection task forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: AsyncRead + AsyncWrite + Unpin + Send, D: FrameDecoder> FramedIo<S, D> {
    /// `max_buffer` bounds the bytes held while a frame is incomplete (larger than the decoder's
    /// own frame cap); `idle` closes a link that sends nothing.
    pub fn new(stream: S, decoder: D, max_buffer: usize, idle: Duration, counters: Arc<ProtocolCounters>) -> Self {
        FramedIo {
            stream,
            decoder,
            buf: BytesMut::new(),
            max_buffer,
            idle,
            counters,
            eof: false,
            budget: None,
            accounted: 0,
        }
    }

    /// Draws the buffered bytes from `budget`, shared by all connections of the protocol.
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Brings what this connection holds of the budget to its buffer's length; `false` when the
    /// budget cannot cover it.
    fn account(&mut self) -> bool {
        let Some(budget) = &self.budget else {
            return true;
        };
        let held = self.buf.len() as u64;
        if held > self.accounted {
            if !budget.try_take(held - self.accounted) {
                return false;
            }
        } else {
            budget.give(self.accounted - held);
        }
        self.accounted = held;
        true
    }

    /// The next frame or corrupt-frame report. Cancel-safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> Result<Read<D::Frame, D::Error>, LinkError> {
        loop {
            let decoded = self.decoder.decode(&mut self.buf);
            // Consumed bytes go back to the budget.
            self.account();
            match decoded {
                Ok(Some(frame)) => {
                    self.counters
                        .frames_in
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Read::Frame(frame));
                }
                Err(e) => {
                    self.counters
                        .frames_bad
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Read::Bad(e));
                }
                Ok(None) => {}
            }
            if self.eof {
                return Err(LinkError::Closed);
            }
            if self.buf.len() >= self.max_buffer {
                return Err(LinkError::Overflow(self.buf.len()));
            }
            // Read at most what the buffer may still hold, growing it in small steps: thousands
            // of mostly idle connections must not each pin a large buffer.
            let room = (self.max_buffer - self.buf.len()).min(READ_CHUNK);
            if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
                self.buf = BytesMut::new();
            }
            self.buf.reserve(room);
            let mut limited = (&mut self.stream).take(room as u64);
            let read = tokio::time::timeout(self.idle, limited.read_buf(&mut self.buf)).await;
            match read {
                Err(_) => return Err(LinkError::Idle(self.idle)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(n)) => {
                    self.counters
                        .bytes_in
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    if !self.account() {
                        self.counters
                            .buffer_limit_closed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(LinkError::BudgetExhausted);
                    }
                }
            }
        }
    }

    /// Writes one encoded frame.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            self.stream.write_all(frame).await?;
            self.stream.flush().await
        })
        .await
        {
            Err(_) => Err(LinkError::WriteTimeout),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => {
                self.counters
                    .frames_out
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Changes the idle timeout (e.g. a shorter one before login).
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    pub fn decoder_mut(&mut self) -> &mut D {
        &mut self.decoder
    }

    /// Closes the write side (best effort).
    pub async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
}

impl<S, D> Drop for FramedIo<S, D> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.accounted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines ending in `\n`; a line starting with `!` is "corrupt".
    struct Lines;
    impl FrameDecoder for Lines {
        type Frame = String;
        type Error = String;
        fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, String> {
            let Some(i) = buf.iter().position(|b| *b == b'\n') else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&buf.split_to(i + 1)[..i]).to_string();
            if line.starts_with('!') {
                Err(line)
            } else {
                Ok(Some(line))
            }
        }
    }

    fn counters() -> Arc<ProtocolCounters> {
        Arc::default()
    }

    #[tokio::test]
    async fn frames_split_and_merged_across_reads_are_delivered_in_order() {
        let (mut a, b) = tokio::io::duplex(64);
        let c = counters();
        let mut io = FramedIo::new(b, Lines, 1024, Duration::from_secs(5), c.clone());
        tokio::spawn(async move {
            a.write_all(b"one\ntw").await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            a.write_all(b"o\n!bad\nthree\n").await.unwrap();
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            match io.next().await.unwrap() {
                Read::Frame(f) => got.push(f),
                Read::Bad(e) => got.push(format!("bad:{e}")),
            }
        }
        assert_eq!(got, ["one", "two", "bad:!bad", "three"]);
        assert_eq!(c.frames_bad.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(matches!(io.next().await, Err(LinkError::Closed)));
    }

    #[tokio::test]
    async fn a_peer_that_never_ends_a_frame_hits_the_buffer_limit() {
        let (mut a, b) = tokio::io::duplex(4096);
        let mut io = FramedIo::new(b, Lines, 100, Duration::from_secs(5), counters());
        tokio::spawn(async move {
            let _ = a.write_all(&[b'x'; 1000]).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert!(matches!(io.next().await, Err(LinkError::Overflow(100))));
    }

    #[tokio::test]
    async fn connections_that_together_buffer_past_the_global_budget_are_closed() {
        let budget = Arc::new(ByteBudget::new(1500));
        let c = counters();
        let (mut a1, b1) = tokio::io::duplex(4096);
        let (mut a2, b2) = tokio::io::duplex(4096);
        let mut first = FramedIo::new(b1, Lines, 4096, Duration::from_secs(5), c.clone()).with_budget(budget.clone());
        let mut second = FramedIo::new(b2, Lines, 4096, Duration::from_secs(5), c.clone()).with_budget(budget.clone());
        a1.write_all(&[b'x'; 1000]).await.unwrap();
        a1.write_all(b"\n").await.unwrap();
        a2.write_all(&[b'y'; 1000]).await.unwrap();
        // The first holds its 1000 bytes until the line ends; the second cannot get another 1000.
        let r1 = tokio::time::timeout(Duration::from_secs(2), first.next())
            .await
            .unwrap();
        assert!(matches!(r1, Ok(Read::Frame(_))));
        assert_eq!(budget.used(), 0, "a delivered frame gives its bytes back");
        a1.write_all(&[b'z'; 1200]).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), first.next()).await;
        let r2 = tokio::time::timeout(Duration::from_secs(2), second.next())
            .await
            .unwrap();
        assert!(
            matches!(r2, Err(LinkError::BudgetExhausted)),
            "the second was not closed"
        );
        assert_eq!(c.buffer_limit_closed.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0, "closed connections give their bytes back");
    }

    #[tokio::test]
    async fn a_silent_peer_is_closed_after_the_idle_timeout() {
        let (_a, b) = tokio::io::duplex(64);
        let mut io = FramedIo::new(b, Lines, 100, Duration::from_millis(50), counters());
        assert!(matches!(io.next().await, Err(LinkError::Idle(_))));
    }
}
