//! The in-memory store under a flood of 10 million distinct keys: it stays within its bound, in
//! keys and in bytes (dhat, in a test binary of its own).

use std::num::NonZeroU32;

use portcullis::rate_limit::{MemoryStore, Quota};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn ten_million_distinct_keys_stay_within_the_bound() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let store = MemoryStore::new(100_000);
    let quota = Quota::per_hour(NonZeroU32::new(10).unwrap());
    for i in 0..10_000_000u64 {
        // Every key is new, and none is back to full: the worst case for eviction.
        let key = store.key().part(&i.to_le_bytes()).finish();
        store.check(key, &quota, i, 1);
    }
    let stats = dhat::HeapStats::get();
    let keys = store.len();
    eprintln!(
        "10 000 000 distinct keys: {keys} kept (bound {}), peak heap {} bytes ({:.1} MiB), now {} bytes",
        store.max_keys(),
        stats.max_bytes,
        stats.max_bytes as f64 / (1024.0 * 1024.0),
        stats.curr_bytes
    );
    dhat::assert!(keys <= store.max_keys());
    // 100 000 entries of 40 bytes in tables that may be up to half empty, plus the eviction
    // scratch vector: well under 16 MiB.
    dhat::assert!(stats.max_bytes < 16 * 1024 * 1024);
}
