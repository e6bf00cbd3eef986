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

/// An axum extractor for the verified token's claims, read into your own type.
///
/// The claims are deserialized on each use (the identity itself is cached); a token whose
/// claims do not fit `T` is authentic but does not carry what the handler needs: 403.
///
/// # Example
///
/// ```
/// use portcullis::jwt::Claims;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Token {
///     sub: String,
///     tenant: String,
/// }
///
/// async fn whoami(Claims(token): Claims<Token>) -> String {
///     format!("{} of {}", token.sub, token.tenant)
/// }
/// let _app: axum::Router = axum::Router::new().route("/whoami", axum::routing::get(whoami));
/// ```
#[derive(Debug, Clone)]
pub struct Claims<T>(pub T);

/// The rejection of [`Claims`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsRejection {
    /// No layer put an identity in the request: 401.
    #[error("no verified identity")]
    MissingIdentity,
    /// The claims do not fit the handler's type (a claim missing or of another type): 403.
    #[error("the token's claims do not fit: {0}")]
    Mismatch(String),
}

impl IntoResponse for ClaimsRejection {
    fn into_response(self) -> Response {
        match self {
            ClaimsRejection::MissingIdentity => MissingIdentity.into_response(),
            // The reason stays out of the body: it names claims the handler expects.
            ClaimsRejection::Mismatch(_) => StatusCode::FORBIDDEN.into_response(),
        }
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Claims<T> {
    type Rejection = ClaimsRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let identity = parts
            .extensions
            .get::<Arc<Identity>>()
            .ok_or(ClaimsRejection::MissingIdentity)?;
        T::deserialize(identity.claims())
            .map(Claims)
            .map_err(|e| ClaimsRejection::Mismatch(e.to_string()))
    }
}
