//! gRPC clients see the layers' decisions as gRPC statuses.
//!
//! A gRPC client reads `grpc-status`, not the HTTP status: without it, tonic guesses a code
//! from the HTTP status, and a 429 becomes `UNAVAILABLE`, which retry policies retry. So every
//! layer's rejection of a request whose `content-type` is `application/grpc` (or
//! `application/grpc+proto`, …) is sent as gRPC's trailers-only response: HTTP 200,
//! `content-type: application/grpc`, no body, and `grpc-status` with a `grpc-message` that says
//! no more than the HTTP body would:
//!
//! | HTTP | `grpc-status` |
//! |---|---|
//! | 400 (a request that cannot be read one way, a token sent twice) | 3 `INVALID_ARGUMENT` |
//! | 401 | 16 `UNAUTHENTICATED` |
//! | 403 | 7 `PERMISSION_DENIED` |
//! | 429 | 8 `RESOURCE_EXHAUSTED`, with `grpc-retry-pushback-ms` from `Retry-After` |
//! | 503 (keys or the limit store unavailable) | 14 `UNAVAILABLE` |
//!
//! The other headers of the rejection (`WWW-Authenticate`, `Retry-After`, `RateLimit`) stay.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, Response, StatusCode};
//! use portcullis::grpc::{is_grpc, into_grpc};
//!
//! let mut request = HeaderMap::new();
//! request.insert("content-type", "application/grpc+proto".parse().unwrap());
//! assert!(is_grpc(&request));
//!
//! let mut rejection = Response::new(());
//! *rejection.status_mut() = StatusCode::TOO_MANY_REQUESTS;
//! rejection.headers_mut().insert("retry-after", "3".parse().unwrap());
//! into_grpc(&mut rejection);
//! assert_eq!(rejection.status(), StatusCode::OK);
//! assert_eq!(rejection.headers()["grpc-status"], "8");
//! assert_eq!(rejection.headers()["grpc-retry-pushback-ms"], "3000");
//! ```

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-retry-pushback-ms`: how long the client should wait before retrying (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Whether a request speaks gRPC: its `content-type` is `application/grpc`, alone or with a
/// `+suffix` or parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= 16
            && value[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(value.get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status for an HTTP rejection status, and its message.
fn status_for(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("3", "malformed request"),
        StatusCode::UNAUTHORIZED => ("16", "unauthenticated"),
        StatusCode::FORBIDDEN => ("7", "permission denied"),
        StatusCode::TOO_MANY_REQUESTS => ("8", "rate limited"),
        StatusCode::SERVICE_UNAVAILABLE => ("14", "unavailable"),
        _ => ("2", "rejected"),
    }
}

/// Rewrites a rejection into gRPC's trailers-only form (the body must be empty, as the layers'
/// rejections are). A response that is already 200 is left as it is.
pub fn into_grpc<B>(response: &mut Response<B>) {
    if response.status() == StatusCode::OK {
        return;
    }
    let (code, message) = status_for(response.status());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from_static(code));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    let pushback = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|secs| HeaderValue::from(secs.saturating_mul(1000)));
    if let Some(pushback) = pushback {
        headers.insert(GRPC_RETRY_PUSHBACK_MS, pushback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_grpc(&headers)
        };
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
        ] {
            assert!(check(yes), "{yes}");
        }
        for no in [
            "application/json",
            "application/grpcx",
            "application/grpc-web",
            "text/plain",
        ] {
            assert!(!check(no), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn statuses() {
        for (http, grpc) in [
            (400, "3"),
            (401, "16"),
            (403, "7"),
            (429, "8"),
            (503, "14"),
            (500, "2"),
        ] {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(http).unwrap();
            into_grpc(&mut response);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[GRPC_STATUS], grpc, "{http}");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
            assert!(response.headers().get(GRPC_RETRY_PUSHBACK_MS).is_none());
        }
        let mut ok = Response::new(());
        into_grpc(&mut ok);
        assert!(ok.headers().is_empty());
    }
}
