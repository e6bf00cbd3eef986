//! The verified-token cache: exact token bytes → `Arc<Identity>`, sized by memory.
//!
//! Sharded `hashbrown` tables behind read-write locks, found by a per-process keyed foldhash
//! and confirmed by an exact byte compare. An entry is served only while the clock is before
//! its token's `exp` (plus leeway) and while the key that verified it is not revoked.
//!
//! Each entry is charged what it holds ([`entry_cost`]: the token bytes, the identity and its
//! claims, an allowance for what the claims layer derives later, the table slot), and each
//! shard keeps its charges under its share of the budget. Making room is a CLOCK sweep: a hand
//! walks the table's buckets, drops expired and revoked entries, gives entries read since its
//! last pass a second chance, and drops the first that was not read. It looks at a bounded
//! number of entries per eviction, and entries that are read keep their place.
//!
//! A full shard admits a token only on its second miss (TinyLFU's "doorkeeper": one bit per
//! token met once, in a fixed bit set cleared when an eighth of it is set). A token met once
//! is verified and served, but not cached: a flood of distinct valid tokens, each sent once,
//! neither displaces the tokens in use nor pays for an insert and an eviction per request.

use std::fmt;
use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use hashbrown::HashTable;
use serde_json::Value;

use super::Identity;
use crate::keys::Key;

const SHARDS: usize = 16;

/// The most entries one eviction looks at before it drops the one under the hand, read or not.
const MAX_SCAN: usize = 16;

/// The most buckets one eviction steps over (empty ones included).
const MAX_PROBES: usize = 4 * 1024;

/// What an entry is charged for values the claims layer derives from its identity later
/// (header values, a signed assertion), which do not exist yet when it is inserted.
const DERIVED_ALLOWANCE: usize = 768;

/// Per heap block: what the allocator keeps beside each allocation, on average.
const BLOCK_OVERHEAD: usize = 16;

/// Bytes of budget per doorkeeper bit: 64 MiB of budget (about 21 000 entries) keep a million
/// bits, 128 KiB.
const BUDGET_PER_DOORKEEPER_BIT: usize = 64;

struct Entry {
    hash: u64,
    token: Box<[u8]>,
    identity: Arc<Identity>,
    key: Arc<Key>,
    valid_until: u64,
    cost: usize,
    visited: AtomicBool,
}

struct Table {
    entries: HashTable<Entry>,
    /// The sum of the entries' costs.
    bytes: usize,
    /// The CLOCK hand: the next bucket an eviction looks at.
    hand: usize,
}

struct Shard {
    table: RwLock<Table>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    not_admitted: AtomicU64,
}

/// The tokens met once while their shard was full: one bit each, by hash, in a set of a fixed
/// size that is cleared when an eighth of its bits are set (so a token met once is remembered
/// for the next eighth-of-the-set first meetings, and a token never met passes for one met in
/// at most one case in eight).
struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    /// Bits set since the set was last cleared.
    set: AtomicUsize,
}

impl Doorkeeper {
    /// A set of `bits` bits, rounded up to a power of two between 4 096 and 16 Mi.
    fn new(bits: usize) -> Self {
        let bits = bits.clamp(4_096, 1 << 24).next_power_of_two();
        Self {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            set: AtomicUsize::new(0),
        }
    }

    /// Whether `hash` was met since the set was last cleared; it counts as met from now on.
    fn met_before(&self, hash: u64) -> bool {
        // The top bits: the shard is chosen by bits 32 and up, the table's bucket by the low
        // ones; any bits serve, these are as good as the rest.
        let bit = (hash >> 40) as usize & (self.bits.len() * 64 - 1);
        let mask = 1u64 << (bit % 64);
        if self.bits[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if self.set.fetch_add(1, Ordering::Relaxed) + 1 >= self.bits.len() * 64 / 8 {
            // Forget every token but this one.
            for word in &*self.bits {
                word.store(0, Ordering::Relaxed);
            }
            self.bits[bit / 64].store(mask, Ordering::Relaxed);
            self.set.store(1, Ordering::Relaxed);
        }
        false
    }
}

/// What the verified-token cache holds and has done, from
/// [`Validator::cache_stats`](super::Validator::cache_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Tokens cached now.
    pub entries: usize,
    /// The memory they are charged, in bytes (see the validation guide for what counts).
    pub bytes: usize,
    /// The budget `bytes` stays under.
    pub budget: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to verify the token (not found, expired, or its key revoked).
    pub misses: u64,
    /// Entries dropped to make room (expired and revoked ones included).
    pub evictions: u64,
    /// Verified tokens left out of a full cache because it met them for the first time: each
    /// is cached on its next miss, if it comes soon enough.
    pub not_admitted: u64,
}

impl CacheStats {
    /// Exports the figures through the `metrics` facade (feature `metrics`), as absolute
    /// values: call it from the exporter's upkeep or before rendering a scrape.
    ///
    /// | metric | kind |
    /// |---|---|
    /// | `portcullis_token_cache_entries` | gauge |
    /// | `portcullis_token_cache_bytes` | gauge |
    /// | `portcullis_token_cache_budget_bytes` | gauge |
    /// | `portcullis_token_cache_hits_total` | counter |
    /// | `portcullis_token_cache_misses_total` | counter |
    /// | `portcullis_token_cache_evictions_total` | counter |
    /// | `portcullis_token_cache_not_admitted_total` | counter |
    #[cfg(feature = "metrics")]
    pub fn record(&self) {
        metrics::gauge!("portcullis_token_cache_entries").set(self.entries as f64);
        metrics::gauge!("portcullis_token_cache_bytes").set(self.bytes as f64);
        metrics::gauge!("portcullis_token_cache_budget_bytes").set(self.budget as f64);
        metrics::counter!("portcullis_token_cache_hits_total").absolute(self.hits);
        metrics::counter!("portcullis_token_cache_misses_total").absolute(self.misses);
        metrics::counter!("portcullis_token_cache_evictions_total").absolute(self.evictions);
        metrics::counter!("portcullis_token_cache_not_admitted_total").absolute(self.not_admitted);
    }

    /// Hits over lookups, or 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

pub(crate) struct TokenCache {
    shards: Box<[Shard]>,
    doorkeeper: Doorkeeper,
    hasher: foldhash::fast::RandomState,
    shard_budget: usize,
    shard_capacity: usize,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("budget", &(self.shard_budget * SHARDS))
            .field("len", &self.len())
            .finish()
    }
}

/// The bytes an entry for `token` (of `token_len` bytes) holding `identity` is charged.
pub(crate) fn entry_cost(token_len: usize, identity: &Identity) -> usize {
    let boxed = |s: &str| s.len() + BLOCK_OVERHEAD;
    // The table slot (with hashbrown's control byte and its load factor of 7/8), the token.
    let mut cost = (size_of::<Entry>() + 1) * 8 / 7 + token_len + BLOCK_OVERHEAD;
    // The identity, in its `Arc`, and what its fields own.
    cost += size_of::<Identity>() + 2 * size_of::<usize>() + BLOCK_OVERHEAD;
    cost += boxed(&identity.issuer);
    cost += identity.subject.as_deref().map_or(0, boxed);
    cost += identity.key_id.as_deref().map_or(0, boxed);
    for list in [&identity.audiences, &identity.scopes] {
        if !list.is_empty() {
            cost += list.len() * size_of::<Box<str>>() + BLOCK_OVERHEAD;
            cost += list.iter().map(|s| boxed(s)).sum::<usize>();
        }
    }
    cost += object_cost(&identity.claims);
    cost + DERIVED_ALLOWANCE
}

/// What a JSON object's map owns on the heap: `serde_json`'s `BTreeMap` nodes (11 slots of a
/// key and a value each, about two thirds full, with an internal node per eight leaves), plus
/// what each key and value owns.
fn object_cost(map: &serde_json::Map<String, Value>) -> usize {
    if map.is_empty() {
        return 0;
    }
    let leaf = 11 * (size_of::<String>() + size_of::<Value>()) + 2 * size_of::<usize>();
    let internal = leaf + 12 * size_of::<usize>();
    let leaves = map.len().div_ceil(7);
    let internals = if leaves > 1 { leaves.div_ceil(8) } else { 0 };
    leaves * (leaf + BLOCK_OVERHEAD)
        + internals * (internal + BLOCK_OVERHEAD)
        + map
            .iter()
            .map(|(key, value)| key.len() + BLOCK_OVERHEAD + value_cost(value))
            .sum::<usize>()
}

fn value_cost(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => s.len() + BLOCK_OVERHEAD,
        Value::Array(items) => {
            items.len() * size_of::<Value>()
                + BLOCK_OVERHEAD
                + items.iter().map(value_cost).sum::<usize>()
        }
        Value::Object(map) => object_cost(map),
    }
}

impl TokenCache {
    /// A cache whose entries are charged at most `budget` bytes, holding at most `capacity`
    /// entries.
    pub(crate) fn new(budget: usize, capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    table: RwLock::new(Table {
                        entries: HashTable::new(),
                        bytes: 0,
                        hand: 0,
                    }),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                    evictions: AtomicU64::new(0),
                    not_admitted: AtomicU64::new(0),
                })
                .collect(),
            doorkeeper: Doorkeeper::new(
                (budget / BUDGET_PER_DOORKEEPER_BIT).min(capacity.saturating_mul(64)),
            ),
            hasher: foldhash::fast::RandomState::default(),
            shard_budget: (budget / SHARDS).max(1),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        // Middle bits: hashbrown uses the low bits for the bucket and the top 7 for its tags.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// The identity cached for `token`, if still valid at `now` (seconds). Does not allocate.
    /// A lookup that finds nothing counts as a miss only when `count_miss` (the caller is
    /// about to verify the token).
    pub(crate) fn get(&self, token: &[u8], now: u64, count_miss: bool) -> Option<Arc<Identity>> {
        let hash = self.hasher.hash_one(token);
        let shard = self.shard(hash);
        let found = {
            let table = shard.table.read().unwrap_or_else(PoisonError::into_inner);
            table
                .entries
                .find(hash, |e| e.hash == hash && *e.token == *token)
                .filter(|entry| now < entry.valid_until && !entry.key.is_revoked())
                .map(|entry| {
                    if !entry.visited.load(Ordering::Relaxed) {
                        entry.visited.store(true, Ordering::Relaxed);
                    }
                    Arc::clone(&entry.identity)
                })
        };
        match &found {
            Some(_) => shard.hits.fetch_add(1, Ordering::Relaxed),
            None if count_miss => shard.misses.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        found
    }

    pub(crate) fn insert(
        &self,
        token: &[u8],
        identity: Arc<Identity>,
        key: Arc<Key>,
        valid_until: u64,
        now: u64,
    ) {
        let cost = entry_cost(token.len(), &identity);
        if cost > self.shard_budget {
            return;
        }
        let hash = self.hasher.hash_one(token);
        let shard = self.shard(hash);
        let mut table = shard.table.write().unwrap_or_else(PoisonError::into_inner);
        let table = &mut *table;
        if let Some(entry) = table
            .entries
            .find_mut(hash, |e| e.hash == hash && *e.token == *token)
        {
            table.bytes = table.bytes - entry.cost + cost;
            entry.identity = identity;
            entry.key = key;
            entry.valid_until = valid_until;
            entry.cost = cost;
            return;
        }
        let full =
            table.bytes + cost > self.shard_budget || table.entries.len() >= self.shard_capacity;
        if full && !self.doorkeeper.met_before(hash) {
            shard.not_admitted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        while table.bytes + cost > self.shard_budget || table.entries.len() >= self.shard_capacity {
            match table.evict_one(now) {
                Some(freed) => {
                    table.bytes -= freed;
                    shard.evictions.fetch_add(1, Ordering::Relaxed);
                }
                // Nothing found within the bound: leave this token uncached.
                None => return,
            }
        }
        table.bytes += cost;
        table.entries.insert_unique(
            hash,
            Entry {
                hash,
                token: token.into(),
                identity,
                key,
                valid_until,
                cost,
                visited: AtomicBool::new(false),
            },
            |e| e.hash,
        );
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.table
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            budget: self.shard_budget * SHARDS,
            ..CacheStats::default()
        };
        for shard in &*self.shards {
            let table = shard.table.read().unwrap_or_else(PoisonError::into_inner);
            stats.entries += table.entries.len();
            stats.bytes += table.bytes;
            stats.hits += shard.hits.load(Ordering::Relaxed);
            stats.misses += shard.misses.load(Ordering::Relaxed);
            stats.evictions += shard.evictions.load(Ordering::Relaxed);
            stats.not_admitted += shard.not_admitted.load(Ordering::Relaxed);
        }
        stats
    }
}

impl Table {
    /// Drops one entry under the CLOCK hand and returns its cost: the first expired or
    /// revoked entry, or the first not read since the hand last passed it, or, after
    /// [`MAX_SCAN`] entries that were all read, the last one looked at. `None` when the table
    /// is empty or [`MAX_PROBES`] buckets held nothing.
    fn evict_one(&mut self, now: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let buckets = self.entries.num_buckets();
        let mut scanned = 0;
        for _ in 0..MAX_PROBES {
            let index = self.hand % buckets;
            self.hand = index + 1;
            let Ok(entry) = self.entries.get_bucket_entry(index) else {
                continue;
            };
            scanned += 1;
            let e = entry.get();
            let stale = now >= e.valid_until || e.key.is_revoked();
            let read = e.visited.swap(false, Ordering::Relaxed);
            if stale || !read || scanned >= MAX_SCAN {
                let (removed, _) = entry.remove();
                return Some(removed.cost);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Algorithm;

    fn identity(sub: &str) -> Arc<Identity> {
        identity_with(sub, Default::default())
    }

    fn identity_with(sub: &str, claims: serde_json::Map<String, Value>) -> Arc<Identity> {
        Arc::new(Identity {
            attached: Default::default(),
            issuer: "i".into(),
            subject: Some(sub.into()),
            audiences: Box::default(),
            scopes: Box::default(),
            expires_at: None,
            not_before: None,
            issued_at: None,
            algorithm: Algorithm::HS256,
            key_id: None,
            claims,
        })
    }

    fn key() -> Arc<Key> {
        Arc::new(Key::hmac(&[9; 32]).unwrap())
    }

    fn cost() -> usize {
        entry_cost(4, &identity("x"))
    }

    #[test]
    fn hit_until_expiry_and_revocation() {
        let cache = TokenCache::new(1 << 20, usize::MAX);
        let k = key();
        cache.insert(b"tok", identity("a"), k.clone(), 100, 0);
        assert_eq!(cache.get(b"tok", 99, true).unwrap().subject(), Some("a"));
        assert!(cache.get(b"tok", 100, true).is_none());
        assert!(cache.get(b"tok2", 10, false).is_none());
        k.revoke();
        assert!(cache.get(b"tok", 10, true).is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 2));
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.bytes, entry_cost(3, &identity("a")));
    }

    #[test]
    fn bounded_by_bytes_with_second_chance() {
        let per_shard = 8;
        let budget = SHARDS * per_shard * cost();
        let cache = TokenCache::new(budget, usize::MAX);
        let k = key();
        cache.insert(b"hot!", identity("hot"), k.clone(), 1_000, 0);
        for i in 0..20_000u32 {
            assert!(
                cache.get(b"hot!", 1, true).is_some(),
                "hot entry evicted at {i}"
            );
            // Twice, as two misses would: a full cache admits a token on its second.
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
            let stats = cache.stats();
            assert!(stats.bytes <= budget, "{stats:?}");
        }
        let stats = cache.stats();
        assert!(stats.entries > SHARDS * per_shard / 2, "{stats:?}");
        assert!(
            stats.evictions >= 20_000 - (SHARDS * per_shard) as u64,
            "{stats:?}"
        );
    }

    #[test]
    fn a_full_cache_admits_a_token_on_its_second_miss() {
        let cache = TokenCache::new(SHARDS * 4 * cost(), usize::MAX);
        let k = key();
        // Until its shard is full, a token is cached on its first miss.
        cache.insert(b"tok0", identity("x"), k.clone(), 1_000, 0);
        assert!(cache.get(b"tok0", 1, false).is_some());
        for i in 0..10_000u32 {
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
        }
        let full = cache.stats();
        assert!(full.not_admitted > 0, "{full:?}");
        // Met for the first time by a full cache, a token is left out, unless it passes for
        // one met before (one in eight at most); met again, it is cached.
        let late = 400u64;
        let mut cached_at_first = 0;
        for i in 0..late {
            let token = (i | 1 << 63).to_be_bytes();
            cache.insert(&token, identity("x"), k.clone(), 1_000, 0);
            if cache.get(&token, 1, false).is_some() {
                cached_at_first += 1;
            }
            cache.insert(&token, identity("x"), k.clone(), 1_000, 0);
            assert!(cache.get(&token, 1, false).is_some(), "{i}");
        }
        assert!(cached_at_first <= late / 8 + 40, "{cached_at_first}");
        assert_eq!(
            cache.stats().not_admitted,
            full.not_admitted + late - cached_at_first
        );
    }

    #[test]
    fn the_doorkeeper_remembers_a_token_until_an_eighth_of_it_is_set() {
        let doorkeeper = Doorkeeper::new(4_096);
        let hash = |bit: u64| bit << 40;
        assert!(!doorkeeper.met_before(hash(7)));
        assert!(doorkeeper.met_before(hash(7)));
        // 511 more first meetings: the 512th bit set clears the set but for itself.
        for bit in 1_000..1_510 {
            assert!(!doorkeeper.met_before(hash(bit)));
        }
        assert!(doorkeeper.met_before(hash(7)));
        assert!(!doorkeeper.met_before(hash(1_510)));
        assert!(
            doorkeeper.met_before(hash(1_510)),
            "the last one met is kept"
        );
        assert!(!doorkeeper.met_before(hash(7)), "the others are forgotten");
        assert!(!doorkeeper.met_before(hash(1_000)));
    }

    #[test]
    fn a_flood_of_tokens_sent_once_leaves_the_tokens_in_use_cached() {
        let per_shard = 16;
        let cache = TokenCache::new(SHARDS * per_shard * cost(), usize::MAX);
        let k = key();
        // Two a shard on average, far below what a shard holds.
        let in_use: Vec<[u8; 4]> = (0..SHARDS as u32 * 2)
            .map(|i| (i | 1 << 31).to_be_bytes())
            .collect();
        for token in &in_use {
            cache.insert(token, identity("user"), k.clone(), 1_000, 0);
        }
        let flood = 200_000u32;
        for i in 0..flood {
            if i % 16 == 0 {
                for token in &in_use {
                    assert!(
                        cache.get(token, 1, true).is_some(),
                        "evicted at {i}: {:?}",
                        cache.stats()
                    );
                }
            }
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
        }
        let stats = cache.stats();
        // At most one token in eight passes for one met before, so at most one in eight of the
        // flood is cached, each at the cost of an eviction; the rest cost no insert at all.
        assert!(
            stats.not_admitted >= u64::from(flood) * 7 / 8 - 200,
            "{stats:?}"
        );
        assert!(stats.evictions <= u64::from(flood) / 8 + 200, "{stats:?}");
    }

    #[test]
    fn a_count_cap_holds_too() {
        let cache = TokenCache::new(1 << 30, SHARDS * 2);
        let k = key();
        for i in 0..1_000u32 {
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), 1_000, 0);
            assert!(cache.len() <= SHARDS * 2);
        }
    }

    #[test]
    fn expired_entries_go_first() {
        let budget = SHARDS * 2 * cost();
        let cache = TokenCache::new(budget, usize::MAX);
        let k = key();
        // Fill, read everything (a second chance for all), then let half expire.
        for i in 0..1_000u32 {
            let until = if i % 2 == 0 { 10 } else { 1_000 };
            cache.insert(&i.to_be_bytes(), identity("x"), k.clone(), until, 0);
        }
        let live_before: Vec<u32> = (0..1_000u32)
            .filter(|i| cache.get(&i.to_be_bytes(), 5, false).is_some() && i % 2 == 1)
            .collect();
        cache.insert(b"new!", identity("n"), k.clone(), 1_000, 20);
        cache.insert(b"new!", identity("n"), k.clone(), 1_000, 20);
        assert!(cache.get(b"new!", 20, false).is_some());
        let kept = live_before
            .iter()
            .filter(|i| cache.get(&i.to_be_bytes(), 20, false).is_some())
            .count();
        assert!(
            kept + 1 >= live_before.len(),
            "an expired entry made room, not a live one: {kept} of {}",
            live_before.len()
        );
    }

    #[test]
    fn a_token_with_the_registered_claims_only_is_charged_about_2_kib() {
        let claims = serde_json::json!({"iss": "https://issuer.example/", "aud": "api",
            "sub": "user-0000001", "iat": 1_700_000_000u64, "exp": 1_700_003_600u64});
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        let cost = entry_cost(230, &identity_with("user-0000001", claims));
        assert!((1_900..2_400).contains(&cost), "{cost}");
    }

    #[test]
    fn an_entry_is_charged_for_its_token_and_claims() {
        let small = entry_cost(100, &identity("x"));
        let mut claims = serde_json::Map::new();
        claims.insert("groups".into(), Value::from(vec!["a-long-group-name"; 50]));
        let big = entry_cost(1_000, &identity_with("x", claims));
        assert!(big > small + 900 + 50 * 17, "{small} {big}");
    }
}
