//! Global bounds: limits that hold across all connections of a protocol, not per connection
//! (1 MiB of reassembly per connection is 20 GiB at 20,000 connections; a global budget is not).
//! Each bound is a configuration key with a safe default and counts in [`LimitCounters`] when it
//! bites (the buffered-bytes bound counts per protocol, `buffer_limit_closed`).
//!
//! Owns: [`ByteBudget`] (an atomic byte count with a ceiling, shared by the connections that draw
//! on it) and the counters. Must not: do I/O; sessions hold a budget and stay pure.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{json, Value};

/// Bytes drawn from one shared ceiling.
#[derive(Debug)]
pub struct ByteBudget {
    limit: u64,
    used: AtomicU64,
}

impl ByteBudget {
    pub fn new(limit: u64) -> ByteBudget {
        ByteBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `n` bytes if they fit under the ceiling.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                let after = used.checked_add(n)?;
                (after <= self.limit).then_some(after)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken earlier.
    pub fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(n)));
    }

    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Default for ByteBudget {
    /// 64 MiB.
    fn default() -> Self {
        ByteBudget::new(64 << 20)
    }
}

/// How often each global bound (and each identity rule) bit.
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// JT/T 808 subpackets refused because all connections together hold `max_reassembly_bytes`.
    pub reassembly_refused_total: AtomicU64,
    /// JT/T 808 registrations refused because `jt808_terminals` holds `max_terminals` rows.
    pub terminals_refused_total: AtomicU64,
    /// Unconfigured dial-in readers forgotten to stay within `readers.max_unknown`.
    pub reader_infos_evicted_total: AtomicU64,
    /// Commands whose `ttl_s` was cut to `uplink.max_command_ttl`.
    pub command_ttl_capped_total: AtomicU64,
    /// Sessions closed because the identity claimed differs from the client certificate's.
    pub identity_mismatch_total: AtomicU64,
    /// GB/T 32960 logins refused because they may not replace the connection holding the VIN.
    pub replace_refused_total: AtomicU64,
    /// Dial-in readers refused: serial not allowed.
    pub reader_refused_total: AtomicU64,
}

impl LimitCounters {
    pub fn snapshot(&self) -> Value {
        json!({
            "reassembly_refused_total": self.reassembly_refused_total.load(Relaxed),
            "terminals_refused_total": self.terminals_refused_total.load(Relaxed),
            "reader_infos_evicted_total": self.reader_infos_evicted_total.load(Relaxed),
            "command_ttl_capped_total": self.command_ttl_capped_total.load(Relaxed),
            "identity_mismatch_total": self.identity_mismatch_total.load(Relaxed),
            "replace_refused_total": self.replace_refused_total.load(Relaxed),
            "reader_refused_total": self.reader_refused_total.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_never_goes_over_its_ceiling_and_takes_back_what_is_given() {
        let b = ByteBudget::new(100);
        assert!(b.try_take(60));
        assert!(!b.try_take(41));
        assert!(b.try_take(40));
        assert_eq!(b.used(), 100);
        b.give(70);
        assert_eq!(b.used(), 30);
        b.give(1000);
        assert_eq!(b.used(), 0);
        assert!(!b.try_take(u64::MAX));
    }
}
