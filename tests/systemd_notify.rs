//! systemd's notify protocol against the real binary: the test owns the `NOTIFY_SOCKET` datagram
//! socket and sets `WATCHDOG_USEC` (1 s) and `WATCHDOG_PID` as systemd does. The binary sends
//! `READY=1`, then `WATCHDOG=1` at half the period while its store commits. Another process
//! (the `sqlite3` shell) holding `BEGIN EXCLUSIVE` on the database wedges the store writer from
//! outside: the pings stop (systemd would restart the unit); once the lock is released they
//! resume. `STOPPING=1` on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

/// Collects every datagram on the notify socket until the socket's owner is dropped.
fn listen(socket: UnixDatagram) -> Seen {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline && Arc::strong_count(&sink) > 1 {
            if let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in text.lines() {
                    sink.lock().unwrap().push((Instant::now(), line.to_string()));
                }
            }
        }
    });
    seen
}

fn count(seen: &Seen, what: &str, from: Instant, to: Instant) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(t, l)| l == what && *t >= from && *t < to)
        .count()
}

async fn wait_for(seen: &Seen, what: &str, after: Instant) -> Instant {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some((t, _)) = seen.lock().unwrap().iter().find(|(t, l)| l == what && *t >= after) {
            return *t;
        }
        assert!(Instant::now() < deadline, "no {what} within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary under test; killed (and its log shown when the test failed) when dropped.
struct Edge {
    child: Child,
    log: PathBuf,
}

impl Drop for Edge {
    #[allow(clippy::print_stdout, reason = "a failed test shows the binary's log")]
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            println!(
                "roadedge log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A process holding SQLite's write lock on `db` until released: the `sqlite3` shell
/// (`scripts/test` installs it), reading its commands from a pipe the test keeps open.
struct Locker(Child);

impl Locker {
    fn hold(db: &std::path::Path) -> Locker {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sqlite3 shell runs (scripts/test installs it)");
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b".timeout 30000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "the lock holder did not get the lock");
        Locker(child)
    }

    /// Ends the transaction, closes the shell's input and waits for it to exit.
    fn release(mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            stdin.write_all(b"ROLLBACK;\n").unwrap();
        }
        let status = self.0.wait().unwrap();
        assert!(status.success(), "the lock holder failed");
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        if self.0.stdin.is_some() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_watchdog_pings_that_stop_while_another_process_locks_the_store_and_resume_after() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let broker = Mosquitto::start(dir.path(), &pki);
    let config = write_config(dir.path(), &pki, &broker.url(), "", "64MiB");
    let socket_path = dir.path().join("notify.sock");
    let seen = listen(UnixDatagram::bind(&socket_path).unwrap());
    let log = dir.path().join("edge.log");
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run -c \"$1\""])
        .arg(env!("CARGO_BIN_EXE_roadedge"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start roadedge");
    let mut edge = Edge { child, log };
    let start = Instant::now();
    let ready = wait_for(&seen, "READY=1", start).await;

    // Healthy: a ping every half period (0.5 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healthy = count(&seen, "WATCHDOG=1", ready, Instant::now());
    assert!(healthy >= 4, "{healthy} pings in the first 3 s");

    // Wedged from outside: commits cannot begin while the other process holds the write lock.
    let locker = Locker::hold(&dir.path().join("edge.db"));
    let locked = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // One ping whose commit was already under way may still arrive just after the lock.
    let wedged_from = locked + Duration::from_millis(800);
    let wedged = count(&seen, "WATCHDOG=1", wedged_from, Instant::now());
    assert_eq!(wedged, 0, "pings went on while the store could not commit");
    let log_text = std::fs::read_to_string(&edge.log).unwrap();
    assert!(log_text.contains("withholding the watchdog ping"), "{log_text}");

    locker.release();
    let released = Instant::now();
    let resumed = wait_for(&seen, "WATCHDOG=1", released).await;
    println_resumed(resumed - released);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = count(&seen, "WATCHDOG=1", released, Instant::now());
    assert!(after >= 3, "{after} pings in the 2 s after the lock was released");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(edge.child.id().to_string())
        .status();
    let stopping = wait_for(&seen, "STOPPING=1", released).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while edge.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stopping > resumed);
}

#[allow(clippy::print_stdout, reason = "the figure the report quotes")]
fn println_resumed(after: Duration) {
    println!("watchdog pings resumed {after:?} after the lock was released");
}
