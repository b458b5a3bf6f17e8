//! Opening the database: pragmas, the start-up check that tells a corrupt file (moved aside,
//! CONTRACT 5.5) from one that is only busy, locked, unreadable or failing (never moved: the
//! caller retries and finally fails the start), and versioned schema migrations that an older
//! build can live with after a rollback.
//!
//! **Migrations and rollback.** [`MIGRATIONS`] is append-only; each entry says whether it is
//! [`Compat::Additive`] (new tables, indexes or nullable columns that an older build neither reads
//! nor needs: it may keep using the file) or [`Compat::Breaking`]. The file records:
//! - `schema_migrations`: every migration applied by this mechanism, with its compatibility;
//! - `PRAGMA user_version`: the oldest schema a build must know to open the file, that is the
//!   last breaking migration applied, and never less than [`LEGACY_VERSION`] (builds from before
//!   this mechanism compare `user_version` with their own count and move a "newer" file aside, so
//!   keeping it at 4 while only additive migrations follow lets them open it too).
//!
//! A build whose list is shorter than the file's opens it as long as `user_version` is within its
//! list, and then changes nothing in the schema. Only a breaking migration it does not know makes
//! a file unusable for it; that file is moved aside like a corrupt one (kept, never deleted), since
//! the appliance must not refuse to start.
//!
//! Must not: decide what to do about a failure it only classifies (see [`OpenError`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::StoreError;

/// Whether an older build may keep using a file that has this migration applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// Adds what an older build never reads (tables, indexes, nullable or defaulted columns):
    /// an older build opens the file and goes on.
    Additive,
    /// Changes what existing tables hold or mean: a build that does not know it must not open
    /// the file.
    Breaking,
}

/// One schema migration: the SQL that moves the file from version `index` to `index + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub sql: &'static str,
    pub compat: Compat,
}

/// Builds from before the compatibility mechanism know versions up to this one and treat a
/// larger `user_version` as unusable; `user_version` never drops below it once reached.
pub const LEGACY_VERSION: usize = 4;

/// Each entry migrates from version `index` to `index + 1`. Append only; never edit a shipped one.
/// A new entry is [`Compat::Additive`] unless an older build would misread the file with it.
pub const MIGRATIONS: &[Migration] = &[
    // v1: outbox, downstream commands, small key/value state.
    Migration {
        compat: Compat::Breaking,
        sql: "CREATE TABLE outbox (
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
    },
    // v2: GB/T 37987 readers: the desired rules per reader (codec JSON of each SelectSpec /
    // AccessSpec) and the active-alarm table (see reader/db.rs).
    Migration {
        compat: Compat::Breaking,
        sql: "CREATE TABLE reader_rules (
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
    },
    // v3: JT/T 808 terminals: auth codes issued at registration (they must survive restarts) and
    // the terminals an operator pre-provisions for `jt808.auth: registry`.
    Migration {
        compat: Compat::Breaking,
        sql: "CREATE TABLE jt808_terminals (
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
    },
    // v4: the edge's own active alarms (ops/alarms.rs): a condition raises once and clears once,
    // also across restarts.
    Migration {
        compat: Compat::Breaking,
        sql: "CREATE TABLE edge_alarms (
        name      TEXT    NOT NULL,
        subject   TEXT    NOT NULL,
        raised_ms INTEGER NOT NULL,
        detail    TEXT    NOT NULL,
        PRIMARY KEY (name, subject)
    );",
    },
    // v5 (additive: new tables only, an older build can keep using the file): the identity
    // registry (fusion/registry.rs), one row per vehicle, each identifier unique, automatic rows
    // evicted least recently seen first; and the fusion journal (fusion/journal.rs): committed
    // records fusion must not lose (tag reports), kept until their passages are committed.
    Migration {
        compat: Compat::Additive,
        sql: "CREATE TABLE registry (
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
    },
    // v6: the store's eviction alarm joins the other edge alarms in `edge_alarms` (it was a `kv`
    // flag; the flag is kept in step for older builds, so this is additive).
    Migration {
        compat: Compat::Additive,
        sql: "INSERT OR IGNORE INTO edge_alarms(name, subject, raised_ms, detail)
        SELECT 'backlog_eviction', '', 0, '{}' FROM kv WHERE key = 'eviction_alarm' AND value = 'raised';",
    },
    // v7: commands are found by request id, so a command the broker delivers again (persistent
    // session) is recognised and gets no second execution and no second result.
    Migration {
        compat: Compat::Additive,
        sql: "CREATE INDEX commands_by_request ON commands(target, request_id);",
    },
    // v8: a provisioned JT/T 808 terminal may name its plate colour (`jt808.provision`); a
    // nullable column an older build never reads.
    Migration {
        compat: Compat::Additive,
        sql: "ALTER TABLE jt808_terminals ADD COLUMN plate_color INTEGER;",
    },
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// What happened while opening.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Where an unusable database was moved, if it was.
    pub moved_aside: Option<PathBuf>,
    /// Why it was unusable (corrupt, or written by a build with a breaking migration unknown here).
    pub corruption: Option<String>,
    /// The database was created by this open.
    pub created: bool,
    /// Migrations the file has beyond this build's list (all additive: the file is used as it is).
    pub newer_additive: usize,
}

/// Why the database could not be used. Only [`OpenError::Corrupt`] and [`OpenError::Incompatible`]
/// justify moving the file aside; every other kind is a condition that may pass (or needs an
/// operator) and must leave the file where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("written by a newer build with an incompatible schema: {0}")]
    Incompatible(String),
    #[error("busy or locked by another process: {0}")]
    Busy(String),
    #[error("permission denied or read-only: {0}")]
    Permission(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("another roadedge instance holds the database: {0}")]
    OtherInstance(String),
    #[error("{0}")]
    Other(String),
}

impl OpenError {
    /// Whether the file itself is unusable (and so is moved aside).
    pub fn moves_aside(&self) -> bool {
        matches!(self, OpenError::Corrupt(_) | OpenError::Incompatible(_))
    }
}

/// Sorts an SQLite error into the kinds above.
pub fn classify(e: &rusqlite::Error) -> OpenError {
    let text = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => OpenError::Corrupt(text),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => OpenError::Busy(text),
        Some(
            ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::AuthorizationForStatementDenied,
        ) => OpenError::Permission(text),
        Some(ErrorCode::SystemIoFailure) => OpenError::Io(text),
        Some(ErrorCode::DiskFull) => OpenError::Full(text),
        _ => OpenError::Other(text),
    }
}

/// Sorts an operating-system error about the database files into the kinds above.
pub fn classify_io(what: &str, e: &std::io::Error) -> OpenError {
    use std::io::ErrorKind;
    let text = format!("{what}: {e}");
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => OpenError::Permission(text),
        ErrorKind::StorageFull => OpenError::Full(text),
        ErrorKind::WouldBlock => OpenError::Busy(text),
        _ if e.raw_os_error() == Some(30) => OpenError::Permission(text),
        _ => OpenError::Io(text),
    }
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> Self {
        StoreError::Unavailable(e)
    }
}

/// How long SQLite waits for a lock before reporting busy; set before the first statement.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn set_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    // FULL in WAL mode fsyncs the WAL on every commit: a committed record survives a power cut.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;",
    )?;
    Ok(())
}

/// Opens an existing file and checks it. `Err` says why it cannot be used, classified.
fn check_existing(path: &Path, migrations: &[Migration]) -> Result<(Connection, usize), OpenError> {
    // Permissions first, in plain words (SQLite would report "unable to open database file").
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| classify_io(&format!("opening {}", path.display()), &e))?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(&e))?;
    // Before anything reads: another process's short write must not look like corruption.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(&e))?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| classify(&e))?;
    if verdict != "ok" {
        return Err(OpenError::Corrupt(format!("quick_check: {verdict}")));
    }
    let required = user_version(&conn).map_err(|e| classify(&e))?;
    if required > migrations.len() {
        return Err(OpenError::Incompatible(format!(
            "the file needs schema {required} or later, this build has {}",
            migrations.len()
        )));
    }
    set_pragmas(&conn).map_err(|e| classify(&e))?;
    let applied = applied_version(&conn).map_err(|e| classify(&e))?;
    Ok((conn, applied))
}

fn user_version(conn: &Connection) -> rusqlite::Result<usize> {
    Ok(conn
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
        .max(0) as usize)
}

/// The number of migrations applied to the file (more than `user_version` when additive ones
/// followed the last breaking one).
fn applied_version(conn: &Connection) -> rusqlite::Result<usize> {
    let required = user_version(conn)?;
    let has_table: bool = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'",
        [],
        |r| Ok(r.get::<_, i64>(0)? > 0),
    )?;
    if !has_table {
        return Ok(required);
    }
    let recorded: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| {
        r.get(0)
    })?;
    Ok(required.max(recorded.max(0) as usize))
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

/// Opens (creating or replacing a corrupt one as needed) the database at `path` and migrates it.
/// `now_utc` stamps a moved-aside file; `seq_base` seeds the sequence of a new database.
pub fn open(path: &Path, now_utc: &str, seq_base: i64) -> Result<(Connection, OpenReport), StoreError> {
    open_with(path, now_utc, seq_base, MIGRATIONS)
}

/// [`open`] with a given migration list: a shorter list is how an older build behaves.
pub fn open_with(
    path: &Path,
    now_utc: &str,
    seq_base: i64,
    migrations: &[Migration],
) -> Result<(Connection, OpenReport), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| classify_io(&format!("creating {}", dir.display()), &e))?;
    }
    let mut report = OpenReport::default();
    let existing = path.exists();
    let opened = if existing {
        match check_existing(path, migrations) {
            Ok(c) => Some(c),
            Err(failure) if failure.moves_aside() => {
                report.moved_aside = Some(move_aside(path, now_utc)?);
                report.corruption = Some(failure.to_string());
                None
            }
            Err(failure) => return Err(failure.into()),
        }
    } else {
        None
    };
    let (conn, applied) = match opened {
        Some(c) => c,
        None => {
            report.created = true;
            let c = Connection::open(path).map_err(|e| classify(&e))?;
            c.busy_timeout(BUSY_TIMEOUT).map_err(|e| classify(&e))?;
            // Must precede the first table so freed pages can be returned by incremental_vacuum.
            c.execute_batch("PRAGMA auto_vacuum=INCREMENTAL;")
                .map_err(|e| classify(&e))?;
            set_pragmas(&c).map_err(|e| classify(&e))?;
            (c, 0)
        }
    };
    if applied > migrations.len() {
        report.newer_additive = applied - migrations.len();
        tracing::info!(
            file = applied,
            build = migrations.len(),
            "the database has {} additive migration(s) newer than this build; using it as it is",
            report.newer_additive
        );
    } else {
        migrate(&conn, applied, seq_base, migrations)?;
    }
    // Whether we may write at all (a foreign process may hold the write lock past busy_timeout).
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(|e| classify(&e))?;
    Ok((conn, report))
}

/// `user_version` after migrations `1..=applied`: the last breaking one, at least the legacy
/// floor (once reached).
fn required_version(applied: usize, migrations: &[Migration]) -> usize {
    let last_breaking = migrations[..applied.min(migrations.len())]
        .iter()
        .rposition(|m| m.compat == Compat::Breaking)
        .map_or(0, |i| i + 1);
    last_breaking.max(applied.min(LEGACY_VERSION))
}

fn migrate(conn: &Connection, applied: usize, seq_base: i64, migrations: &[Migration]) -> Result<(), StoreError> {
    for (i, migration) in migrations.iter().enumerate().skip(applied) {
        let version = i + 1;
        let step = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER PRIMARY KEY,
                    additive   INTEGER NOT NULL,
                    applied_ms INTEGER NOT NULL
                );",
            )?;
            tx.execute_batch(migration.sql)?;
            if i == 0 {
                // A new database starts its sequence above every seq this edge may have used
                // (see `SeqMark`), so a database recreated after corruption never reuses one.
                tx.execute(
                    "INSERT INTO sqlite_sequence(name, seq) VALUES('outbox', ?1)",
                    [seq_base],
                )?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO schema_migrations(version, additive, applied_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    version as i64,
                    migration.compat == Compat::Additive,
                    crate::time::now_ms()
                ],
            )?;
            tx.execute_batch(&format!(
                "PRAGMA user_version={}",
                required_version(version, migrations)
            ))?;
            tx.commit()
        };
        step().map_err(|e| match classify(&e) {
            OpenError::Other(text) => StoreError::Sqlite(format!("migration {version}: {text}")),
            failure => StoreError::Unavailable(failure),
        })?;
    }
    Ok(())
}

/// A read-only connection for readers running beside the writer (WAL allows both).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    c.busy_timeout(BUSY_TIMEOUT)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn garbage_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
        let (conn, report) = open(&path, "2026-11-22T00:00:00.000Z", 7).unwrap();
        let moved = report.moved_aside.expect("moved aside");
        assert!(moved.exists());
        assert!(moved.to_string_lossy().contains("corrupt-20261122T000000000Z"));
        assert!(report.corruption.unwrap().starts_with("corrupt"));
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

    const EXTRA_ADDITIVE: Migration = Migration {
        compat: Compat::Additive,
        sql: "CREATE TABLE future_registry (plate TEXT PRIMARY KEY, vin TEXT);",
    };
    const EXTRA_BREAKING: Migration = Migration {
        compat: Compat::Breaking,
        sql: "ALTER TABLE kv RENAME TO kv_old; CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, ver INTEGER NOT NULL);",
    };

    /// OTA rollback safety of the shipped list: after an update is rolled back, the previous
    /// build (one migration short, or more since the last breaking one) opens the file the new
    /// build migrated, keeps its rows and writes, and the new build takes it back.
    #[test]
    fn the_previous_release_opens_a_file_migrated_by_this_one_for_an_ota_rollback() {
        let last_breaking = MIGRATIONS
            .iter()
            .rposition(|m| m.compat == Compat::Breaking)
            .map_or(0, |i| i + 1);
        assert!(
            last_breaking < MIGRATIONS.len(),
            "the newest migration is breaking: the previous release could not open the file after a rollback"
        );
        for previous in last_breaking.max(LEGACY_VERSION)..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.db");
            let (conn, _) = open_with(&path, "t", 1, MIGRATIONS).unwrap();
            conn.execute("INSERT INTO kv VALUES('backlog','kept')", []).unwrap();
            drop(conn);
            let (conn, report) = open_with(&path, "t", 1, &MIGRATIONS[..previous]).unwrap();
            assert!(
                report.moved_aside.is_none(),
                "build with {previous} migrations: {report:?}"
            );
            assert_eq!(report.newer_additive, MIGRATIONS.len() - previous);
            let v: String = conn.query_row("SELECT value FROM kv", [], |r| r.get(0)).unwrap();
            assert_eq!(v, "kept");
            conn.execute("INSERT INTO kv VALUES('after','rollback')", []).unwrap();
            drop(conn);
            let (conn, report) = open_with(&path, "t", 1, MIGRATIONS).unwrap();
            assert!(report.moved_aside.is_none() && report.newer_additive == 0);
            let rows: i64 = conn.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0)).unwrap();
            assert_eq!(rows, 2);
        }
    }

    #[test]
    fn an_older_build_opens_a_file_whose_newer_migrations_are_additive_and_leaves_it_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let newer: Vec<Migration> = MIGRATIONS.iter().copied().chain([EXTRA_ADDITIVE]).collect();
        let (conn, _) = open_with(&path, "t", 1, &newer).unwrap();
        conn.execute("INSERT INTO kv VALUES('backlog','kept')", []).unwrap();
        conn.execute("INSERT INTO future_registry VALUES('A1','V1')", [])
            .unwrap();
        // An additive migration leaves the required version where it was.
        assert_eq!(
            user_version(&conn).unwrap(),
            required_version(SCHEMA_VERSION, MIGRATIONS)
        );
        drop(conn);

        // This build (one migration short) is the "older build".
        let (conn, report) = open_with(&path, "t", 1, MIGRATIONS).unwrap();
        assert!(report.moved_aside.is_none(), "{report:?}");
        assert_eq!(report.newer_additive, 1);
        let v: String = conn.query_row("SELECT value FROM kv", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "kept");
        conn.execute("INSERT INTO kv VALUES('written','by the older build')", [])
            .unwrap();
        assert!(tables(&conn).contains(&"future_registry".to_string()));
        drop(conn);

        // And the newer build takes it back without re-running anything.
        let (conn, report) = open_with(&path, "t", 1, &newer).unwrap();
        assert!(report.moved_aside.is_none() && report.newer_additive == 0);
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn a_build_even_older_by_several_additive_migrations_opens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let newer: Vec<Migration> = MIGRATIONS
            .iter()
            .copied()
            .chain([
                EXTRA_ADDITIVE,
                Migration {
                    compat: Compat::Additive,
                    sql: "CREATE INDEX fr_vin ON future_registry(vin);",
                },
            ])
            .collect();
        drop(open_with(&path, "t", 1, &newer).unwrap());
        let (_, report) = open_with(&path, "t", 1, MIGRATIONS).unwrap();
        assert!(report.moved_aside.is_none());
        assert_eq!(report.newer_additive, 2);
    }

    #[test]
    fn a_file_with_a_breaking_migration_unknown_to_the_build_is_moved_aside_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let newer: Vec<Migration> = MIGRATIONS.iter().copied().chain([EXTRA_BREAKING]).collect();
        drop(open_with(&path, "t", 1, &newer).unwrap());
        let (conn, report) = open_with(&path, "2026-01-01T00:00:00Z", 1, MIGRATIONS).unwrap();
        let reason = report.corruption.expect("moved");
        assert!(reason.contains("incompatible"), "{reason}");
        assert!(report.moved_aside.unwrap().exists());
        assert!(report.created);
        assert_eq!(
            user_version(&conn).unwrap(),
            required_version(SCHEMA_VERSION, MIGRATIONS)
        );
    }

    #[test]
    fn user_version_stays_at_the_legacy_floor_while_only_additive_migrations_follow() {
        let with_additive: Vec<Migration> = MIGRATIONS.iter().copied().chain([EXTRA_ADDITIVE]).collect();
        let n = with_additive.len();
        assert_eq!(
            required_version(n, &with_additive),
            required_version(n - 1, &with_additive)
        );
        assert!(required_version(n, &with_additive) >= LEGACY_VERSION.min(n));
        let with_breaking: Vec<Migration> = with_additive.iter().copied().chain([EXTRA_BREAKING]).collect();
        assert_eq!(required_version(n + 1, &with_breaking), n + 1);
        assert_eq!(required_version(2, MIGRATIONS), 2);
    }

    #[test]
    fn a_busy_database_is_reported_busy_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        drop(open(&path, "t", 1).unwrap());
        let holder = Connection::open(&path).unwrap();
        holder
            .execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; INSERT INTO kv VALUES('x','y');")
            .unwrap();
        let started = std::time::Instant::now();
        let err = open(&path, "t", 1).expect_err("busy");
        assert!(started.elapsed() >= BUSY_TIMEOUT - Duration::from_millis(500));
        assert!(matches!(err, StoreError::Unavailable(OpenError::Busy(_))), "{err:?}");
        assert!(path.exists());
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt")));
    }

    #[test]
    fn sqlite_errors_are_classified_by_their_code() {
        let err = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert!(matches!(
            classify(&err(rusqlite::ffi::SQLITE_CORRUPT)),
            OpenError::Corrupt(_)
        ));
        assert!(matches!(
            classify(&err(rusqlite::ffi::SQLITE_NOTADB)),
            OpenError::Corrupt(_)
        ));
        assert!(matches!(classify(&err(rusqlite::ffi::SQLITE_BUSY)), OpenError::Busy(_)));
        assert!(matches!(
            classify(&err(rusqlite::ffi::SQLITE_LOCKED)),
            OpenError::Busy(_)
        ));
        assert!(matches!(classify(&err(rusqlite::ffi::SQLITE_IOERR)), OpenError::Io(_)));
        assert!(matches!(
            classify(&err(rusqlite::ffi::SQLITE_PERM)),
            OpenError::Permission(_)
        ));
        assert!(matches!(
            classify(&err(rusqlite::ffi::SQLITE_READONLY)),
            OpenError::Permission(_)
        ));
        assert!(matches!(classify(&err(rusqlite::ffi::SQLITE_FULL)), OpenError::Full(_)));
        assert!(!classify(&err(rusqlite::ffi::SQLITE_BUSY)).moves_aside());
    }
}
