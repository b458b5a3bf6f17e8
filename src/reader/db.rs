//! The reader tables (created by migration v2 in `store/schema.rs`): the desired rules per reader
//! and the active-alarm table. Plain functions over a connection, called inside `Store::write` (so an
//! alarm change commits with its outbox record) or `Store::read`.
//!
//! Must not hold protocol logic: rules arrive as parameters, alarms as `AlarmChange`s.

use rusqlite::{params, Connection};
use serde_json::Value as Json;

use super::rules::{parse_rule, DesiredRules, RuleKind};
use crate::protocol::gbt37987::json::param_to_json;
use crate::protocol::gbt37987::{Dialect, Parameter};
use crate::store::StoreError;

/// Loads the desired rules of `reader`. Rows that no longer parse (a code-table change) are
/// skipped with a log line rather than blocking the reader.
pub fn load_rules(conn: &Connection, reader: &str, dialect: Dialect) -> Result<DesiredRules, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, spec_id, spec FROM reader_rules WHERE reader = ?1 ORDER BY kind, spec_id")?;
    let rows = stmt
        .query_map([reader], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut rules = DesiredRules::default();
    for (kind, id, spec) in rows {
        let kind = if kind == "select" {
            RuleKind::Select
        } else {
            RuleKind::Access
        };
        let parsed = serde_json::from_str::<Json>(&spec)
            .map_err(|e| e.to_string())
            .and_then(|j| parse_rule(kind, &j, &[dialect]).map_err(|e| e.to_string()));
        match parsed {
            Ok((_, param)) => {
                rules.map_mut(kind).insert(id as u32, param);
            }
            Err(e) => tracing::warn!(
                reader,
                id,
                "stored {} rule no longer valid, skipped: {e}",
                kind.as_str()
            ),
        }
    }
    Ok(rules)
}

/// Replaces every rule of `reader` with `rules`.
pub fn replace_rules(conn: &Connection, reader: &str, rules: &DesiredRules, now_ms: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM reader_rules WHERE reader = ?1", [reader])?;
    for (kind, map) in [(RuleKind::Select, &rules.select), (RuleKind::Access, &rules.access)] {
        for (id, param) in map {
            put_rule(conn, reader, kind, *id, param, now_ms)?;
        }
    }
    Ok(())
}

/// Inserts or replaces one rule.
pub fn put_rule(
    conn: &Connection,
    reader: &str,
    kind: RuleKind,
    id: u32,
    param: &Parameter,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO reader_rules(reader, kind, spec_id, spec, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![reader, kind.as_str(), id, param_to_json(param).to_string(), now_ms],
    )?;
    Ok(())
}

/// Deletes one rule; returns whether it existed.
pub fn delete_rule(conn: &Connection, reader: &str, kind: RuleKind, id: u32) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM reader_rules WHERE reader = ?1 AND kind = ?2 AND spec_id = ?3",
        params![reader, kind.as_str(), id],
    )? == 1)
}

/// One active alarm of a reader.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlarm {
    pub alarm_id: u32,
    pub alarm_code: u32,
    pub level: u8,
    pub raised_ms: i64,
    /// The AlarmReportInfo as JSON.
    pub info: Json,
}

impl ActiveAlarm {
    /// The JSON shown on the web page and in the `alarms` command's answer.
    pub fn to_json(&self) -> Json {
        serde_json::json!({
            "alarm_id": self.alarm_id,
            "alarm_code": self.alarm_code,
            "level": self.level,
            "raised_at": crate::time::rfc3339_ms(self.raised_ms),
            "info": self.info,
        })
    }
}

/// A change to the active-alarm table, committed with the alarm's outbox record.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmChange {
    /// The alarm became active (a repeated report refreshes it).
    Raise(ActiveAlarm),
    /// The alarm ended.
    Restore(u32),
}

/// Applies `change` for `reader`.
pub fn apply_alarm(conn: &Connection, reader: &str, change: &AlarmChange) -> Result<(), StoreError> {
    match change {
        AlarmChange::Raise(a) => {
            conn.execute(
                "INSERT OR REPLACE INTO reader_alarms(reader, alarm_id, alarm_code, level, raised_ms, info)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    reader,
                    a.alarm_id,
                    a.alarm_code,
                    a.level,
                    a.raised_ms,
                    a.info.to_string()
                ],
            )?;
        }
        AlarmChange::Restore(id) => {
            conn.execute(
                "DELETE FROM reader_alarms WHERE reader = ?1 AND alarm_id = ?2",
                params![reader, id],
            )?;
        }
    }
    Ok(())
}

/// The active alarms of `reader`, oldest first.
pub fn load_alarms(conn: &Connection, reader: &str) -> Result<Vec<ActiveAlarm>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT alarm_id, alarm_code, level, raised_ms, info FROM reader_alarms WHERE reader = ?1 ORDER BY raised_ms, alarm_id",
    )?;
    let rows = stmt
        .query_map([reader], |r| {
            Ok(ActiveAlarm {
                alarm_id: r.get::<_, i64>(0)? as u32,
                alarm_code: r.get::<_, i64>(1)? as u32,
                level: r.get::<_, i64>(2)? as u8,
                raised_ms: r.get(3)?,
                info: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Json::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Active-alarm counts of every reader (for the metrics at start).
pub fn alarm_counts(conn: &Connection) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT reader, COUNT(*) FROM reader_alarms GROUP BY reader")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::rules::{default_select_spec, SpecState};

    fn conn() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let (c, _) = crate::store::schema::open(&dir.path().join("t.db"), "t", 1).unwrap();
        (dir, c)
    }

    #[test]
    fn rules_are_stored_per_reader_and_read_back() {
        let (_dir, c) = conn();
        let json = serde_json::json!({"select_specs": [default_select_spec(5, SpecState::Active, 0, &[1, 2])]});
        let rules = DesiredRules::from_json(&json, &[Dialect::Hb2017]).unwrap();
        replace_rules(&c, "r1", &rules, 1).unwrap();
        assert_eq!(load_rules(&c, "r1", Dialect::Hb2017).unwrap(), rules);
        assert!(load_rules(&c, "r2", Dialect::Hb2017).unwrap().is_empty());
        assert!(delete_rule(&c, "r1", RuleKind::Select, 5).unwrap());
        assert!(load_rules(&c, "r1", Dialect::Hb2017).unwrap().is_empty());
    }

    #[test]
    fn alarms_are_raised_refreshed_and_restored() {
        let (_dir, c) = conn();
        let alarm = ActiveAlarm {
            alarm_id: 9,
            alarm_code: 1,
            level: 1,
            raised_ms: 10,
            info: serde_json::json!({"AlarmCode": 1}),
        };
        apply_alarm(&c, "r1", &AlarmChange::Raise(alarm.clone())).unwrap();
        apply_alarm(&c, "r1", &AlarmChange::Raise(alarm.clone())).unwrap();
        assert_eq!(load_alarms(&c, "r1").unwrap(), vec![alarm]);
        assert_eq!(alarm_counts(&c).unwrap(), vec![("r1".to_string(), 1)]);
        apply_alarm(&c, "r1", &AlarmChange::Restore(9)).unwrap();
        assert!(load_alarms(&c, "r1").unwrap().is_empty());
    }
}
