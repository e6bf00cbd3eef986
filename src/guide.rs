//! Long-form guides from `docs/`, included so their examples run as doc tests.
//!
//! The guides link to each other and to items with reference-style links whose definitions at
//! the end of each file point into the repository (`policy.md`, `../src/policy/mod.rs`), for
//! reading them there. Here each guide is preceded by definitions of the same labels as paths
//! into the crate; Markdown takes the first definition of a label, so the crate documentation
//! links to the items.

#[cfg(all(feature = "axum", feature = "policy"))]
#[doc = "[crate::guide::policy]: crate::guide::policy"]
#[doc = "[crate::guide::validation]: crate::guide::validation"]
#[doc = "[crate::guide::keys]: crate::guide::keys"]
#[doc = "[crate::guide::authorization]: crate::guide::authorization"]
#[doc = "[crate::guide::rate_limiting]: crate::guide::rate_limiting"]
#[doc = "[crate::guide::observability]: crate::guide::observability"]
#[doc = "[crate::guide::deployment]: crate::guide::deployment"]
#[doc = "[crate::guide::threat_model]: crate::guide::threat_model"]
#[doc = "[crate::guide::performance]: crate::guide::performance"]
#[doc = include_str!("../docs/getting-started.md")]
pub mod getting_started {}

#[doc = "[crate::guide::deployment]: crate::guide::deployment"]
#[doc = include_str!("../docs/validation.md")]
pub mod validation {}

#[doc = include_str!("../docs/keys.md")]
pub mod keys {}

#[doc = include_str!("../docs/authorization.md")]
pub mod authorization {}

#[doc = "[crate::clock::MonotonicClock]: crate::clock::MonotonicClock"]
#[doc = "[crate::guide::deployment]: crate::guide::deployment"]
#[doc = include_str!("../docs/rate-limiting.md")]
pub mod rate_limiting {}

#[doc = "[crate::propagate::PropagateLayer]: crate::propagate::PropagateLayer"]
#[doc = "[crate::propagate::TrustIncoming]: crate::propagate::TrustIncoming"]
#[doc = "[crate::propagate::RequestContext]: crate::propagate::RequestContext"]
#[doc = "[crate::propagate::TraceContext]: crate::propagate::TraceContext"]
#[doc = "[crate::propagate::remove_hop_by_hop]: crate::propagate::remove_hop_by_hop"]
#[doc = "[crate::propagate::Outcome::of_response]: crate::propagate::Outcome::of_response"]
#[doc = include_str!("../docs/observability.md")]
pub mod observability {}

#[cfg(feature = "policy")]
#[doc = "[crate::policy::Policy]: crate::policy::Policy"]
#[doc = "[crate::policy::Policy::build]: crate::policy::Policy::build"]
#[doc = "[crate::policy::PolicyLayer]: crate::policy::PolicyLayer"]
#[doc = "[crate::policy::PolicyHandle]: crate::policy::PolicyHandle"]
#[doc = "[crate::propagate::RequestContext]: crate::propagate::RequestContext"]
#[doc = include_str!("../docs/policy.md")]
pub mod policy {}

#[doc = include_str!("../docs/deployment.md")]
pub mod deployment {}

#[doc = include_str!("../docs/threat-model.md")]
pub mod threat_model {}

#[doc = include_str!("../docs/performance.md")]
pub mod performance {}
