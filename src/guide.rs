//! Long-form guides from `docs/`, included so their examples run as doc tests.

#[cfg(all(feature = "axum", feature = "policy"))]
#[doc = include_str!("../docs/getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("../docs/validation.md")]
pub mod validation {}

#[doc = include_str!("../docs/keys.md")]
pub mod keys {}

#[doc = include_str!("../docs/authorization.md")]
pub mod authorization {}

#[doc = include_str!("../docs/rate-limiting.md")]
pub mod rate_limiting {}

#[doc = include_str!("../docs/observability.md")]
pub mod observability {}

#[cfg(feature = "policy")]
#[doc = include_str!("../docs/policy.md")]
pub mod policy {}

#[doc = include_str!("../docs/deployment.md")]
pub mod deployment {}

#[doc = include_str!("../docs/threat-model.md")]
pub mod threat_model {}

#[doc = include_str!("../docs/performance.md")]
pub mod performance {}
