//! Errors found while building the crate's types from configuration.

use std::io;
use std::path::PathBuf;

/// A configuration that cannot be built. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key could not be used.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// An HMAC secret is shorter than the 32 bytes HS256 needs (RFC 7518 §3.2).
    #[error("an HMAC secret of {len} bytes is too short: at least 32 are needed")]
    WeakSecret {
        /// The secret's length.
        len: usize,
    },
    /// A JWK or JWKS document could not be read.
    #[error("invalid JWK set: {0}")]
    InvalidJwks(String),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An environment variable holding a secret is not set or not UTF-8.
    #[error("environment variable {var} is not set or not UTF-8")]
    Env {
        /// The variable's name.
        var: String,
    },
    /// A validator needs at least one issuer.
    #[error("no issuer is configured")]
    NoIssuers,
    /// The same issuer is configured twice.
    #[error("issuer {issuer:?} is configured twice")]
    DuplicateIssuer {
        /// The issuer.
        issuer: String,
    },
    /// Audiences were not set; they are required unless explicitly set to the empty list.
    #[error("issuer {issuer:?} has no audiences: set them, or set an empty list to accept any")]
    MissingAudiences {
        /// The issuer.
        issuer: String,
    },
    /// The issuer's algorithm allow-list is empty.
    #[error("issuer {issuer:?} allows no algorithm")]
    NoAlgorithms {
        /// The issuer.
        issuer: String,
    },
    /// A header name or value in the configuration is not valid HTTP.
    #[error("invalid header configuration: {0}")]
    InvalidHeader(String),
}
