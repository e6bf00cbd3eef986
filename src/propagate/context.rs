//! The request's id and trace context, as the propagate layer settles them.

use std::fmt;

use http::HeaderValue;

use super::trace_context::{HexId, TraceParent};

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

/// The request's id and trace, put in the request's extensions by
/// [`PropagateLayer`](super::PropagateLayer) when asked with
/// [`request_context(true)`](super::PropagateLayer::request_context), for the service's own logs.
///
/// Both are also on the request's headers (the request id header and `traceparent`), which is
/// where an upstream across the network finds them; the context saves the service parsing them
/// and names the caller's span too.
#[derive(Clone)]
pub struct RequestContext {
    request_id: HeaderValue,
    trace: Option<TraceContext>,
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id())
            .field("trace", &self.trace)
            .finish()
    }
}

impl RequestContext {
    pub(crate) fn new(request_id: HeaderValue, trace: Option<TraceContext>) -> Self {
        Self { request_id, trace }
    }

    /// The request id (checked when it came from the client, or generated).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The request id as a header value.
    pub fn request_id_value(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The trace context, when trace propagation is on.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
}
