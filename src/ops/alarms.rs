//! The edge's own alarms (CONTRACT 4, `edge/{id}/alarm`): every producer (store, fusion, reader
//! supervision, clocks, certificates, OTA) raises and clears through [`Alarms`], which makes "a
//! condition raises once and clears once" hold across callers and restarts.
//!
//! A condition is `(name, subject)`: the alarm's name and what it is about (a reader id, a
//! certificate path, a TID; empty for edge-wide conditions). The active set lives in the
//! `edge_alarms` table and changes in the same transaction that appends the alarm record, so the
//! published record and the stored state never disagree, whatever crashes in between.
//!
//! The table, the record shape and the committed active set live in `store::alarms`, shared with
//! the store's writer, which raises its own conditions (`backlog_eviction`, `store_corrupt`,
//! `disk_low`, `disk_full`) through the same rows: one mechanism for every alarm.
//!
//! Owns: the service API producers call. Must not: decide when a condition holds (the producers
//! do).

use std::sync::Arc;

use serde_json::Value;

pub use crate::store::alarms::{alarm_record, ActiveAlarm, AlarmState};
use crate::store::alarms::{change_in, AlarmChange, AlarmSet};
use crate::store::{Store, StoreError, WriteCtx};

/// The alarm service; shared as `Arc<Alarms>`.
pub struct Alarms {
    store: Store,
    /// The committed active set, shared with the store's writer (which raises its own
    /// conditions: eviction, corruption, disk space).
    active: Arc<AlarmSet>,
}

impl Alarms {
    /// The service over the store's active set.
    pub async fn open(store: Store) -> Result<Arc<Alarms>, StoreError> {
        let active = store.alarm_set();
        Ok(Arc::new(Alarms { store, active }))
    }

    /// Raises `name` about `subject` unless it is already active. Returns whether this call
    /// raised it (and so published a `raised` record).
    pub async fn raise(&self, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        self.change(name, subject, detail, AlarmState::Raised).await
    }

    /// Clears `name` about `subject` if it is active. Returns whether this call cleared it.
    pub async fn clear(&self, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        self.change(name, subject, detail, AlarmState::Cleared).await
    }

    /// Moves a condition to `to`. The row changes in the same transaction that appends the
    /// record, guarded by the row itself, so concurrent callers publish one record between them.
    async fn change(&self, name: &str, subject: &str, detail: Value, to: AlarmState) -> Result<bool, StoreError> {
        if self.is_active(name, subject) == (to == AlarmState::Raised) {
            return Ok(false);
        }
        let change = AlarmChange::new(name, subject, to, detail.clone());
        let changed = self.store.write(move |ctx| change_in(ctx, &change)).await?;
        if changed {
            match to {
                AlarmState::Raised => tracing::warn!(alarm = name, subject, %detail, "alarm raised"),
                AlarmState::Cleared => tracing::info!(alarm = name, subject, %detail, "alarm cleared"),
            }
        }
        Ok(changed)
    }

    /// Raises `name` about `subject` inside a write job (its record and row commit with what
    /// else the job writes: fusion's passages); unless already active. Returns whether it raised.
    pub fn raise_in(ctx: &mut WriteCtx<'_>, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        change_in(ctx, &AlarmChange::new(name, subject, AlarmState::Raised, detail))
    }

    /// Clears `name` about `subject` inside a write job, if active. Returns whether it cleared.
    pub fn clear_in(ctx: &mut WriteCtx<'_>, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        change_in(ctx, &AlarmChange::new(name, subject, AlarmState::Cleared, detail))
    }

    /// Whether `name` about `subject` is active.
    pub fn is_active(&self, name: &str, subject: &str) -> bool {
        self.active.is_active(name, subject)
    }

    /// Every active alarm, ordered by name then subject.
    pub fn active(&self) -> Vec<ActiveAlarm> {
        self.active.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreOptions;
    use serde_json::json;

    async fn open(dir: &std::path::Path) -> (Store, Arc<Alarms>) {
        let (store, _) = Store::open(
            StoreOptions {
                path: dir.join("edge.db"),
                max_bytes: 1 << 24,
                edge_id: "cab".into(),
            },
            Arc::new(Metrics::default()),
        )
        .expect("store");
        let alarms = Alarms::open(store.clone()).await.expect("alarms");
        (store, alarms)
    }

    async fn alarm_bodies(store: &Store) -> Vec<Value> {
        store
            .read(|c| {
                let mut stmt = c.prepare("SELECT payload FROM outbox WHERE topic = 'edge/cab/alarm' ORDER BY seq")?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows.iter().map(|p| serde_json::from_slice(p).expect("json")).collect())
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn a_condition_raises_once_and_clears_once_also_across_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, alarms) = open(dir.path()).await;
        assert!(alarms
            .raise("clock_jump", "", json!({"free_bytes": 10}))
            .await
            .expect("raise"));
        assert!(!alarms
            .raise("clock_jump", "", json!({"free_bytes": 9}))
            .await
            .expect("raise"));
        assert!(alarms
            .raise("reader_offline", "gantry-1", json!({}))
            .await
            .expect("raise"));
        assert_eq!(alarms.active().len(), 2);
        store.close().await;

        let (store, alarms) = open(dir.path()).await;
        assert!(alarms.is_active("clock_jump", ""));
        assert!(!alarms.raise("clock_jump", "", json!({})).await.expect("raise"));
        assert!(alarms
            .clear("clock_jump", "", json!({"free_bytes": 99}))
            .await
            .expect("clear"));
        assert!(!alarms.clear("clock_jump", "", json!({})).await.expect("clear"));
        let bodies = alarm_bodies(&store).await;
        let states: Vec<(String, String)> = bodies
            .iter()
            .map(|b| {
                (
                    b["alarm"].as_str().unwrap_or("").into(),
                    b["state"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        assert_eq!(
            states,
            [
                ("clock_jump".to_string(), "raised".to_string()),
                ("reader_offline".into(), "raised".into()),
                ("clock_jump".into(), "cleared".into()),
            ]
        );
        assert_eq!(bodies[1]["detail"]["subject"], "gantry-1");
        assert!(bodies[0]["edge"]["seq"].is_i64());
        store.close().await;
    }
}
