//! The generic cell rate algorithm, on one `AtomicU64` per key.
//!
//! A quota of `n` per `period` with a burst of `b` emits one cell every `T = period / n`; a
//! key's state is its theoretical arrival time (TAT). A request of cost `c` at time `t` is
//! admitted when `max(TAT, t) + c·T - t ≤ b·T`, which then becomes the new TAT. Over any
//! window of length `d`, at most `b + d / T` units are admitted; a key at rest for `b·T` is
//! full again. Times are nanoseconds from the injected clock; all arithmetic is exact integer
//! arithmetic and saturating.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A rate (`count` per `period`) with a burst.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
    emission: u64,
    /// `u64::MAX / emission`: dividing by the emission interval is then a multiplication.
    reciprocal: u64,
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Quota({}/{:?}, burst {})",
            self.count, self.period, self.burst
        )
    }
}

/// A count of units for a [`Quota`]: an integer (`Quota::per_minute(100)`) or a
/// [`NonZeroU32`]. Sealed.
///
/// # Panics
///
/// A quota admits at least one unit: 0 panics where it is turned into one (a constant in the
/// program, like `NonZeroU32::new(0).unwrap()`; for a count read at run time, check it or use
/// [`Quota::new`]).
pub trait QuotaCount: sealed::Sealed {
    /// The count, not zero.
    fn nonzero(self) -> NonZeroU32;
}

impl QuotaCount for u32 {
    fn nonzero(self) -> NonZeroU32 {
        NonZeroU32::new(self).expect("a quota's count is at least 1")
    }
}

impl QuotaCount for NonZeroU32 {
    fn nonzero(self) -> NonZeroU32 {
        self
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for std::num::NonZeroU32 {}
}

impl Quota {
    /// `count` per `period`, with a burst of `count` (a full window at once). `None` when the
    /// period is zero or too short to give each cell at least a nanosecond.
    pub fn new(count: NonZeroU32, period: Duration) -> Option<Self> {
        let nanos = u64::try_from(period.as_nanos()).ok()?;
        let emission = nanos / u64::from(count.get());
        (emission > 0).then(|| Self {
            count,
            period,
            burst: count,
            emission,
            reciprocal: u64::MAX / emission,
        })
    }

    /// `count` per second.
    ///
    /// ```
    /// use portcullis::rate_limit::Quota;
    ///
    /// let quota = Quota::per_second(10).burst(20);
    /// assert_eq!((quota.count(), quota.burst_size()), (10, 20));
    /// ```
    ///
    /// # Panics
    ///
    /// On a count of 0 (see [`QuotaCount`]), or of more than a billion (a cell each
    /// nanosecond is the finest the clock counts).
    pub fn per_second(count: impl QuotaCount) -> Self {
        Self::new(count.nonzero(), Duration::from_secs(1))
            .expect("at most a billion per second: a cell each nanosecond")
    }

    /// `count` per minute.
    ///
    /// # Panics
    ///
    /// On a count of 0 (see [`QuotaCount`]).
    pub fn per_minute(count: impl QuotaCount) -> Self {
        Self::new(count.nonzero(), Duration::from_secs(60)).expect("a minute is long enough")
    }

    /// `count` per hour.
    ///
    /// # Panics
    ///
    /// On a count of 0 (see [`QuotaCount`]).
    pub fn per_hour(count: impl QuotaCount) -> Self {
        Self::new(count.nonzero(), Duration::from_secs(3600)).expect("an hour is long enough")
    }

    /// Sets the burst: how many units a full key admits at once.
    ///
    /// # Panics
    ///
    /// On a burst of 0 (see [`QuotaCount`]).
    pub fn burst(mut self, burst: impl QuotaCount) -> Self {
        self.burst = burst.nonzero();
        self
    }

    /// The count per period.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst.
    pub fn burst_size(&self) -> u32 {
        self.burst.get()
    }

    /// The interval between two cells, in nanoseconds.
    pub fn emission_interval(&self) -> u64 {
        self.emission
    }

    fn capacity(&self) -> u64 {
        self.emission.saturating_mul(u64::from(self.burst.get()))
    }

    /// `n / emission`, exactly, without a division instruction (on the admitting path of every
    /// check). The estimate `n · ⌊(2⁶⁴-1)/T⌋ / 2⁶⁴` is the quotient or at most 2 below it.
    fn cells_in(&self, n: u64) -> u64 {
        let mut q = ((u128::from(n) * u128::from(self.reciprocal)) >> 64) as u64;
        let mut r = n - q * self.emission;
        while r >= self.emission {
            q += 1;
            r -= self.emission;
        }
        q
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// Units left after this request (0 when denied).
    pub remaining: u32,
    /// Nanoseconds until the key is full again.
    pub reset: u64,
    /// Nanoseconds until a request of the same cost would be admitted (0 when admitted).
    pub retry_after: u64,
    /// Nanoseconds until at least one more unit is available (0 when the key is full): the
    /// `t` of the `RateLimit` field.
    pub next: u64,
}

impl Decision {
    /// `retry_after` in whole seconds, rounded up and never 0 for a denial (`Retry-After: 0`
    /// invites an immediate retry that is denied again).
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            0
        } else {
            self.retry_after.div_ceil(1_000_000_000).max(1)
        }
    }

    /// `reset` in whole seconds, rounded up.
    pub fn reset_secs(&self) -> u64 {
        self.reset.div_ceil(1_000_000_000)
    }

    /// `next` in whole seconds, rounded up: the `t` parameter of the `RateLimit` field, "the
    /// number of seconds until additional quota is made available"
    /// (draft-ietf-httpapi-ratelimit-headers-10). For a denial of one unit it equals
    /// [`retry_after_secs`](Self::retry_after_secs), so `Retry-After` never points earlier.
    pub fn next_secs(&self) -> u64 {
        self.next.div_ceil(1_000_000_000)
    }
}

/// Nanoseconds until one more unit is available for a key of which `used` nanoseconds of the
/// capacity are taken (`tat - now`, which may exceed the capacity after a denial); 0 when the
/// key is full.
pub fn next_unit(quota: &Quota, used: u64) -> u64 {
    let capacity = quota.capacity();
    if used == 0 {
        0
    } else if used > capacity {
        // Back to an empty key, then one emission interval.
        used - capacity + quota.emission
    } else {
        let free = capacity - used;
        let partial = free - quota.cells_in(free) * quota.emission;
        (quota.emission - partial).min(used)
    }
}

/// Decides a request of `cost` at `now` (nanoseconds) against a state `tat`; returns the
/// decision and, when admitted, the new state. The pure core of [`Gcra::check`].
pub fn decide(quota: &Quota, tat: u64, now: u64, cost: u32) -> (Decision, Option<u64>) {
    let capacity = quota.capacity();
    let increment = quota.emission.saturating_mul(u64::from(cost));
    let new_tat = tat.max(now).saturating_add(increment);
    let used = new_tat - now;
    if used <= capacity && increment <= capacity {
        let remaining = quota.cells_in(capacity - used);
        let decision = Decision {
            allowed: true,
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            reset: used,
            retry_after: 0,
            next: next_unit(quota, used),
        };
        (decision, Some(new_tat))
    } else {
        let current = tat.max(now) - now;
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset: current,
            next: next_unit(quota, current),
            // Never admissible when the cost exceeds the burst: wait a whole capacity.
            retry_after: if increment > capacity {
                capacity.max(1)
            } else {
                used - capacity
            },
        };
        (decision, None)
    }
}

/// One key's state: its theoretical arrival time, updated by compare-exchange.
#[derive(Debug, Default)]
pub struct Gcra {
    tat: AtomicU64,
}

impl Gcra {
    /// A full key.
    pub const fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    /// Checks a request of `cost` at `now` and, when admitted, charges it. Lock-free.
    pub fn check(&self, quota: &Quota, now: u64, cost: u32) -> Decision {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let (decision, new_tat) = decide(quota, tat, now, cost);
            let Some(new_tat) = new_tat else {
                return decision;
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(actual) => tat = actual,
            }
        }
    }

    /// The decision a request of `cost` would get, without charging it.
    pub fn peek(&self, quota: &Quota, now: u64, cost: u32) -> Decision {
        decide(quota, self.tat.load(Ordering::Acquire), now, cost).0
    }

    /// Takes back a charge of `cost` made by [`Gcra::check`] (for a request a later limit
    /// denied), never below `floor` (the time of the check).
    pub fn refund(&self, quota: &Quota, cost: u32, floor: u64) {
        let decrement = quota.emission.saturating_mul(u64::from(cost));
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(decrement).max(floor))
            });
    }

    /// Whether the key is full at `now` (its state carries no information).
    pub fn is_full(&self, now: u64) -> bool {
        self.tat.load(Ordering::Acquire) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_unit_is_the_wait_for_one_more_unit() {
        // 3 a minute, burst 3: a unit every 20 s, 60 s of capacity.
        let quota = Quota::per_minute(NonZeroU32::new(3).unwrap());
        let s = 1_000_000_000;
        assert_eq!(next_unit(&quota, 0), 0, "full: nothing more to come");
        assert_eq!(next_unit(&quota, 5 * s), 5 * s, "5 s short of full");
        assert_eq!(next_unit(&quota, 20 * s), 20 * s);
        assert_eq!(next_unit(&quota, 25 * s), 5 * s, "one unit back in 5 s");
        assert_eq!(next_unit(&quota, 60 * s), 20 * s, "empty");
        assert_eq!(next_unit(&quota, 70 * s), 30 * s, "over-drawn by 10 s");
        // A denial of one unit waits exactly that long.
        let (denied, _) = decide(&quota, 60 * s + 1_000, 1_000, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.next, denied.retry_after);
        assert_eq!(denied.next_secs(), denied.retry_after_secs());
    }

    #[test]
    fn division_by_the_reciprocal_is_exact() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200_000 {
            let emission = match next() % 3 {
                0 => next() % 1_000 + 1,
                1 => next() % 10_000_000_000 + 1,
                _ => next().max(1),
            };
            let quota = Quota {
                emission,
                reciprocal: u64::MAX / emission,
                ..Quota::per_second(NonZeroU32::MIN)
            };
            for n in [
                next(),
                next() % emission.saturating_mul(3).saturating_add(1),
                u64::MAX,
                0,
                emission,
                emission - 1,
            ] {
                assert_eq!(quota.cells_in(n), n / emission, "{n} / {emission}");
            }
        }
    }

    const SEC: u64 = 1_000_000_000;

    fn q(count: u32, secs: u64, burst: u32) -> Quota {
        Quota::new(NonZeroU32::new(count).unwrap(), Duration::from_secs(secs))
            .unwrap()
            .burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn burst_then_rate() {
        let quota = q(10, 1, 3);
        let key = Gcra::new();
        let now = 100 * SEC;
        let results: Vec<_> = (0..4).map(|_| key.check(&quota, now, 1)).collect();
        assert_eq!(
            results.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            results.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert_eq!(results[3].retry_after, SEC / 10);
        assert_eq!(results[3].retry_after_secs(), 1);
        assert!(key.check(&quota, now + SEC / 10, 1).allowed);
        assert!(!key.check(&quota, now + SEC / 10, 1).allowed);
        // At rest for burst × T: full again.
        assert!(key.is_full(now + SEC / 10 + 3 * SEC / 10));
    }

    #[test]
    fn costs() {
        let quota = q(100, 60, 20);
        let key = Gcra::new();
        assert!(key.check(&quota, 0, 20).allowed);
        assert!(!key.check(&quota, 0, 1).allowed);
        let too_big = key.check(&quota, 10 * 60 * SEC, 21);
        assert!(!too_big.allowed && too_big.retry_after > 0);
        let now = 10 * 60 * SEC;
        let d = key.check(&quota, now, 5);
        assert!(d.allowed);
        key.refund(&quota, 5, now);
        assert_eq!(
            key.check(&quota, now, 20).remaining,
            0,
            "the refund restored the full burst"
        );
    }

    #[test]
    fn quota_edges() {
        assert!(Quota::new(NonZeroU32::new(1).unwrap(), Duration::ZERO).is_none());
        assert!(Quota::new(NonZeroU32::MAX, Duration::from_nanos(1)).is_none());
        let q = Quota::per_minute(NonZeroU32::new(60).unwrap());
        assert_eq!(q.emission_interval(), SEC);
        assert_eq!(q.burst_size(), 60);
    }
}
