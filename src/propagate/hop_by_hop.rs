//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a proxy removes
//! them, and every header the `Connection` header names, before forwarding a message.

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// The fixed hop-by-hop headers: RFC 9110's (`Connection`, `Proxy-Connection`, `Keep-Alive`,
/// `TE`, `Transfer-Encoding`, `Upgrade`), plus `Trailer` and the proxy's own credentials
/// (`Proxy-Authorization`, `Proxy-Authenticate`), which are meant for this hop and must not
/// travel on.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
];

const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Removes the hop-by-hop headers from a message about to be forwarded: the fixed ones and
/// every header `Connection` names. `TE: trailers` is kept (gRPC needs it end to end, and it
/// says only that the sender accepts trailers). Does not allocate unless a message has more
/// than four `Connection` lines.
///
/// Run it on a request as it arrives, before any layer adds headers: a client that names
/// `x-user-id` in `Connection` then removes only its own copy, never one the gateway set.
///
/// ```
/// use http::HeaderMap;
/// use portcullis::propagate::remove_hop_by_hop;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
/// headers.insert("keep-alive", "timeout=5".parse().unwrap());
/// headers.insert("x-secret-hop", "1".parse().unwrap());
/// headers.insert("te", "trailers".parse().unwrap());
/// headers.insert("accept", "*/*".parse().unwrap());
/// remove_hop_by_hop(&mut headers);
/// assert_eq!(headers.len(), 2); // te: trailers and accept
/// ```
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names, with no hashing, says so.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    // The named headers first: take the Connection values out (refcounted clones).
    let mut few: [Option<HeaderValue>; 4] = Default::default();
    let mut more = Vec::new();
    for (i, value) in headers.get_all(CONNECTION).iter().enumerate() {
        match few.get_mut(i) {
            Some(slot) => *slot = Some(value.clone()),
            None => more.push(value.clone()),
        }
    }
    for value in few.iter().flatten().chain(&more) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if let Ok(name) = std::str::from_utf8(token)
                && !name.is_empty()
                && !name.eq_ignore_ascii_case("te")
            {
                headers.remove(name);
            }
        }
    }
    let trailers_only = {
        let mut te = headers.get_all(TE).iter();
        matches!((te.next(), te.next()), (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
    };
    let fixed: [&HeaderName; 6] = [
        &CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
        &TRAILER,
        &PROXY_AUTHORIZATION,
        &PROXY_AUTHENTICATE,
    ];
    for name in fixed {
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
    headers.remove(KEEP_ALIVE);
    if !trailers_only {
        headers.remove(TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn strips_fixed_and_named() {
        let mut headers = map(&[
            ("connection", "Upgrade, X-Foo"),
            ("connection", "x-bar ,,  "),
            ("upgrade", "websocket"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-checksum"),
            ("te", "gzip"),
            ("x-kept", "3"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        for name in HOP_BY_HOP {
            assert!(!headers.contains_key(name));
        }
    }

    #[test]
    fn each_one_alone_is_removed_and_a_message_with_none_is_left_as_it_is() {
        // The pass that finds none must know every one of them.
        for name in HOP_BY_HOP {
            let mut headers = map(&[(name, "gzip"), ("x-kept", "1")]);
            remove_hop_by_hop(&mut headers);
            let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, ["x-kept"], "{name}");
        }
        let mut headers = map(&[("accept", "*/*"), ("x-kept", "1"), ("x-kept", "2")]);
        let before = headers.clone();
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn keeps_te_trailers_and_survives_junk() {
        let mut headers = map(&[("te", "trailers"), ("connection", "te, ;bad, a b, ")]);
        headers.append("connection", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        for i in 0..6 {
            headers.append("connection", format!("x-{i}").parse().unwrap());
            headers.append(
                HeaderName::try_from(format!("x-{i}")).unwrap(),
                "v".parse().unwrap(),
            );
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["te"]);
    }
}
