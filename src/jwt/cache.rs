//! The verified-token cache: exact token bytes → `Arc<Identity>`.
//!
//! Sharded `hashbrown` tables behind read-write locks, found by a per-process keyed foldhash
//! and confirmed by an exact byte compare. An entry is served only while the clock is before
//! its token's `exp` (plus leeway) and while the key that verified it is not retired. Each
//! shard holds a bounded number of entries; a full shard first drops expired and retired
//! entries, then entries not read since the last sweep (second chance), then the one nearest
//! expiry.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use hashbrown::HashTable;

use super::Identity;
use crate::keys::Key;

const SHARDS: usize = 16;

struct Entry {
    hash: u64,
    token: Box<[u8]>,
    identity: Arc<Identity>,
    key: Arc<Key>,
    valid_until: u64,
    visited: AtomicBool,
}

pub(crate) struct TokenCache {
    shards: Box<[RwLock<HashTable<Entry>>]>,
    hasher: foldhash::fast::RandomState,
    shard_capacity: usize,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &(self.shard_capacity * SHARDS))
            .field("len", &self.len())
            .finish()
    }
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Entry>> {
        // Middle bits: hashbrown uses the low bits for the bucket and the top 7 for its tags.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The identity cached for `token`, if still valid at `now` (seconds). Does not allocate.
    pub(crate) fn get(&self, token: &[u8], now: u64) -> Option<Arc<Identity>> {
        let hash = self.hasher.hash_one(token);
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = shard.find(hash, |e| e.hash == hash && *e.token == *token)?;
        if now >= entry.valid_until || entry.key.is_retired() {
            return None;
        }
        if !entry.visited.load(Ordering::Relaxed) {
            entry.visited.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(&entry.identity))
    }

    pub(crate) fn insert(
        &self,
        token: &[u8],
        identity: Arc<Identity>,
        key: Arc<Key>,
        valid_until: u64,
        now: u64,
    ) {
        let hash = self.hasher.hash_one(token);
        let mut shard = self
            .shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.find_mut(hash, |e| e.hash == hash && *e.token == *token) {
            entry.identity = identity;
            entry.key = key;
            entry.valid_until = valid_until;
            return;
        }
        if shard.len() >= self.shard_capacity {
            evict(&mut shard, now, self.shard_capacity);
        }
        shard.insert_unique(
            hash,
            Entry {
                hash,
                token: token.into(),
                identity,
                key,
                valid_until,
                visited: AtomicBool::new(false),
            },
            |e| e.hash,
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn evict(shard: &mut HashTable<Entry>, now: u64, capacity: usize) {
    shard.retain(|e| now < e.valid_until && !e.key.is_retired());
    if shard.len() < capacity {
        return;
    }
    shard.retain(|e| e.visited.swap(false, Ordering::Relaxed));
    if shard.len() < capacity {
        return;
    }
    if let Some(nearest) = shard.iter().map(|e| e.valid_until).min() {
        let mut removed = false;
        shard.retain(|e| {
            let drop = !removed && e.valid_until == nearest;
            removed |= drop;
            !drop
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Algorithm;

    fn identity(sub: &str) -> Arc<Identity> {
        Arc::new(Identity {
            derived: Default::default(),
            issuer: "i".into(),
            subject: Some(sub.into()),
            audiences: Box::default(),
            scopes: Box::default(),
            expires_at: None,
            not_before: None,
            issued_at: None,
            algorithm: Algorithm::HS256,
            key_id: None,
            claims: Default::default(),
        })
    }

    fn key() -> Arc<Key> {
        Arc::new(Key::hmac(&[9; 32]).unwrap())
    }

    #[test]
    fn hit_until_expiry_and_retirement() {
        let cache = TokenCache::new(100);
        let k = key();
        cache.insert(b"tok", identity("a"), k.clone(), 100, 0);
        assert_eq!(cache.get(b"tok", 99).unwrap().subject(), Some("a"));
        assert!(cache.get(b"tok", 100).is_none());
        assert!(cache.get(b"tok2", 10).is_none());
        k.retire();
        assert!(cache.get(b"tok", 10).is_none());
    }

    #[test]
    fn bounded_with_second_chance() {
        let cache = TokenCache::new(SHARDS * 4);
        let k = key();
        cache.insert(b"hot", identity("hot"), k.clone(), 1_000, 0);
        for i in 0..10_000u32 {
            assert!(cache.get(b"hot", 1).is_some(), "hot entry evicted at {i}");
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
            assert!(cache.len() <= SHARDS * 4);
        }
    }
}
