//! Start-up faults of the database, against the real binary (`roadedge run`): a database locked
//! by another process, a second instance on the same database, a file the service may not read,
//! and a truly corrupt file. Only the last is moved aside; the others are waited for (with a
//! clear log line) and, if they persist, fail the start with exit 1 so systemd restarts the unit.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration whose uplink points at a closed port (the appliance runs without a broker).
fn config(dir: &Path) -> PathBuf {
    let text = format!(
        "edge: {{id: cab-1}}\nstorage: {{path: {}, max_bytes: 16MiB}}\nuplink: {{url: 'mqtt://127.0.0.1:{}'}}\nlogging: {{level: info}}\n",
        dir.join("edge.db").display(),
        free_port()
    );
    let path = dir.join("roadedge.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Edge {
    child: Child,
    log: PathBuf,
}

impl Edge {
    fn start(config: &Path, name: &str, as_nobody: bool) -> Edge {
        let log = config.with_file_name(format!("{name}.log"));
        let mut command = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_roadedge"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_roadedge"))
        };
        let child = command
            .args(["run", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start roadedge");
        Edge { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text`; false after `limit`.
    fn wait_log(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits for the exit code; `None` if still running after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit(Duration::from_secs(15))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moved_aside(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

/// A database the appliance made, holding one marker row it must keep.
fn make_database(dir: &Path) -> PathBuf {
    let config = config(dir);
    let edge = Edge::start(&config, "first", false);
    assert!(
        edge.wait_log("roadedge running", Duration::from_secs(20)),
        "the appliance did not start: {}",
        edge.log()
    );
    assert_eq!(edge.stop(), Some(0));
    let db = dir.join("edge.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("INSERT INTO kv(key, value) VALUES('marker', 'kept')", [])
        .unwrap();
    drop(conn);
    db
}

fn marker(db: &Path) -> Option<String> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("SELECT value FROM kv WHERE key='marker'", [], |r| r.get(0))
        .ok()
}

/// `sqlite3` holding an exclusive write transaction on `db` for `hold`.
fn hold_write_lock(db: &Path, hold: Duration) -> Child {
    let script = format!(
        "(echo 'PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO kv(key, value) VALUES(\"holder\", \"x\");'; sleep {}; echo 'ROLLBACK;') | sqlite3 {}",
        hold.as_secs(),
        db.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sqlite3 (scripts/test installs it)")
}

#[test]
fn a_database_locked_by_another_process_during_start_is_waited_for_and_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_database(dir.path());
    let mut holder = hold_write_lock(&db, Duration::from_secs(9));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let edge = Edge::start(&dir.path().join("roadedge.yaml"), "locked", false);
    assert!(
        edge.wait_log("left in place, retrying", Duration::from_secs(20)),
        "no retry line: {}",
        edge.log()
    );
    assert!(
        edge.wait_log("roadedge running", Duration::from_secs(40)),
        "the appliance did not start once the lock was released: {}",
        edge.log()
    );
    let waited = started.elapsed();
    println!("locked database: started after {waited:?} (lock held ~8.5 s after the start)");
    assert!(waited >= Duration::from_secs(5), "it did not wait for the lock");
    assert_eq!(edge.stop(), Some(0));
    let _ = holder.wait();
    assert!(moved_aside(dir.path()).is_empty(), "{:?}", moved_aside(dir.path()));
    assert_eq!(marker(&db).as_deref(), Some("kept"));
}

#[test]
fn a_second_instance_on_the_same_database_exits_with_1_and_the_first_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_database(dir.path());
    let config = dir.path().join("roadedge.yaml");
    let mut first = Edge::start(&config, "one", false);
    assert!(
        first.wait_log("roadedge running", Duration::from_secs(20)),
        "{}",
        first.log()
    );
    let mut second = Edge::start(&config, "two", false);
    let code = second.wait_exit(Duration::from_secs(40));
    let log = second.log();
    println!(
        "second instance: exit {code:?}; {}",
        log.lines().find(|l| l.contains("another roadedge")).unwrap_or("")
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("another roadedge instance holds the database"), "{log}");
    assert!(!log.contains("roadedge running"), "both instances ran: {log}");
    assert!(
        first.wait_exit(Duration::from_millis(200)).is_none(),
        "the first instance died"
    );
    assert_eq!(first.stop(), Some(0));
    assert!(moved_aside(dir.path()).is_empty());
    assert_eq!(marker(&db).as_deref(), Some("kept"));
}

#[test]
fn a_database_the_service_may_not_read_fails_the_start_and_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_database(dir.path());
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if root {
        // root reads everything: run the service as `nobody`, who may use the directory but not
        // the root-owned database file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(dir.path().join("roadedge.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
        for f in ["edge.db.lock", "edge.db.seq"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(if root { 0o600 } else { 0o000 })).unwrap();
    let mut edge = Edge::start(&dir.path().join("roadedge.yaml"), "unreadable", root);
    let code = edge.wait_exit(Duration::from_secs(60));
    let log = edge.log();
    println!(
        "unreadable database: exit {code:?}; {}",
        log.lines().find(|l| l.contains("permission")).unwrap_or("")
    );
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("permission denied"), "{log}");
    assert!(!log.contains("roadedge running"), "{log}");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(moved_aside(dir.path()).is_empty(), "{:?}", moved_aside(dir.path()));
    assert_eq!(marker(&db).as_deref(), Some("kept"));
}

#[test]
fn a_truly_corrupt_database_is_moved_aside_with_an_alarm_and_the_appliance_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let db = make_database(dir.path());
    let mut bytes = std::fs::read(&db).unwrap();
    // Keep the header (a real SQLite file) but wreck the pages behind it.
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("edge.db-wal"));
    let edge = Edge::start(&dir.path().join("roadedge.yaml"), "corrupt", false);
    assert!(
        edge.wait_log("roadedge running", Duration::from_secs(20)),
        "{}",
        edge.log()
    );
    assert_eq!(edge.stop(), Some(0));
    let moved = moved_aside(dir.path());
    println!("corrupt database: moved aside to {moved:?}");
    assert_eq!(moved.len(), 1, "{moved:?}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let alarm: String = conn
        .query_row(
            "SELECT payload FROM outbox WHERE topic = 'edge/cab-1/alarm' ORDER BY seq LIMIT 1",
            [],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .map(|p| String::from_utf8_lossy(&p).to_string())
        .unwrap();
    assert!(alarm.contains("store_corrupt") && alarm.contains("raised"), "{alarm}");
    assert!(marker(&db).is_none(), "a fresh database");
}
