//! Where a limit keeps its keys' state: the [`Store`] the engine charges through. The memory
//! store answers at once; a shared store (Redis) after a round trip. A new store (a Redis
//! Cluster, say) implements this trait and the engine, the headers and the metrics work as
//! they are.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::gcra::{Decision, Quota};
use super::memory::{KeyBuilder, KeyHash, KeyParts, MemoryStore};
use ring::digest;

/// What a limit does when its shared store (Redis) cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Refuse the request with 503 (the default: a limit that cannot be checked is not met).
    #[default]
    FailClosed,
    /// Let the request through, and report it.
    FailOpen,
}

/// Why a shared store could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No answer within the timeout.
    #[error("the rate-limit store did not answer in time")]
    Timeout,
    /// Redis answered with an error, or the connection failed.
    #[error("the rate-limit store failed: {0}")]
    Redis(String),
}

/// A request's key in a store.
pub(crate) enum StoreKey {
    /// A keyed hash, for a store in this process.
    Hash(KeyHash),
    /// A name every replica computes alike (`portcullis:{<limit>:<digest>}`), for a shared
    /// store.
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only a shared store reads these")
    )]
    Shared(String),
}

/// Builds a [`StoreKey`] from a request's key parts, in the form its store wants.
pub(crate) enum StoreKeyBuilder {
    Hash(KeyBuilder),
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only a shared store builds these")
    )]
    Shared(DigestKey),
}

impl KeyParts for StoreKeyBuilder {
    fn part(self, bytes: &[u8]) -> Self {
        match self {
            StoreKeyBuilder::Hash(key) => StoreKeyBuilder::Hash(key.part(bytes)),
            StoreKeyBuilder::Shared(key) => StoreKeyBuilder::Shared(key.part(bytes)),
        }
    }
}

impl StoreKeyBuilder {
    /// The key, for the limit named `limit`.
    pub(crate) fn finish(self, limit: &str) -> StoreKey {
        match self {
            StoreKeyBuilder::Hash(key) => StoreKey::Hash(key.finish()),
            StoreKeyBuilder::Shared(key) => StoreKey::Shared(key.finish(limit)),
        }
    }
}

/// A digest of a key's parts (SHA-256, framed like the in-memory keys): the same on every
/// replica, and collision-resistant without a shared secret.
pub(crate) struct DigestKey(digest::Context);

impl DigestKey {
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only a shared store builds these")
    )]
    pub(crate) fn new() -> Self {
        Self(digest::Context::new(&digest::SHA256))
    }

    /// `portcullis:{<limit>:<first 16 bytes of the digest, hex>}`: one key per script call, in
    /// one hash slot on a cluster.
    pub(crate) fn finish(self, limit: &str) -> String {
        let digest = self.0.finish();
        let mut out = String::with_capacity(limit.len() + 48);
        out.push_str("portcullis:{");
        out.push_str(limit);
        out.push(':');
        for b in &digest.as_ref()[..16] {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('}');
        out
    }
}

impl KeyParts for DigestKey {
    fn part(mut self, bytes: &[u8]) -> Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }
}

/// A store's answer: now, or after a round trip.
pub(crate) enum Answer<'a, T> {
    Now(T),
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only a shared store answers later")
    )]
    Later(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<T> Answer<'_, T> {
    /// The answer, waiting for it if it comes later.
    pub(crate) async fn get(self) -> T {
        match self {
            Answer::Now(value) => value,
            Answer::Later(future) => future.await,
        }
    }
}

/// Where a limit keeps its keys' state, charged by the rate limit's engine: plan the keys,
/// charge each limit in order, refund the earlier charges when a later limit denies.
pub(crate) trait Store: Send + Sync + fmt::Debug {
    /// A builder for a request's key in this store.
    fn key(&self) -> StoreKeyBuilder;

    /// Whether every answer comes at once (the engine then decides within the layer's `call`,
    /// without allocating).
    fn answers_now(&self) -> bool;

    /// Charges `cost` units against `key` under `quota` at `now` (nanoseconds on the layer's
    /// clock; a shared store reads its own).
    fn charge<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        now: u64,
        cost: u32,
    ) -> Answer<'a, Result<Decision, StoreError>>;

    /// Takes back a charge of `cost` (for a request a later limit denied).
    fn refund<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        now: u64,
        cost: u32,
    ) -> Answer<'a, Result<(), StoreError>>;

    /// What the limit does when this store cannot answer.
    fn on_error(&self) -> OnStoreError;

    /// The store, when it is the in-memory one (for monitoring).
    fn as_memory(&self) -> Option<&MemoryStore> {
        None
    }
}

impl Store for MemoryStore {
    fn key(&self) -> StoreKeyBuilder {
        StoreKeyBuilder::Hash(MemoryStore::key(self))
    }

    fn answers_now(&self) -> bool {
        true
    }

    fn charge<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        now: u64,
        cost: u32,
    ) -> Answer<'a, Result<Decision, StoreError>> {
        match key {
            StoreKey::Hash(key) => Answer::Now(Ok(self.check(*key, quota, now, cost))),
            StoreKey::Shared(_) => {
                Answer::Now(Err(StoreError::Redis("a key of another store".into())))
            }
        }
    }

    fn refund<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        now: u64,
        cost: u32,
    ) -> Answer<'a, Result<(), StoreError>> {
        if let StoreKey::Hash(key) = key {
            MemoryStore::refund(self, *key, quota, now, cost);
        }
        Answer::Now(Ok(()))
    }

    fn on_error(&self) -> OnStoreError {
        OnStoreError::FailClosed
    }

    fn as_memory(&self) -> Option<&MemoryStore> {
        Some(self)
    }
}

#[cfg(feature = "redis")]
impl Store for super::redis::RedisStore {
    fn key(&self) -> StoreKeyBuilder {
        StoreKeyBuilder::Shared(DigestKey::new())
    }

    fn answers_now(&self) -> bool {
        false
    }

    fn charge<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        _now: u64,
        cost: u32,
    ) -> Answer<'a, Result<Decision, StoreError>> {
        let StoreKey::Shared(key) = key else {
            return Answer::Now(Err(StoreError::Redis("a key of another store".into())));
        };
        Answer::Later(Box::pin(self.check(key, quota, cost)))
    }

    fn refund<'a>(
        &'a self,
        key: &'a StoreKey,
        quota: &'a Quota,
        _now: u64,
        cost: u32,
    ) -> Answer<'a, Result<(), StoreError>> {
        let StoreKey::Shared(key) = key else {
            return Answer::Now(Ok(()));
        };
        Answer::Later(Box::pin(super::redis::RedisStore::refund(
            self, key, quota, cost,
        )))
    }

    fn on_error(&self) -> OnStoreError {
        self.failure_policy()
    }
}
