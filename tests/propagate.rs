//! Propagation: request-id trust rules, trace context through the layer, header propagation
//! and hop-by-hop stripping.

mod common;

use std::net::SocketAddr;

use common::recorder::{Seen, echo, send};
use http::{HeaderName, Request};
use portcullis::propagate::{PropagateLayer, TraceParent, TrustIncoming};
use portcullis::rate_limit::PeerAddr;
use tower::Layer;

fn get(headers: &[(&str, &str)]) -> Request<String> {
    let mut request = Request::get("/orders/7");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.body(String::new()).unwrap()
}

fn with_peer(mut request: Request<String>, peer: &str) -> Request<String> {
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    request
}

#[test]
fn request_id_trust_rules() {
    let seen = Seen::default();
    let mut any = PropagateLayer::new()
        .request_context(true)
        .layer(echo(&seen));
    // A well-formed id is kept, sent upstream, echoed, and in the context.
    let response = send(&mut any, get(&[("x-request-id", "req-42")]));
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let (headers, context) = seen.last();
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(context.unwrap().request_id(), "req-42");

    // Malformed, too long, or sent twice: replaced by a new UUIDv7.
    for bad in [
        vec!["has space"],
        vec!["\"quoted\""],
        vec!["a,b"],
        vec![&*"x".repeat(129)],
        vec!["one", "two"],
    ] {
        let mut request = Request::get("/");
        for v in &bad {
            request = request.header("x-request-id", *v);
        }
        let response = send(&mut any, request.body(String::new()).unwrap());
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 36, "{bad:?}");
        assert_eq!(&id[14..15], "7");
        let (headers, _) = seen.last();
        assert_eq!(headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(headers["x-request-id"], id.as_str());
    }
    // No id: a new one, different each time.
    let a = send(&mut any, get(&[])).headers()["x-request-id"].clone();
    let b = send(&mut any, get(&[])).headers()["x-request-id"].clone();
    assert_ne!(a, b);

    // Only from trusted peers.
    let lb = TrustIncoming::Peers(vec!["10.0.0.0/8".parse().unwrap()].into());
    let mut trusted = PropagateLayer::new()
        .request_context(true)
        .trust_request_ids(lb)
        .layer(echo(&seen));
    let from_lb = with_peer(get(&[("x-request-id", "lb-1")]), "10.1.2.3:5000");
    assert_eq!(
        send(&mut trusted, from_lb).headers()["x-request-id"],
        "lb-1"
    );
    let from_client = with_peer(get(&[("x-request-id", "lb-1")]), "203.0.113.9:5000");
    assert_ne!(
        send(&mut trusted, from_client).headers()["x-request-id"],
        "lb-1"
    );
    let no_peer = get(&[("x-request-id", "lb-1")]);
    assert_ne!(
        send(&mut trusted, no_peer).headers()["x-request-id"],
        "lb-1"
    );
    let mut never = PropagateLayer::new()
        .request_context(true)
        .trust_request_ids(TrustIncoming::Never)
        .layer(echo(&seen));
    assert_ne!(
        send(&mut never, get(&[("x-request-id", "req-42")])).headers()["x-request-id"],
        "req-42"
    );
    // Another header name.
    let mut custom = PropagateLayer::new()
        .request_context(true)
        .request_id_header(HeaderName::from_static("x-correlation-id"))
        .layer(echo(&seen));
    let response = send(&mut custom, get(&[("x-correlation-id", "c-1")]));
    assert_eq!(response.headers()["x-correlation-id"], "c-1");
    assert!(!response.headers().contains_key("x-request-id"));
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn trace_context_through_the_layer() {
    let seen = Seen::default();
    let mut service = PropagateLayer::new()
        .request_context(true)
        .layer(echo(&seen));

    // A valid parent: same trace, a new parent id, sampled kept, tracestate kept as is.
    send(
        &mut service,
        get(&[
            ("traceparent", PARENT),
            ("tracestate", "rojo=00f067aa0ba902b7,congo=t61"),
        ]),
    );
    let (headers, context) = seen.last();
    let child = TraceParent::parse(headers["traceparent"].as_bytes()).unwrap();
    assert_eq!(
        &headers["traceparent"].to_str().unwrap()[..36],
        &PARENT[..36]
    );
    assert_ne!(
        &headers["traceparent"].to_str().unwrap()[36..52],
        &PARENT[36..52]
    );
    assert!(child.sampled());
    assert_eq!(headers["tracestate"], "rojo=00f067aa0ba902b7,congo=t61");
    let trace = *context.unwrap().trace().unwrap();
    assert_eq!(
        trace.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(trace.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
    assert_eq!(
        trace.span_id().to_string(),
        &headers["traceparent"].to_str().unwrap()[36..52]
    );
    assert!(!trace.is_root());

    // Not sampled stays not sampled; a tracestate with blanks and two lines is rewritten.
    send(
        &mut service,
        Request::get("/")
            .header("traceparent", PARENT.replace("-01", "-00"))
            .header("tracestate", "rojo=1 , congo=2")
            .header("tracestate", "x=3")
            .body(String::new())
            .unwrap(),
    );
    let (headers, _) = seen.last();
    assert!(
        !TraceParent::parse(headers["traceparent"].as_bytes())
            .unwrap()
            .sampled()
    );
    assert_eq!(headers.get_all("tracestate").iter().count(), 1);
    assert_eq!(headers["tracestate"], "rojo=1,congo=2,x=3");

    // An invalid tracestate (a malformed key) is dropped; the trace is kept.
    send(
        &mut service,
        get(&[("traceparent", PARENT), ("tracestate", "rojo=1,Rojo=2")]),
    );
    let (headers, _) = seen.last();
    assert!(!headers.contains_key("tracestate"));
    assert_eq!(
        &headers["traceparent"].to_str().unwrap()[..36],
        &PARENT[..36]
    );

    // A repeated key is valid under the current W3C text: its first member is kept.
    send(
        &mut service,
        get(&[("traceparent", PARENT), ("tracestate", "rojo=1,rojo=2")]),
    );
    let (headers, _) = seen.last();
    assert_eq!(headers["tracestate"], "rojo=1");

    // Invalid or absent: a new sampled trace, and tracestate dropped.
    for bad in [
        PARENT.to_uppercase(),
        PARENT.replace("00-4b", "ff-4b"),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
        String::new(),
    ] {
        let mut request = Request::get("/").header("tracestate", "rojo=1");
        if !bad.is_empty() {
            request = request.header("traceparent", bad.as_str());
        }
        send(&mut service, request.body(String::new()).unwrap());
        let (headers, context) = seen.last();
        let new = TraceParent::parse(headers["traceparent"].as_bytes()).unwrap();
        assert_ne!(
            &headers["traceparent"].to_str().unwrap()[3..35],
            &PARENT[3..35]
        );
        assert!(new.sampled() && new.version() == 0, "{bad}");
        assert!(!headers.contains_key("tracestate"), "{bad}");
        assert!(context.unwrap().trace().unwrap().is_root());
    }
    // Sent twice: not believed.
    send(
        &mut service,
        Request::get("/")
            .header("traceparent", PARENT)
            .header("traceparent", PARENT)
            .body(String::new())
            .unwrap(),
    );
    assert_ne!(
        &seen.last().0["traceparent"].to_str().unwrap()[3..35],
        &PARENT[3..35]
    );
    // A later version with more fields: read leniently, forwarded as version 00.
    let future = format!("cc{}-extra", &PARENT[2..]);
    send(&mut service, get(&[("traceparent", &future)]));
    let forwarded = seen.last().0["traceparent"].to_str().unwrap().to_owned();
    assert!(forwarded.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(forwarded.len(), 55);

    // New traces unsampled when told; trace context off leaves the headers alone.
    let mut unsampled = PropagateLayer::new()
        .request_context(true)
        .sample_new_traces(false)
        .layer(echo(&seen));
    send(&mut unsampled, get(&[]));
    assert!(
        !TraceParent::parse(seen.last().0["traceparent"].as_bytes())
            .unwrap()
            .sampled()
    );
    let mut off = PropagateLayer::new()
        .request_context(true)
        .trace_context(false)
        .layer(echo(&seen));
    send(&mut off, get(&[("traceparent", "garbage")]));
    let (headers, context) = seen.last();
    assert_eq!(headers["traceparent"], "garbage");
    assert!(context.unwrap().trace().is_none());
}

#[test]
fn headers_propagate_and_hop_by_hop_headers_go() {
    let seen = Seen::default();
    let mut service = PropagateLayer::new()
        .request_context(true)
        .propagate_headers([
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("x-upstream"),
            HeaderName::from_static("x-absent"),
        ])
        .remove_hop_by_hop(true)
        .layer(echo(&seen));
    let response = send(
        &mut service,
        get(&[
            ("x-correlation-id", "corr-9"),
            ("x-upstream", "from-client"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("te", "trailers"),
        ]),
    );
    assert_eq!(response.headers()["x-correlation-id"], "corr-9");
    // Copied from the request, over the service's own value.
    assert_eq!(response.headers()["x-upstream"], "from-client");
    assert!(!response.headers().contains_key("x-absent"));
    let (headers, _) = seen.last();
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!headers.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(headers["te"], "trailers");
    assert_eq!(headers["x-correlation-id"], "corr-9");

    // Off by default, as is the RequestContext in the extensions (the id and the trace are
    // on the headers either way).
    let mut plain = PropagateLayer::new().layer(echo(&seen));
    send(&mut plain, get(&[("connection", "x-hop"), ("x-hop", "1")]));
    let (headers, context) = seen.last();
    assert!(headers.contains_key("x-hop"));
    assert!(headers.contains_key("x-request-id"));
    assert!(headers.contains_key("traceparent"));
    assert!(context.is_none());
}
