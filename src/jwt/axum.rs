use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, header::WWW_AUTHENTICATE};

use super::Identity;

/// An axum extractor for the identity [`JwtAuthLayer`](super::JwtAuthLayer) verified.
///
/// Use `Option<Authenticated>` on routes where authentication is optional.
///
/// # Example
///
/// ```
/// use portcullis::jwt::Authenticated;
///
/// async fn whoami(Authenticated(identity): Authenticated) -> String {
///     identity.subject().unwrap_or("anonymous").to_owned()
/// }
/// let _app: axum::Router = axum::Router::new().route("/whoami", axum::routing::get(whoami));
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Identity>);

/// The rejection of [`Authenticated`] when no layer put an identity in the request: 401.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct MissingIdentity;

impl IntoResponse for MissingIdentity {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, [(WWW_AUTHENTICATE, "Bearer")]).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Identity>>()
            .cloned()
            .map(Authenticated)
            .ok_or(MissingIdentity)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Arc<Identity>>()
            .cloned()
            .map(Authenticated))
    }
}
