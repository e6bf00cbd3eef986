//! Run with `cargo run --example trace_context_service -- [ADDR]` (default `127.0.0.1:5000`).
//!
//! The test service of the W3C Trace Context harness (the `test/` folder of the public
//! w3c/trace-context repository), built on [`PropagateLayer`]: every request passes the layer,
//! which validates `traceparent` and `tracestate` and makes the gateway's child. The harness
//! POSTs a JSON array of `{"url": …, "arguments": […]}`; for each element the service POSTs
//! `arguments` to `url`, with a `traceparent` that is a new child of the request's (one span per
//! outgoing call) and the request's `tracestate`. Then, from the harness's folder:
//!
//! ```text
//! STRICT_LEVEL=2 SERVICE_ENDPOINT=http://127.0.0.1:5000/test python3 test.py
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use portcullis::propagate::{PropagateLayer, TRACEPARENT, TRACESTATE, TraceParent, new_span_id};
use serde_json::Value;
use tower::{Layer, service_fn};

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// Makes the calls the harness asks for, each with a child of the request's trace.
async fn handle(client: Upstream, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let parent = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| TraceParent::parse(v.as_bytes()).ok());
    let tracestate: Vec<HeaderValue> = request
        .headers()
        .get_all(&TRACESTATE)
        .iter()
        .cloned()
        .collect();
    let Ok(body) = request.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(Value::Array(calls)) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    for call in calls {
        let (Some(url), Some(arguments)) = (call["url"].as_str(), call.get("arguments")) else {
            return status(StatusCode::BAD_REQUEST);
        };
        let mut outgoing = Request::post(url).header("content-type", "application/json");
        if let Some(child) = parent.and_then(|p| p.child(new_span_id())) {
            outgoing = outgoing.header(&TRACEPARENT, child.to_bytes().as_slice());
        }
        for value in &tracestate {
            outgoing = outgoing.header(&TRACESTATE, value.clone());
        }
        let Ok(outgoing) = outgoing.body(Full::new(Bytes::from(arguments.to_string()))) else {
            return status(StatusCode::BAD_REQUEST);
        };
        if let Ok(response) = client.request(outgoing).await {
            let _ = response.into_body().collect().await;
        }
    }
    status(StatusCode::OK)
}

fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:5000")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let service = PropagateLayer::new().layer(service_fn(move |request: Request<Incoming>| {
        let client = client.clone();
        async move { Ok::<_, Infallible>(handle(client, request).await) }
    }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
