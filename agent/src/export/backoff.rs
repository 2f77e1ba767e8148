//! Exponential backoff with full jitter, so agents of a whole cluster do not reconnect in
//! lock-step after a collector restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::BackoffBounds;

/// The delay before the next reconnect attempt.
#[derive(Debug)]
pub(crate) struct Backoff {
    bounds: BackoffBounds,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(bounds: BackoffBounds) -> Self {
        // Seeded from the clock and pid: distinct per agent, no dependency needed for
        // a jitter that only has to de-synchronize agents.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) | 1;
        Self {
            bounds,
            attempt: 0,
            rng: seed,
        }
    }

    /// Forgets past failures (after an acknowledged batch).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniform in `[min, min(max, min * 2^attempt)]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let min = self.bounds.min.as_millis() as u64;
        let max = (self.bounds.max.as_millis() as u64).max(min);
        let ceiling = min.saturating_mul(1u64 << self.attempt.min(20)).min(max);
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling - min;
        let jitter = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        Duration::from_millis(min + jitter)
    }

    /// xorshift64: enough randomness for jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let bounds = BackoffBounds {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1600),
        };
        let mut backoff = Backoff::new(bounds);
        let mut ceilings = Vec::new();
        for attempt in 0..10u32 {
            let d = backoff.next_delay();
            let ceiling = (100u64 << attempt.min(20)).min(1600);
            assert!(d >= bounds.min, "attempt {attempt}: {d:?} below min");
            assert!(
                d.as_millis() as u64 <= ceiling,
                "attempt {attempt}: {d:?} above {ceiling}"
            );
            ceilings.push(ceiling);
        }
        assert_eq!(ceilings.last(), Some(&1600));
        backoff.reset();
        assert!(backoff.next_delay() == Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let bounds = BackoffBounds {
            min: Duration::from_millis(10),
            max: Duration::from_secs(10),
        };
        let mut backoff = Backoff::new(bounds);
        for _ in 0..10 {
            backoff.next_delay();
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.len() > 10,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }
}
