//! What the propagate layer learns of a request, shared with the layers inside it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::HeaderValue;

use super::trace_context::{HexId, TraceParent};
use crate::jwt::Identity;

/// The trace a request belongs to, as the gateway forwards it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    flags: u8,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &self.trace_id())
            .field("span_id", &self.span_id())
            .field("parent_id", &self.parent_id())
            .field("sampled", &self.sampled())
            .finish()
    }
}

impl TraceContext {
    pub(crate) fn from_child(child: &TraceParent, parent: Option<&TraceParent>) -> Self {
        Self {
            trace_id: child.trace_id(),
            span_id: child.parent_id(),
            parent_id: parent.map(TraceParent::parent_id),
            flags: child.flags(),
        }
    }

    /// The trace id (printed as 32 lower-case hex digits).
    pub fn trace_id(&self) -> HexId<16> {
        HexId(self.trace_id)
    }

    /// The gateway's span id: the parent id the upstream receives.
    pub fn span_id(&self) -> HexId<8> {
        HexId(self.span_id)
    }

    /// The caller's span id, when the request came with a valid `traceparent`.
    pub fn parent_id(&self) -> Option<HexId<8>> {
        self.parent_id.map(HexId)
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.flags & super::trace_context::FLAG_SAMPLED != 0
    }

    /// Whether the trace started here (no valid `traceparent` came in).
    pub fn is_root(&self) -> bool {
        self.parent_id.is_none()
    }
}

/// The request's id, trace and what the inner layers decided, put in the request's extensions
/// by [`PropagateLayer`](super::PropagateLayer). Cheap to clone (one `Arc`).
///
/// [`JwtAuthLayer`](crate::jwt::JwtAuthLayer) records the verified identity and the matched
/// route here, so the audit event the propagate layer writes when the response is ready can
/// name the subject, issuer and route.
#[derive(Clone)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

struct Inner {
    request_id: HeaderValue,
    trace: Option<TraceContext>,
    identity: OnceLock<Arc<Identity>>,
    route: OnceLock<Arc<str>>,
    /// Monotonic nanoseconds when the request was handed on past the last deciding layer.
    decided: AtomicU64,
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id())
            .field("trace", &self.inner.trace)
            .field("subject", &self.identity().and_then(|i| i.subject()))
            .field("route", &self.route())
            .finish()
    }
}

impl RequestContext {
    pub(crate) fn new(request_id: HeaderValue, trace: Option<TraceContext>) -> Self {
        Self {
            inner: Arc::new(Inner {
                request_id,
                trace,
                identity: OnceLock::new(),
                route: OnceLock::new(),
                decided: AtomicU64::new(0),
            }),
        }
    }

    /// The request id (checked when it came from the client, or generated).
    pub fn request_id(&self) -> &str {
        self.inner.request_id.to_str().unwrap_or_default()
    }

    /// The request id as a header value.
    pub fn request_id_value(&self) -> &HeaderValue {
        &self.inner.request_id
    }

    /// The trace context, when trace propagation is on.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.inner.trace.as_ref()
    }

    /// The verified identity, once the authenticating layer has found one.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.inner.identity.get()
    }

    /// The pattern of the matched route, once a layer with routes has matched one.
    pub fn route(&self) -> Option<&str> {
        self.inner.route.get().map(|r| &**r)
    }

    pub(crate) fn set_identity(&self, identity: &Arc<Identity>) {
        let _ = self.inner.identity.set(Arc::clone(identity));
    }

    pub(crate) fn set_route(&self, route: &Arc<str>) {
        let _ = self.inner.route.set(Arc::clone(route));
    }

    /// Marks the request as decided at `now` (monotonic nanoseconds); see [`mark_decided`].
    pub(crate) fn mark_decided(&self, now: u64) {
        self.inner.decided.store(now, Ordering::Relaxed);
    }

    pub(crate) fn decided(&self) -> Option<u64> {
        match self.inner.decided.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

/// Records the verified identity in the request's [`RequestContext`], if there is one.
pub(crate) fn record_identity<B>(request: &http::Request<B>, identity: &Arc<Identity>) {
    if let Some(context) = request.extensions().get::<RequestContext>() {
        context.set_identity(identity);
    }
}

/// Marks the request decided now, for a layer that decides after its `call` returned (a
/// Redis round trip): the propagate layer takes the time its inner `call` returned otherwise,
/// by which time every synchronous layer has decided.
pub(crate) fn mark_decided<B>(request: &http::Request<B>) {
    if let Some(context) = request.extensions().get::<RequestContext>() {
        context.mark_decided(crate::clock::monotonic_nanos());
    }
}

/// Records the matched route in the request's [`RequestContext`], if there is one (before a
/// decision, so that a rejection's audit event names the route too).
pub(crate) fn record_route<B>(request: &http::Request<B>, route: &Arc<str>) {
    if let Some(context) = request.extensions().get::<RequestContext>() {
        context.set_route(route);
    }
}
