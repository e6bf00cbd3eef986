//! The keyed in-memory store: a bounded, concurrent map from a key to its GCRA state.
//!
//! Keys are stored as a 128-bit keyed hash of the key material (two independently seeded
//! foldhashes), so an entry is a fixed 40 bytes whatever the key, and no key bytes are kept.
//! A lookup of a known key takes a shard's read lock and one compare-exchange; the first sight
//! of a key takes the write lock and may allocate. Each of 16 shards holds at most
//! `max_keys / 16` keys: a full shard first drops keys whose state is back to full (they carry
//! no information), then the least recently seen half. No cleanup thread is needed.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use hashbrown::HashTable;

use super::gcra::{Decision, Gcra, Quota};

const SHARDS: usize = 16;

/// The default bound on the number of keys: 100 000.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

struct Entry {
    key: u128,
    gcra: Gcra,
    last_seen: AtomicU64,
}

/// A rate-limit key, hashed: build it with [`MemoryStore::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(u128);

/// Feeds key material into a [`KeyHash`]; parts are length-prefixed, so `("ab", "c")` and
/// `("a", "bc")` differ.
pub struct KeyBuilder {
    high: foldhash::fast::FoldHasher<'static>,
    low: foldhash::fast::FoldHasher<'static>,
}

impl fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBuilder").finish_non_exhaustive()
    }
}

/// Something key material is fed into, part by part: the in-memory store's keyed hash, or a
/// digest for a shared store.
pub trait KeyParts: Sized {
    /// Adds one part.
    fn part(self, bytes: &[u8]) -> Self;
}

impl KeyParts for KeyBuilder {
    fn part(self, bytes: &[u8]) -> Self {
        KeyBuilder::part(self, bytes)
    }
}

impl KeyBuilder {
    /// Adds one part.
    pub fn part(mut self, bytes: &[u8]) -> Self {
        for hasher in [&mut self.high, &mut self.low] {
            hasher.write_usize(bytes.len());
            hasher.write(bytes);
        }
        self
    }

    /// The key.
    pub fn finish(self) -> KeyHash {
        KeyHash(u128::from(self.high.finish()) << 64 | u128::from(self.low.finish()))
    }
}

/// The in-memory store.
pub struct MemoryStore {
    shards: Box<[RwLock<HashTable<Entry>>]>,
    seeds: (
        foldhash::fast::SeedableRandomState,
        foldhash::fast::SeedableRandomState,
    ),
    shard_capacity: usize,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &(self.shard_capacity * SHARDS))
            .field("keys", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl MemoryStore {
    /// A store of at most `max_keys` keys (at least 16).
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            seeds: (
                foldhash::fast::SeedableRandomState::random(),
                foldhash::fast::SeedableRandomState::random(),
            ),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Starts a key.
    pub fn key(&self) -> KeyBuilder {
        KeyBuilder {
            high: self.seeds.0.build_hasher(),
            low: self.seeds.1.build_hasher(),
        }
    }

    fn shard(&self, key: KeyHash) -> &RwLock<HashTable<Entry>> {
        &self.shards[(key.0 >> 100) as usize % SHARDS]
    }

    /// Checks and charges a request of `cost` for `key` at `now` (nanoseconds). A known key
    /// does not allocate.
    pub fn check(&self, key: KeyHash, quota: &Quota, now: u64, cost: u32) -> Decision {
        self.with_entry(key, now, |gcra| gcra.check(quota, now, cost))
    }

    /// The decision without charging.
    pub fn peek(&self, key: KeyHash, quota: &Quota, now: u64, cost: u32) -> Decision {
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.find(key.0 as u64, |e| e.key == key.0) {
            Some(entry) => entry.gcra.peek(quota, now, cost),
            None => Gcra::new().peek(quota, now, cost),
        }
    }

    /// Takes back a charge made by [`MemoryStore::check`] at `now`.
    pub fn refund(&self, key: KeyHash, quota: &Quota, now: u64, cost: u32) {
        let shard = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.find(key.0 as u64, |e| e.key == key.0) {
            entry.gcra.refund(quota, cost, now);
        }
    }

    fn with_entry<T>(&self, key: KeyHash, now: u64, f: impl FnOnce(&Gcra) -> T) -> T {
        let hash = key.0 as u64;
        {
            let shard = self
                .shard(key)
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = shard.find(hash, |e| e.key == key.0) {
                entry.last_seen.store(now, Ordering::Relaxed);
                return f(&entry.gcra);
            }
        }
        let mut shard = self
            .shard(key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.find(hash, |e| e.key == key.0).is_none() {
            if shard.len() >= self.shard_capacity {
                evict(&mut shard, now, self.shard_capacity);
            }
            shard.insert_unique(
                hash,
                Entry {
                    key: key.0,
                    gcra: Gcra::new(),
                    last_seen: AtomicU64::new(now),
                },
                |e| e.key as u64,
            );
        }
        let entry = shard.find(hash, |e| e.key == key.0).expect("just inserted");
        entry.last_seen.store(now, Ordering::Relaxed);
        f(&entry.gcra)
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the store holds.
    pub fn max_keys(&self) -> usize {
        self.shard_capacity * SHARDS
    }
}

fn evict(shard: &mut HashTable<Entry>, now: u64, capacity: usize) {
    shard.retain(|e| !e.gcra.is_full(now));
    if shard.len() < capacity {
        return;
    }
    // Least recently seen half: allocation is fine here, it is amortised over half a shard
    // of inserts.
    let mut seen: Vec<u64> = shard
        .iter()
        .map(|e| e.last_seen.load(Ordering::Relaxed))
        .collect();
    let middle = seen.len() / 2;
    let (_, median, _) = seen.select_nth_unstable(middle);
    let median = *median;
    let mut kept_at_median = 0usize;
    let keep_at_median = seen.len() - middle - 1;
    shard.retain(|e| {
        let last = e.last_seen.load(Ordering::Relaxed);
        if last > median {
            return true;
        }
        if last == median && kept_at_median < keep_at_median {
            kept_at_median += 1;
            return true;
        }
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn keys_are_separate_and_parts_are_framed() {
        let store = MemoryStore::new(1_000);
        assert_ne!(
            store.key().part(b"ab").part(b"c").finish(),
            store.key().part(b"a").part(b"bc").finish()
        );
        let quota = Quota::per_second(NonZeroU32::new(1).unwrap());
        let (a, b) = (
            store.key().part(b"a").finish(),
            store.key().part(b"b").finish(),
        );
        assert!(store.check(a, &quota, 0, 1).allowed);
        assert!(!store.check(a, &quota, 0, 1).allowed);
        assert!(store.check(b, &quota, 0, 1).allowed);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn bounded_under_a_flood_and_full_keys_go_first() {
        let store = MemoryStore::new(1_600);
        let slow = Quota::per_hour(NonZeroU32::new(1).unwrap());
        let hot = store.key().part(b"hot").finish();
        for i in 0..200_000u64 {
            let key = store.key().part(&i.to_le_bytes()).finish();
            store.check(key, &slow, i, 1);
            if i % 100 == 0 {
                // Seen often: never among the least recently seen half.
                store.check(hot, &slow, i, 1);
            }
            assert!(store.len() <= store.max_keys());
        }
        assert!(
            !store.check(hot, &slow, 200_000, 1).allowed,
            "the hot key kept its state"
        );
    }
}
