//! One hook for every refusal: the response a layer sends when it refuses a request.
//!
//! [`JwtAuthLayer`], [`AuthorizeLayer`], [`RateLimitLayer`] and the policy stack
//! (`PolicyLayer`, `ReloadLayer`, feature `policy`) each take an [`OnRejection`] through their
//! `on_rejection` method. The hook sees one [`Rejection`]: the status, a stable reason code,
//! the layer's typed error, the `WWW-Authenticate` challenge or `Retry-After` the default
//! response carries, and whether the request speaks gRPC. The default, [`DefaultRejection`],
//! sends the status and those headers with an empty body.
//!
//! Whatever the hook returns, the layer then:
//! - puts its typed error ([`JwtError`], [`AuthzError`], [`RateLimited`],
//!   [`RateLimitUnavailable`]) and a [`Refused`] record with the reason code in the response's
//!   extensions, so outer layers (audit events, metrics) classify the refusal the same way
//!   whatever the hook did;
//! - for a gRPC request, unless the hook answered with a `grpc-status` of its own, sends
//!   gRPC's trailers-only form (see [`grpc`](crate::grpc)): the body is dropped there, because
//!   a gRPC client would read it as a message;
//! - the rate-limit layer adds its `RateLimit` fields, as on every response.
//!
//! # Example
//!
//! A JSON problem body for every refusal of the policy stack or of the layers one by one:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
//! use portcullis::keys::KeySet;
//! use portcullis::reject::Rejection;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! fn problem(rejection: &Rejection<'_>) -> Response<String> {
//!     let mut response = Response::new(format!(
//!         r#"{{"status":{},"reason":"{}"}}"#,
//!         rejection.status().as_u16(),
//!         rejection.reason()
//!     ));
//!     *response.status_mut() = rejection.status();
//!     response.headers_mut().insert("content-type", "application/problem+json".parse().unwrap());
//!     if let Some(challenge) = rejection.www_authenticate() {
//!         response.headers_mut().insert("www-authenticate", challenge.clone());
//!     }
//!     response
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let validator = Validator::builder()
//!     .issuer(Issuer::new("https://issuer.example/", KeySet::hmac(&[7; 32]).unwrap()).audiences(["api"]))
//!     .build()
//!     .unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(JwtAuthLayer::new(validator).on_rejection(problem))
//!     .service(service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
//!
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.body(), r#"{"status":401,"reason":"token_missing"}"#);
//! assert_eq!(response.extensions().get::<portcullis::reject::Refused>().unwrap().reason(), "token_missing");
//! # });
//! ```
//!
//! [`JwtAuthLayer`]: crate::jwt::JwtAuthLayer
//! [`AuthorizeLayer`]: crate::authz::AuthorizeLayer
//! [`RateLimitLayer`]: crate::rate_limit::RateLimitLayer
//! [`JwtError`]: crate::jwt::JwtError
//! [`AuthzError`]: crate::authz::AuthzError
//! [`RateLimited`]: crate::rate_limit::RateLimited
//! [`RateLimitUnavailable`]: crate::rate_limit::RateLimitUnavailable

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::grpc::{GRPC_STATUS, into_grpc};

/// Declares [`Reason`]: each variant with its code, and the list of them all.
macro_rules! reasons {
    ($($variant:ident => $code:literal,)*) => {
        /// Every reason code a decision can carry: what each layer's errors report (through
        /// their `reason()`), what the [`Refused`] record and the audit events name, and what
        /// the decision counters are labelled with. The list the metrics register is
        /// [`Reason::ALL`], so it cannot miss a code a layer returns.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Reason {
            $($variant,)*
        }

        impl Reason {
            /// Every reason, in a stable order.
            #[cfg(any(feature = "metrics", test))]
            pub(crate) const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The code (`token_missing`, `insufficient_scope`, …).
            pub(crate) const fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }
        }
    };
}

reasons! {
    None => "none",
    ServiceError => "service_error",
    AlgNone => "alg_none",
    AlgorithmNotAllowed => "algorithm_not_allowed",
    BadMethod => "bad_method",
    BadPath => "bad_path",
    BadSignature => "bad_signature",
    CritUnsupported => "crit_unsupported",
    EmbeddedKey => "embedded_key",
    InvalidClaim => "invalid_claim",
    IssuedInFuture => "issued_in_future",
    KeysUnavailable => "keys_unavailable",
    LifetimeTooLong => "lifetime_too_long",
    MalformedHeader => "malformed_header",
    MalformedToken => "malformed_token",
    MissingClaim => "missing_claim",
    NestedToken => "nested_token",
    NoMatchingKey => "no_matching_key",
    TokenDuplicated => "token_duplicated",
    TokenExpired => "token_expired",
    TokenMissing => "token_missing",
    TokenNotYetValid => "token_not_yet_valid",
    TokenTooLarge => "token_too_large",
    UnencodedPayload => "unencoded_payload",
    UnknownIssuer => "unknown_issuer",
    UnknownKid => "unknown_kid",
    UnsupportedAlgorithm => "unsupported_algorithm",
    WrongAudience => "wrong_audience",
    WrongType => "wrong_type",
    InsufficientScope => "insufficient_scope",
    RateLimited => "rate_limited",
    RateLimitStoreUnavailable => "rate_limit_store_unavailable",
}

/// A refused request, as handed to an [`OnRejection`].
#[derive(Clone, Copy)]
pub struct Rejection<'a> {
    refusal: Refusal<'a>,
    error: &'a (dyn Error + Send + Sync + 'static),
}

impl fmt::Debug for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("status", &self.refusal.status)
            .field("reason", &self.refusal.reason)
            .field("error", &self.error.to_string())
            .field("retry_after", &self.refusal.retry_after)
            .field("grpc", &self.refusal.grpc)
            .finish_non_exhaustive()
    }
}

/// What a layer decided to refuse, before the hook: everything of a [`Rejection`] but the
/// error.
#[derive(Clone, Copy)]
pub(crate) struct Refusal<'a> {
    status: StatusCode,
    reason: &'static str,
    www_authenticate: Option<&'a HeaderValue>,
    retry_after: Option<u64>,
    grpc: bool,
}

impl<'a> Refusal<'a> {
    pub(crate) fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            www_authenticate: None,
            retry_after: None,
            grpc: false,
        }
    }

    pub(crate) fn challenge(mut self, challenge: Option<&'a HeaderValue>) -> Self {
        self.www_authenticate = challenge;
        self
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Whether the request speaks gRPC, from its headers.
    pub(crate) fn grpc(mut self, request: &http::HeaderMap) -> Self {
        self.grpc = crate::grpc::is_grpc(request);
        self
    }
}

impl<'a> Rejection<'a> {
    /// The status the default rejection answers with (400, 401, 403, 429 or 503).
    pub fn status(&self) -> StatusCode {
        self.refusal.status
    }

    /// A stable reason code, the one audit events and metrics use: `token_missing`,
    /// `token_expired`, `insufficient_scope`, `bad_path`, `rate_limited`, … (see
    /// `docs/observability.md` for the list).
    pub fn reason(&self) -> &'static str {
        self.refusal.reason
    }

    /// The layer's typed error; `downcast_ref` it to [`JwtError`](crate::jwt::JwtError),
    /// [`AuthzError`](crate::authz::AuthzError), [`RateLimited`](crate::rate_limit::RateLimited)
    /// or [`RateLimitUnavailable`](crate::rate_limit::RateLimitUnavailable) for its details.
    pub fn error(&self) -> &'a (dyn Error + Send + Sync + 'static) {
        self.error
    }

    /// The RFC 6750 `WWW-Authenticate` challenge, where the status calls for one (401, 403).
    pub fn www_authenticate(&self) -> Option<&'a HeaderValue> {
        self.refusal.www_authenticate
    }

    /// Seconds until a retry can succeed, on a 429 (the `Retry-After` value).
    pub fn retry_after(&self) -> Option<u64> {
        self.refusal.retry_after
    }

    /// Whether the request speaks gRPC (`content-type: application/grpc*`). Unless the hook
    /// answers with a `grpc-status` of its own, the layer sends its response in gRPC's
    /// trailers-only form, without the body.
    pub fn is_grpc(&self) -> bool {
        self.refusal.grpc
    }
}

/// Builds the response for a refused request.
///
/// Implemented for closures and functions `Fn(&Rejection<'_>) -> Response<B>`. Whatever it
/// returns, the layer then puts its typed error and a [`Refused`] record in the response's
/// extensions (see the [module](self) documentation).
pub trait OnRejection<B>: Send + Sync + 'static {
    /// The response to send.
    fn rejection(&self, rejection: &Rejection<'_>) -> Response<B>;
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(&Rejection<'_>) -> Response<B> + Send + Sync + 'static,
{
    fn rejection(&self, rejection: &Rejection<'_>) -> Response<B> {
        self(rejection)
    }
}

impl<B, R: OnRejection<B> + ?Sized> OnRejection<B> for Arc<R> {
    fn rejection(&self, rejection: &Rejection<'_>) -> Response<B> {
        (**self).rejection(rejection)
    }
}

/// The default rejection: the status, the `WWW-Authenticate` challenge or `Retry-After`, an
/// empty body. Works with any body type that has a `Default` (axum's `Body`, `Full`, `Empty`,
/// `String`, …).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejection;

impl<B: Default> OnRejection<B> for DefaultRejection {
    fn rejection(&self, rejection: &Rejection<'_>) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = rejection.status();
        if let Some(challenge) = rejection.www_authenticate() {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, challenge.clone());
        }
        if let Some(secs) = rejection.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The record every refusal leaves in its response's extensions: the reason code, whatever
/// the hook returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    reason: &'static str,
}

impl Refused {
    /// The reason code (as [`Rejection::reason`]).
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Runs `hook` for the refusal, then leaves the [`Refused`] record and `error` in the
/// response's extensions and converts it for gRPC: the layers' one way to refuse.
pub(crate) fn respond<B, R, E>(hook: &R, refusal: Refusal<'_>, error: E) -> Response<B>
where
    B: Default,
    R: OnRejection<B> + ?Sized,
    E: Error + Clone + Send + Sync + 'static,
{
    let mut response = hook.rejection(&Rejection {
        refusal,
        error: &error,
    });
    if refusal.grpc && !response.headers().contains_key(GRPC_STATUS) {
        into_grpc(&mut response);
        *response.body_mut() = B::default();
    }
    let extensions = response.extensions_mut();
    extensions.insert(Refused {
        reason: refusal.reason,
    });
    extensions.insert(error);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_distinct_snake_case_words() {
        let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        let distinct: std::collections::BTreeSet<&str> = codes.iter().copied().collect();
        assert_eq!(distinct.len(), codes.len(), "{codes:?}");
        for code in codes {
            assert!(
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
        assert_eq!(Reason::ALL[0].code(), "none");
    }

    #[derive(Debug, Clone, thiserror::Error)]
    #[error("nope")]
    struct Nope;

    #[test]
    fn the_default_carries_the_status_and_headers() {
        let challenge = HeaderValue::from_static("Bearer realm=\"api\"");
        let refusal =
            Refusal::new(StatusCode::UNAUTHORIZED, "token_missing").challenge(Some(&challenge));
        let response: Response<String> = respond(&DefaultRejection, refusal, Nope);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
        assert_eq!(
            response.extensions().get::<Refused>().unwrap().reason(),
            "token_missing"
        );
        assert!(response.extensions().get::<Nope>().is_some());

        let refusal = Refusal::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited").retry_after(3);
        let response: Response<String> = respond(&DefaultRejection, refusal, Nope);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
    }

    #[test]
    fn grpc_requests_get_the_trailers_only_form_without_the_hooks_body() {
        let hook = |r: &Rejection<'_>| {
            let mut response = Response::new(String::from("{\"json\":true}"));
            *response.status_mut() = r.status();
            response
        };
        let mut grpc = http::HeaderMap::new();
        grpc.insert("content-type", HeaderValue::from_static("application/grpc"));
        let refusal = Refusal::new(StatusCode::FORBIDDEN, "insufficient_scope").grpc(&grpc);
        let response = respond(&hook, refusal, Nope);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[GRPC_STATUS], "7");
        assert_eq!(response.body(), "");

        // A hook that answers in gRPC itself is left alone.
        let own = |_: &Rejection<'_>| {
            let mut response = Response::new(String::new());
            response
                .headers_mut()
                .insert(GRPC_STATUS, HeaderValue::from_static("9"));
            response
        };
        let response = respond(&own, refusal, Nope);
        assert_eq!(response.headers()[GRPC_STATUS], "9");
    }

    #[test]
    fn debug_shows_the_reason_not_the_request() {
        let rejection = Rejection {
            refusal: Refusal::new(StatusCode::UNAUTHORIZED, "token_missing"),
            error: &Nope,
        };
        let debug = format!("{rejection:?}");
        assert!(debug.contains("token_missing"), "{debug}");
    }
}
