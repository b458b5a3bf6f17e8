//! Opening the database: pragmas, the start-up integrity check (a corrupt file is moved aside,
//! CONTRACT 5.5) and versioned schema migrations (`PRAGMA user_version`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Each entry migrates from version `index` to `index + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // v1: outbox, downstream commands, small key/value state.
    "CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        device     TEXT    NOT NULL,
        topic      TEXT    NOT NULL,
        class      INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        payload    BLOB    NOT NULL
    );
    CREATE INDEX outbox_by_device ON outbox(device, seq);
    CREATE INDEX outbox_by_class ON outbox(class, seq);
    CREATE TABLE commands (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        target      TEXT    NOT NULL,
        request_id  TEXT    NOT NULL,
        payload     BLOB    NOT NULL,
        state       TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        finished_ms INTEGER
    );
    CREATE INDEX commands_open ON commands(state, target);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // v2: GB/T 37987 readers: the desired rules per reader (codec JSON of each SelectSpec /
    // AccessSpec) and the active-alarm table (see reader/db.rs).
    "CREATE TABLE reader_rules (
        reader     TEXT    NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('select', 'access')),
        spec_id    INTEGER NOT NULL,
        spec       TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (reader, kind, spec_id)
    );
    CREATE TABLE reader_alarms (
        reader     TEXT    NOT NULL,
        alarm_id   INTEGER NOT NULL,
        alarm_code INTEGER NOT NULL,
        level      INTEGER NOT NULL,
        raised_ms  INTEGER NOT NULL,
        info       TEXT    NOT NULL,
        PRIMARY KEY (reader, alarm_id)
    );",
    // v3: JT/T 808 terminals: auth codes issued at registration (they must survive restarts) and
    // the terminals an operator pre-provisions for `jt808.auth: registry`.
    "CREATE TABLE jt808_terminals (
        phone            TEXT    PRIMARY KEY,
        provisioned      INTEGER NOT NULL DEFAULT 0,
        terminal_id      TEXT,
        plate            TEXT,
        imei             TEXT,
        auth_code        BLOB,
        edition          TEXT,
        software_version TEXT,
        registered_ms    INTEGER,
        last_auth_ms     INTEGER
    );",
    // v4: the edge's own active alarms (ops/alarms.rs): a condition raises once and clears once,
    // also across restarts.
    "CREATE TABLE edge_alarms (
        name      TEXT    NOT NULL,
        subject   TEXT    NOT NULL,
        raised_ms INTEGER NOT NULL,
        detail    TEXT    NOT NULL,
        PRIMARY KEY (name, subject)
    );",
    // v5 (additive: new tables only, an older build can keep using the file): the identity
    // registry (fusion/registry.rs), one row per vehicle, each identifier unique, automatic rows
    // evicted least recently seen first; and the fusion journal (fusion/journal.rs): committed
    // records fusion must not lose (tag reports), kept until their passages are committed.
    "CREATE TABLE registry (
        id           INTEGER PRIMARY KEY,
        plate        TEXT,
        plate_color  INTEGER,
        plate_type   INTEGER,
        vin          TEXT,
        phone        TEXT,
        tid          TEXT,
        cid          TEXT,
        manual       INTEGER NOT NULL DEFAULT 0,
        updated_ms   INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX registry_by_plate ON registry(plate) WHERE plate IS NOT NULL;
    CREATE UNIQUE INDEX registry_by_tid ON registry(tid) WHERE tid IS NOT NULL;
    CREATE UNIQUE INDEX registry_by_vin ON registry(vin) WHERE vin IS NOT NULL;
    CREATE UNIQUE INDEX registry_by_phone ON registry(phone) WHERE phone IS NOT NULL;
    CREATE INDEX registry_automatic_by_seen ON registry(last_seen_ms) WHERE manual = 0;
    CREATE TABLE fusion_journal (
        seq         INTEGER PRIMARY KEY,
        topic       TEXT    NOT NULL,
        received_ms INTEGER NOT NULL,
        body        BLOB    NOT NULL
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// What happened while opening.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where a corrupt database was moved, if it was.
    pub moved_aside: Option<PathBuf>,
    /// Why it was considered corrupt.
    pub corruption: Option<String>,
    /// The database was created by this open.
    pub created: bool,
}

fn set_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    // FULL in WAL mode fsyncs the WAL on every commit: a committed record survives a power cut.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA busy_timeout=5000;",
    )?;
    Ok(())
}

/// Checks an existing file; `Err(reason)` when it cannot be used as our database.
fn check_existing(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if verdict != "ok" {
        return Err(format!("quick_check: {verdict}"));
    }
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| e.to_string())? as usize;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "schema version {version} is newer than this build's {SCHEMA_VERSION}"
        ));
    }
    set_pragmas(&conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn move_aside(path: &Path, now_utc: &str) -> Result<PathBuf, StoreError> {
    let stamp: String = now_utc.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let target = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    std::fs::rename(path, &target).map_err(|e| StoreError::Io(format!("moving {} aside: {e}", path.display())))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, format!("{}{suffix}", target.display()));
        }
    }
    Ok(target)
}

/// Opens (creating or repairing as needed) the database at `path` and migrates it.
/// `now_utc` stamps a moved-aside file; `seq_base` seeds the sequence of a new database.
pub fn open(path: &Path, now_utc: &str, seq_base: i64) -> Result<(Connection, OpenReport), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    let mut report = OpenReport::default();
    let existing = path.exists();
    let conn = if existing {
        match check_existing(path) {
            Ok(c) => Some(c),
            Err(reason) => {
                report.moved_aside = Some(move_aside(path, now_utc)?);
                report.corruption = Some(reason);
                None
            }
        }
    } else {
        None
    };
    let conn = match conn {
        Some(c) => c,
        None => {
            report.created = true;
            let c = Connection::open(path)?;
            // Must precede the first table so freed pages can be returned by incremental_vacuum.
            c.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")?;
            set_pragmas(&c)?;
            c
        }
    };
    migrate(&conn, seq_base)?;
    Ok((conn, report))
}

fn migrate(conn: &Connection, seq_base: i64) -> Result<(), StoreError> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        if i == 0 {
            // A new database starts its sequence at a time-derived base, so that a database
            // recreated after corruption never reuses a seq the cloud has already seen.
            tx.execute(
                "INSERT INTO sqlite_sequence(name, seq) VALUES('outbox', ?1)",
                [seq_base],
            )?;
        }
        tx.execute_batch(&format!("PRAGMA user_version={}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

/// A read-only connection for readers running beside the writer (WAL allows both).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.execute_batch("PRAGMA busy_timeout=5000;")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
        let (conn, report) = open(&path, "2026-11-22T00:00:00.000Z", 7).unwrap();
        let moved = report.moved_aside.expect("moved aside");
        assert!(moved.exists());
        assert!(moved.to_string_lossy().contains("corrupt-20261122T000000000Z"));
        assert!(report.created);
        let base: i64 = conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name='outbox'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(base, 7);
    }

    #[test]
    fn reopening_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let (conn, _) = open(&path, "t", 1).unwrap();
        conn.execute("INSERT INTO kv VALUES('a','b')", []).unwrap();
        drop(conn);
        let (conn, report) = open(&path, "t", 1).unwrap();
        assert!(!report.created && report.moved_aside.is_none());
        let v: String = conn.query_row("SELECT value FROM kv", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "b");
    }
}
