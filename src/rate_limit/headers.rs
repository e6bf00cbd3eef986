//! The IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).

use http::{HeaderName, HeaderValue};

use super::engine::{LimitOutcome, Outcomes};
use super::limit::Limit;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds a `RateLimit-Policy` and a `RateLimit` member for each limit with an outcome.
pub(super) fn add_headers(limits: &[Limit], headers: &mut http::HeaderMap, outcomes: &Outcomes) {
    for outcome in outcomes.iter() {
        let limit = &limits[outcome.limit];
        if let Some(policy) = limit.policies.get(outcome.tier) {
            headers.append(RATELIMIT_POLICY.clone(), policy.clone());
        }
        if let Some(value) = rate_limit_value(limit, outcome) {
            headers.append(RATELIMIT.clone(), value);
        }
    }
}

/// The `RateLimit` member of one limit's outcome: `"name";r=N;t=N`.
fn rate_limit_value(limit: &Limit, outcome: &LimitOutcome) -> Option<HeaderValue> {
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
