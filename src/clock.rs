//! Injectable time.
//!
//! Every time-dependent decision in the crate (token expiry, cache expiry, and later the rate
//! limiter) reads the time through [`Clock`], so tests and benches can control it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use portcullis::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new(Duration::from_secs(1_700_000_000));
//! let same = clock.clone();
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(same.now(), Duration::from_secs(1_700_000_030));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time, as the duration since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time since the Unix epoch.
    fn now(&self) -> Duration;

    /// The current time in whole seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // A clock set before 1970 reads as the epoch; every token then looks not yet valid,
        // which fails closed.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// The wall-clock time at creation plus monotonic time elapsed since: it never goes back when
/// the system clock is stepped, and it reads the CPU's invariant time-stamp counter where there
/// is one (a few nanoseconds, against some 25 ns for [`SystemClock`]), else the OS monotonic
/// clock. Made for measuring intervals, as the rate limiter does (its default clock); token
/// expiry reads [`SystemClock`], since this one may drift from the wall clock over a long
/// uptime.
///
/// The first clock in a process calibrates the counter against the OS clock, which can take up
/// to 200 ms; later ones are free.
///
/// ```
/// use portcullis::clock::{Clock, MonotonicClock};
///
/// let clock = MonotonicClock::new();
/// let (a, b) = (clock.now(), clock.now());
/// assert!(b >= a);
/// ```
#[derive(Clone, Copy)]
pub struct MonotonicClock {
    wall: Duration,
    anchor: quanta::Instant,
}

impl fmt::Debug for MonotonicClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonotonicClock")
            .field("started", &self.wall)
            .finish_non_exhaustive()
    }
}

impl MonotonicClock {
    /// A clock reading the wall-clock time now, and moving monotonically from there.
    pub fn new() -> Self {
        let anchor = quanta::Instant::now();
        Self {
            wall: SystemClock.now(),
            anchor,
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.wall + quanta::Instant::now().duration_since(self.anchor)
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock that reads `now` until it is moved.
    pub fn new(now: Duration) -> Self {
        let clock = Self::default();
        clock.set(now);
        clock
    }

    /// Sets the time.
    pub fn set(&self, now: Duration) {
        let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.store(nanos, Ordering::Release);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

/// Monotonic nanoseconds since the first call in the process, plus one (never 0), from the
/// time-stamp counter where there is one: for measuring how long a decision took.
pub(crate) fn monotonic_nanos() -> u64 {
    static ANCHOR: std::sync::OnceLock<quanta::Instant> = std::sync::OnceLock::new();
    let anchor = *ANCHOR.get_or_init(quanta::Instant::now);
    u64::try_from(quanta::Instant::now().duration_since(anchor).as_nanos()).unwrap_or(u64::MAX - 1)
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_secs() > 1_577_836_800);
    }

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::new(Duration::from_nanos(u64::MAX - 1));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }
}
