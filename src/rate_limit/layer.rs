//! [`RateLimitLayer`] and its service: the configuration, and a request's way through the
//! engine to the inner service or a refusal.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderName, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::engine::{LimitOutcome, Outcomes, Unavailable};
use super::error::{RATE_LIMIT_STORE_UNAVAILABLE, RATE_LIMITED, RateLimitUnavailable, RateLimited};
use super::future::ResponseFuture;
use super::key::{ClientIp, RateKey};
use super::limit::Limit;
use crate::clock::{Clock, MonotonicClock};
use crate::reject::{DefaultRejection, OnRejection, Refusal, respond};
use crate::route::{Route, Routes};

/// Counts every request against each configured [`Limit`]; a request is admitted only if every
/// limit admits it, and a denied request is not charged against the others. Denials answer 429
/// with `Retry-After` (whole seconds, rounded up, never 0); every response carries
/// `RateLimit-Policy` and `RateLimit` (switchable off).
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
///
/// let per_subject = Limit::new("default", "claim:sub".parse().unwrap(),
///     Quota::per_minute(NonZeroU32::new(100).unwrap()).burst(NonZeroU32::new(20).unwrap())).unwrap();
/// let layer = RateLimitLayer::new([per_subject]);
/// # let _ = layer;
/// ```
pub struct RateLimitLayer<R = DefaultRejection> {
    config: Arc<Config>,
    rejection: Arc<R>,
}

impl<R> Clone for RateLimitLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) limits: Box<[Limit]>,
    pub(super) anonymous: RateKey,
    pub(super) routes: Option<Routes>,
    pub(super) headers: bool,
    shadow: bool,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) cost: Option<HeaderName>,
    shadow_denied: Arc<AtomicU64>,
}

impl<R> fmt::Debug for RateLimitLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.config.limits)
            .field("anonymous", &self.config.anonymous.to_string())
            .field("headers", &self.config.headers)
            .field("shadow", &self.config.shadow)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer enforcing `limits`, in order.
    pub fn new(limits: impl IntoIterator<Item = Limit>) -> Self {
        Self {
            config: Arc::new(Config {
                limits: limits.into_iter().collect(),
                anonymous: RateKey::Ip(ClientIp::peer()),
                routes: None,
                headers: true,
                shadow: false,
                clock: Arc::new(MonotonicClock::new()),
                cost: None,
                shadow_denied: Arc::default(),
            }),
            rejection: Arc::new(DefaultRejection),
        }
    }
}

impl<R> RateLimitLayer<R> {
    /// The configuration and the rejection hook a service of this layer runs with.
    #[cfg(feature = "policy")]
    pub(crate) fn parts(&self) -> (Arc<Config>, Arc<R>) {
        (Arc::clone(&self.config), Arc::clone(&self.rejection))
    }

    /// Replaces the response built for refused requests, the 429 and the 503 (see
    /// [`reject`](crate::reject)). The `RateLimit` fields are added to whatever it returns.
    pub fn on_rejection<R2>(self, rejection: R2) -> RateLimitLayer<R2> {
        RateLimitLayer {
            config: self.config,
            rejection: Arc::new(rejection),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The key for requests whose limit key is missing (no identity for a claim key, no such
    /// header); default: the client IP. When that is missing too, one shared bucket.
    pub fn anonymous(mut self, key: RateKey) -> Self {
        self.config_mut().anonymous = key;
        self
    }

    /// Routes, for `route` keys (the matched route's pattern rather than the raw path).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.config_mut().routes = Some(routes);
        self
    }

    /// Whether to emit `RateLimit-Policy` and `RateLimit` (default: yes).
    pub fn headers(mut self, emit: bool) -> Self {
        self.config_mut().headers = emit;
        self
    }

    /// Shadow mode: count denials (read them with
    /// [`RateLimitLayer::shadow_denied`]), never reject.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.config_mut().shadow = shadow;
        self
    }

    /// Reads each request's cost (weight) from this header (a positive integer; absent or
    /// malformed means 1).
    pub fn cost_header(mut self, name: HeaderName) -> Self {
        self.config_mut().cost = Some(name);
        self
    }

    /// The clock (by default a [`MonotonicClock`], which a stepped system clock does not move).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config_mut().clock = Arc::new(clock);
        self
    }

    /// How many requests shadow mode would have denied.
    pub fn shadow_denied(&self) -> u64 {
        self.config.shadow_denied.load(Ordering::Relaxed)
    }

    /// The limits.
    pub fn limits(&self) -> &[Limit] {
        &self.config.limits
    }
}

impl Config {
    /// Counts what each limit did with a request (feature `metrics`).
    #[cfg(feature = "metrics")]
    pub(crate) fn count(&self, outcomes: &Outcomes) {
        use crate::telemetry::LimitResult;
        for outcome in outcomes.iter() {
            let limit = &self.limits[outcome.limit];
            let result = match (outcome.decision.allowed, self.shadow) {
                (true, _) => LimitResult::Admitted,
                (false, false) => LimitResult::Denied,
                (false, true) => LimitResult::ShadowDenied,
            };
            limit.counters.count(&limit.name, result);
        }
    }

    /// The 429 for a denial, or `None` in shadow mode (which counts it).
    pub(crate) fn rejection<B: Default, R: OnRejection<B> + ?Sized>(
        &self,
        hook: &R,
        request: &http::HeaderMap,
        denied: Option<LimitOutcome>,
    ) -> Option<Response<B>> {
        let outcome = denied?;
        if self.shadow {
            self.shadow_denied.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let retry_after = outcome.decision.retry_after_secs();
        let refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED)
            .retry_after(retry_after)
            .grpc(request);
        let error = RateLimited {
            limit: self.limits[outcome.limit].name.clone(),
            retry_after,
        };
        Some(respond(hook, refusal, error))
    }

    /// The 503 for a store that fails closed and could not answer.
    pub(crate) fn unavailable<B: Default, R: OnRejection<B> + ?Sized>(
        &self,
        hook: &R,
        request: &http::HeaderMap,
    ) -> Response<B> {
        let refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            RATE_LIMIT_STORE_UNAVAILABLE,
        )
        .grpc(request);
        respond(hook, refusal, RateLimitUnavailable)
    }
}

impl<S, R> Layer<S> for RateLimitLayer<R> {
    type Service = RateLimit<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around an inner service.
pub struct RateLimit<S, R = DefaultRejection> {
    inner: S,
    config: Arc<Config>,
    rejection: Arc<R>,
}

impl<S: Clone, R> Clone for RateLimit<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            rejection: Arc::clone(&self.rejection),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for RateLimit<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let route = self.config.route(&request);
        self.config
            .limit(&self.rejection, &mut self.inner, request, route)
    }
}

impl Config {
    /// The limits for `request` (which matched `route`), then `inner` or the refusal: decided
    /// within this call when every store answers at once, else in the returned future, which
    /// then takes `inner` (the instance that was polled ready; a clone stays in its place).
    pub(crate) fn limit<S, ReqBody, ResBody, R>(
        self: &Arc<Self>,
        hook: &Arc<R>,
        inner: &mut S,
        request: Request<ReqBody>,
        route: Option<&Route>,
    ) -> ResponseFuture<S, ReqBody, ResBody, R>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
        R: OnRejection<ResBody>,
        ResBody: Default,
    {
        let config = Arc::clone(self);
        if !config.answers_now() {
            let check = config.run_later(&request, route);
            let clone = inner.clone();
            let inner = std::mem::replace(inner, clone);
            return ResponseFuture::checking(config, check, request, inner, Arc::clone(hook));
        }
        let mut outcomes = Outcomes::for_limits(config.limits.len());
        let checked = config.run_now(&request, route, &mut outcomes);
        #[cfg(feature = "metrics")]
        config.count(&outcomes);
        let refused = match checked {
            Ok(denied) => config.rejection(&**hook, request.headers(), denied),
            Err(Unavailable) => Some(config.unavailable(&**hook, request.headers())),
        };
        let next = match refused {
            Some(response) => Err(response),
            None => Ok(inner.call(request)),
        };
        ResponseFuture::decided(config, outcomes, next)
    }
}
