//! Request ids, W3C trace context, header propagation, hop-by-hop headers and audit events:
//! [`PropagateLayer`], which runs first so that every response (the other layers' rejections
//! included) carries the request id and every audit event can name the request and its trace.
//!
//! The parsers and generators are plain functions ([`TraceParent::parse`],
//! [`check_tracestate`], [`valid_request_id`], [`new_request_id`], [`remove_hop_by_hop`]).
//!
//! # Example
//!
//! ```
//! use portcullis::propagate::{TraceParent, new_request_id, valid_request_id};
//!
//! let parent = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! let child = parent.child([0x53, 0x99, 0xa1, 0, 0, 0, 0, 1]).unwrap();
//! assert_eq!(child.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-5399a10000000001-01");
//! assert!(valid_request_id(&new_request_id()));
//! ```

mod audit;
mod context;
mod hop_by_hop;
mod ids;
mod layer;
mod trace_context;

pub use audit::{AUDIT_TARGET, Outcome};
pub use context::{RequestContext, TraceContext};
pub use hop_by_hop::{HOP_BY_HOP, remove_hop_by_hop};
pub use ids::{MAX_REQUEST_ID_LEN, new_request_id, new_span_id, valid_request_id};
#[cfg(feature = "policy")]
pub(crate) use layer::{Config, Decided, Pending, begin};
pub use layer::{
    Propagate, PropagateLayer, ResponseFuture, TRACEPARENT, TRACESTATE, TrustIncoming, X_REQUEST_ID,
};
pub use trace_context::{
    FLAG_SAMPLED, HexId, MAX_TRACESTATE_MEMBERS, TRACEPARENT_LEN, TraceParent, TraceParentError,
    TraceState, canonical_tracestate, check_tracestate,
};
