//! Claims: paths into a token's claims, and rendering claim values for HTTP headers.
//!
//! A [`ClaimPath`] is a dotted path into nested objects (`realm_access.roles`); a segment that
//! contains dots is written in brackets and quotes (`["https://example.com/roles"]`), so URL-like
//! claim names need no other escaping.
//!
//! # Example
//!
//! ```
//! use portcullis::claims::ClaimPath;
//! use serde_json::json;
//!
//! let claims = json!({"realm_access": {"roles": ["admin", "ops"]},
//!     "https://example.com/tenant": "acme"});
//! let claims = claims.as_object().unwrap();
//!
//! let roles: ClaimPath = "realm_access.roles".parse().unwrap();
//! assert_eq!(roles.lookup(claims), Some(&json!(["admin", "ops"])));
//! let tenant: ClaimPath = r#"["https://example.com/tenant"]"#.parse().unwrap();
//! assert_eq!(tenant.lookup(claims), Some(&json!("acme")));
//! ```

mod assertion;
mod layer;

pub use crate::claim_path::{ClaimPath, ClaimPathError, MAX_HEADER_VALUE_LEN, render_header_value};
pub use assertion::{AssertionSigner, DEFAULT_ASSERTION_HEADER};
pub use layer::{MapClaims, MapClaimsLayer};
