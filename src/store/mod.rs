//! The durable store: SQLite (WAL, `synchronous=FULL`) owned by one writer thread that batches
//! every write of the appliance into group commits.
//!
//! Owns: the schema and its migrations, the outbox of upstream records with the per-edge `seq`,
//! the byte budget and its priority eviction (CONTRACT 5.4), the start-up integrity check
//! (CONTRACT 5.5). Callers get their completion only after the transaction holding their write has
//! committed: that is what lets a protocol session acknowledge a device.
//!
//! Must not: be written from many connections (all writes go through [`Store::write`]).

pub mod alarms;
pub mod files;
pub mod outbox;
pub mod schema;
pub mod space;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

pub use outbox::{EnvelopeKey, OutboxRow, Record, RecordClass};
pub use schema::{OpenError, OpenReport};
pub use space::SpaceOptions;
pub use writer::{is_tag_report, WriteCtx, MAX_JOURNAL_ROWS};

use crate::metrics::Metrics;
use crate::time::{now_ms, now_rfc3339};

/// Errors of the store. Clone so one commit failure can be reported to every caller in the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(String),
    #[error("storage I/O: {0}")]
    Io(String),
    #[error("record of {0} bytes does not fit the backlog budget")]
    TooLarge(u64),
    /// No room for the record (full disk or a budget full of higher-priority data): the device
    /// must not be acknowledged.
    #[error("no space: {0}")]
    Full(String),
    #[error("the store is shut down")]
    Closed,
    /// The database cannot be used right now (busy, locked by another instance, unreadable, I/O
    /// errors, full disk): the file is left where it is.
    #[error("database unavailable: {0}")]
    Unavailable(OpenError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e.to_string())
    }
}

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub edge_id: String,
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A unit of work for the writer: runs inside the batch transaction (in its own savepoint),
/// returns whether it succeeded and what to do once the batch's commit outcome is known.
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Completion) + Send>;

/// A record as it was committed, for live views (the web page's vehicles and tag reads).
#[derive(Debug, Clone)]
pub struct Committed {
    pub seq: i64,
    pub device: String,
    /// Topic without the configured prefix.
    pub topic: String,
    pub received_at_ms: i64,
    /// The record's JSON object, without the envelope.
    pub body: Vec<u8>,
}

/// Committed records a tap listener may fall behind by before it skips (it is told how many).
pub const TAP_CAPACITY: usize = 4096;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<writer::Msg>,
    committed: watch::Receiver<i64>,
    tap: tokio::sync::broadcast::Sender<Arc<Committed>>,
    readers: Arc<ReadPool>,
    alarms: Arc<alarms::AlarmSet>,
    journal: Arc<std::sync::atomic::AtomicBool>,
    writer_thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Pages one vacuum step may give back (see [`space::Budget::vacuum_pages`]).
    vacuum_pages: i64,
    /// Rows one acknowledgement job deletes at most (see [`space::Budget::transaction_rows`]).
    ack_rows: usize,
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Bound of the job queue: callers wait (backpressure) rather than queue without limit.
const JOB_QUEUE: usize = 8192;
/// Period of the writer's disk checks while idle.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

impl Store {
    /// [`Store::open_with`] with the space settings derived from the budget.
    pub fn open(options: StoreOptions, metrics: Arc<Metrics>) -> Result<(Store, OpenReport), StoreError> {
        let space = SpaceOptions::for_budget(options.max_bytes);
        Store::open_with(options, space, metrics)
    }

    /// Takes the instance lock, opens the database (moving a corrupt one aside), starts the
    /// writer thread. [`StoreError::Unavailable`] means the file was left alone and opening again
    /// later may succeed.
    pub fn open_with(
        options: StoreOptions,
        space: SpaceOptions,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, OpenReport), StoreError> {
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| schema::classify_io(&format!("creating {}", dir.display()), &e))?;
        }
        let lock = files::InstanceLock::acquire(&options.path)?;
        let mark = files::SeqMark::open(&options.path)?;
        // A fresh database starts above every seq this edge may have handed out (the mark), and
        // above the wall clock's base when the clock is ahead of it (a mark lost with the disk).
        let seq_base = mark.reserved().max(now_ms().max(0) * 1000);
        let (conn, report) = schema::open(&options.path, &now_rfc3339(), seq_base)?;
        let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
        let mut state = writer::WriterState::load_with(
            &conn,
            options.max_bytes,
            space,
            options.edge_id.clone(),
            metrics,
            Some(mark),
        )?;
        let alarm_set = state.alarm_set();
        let budget = state.budget();
        let (committed_tx, committed_rx) = watch::channel(state.last_seq());
        let tap = state.tap();
        let journal = state.journal_switch();
        if let (Some(moved), Some(reason)) = (&report.moved_aside, &report.corruption) {
            state.queue_alarm(
                "store_corrupt",
                serde_json::json!({"moved_to": moved.display().to_string(), "reason": reason}),
            );
        }
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // The lock lives as long as the writer: a second instance cannot start before
                // this one has committed its last batch.
                let _lock = lock;
                writer::run(conn, state, jobs_rx, committed_tx)
            })
            .map_err(|e| StoreError::Io(format!("spawning the writer thread: {e}")))?;
        // The writer looks at the disk once a second even when nothing is written, so a full
        // disk clears by itself once space returns. The ticker holds no strong handle: it ends
        // with the store.
        let ticker = jobs_tx.downgrade();
        std::thread::Builder::new()
            .name("store-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(jobs) = ticker.upgrade() else { return };
                if let Err(mpsc::error::TrySendError::Closed(_)) = jobs.try_send(writer::Msg::Tick) {
                    return;
                }
            })
            .map_err(|e| StoreError::Io(format!("spawning the store ticker: {e}")))?;
        let store = Store {
            jobs: jobs_tx,
            committed: committed_rx,
            tap,
            readers: Arc::new(ReadPool {
                path: options.path,
                idle: Mutex::new(Vec::new()),
            }),
            alarms: alarm_set,
            journal,
            writer_thread: Arc::new(Mutex::new(Some(handle))),
            vacuum_pages: budget.vacuum_pages(),
            ack_rows: budget.transaction_rows() as usize,
        };
        Ok((store, report))
    }

    /// Runs `f` inside the writer's next group commit and returns its result once committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |ctx| {
            let result = f(ctx);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, completion)
        });
        self.jobs
            .send(writer::Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends one upstream record; resolves with its `seq` once committed.
    pub async fn append(&self, record: Record) -> Result<i64, StoreError> {
        self.write(move |ctx| ctx.append(&record)).await
    }

    /// Appends several records atomically (all or none), in order.
    pub async fn append_all(&self, records: Vec<Record>) -> Result<Vec<i64>, StoreError> {
        self.write(move |ctx| records.iter().map(|r| ctx.append(r)).collect())
            .await
    }

    /// Removes records whose PUBACK arrived.
    pub async fn acknowledge(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        // In jobs the writer can commit separately, so a large acknowledgement cannot push one
        // transaction's frames past the WAL's share (deleting a row again is a no-op).
        let jobs: Vec<_> = seqs
            .chunks(self.ack_rows.max(1))
            .map(|chunk| {
                let chunk = chunk.to_vec();
                self.write(move |ctx| ctx.delete_rows(&chunk))
            })
            .collect();
        for job in futures_util::future::join_all(jobs).await {
            job?;
        }
        Ok(())
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().ok().and_then(|mut v| v.pop()) {
                Some(c) => c,
                None => schema::open_reader(&pool.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < 4 {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Io(format!("read task failed: {e}")))?
    }

    /// Every record committed from now on, after its COMMIT. Costs nothing while nobody listens;
    /// a listener more than [`TAP_CAPACITY`] records behind skips ahead (`RecvError::Lagged`).
    pub fn tap(&self) -> tokio::sync::broadcast::Receiver<Arc<Committed>> {
        self.tap.subscribe()
    }

    /// From now on every committed tag report (`gbt37987/{reader}/up/report`) is also kept in
    /// `fusion_journal`, in its own transaction, until fusion deletes it with the passages
    /// derived from it (`fusion::service`). Called before any reader starts.
    pub fn journal_tag_reports(&self, on: bool) {
        self.journal.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The highest committed `seq`; changes whenever an append commits.
    pub fn committed_seq(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// Purges finished commands older than `keep_ms` and returns free pages to the file system.
    pub async fn retention(&self, keep_ms: i64) -> Result<usize, StoreError> {
        let cutoff = now_ms() - keep_ms;
        let purged = self
            .write(move |ctx| {
                Ok(ctx.conn().execute(
                    "DELETE FROM commands WHERE finished_ms IS NOT NULL AND finished_ms < ?1",
                    [cutoff],
                )?)
            })
            .await?;
        // incremental_vacuum cannot run inside the writer's transaction; a write job outside a
        // transaction is not possible either, so it runs on its own connection (WAL allows it,
        // busy_timeout covers the writer's short commits).
        // In steps the WAL's share can hold, each followed by a checkpoint, so giving pages back
        // never grows the WAL past its share.
        let path = self.readers.path.clone();
        let step = self.vacuum_pages;
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            let c = Connection::open(&path)?;
            c.busy_timeout(schema::BUSY_TIMEOUT)?;
            let free = |c: &Connection| c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
            let mut left = free(&c)?;
            // Bounded: each step frees `step` pages or ends the loop.
            for _ in 0..=left / step + 1 {
                if left == 0 {
                    break;
                }
                writer::incremental_vacuum(&c, step)?;
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                let now = free(&c)?;
                if now >= left {
                    break;
                }
                left = now;
            }
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Io(e.to_string()))??;
        Ok(purged)
    }

    /// Stops accepting work, lets the writer commit what is queued, and waits for it to exit.
    pub async fn close(self) {
        let Store {
            jobs, writer_thread, ..
        } = self;
        let _ = jobs.send(writer::Msg::Stop).await;
        let handle = writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Whether the writer still takes work (false once the store is closed or its thread died).
    pub fn is_open(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// The edge's active alarms as committed (shared with `ops::alarms`).
    pub fn alarm_set(&self) -> Arc<alarms::AlarmSet> {
        self.alarms.clone()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.readers.path
    }
}
