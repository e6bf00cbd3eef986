//! portcullis: the front door of an API gateway as tower layers.
//!
//! A team wraps its axum, hyper or tonic service in a few layers, and every request is
//! authenticated before the service sees it, the job an API gateway's JWT authorizer does at
//! the edge, done in-process and fast: a cached token costs a hash, a compare and an `Arc`
//! clone, with no heap allocation.
//!
//! - [`token`]: finding the bearer token (header, cookie, custom header) and parsing the JWS.
//! - [`keys`]: verification keys from PEM, JWK/JWKS, HMAC secrets and (feature `jwks`) remote
//!   JWKS and discovery, bound to their kind.
//! - [`jwt`]: the [`Validator`](jwt::Validator) (issuers, audiences, algorithm allow-lists,
//!   leeway, `typ`, lifetime) with its verified-token cache, and [`JwtAuthLayer`](jwt::JwtAuthLayer).
//! - [`authz`]: routes with path normalisation, rules over scopes, roles and claims, and
//!   [`AuthorizeLayer`](authz::AuthorizeLayer) (403 `insufficient_scope`).
//! - [`claims`]: claim paths and header-safe rendering of claim values.
//! - [`headers`]: header names as upstreams read them (`_` as `-`).
//! - [`grpc`]: rejections as gRPC statuses for gRPC clients.
//! - [`reject`]: one hook that shapes every layer's refusals.
//! - [`rate_limit`]: GCRA per key, a bounded in-memory store, and
//!   [`RateLimitLayer`](rate_limit::RateLimitLayer) with IETF `RateLimit` headers.
//! - [`propagate`]: request ids, W3C trace context, header propagation, hop-by-hop headers and
//!   audit events, in [`PropagateLayer`](propagate::PropagateLayer), which goes outermost.
//! - [`crypto`]: algorithms, and a `jsonwebtoken` crypto provider backed by `ring`.
//! - [`clock`]: injectable time.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use jsonwebtoken::{encode, EncodingKey, Header};
//! use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
//! use portcullis::keys::KeySet;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let secret = [7u8; 32];
//! let validator = Validator::builder()
//!     .issuer(Issuer::new("https://issuer.example/", KeySet::hmac(&secret).unwrap())
//!         .audiences(["orders-api"]))
//!     .build()?;
//! let app = ServiceBuilder::new()
//!     .layer(JwtAuthLayer::new(validator))
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new("hello".to_owned()))
//!     }));
//!
//! let claims = serde_json::json!({"iss": "https://issuer.example/", "aud": "orders-api",
//!     "sub": "ada", "exp": 4_000_000_000u64});
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(&secret).unwrap()).unwrap();
//! let request = Request::builder()
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(String::new())
//!     .unwrap();
//! assert_eq!(app.oneshot(request).await.unwrap().status(), StatusCode::OK);
//! # Ok::<_, portcullis::error::ConfigError>(()) }).unwrap();
//! ```
//!
//! Guides: `guide::getting_started` (features `axum` and `policy`), `guide::policy` (feature
//! `policy`), [`guide::validation`], [`guide::keys`], [`guide::authorization`],
//! [`guide::rate_limiting`], [`guide::observability`], [`guide::deployment`],
//! [`guide::threat_model`], [`guide::performance`].
//!
//! # Features
//!
//! None is on by default; the layers above need none of them.
//!
//! - `policy`: [`policy`], the whole stack from one TOML file, checked when read, and
//!   reloaded while serving.
//! - `jwks`: `RemoteJwks`, a JWKS over HTTP(S) with background refresh, and OIDC / RFC 8414
//!   discovery (hyper-util, rustls with ring).
//! - `axum`: the `Authenticated` extractor for axum handlers, and axum's `ConnectInfo` read as
//!   the client's address.
//! - `redis`: `RedisStore`, rate limits shared by a fleet of replicas through Redis.
//! - `metrics`: counters and a latency histogram through the `metrics` facade (decisions by
//!   reason, rate-limit results, key fetches, store errors).
//!
//! On docs.rs each item that needs a feature says which.
//!
//! The crate forbids `unsafe` code. Tokens, keys and secrets never appear in an error message or
//! a `Debug` string.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod authz;
mod claim_path;
pub mod claims;
pub mod clock;
pub mod crypto;
mod decision;
mod der;
pub mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod grpc;
pub mod guide;
pub mod headers;
pub mod jwt;
pub mod keys;
mod net;
#[cfg(feature = "policy")]
pub mod policy;
pub mod prelude;
pub mod propagate;
pub mod rate_limit;
pub mod reject;
mod route;
#[cfg(feature = "metrics")]
mod telemetry;
pub mod token;

pub use error::ConfigError;

// The README's examples compile as doc tests.
#[cfg(all(doctest, feature = "axum", feature = "policy"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
