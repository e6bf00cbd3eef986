use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::gcra::{Decision, Quota};
use super::key::{ClientIp, RateKey, RequestView};
use super::memory::{DEFAULT_MAX_KEYS, KeyParts, MemoryStore};
use crate::claim_path::ClaimPath;
use crate::clock::{Clock, MonotonicClock};
use crate::decision::Recorder;
use crate::error::ConfigError;
use crate::reject::{DefaultRejection, OnRejection, Reason, Refusal, respond};
use crate::route::Routes;

/// The reason code of a 429.
pub(crate) const RATE_LIMITED: &str = Reason::RateLimited.code();
/// The reason code of a 503 from a limit store that fails closed.
pub(crate) const RATE_LIMIT_STORE_UNAVAILABLE: &str = Reason::RateLimitStoreUnavailable.code();

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Quotas by claim value.
type Tiers = Box<[(Box<str>, Quota)]>;

/// Where a limit keeps its state.
#[derive(Clone, Debug)]
enum Backend {
    Memory(Arc<MemoryStore>),
    #[cfg(feature = "redis")]
    Redis(super::redis::RedisStore),
}

/// One limit: a name, what it counts by, a quota (with tiers chosen by a claim), and a store.
#[derive(Clone)]
pub struct Limit {
    name: Box<str>,
    key: RateKey,
    quota: Quota,
    tiers: Option<(ClaimPath, Tiers)>,
    backend: Backend,
    policies: Box<[HeaderValue]>,
    scope: Scope,
    #[cfg(feature = "metrics")]
    counters: crate::telemetry::LimitCounters,
}

/// Where a [`Limit`] applies, by the route a request matches in the layer's
/// [`routes`](RateLimitLayer::routes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Every request (the default).
    #[default]
    Everywhere,
    /// Requests matching one of these routes (indices into the layer's routes), and, when
    /// `unmatched` is true, requests matching none (or with no routes configured).
    Routes {
        /// The route indices.
        routes: Box<[usize]>,
        /// Whether requests matching no route count too.
        unmatched: bool,
    },
}

impl Scope {
    fn applies(&self, route: Option<usize>) -> bool {
        match (self, route) {
            (Scope::Everywhere, _) => true,
            (Scope::Routes { routes, .. }, Some(i)) => routes.contains(&i),
            (Scope::Routes { unmatched, .. }, None) => *unmatched,
        }
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("key", &self.key.to_string())
            .field("quota", &self.quota)
            .field("tiers", &self.tiers)
            .field("backend", &self.backend)
            .finish()
    }
}

fn is_sf_token(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Limit {
    /// A limit named `name` (a structured-field token of at most 64 letters, digits, `-_.:`), counting by
    /// `key`, with an in-memory store of at most 100 000 keys.
    pub fn new(name: &str, key: RateKey, quota: Quota) -> Result<Self, ConfigError> {
        if !is_sf_token(name) {
            return Err(ConfigError::InvalidHeader(format!(
                "rate-limit name {name:?}: use 1 to 64 letters, digits and -_.:"
            )));
        }
        let mut limit = Self {
            name: name.into(),
            key,
            quota,
            tiers: None,
            backend: Backend::Memory(Arc::new(MemoryStore::new(DEFAULT_MAX_KEYS))),
            policies: Box::default(),
            scope: Scope::Everywhere,
            #[cfg(feature = "metrics")]
            counters: Default::default(),
        };
        limit.policies = limit.build_policies()?;
        Ok(limit)
    }

    /// `quota` for each verified subject (`claim:sub`), in memory, named `per-subject`. A
    /// request without an identity is counted by the layer's
    /// [`anonymous`](RateLimitLayer::anonymous) key (the client IP by default).
    ///
    /// ```
    /// use portcullis::rate_limit::{Limit, Quota};
    ///
    /// let limit = Limit::per_subject(Quota::per_minute(100));
    /// assert_eq!(limit.name(), "per-subject");
    /// ```
    pub fn per_subject(quota: Quota) -> Self {
        let sub = "sub".parse().expect("`sub` is a claim path");
        Self::new("per-subject", RateKey::Claim(sub), quota).expect("the name is a token")
    }

    /// `quota` for each client IP (the connection's peer: see [`ClientIp`](super::ClientIp)
    /// and [`Limit::new`] to believe a proxy's header), in memory, named `per-client-ip`.
    pub fn per_client_ip(quota: Quota) -> Self {
        Self::new("per-client-ip", RateKey::Ip(Default::default()), quota)
            .expect("the name is a token")
    }

    /// Where the limit applies (default: every request); route indices refer to the layer's
    /// [`routes`](RateLimitLayer::routes).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Quotas chosen by the claim at `path` (`plan` = `gold` → its quota); other values and
    /// anonymous requests get the limit's own quota.
    pub fn tiers<I, S>(mut self, path: ClaimPath, tiers: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (S, Quota)>,
        S: Into<Box<str>>,
    {
        self.tiers = Some((
            path,
            tiers.into_iter().map(|(v, q)| (v.into(), q)).collect(),
        ));
        self.policies = self.build_policies()?;
        Ok(self)
    }

    /// The most keys the in-memory store holds (default 100 000).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.backend = Backend::Memory(Arc::new(MemoryStore::new(max_keys)));
        self
    }

    /// Keeps this limit's state in Redis, shared by every replica using the same store.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, store: super::redis::RedisStore) -> Self {
        self.backend = Backend::Redis(store);
        self
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The in-memory store, when the limit uses one (for monitoring: [`MemoryStore::len`]).
    pub fn memory_store(&self) -> Option<&MemoryStore> {
        match &self.backend {
            Backend::Memory(store) => Some(store),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    #[cfg(feature = "redis")]
    fn quota_of_tier(&self, tier: usize) -> &Quota {
        match (tier, &self.tiers) {
            (0, _) | (_, None) => &self.quota,
            (t, Some((_, tiers))) => tiers.get(t - 1).map_or(&self.quota, |(_, q)| q),
        }
    }

    fn quotas(&self) -> impl Iterator<Item = &Quota> {
        std::iter::once(&self.quota).chain(
            self.tiers
                .iter()
                .flat_map(|(_, t)| t.iter().map(|(_, q)| q)),
        )
    }

    /// `RateLimit-Policy` values, one per quota (the default first, then each tier).
    fn build_policies(&self) -> Result<Box<[HeaderValue]>, ConfigError> {
        self.quotas()
            .map(|q| {
                // q is the quota units in a window of w seconds: the burst over the time it takes
                // to refill it.
                let window = q
                    .emission_interval()
                    .saturating_mul(u64::from(q.burst_size()))
                    .div_ceil(1_000_000_000)
                    .max(1);
                HeaderValue::try_from(format!("\"{}\";q={};w={window}", self.name, q.burst_size()))
                    .map_err(|e| ConfigError::InvalidHeader(e.to_string()))
            })
            .collect()
    }

    /// The quota (and its index) for the identity's tier.
    fn quota_for(&self, view: &RequestView<'_>) -> (usize, &Quota) {
        if let (Some((path, tiers)), Some(identity)) = (&self.tiers, view.identity)
            && let Some(Value::String(value)) = path.lookup(identity.claims())
            && let Some(i) = tiers.iter().position(|(tier, _)| **tier == **value)
        {
            return (i + 1, &tiers[i].1);
        }
        (0, &self.quota)
    }
}

/// The request was over a limit. Goes into the 429 response's extensions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {limit} exceeded; retry after {retry_after} s")]
#[non_exhaustive]
pub struct RateLimited {
    /// The limit that denied.
    pub limit: Box<str>,
    /// Seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
}

/// A limit's shared store could not answer and fails closed: the 503's extensions carry this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate-limit store unavailable")]
#[non_exhaustive]
pub struct RateLimitUnavailable;

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
struct Config {
    limits: Box<[Limit]>,
    anonymous: RateKey,
    routes: Option<Routes>,
    headers: bool,
    shadow: bool,
    clock: Arc<dyn Clock>,
    cost: Option<HeaderName>,
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

/// One limit's outcome for a request.
#[derive(Clone, Copy)]
struct LimitOutcome {
    limit: usize,
    tier: usize,
    decision: Decision,
}

/// How many limits' outcomes a request keeps without a heap allocation.
const INLINE: usize = 8;

/// Each limit's outcome for one request, by the limit's index: inline for up to [`INLINE`]
/// limits, on the heap for more. Every limit is reported, however many there are.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "the inline variant is the point: no allocation for up to 8 limits"
)]
enum Outcomes {
    Inline([Option<LimitOutcome>; INLINE]),
    Heap(Box<[Option<LimitOutcome>]>),
}

impl Outcomes {
    /// Room for `limits` outcomes.
    fn for_limits(limits: usize) -> Self {
        if limits <= INLINE {
            Outcomes::Inline([None; INLINE])
        } else {
            Outcomes::Heap(vec![None; limits].into_boxed_slice())
        }
    }

    fn slots(&mut self) -> &mut [Option<LimitOutcome>] {
        match self {
            Outcomes::Inline(slots) => slots,
            Outcomes::Heap(slots) => slots,
        }
    }

    fn set(&mut self, outcome: LimitOutcome) {
        if let Some(slot) = self.slots().get_mut(outcome.limit) {
            *slot = Some(outcome);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &LimitOutcome> {
        let slots: &[Option<LimitOutcome>] = match self {
            Outcomes::Inline(slots) => slots,
            Outcomes::Heap(slots) => slots,
        };
        slots.iter().flatten()
    }
}

impl Config {
    fn request_cost<B>(&self, request: &Request<B>) -> u32 {
        self.cost
            .as_ref()
            .and_then(|name| request.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|c| *c > 0)
            .unwrap_or(1)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The matched route: its index and pattern.
    fn route<'r, B>(&'r self, request: &Request<B>) -> Option<(usize, &'r str)> {
        self.routes.as_ref().and_then(|routes| {
            routes
                .resolve_normalized(request)
                .map(|(index, route)| (index, route.pattern()))
        })
    }

    /// Builds a limit's key with `start` (a fresh key builder of its store).
    fn key_with<K: KeyParts>(
        &self,
        limit: &Limit,
        view: &RequestView<'_>,
        start: impl Fn() -> K,
    ) -> K {
        limit
            .key
            .build(view, start().part(b"k"))
            .or_else(|| self.anonymous.build(view, start().part(b"a")))
            .unwrap_or_else(|| start().part(b"anonymous"))
    }

    #[cfg(feature = "redis")]
    fn has_remote(&self) -> bool {
        self.limits
            .iter()
            .any(|l| !matches!(l.backend, Backend::Memory(_)))
    }

    /// Decides a request against in-memory limits: every limit in order; on a denial the
    /// earlier charges are refunded. Returns the denying outcome. Does not allocate for known
    /// keys.
    fn decide<B>(&self, request: &Request<B>, outcomes: &mut Outcomes) -> Option<LimitOutcome> {
        let route = self.route(request);
        let index = route.map(|(i, _)| i);
        let view = RequestView::of(request, route.map(|(_, pattern)| pattern));
        let cost = self.request_cost(request);
        let now = self.now();
        for (i, limit) in self.limits.iter().enumerate() {
            let Some(store) = limit.memory_store() else {
                continue;
            };
            if !limit.scope.applies(index) {
                continue;
            }
            let key = self.key_with(limit, &view, || store.key()).finish();
            let (tier, quota) = limit.quota_for(&view);
            let decision = store.check(key, quota, now, cost);
            let outcome = LimitOutcome {
                limit: i,
                tier,
                decision,
            };
            outcomes.set(outcome);
            if !decision.allowed {
                // Every earlier limit admitted, so each was charged: take those charges back.
                // Keys are recomputed (a hash, no allocation) on this, the denial path.
                for earlier in &self.limits[..i] {
                    if !earlier.scope.applies(index) {
                        continue;
                    }
                    if let Some(store) = earlier.memory_store() {
                        let key = self.key_with(earlier, &view, || store.key()).finish();
                        let (_, quota) = earlier.quota_for(&view);
                        store.refund(key, quota, now, cost);
                    }
                }
                return Some(outcome);
            }
        }
        None
    }

    /// Counts what each limit did with a request (feature `metrics`).
    #[cfg(feature = "metrics")]
    fn count(&self, outcomes: &Outcomes) {
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
    fn rejection<B: Default, R: OnRejection<B> + ?Sized>(
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

    fn rate_limit_value(&self, outcome: &LimitOutcome) -> Option<HeaderValue> {
        let limit = &self.limits[outcome.limit];
        // `"name";r=N;t=N`, written by hand on the stack (core::fmt costs more than the rest
        // of the response path), then copied once into the header value.
        let mut buf = [0u8; 128];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            buf[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        put(b"\"");
        put(limit.name.as_bytes());
        put(b"\";r=");
        put(decimal(&mut [0; 20], u64::from(outcome.decision.remaining)));
        put(b";t=");
        put(decimal(&mut [0; 20], outcome.decision.next_secs()));
        HeaderValue::from_bytes(&buf[..len]).ok()
    }

    fn add_headers(&self, headers: &mut http::HeaderMap, outcomes: &Outcomes) {
        for outcome in outcomes.iter() {
            let limit = &self.limits[outcome.limit];
            if let Some(policy) = limit.policies.get(outcome.tier) {
                headers.append(RATELIMIT_POLICY.clone(), policy.clone());
            }
            if let Some(value) = self.rate_limit_value(outcome) {
                headers.append(RATELIMIT.clone(), value);
            }
        }
    }
}

/// `n` in decimal, in the end of `buf`.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
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

/// The outcome of the checks of a request with shared-store limits: the outcomes and the
/// denying one, or `None` when a store failed closed.
type Checked = Option<(Outcomes, Option<LimitOutcome>)>;

pin_project! {
    /// The response future of [`RateLimit`]: the checks (only with a shared store), then the
    /// inner service's response with the rate-limit headers added, or the 429 (or 503).
    pub struct ResponseFuture<S, ReqBody, ResBody, R = DefaultRejection>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody, R>,
        config: Arc<Config>,
        outcomes: Outcomes,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, ResBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Checking {
            check: Pin<Box<dyn Future<Output = Checked> + Send>>,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
            rejection: Arc<R>,
        },
        Inner { #[pin] future: S::Future },
        Done { response: Option<Response<ResBody>> },
    }
}

impl<S, ReqBody, ResBody, R> fmt::Debug for ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let mut response = match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    request,
                    inner,
                    rejection,
                } => {
                    let Poll::Ready(checked) = check.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    let headers = request.as_ref().expect("polled after completion").headers();
                    let refused = match checked {
                        None => {
                            let refusal = Refusal::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                RATE_LIMIT_STORE_UNAVAILABLE,
                            )
                            .grpc(headers);
                            Some(respond(&**rejection, refusal, RateLimitUnavailable))
                        }
                        Some((outcomes, denied)) => {
                            #[cfg(feature = "metrics")]
                            this.config.count(&outcomes);
                            *this.outcomes = outcomes;
                            this.config.rejection(&**rejection, headers, denied)
                        }
                    };
                    let next = match refused {
                        Some(response) => State::Done {
                            response: Some(response),
                        },
                        None => {
                            let (Some(mut inner), Some(request)) = (inner.take(), request.take())
                            else {
                                panic!("polled after completion");
                            };
                            if let Some(recorder) = Recorder::of(&request) {
                                recorder.decided_now();
                            }
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                    };
                    this.state.set(next);
                    continue;
                }
                StateProj::Inner { future } => match future.poll(cx) {
                    Poll::Ready(Ok(response)) => response,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                },
                StateProj::Done { response } => response.take().expect("polled after completion"),
            };
            if this.config.headers {
                this.config
                    .add_headers(response.headers_mut(), this.outcomes);
            }
            return Poll::Ready(Ok(response));
        }
    }
}

#[cfg(feature = "redis")]
enum PlannedKey {
    Memory(super::memory::KeyHash),
    Redis(String),
}

#[cfg(feature = "redis")]
impl Config {
    /// The checks of a request with shared-store limits, as a future that owns what it needs.
    fn remote_check<B>(
        self: &Arc<Self>,
        request: &Request<B>,
    ) -> Pin<Box<dyn Future<Output = Checked> + Send>> {
        let route = self.route(request);
        let index = route.map(|(i, _)| i);
        let view = RequestView::of(request, route.map(|(_, pattern)| pattern));
        let cost = self.request_cost(request);
        let now = self.now();
        let plan: Vec<(usize, usize, PlannedKey)> = self
            .limits
            .iter()
            .enumerate()
            .filter(|(_, limit)| limit.scope.applies(index))
            .map(|(i, limit)| {
                let (tier, _) = limit.quota_for(&view);
                let key = match &limit.backend {
                    Backend::Memory(store) => {
                        PlannedKey::Memory(self.key_with(limit, &view, || store.key()).finish())
                    }
                    Backend::Redis(_) => PlannedKey::Redis(
                        self.key_with(limit, &view, super::redis::DigestKey::new)
                            .finish(&limit.name),
                    ),
                };
                (i, tier, key)
            })
            .collect();
        let config = Arc::clone(self);
        Box::pin(async move {
            let mut outcomes = Outcomes::for_limits(config.limits.len());
            let mut charged: Vec<usize> = Vec::new();
            for (n, (i, tier, key)) in plan.iter().enumerate() {
                let limit = &config.limits[*i];
                let quota = limit.quota_of_tier(*tier);
                let decision = match (&limit.backend, key) {
                    (Backend::Memory(store), PlannedKey::Memory(key)) => {
                        store.check(*key, quota, now, cost)
                    }
                    (Backend::Redis(store), PlannedKey::Redis(key)) => {
                        match store.check(key, quota, cost).await {
                            Ok(decision) => decision,
                            Err(error) => {
                                let fail_open =
                                    store.failure_policy() == super::redis::OnStoreError::FailOpen;
                                tracing::warn!(target: "portcullis::rate_limit", limit = %limit.name,
                                error = %error, fail_open, "rate-limit store unavailable");
                                #[cfg(feature = "metrics")]
                                limit
                                    .counters
                                    .count(&limit.name, crate::telemetry::LimitResult::StoreError);
                                if !fail_open {
                                    config.refund(&plan, &charged, now, cost).await;
                                    return None;
                                }
                                continue;
                            }
                        }
                    }
                    _ => continue,
                };
                let outcome = LimitOutcome {
                    limit: *i,
                    tier: *tier,
                    decision,
                };
                outcomes.set(outcome);
                if !decision.allowed {
                    config.refund(&plan, &charged, now, cost).await;
                    return Some((outcomes, Some(outcome)));
                }
                charged.push(n);
            }
            Some((outcomes, None))
        })
    }

    async fn refund(
        &self,
        plan: &[(usize, usize, PlannedKey)],
        charged: &[usize],
        now: u64,
        cost: u32,
    ) {
        for n in charged {
            let (i, tier, key) = &plan[*n];
            let limit = &self.limits[*i];
            let quota = limit.quota_of_tier(*tier);
            match (&limit.backend, key) {
                (Backend::Memory(store), PlannedKey::Memory(key)) => {
                    store.refund(*key, quota, now, cost)
                }
                (Backend::Redis(store), PlannedKey::Redis(key)) => {
                    // A refund that fails leaves the charge: it errs on the strict side.
                    let _ = store.refund(key, quota, cost).await;
                }
                _ => {}
            }
        }
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
        let config = Arc::clone(&self.config);
        #[cfg(feature = "redis")]
        if config.has_remote() {
            let check = config.remote_check(&request);
            // The instance that was polled ready goes into the future; a clone stays here.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            return ResponseFuture {
                state: State::Checking {
                    check,
                    request: Some(request),
                    inner: Some(inner),
                    rejection: Arc::clone(&self.rejection),
                },
                outcomes: Outcomes::for_limits(0),
                config,
            };
        }
        let mut outcomes = Outcomes::for_limits(config.limits.len());
        let denied = config.decide(&request, &mut outcomes);
        #[cfg(feature = "metrics")]
        config.count(&outcomes);
        let state = match config.rejection(&*self.rejection, request.headers(), denied) {
            Some(response) => State::Done {
                response: Some(response),
            },
            None => State::Inner {
                future: self.inner.call(request),
            },
        };
        ResponseFuture {
            state,
            config,
            outcomes,
        }
    }
}
