//! A plain HTTP/1.1 client over a real loopback socket, for the web API tests: exact bytes on
//! the wire (paths with `..`, forged headers, slow or oversized bodies), every await bounded.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A response as received.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The session cookie's value from `Set-Cookie`.
    pub fn session_cookie(&self) -> Option<String> {
        let c = self.header("set-cookie")?;
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == "roadedge_session").then(|| v.to_string())
    }
}

/// Where to send requests, and as whom.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    /// The local address to connect from (127.0.0.x tells clients apart for the login limiter).
    pub from: Option<std::net::IpAddr>,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub const LIMIT: Duration = Duration::from_secs(20);

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            from: None,
            cookie: None,
            csrf: None,
        }
    }

    pub fn from(mut self, ip: &str) -> Client {
        self.from = Some(ip.parse().unwrap());
        self
    }

    pub async fn connect(&self) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(ip) = self.from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        tokio::time::timeout(LIMIT, socket.connect(self.addr))
            .await
            .expect("connect within the limit")
            .expect("connect")
    }

    /// Sends one request (with the session cookie and CSRF token when set) and reads the answer.
    pub async fn send(&self, method: &str, path: &str, body: Option<&[u8]>, extra: &[(&str, &str)]) -> Response {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: roadedge_session={c}\r\n"));
        }
        if let Some(t) = &self.csrf {
            if method != "GET" && !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-csrf-token")) {
                head.push_str(&format!("X-CSRF-Token: {t}\r\n"));
            }
        }
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut stream = self.connect().await;
        let mut bytes = head.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        // The server may answer (413) and close before the whole body is written.
        let _ = tokio::time::timeout(LIMIT, stream.write_all(&bytes)).await;
        read_response(&mut stream).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        self.send("POST", path, Some(&serde_json::to_vec(body).unwrap()), &[])
            .await
    }

    /// Logs in; on success the client carries the session.
    pub async fn login(&mut self, user: &str, password: &str) -> Response {
        let r = self
            .post(
                "/api/login",
                &serde_json::json!({"username": user, "password": password}),
            )
            .await;
        if r.status == 200 {
            self.cookie = r.session_cookie();
            self.csrf = r.json()["csrf_token"].as_str().map(str::to_string);
        }
        r
    }
}

/// Reads a whole response (the server closes after it: `Connection: close`).
pub async fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw)).await;
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..pos]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = pos + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or_default();
    }
    out
}
