//! The single writer: one thread owning the write connection, draining the job queue into group
//! commits. A batch is whatever queued up while the previous commit was being fsynced, so batch
//! size follows load: one job per commit when idle, thousands under a burst (split into several
//! transactions when their records would push the WAL past its share of the budget).
//!
//! Each job runs in its own savepoint so a failing job does not poison its batch. Completions are
//! called only after COMMIT returns (or with the commit's error).
//!
//! Space is an operating state, not a failure:
//! - the budget (`storage.max_bytes`) is enforced on the pages the main file really holds (every
//!   table counts), with the WAL kept under its share by checkpoints after commits;
//! - a full disk (`SQLITE_FULL` at INSERT, COMMIT or checkpoint, or free space under the guard)
//!   releases the reserve, raises `disk_full`, and from then on the file may not grow: records
//!   go into pages freed by evicting older ones of no higher priority (telemetry first), critical
//!   records may also use half the reserve, and what fits nowhere is refused ([`StoreError::Full`])
//!   so the device is not acknowledged. Delivered rows free pages that are given back to the file
//!   system; once there is room for the reserve again it is rewritten and `disk_full` clears;
//! - `disk_low` follows the free space of the store's file system.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::alarms::{change_in, AlarmChange, AlarmSet, AlarmState};
use super::files::SeqMark;
use super::outbox::{with_envelope, Record, RecordClass};
use super::space::{free_bytes, Budget, FileSizes, Reserve, SpaceOptions};
use super::Committed;
use super::{Job, StoreError};
use crate::metrics::Metrics;

/// Messages to the writer thread.
pub(super) enum Msg {
    Job(Job),
    /// Look at the disk and the WAL even though nothing is being written.
    Tick,
    /// Commit what is queued, then exit.
    Stop,
}

/// Jobs per transaction at most, to bound commit latency under a flood.
const MAX_BATCH: usize = 4096;
/// Rows evicted per eviction step.
const EVICT_CHUNK: i64 = 64;

/// A full disk: the main file may not grow past `limit_pages`.
#[derive(Debug, Clone)]
struct Full {
    limit_pages: i64,
    reason: String,
}

/// In-memory state of the writer, derivable from the database and the file system (see
/// [`WriterState::load`]).
pub(super) struct WriterState {
    next_seq: i64,
    backlog_bytes: u64,
    backlog_rows: i64,
    budget: Budget,
    space: SpaceOptions,
    edge_id: String,
    metrics: Arc<Metrics>,
    /// The database file (for its size and its file system); absent for in-memory tests.
    db_path: Option<PathBuf>,
    reserve: Option<Reserve>,
    full: Option<Full>,
    disk_low: bool,
    last_free: Option<u64>,
    /// Rows evicted since the eviction alarm was raised; the condition holds while `Some`.
    eviction: Option<u64>,
    /// The committed active alarms, shared with `ops::alarms`.
    alarms: Arc<AlarmSet>,
    /// Alarm changes to make at the end of the current batch.
    pending_alarms: Vec<AlarmChange>,
    /// Alarm changes made in the current transaction, applied to `alarms` once it commits.
    txn_alarms: Vec<AlarmChange>,
    /// Record bytes appended in the current transaction.
    txn_bytes: u64,
    /// Rows appended or deleted in the current transaction (each may dirty its own pages).
    txn_rows: u64,
    /// Set when a savepoint or a commit rolled back: counters are reloaded after the commit.
    dirty: bool,
    /// The sequence high-water mark beside the database (absent in unit tests of the writer).
    mark: Option<SeqMark>,
    /// Live views of committed records; fed only while someone listens.
    tap: broadcast::Sender<Arc<Committed>>,
    /// Records of the current transaction for the tap, sent once COMMIT succeeded.
    tapped: Vec<Arc<Committed>>,
    /// Whether tag reports are also kept in `fusion_journal` (fusion is configured; see
    /// `fusion::service`): in the same transaction as their outbox row, so a passage whose tag
    /// report was acknowledged can always be derived again after a crash.
    journal: Arc<std::sync::atomic::AtomicBool>,
}

/// Rows `fusion_journal` holds at most: past it (fusion stopped or far behind) tag reports are
/// committed without their journal row and counted (`fusion.journal_skipped_total`).
pub const MAX_JOURNAL_ROWS: i64 = 100_000;

/// Whether `topic` is a reader's tag report (`gbt37987/{reader}/up/report`).
pub fn is_tag_report(topic: &str) -> bool {
    topic.starts_with("gbt37987/") && topic.ends_with("/up/report")
}

fn is_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

impl WriterState {
    #[cfg(test)]
    pub(super) fn load(
        conn: &Connection,
        max_bytes: u64,
        edge_id: String,
        metrics: Arc<Metrics>,
        mark: Option<SeqMark>,
    ) -> Result<WriterState, StoreError> {
        Self::load_with(
            conn,
            max_bytes,
            SpaceOptions::for_budget(max_bytes),
            edge_id,
            metrics,
            mark,
        )
    }

    pub(super) fn load_with(
        conn: &Connection,
        max_bytes: u64,
        space: SpaceOptions,
        edge_id: String,
        metrics: Arc<Metrics>,
        mark: Option<SeqMark>,
    ) -> Result<WriterState, StoreError> {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let budget = Budget::new(max_bytes, page_size.max(512) as u64);
        // SQLite checkpoints after any commit that leaves more than a quarter of the WAL's share
        // in it, and cuts the file back to half the share when the WAL starts over.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint={}; PRAGMA journal_size_limit={};",
            budget.checkpoint_frames(),
            budget.wal_bytes / 2
        ))?;
        let db_path = conn.path().filter(|p| !p.is_empty()).map(PathBuf::from);
        let alarms = Arc::new(AlarmSet::load(conn)?);
        let reserve = db_path.as_ref().map(|p| Reserve::new(p, space.reserve_bytes));
        let mut s = WriterState {
            next_seq: 1,
            backlog_bytes: 0,
            backlog_rows: 0,
            budget,
            space,
            edge_id,
            metrics,
            db_path,
            reserve,
            full: None,
            disk_low: alarms.is_active("disk_low", ""),
            last_free: None,
            eviction: None,
            alarms,
            pending_alarms: Vec::new(),
            txn_alarms: Vec::new(),
            txn_bytes: 0,
            txn_rows: 0,
            dirty: false,
            mark,
            tap: broadcast::channel(super::TAP_CAPACITY).0,
            tapped: Vec::new(),
            journal: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        if s.alarms.is_active("disk_full", "") {
            // Still full until the file system shows otherwise (the next space check).
            s.full = Some(Full {
                limit_pages: s.page_count(conn)?,
                reason: "the disk was full when the appliance stopped".into(),
            });
        }
        s.reload(conn)?;
        Ok(s)
    }

    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let last: i64 = conn
            .query_row("SELECT seq FROM sqlite_sequence WHERE name='outbox'", [], |r| r.get(0))
            .unwrap_or(0);
        let (rows, bytes): (i64, i64) =
            conn.query_row("SELECT COUNT(*), COALESCE(SUM(bytes),0) FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        // Never step back: seqs handed out in a rolled-back transaction are simply skipped.
        self.next_seq = self.next_seq.max(last + 1);
        self.backlog_rows = rows;
        self.backlog_bytes = bytes as u64;
        // Evictions are an audit figure: the counter survives restarts.
        let evicted: i64 = conn
            .query_row("SELECT value FROM kv WHERE key='evicted_total'", [], |r| {
                r.get::<_, String>(0)
            })
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.metrics.store.evicted_total.store(evicted as u64, Relaxed);
        let journal_rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM fusion_journal", [], |r| r.get(0))
            .unwrap_or(0);
        self.metrics.fusion.journal_rows.store(journal_rows, Relaxed);
        let evicting = self.alarms.is_active("backlog_eviction", "");
        self.eviction = match (evicting, self.eviction) {
            (true, n) => Some(n.unwrap_or(0)),
            (false, _) => None,
        };
        self.pending_alarms.retain(|c| c.name == "store_corrupt");
        self.txn_alarms.clear();
        self.dirty = false;
        self.publish_gauges(conn);
        Ok(())
    }

    pub(super) fn budget(&self) -> Budget {
        self.budget
    }

    pub(super) fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// The active set shared with the alarm service.
    pub(super) fn alarm_set(&self) -> Arc<AlarmSet> {
        self.alarms.clone()
    }

    /// The switch of the fusion journal (see `Store::journal_tag_reports`).
    pub(super) fn journal_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.journal.clone()
    }

    /// The sender of the committed-records tap (see `Store::tap`).
    pub(super) fn tap(&self) -> broadcast::Sender<Arc<Committed>> {
        self.tap.clone()
    }

    fn publish_gauges(&self, conn: &Connection) {
        let m = &self.metrics.store;
        m.backlog_rows.store(self.backlog_rows, Relaxed);
        m.backlog_bytes.store(self.backlog_bytes as i64, Relaxed);
        let oldest: i64 = conn
            .query_row("SELECT created_ms FROM outbox ORDER BY seq LIMIT 1", [], |r| r.get(0))
            .unwrap_or(0);
        m.oldest_unsent_ms.store(oldest, Relaxed);
    }

    /// Queues an edge alarm (`edge/{id}/alarm`), raised by the next batch.
    pub(super) fn queue_alarm(&mut self, alarm: &str, detail: serde_json::Value) {
        self.pending_alarms
            .push(AlarmChange::new(alarm, "", AlarmState::Raised, detail));
    }

    fn page_count(&self, conn: &Connection) -> Result<i64, StoreError> {
        Ok(conn.prepare_cached("PRAGMA page_count")?.query_row([], |r| r.get(0))?)
    }

    fn used_pages(&self, conn: &Connection) -> Result<i64, StoreError> {
        let pages = self.page_count(conn)?;
        let free: i64 = conn
            .prepare_cached("PRAGMA freelist_count")?
            .query_row([], |r| r.get(0))?;
        Ok(pages - free)
    }

    /// Pages the main file may hold for a record of `class`.
    fn limit_pages(&self, class: RecordClass) -> i64 {
        let budget = self.budget.main_pages();
        match &self.full {
            None => budget,
            Some(full) => {
                // The reserve was released so that critical records still fit.
                let extra = if class == RecordClass::Critical {
                    (self.space.reserve_bytes / 2 / self.budget.page_size) as i64
                } else {
                    0
                };
                budget.min(full.limit_pages + extra)
            }
        }
    }

    /// The disk is full (or about to be): release the reserve, stop the file from growing,
    /// raise `disk_full` (once).
    fn enter_full(&mut self, conn: &Connection, reason: String) {
        let released = self.reserve.as_ref().is_some_and(Reserve::release);
        if self.full.is_some() {
            return;
        }
        let limit_pages = self.page_count(conn).unwrap_or(0);
        tracing::error!(
            reason,
            released_reserve = released,
            db_pages = limit_pages,
            "disk full: the database stops growing; older telemetry makes room, critical records use the reserve"
        );
        self.metrics.store.disk_full.store(1, Relaxed);
        self.full = Some(Full { limit_pages, reason });
    }

    /// Whether an alarm change for `name` is already under way.
    fn alarm_queued(&self, name: &str) -> bool {
        self.pending_alarms
            .iter()
            .chain(&self.txn_alarms)
            .any(|c| c.name == name)
    }

    /// Queues the alarm changes that make the committed set match the conditions.
    fn reconcile_alarms(&mut self) {
        let free = self.last_free;
        let conditions = [
            (
                "disk_full",
                self.full.is_some(),
                match &self.full {
                    Some(f) => {
                        json!({"reason": f.reason, "free_bytes": free, "reserve_bytes": self.space.reserve_bytes})
                    }
                    None => json!({"free_bytes": free, "reserve_bytes": self.space.reserve_bytes}),
                },
            ),
            (
                "disk_low",
                self.disk_low,
                json!({"free_bytes": free, "disk_low_bytes": self.space.disk_low_bytes}),
            ),
            (
                "backlog_eviction",
                self.eviction.is_some(),
                json!({"evicted_rows": self.eviction.unwrap_or(0),
                       "reason": if self.full.is_some() { "the disk is full" } else { "the backlog reached storage.max_bytes while the uplink could not drain it" },
                       "max_bytes": self.budget.max_bytes}),
            ),
        ];
        for (name, holds, detail) in conditions {
            if holds != self.alarms.is_active(name, "") && !self.alarm_queued(name) {
                let to = if holds { AlarmState::Raised } else { AlarmState::Cleared };
                self.pending_alarms.push(AlarmChange::new(name, "", to, detail));
            }
        }
    }
}

/// What a job sees: the connection (inside the batch transaction) and the outbox operations.
pub struct WriteCtx<'a> {
    conn: &'a Connection,
    state: &'a mut WriterState,
}

impl WriteCtx<'_> {
    /// The edge's id (for records that name their own topic).
    pub fn edge_id(&self) -> &str {
        &self.state.edge_id
    }

    /// The connection, inside the current transaction.
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// An alarm change made in this transaction (see `store::alarms::change_in`).
    pub(super) fn committed_alarm(&mut self, change: AlarmChange) {
        self.state.txn_alarms.push(change);
    }

    /// Appends a record to the outbox, evicting older rows of no higher priority when the budget
    /// (or a full disk) requires it. [`StoreError::Full`] when it fits nowhere.
    pub fn append(&mut self, record: &Record) -> Result<i64, StoreError> {
        let cost = record.cost();
        if cost > self.state.budget.main_bytes / 4 {
            return Err(StoreError::TooLarge(cost));
        }
        // Pages the row may take with its two index entries and partly filled pages.
        let need = (2 * cost).div_ceil(self.state.budget.page_size) as i64 + 1;
        loop {
            let used = self.state.used_pages(self.conn)?;
            if used + need <= self.state.limit_pages(record.class) {
                break;
            }
            if self.evict_step(record.class)? == 0 {
                return Err(self.refuse(record.class));
            }
        }
        let seq = self.state.next_seq;
        if let Some(mark) = self.state.mark.as_mut() {
            mark.cover(seq)?;
        }
        let payload = with_envelope(
            &record.body,
            record.envelope,
            &self.state.edge_id,
            seq,
            record.received_at_ms,
        );
        let insert = |conn: &Connection| {
            conn.prepare_cached(
                "INSERT INTO outbox(seq, device, topic, class, created_ms, bytes, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                seq,
                record.device,
                record.topic,
                record.class as i64,
                record.received_at_ms,
                cost as i64,
                payload
            ])
        };
        match insert(self.conn) {
            Ok(_) => {}
            // The page cache spilled onto a full disk: from now on the file does not grow.
            Err(e) if is_full(&e) => {
                self.state.enter_full(self.conn, format!("insert: {e}"));
                if self.evict_step(record.class)? == 0 {
                    return Err(self.refuse(record.class));
                }
                insert(self.conn).map_err(|e| {
                    if is_full(&e) {
                        self.refuse(record.class)
                    } else {
                        e.into()
                    }
                })?;
            }
            Err(e) => return Err(e.into()),
        }
        if self.state.journal.load(Relaxed) && is_tag_report(&record.topic) {
            self.journal(seq, record)?;
        }
        if self.state.tap.receiver_count() > 0 {
            self.state.tapped.push(Arc::new(Committed {
                seq,
                device: record.device.clone(),
                topic: record.topic.clone(),
                received_at_ms: record.received_at_ms,
                body: record.body.clone(),
            }));
        }
        self.state.next_seq += 1;
        self.state.backlog_bytes += cost;
        self.state.backlog_rows += 1;
        self.state.txn_bytes += cost;
        self.state.txn_rows += 1;
        self.state.metrics.store.committed_total.fetch_add(1, Relaxed);
        Ok(seq)
    }

    /// Keeps a committed tag report for fusion until its passages are committed (one indexed
    /// insert; the row goes with fusion's passage transaction).
    fn journal(&mut self, seq: i64, record: &Record) -> Result<(), StoreError> {
        let fusion = &self.state.metrics.fusion;
        if fusion.journal_rows.load(Relaxed) >= MAX_JOURNAL_ROWS {
            fusion.journal_skipped_total.fetch_add(1, Relaxed);
            return Ok(());
        }
        self.conn
            .prepare_cached("INSERT INTO fusion_journal(seq, topic, received_ms, body) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![seq, record.topic, record.received_at_ms, record.body])?;
        fusion.journal_rows.fetch_add(1, Relaxed);
        Ok(())
    }

    fn refuse(&self, class: RecordClass) -> StoreError {
        self.state.metrics.store.refused_total.fetch_add(1, Relaxed);
        match &self.state.full {
            Some(full) => StoreError::Full(format!(
                "the disk is full ({}) and no older record of {class:?} or lower priority is left to evict",
                full.reason
            )),
            None => StoreError::Full(format!(
                "storage.max_bytes ({} bytes) is taken by records of higher priority than {class:?} and by the other tables",
                self.state.budget.max_bytes
            )),
        }
    }

    /// Evicts the oldest rows of the lowest class present, up to `up_to`; returns how many.
    fn evict_step(&mut self, up_to: RecordClass) -> Result<usize, StoreError> {
        for class in RecordClass::ALL.into_iter().filter(|c| *c <= up_to) {
            let mut stmt = self.conn.prepare_cached(
                "DELETE FROM outbox WHERE seq IN
                   (SELECT seq FROM outbox WHERE class = ?1 ORDER BY seq LIMIT ?2)
                 RETURNING bytes",
            )?;
            let freed: Vec<i64> = stmt
                .query_map(params![class as i64, EVICT_CHUNK], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            if freed.is_empty() {
                continue;
            }
            let n = freed.len();
            self.state.backlog_bytes = self
                .state
                .backlog_bytes
                .saturating_sub(freed.iter().sum::<i64>() as u64);
            self.state.backlog_rows -= n as i64;
            // Evicted rows dirty pages too (the indexes' entries of every device among them):
            // the transaction commits early after this job.
            self.state.txn_rows += n as u64;
            let total = self.state.metrics.store.evicted_total.fetch_add(n as u64, Relaxed) + n as u64;
            self.conn.execute(
                "INSERT OR REPLACE INTO kv(key, value) VALUES('evicted_total', ?1)",
                [total.to_string()],
            )?;
            let first = self.state.eviction.is_none();
            *self.state.eviction.get_or_insert(0) += n as u64;
            if first {
                tracing::warn!(class = ?class, rows = n, full_disk = self.state.full.is_some(), "backlog full: evicting the oldest rows");
            } else {
                tracing::debug!(class = ?class, rows = n, "evicted");
            }
            return Ok(n);
        }
        Ok(0)
    }

    /// Deletes acknowledged rows (missing ones, e.g. evicted meanwhile, are ignored).
    pub fn delete_rows(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING bytes")?;
        for seq in seqs {
            if let Some(bytes) = stmt
                .query_row([seq], |r| r.get::<_, i64>(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?
            {
                self.state.backlog_bytes = self.state.backlog_bytes.saturating_sub(bytes as u64);
                self.state.backlog_rows -= 1;
                self.state.txn_rows += 1;
            }
        }
        // The eviction episode ends once the backlog has drained to half the budget.
        if self.state.eviction.is_some() && self.state.full.is_none() {
            let used = self.state.used_pages(self.conn)?;
            if used < self.state.budget.main_pages() / 2 {
                let evicted = self.state.eviction.take().unwrap_or(0);
                tracing::info!(evicted, "backlog drained to half the budget");
                if !self.state.alarm_queued("backlog_eviction") {
                    self.state.pending_alarms.push(AlarmChange::new(
                        "backlog_eviction",
                        "",
                        AlarmState::Cleared,
                        json!({"evicted_rows": evicted}),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The writer thread's loop; returns when asked to stop or when every handle is gone.
pub(super) fn run(
    conn: Connection,
    mut state: WriterState,
    mut jobs: mpsc::Receiver<Msg>,
    committed: watch::Sender<i64>,
) {
    // Alarms found while opening (a corrupt database) are committed before anything else.
    maintain(&conn, &mut state, &committed);
    let mut stopping = false;
    while !stopping {
        let Some(first) = jobs.blocking_recv() else { break };
        let mut batch = Vec::new();
        match first {
            Msg::Job(j) => batch.push(j),
            Msg::Tick => {}
            Msg::Stop => stopping = true,
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Tick) => {}
                Ok(Msg::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut state, batch, &committed);
        }
        maintain(&conn, &mut state, &committed);
    }
    // Jobs queued after Stop are answered with Closed by dropping them (their senders see an error).
    jobs.close();
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::debug!("checkpoint at close: {e}");
    }
    tracing::debug!("store writer stopped");
}

/// Runs one job in its own savepoint; returns its completion.
fn run_job(conn: &Connection, state: &mut WriterState, job: Job) -> super::Completion {
    let _ = conn.execute_batch("SAVEPOINT job");
    let alarms_before = state.txn_alarms.len();
    let tapped_before = state.tapped.len();
    let mut ctx = WriteCtx { conn, state };
    let (ok, completion) = job(&mut ctx);
    if ok {
        let _ = conn.execute_batch("RELEASE job");
    } else {
        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
        state.txn_alarms.truncate(alarms_before);
        state.tapped.truncate(tapped_before);
        state.dirty = true;
    }
    completion
}

/// Makes the queued alarm changes inside the open transaction. A change that cannot be made
/// (no space even for a critical record) stays queued for the next transaction.
fn apply_pending_alarms(conn: &Connection, state: &mut WriterState) {
    state.reconcile_alarms();
    // Each change may queue another (an alarm record that evicts raises `backlog_eviction`).
    for _ in 0..8 {
        let pending = std::mem::take(&mut state.pending_alarms);
        if pending.is_empty() {
            return;
        }
        let mut kept = Vec::new();
        for change in pending {
            let _ = conn.execute_batch("SAVEPOINT alarm");
            let before = state.txn_alarms.len();
            let tapped_before = state.tapped.len();
            match change_in(&mut WriteCtx { conn, state }, &change) {
                Ok(_) => {
                    let _ = conn.execute_batch("RELEASE alarm");
                }
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK TO alarm; RELEASE alarm");
                    state.txn_alarms.truncate(before);
                    state.tapped.truncate(tapped_before);
                    tracing::warn!(alarm = change.name, "cannot record the alarm change yet: {e}");
                    kept.push(change);
                }
            }
        }
        if !kept.is_empty() {
            state.pending_alarms.extend(kept);
            return;
        }
        state.reconcile_alarms();
    }
}

/// COMMIT; on a full disk, releases the reserve and tries once more while the transaction is
/// still open.
fn commit(conn: &Connection, state: &mut WriterState) -> Result<(), StoreError> {
    match conn.execute_batch("COMMIT") {
        Ok(()) => Ok(()),
        Err(e) if is_full(&e) => {
            state.enter_full(conn, format!("commit: {e}"));
            if !conn.is_autocommit() {
                match conn.execute_batch("COMMIT") {
                    Ok(()) => return Ok(()),
                    Err(e) if !is_full(&e) => return Err(e.into()),
                    Err(_) => {}
                }
            }
            state.metrics.store.refused_total.fetch_add(1, Relaxed);
            Err(StoreError::Full(format!("commit: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// After COMMIT: counters, the shared alarm set, the committed seq, then the completions.
fn finish(
    conn: &Connection,
    state: &mut WriterState,
    outcome: Result<(), StoreError>,
    completions: Vec<super::Completion>,
    committed: &watch::Sender<i64>,
) {
    match &outcome {
        Ok(()) => {
            let changes = std::mem::take(&mut state.txn_alarms);
            for c in &changes {
                match c.to {
                    AlarmState::Raised => tracing::warn!(alarm = c.name, detail = %c.detail, "alarm raised"),
                    AlarmState::Cleared => tracing::info!(alarm = c.name, detail = %c.detail, "alarm cleared"),
                }
            }
            state.alarms.apply(&changes);
            for record in state.tapped.drain(..) {
                // No receiver left, or one lagging behind: live views only, nothing is lost here.
                let _ = state.tap.send(record);
            }
        }
        Err(e) => {
            tracing::error!("commit failed, {} jobs not done: {e}", completions.len());
            state.metrics.store.write_errors_total.fetch_add(1, Relaxed);
            let _ = conn.execute_batch("ROLLBACK");
            state.dirty = true;
            state.tapped.clear();
        }
    }
    if state.dirty {
        if let Err(e) = state.reload(conn) {
            tracing::error!("cannot reload store counters: {e}");
        }
    } else {
        state.publish_gauges(conn);
    }
    state.metrics.store.commits_total.fetch_add(1, Relaxed);
    committed.send_replace(state.last_seq());
    for c in completions {
        c(outcome.clone());
    }
}

/// Runs `batch` in one or more transactions (a new one whenever the records appended reach the
/// transaction's share of the WAL) and completes each job after its transaction's commit.
fn commit_batch(conn: &Connection, state: &mut WriterState, batch: Vec<Job>, committed: &watch::Sender<i64>) {
    let mut jobs = batch.into_iter();
    let mut next = jobs.next();
    while next.is_some() {
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // The jobs never ran; dropping them makes their callers see `Closed` (not acknowledged).
            state.metrics.store.write_errors_total.fetch_add(1, Relaxed);
            tracing::error!("cannot begin a transaction, jobs failed: {e}");
            return;
        }
        state.txn_bytes = 0;
        state.txn_rows = 0;
        let mut completions = Vec::new();
        while let Some(job) = next.take() {
            completions.push(run_job(conn, state, job));
            next = jobs.next();
            // Committing early keeps one transaction's frames well within the WAL's share.
            if state.txn_bytes >= state.budget.transaction_bytes() || state.txn_rows >= state.budget.transaction_rows()
            {
                break;
            }
        }
        apply_pending_alarms(conn, state);
        let outcome = commit(conn, state);
        finish(conn, state, outcome, completions, committed);
    }
}

/// Looks at the file system and the WAL after every batch and every tick: free space and its
/// alarms, entering and leaving the full-disk state, the reserve, checkpoints; then commits what
/// that requires (alarm changes, giving free pages back).
fn maintain(conn: &Connection, state: &mut WriterState, committed: &watch::Sender<i64>) {
    // A statvfs and three stats: cheap enough after every commit, and a disk can fill within a
    // fraction of a second, so the writer stops the file from growing before SQLite meets the end
    // of the disk.
    let Some(path) = state.db_path.clone() else {
        return;
    };
    let files = FileSizes::of(&path);
    state.metrics.store.db_bytes.store(files.total() as i64, Relaxed);
    state.metrics.store.wal_bytes.store(files.wal as i64, Relaxed);
    // Free space under the guard counts as full: what one WAL cycle and the checkpoint that
    // follows it may still need.
    let guard = (state.budget.wal_bytes / 2).max(128 << 10);
    let reserve_bytes = state.space.reserve_bytes;
    if let Some(free) = free_bytes(&path) {
        let held = state.reserve.as_ref().is_some_and(Reserve::held);
        // Room to write the reserve again and still have twice the guard: a whole guard of
        // hysteresis above the level that enters the full state, so WAL cycles and the pages the
        // next batches take do not raise and clear `disk_full` over and over around the line.
        let room = free >= reserve_bytes.saturating_add(2 * guard) || (held && free >= 2 * guard);
        match (&state.full, room) {
            (None, _) if free < guard => {
                state.enter_full(conn, format!("{free} bytes free, under the guard of {guard}"));
            }
            (None, true) if !held => restore_reserve(conn, state),
            (Some(_), true) => {
                restore_reserve(conn, state);
                if state.reserve.as_ref().is_none_or(Reserve::held) {
                    tracing::info!(
                        free,
                        "disk space returned: the reserve is back, the database may grow again"
                    );
                    state.full = None;
                    state.metrics.store.disk_full.store(0, Relaxed);
                }
            }
            _ => {}
        }
        // Measured again: the reserve may just have been written or released.
        let free = free_bytes(&path).unwrap_or(free);
        tracing::trace!(free, files = files.total(), wal = files.wal, "space check");
        state.last_free = Some(free);
        state.metrics.store.disk_free_bytes.store(free as i64, Relaxed);
        if free < state.space.disk_low_bytes {
            state.disk_low = true;
        } else if free >= state.space.disk_low_bytes + state.space.disk_low_bytes / 4 {
            state.disk_low = false;
        }
    }
    // The WAL stays within its share: checkpoint once it holds more than a quarter of it.
    if files.wal > state.budget.wal_bytes / 4 {
        checkpoint(conn, state);
    }
    // On a full or low disk, pages freed by delivered rows go back to the file system.
    let free_pages: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap_or(0);
    let keep = (reserve_bytes / state.budget.page_size) as i64;
    let vacuum = if state.full.is_some() || state.disk_low {
        (free_pages - keep).clamp(0, state.budget.vacuum_pages())
    } else {
        0
    };
    state.reconcile_alarms();
    if vacuum == 0 && state.pending_alarms.is_empty() {
        return;
    }
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::warn!("maintenance transaction: {e}");
        return;
    }
    state.txn_bytes = 0;
    if vacuum > 0 {
        if let Err(e) = incremental_vacuum(conn, vacuum) {
            tracing::warn!("giving free pages back: {e}");
        }
    }
    apply_pending_alarms(conn, state);
    let outcome = commit(conn, state);
    finish(conn, state, outcome, Vec::new(), committed);
    if vacuum > 0 {
        // The main file shrinks when the checkpoint writes the vacuumed pages back.
        checkpoint(conn, state);
    }
}

/// Frees up to `pages` pages from the end of the file. The pragma frees one page per step, so it
/// is stepped to the end.
pub(super) fn incremental_vacuum(conn: &Connection, pages: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

fn restore_reserve(conn: &Connection, state: &mut WriterState) {
    let Some(reserve) = &state.reserve else {
        return;
    };
    if let Err(e) = reserve.restore() {
        state.enter_full(conn, format!("cannot write the {} byte reserve: {e}", reserve.bytes()));
    }
}

fn checkpoint(conn: &Connection, state: &mut WriterState) {
    let result: rusqlite::Result<(i64, i64, i64)> = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    });
    state.metrics.store.checkpoints_total.fetch_add(1, Relaxed);
    match result {
        Ok((_, log, done)) if log > 2 * state.budget.checkpoint_frames() && done < log => {
            // Readers kept the checkpoint from finishing and the WAL keeps growing: wait for them
            // (busy_timeout) so the next write starts the WAL over.
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(RESTART);") {
                if is_full(&e) {
                    state.enter_full(conn, format!("checkpoint: {e}"));
                }
            }
        }
        Ok(_) => {}
        Err(e) if is_full(&e) => state.enter_full(conn, format!("checkpoint: {e}")),
        Err(e) => tracing::warn!("checkpoint: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{schema, Store, StoreOptions};
    use super::*;

    fn telemetry(device: &str, n: usize) -> Record {
        Record::new(
            device,
            format!("t/{device}"),
            RecordClass::Telemetry,
            &json!({"n": n, "pad": "x".repeat(200)}),
        )
    }

    fn open(dir: &std::path::Path, max_bytes: u64) -> (Store, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let (s, _) = Store::open(
            StoreOptions {
                path: dir.join("s.db"),
                max_bytes,
                edge_id: "cab".into(),
            },
            metrics.clone(),
        )
        .unwrap();
        (s, metrics)
    }

    #[tokio::test]
    async fn the_tap_sees_committed_records_only_and_not_those_of_a_failed_job() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let mut tap = store.tap();
        let kept = store.append(telemetry("d", 1)).await.unwrap();
        let failed = store
            .write(|ctx| {
                ctx.append(&telemetry("d", 2))?;
                Err::<(), _>(StoreError::Io("the job fails after appending".into()))
            })
            .await;
        assert!(failed.is_err());
        let also = store.append(telemetry("e", 3)).await.unwrap();
        let first = tap.recv().await.unwrap();
        let second = tap.recv().await.unwrap();
        assert_eq!((first.seq, first.device.as_str()), (kept, "d"));
        assert_eq!((second.seq, second.topic.as_str()), (also, "t/e"));
        assert!(tap.try_recv().is_err(), "the failed job's record was not tapped");
        store.close().await;
    }

    #[tokio::test]
    async fn appends_get_increasing_seqs_that_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let a = store.append(telemetry("d", 1)).await.unwrap();
        let b = store.append(telemetry("d", 2)).await.unwrap();
        assert_eq!(b, a + 1);
        store.acknowledge(vec![a, b]).await.unwrap();
        store.close().await;
        let (store, _) = open(dir.path(), 1 << 20);
        let c = store.append(telemetry("d", 3)).await.unwrap();
        assert!(c > b, "seq {c} reused after delete and reopen (last {b})");
        store.close().await;
    }

    #[tokio::test]
    async fn concurrent_appends_are_group_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, metrics) = open(dir.path(), 64 << 20);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.append(telemetry("d", i)).await.unwrap() })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 200);
        let commits = metrics.store.commits_total.load(Relaxed);
        assert!(commits < 200, "{commits} commits for 200 appends: no grouping");
        store.close().await;
    }

    #[tokio::test]
    async fn budget_evicts_telemetry_before_critical_and_raises_one_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 1 << 20;
        let (store, metrics) = open(dir.path(), budget);
        let login = Record::new("d", "t/login", RecordClass::Critical, &json!({"login": true}));
        let login_seq = store.append(login).await.unwrap();
        let mut largest = 0;
        for i in 0..700 {
            let record = Record::new(
                "d",
                "t/d",
                RecordClass::Telemetry,
                &json!({"n": i, "pad": "x".repeat(3000)}),
            );
            store.append(record).await.unwrap();
            let files = super::super::space::FileSizes::of(&dir.path().join("s.db")).total();
            largest = largest.max(files);
            assert!(
                files <= budget,
                "the database files take {files} bytes, over the budget {budget}: {:?}",
                super::super::space::FileSizes::of(&dir.path().join("s.db"))
            );
        }
        println!("budget {budget}: the files took at most {largest} bytes");
        assert!(metrics.store.evicted_total.load(Relaxed) > 0);
        let (has_login, alarms, oldest_n): (bool, i64, i64) = store
            .read(move |c| {
                let has: bool = c.query_row("SELECT COUNT(*) FROM outbox WHERE seq=?1", [login_seq], |r| {
                    r.get::<_, i64>(0)
                })? == 1;
                let alarms = c.query_row("SELECT COUNT(*) FROM outbox WHERE topic='edge/cab/alarm'", [], |r| {
                    r.get(0)
                })?;
                let payload: Vec<u8> = c.query_row(
                    "SELECT payload FROM outbox WHERE class=0 ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )?;
                let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                Ok((has, alarms, v["n"].as_i64().unwrap()))
            })
            .await
            .unwrap();
        assert!(has_login, "a critical record was evicted while telemetry remained");
        assert_eq!(alarms, 1, "the eviction alarm must be raised exactly once");
        assert!(oldest_n > 0, "the oldest telemetry must be the first evicted");
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_job_does_not_poison_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let bad = store.write(|ctx| Ok(ctx.conn().execute("INSERT INTO nosuchtable VALUES(1)", [])?));
        let good = store.append(telemetry("d", 1));
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert!(good.is_ok());
        store.close().await;
    }

    #[tokio::test]
    async fn a_fresh_database_starts_above_the_sequence_mark_whatever_the_clock_says() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        // A mark far above the clock's base: the situation of a cabinet booting at 1970.
        let mark = crate::time::now_ms() * 1000 + 1_000_000_000_000_000;
        std::fs::write(super::super::files::beside(&db, ".seq"), format!("{mark}\n")).unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let first = store.append(telemetry("d", 1)).await.unwrap();
        assert!(first > mark, "seq {first} not above the mark {mark}");
        store.close().await;
        // The database is lost (corrupt, moved aside): the new one still never repeats a seq.
        std::fs::write(&db, vec![0x5a; 8192]).unwrap();
        let _ = std::fs::remove_file(super::super::files::beside(&db, "-wal"));
        let (store, _) = open(dir.path(), 1 << 20);
        let again = store.append(telemetry("d", 2)).await.unwrap();
        assert!(again > first, "seq {again} repeats (first run reached {first})");
        store.close().await;
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open(dir.path(), 1 << 20);
        let second = Store::open(
            StoreOptions {
                path: dir.path().join("s.db"),
                max_bytes: 1 << 20,
                edge_id: "cab".into(),
            },
            Arc::new(Metrics::default()),
        );
        assert!(matches!(
            second,
            Err(StoreError::Unavailable(super::super::OpenError::OtherInstance(_)))
        ));
        store.close().await;
        let (store, _) = open(dir.path(), 1 << 20);
        store.close().await;
    }

    #[test]
    fn writer_state_is_derivable_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = schema::open(&dir.path().join("x.db"), "t", 100).unwrap();
        let st = WriterState::load(&conn, 1 << 20, "cab".into(), Arc::new(Metrics::default()), None).unwrap();
        assert_eq!(st.next_seq, 101);
        assert_eq!(st.backlog_rows, 0);
    }
}
