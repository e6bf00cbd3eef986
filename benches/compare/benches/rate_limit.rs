//! The in-memory keyed rate-limit check for a known key: portcullis' `MemoryStore` beside
//! governor's keyed limiter (what tower_governor uses), same quota, same keys, one run.
//!
//! Run with `cargo bench --bench rate_limit` in `benches/compare`.

use std::hint::black_box;
use std::num::NonZeroU32;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::clock::{Clock, MonotonicClock};
use portcullis::rate_limit::{MemoryStore, Quota};

/// Users cycled through, as a gateway sees them.
const USERS: usize = 1_000;

fn bench(c: &mut Criterion) {
    let users: Vec<String> = (0..USERS).map(|i| format!("user-{i}")).collect();
    // Never denies: both measure the admitting check of a key they already hold.
    let big = NonZeroU32::new(1_000_000_000).unwrap();
    let mut group = c.benchmark_group("rate_limit_known_key");

    let store = MemoryStore::new(100_000);
    let quota = Quota::per_second(big).burst(big);
    // The rate limiter's default clock, as RateLimitLayer reads it.
    let clock = MonotonicClock::new();
    let now = || clock.now().as_nanos() as u64;
    for user in &users {
        store.check(store.key().part(user.as_bytes()).finish(), &quota, now(), 1);
    }
    let mut i = 0;
    group.bench_function("portcullis", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            let key = store.key().part(black_box(users[i].as_bytes())).finish();
            assert!(store.check(key, &quota, now(), 1).allowed);
        })
    });

    // The check alone, with the time read once outside (the clock is the caller's).
    let fixed = now();
    group.bench_function("portcullis_fixed_time", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            let key = store.key().part(black_box(users[i].as_bytes())).finish();
            assert!(store.check(key, &quota, black_box(fixed), 1).allowed);
        })
    });

    let fake = governor::clock::FakeRelativeClock::default();
    let gov_fake = governor::RateLimiter::dashmap_with_clock(
        governor::Quota::per_second(big).allow_burst(big),
        fake,
    );
    for user in &users {
        let _ = gov_fake.check_key(user);
    }
    group.bench_function("governor_fake_clock", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            assert!(gov_fake.check_key(black_box(&users[i])).is_ok());
        })
    });

    let governor = governor::RateLimiter::keyed(governor::Quota::per_second(big).allow_burst(big));
    for user in &users {
        let _ = governor.check_key(user);
    }
    let mut i = 0;
    group.bench_function("governor", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            assert!(governor.check_key(black_box(&users[i])).is_ok());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
