//! Jittered exponential backoff for reconnects of outgoing links (the MQTT uplink, reader
//! connections); rumqttc on its own retries at a fixed pace.

use std::time::Duration;

use rand::Rng;

/// Delays grow from `min` doubling up to `max`; each is drawn uniformly from [d/2, d] so that
/// many edges cut off together do not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
