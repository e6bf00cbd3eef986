//! Rate limiting: GCRA per key on one atomic, a bounded in-memory store, and the
//! [`RateLimitLayer`] with IETF `RateLimit` headers.
//!
//! The algorithm ([`Gcra`], [`decide`]) and the store ([`MemoryStore`]) know nothing of tower or HTTP; the layer
//! builds each request's key (a claim, the client IP, a header, the route, or several) and
//! checks every configured [`Limit`].
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use portcullis::rate_limit::{MemoryStore, Quota};
//!
//! let quota = Quota::per_minute(NonZeroU32::new(100).unwrap()).burst(NonZeroU32::new(2).unwrap());
//! let store = MemoryStore::new(1_000);
//! let key = store.key().part(b"user-42").finish();
//! let now = Duration::from_secs(1_700_000_000).as_nanos() as u64;
//! assert!(store.check(key, &quota, now, 1).allowed);
//! assert!(store.check(key, &quota, now, 1).allowed);
//! let denied = store.check(key, &quota, now, 1);
//! assert!(!denied.allowed);
//! assert_eq!(denied.retry_after_secs(), 1); // 600 ms, rounded up
//! ```

mod engine;
mod error;
mod future;
mod gcra;
mod headers;
pub(crate) mod key;
mod layer;
mod limit;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod store;

pub use crate::net::{IpNet, PeerAddr};
pub use error::{RateLimitUnavailable, RateLimited};
pub use future::ResponseFuture;
pub use gcra::{Decision, Gcra, Quota, QuotaCount, decide, next_unit};
pub use headers::{RATELIMIT, RATELIMIT_POLICY};
pub use key::{ClientIp, ForwardedHeader, RateKey, TrustedProxies, client_ip};
#[cfg(feature = "policy")]
pub(crate) use layer::Config;
pub use layer::{RateLimit, RateLimitLayer};
pub use limit::{Limit, Scope};
pub use memory::{DEFAULT_MAX_KEYS, KeyBuilder, KeyHash, KeyParts, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use store::{OnStoreError, StoreError};
