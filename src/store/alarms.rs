//! The storage side of the edge's own alarms (`ops::alarms` is the service API): the
//! `edge_alarms` table, the alarm record's shape, and the active set shared by the writer and the
//! service. A condition changes in the same transaction that appends its record, guarded by the
//! table row, and the shared set follows only once that transaction committed, so the table, the
//! published records and what the service reports never disagree.
//!
//! The writer raises its own conditions here too (`backlog_eviction`, `store_corrupt`,
//! `disk_low`, `disk_full`): there is one alarm mechanism. Must not: decide when a condition holds.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::outbox::{Record, RecordClass};
use super::writer::WriteCtx;
use super::StoreError;

/// One active alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlarm {
    pub name: String,
    pub subject: String,
    pub raised_ms: i64,
    pub detail: Value,
}

/// Whether a change raises or clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmState {
    Raised,
    Cleared,
}

impl AlarmState {
    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Raised => "raised",
            AlarmState::Cleared => "cleared",
        }
    }
}

/// A committed or pending change of one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmChange {
    pub name: String,
    pub subject: String,
    pub to: AlarmState,
    pub detail: Value,
    pub at_ms: i64,
}

impl AlarmChange {
    pub fn new(name: &str, subject: &str, to: AlarmState, detail: Value) -> AlarmChange {
        AlarmChange {
            name: name.to_string(),
            subject: subject.to_string(),
            to,
            detail,
            at_ms: crate::time::now_ms(),
        }
    }
}

/// The active conditions as committed; shared by the writer and `ops::alarms::Alarms`.
#[derive(Debug, Default)]
pub struct AlarmSet {
    active: Mutex<BTreeMap<(String, String), ActiveAlarm>>,
}

impl AlarmSet {
    /// Loads the table.
    pub fn load(conn: &Connection) -> Result<AlarmSet, StoreError> {
        let mut stmt = conn.prepare("SELECT name, subject, raised_ms, detail FROM edge_alarms")?;
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
        Ok(AlarmSet {
            active: Mutex::new(
                rows.into_iter()
                    .map(|a| ((a.name.clone(), a.subject.clone()), a))
                    .collect(),
            ),
        })
    }

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

    /// Applies committed changes.
    pub(super) fn apply(&self, changes: &[AlarmChange]) {
        if let Ok(mut active) = self.active.lock() {
            for c in changes {
                let key = (c.name.clone(), c.subject.clone());
                match c.to {
                    AlarmState::Raised => {
                        active.entry(key).or_insert_with(|| ActiveAlarm {
                            name: c.name.clone(),
                            subject: c.subject.clone(),
                            raised_ms: c.at_ms,
                            detail: c.detail.clone(),
                        });
                    }
                    AlarmState::Cleared => {
                        active.remove(&key);
                    }
                }
            }
        }
    }
}

/// Moves a condition inside a write job: changes the row and appends the record when the row
/// changed. Returns whether it changed (a repeated raise or clear changes nothing).
pub fn change_in(ctx: &mut WriteCtx<'_>, change: &AlarmChange) -> Result<bool, StoreError> {
    let changed = match change.to {
        AlarmState::Raised => ctx.conn().execute(
            "INSERT OR IGNORE INTO edge_alarms(name, subject, raised_ms, detail) VALUES (?1, ?2, ?3, ?4)",
            params![change.name, change.subject, change.at_ms, change.detail.to_string()],
        )?,
        AlarmState::Cleared => ctx.conn().execute(
            "DELETE FROM edge_alarms WHERE name = ?1 AND subject = ?2",
            params![change.name, change.subject],
        )?,
    } == 1;
    if changed {
        let record = alarm_record(
            ctx.edge_id(),
            &change.name,
            change.to.name(),
            &change.subject,
            &change.detail,
        );
        ctx.append(&record)?;
        if change.name == "backlog_eviction" {
            // Builds before schema 5 keep this condition in `kv`: keep it there too, so a
            // rollback neither loses nor repeats it.
            match change.to {
                AlarmState::Raised => ctx.conn().execute(
                    "INSERT OR REPLACE INTO kv(key, value) VALUES('eviction_alarm', 'raised')",
                    [],
                )?,
                AlarmState::Cleared => ctx.conn().execute("DELETE FROM kv WHERE key = 'eviction_alarm'", [])?,
            };
        }
        ctx.committed_alarm(change.clone());
    }
    Ok(changed)
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
    Record::new(
        "edge",
        crate::topics::edge(edge_id, crate::topics::EdgeTopic::Alarm),
        RecordClass::Critical,
        &body,
    )
}
