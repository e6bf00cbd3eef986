//! Finding a bearer token in a request, and parsing a JWS compact serialization.
//!
//! Both parts are plain functions over borrowed bytes: no tower, no runtime, no allocation in
//! extraction. [`TokenExtractor`] looks in the configured places and rejects a request that
//! carries a token twice; [`Jws::split`] splits (and its methods decode) a compact JWS and reads its JOSE
//! header strictly.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use portcullis::token::{TokenExtractor, TokenSource};
//!
//! let extractor = TokenExtractor::new([TokenSource::Bearer, TokenSource::cookie("access_token")]);
//! let mut headers = HeaderMap::new();
//! headers.insert("authorization", "bearer abc.def.ghi".parse().unwrap());
//! assert_eq!(extractor.extract(&headers).unwrap(), Some(&b"abc.def.ghi"[..]));
//!
//! headers.insert("cookie", "theme=dark; access_token=abc.def.ghi".parse().unwrap());
//! assert!(extractor.extract(&headers).is_err()); // the same token in two places
//! ```

mod extract;
mod jws;
mod strict_json;

#[cfg(fuzzing)]
pub(crate) use extract::fuzz_extract;
pub use extract::{DEFAULT_MAX_TOKEN_LEN, ExtractError, TokenExtractor, TokenSource};
#[cfg(fuzzing)]
pub(crate) use jws::fuzz_parse;
pub(crate) use jws::strip_application;
pub use jws::{JoseHeader, Jws, JwsError};
pub(crate) use strict_json::parse_object;
