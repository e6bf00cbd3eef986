//! [`PropagateLayer`]: request id, trace context, header propagation, hop-by-hop removal and
//! the audit event, around everything inside it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::audit::{self, Outcome};
use super::context::{RequestContext, TraceContext};
use super::hop_by_hop::remove_hop_by_hop;
use super::ids::{REQUEST_ID_LEN, new_request_id, new_span_id, new_trace_id, valid_request_id};
use super::trace_context::{
    FLAG_SAMPLED, TRACEPARENT_LEN, TraceParent, TraceState, canonical_tracestate, check_tracestate,
};
use crate::clock::monotonic_nanos;
use crate::decision::Recorder;
use crate::headers::remove_other_spellings;
use crate::net::IpNet;

/// `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Whose request ids to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustIncoming {
    /// Any client's, if well-formed (the default: an id is a correlation handle, not a
    /// credential).
    #[default]
    Any,
    /// Only those from peers in these networks (the load balancer in front); others get a new
    /// id.
    Peers(Box<[IpNet]>),
    /// None: every request gets a new id.
    Never,
}

/// Runs first: gives each request an id and a trace context, learns what the layers inside it
/// decide, and writes one audit event per request when the response is ready.
///
/// - **Request id** (`x-request-id` by default): an incoming id is kept when it is well-formed
///   ([`valid_request_id`](super::valid_request_id)) and its sender trusted
///   ([`TrustIncoming`]); otherwise a new UUIDv7 replaces it. The request carries it upstream,
///   and every response — the layers' own 400/401/403/429/503 included — carries it back.
/// - **Trace context** (W3C): a valid `traceparent` is forwarded as a child (same trace, the
///   gateway's new span id, sampled flag kept) with its `tracestate` (a repeated key's later
///   members dropped; the whole list dropped when a member is malformed or there are more than
///   32); an invalid or absent one starts a new trace (sampled unless
///   [`sample_new_traces(false)`](Self::sample_new_traces)) and drops any `tracestate`.
/// - **Header propagation**: the headers named with
///   [`propagate_headers`](Self::propagate_headers) are copied from the request to its response.
/// - **Hop-by-hop headers** are removed from the request as it arrives, with
///   [`remove_hop_by_hop(true)`](Self::remove_hop_by_hop) (for proxies).
/// - **Audit**: one `tracing` event per request, target `portcullis::audit` (see
///   [the guide](crate::guide::observability) for its fields), and, with the `metrics`
///   feature, the decision counters and latency histogram. The layers of this crate inside it
///   tell it the identity and route as they decide, through a record this layer puts in the
///   request's extensions (so the record survives a layer between them that moves the work to
///   another task, such as `tower::buffer`).
/// - **[`RequestContext`]** in the request's extensions, with
///   [`request_context(true)`](Self::request_context): the id and trace, typed.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use portcullis::propagate::{PropagateLayer, RequestContext};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # tokio_test_block_on(async {
/// let layer = PropagateLayer::new().request_context(true);
/// let service = layer.layer(service_fn(|req: Request<()>| async move {
///     let context = req.extensions().get::<RequestContext>().unwrap();
///     assert_eq!(context.request_id(), "abc-123");
///     assert_eq!(req.headers()["x-request-id"], "abc-123");
///     assert!(req.headers().contains_key("traceparent"));
///     Ok::<_, Infallible>(Response::new(()))
/// }));
/// let request = Request::get("/").header("x-request-id", "abc-123").body(()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.headers()["x-request-id"], "abc-123");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct PropagateLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    request_id: HeaderName,
    trust: TrustIncoming,
    trace_context: bool,
    sample_new: bool,
    propagate: Box<[HeaderName]>,
    strip_hop_by_hop: bool,
    audit: bool,
    request_context: bool,
}

impl fmt::Debug for PropagateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("PropagateLayer")
            .field("request_id", &c.request_id)
            .field("trust", &c.trust)
            .field("trace_context", &c.trace_context)
            .field("sample_new", &c.sample_new)
            .field("propagate", &c.propagate)
            .field("remove_hop_by_hop", &c.strip_hop_by_hop)
            .field("audit", &c.audit)
            .field("request_context", &c.request_context)
            .finish()
    }
}

impl Default for PropagateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PropagateLayer {
    /// `x-request-id` from any client, W3C trace context with new traces sampled, audit events
    /// on, nothing else propagated, hop-by-hop headers left alone.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                request_id: X_REQUEST_ID,
                trust: TrustIncoming::Any,
                trace_context: true,
                sample_new: true,
                propagate: Box::new([]),
                strip_hop_by_hop: false,
                audit: true,
                request_context: false,
            }),
        }
    }

    /// The layer's configuration, for the policy stack that runs it with the decision core.
    #[cfg(feature = "policy")]
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The request id header this layer sets.
    #[cfg(feature = "policy")]
    pub(crate) fn request_id_name(&self) -> &HeaderName {
        &self.config.request_id
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The request id header (default `x-request-id`).
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        self.config_mut().request_id = name;
        self
    }

    /// Whose incoming request ids to keep (default: any well-formed one).
    pub fn trust_request_ids(mut self, trust: TrustIncoming) -> Self {
        self.config_mut().trust = trust;
        self
    }

    /// Whether to read and forward W3C `traceparent` / `tracestate` (default: yes).
    pub fn trace_context(mut self, on: bool) -> Self {
        self.config_mut().trace_context = on;
        self
    }

    /// Whether a trace started here is marked sampled (default: yes, so an upstream that
    /// samples by its parent records the requests that enter through the gateway).
    pub fn sample_new_traces(mut self, sampled: bool) -> Self {
        self.config_mut().sample_new = sampled;
        self
    }

    /// Headers copied from each request to its response (overriding a copy the service set).
    pub fn propagate_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config_mut().propagate = names.into_iter().collect();
        self
    }

    /// Whether to remove hop-by-hop headers from each request as it arrives (default: no; a
    /// proxy wants yes). See [`remove_hop_by_hop`](super::remove_hop_by_hop).
    pub fn remove_hop_by_hop(mut self, on: bool) -> Self {
        self.config_mut().strip_hop_by_hop = on;
        self
    }

    /// Whether to write audit events and decision metrics (default: yes).
    pub fn audit(mut self, on: bool) -> Self {
        self.config_mut().audit = on;
        self
    }

    /// Whether to put a [`RequestContext`] (the request id and the trace, typed) in each
    /// request's extensions (default: no — both are on the request's headers already, and an
    /// extension costs a heap allocation per request, three on a request nothing has put an
    /// extension in yet).
    pub fn request_context(mut self, on: bool) -> Self {
        self.config_mut().request_context = on;
        self
    }
}

impl<S> Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Propagate {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`PropagateLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct Propagate<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Propagate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Propagate")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The client's request id, when acceptable (it is then already the request's only value).
    fn kept_request_id(
        &self,
        headers: &HeaderMap,
        extensions: &http::Extensions,
    ) -> Option<HeaderValue> {
        let mut incoming = headers.get_all(&self.request_id).iter();
        if let (Some(value), None) = (incoming.next(), incoming.next())
            && valid_request_id(value.as_bytes())
        {
            let trusted = match &self.trust {
                TrustIncoming::Any => true,
                TrustIncoming::Never => false,
                TrustIncoming::Peers(networks) => crate::net::peer_ip(extensions)
                    .is_some_and(|ip| networks.iter().any(|n| n.contains(ip))),
            };
            if trusted {
                return Some(value.clone());
            }
        }
        None
    }

    /// Reads the incoming trace context and rewrites `tracestate` for the upstream; returns the
    /// trace and the child `traceparent` to send.
    fn trace(&self, headers: &mut HeaderMap) -> (TraceContext, [u8; TRACEPARENT_LEN]) {
        let parent = {
            let mut values = headers.get_all(TRACEPARENT).iter();
            match (values.next(), values.next()) {
                (Some(value), None) => TraceParent::parse(value.as_bytes()).ok(),
                // Absent, or sent twice: which one would be meant?
                _ => None,
            }
        };
        let child = match &parent {
            Some(parent) => {
                match check_tracestate(headers.get_all(TRACESTATE).iter().map(|v| v.as_bytes())) {
                    TraceState::Canonical => {}
                    TraceState::Rewrite => {
                        let rewritten = canonical_tracestate(
                            headers
                                .get_all(TRACESTATE)
                                .iter()
                                .map(HeaderValue::as_bytes),
                        )
                        .and_then(|v| HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok());
                        match rewritten {
                            Some(value) if !value.is_empty() => {
                                headers.insert(TRACESTATE, value);
                            }
                            _ => {
                                headers.remove(TRACESTATE);
                            }
                        }
                    }
                    TraceState::Invalid => {
                        headers.remove(TRACESTATE);
                    }
                }
                parent.child(new_span_id())
            }
            None => {
                headers.remove(TRACESTATE);
                let flags = if self.sample_new { FLAG_SAMPLED } else { 0 };
                TraceParent::new(new_trace_id(), new_span_id(), flags)
            }
        }
        .expect("new ids are never zero");
        (
            TraceContext::from_child(&child, parent.as_ref()),
            child.to_bytes(),
        )
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Propagate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (mut pending, span) = begin(&self.config, &mut request);
        pending.recorder = self.config.audit.then(|| Recorder::open_in(&mut request));
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        // Layers that decide in `call` have decided by now; one that decides later (a Redis
        // round trip) marks the record when it does.
        pending.called = monotonic_nanos();
        ResponseFuture {
            future,
            state: Some(pending),
            span,
        }
    }
}

/// The request side of the layer: the request id, the trace context, hop-by-hop headers and
/// the headers to propagate, with the request's span. What the response side needs is in the
/// returned [`Pending`] (its `called` time is the time of this call until the caller sets it).
pub(crate) fn begin<B>(config: &Arc<Config>, request: &mut Request<B>) -> (Pending, tracing::Span) {
    let config_arc = config;
    let config = &**config;
    let started = monotonic_nanos();
    if config.strip_hop_by_hop {
        remove_hop_by_hop(request.headers_mut());
    }
    // The request id reaches the service in one spelling only: a client's `X_Request_Id`
    // would stand beside the id the layer keeps or makes. (`traceparent` and `tracestate`
    // hold no `-`, so they have no other spelling.)
    remove_other_spellings(request.headers_mut(), &config.request_id);
    let kept = config.kept_request_id(request.headers(), request.extensions());
    let kept_id = kept.is_some();
    let traced = config
        .trace_context
        .then(|| config.trace(request.headers_mut()));
    let trace = traced.as_ref().map(|(trace, _)| *trace);
    // New header values: one allocation for the new request id and the child traceparent
    // together, shared by the request, the response and the audit event (refcounts:
    // `Bytes::from_owner` counts references from the start, and slices share them).
    let (request_id, traceparent) = match (kept, traced) {
        (Some(id), None) => (id, None),
        (Some(id), Some((_, child))) => (id, Some(Bytes::from_owner(child))),
        (None, None) => (header_value(Bytes::from_owner(new_request_id())), None),
        (None, Some((_, child))) => {
            let mut both = [0; REQUEST_ID_LEN + TRACEPARENT_LEN];
            both[..REQUEST_ID_LEN].copy_from_slice(&new_request_id());
            both[REQUEST_ID_LEN..].copy_from_slice(&child);
            let both = Bytes::from_owner(both);
            (
                header_value(both.slice(..REQUEST_ID_LEN)),
                Some(both.slice(REQUEST_ID_LEN..)),
            )
        }
    };
    if !kept_id {
        request
            .headers_mut()
            .insert(config.request_id.clone(), request_id.clone());
    }
    if let Some(traceparent) = traceparent {
        request
            .headers_mut()
            .insert(TRACEPARENT, header_value(traceparent));
    }
    let mut propagated = Vec::new();
    for (i, name) in config.propagate.iter().enumerate() {
        if let Some(value) = request.headers().get(name) {
            propagated.push((i, value.clone()));
        }
    }
    if config.request_context {
        request
            .extensions_mut()
            .insert(RequestContext::new(request_id.clone(), trace));
    }
    let method = request.method().clone();
    let span = tracing::debug_span!(
        target: "portcullis::request",
        "request",
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = trace.map(|t| tracing::field::display(t.trace_id())),
    );
    let called = started;
    (
        Pending {
            config: Arc::clone(config_arc),
            request_id,
            trace,
            recorder: None,
            method,
            started,
            called,
            propagated,
        },
        span,
    )
}

/// A header value from bytes this layer wrote (ids in hex and dashes: always valid).
fn header_value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).expect("ids are visible ASCII")
}

/// What the response side of the layer needs from the request side.
pub(crate) struct Pending {
    config: Arc<Config>,
    request_id: HeaderValue,
    trace: Option<TraceContext>,
    /// The request's decision record (with audit on), for the layer on its own.
    recorder: Option<Recorder>,
    method: http::Method,
    started: u64,
    /// When the inner service's `call` returned: every layer that decides in `call` has
    /// decided by then.
    pub(crate) called: u64,
    propagated: Vec<(usize, HeaderValue)>,
}

/// What the deciding layers decided, as the audit event names it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Decided<'a> {
    pub(crate) principal: Option<&'a dyn crate::decision::Principal>,
    pub(crate) route: Option<&'a str>,
    /// Monotonic nanoseconds when a layer that decides after `call` (a Redis round trip)
    /// decided.
    pub(crate) at: Option<u64>,
}

impl Pending {
    /// The response side: the request id and propagated headers on the response, and the
    /// audit event (within `span`) with what was `decided`.
    pub(crate) fn finish<B, E>(
        self,
        result: Result<Response<B>, E>,
        decided: Decided<'_>,
        span: &tracing::Span,
    ) -> Result<Response<B>, E> {
        let now = monotonic_nanos();
        let decided_at = decided
            .at
            .map_or(self.called, |d| d.max(self.started))
            .min(now);
        let decision_nanos = decided_at.saturating_sub(self.started);
        let config = &*self.config;
        let result = result.map(|mut response| {
            let headers = response.headers_mut();
            headers.insert(config.request_id.clone(), self.request_id.clone());
            for (i, value) in self.propagated {
                headers.insert(config.propagate[i].clone(), value);
            }
            response
        });
        if config.audit {
            let _entered = span.enter();
            let (outcome, status) = match &result {
                Ok(response) => (Outcome::of_response(response), Some(response.status())),
                Err(_) => (Outcome::Error, None),
            };
            // A rejection is decided when its response comes back.
            let decision_nanos = match outcome {
                Outcome::Allowed => decision_nanos,
                _ => now.saturating_sub(self.started),
            };
            audit::emit(
                &self.request_id,
                self.trace.as_ref(),
                decided,
                &self.method,
                outcome,
                status,
                decision_nanos,
            );
        }
        result
    }
}

pin_project! {
    /// The response future of [`Propagate`]: the inner service's, run inside the request's
    /// span, with the request id (and propagated headers) set on the response and the audit
    /// event written when it is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        state: Option<Pending>,
        span: tracing::Span,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request_id", &self.state.as_ref().map(|s| &s.request_id))
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            match this.future.poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            }
        };
        let Some(mut pending) = this.state.take() else {
            return Poll::Ready(result);
        };
        let recorder = pending.recorder.take();
        let decided = match &recorder {
            Some(recorder) => Decided {
                principal: recorder.principal(),
                route: recorder.route_pattern(),
                at: recorder.decided_at(),
            },
            None => Decided::default(),
        };
        let result = pending.finish(result, decided, this.span);
        Poll::Ready(result)
    }
}
