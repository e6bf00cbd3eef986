use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use tower_layer::Layer;

use super::error::Challenges;
use super::service::JwtAuth;
use super::{Identity, Issuer, JwtError, Validator};
use crate::error::ConfigError;
use crate::reject::{DefaultRejection, OnRejection, Refusal, respond};
use crate::route::{Auth, Route, Routes};
use crate::token::{TokenExtractor, TokenSource};

/// Authenticates every request with a bearer token and puts the verified `Arc<Identity>` in
/// its extensions.
///
/// A request without a valid token is answered by the layer (see [`JwtError`] for the status
/// of each case) and never reaches the inner service, unless the layer is
/// [`optional`](JwtAuthLayer::optional) and the request carries no token at all.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use http::{Request, Response, StatusCode};
/// use portcullis::jwt::{Identity, Issuer, JwtAuthLayer, Validator};
/// use portcullis::keys::KeySet;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio_test();
/// # fn tokio_test() { tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let validator = Validator::builder()
///     .issuer(Issuer::new("https://issuer.example/", KeySet::hmac(&[7; 32]).unwrap()).audiences(["api"]))
///     .build()
///     .unwrap();
/// let service = ServiceBuilder::new()
///     .layer(JwtAuthLayer::new(validator))
///     .service(service_fn(|req: Request<String>| async move {
///         let who = req.extensions().get::<Arc<Identity>>().and_then(|i| i.subject().map(String::from));
///         Ok::<_, Infallible>(Response::new(who.unwrap_or_default()))
///     }));
///
/// let response = service.oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="api""#);
/// # }) }
/// ```
pub struct JwtAuthLayer<R = DefaultRejection> {
    validator: Validator,
    extractor: TokenExtractor,
    challenges: Challenges,
    rejection: R,
    optional: bool,
    routes: Option<Routes>,
}

impl<R: Clone> Clone for JwtAuthLayer<R> {
    fn clone(&self) -> Self {
        Self {
            validator: self.validator.clone(),
            extractor: self.extractor.clone(),
            challenges: self.challenges.clone(),
            rejection: self.rejection.clone(),
            optional: self.optional,
            routes: self.routes.clone(),
        }
    }
}

impl<R> fmt::Debug for JwtAuthLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("validator", &self.validator)
            .field("extractor", &self.extractor)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl JwtAuthLayer {
    /// A layer that reads `Authorization: Bearer` and verifies with `validator`, in realm `api`.
    pub fn new(validator: Validator) -> Self {
        Self {
            validator,
            extractor: TokenExtractor::default(),
            challenges: Challenges::new("api").expect("the default realm is valid"),
            rejection: DefaultRejection,
            optional: false,
            routes: None,
        }
    }
}

impl JwtAuthLayer {
    /// A layer for tokens of one `issuer`, with a validator of default settings (see
    /// [`Validator::builder`] for several issuers, a clock or the cache's size).
    pub fn for_issuer(issuer: Issuer) -> Result<Self, ConfigError> {
        Ok(Self::new(Validator::builder().issuer(issuer).build()?))
    }
}

impl<R> JwtAuthLayer<R> {
    /// Where to look for the token (default: the `Authorization` header only).
    pub fn sources(mut self, sources: impl IntoIterator<Item = TokenSource>) -> Self {
        self.extractor = TokenExtractor::new(sources).max_len(self.extractor.limit());
        self
    }

    /// The cap on a token's length in bytes, checked before any decoding (default 8 KiB).
    pub fn max_token_len(mut self, max_len: usize) -> Self {
        self.extractor = self.extractor.max_len(max_len);
        self
    }

    /// The realm named in `WWW-Authenticate` challenges (default `api`).
    pub fn realm(mut self, realm: &str) -> Result<Self, ConfigError> {
        self.challenges = Challenges::new(realm)?;
        Ok(self)
    }

    /// Lets requests without any token through, with no identity. A token that is present
    /// must still be valid.
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Takes each request's authentication mode from its route: `Auth::None` routes are not
    /// authenticated at all, `Auth::Optional` routes let requests without a token through,
    /// and unmatched routes need a token. The path is normalised first (and forwarded in its
    /// normalised form); a path that cannot be is 400. Give [`AuthorizeLayer`] the same routes
    /// to enforce their rules.
    ///
    /// [`AuthorizeLayer`]: crate::authz::AuthorizeLayer
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = Some(routes);
        self
    }

    /// Replaces the response built for refused requests.
    pub fn on_rejection<R2>(self, rejection: R2) -> JwtAuthLayer<R2> {
        JwtAuthLayer {
            validator: self.validator,
            extractor: self.extractor,
            challenges: self.challenges,
            rejection,
            optional: self.optional,
            routes: self.routes,
        }
    }

    /// The validator.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The decision the layer makes for a request with these headers: `Ok(None)` for an
    /// optional layer and no token. A cached token is decided without allocating.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Identity>>, JwtError> {
        authenticate(&self.extractor, &self.validator, self.optional, headers)
    }
}

pub(crate) fn authenticate(
    extractor: &TokenExtractor,
    validator: &Validator,
    optional: bool,
    headers: &HeaderMap,
) -> Result<Option<Arc<Identity>>, JwtError> {
    match extractor.extract_unchecked(headers)? {
        Some(token) => {
            // A token verified before is the same bytes: it passed the charset check then.
            if let Some(identity) = validator.cached(token) {
                return Ok(Some(identity));
            }
            TokenExtractor::check(token)?;
            validator.validate(token).map(Some)
        }
        None if optional => Ok(None),
        None => Err(JwtError::Missing),
    }
}

pub(crate) struct Config<R> {
    pub(crate) validator: Validator,
    pub(crate) extractor: TokenExtractor,
    pub(crate) challenges: Challenges,
    pub(crate) rejection: R,
    pub(crate) optional: bool,
    pub(crate) routes: Option<Routes>,
}

impl<R> Config<R> {
    /// How a request is authenticated: by its matched route (`matched`: the route, if any, and
    /// whether it is a CORS preflight to let through) when routes are configured, else as the
    /// layer says (required, or optional).
    pub(crate) fn mode(&self, matched: Option<(Option<&Route>, bool)>) -> Auth {
        match matched {
            None if self.optional => Auth::Optional,
            None => Auth::Required,
            Some((_, true)) => Auth::None,
            Some((Some(route), false)) => route.auth_mode(),
            // Unmatched: a token is required (fail closed).
            Some((None, false)) => Auth::Required,
        }
    }

    /// The verified identity of a request authenticated as `mode`: none on a public route, or
    /// on an optional one without a token.
    pub(crate) fn identify(
        &self,
        mode: Auth,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Identity>>, JwtError> {
        if mode == Auth::None {
            return Ok(None);
        }
        authenticate(
            &self.extractor,
            &self.validator,
            mode == Auth::Optional,
            headers,
        )
    }

    /// The refusal for `error`, through `hook`, with its challenge.
    pub(crate) fn refuse<B: Default, H: OnRejection<B> + ?Sized>(
        &self,
        hook: &H,
        headers: &HeaderMap,
        error: JwtError,
    ) -> http::Response<B> {
        let (status, challenge) = error.response_kind();
        let refusal = Refusal::new(status, error.reason())
            .challenge(self.challenges.get(challenge))
            .grpc(headers);
        respond(hook, refusal, error)
    }
}

impl<R: Clone> JwtAuthLayer<R> {
    /// The configuration a service of this layer runs with.
    pub(crate) fn config(&self) -> Arc<Config<R>> {
        Arc::new(Config {
            validator: self.validator.clone(),
            extractor: self.extractor.clone(),
            challenges: self.challenges.clone(),
            rejection: self.rejection.clone(),
            optional: self.optional,
            routes: self.routes.clone(),
        })
    }
}

impl<S, R: Clone> Layer<S> for JwtAuthLayer<R> {
    type Service = JwtAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::new(inner, self.config())
    }
}
