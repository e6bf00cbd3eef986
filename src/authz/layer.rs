use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::path::PathError;
use super::{Auth, Route, Routes};
use crate::decision::Recorder;
use crate::error::ConfigError;
use crate::jwt::{Identity, ResponseFuture};
use crate::reject::{DefaultRejection, OnRejection, Reason, Refusal, respond};

/// Why a request was refused by [`Authorize`]. The value goes into the response's extensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The request path cannot be normalised safely.
    #[error("malformed request path: {0}")]
    BadPath(PathError),
    /// The route needs an identity and the request has none.
    #[error("authentication is required")]
    Unauthenticated,
    /// The identity does not meet the route's rule.
    #[error("insufficient scope for route {route}")]
    InsufficientScope {
        /// The route's pattern.
        route: Box<str>,
    },
}

impl AuthzError {
    /// The status this error answers with; the one place that decides it.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthzError::BadPath(_) => StatusCode::BAD_REQUEST,
            AuthzError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthzError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// A stable reason code for audit events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthzError::BadPath(error) => error.reason(),
            AuthzError::Unauthenticated => Reason::TokenMissing.code(),
            AuthzError::InsufficientScope { .. } => Reason::InsufficientScope.code(),
        }
    }
}

/// Checks each request's route rule against the `Arc<Identity>` an earlier layer (such as
/// [`JwtAuthLayer`](crate::jwt::JwtAuthLayer)) put in its extensions: 403
/// `insufficient_scope` when the rule is not met, 401 when the route needs an identity and
/// there is none, 400 for a path that cannot be normalised.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use portcullis::authz::{AuthorizeLayer, Route, Routes};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let routes = Routes::new([Route::new("/admin/**").unwrap().scopes_all(["admin"])]);
/// let service = ServiceBuilder::new()
///     .layer(AuthorizeLayer::new(routes))
///     .service(service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
/// // No identity in the extensions: the route needs one.
/// let response = service.oneshot(Request::get("/admin/users").body(String::new()).unwrap()).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// # })
/// ```
pub struct AuthorizeLayer<R = DefaultRejection> {
    config: Arc<Config>,
    rejection: Arc<R>,
}

impl<R> Clone for AuthorizeLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

pub(crate) struct Config {
    routes: Routes,
    realm: Box<str>,
    no_token: HeaderValue,
    /// Each route's 403 challenge, by its index in the table: built with the layer, so a
    /// refusal neither searches the table again nor formats anything.
    insufficient: Box<[HeaderValue]>,
}

/// The `WWW-Authenticate` challenge of a 403 on `route`: `insufficient_scope`, with the scopes
/// the route names.
fn insufficient_scope_challenge(
    realm: &str,
    route: &super::Route,
) -> Result<HeaderValue, ConfigError> {
    let scope = route
        .challenge_scope()
        .and_then(|v| v.to_str().ok())
        .map(|scope| format!(", scope=\"{scope}\""))
        .unwrap_or_default();
    HeaderValue::try_from(format!(
        "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"the access token does not grant this request\"{scope}"
    ))
    .map_err(|e| ConfigError::InvalidHeader(e.to_string()))
}

impl<R> fmt::Debug for AuthorizeLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeLayer")
            .field("routes", &self.config.routes)
            .field("realm", &self.config.realm)
            .finish()
    }
}

impl AuthorizeLayer {
    /// A layer enforcing `routes`, in realm `api`.
    pub fn new(routes: Routes) -> Self {
        Self::with_realm(routes, "api").expect("the default realm is valid")
    }

    /// A layer enforcing `routes`, naming `realm` in its challenges.
    pub fn with_realm(routes: Routes, realm: &str) -> Result<Self, ConfigError> {
        crate::jwt::check_realm(realm)?;
        let no_token = HeaderValue::try_from(format!("Bearer realm=\"{realm}\""))
            .map_err(|e| ConfigError::InvalidHeader(e.to_string()))?;
        let insufficient = routes
            .routes()
            .iter()
            .map(|route| insufficient_scope_challenge(realm, route))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config: Arc::new(Config {
                routes,
                realm: realm.into(),
                no_token,
                insufficient,
            }),
            rejection: Arc::new(DefaultRejection),
        })
    }
}

impl<R> AuthorizeLayer<R> {
    /// The configuration and the rejection hook a service of this layer runs with.
    #[cfg(feature = "policy")]
    pub(crate) fn parts(&self) -> (Arc<Config>, Arc<R>) {
        (Arc::clone(&self.config), Arc::clone(&self.rejection))
    }

    /// Replaces the response built for refused requests (see [`reject`](crate::reject)).
    pub fn on_rejection<R2>(self, rejection: R2) -> AuthorizeLayer<R2> {
        AuthorizeLayer {
            config: self.config,
            rejection: Arc::new(rejection),
        }
    }
}

impl<S, R> Layer<S> for AuthorizeLayer<R> {
    type Service = Authorize<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

/// The service [`AuthorizeLayer`] wraps around an inner service.
pub struct Authorize<S, R = DefaultRejection> {
    inner: S,
    config: Arc<Config>,
    rejection: Arc<R>,
}

impl<S: Clone, R> Clone for Authorize<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for Authorize<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorize")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The decision for a request: `Ok` to let it through, else the error and the index of
    /// the route it matched. Does not allocate when the request is allowed and its path was
    /// already normalised.
    fn decide<B>(&self, request: &mut Request<B>) -> Result<(), (AuthzError, Option<usize>)> {
        let (route, preflight) = self
            .routes
            .resolve_request(request)
            .map_err(|e| (AuthzError::BadPath(e), None))?;
        if let (Some((_, route)), Some(recorder)) = (route, Recorder::of(request)) {
            recorder.route(route.pattern_text());
        }
        self.check(
            route,
            preflight,
            request.extensions().get::<Arc<Identity>>(),
        )
    }

    /// The rule of the matched `route` (its index and the route, if any matched) for
    /// `identity`: `Ok` to let the request through, else the error and the route's index. A
    /// CORS preflight let through passes.
    pub(crate) fn check(
        &self,
        route: Option<(usize, &Route)>,
        preflight: bool,
        identity: Option<&Arc<Identity>>,
    ) -> Result<(), (AuthzError, Option<usize>)> {
        if preflight {
            return Ok(());
        }
        let Some((index, route)) = route else {
            // Unmatched: a token is required, and no rule applies.
            return identity
                .map(|_| ())
                .ok_or((AuthzError::Unauthenticated, None));
        };
        match (route.auth_mode(), identity) {
            (Auth::None, _) | (Auth::Optional, None) => Ok(()),
            (Auth::Required, None) => Err((AuthzError::Unauthenticated, Some(index))),
            (_, Some(identity)) if route.allows(identity) => Ok(()),
            (_, Some(_)) => Err((
                AuthzError::InsufficientScope {
                    route: route.pattern().into(),
                },
                Some(index),
            )),
        }
    }

    /// The refusal for `error` on the route of index `route`, through `hook`.
    pub(crate) fn refuse<B: Default, R: OnRejection<B> + ?Sized>(
        &self,
        hook: &R,
        headers: &http::HeaderMap,
        (error, route): (AuthzError, Option<usize>),
    ) -> Response<B> {
        let challenge = match &error {
            AuthzError::Unauthenticated => Some(&self.no_token),
            AuthzError::InsufficientScope { .. } => route.and_then(|i| self.insufficient.get(i)),
            AuthzError::BadPath(_) => None,
        };
        let refusal = Refusal::new(error.status(), error.reason())
            .challenge(challenge)
            .grpc(headers);
        respond(hook, refusal, error)
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.config.decide(&mut request) {
            Ok(()) => ResponseFuture::inner(self.inner.call(request)),
            Err(error) => ResponseFuture::rejected(self.config.refuse(
                &*self.rejection,
                request.headers(),
                error,
            )),
        }
    }
}
