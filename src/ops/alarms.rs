//! The edge's own alarms (CONTRACT 4, `edge/{id}/alarm`): every producer (store, fusion, reader
//! supervision, clocks, certificates, OTA) raises and clears through [`Alarms`], which makes "a
//! condition raises once and clears once" hold across callers and restarts.
//!
//! A condition is `(name, subject)`: the alarm's name and what it is about (a reader id, a
//! certificate path, a TID; empty for edge-wide conditions). The active set lives in the
//! `edge_alarms` table and changes in the same transaction that appends the alarm record, so the
//! published record and the stored state never disagree, whatever crashes in between.
//!
//! Owns: the `edge_alarms` table and the alarm record's shape. Must not: decide when a condition
//! holds (the producers do).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rusqlite::params;
use serde_json::{json, Value};

use crate::store::{Record, RecordClass, Store, StoreError};
use crate::time::now_ms;

/// One active alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlarm {
    pub name: String,
    pub subject: String,
    pub raised_ms: i64,
    pub detail: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Raised,
    Cleared,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Raised => "raised",
            State::Cleared => "cleared",
        }
    }
}

/// The alarm service; shared as `Arc<Alarms>`.
pub struct Alarms {
    store: Store,
    active: Mutex<BTreeMap<(String, String), ActiveAlarm>>,
}

impl Alarms {
    /// Loads the active set from the store.
    pub async fn open(store: Store) -> Result<Arc<Alarms>, StoreError> {
        let rows = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT name, subject, raised_ms, detail FROM edge_alarms")?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(ActiveAlarm {
                            name: r.get(0)?,
                            subject: r.get(1)?,
                            raised_ms: r.get(2)?,
                            detail: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        let active = rows
            .into_iter()
            .map(|a| ((a.name.clone(), a.subject.clone()), a))
            .collect();
        Ok(Arc::new(Alarms {
            store,
            active: Mutex::new(active),
        }))
    }

    /// Raises `name` about `subject` unless it is already active. Returns whether this call
    /// raised it (and so published a `raised` record).
    pub async fn raise(&self, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        self.change(name, subject, detail, State::Raised).await
    }

    /// Clears `name` about `subject` if it is active. Returns whether this call cleared it.
    pub async fn clear(&self, name: &str, subject: &str, detail: Value) -> Result<bool, StoreError> {
        self.change(name, subject, detail, State::Cleared).await
    }

    /// Moves a condition to `to`. The row changes in the same transaction that appends the
    /// record, guarded by the row itself, so concurrent callers publish one record between them.
    async fn change(&self, name: &str, subject: &str, detail: Value, to: State) -> Result<bool, StoreError> {
        if self.is_active(name, subject) == (to == State::Raised) {
            return Ok(false);
        }
        let (n, s, d) = (name.to_string(), subject.to_string(), detail.clone());
        let raised_ms = now_ms();
        let changed = self
            .store
            .write(move |ctx| {
                let changed = match to {
                    State::Raised => ctx.conn().execute(
                        "INSERT OR IGNORE INTO edge_alarms(name, subject, raised_ms, detail) VALUES (?1, ?2, ?3, ?4)",
                        params![n, s, raised_ms, d.to_string()],
                    )?,
                    State::Cleared => ctx.conn().execute(
                        "DELETE FROM edge_alarms WHERE name = ?1 AND subject = ?2",
                        params![n, s],
                    )?,
                } == 1;
                if changed {
                    let record = alarm_record(ctx.edge_id(), &n, to.name(), &s, &d);
                    ctx.append(&record)?;
                }
                Ok(changed)
            })
            .await?;
        if changed {
            match to {
                State::Raised => tracing::warn!(alarm = name, subject, %detail, "alarm raised"),
                State::Cleared => tracing::info!(alarm = name, subject, %detail, "alarm cleared"),
            }
        }
        if let Ok(mut active) = self.active.lock() {
            let key = (name.to_string(), subject.to_string());
            match to {
                State::Raised => {
                    active.entry(key).or_insert(ActiveAlarm {
                        name: name.to_string(),
                        subject: subject.to_string(),
                        raised_ms,
                        detail,
                    });
                }
                State::Cleared => {
                    active.remove(&key);
                }
            }
        }
        Ok(changed)
    }

    /// Whether `name` about `subject` is active.
    pub fn is_active(&self, name: &str, subject: &str) -> bool {
        self.active
            .lock()
            .map(|a| a.contains_key(&(name.to_string(), subject.to_string())))
            .unwrap_or(false)
    }

    /// Every active alarm, ordered by name then subject.
    pub fn active(&self) -> Vec<ActiveAlarm> {
        self.active
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The record of an alarm change. `subject`, when not empty, is part of the detail so the cloud
/// can tell two conditions of one name apart.
pub fn alarm_record(edge_id: &str, name: &str, state: &str, subject: &str, detail: &Value) -> Record {
    let mut detail = if detail.is_object() {
        detail.clone()
    } else {
        json!({"info": detail})
    };
    if !subject.is_empty() {
        detail["subject"] = json!(subject);
    }
    let body = json!({"alarm": name, "state": state, "detail": detail});
    Record::new("edge", format!("edge/{edge_id}/alarm"), RecordClass::Critical, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::StoreOptions;

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
            .raise("disk_low", "", json!({"free_bytes": 10}))
            .await
            .expect("raise"));
        assert!(!alarms
            .raise("disk_low", "", json!({"free_bytes": 9}))
            .await
            .expect("raise"));
        assert!(alarms
            .raise("reader_offline", "gantry-1", json!({}))
            .await
            .expect("raise"));
        assert_eq!(alarms.active().len(), 2);
        store.close().await;

        let (store, alarms) = open(dir.path()).await;
        assert!(alarms.is_active("disk_low", ""));
        assert!(!alarms.raise("disk_low", "", json!({})).await.expect("raise"));
        assert!(alarms
            .clear("disk_low", "", json!({"free_bytes": 99}))
            .await
            .expect("clear"));
        assert!(!alarms.clear("disk_low", "", json!({})).await.expect("clear"));
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
                ("disk_low".to_string(), "raised".to_string()),
                ("reader_offline".into(), "raised".into()),
                ("disk_low".into(), "cleared".into()),
            ]
        );
        assert_eq!(bodies[1]["detail"]["subject"], "gantry-1");
        assert!(bodies[0]["edge"]["seq"].is_i64());
        store.close().await;
    }
}
