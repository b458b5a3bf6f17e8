//! The uplink's publish window as a pure state machine (in the manner of rumqttc's `state.rs`):
//! which publishes are in flight under which packet id, which outbox rows their PUBACKs
//! acknowledged, and whether the window has room worth a read of the outbox. No runtime and no
//! MQTT client: the async shell (`super::Session`) feeds it what it handed to rumqttc and what
//! rumqttc reported, and acts on what it returns.
//!
//! rumqttc does not return packet ids from `publish`; it processes requests in order and reports
//! `Outgoing::Publish(pkid)` for each, so publishes are matched to pkids in FIFO order.
//! `Outgoing::AwaitAck(pkid)` marks a publish held back because `pkid` is still in flight (a
//! collision); rumqttc sends it under that pkid right after the pkid's PUBACK, reporting
//! `Outgoing::Publish(pkid)` again.
//!
//! A row is acknowledged (and may be deleted) only when the PUBACK of the pkid it was sent under
//! arrives. A reconnect forgets everything in flight (a fresh client replays nothing of ours;
//! the drain sends those rows again) but keeps the acknowledged rows: they were acknowledged.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Acknowledged rows are handed out for deletion at the latest once this many gathered.
pub const ACK_BATCH: usize = 256;
/// Window slots kept free for status and metrics publishes.
const RESERVED: usize = 2;

/// What a publish handed to the client was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// An outbox row, sent at `sent`.
    Row { seq: i64, sent: Instant },
    /// Status or metrics: not in the outbox.
    Other,
}

/// What a PUBACK meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Puback {
    /// The outbox row `seq` is acknowledged, `latency` after it was handed to the client.
    /// `flush`: enough acknowledged rows gathered to delete them now ([`Window::take_acked`]).
    Row { seq: i64, latency: Duration, flush: bool },
    /// A status or metrics publish.
    Other,
    /// No publish of ours is in flight under this pkid (a duplicate, or one from before a
    /// reconnect): nothing changes.
    Unknown,
}

/// In-flight bookkeeping of one uplink, across its connections.
#[derive(Debug)]
pub struct Window {
    max_inflight: u16,
    /// Publishes handed to the client whose pkid is not known yet, in order.
    unassigned: VecDeque<Tracked>,
    inflight: HashMap<u16, Tracked>,
    /// A publish delayed by a pkid collision: sent once that pkid's PUBACK arrives.
    collided: Option<(u16, Tracked)>,
    /// Acknowledged rows not yet handed out for deletion.
    acked: Vec<i64>,
}

impl Window {
    /// An empty window for a client configured with `max_inflight` (rumqttc's `set_inflight`).
    pub fn new(max_inflight: u16) -> Window {
        Window {
            max_inflight,
            unassigned: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
            acked: Vec::new(),
        }
    }

    /// Publishes handed to the client and not yet acknowledged.
    pub fn used(&self) -> usize {
        self.unassigned.len() + self.inflight.len() + usize::from(self.collided.is_some())
    }

    /// How many more rows may be published now.
    pub fn room(&self) -> usize {
        (self.max_inflight as usize)
            .saturating_sub(RESERVED)
            .saturating_sub(self.used())
    }

    /// Whether the room is worth a read of the outbox: a quarter of the window (batches rather
    /// than one read per PUBACK), or any room at all when nothing is in flight.
    pub fn worth_a_read(&self) -> bool {
        let room = self.room();
        room >= (self.max_inflight as usize / 4).max(1) || (self.used() == 0 && room > 0)
    }

    /// The client accepted a publish (`try_publish` returned Ok).
    pub fn sent(&mut self, what: Tracked) {
        self.unassigned.push_back(what);
    }

    /// rumqttc reported `Outgoing::Publish(pkid)`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        if self.collided.as_ref().is_some_and(|(p, _)| *p == pkid) {
            if let Some((p, t)) = self.collided.take() {
                self.inflight.insert(p, t);
            }
        } else if let Some(t) = self.unassigned.pop_front() {
            self.inflight.insert(pkid, t);
        }
    }

    /// rumqttc reported `Outgoing::AwaitAck(pkid)`: the next publish waits for `pkid`'s PUBACK.
    pub fn on_await_ack(&mut self, pkid: u16) {
        if let Some(t) = self.unassigned.pop_front() {
            self.collided = Some((pkid, t));
        }
    }

    /// A PUBACK for `pkid` arrived at `now`.
    pub fn on_puback(&mut self, pkid: u16, now: Instant) -> Puback {
        match self.inflight.remove(&pkid) {
            Some(Tracked::Row { seq, sent }) => {
                self.acked.push(seq);
                Puback::Row {
                    seq,
                    latency: now.saturating_duration_since(sent),
                    flush: self.acked.len() >= ACK_BATCH,
                }
            }
            Some(Tracked::Other) => Puback::Other,
            None => Puback::Unknown,
        }
    }

    /// The acknowledged rows gathered so far, to delete; empty if none.
    pub fn take_acked(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.acked)
    }

    /// A new connection (a fresh client) starts: nothing is in flight any more. Acknowledged
    /// rows not yet taken stay to be deleted.
    pub fn reconnect(&mut self) {
        self.unassigned.clear();
        self.inflight.clear();
        self.collided = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, sent: Instant) -> Tracked {
        Tracked::Row { seq, sent }
    }

    fn acked_seq(p: Puback) -> Option<i64> {
        match p {
            Puback::Row { seq, .. } => Some(seq),
            _ => None,
        }
    }

    #[test]
    fn publish_then_puback_acknowledges_the_row_with_its_latency() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        assert_eq!((w.used(), w.room()), (0, 8), "two slots stay reserved");
        w.sent(row(7, t0));
        assert_eq!((w.used(), w.room()), (1, 7));
        w.on_outgoing_publish(1);
        assert_eq!(w.used(), 1);
        let p = w.on_puback(1, t0 + Duration::from_millis(40));
        assert_eq!(
            p,
            Puback::Row {
                seq: 7,
                latency: Duration::from_millis(40),
                flush: false
            }
        );
        assert_eq!(w.used(), 0);
        assert_eq!(w.take_acked(), vec![7]);
        assert!(w.take_acked().is_empty(), "taken once");
    }

    #[test]
    fn pkids_are_matched_in_fifo_order_and_pubacks_may_come_out_of_order() {
        let t0 = Instant::now();
        let mut w = Window::new(20);
        w.sent(row(1, t0));
        w.sent(Tracked::Other);
        w.sent(row(2, t0));
        w.sent(row(3, t0));
        for pkid in [5, 6, 7, 8] {
            w.on_outgoing_publish(pkid);
        }
        assert_eq!(acked_seq(w.on_puback(8, t0)), Some(3));
        assert_eq!(w.on_puback(6, t0), Puback::Other);
        assert_eq!(acked_seq(w.on_puback(5, t0)), Some(1));
        assert_eq!(w.used(), 1);
        assert_eq!(acked_seq(w.on_puback(7, t0)), Some(2));
        assert_eq!(w.used(), 0);
        assert_eq!(w.take_acked(), vec![3, 1, 2], "in PUBACK order");
    }

    #[test]
    fn a_puback_before_the_pkid_is_known_changes_nothing() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.sent(row(1, t0));
        assert_eq!(w.on_puback(1, t0), Puback::Unknown);
        assert_eq!(w.used(), 1);
        w.on_outgoing_publish(1);
        assert_eq!(acked_seq(w.on_puback(1, t0)), Some(1));
    }

    #[test]
    fn duplicate_and_unknown_pubacks_are_ignored() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.sent(row(1, t0));
        w.on_outgoing_publish(1);
        assert_eq!(acked_seq(w.on_puback(1, t0)), Some(1));
        assert_eq!(w.on_puback(1, t0), Puback::Unknown, "duplicate");
        assert_eq!(w.on_puback(999, t0), Puback::Unknown, "never sent");
        assert_eq!(w.take_acked(), vec![1], "acknowledged once");
        assert_eq!(w.used(), 0);
    }

    #[test]
    fn an_outgoing_publish_with_nothing_handed_over_is_ignored() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.on_outgoing_publish(3);
        assert_eq!(w.used(), 0);
        assert_eq!(w.on_puback(3, t0), Puback::Unknown);
        w.on_await_ack(3);
        assert_eq!(w.used(), 0);
    }

    #[test]
    fn a_collided_publish_goes_in_flight_under_its_pkid_after_that_pkids_puback() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.sent(row(1, t0));
        w.on_outgoing_publish(4);
        // The next publish would reuse pkid 4, still in flight: rumqttc holds it back.
        w.sent(row(2, t0));
        w.sent(row(3, t0));
        w.on_await_ack(4);
        assert_eq!(w.used(), 3, "the collided publish still occupies a slot");
        // The collided publish is not acknowledged by the PUBACK of the pkid it waits for.
        assert_eq!(acked_seq(w.on_puback(4, t0)), Some(1));
        assert_eq!(w.used(), 2);
        // rumqttc now sends it under pkid 4; a later Outgoing::Publish takes the next in line.
        w.on_outgoing_publish(4);
        w.on_outgoing_publish(5);
        assert_eq!(acked_seq(w.on_puback(5, t0)), Some(3));
        assert_eq!(acked_seq(w.on_puback(4, t0)), Some(2));
        assert_eq!(w.used(), 0);
        assert_eq!(w.take_acked(), vec![1, 3, 2]);
    }

    #[test]
    fn an_outgoing_publish_of_another_pkid_does_not_release_the_collided_one() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.sent(row(1, t0));
        w.on_outgoing_publish(4);
        w.sent(row(2, t0));
        w.on_await_ack(4);
        w.sent(row(3, t0));
        w.on_outgoing_publish(6);
        assert_eq!(acked_seq(w.on_puback(6, t0)), Some(3));
        assert_eq!(w.used(), 2, "row 1 in flight, row 2 still waiting for pkid 4");
        assert_eq!(acked_seq(w.on_puback(4, t0)), Some(1));
        w.on_outgoing_publish(4);
        assert_eq!(acked_seq(w.on_puback(4, t0)), Some(2));
    }

    #[test]
    fn reconnect_mid_flight_forgets_what_is_in_flight_and_keeps_what_was_acknowledged() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        for seq in 1..=4 {
            w.sent(row(seq, t0));
        }
        w.on_outgoing_publish(1);
        w.on_outgoing_publish(2);
        w.on_await_ack(2);
        assert_eq!(acked_seq(w.on_puback(1, t0)), Some(1));
        assert_eq!(w.used(), 3, "one in flight, one collided, one unassigned");
        w.reconnect();
        assert_eq!((w.used(), w.room()), (0, 8));
        // A PUBACK of the old connection's pkid, or the new client's pkids from 1 again,
        // never acknowledge a row of the old connection.
        assert_eq!(w.on_puback(2, t0), Puback::Unknown);
        w.on_outgoing_publish(1);
        assert_eq!(w.used(), 0);
        w.sent(row(2, t0));
        w.on_outgoing_publish(1);
        assert_eq!(acked_seq(w.on_puback(1, t0)), Some(2));
        assert_eq!(
            w.take_acked(),
            vec![1, 2],
            "row 1 was acknowledged before the reconnect"
        );
    }

    #[test]
    fn window_full_leaves_the_reserved_slots_and_saturates() {
        let t0 = Instant::now();
        let mut w = Window::new(6);
        for seq in 0..4 {
            assert!(w.room() > 0);
            w.sent(row(seq, t0));
        }
        assert_eq!((w.used(), w.room()), (4, 0));
        assert!(!w.worth_a_read());
        // Status and metrics use the reserved slots; the room stays 0, never underflows.
        w.sent(Tracked::Other);
        w.sent(Tracked::Other);
        w.sent(Tracked::Other);
        assert_eq!((w.used(), w.room()), (7, 0));
        // Tiny windows: nothing but the reserved slots.
        for max in [0, 1, 2] {
            let w = Window::new(max);
            assert_eq!(w.room(), 0);
            assert!(!w.worth_a_read());
        }
    }

    #[test]
    fn refill_waits_for_a_quarter_of_the_window_or_an_empty_one() {
        let t0 = Instant::now();
        let mut w = Window::new(42); // room 40, a quarter is 10
        assert!(w.worth_a_read(), "empty");
        for seq in 0..40 {
            w.sent(row(seq, t0));
            w.on_outgoing_publish(seq as u16 + 1);
        }
        assert!(!w.worth_a_read(), "full");
        for pkid in 1..=9 {
            w.on_puback(pkid, t0);
            assert!(!w.worth_a_read(), "room {} < 10", w.room());
        }
        w.on_puback(10, t0);
        assert_eq!(w.room(), 10);
        assert!(w.worth_a_read());

        // A window smaller than four rows: any room with nothing in flight, or one slot.
        let mut w = Window::new(3); // room 1
        assert!(w.worth_a_read());
        w.sent(row(0, t0));
        assert!(!w.worth_a_read());

        // Room below a quarter while status/metrics publishes are in flight: wait.
        let mut w = Window::new(40); // room 38, a quarter is 10
        for _ in 0..30 {
            w.sent(Tracked::Other);
        }
        assert_eq!(w.room(), 8);
        assert!(!w.worth_a_read(), "publishes are in flight");
    }

    #[test]
    fn acknowledged_rows_ask_for_a_flush_once_a_batch_gathered() {
        let t0 = Instant::now();
        let mut w = Window::new(u16::MAX);
        for seq in 0..ACK_BATCH as i64 {
            w.sent(row(seq, t0));
            w.on_outgoing_publish(seq as u16 + 1);
        }
        for pkid in 1..ACK_BATCH as u16 {
            assert!(matches!(w.on_puback(pkid, t0), Puback::Row { flush: false, .. }));
        }
        assert!(matches!(
            w.on_puback(ACK_BATCH as u16, t0),
            Puback::Row { flush: true, .. }
        ));
        assert_eq!(w.take_acked().len(), ACK_BATCH);
        w.sent(row(1000, t0));
        w.on_outgoing_publish(1);
        assert!(matches!(w.on_puback(1, t0), Puback::Row { flush: false, .. }));
    }

    #[test]
    fn latency_never_underflows() {
        let t0 = Instant::now();
        let mut w = Window::new(10);
        w.sent(row(1, t0 + Duration::from_secs(1)));
        w.on_outgoing_publish(1);
        assert!(matches!(
            w.on_puback(1, t0),
            Puback::Row {
                latency: Duration::ZERO,
                ..
            }
        ));
    }
}
