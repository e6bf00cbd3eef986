//! Authorization: routes (method set and path pattern, first match wins), each with an
//! authentication mode and a rule over the verified [`Identity`], and [`AuthorizeLayer`].
//!
//! A request that matches no route needs a valid token and meets no further rule (fail
//! closed). Paths are normalised first (see [`path`]), so `/admin/../orders`, `//orders` and
//! `%2e%2e` tricks cannot reach a rule they should not.
//!
//! # Example
//!
//! ```
//! use http::Method;
//! use portcullis::authz::{Auth, Route, Routes};
//!
//! let routes = Routes::new([
//!     Route::new("/health").unwrap().auth(Auth::None),
//!     Route::new("/orders/**").unwrap().methods([Method::POST, Method::PUT]).scopes_all(["write:orders"]),
//!     Route::new("/orders/**").unwrap().scopes_any(["read:orders", "write:orders"]),
//! ]);
//! let health = routes.resolve(&Method::GET, "/health").unwrap();
//! assert_eq!(health.map(|r| r.auth_mode()), Some(Auth::None));
//! let write = routes.resolve(&Method::POST, "/orders/42/../7").unwrap().unwrap();
//! assert_eq!(write.pattern(), "/orders/**");
//! assert!(routes.resolve(&Method::GET, "/elsewhere").unwrap().is_none()); // token required
//! ```

mod layer;

use serde_json::Value;

pub use crate::route::path;
pub use crate::route::{Auth, METHOD_OVERRIDE_HEADERS, Route, Routes};
#[cfg(feature = "policy")]
pub(crate) use layer::Config;
pub use layer::{Authorize, AuthorizeLayer, AuthzError};

use crate::jwt::Identity;

impl Route {
    /// Whether `identity` meets the route's rule. Does not allocate.
    pub fn allows(&self, identity: &Identity) -> bool {
        self.scopes_all.iter().all(|s| identity.has_scope(s))
            && (self.scopes_any.is_empty() || self.scopes_any.iter().any(|s| identity.has_scope(s)))
            && self.roles.as_ref().is_none_or(|(path, roles)| {
                let any_role = |value: &str| roles.iter().any(|r| &**r == value);
                match path.lookup(identity.claims()) {
                    Some(Value::String(role)) => any_role(role),
                    Some(Value::Array(items)) => {
                        items.iter().any(|i| i.as_str().is_some_and(any_role))
                    }
                    _ => false,
                }
            })
            && self
                .claims
                .iter()
                .all(|(path, allowed)| match path.lookup(identity.claims()) {
                    Some(Value::Array(items)) => items.iter().any(|i| allowed.contains(i)),
                    Some(value) => allowed.contains(value),
                    None => false,
                })
    }
}
