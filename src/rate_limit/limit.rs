//! One limit: a name, what it counts by, a quota (with tiers chosen by a claim), where it
//! applies, and the store that keeps its state.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use serde_json::Value;

use super::gcra::Quota;
use super::key::{RateKey, RequestView};
use super::memory::{DEFAULT_MAX_KEYS, MemoryStore};
use super::store::Store;
use crate::claim_path::ClaimPath;
use crate::error::ConfigError;
use crate::route::Route;

/// Quotas by claim value.
type Tiers = Box<[(Box<str>, Quota)]>;

/// One limit: a name, what it counts by, a quota (with tiers chosen by a claim), and a store.
#[derive(Clone)]
pub struct Limit {
    pub(super) name: Box<str>,
    pub(super) key: RateKey,
    quota: Quota,
    tiers: Option<(ClaimPath, Tiers)>,
    /// Where the limit keeps its keys' state.
    pub(super) store: Arc<dyn Store>,
    /// `RateLimit-Policy` values, one per quota (the default first, then each tier).
    pub(super) policies: Box<[HeaderValue]>,
    pub(super) scope: Scope,
    #[cfg(feature = "metrics")]
    pub(super) counters: crate::telemetry::LimitCounters,
}

/// Where a [`Limit`] applies, by the route a request matches in the layer's
/// [`routes`](super::RateLimitLayer::routes) and the limits that route names
/// ([`Route::rate_limits`](crate::authz::Route::rate_limits)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Every request (the default).
    #[default]
    Everywhere,
    /// Requests whose matched route names this limit.
    Named,
    /// Requests whose matched route names this limit or names none, and requests that match
    /// no route (or reach a layer without routes): the fallback, as a policy's `default`
    /// limit.
    Default,
}

impl Scope {
    /// Whether a limit named `name` with this scope applies to a request that matched `route`.
    pub(super) fn applies(self, name: &str, route: Option<&Route>) -> bool {
        let names = route.map(Route::rate_limit_names);
        let named = names.is_some_and(|names| names.iter().any(|n| &**n == name));
        match self {
            Scope::Everywhere => true,
            Scope::Named => named,
            Scope::Default => named || names.is_none_or(<[Box<str>]>::is_empty),
        }
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("key", &self.key.to_string())
            .field("quota", &self.quota)
            .field("tiers", &self.tiers)
            .field("store", &self.store)
            .finish()
    }
}

fn is_sf_token(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Limit {
    /// A limit named `name` (a structured-field token of at most 64 letters, digits, `-_.:`), counting by
    /// `key`, with an in-memory store of at most 100 000 keys.
    pub fn new(name: &str, key: RateKey, quota: Quota) -> Result<Self, ConfigError> {
        if !is_sf_token(name) {
            return Err(ConfigError::InvalidHeader(format!(
                "rate-limit name {name:?}: use 1 to 64 letters, digits and -_.:"
            )));
        }
        let mut limit = Self {
            name: name.into(),
            key,
            quota,
            tiers: None,
            store: Arc::new(MemoryStore::new(DEFAULT_MAX_KEYS)),
            policies: Box::default(),
            scope: Scope::Everywhere,
            #[cfg(feature = "metrics")]
            counters: Default::default(),
        };
        limit.policies = limit.build_policies()?;
        Ok(limit)
    }

    /// `quota` for each verified subject (`claim:sub`), in memory, named `per-subject`. A
    /// request without an identity is counted by the layer's
    /// [`anonymous`](super::RateLimitLayer::anonymous) key (the client IP by default).
    ///
    /// ```
    /// use portcullis::rate_limit::{Limit, Quota};
    ///
    /// let limit = Limit::per_subject(Quota::per_minute(100));
    /// assert_eq!(limit.name(), "per-subject");
    /// ```
    pub fn per_subject(quota: Quota) -> Self {
        let sub = "sub".parse().expect("`sub` is a claim path");
        Self::new("per-subject", RateKey::Claim(sub), quota).expect("the name is a token")
    }

    /// `quota` for each client IP (the connection's peer: see [`ClientIp`](super::ClientIp)
    /// and [`Limit::new`] to believe a proxy's header), in memory, named `per-client-ip`.
    pub fn per_client_ip(quota: Quota) -> Self {
        Self::new("per-client-ip", RateKey::Ip(Default::default()), quota)
            .expect("the name is a token")
    }

    /// Where the limit applies (default: every request), by the limits the matched route
    /// names.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Quotas chosen by the claim at `path` (`plan` = `gold` → its quota); other values and
    /// anonymous requests get the limit's own quota.
    pub fn tiers<I, S>(mut self, path: ClaimPath, tiers: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (S, Quota)>,
        S: Into<Box<str>>,
    {
        self.tiers = Some((
            path,
            tiers.into_iter().map(|(v, q)| (v.into(), q)).collect(),
        ));
        self.policies = self.build_policies()?;
        Ok(self)
    }

    /// The most keys the in-memory store holds (default 100 000).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.store = Arc::new(MemoryStore::new(max_keys));
        self
    }

    /// Keeps this limit's state in Redis, shared by every replica using the same store.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, store: super::redis::RedisStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The in-memory store, when the limit uses one (for monitoring: [`MemoryStore::len`]).
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        self.store.as_memory()
    }

    /// The quota of tier `tier` (0: the limit's own).
    pub(super) fn quota_of_tier(&self, tier: usize) -> &Quota {
        match (tier, &self.tiers) {
            (0, _) | (_, None) => &self.quota,
            (t, Some((_, tiers))) => tiers.get(t - 1).map_or(&self.quota, |(_, q)| q),
        }
    }

    fn quotas(&self) -> impl Iterator<Item = &Quota> {
        std::iter::once(&self.quota).chain(
            self.tiers
                .iter()
                .flat_map(|(_, t)| t.iter().map(|(_, q)| q)),
        )
    }

    /// `RateLimit-Policy` values, one per quota (the default first, then each tier).
    fn build_policies(&self) -> Result<Box<[HeaderValue]>, ConfigError> {
        self.quotas()
            .map(|q| {
                // q is the quota units in a window of w seconds: the burst over the time it takes
                // to refill it.
                let window = q
                    .emission_interval()
                    .saturating_mul(u64::from(q.burst_size()))
                    .div_ceil(1_000_000_000)
                    .max(1);
                HeaderValue::try_from(format!("\"{}\";q={};w={window}", self.name, q.burst_size()))
                    .map_err(|e| ConfigError::InvalidHeader(e.to_string()))
            })
            .collect()
    }

    /// The quota (and its index) for the identity's tier.
    pub(super) fn quota_for(&self, view: &RequestView<'_>) -> (usize, &Quota) {
        if let (Some((path, tiers)), Some(identity)) = (&self.tiers, view.identity)
            && let Some(Value::String(value)) = path.lookup(identity.claims())
            && let Some(i) = tiers.iter().position(|(tier, _)| **tier == **value)
        {
            return (i + 1, &tiers[i].1);
        }
        (0, &self.quota)
    }
}
