//! A minimal TFTP (RFC 1350, read requests, octet mode) for firmware images: the edge serves one
//! file to one reader for one transfer (VersionDownload with ServerType 1 points the reader at it),
//! and the client side fetches a file (the reader simulator uses it).
//!
//! Owns: the wire format and the lock-step transfer with retransmission. Bounded: one transfer
//! per server, images up to 65535 blocks (no block-number wrap), every wait under a timeout.
//! Must not serve anything but the one file it was given.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::UdpSocket;

const RRQ: u16 = 1;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
/// Payload bytes per block.
pub const BLOCK: usize = 512;
/// Largest file one transfer carries.
pub const MAX_FILE: u64 = 65_535 * BLOCK as u64;
const RETRIES: u32 = 5;
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// TFTP failures.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no request within {0:?}")]
    NoRequest(Duration),
    #[error("the peer stopped answering at block {0}")]
    Stalled(u16),
    #[error("the peer reported error {code}: {message}")]
    Peer { code: u16, message: String },
    #[error("file of {0} bytes exceeds the {MAX_FILE}-byte transfer limit")]
    TooLarge(u64),
    #[error("malformed packet")]
    Malformed,
}

fn error_packet(code: u16, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + message.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(message.as_bytes());
    p.push(0);
    p
}

fn data_packet(block: u16, data: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + data.len());
    p.extend_from_slice(&DATA.to_be_bytes());
    p.extend_from_slice(&block.to_be_bytes());
    p.extend_from_slice(data);
    p
}

fn opcode(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.first()?, *packet.get(1)?]))
}

fn block_of(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
}

fn peer_error(packet: &[u8]) -> TftpError {
    let code = block_of(packet).unwrap_or(0);
    let text = packet.get(4..).unwrap_or_default();
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    TftpError::Peer {
        code,
        message: String::from_utf8_lossy(&text[..end]).into_owned(),
    }
}

/// Serves `path` under the name `name` for one transfer on `socket`, waiting at most `wait` for
/// the read request. Returns the bytes sent.
pub async fn serve_one(socket: UdpSocket, path: &Path, name: &str, wait: Duration) -> Result<u64, TftpError> {
    let size = tokio::fs::metadata(path).await?.len();
    if size > MAX_FILE {
        return Err(TftpError::TooLarge(size));
    }
    let mut buf = vec![0u8; 1024];
    let (client, request) = loop {
        let (n, from) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
            .await
            .map_err(|_| TftpError::NoRequest(wait))??;
        let packet = &buf[..n];
        if opcode(packet) != Some(RRQ) {
            let _ = socket.send_to(&error_packet(4, "only read requests"), from).await;
            continue;
        }
        let asked = packet[2..].split(|b| *b == 0).next().unwrap_or_default();
        if asked != name.as_bytes() {
            let _ = socket.send_to(&error_packet(1, "file not found"), from).await;
            continue;
        }
        break (from, packet.to_vec());
    };
    drop(request);
    let image = tokio::fs::read(path).await?;
    let mut sent = 0u64;
    // A file that is a whole number of blocks ends with an empty block.
    let blocks = image.len() / BLOCK + 1;
    for index in 0..blocks {
        let block = u16::try_from(index + 1).map_err(|_| TftpError::TooLarge(size))?;
        let chunk = &image[index * BLOCK..((index + 1) * BLOCK).min(image.len())];
        let packet = data_packet(block, chunk);
        let mut acked = false;
        for _ in 0..RETRIES {
            socket.send_to(&packet, client).await?;
            let deadline = tokio::time::Instant::now() + RETRY_AFTER;
            while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                let (n, from) = received?;
                let reply = &buf[..n];
                if from != client {
                    continue;
                }
                match opcode(reply) {
                    Some(ACK) if block_of(reply) == Some(block) => {
                        acked = true;
                        break;
                    }
                    Some(ERROR) => return Err(peer_error(reply)),
                    _ => {}
                }
            }
            if acked {
                break;
            }
        }
        if !acked {
            return Err(TftpError::Stalled(block));
        }
        sent += chunk.len() as u64;
    }
    Ok(sent)
}

/// Fetches `name` from the TFTP server at `server` (at most `max_bytes`).
pub async fn fetch(server: SocketAddr, name: &str, max_bytes: u64) -> Result<Vec<u8>, TftpError> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| TftpError::Malformed)?
    } else {
        "[::]:0".parse().map_err(|_| TftpError::Malformed)?
    };
    let socket = UdpSocket::bind(bind).await?;
    let mut request = Vec::with_capacity(name.len() + 10);
    request.extend_from_slice(&RRQ.to_be_bytes());
    request.extend_from_slice(name.as_bytes());
    request.push(0);
    request.extend_from_slice(b"octet\0");
    let mut image = Vec::new();
    let mut expected: u16 = 1;
    let mut last_sent = request;
    let mut peer = server;
    let mut buf = vec![0u8; 4 + BLOCK + 64];
    loop {
        let mut got = None;
        for _ in 0..RETRIES {
            socket.send_to(&last_sent, peer).await?;
            let deadline = tokio::time::Instant::now() + RETRY_AFTER;
            while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                let (n, from) = received?;
                if from.ip() != server.ip() {
                    continue;
                }
                let packet = &buf[..n];
                match opcode(packet) {
                    Some(DATA) if block_of(packet) == Some(expected) => {
                        // The server's transfer port (RFC 1350 TID) may differ from the request port.
                        peer = from;
                        got = Some(packet[4..].to_vec());
                        break;
                    }
                    Some(ERROR) => return Err(peer_error(packet)),
                    _ => {}
                }
            }
            if got.is_some() {
                break;
            }
        }
        let data = got.ok_or(TftpError::Stalled(expected))?;
        if image.len() as u64 + data.len() as u64 > max_bytes {
            let _ = socket.send_to(&error_packet(3, "too large"), peer).await;
            return Err(TftpError::TooLarge(image.len() as u64 + data.len() as u64));
        }
        image.extend_from_slice(&data);
        let mut ack = Vec::with_capacity(4);
        ack.extend_from_slice(&ACK.to_be_bytes());
        ack.extend_from_slice(&expected.to_be_bytes());
        socket.send_to(&ack, peer).await?;
        if data.len() < BLOCK {
            return Ok(image);
        }
        last_sent = ack;
        expected = expected.checked_add(1).ok_or(TftpError::TooLarge(image.len() as u64))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_of_whole_and_partial_blocks_arrives_intact() {
        for size in [0usize, 100, BLOCK, 3 * BLOCK + 7] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fw.bin");
            let image: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &image).unwrap();
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let server = tokio::spawn(async move { serve_one(socket, &path, "fw.bin", Duration::from_secs(5)).await });
            let got = tokio::time::timeout(Duration::from_secs(10), fetch(addr, "fw.bin", MAX_FILE))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, image, "size {size}");
            let sent = tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(sent, size as u64);
        }
    }

    #[tokio::test]
    async fn another_file_name_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"image").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let server = tokio::spawn(async move { serve_one(socket, &path, "fw.bin", Duration::from_secs(2)).await });
        let err = tokio::time::timeout(Duration::from_secs(10), fetch(addr, "../secret", MAX_FILE))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, TftpError::Peer { code: 1, .. }), "{err}");
        let outcome = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(outcome, Err(TftpError::NoRequest(_))));
    }
}
