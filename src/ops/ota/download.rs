//! HTTPS download of an update into the staging area: bounded in size, resumable (`Range`),
//! with a stall timeout, refusing plain HTTP (also as a redirect target). Blocking (ureq over
//! rustls); the service runs it on the blocking pool.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// Connections tried for one download (a cut or stalled transfer resumes where it stopped).
pub const MAX_ATTEMPTS: usize = 4;

/// What a download needs.
#[derive(Clone)]
pub struct DownloadOptions {
    pub tls: Arc<rustls::ClientConfig>,
    /// Largest update accepted.
    pub max_bytes: u64,
    /// No byte for this long: the connection counts as stalled.
    pub stall_timeout: Duration,
    /// The whole download must finish within this.
    pub total_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DownloadError {
    #[error("only https:// URLs are accepted (got `{0}`)")]
    NotHttps(String),
    #[error("refused a redirect to `{0}`: updates are only fetched over https")]
    RedirectToPlain(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("the update is {size} bytes, more than ota.max_bytes ({max})")]
    Oversized { size: u64, max: u64 },
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the download stalled: no data for {0:?} ({1} bytes received), {MAX_ATTEMPTS} attempts")]
    Stalled(Duration, u64),
    #[error("the download was cut off {MAX_ATTEMPTS} times (last at {0} bytes): {1}")]
    Cut(u64, String),
    #[error("the download did not finish within {0:?}")]
    TooSlow(Duration),
    #[error("cannot reach the server: {0}")]
    Connect(String),
    #[error("writing the staged file failed: {0}")]
    Io(String),
}

/// Downloads `url` into `dest` (appending to what a previous attempt left there), calling
/// `progress(received, total)` as bytes arrive. Returns the file's size.
pub fn download(
    url: &str,
    dest: &Path,
    options: &DownloadOptions,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<u64, DownloadError> {
    if !url.to_ascii_lowercase().starts_with("https://") {
        return Err(DownloadError::NotHttps(url.to_string()));
    }
    let agent = ureq::AgentBuilder::new()
        .tls_config(options.tls.clone())
        .redirects(0)
        .timeout_connect(options.stall_timeout.min(Duration::from_secs(30)))
        .timeout_read(options.stall_timeout)
        .timeout_write(options.stall_timeout)
        .build();
    let started = Instant::now();
    let mut last_cut = String::new();
    let mut stalls = 0;
    for _attempt in 0..MAX_ATTEMPTS {
        if started.elapsed() > options.total_timeout {
            return Err(DownloadError::TooSlow(options.total_timeout));
        }
        let have = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        match attempt(&agent, url, dest, have, options, started, &mut progress) {
            Ok(size) => return Ok(size),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Stalled) => {
                stalls += 1;
                last_cut = format!("stalled for {:?}", options.stall_timeout);
                tracing::warn!(url, "OTA download stalled; resuming");
            }
            Err(Attempt::Cut(why)) => {
                tracing::warn!(url, "OTA download cut off ({why}); resuming");
                last_cut = why;
            }
        }
    }
    let have = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    if stalls == MAX_ATTEMPTS {
        return Err(DownloadError::Stalled(options.stall_timeout, have));
    }
    Err(DownloadError::Cut(have, last_cut))
}

enum Attempt {
    Fatal(DownloadError),
    Stalled,
    Cut(String),
}

fn io_is_stall(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
}

fn attempt(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    have: u64,
    options: &DownloadOptions,
    started: Instant,
    progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<u64, Attempt> {
    let mut target = url.to_string();
    let mut redirects = 0;
    let response = loop {
        let mut request = agent.get(&target);
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(416, _)) if have > 0 => {
                // What we have is already the whole file (or more): start over.
                let _ = std::fs::remove_file(dest);
                return Err(Attempt::Cut("the server refused the resume range".into()));
            }
            Err(ureq::Error::Status(code, _)) => return Err(Attempt::Fatal(DownloadError::Status(code))),
            Err(ureq::Error::Transport(t)) => {
                let text = t.to_string();
                if text.contains("timed out") || text.contains("Timeout") {
                    return Err(Attempt::Stalled);
                }
                if t.kind() == ureq::ErrorKind::Dns || t.kind() == ureq::ErrorKind::ConnectionFailed {
                    return Err(Attempt::Fatal(DownloadError::Connect(text)));
                }
                return Err(Attempt::Cut(text));
            }
        };
        if (300..400).contains(&response.status()) {
            let Some(location) = response.header("location") else {
                return Err(Attempt::Fatal(DownloadError::Status(response.status())));
            };
            let next = resolve(&target, location);
            if !next.to_ascii_lowercase().starts_with("https://") {
                return Err(Attempt::Fatal(DownloadError::RedirectToPlain(next)));
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(Attempt::Fatal(DownloadError::TooManyRedirects));
            }
            target = next;
            continue;
        }
        break response;
    };
    let status = response.status();
    let length: Option<u64> = response.header("content-length").and_then(|l| l.trim().parse().ok());
    let (offset, total) = match status {
        206 => {
            // Content-Range: bytes START-END/TOTAL
            let range = response.header("content-range").unwrap_or("");
            let start = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok());
            let total = range.rsplit('/').next().and_then(|t| t.trim().parse::<u64>().ok());
            if start != Some(have) {
                let _ = std::fs::remove_file(dest);
                return Err(Attempt::Cut(format!("the server resumed at the wrong place ({range})")));
            }
            (have, total.or(length.map(|l| l + have)))
        }
        200 => (0, length),
        other => return Err(Attempt::Fatal(DownloadError::Status(other))),
    };
    if let Some(total) = total {
        if total > options.max_bytes {
            let _ = std::fs::remove_file(dest);
            return Err(Attempt::Fatal(DownloadError::Oversized {
                size: total,
                max: options.max_bytes,
            }));
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .append(offset > 0)
        .open(dest)
        .map_err(|e| Attempt::Fatal(DownloadError::Io(e.to_string())))?;
    let mut reader = response
        .into_reader()
        .take(options.max_bytes + 1 - offset.min(options.max_bytes));
    let mut received = offset;
    let mut buf = vec![0u8; 64 * 1024];
    progress(received, total);
    loop {
        if started.elapsed() > options.total_timeout {
            return Err(Attempt::Fatal(DownloadError::TooSlow(options.total_timeout)));
        }
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if io_is_stall(&e) => {
                let _ = file.sync_data();
                return Err(Attempt::Stalled);
            }
            Err(e) => {
                let _ = file.sync_data();
                return Err(Attempt::Cut(e.to_string()));
            }
        };
        if n == 0 {
            break;
        }
        received += n as u64;
        if received > options.max_bytes {
            drop(file);
            let _ = std::fs::remove_file(dest);
            return Err(Attempt::Fatal(DownloadError::Oversized {
                size: received,
                max: options.max_bytes,
            }));
        }
        file.write_all(&buf[..n])
            .map_err(|e| Attempt::Fatal(DownloadError::Io(e.to_string())))?;
        progress(received, total);
    }
    file.sync_all()
        .map_err(|e| Attempt::Fatal(DownloadError::Io(e.to_string())))?;
    if let Some(total) = total {
        if received < total {
            return Err(Attempt::Cut(format!(
                "connection closed at {received} of {total} bytes"
            )));
        }
    }
    Ok(received)
}

/// Resolves a `Location` against the URL it came from (absolute, scheme-relative or path).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(net) = location.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or(base);
        format!("{dir}/{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_resolve_against_the_url() {
        assert_eq!(resolve("https://a:1/x/y", "http://b/z"), "http://b/z");
        assert_eq!(resolve("https://a:1/x/y", "/z"), "https://a:1/z");
        assert_eq!(resolve("https://a:1/x/y", "z"), "https://a:1/x/z");
        assert_eq!(resolve("https://a:1/x/y", "//c/z"), "https://c/z");
    }
}
