//! Bearer-token authentication: the [`Validator`], its verified-token cache, and the
//! [`JwtAuthLayer`] tower layer.
//!
//! A token is verified once (JWS parsing, the signature with `ring`, then the claims) and
//! cached by its exact bytes until its `exp`; later requests with the same token cost a hash,
//! a compare and an `Arc` clone.
//!
//! | case | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token | 401 | `Bearer realm="…"` |
//! | malformed, bad signature, expired, not yet valid, wrong iss/aud/typ, unknown kid | 401 | `Bearer realm="…", error="invalid_token"` |
//! | token sent twice / in two places, malformed `Authorization` | 400 | `Bearer realm="…", error="invalid_request"` |
//! | keys unavailable | 503 | — |
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use jsonwebtoken::{encode, EncodingKey, Header};
//! use portcullis::jwt::{Issuer, JwtAuthLayer, JwtError, Validator};
//! use portcullis::keys::KeySet;
//!
//! let secret = [42u8; 32];
//! let validator = Validator::builder()
//!     .issuer(Issuer::new("https://issuer.example/", KeySet::hmac(&secret).unwrap()).audiences(["api"]))
//!     .build()
//!     .unwrap();
//! let layer = JwtAuthLayer::new(validator);
//!
//! let claims = serde_json::json!({"iss": "https://issuer.example/", "aud": "api", "sub": "ada",
//!     "exp": 4_000_000_000u64});
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
//! assert_eq!(layer.authenticate(&headers).unwrap().unwrap().subject(), Some("ada"));
//!
//! headers.append("authorization", format!("Bearer {token}").parse().unwrap());
//! assert_eq!(layer.authenticate(&headers).unwrap_err(), JwtError::Duplicate);
//! ```

#[cfg(feature = "axum")]
mod axum;
mod cache;
mod error;
mod future;
mod identity;
mod layer;
mod service;
mod validator;

#[cfg(feature = "axum")]
pub use self::axum::{Authenticated, Claims, ClaimsRejection, MissingIdentity};
pub use cache::CacheStats;
pub(crate) use error::check_realm;
pub use error::{ChallengeKind, JwtError};
pub use future::ResponseFuture;
pub use identity::Identity;
#[cfg(feature = "policy")]
pub(crate) use layer::Config;
pub use layer::JwtAuthLayer;
pub use service::JwtAuth;
pub use validator::{DEFAULT_CACHE_BUDGET, Issuer, Validator, ValidatorBuilder};
