//! Which outbox rows to publish next: round-robin over devices, in `seq` order within a device.
//! Pure bookkeeping over a read connection; cursors live for one MQTT session.

use std::collections::{HashMap, HashSet, VecDeque};

use rusqlite::Connection;

use crate::store::outbox::{devices_after, rows_of_device, OutboxRow};
use crate::store::StoreError;

#[derive(Default)]
pub struct Drain {
    /// Devices that may have unsent rows, in round-robin order.
    active: VecDeque<String>,
    in_active: HashSet<String>,
    /// Last seq handed out per device in this session.
    cursor: HashMap<String, i64>,
    /// Rows up to this seq have had their device noted in `active`.
    scanned_seq: i64,
    /// Fetched rows not yet published, in publish order.
    buffered: VecDeque<OutboxRow>,
}

impl Drain {
    pub fn has_buffered(&self) -> bool {
        !self.buffered.is_empty()
    }

    /// Whether a fetch could find rows (some device is still active).
    pub fn may_have_more(&self) -> bool {
        !self.active.is_empty()
    }

    pub fn pop(&mut self) -> Option<OutboxRow> {
        self.buffered.pop_front()
    }

    pub fn push_front(&mut self, row: OutboxRow) {
        self.buffered.push_front(row);
    }

    /// Fetches up to `room` rows, at most `per_device` of each device per round.
    pub fn fetch(
        &mut self,
        conn: &Connection,
        committed_seq: i64,
        room: usize,
        per_device: usize,
    ) -> Result<(), StoreError> {
        if committed_seq > self.scanned_seq {
            let (devices, max) = devices_after(conn, self.scanned_seq)?;
            for d in devices {
                if self.in_active.insert(d.clone()) {
                    self.active.push_back(d);
                }
            }
            self.scanned_seq = max.max(self.scanned_seq);
        }
        let mut budget = room;
        let mut visits = self.active.len();
        while budget > 0 && visits > 0 {
            visits -= 1;
            let Some(device) = self.active.pop_front() else { break };
            let after = self.cursor.get(&device).copied().unwrap_or(0);
            let rows = rows_of_device(conn, &device, after, per_device.min(budget))?;
            if rows.is_empty() {
                // Re-activated by `devices_after` when it gets new rows.
                self.in_active.remove(&device);
                continue;
            }
            if let Some(last) = rows.last() {
                self.cursor.insert(device.clone(), last.seq);
            }
            budget -= rows.len();
            self.buffered.extend(rows);
            self.active.push_back(device);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    fn insert(conn: &Connection, seq: i64, device: &str) {
        conn.execute(
            "INSERT INTO outbox(seq, device, topic, class, created_ms, bytes, payload) VALUES (?1, ?2, 't', 0, 0, 1, x'7b7d')",
            rusqlite::params![seq, device],
        )
        .unwrap();
    }

    #[test]
    fn devices_are_served_round_robin_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = schema::open(&dir.path().join("d.db"), "t", 0).unwrap();
        for s in 1..=100 {
            insert(&conn, s, "backlogged");
        }
        insert(&conn, 101, "live");
        let mut d = Drain::default();
        d.fetch(&conn, 101, 10, 4).unwrap();
        let got: Vec<(String, i64)> = std::iter::from_fn(|| d.pop()).map(|r| (r.device, r.seq)).collect();
        assert!(got.contains(&("live".to_string(), 101)), "live row starved: {got:?}");
        let backlog: Vec<i64> = got.iter().filter(|(d, _)| d == "backlogged").map(|(_, s)| *s).collect();
        assert!(backlog.windows(2).all(|w| w[0] < w[1]), "order broken: {backlog:?}");
        d.fetch(&conn, 101, 10, 4).unwrap();
        let next = d.pop().unwrap();
        assert_eq!(
            next.seq,
            *backlog.last().unwrap() + 1,
            "cursor must continue after the last row handed out"
        );
    }

    #[test]
    fn a_device_with_new_rows_is_reactivated() {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = schema::open(&dir.path().join("d.db"), "t", 0).unwrap();
        insert(&conn, 1, "a");
        let mut d = Drain::default();
        d.fetch(&conn, 1, 10, 4).unwrap();
        assert_eq!(d.pop().unwrap().seq, 1);
        d.fetch(&conn, 1, 10, 4).unwrap();
        assert!(d.pop().is_none());
        insert(&conn, 2, "a");
        d.fetch(&conn, 2, 10, 4).unwrap();
        assert_eq!(d.pop().unwrap().seq, 2);
    }
}
