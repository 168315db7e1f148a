//! Redial backoff: a validator that keeps refusing connections is dialed less and less
//! often, up to a cap, and at once again after it was last reachable.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// When each unreachable peer may be dialed next.
#[derive(Debug)]
pub(crate) struct Backoff<P> {
    first: Duration,
    cap: Duration,
    /// Per peer: the earliest next dial and the delay that led to it.
    waits: HashMap<P, (Instant, Duration)>,
}

impl<P: Eq + Hash + Copy> Backoff<P> {
    /// Delays start at `first` and double after each failure, never above `cap`.
    pub(crate) fn new(first: Duration, cap: Duration) -> Backoff<P> {
        Backoff {
            first,
            cap: cap.max(first),
            waits: HashMap::new(),
        }
    }

    /// Whether `peer` may be dialed at `now`.
    pub(crate) fn due(&self, peer: &P, now: Instant) -> bool {
        self.waits.get(peer).is_none_or(|(next, _)| *next <= now)
    }

    /// A dial to `peer` failed at `now`; returns the delay before the next one.
    pub(crate) fn failed(&mut self, peer: P, now: Instant) -> Duration {
        let delay = match self.waits.get(&peer) {
            // A failure reported before the wait ran out belongs to the same attempt.
            Some((next, delay)) if *next > now => return *delay,
            Some((_, delay)) => delay.saturating_mul(2).min(self.cap),
            None => self.first,
        };
        self.waits.insert(peer, (now + delay, delay));
        delay
    }

    /// `peer` is connected: the next failure starts from `first` again.
    pub(crate) fn reached(&mut self, peer: &P) {
        self.waits.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_once_the_peer_is_reached() {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert!(backoff.due(&7, start), "never failed: dial at once");
        let mut now = start;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let delay = backoff.failed(7, now);
            assert!(!backoff.due(&7, now), "not before the delay");
            now += delay;
            assert!(backoff.due(&7, now), "due when the delay ran out");
            delays.push(delay.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert!(backoff.due(&8, start), "other peers are unaffected");
        backoff.reached(&7);
        assert_eq!(backoff.failed(7, now), Duration::from_secs(1));
    }

    #[test]
    fn failures_within_one_wait_count_once() {
        let start = Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff.failed(1, start), Duration::from_secs(1));
        // Several addresses of one dial fail together: still one step.
        assert_eq!(
            backoff.failed(1, start + Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            backoff.failed(1, start + Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
