//! What the layer refuses with, in the responses' extensions, and its reason codes.

use crate::reject::Reason;

/// The reason code of a 429.
pub(crate) const RATE_LIMITED: &str = Reason::RateLimited.code();
/// The reason code of a 503 from a limit store that fails closed.
pub(crate) const RATE_LIMIT_STORE_UNAVAILABLE: &str = Reason::RateLimitStoreUnavailable.code();

/// The request was over a limit. Goes into the 429 response's extensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {limit} exceeded; retry after {retry_after} s")]
#[non_exhaustive]
pub struct RateLimited {
    /// The limit that denied.
    pub limit: Box<str>,
    /// Seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
}

/// A limit's shared store could not answer and fails closed: the 503's extensions carry this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate-limit store unavailable")]
#[non_exhaustive]
pub struct RateLimitUnavailable;
