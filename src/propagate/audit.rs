//! Audit events: one `tracing` event per request decision, and the decision metrics.

use http::Response;

use http::HeaderValue;

use super::context::TraceContext;
use crate::reject::{Reason, Refused};

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "portcullis::audit";

/// How a request was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Passed every layer and reached the service.
    Allowed,
    /// Refused by a layer, with a reason code.
    Rejected(&'static str),
    /// The service behind the layers failed (its error, not a response).
    Error,
}

impl Outcome {
    /// `allowed`, `rejected` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Rejected(_) => "rejected",
            Outcome::Error => "error",
        }
    }

    /// The reason code: `none` when allowed, `service_error` on error.
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Allowed => Reason::None.code(),
            Outcome::Rejected(reason) => reason,
            Outcome::Error => Reason::ServiceError.code(),
        }
    }

    /// The outcome a response says: the [`Refused`] record every layer leaves in the
    /// extensions of a response it refused, else allowed.
    pub fn of_response<B>(response: &Response<B>) -> Self {
        match response.extensions().get::<Refused>() {
            Some(refused) => Outcome::Rejected(refused.reason()),
            None => Outcome::Allowed,
        }
    }
}

/// Writes the audit event of one request, and counts it when the `metrics` feature is on.
pub(crate) fn emit(
    request_id: &HeaderValue,
    trace: Option<&TraceContext>,
    decided: super::layer::Decided<'_>,
    method: &http::Method,
    outcome: Outcome,
    status: Option<http::StatusCode>,
    decision_nanos: u64,
) {
    #[cfg(feature = "metrics")]
    crate::telemetry::decision(outcome.as_str(), outcome.reason(), decision_nanos);
    if !tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
        return;
    }
    let identity = decided.principal;
    let trace_id = trace.map(|t| t.trace_id());
    tracing::info!(
        target: AUDIT_TARGET,
        outcome = outcome.as_str(),
        reason = outcome.reason(),
        status = status.map_or(0, |s| s.as_u16()),
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = trace_id.as_ref().map(tracing::field::display),
        subject = identity.and_then(|i| i.subject()),
        issuer = identity.map(|i| i.issuer()),
        route = decided.route,
        method = method.as_str(),
        decision_us = decision_nanos / 1_000,
        "request decided"
    );
}
