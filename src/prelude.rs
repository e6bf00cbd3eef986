//! The types a stack usually names, for `use portcullis::prelude::*;`: the layers, what they
//! are built from, and the verified identity.
//!
//! ```
//! use portcullis::prelude::*;
//!
//! let limits = RateLimitLayer::new([Limit::per_subject(Quota::per_minute(100))]);
//! # let _ = limits;
//! ```

pub use crate::authz::{Auth, AuthorizeLayer, Route, Routes};
pub use crate::claims::MapClaimsLayer;
#[cfg(feature = "axum")]
pub use crate::jwt::Authenticated;
pub use crate::jwt::{Identity, Issuer, JwtAuthLayer, Validator};
#[cfg(feature = "jwks")]
pub use crate::keys::RemoteJwks;
pub use crate::keys::{Key, KeySet};
#[cfg(feature = "policy")]
pub use crate::policy::{Policy, PolicyHandle};
pub use crate::propagate::PropagateLayer;
pub use crate::rate_limit::{Limit, Quota, RateLimitLayer};
