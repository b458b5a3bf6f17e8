//! The single writer: one thread owning the write connection, draining the job queue into group
//! commits. A batch is whatever queued up while the previous commit was being fsynced, so batch
//! size follows load: one job per commit when idle, thousands under a burst.
//!
//! Each job runs in its own savepoint so a failing job does not poison its batch. Completions are
//! called only after COMMIT returns (or with the commit's error).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rusqlite::{params, Connection};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::files::SeqMark;
use super::outbox::{with_envelope, Record, RecordClass};
use super::Committed;
use super::{Job, StoreError};
use crate::metrics::Metrics;

/// Messages to the writer thread.
pub(super) enum Msg {
    Job(Job),
    /// Commit what is queued, then exit.
    Stop,
}

/// Jobs per transaction at most, to bound commit latency under a flood.
const MAX_BATCH: usize = 4096;
/// Rows evicted per eviction step.
const EVICT_CHUNK: i64 = 64;

/// In-memory state of the writer, derivable from the database (see [`WriterState::load`]).
pub(super) struct WriterState {
    next_seq: i64,
    backlog_bytes: u64,
    backlog_rows: i64,
    max_bytes: u64,
    edge_id: String,
    metrics: Arc<Metrics>,
    /// An eviction alarm has been raised and not yet cleared (persisted in `kv`).
    eviction_alarm_active: bool,
    /// Rows evicted since the alarm was raised.
    evicted_since_alarm: u64,
    /// Alarms to append at the end of the current job (alarms raised while appending).
    pending_alarms: Vec<Record>,
    /// Set when a savepoint rolled back: counters are reloaded after the commit.
    dirty: bool,
    /// The sequence high-water mark beside the database (absent in unit tests of the writer).
    mark: Option<SeqMark>,
    /// Live views of committed records; fed only while someone listens.
    tap: broadcast::Sender<Arc<Committed>>,
    /// Records of the current batch for the tap, sent once COMMIT succeeded.
    tapped: Vec<Arc<Committed>>,
}

impl WriterState {
    pub(super) fn load(
        conn: &Connection,
        max_bytes: u64,
        edge_id: String,
        metrics: Arc<Metrics>,
        mark: Option<SeqMark>,
    ) -> Result<WriterState, StoreError> {
        let mut s = WriterState {
            next_seq: 1,
            backlog_bytes: 0,
            backlog_rows: 0,
            max_bytes,
            edge_id,
            metrics,
            eviction_alarm_active: false,
            evicted_since_alarm: 0,
            pending_alarms: Vec::new(),
            dirty: false,
            mark,
            tap: broadcast::channel(super::TAP_CAPACITY).0,
            tapped: Vec::new(),
        };
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
        self.eviction_alarm_active = conn
            .query_row("SELECT value FROM kv WHERE key='eviction_alarm'", [], |r| {
                r.get::<_, String>(0)
            })
            .map(|v| v == "raised")
            .unwrap_or(false);
        self.dirty = false;
        self.publish_gauges(conn);
        Ok(())
    }

    pub(super) fn last_seq(&self) -> i64 {
        self.next_seq - 1
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

    /// Queues an edge alarm record (`edge/{id}/alarm`), appended by the next job.
    pub(super) fn queue_alarm(&mut self, alarm: &str, detail: serde_json::Value) {
        let body = json!({"alarm": alarm, "state": "raised", "detail": detail});
        self.pending_alarms.push(Record::new(
            "edge",
            format!("edge/{}/alarm", self.edge_id),
            RecordClass::Critical,
            &body,
        ));
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

    /// Appends a record to the outbox, evicting lower-priority rows if the budget requires it.
    pub fn append(&mut self, record: &Record) -> Result<i64, StoreError> {
        let cost = record.cost();
        if cost > self.state.max_bytes / 4 {
            return Err(StoreError::TooLarge(cost));
        }
        while self.state.backlog_bytes + cost > self.state.max_bytes {
            if self.evict_step()? == 0 {
                return Err(StoreError::TooLarge(cost));
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
            // A full disk: make room by evicting (freed pages are reused) and try once more.
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DiskFull => {
                tracing::warn!("disk full while appending; evicting to make room");
                self.evict_step()?;
                insert(self.conn)?;
            }
            Err(e) => return Err(e.into()),
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
        self.state.metrics.store.committed_total.fetch_add(1, Relaxed);
        Ok(seq)
    }

    /// Evicts the oldest rows of the lowest class present; returns how many were evicted.
    fn evict_step(&mut self) -> Result<usize, StoreError> {
        for class in RecordClass::ALL {
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
            let total = self.state.metrics.store.evicted_total.fetch_add(n as u64, Relaxed) + n as u64;
            self.conn.execute(
                "INSERT OR REPLACE INTO kv(key, value) VALUES('evicted_total', ?1)",
                [total.to_string()],
            )?;
            self.state.evicted_since_alarm += n as u64;
            tracing::warn!(class = ?class, rows = n, "backlog budget reached: evicted oldest rows");
            if !self.state.eviction_alarm_active {
                self.state.eviction_alarm_active = true;
                self.conn.execute(
                    "INSERT OR REPLACE INTO kv(key, value) VALUES('eviction_alarm','raised')",
                    [],
                )?;
                let detail = json!({
                    "reason": "backlog reached storage.max_bytes while the uplink could not drain it",
                    "max_bytes": self.state.max_bytes,
                    "first_evicted_class": format!("{class:?}").to_lowercase(),
                });
                self.state.queue_alarm("backlog_eviction", detail);
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
            }
        }
        // The eviction episode ends once the backlog has drained to half the budget.
        if self.state.eviction_alarm_active && self.state.backlog_bytes < self.state.max_bytes / 2 {
            self.state.eviction_alarm_active = false;
            self.conn.execute("DELETE FROM kv WHERE key='eviction_alarm'", [])?;
            let body = json!({"alarm": "backlog_eviction", "state": "cleared",
                              "detail": {"evicted_rows": self.state.evicted_since_alarm}});
            self.state.evicted_since_alarm = 0;
            let record = Record::new(
                "edge",
                format!("edge/{}/alarm", self.state.edge_id),
                RecordClass::Critical,
                &body,
            );
            self.append(&record)?;
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
    if !state.pending_alarms.is_empty() {
        let job: Job = Box::new(|_ctx| (true, Box::new(|_| {})));
        commit_batch(&conn, &mut state, vec![job], &committed);
    }
    let mut stopping = false;
    while !stopping {
        let Some(first) = jobs.blocking_recv() else { break };
        let mut batch = Vec::new();
        match first {
            Msg::Job(j) => batch.push(j),
            Msg::Stop => stopping = true,
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&conn, &mut state, batch, &committed);
        }
    }
    // Jobs queued after Stop are answered with Closed by dropping them (their senders see an error).
    jobs.close();
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::debug!("checkpoint at close: {e}");
    }
    tracing::debug!("store writer stopped");
}

fn commit_batch(conn: &Connection, state: &mut WriterState, batch: Vec<Job>, committed: &watch::Sender<i64>) {
    let mut completions = Vec::with_capacity(batch.len());
    let begin = conn.execute_batch("BEGIN IMMEDIATE");
    if let Err(e) = begin {
        // The jobs never ran; dropping them makes their callers see `Closed` (not acknowledged).
        state.metrics.store.write_errors_total.fetch_add(1, Relaxed);
        tracing::error!("cannot begin a transaction, {} jobs failed: {e}", batch.len());
        return;
    }
    for job in batch {
        let _ = conn.execute_batch("SAVEPOINT job");
        let tapped_before = state.tapped.len();
        let mut ctx = WriteCtx { conn, state };
        let (ok, completion) = job(&mut ctx);
        if ok {
            let _ = conn.execute_batch("RELEASE job");
        } else {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            state.tapped.truncate(tapped_before);
            state.dirty = true;
        }
        completions.push(completion);
    }
    // Alarms raised by this batch (evictions) or at open commit with it.
    let alarms = std::mem::take(&mut state.pending_alarms);
    for alarm in &alarms {
        if let Err(e) = (WriteCtx { conn, state }).append(alarm) {
            tracing::error!("cannot append edge alarm: {e}");
        }
    }
    let outcome = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if let Err(e) = &outcome {
        tracing::error!("commit failed: {e}");
        state.metrics.store.write_errors_total.fetch_add(1, Relaxed);
        let _ = conn.execute_batch("ROLLBACK");
        state.dirty = true;
        state.tapped.clear();
    }
    for record in state.tapped.drain(..) {
        // No receiver left, or one lagging behind: live views only, nothing is lost here.
        let _ = state.tap.send(record);
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
        let budget = 64 * 1024;
        let (store, metrics) = open(dir.path(), budget);
        let login = Record::new("d", "t/login", RecordClass::Critical, &json!({"login": true}));
        let login_seq = store.append(login).await.unwrap();
        for i in 0..2000 {
            store.append(telemetry("d", i)).await.unwrap();
            assert!(metrics.store.backlog_bytes.load(Relaxed) as u64 <= budget);
        }
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
