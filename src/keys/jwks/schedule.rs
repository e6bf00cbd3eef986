//! When to fetch: the next refresh from the server's `max-age` held within bounds, the backoff
//! after failures, and the throttle on refetches for unknown key ids. Plain functions and
//! values over times read from the injected clock, tested without a runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The delay until the next scheduled fetch: the server's `max-age` (or, without one, the
/// configured interval), held within `[min, max]`.
pub(super) fn next_refresh(
    max_age: Option<Duration>,
    interval: Duration,
    min: Duration,
    max: Duration,
) -> Duration {
    max_age.unwrap_or(interval).clamp(min, max.max(min))
}

/// Exponential backoff: `initial`, doubling after each failure, at most `cap`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    initial: Duration,
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, cap: Duration) -> Self {
        let initial = initial.min(cap);
        Self {
            initial,
            next: initial,
            cap,
        }
    }

    /// The delay before the next attempt, after a failure.
    pub(super) fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    /// Back to the initial delay, after a success.
    pub(super) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// At most one refetch for unknown key ids per interval, however many requests name them:
/// the first caller after the interval takes the turn.
#[derive(Debug)]
pub(super) struct KidThrottle {
    /// Nanoseconds (on the injected clock) of the last refetch; `u64::MAX` for never.
    last: AtomicU64,
    interval: u64,
}

impl KidThrottle {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            last: AtomicU64::new(u64::MAX),
            interval: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Whether the caller at `now` (the injected clock's reading) should refetch. Exactly one
    /// of any number of concurrent callers gets `true` per interval.
    pub(super) fn take_turn(&self, now: Duration) -> bool {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX - 1);
        let last = self.last.load(Ordering::Acquire);
        if last != u64::MAX && now.saturating_sub(last) < self.interval {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn max_age_within_bounds() {
        assert_eq!(next_refresh(None, S(300), S(60), S(86_400)), S(300));
        assert_eq!(next_refresh(Some(S(600)), S(300), S(60), S(86_400)), S(600));
        assert_eq!(next_refresh(Some(S(0)), S(300), S(60), S(86_400)), S(60));
        assert_eq!(
            next_refresh(Some(S(1 << 40)), S(300), S(60), S(86_400)),
            S(86_400)
        );
        // Bounds given the wrong way round: the minimum wins.
        assert_eq!(next_refresh(None, S(300), S(60), S(10)), S(60));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), S(1));
        let delays: Vec<u128> = (0..6).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.failed(), Duration::from_millis(100));
        assert_eq!(
            Backoff::new(S(5), S(1)).failed(),
            S(1),
            "the cap holds from the start"
        );
    }

    #[test]
    fn one_turn_per_interval_on_the_given_clock() {
        let throttle = KidThrottle::new(S(30));
        assert!(
            throttle.take_turn(S(1_000)),
            "the first unknown kid refetches"
        );
        assert!(!throttle.take_turn(S(1_000)));
        assert!(!throttle.take_turn(S(1_029)));
        assert!(throttle.take_turn(S(1_030)), "the interval has passed");
        assert!(!throttle.take_turn(S(1_030)));
        // A clock that went back does not open the throttle.
        assert!(!throttle.take_turn(S(10)));
        let zero = KidThrottle::new(Duration::ZERO);
        assert!(
            zero.take_turn(S(5)) && zero.take_turn(S(5)),
            "no interval: every call"
        );
    }

    #[test]
    fn concurrent_callers_get_one_turn() {
        let throttle = std::sync::Arc::new(KidThrottle::new(S(30)));
        let turns: usize = (0..8)
            .map(|_| {
                let throttle = std::sync::Arc::clone(&throttle);
                std::thread::spawn(move || (0..1000).filter(|_| throttle.take_turn(S(7))).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(turns, 1);
    }
}
