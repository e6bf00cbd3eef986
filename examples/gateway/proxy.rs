//! The service behind the policy (the gateway's own endpoints, else the upstream), and what a
//! request must be before it reaches the policy.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use portcullis::headers::{remove_every_spelling_of, remove_other_spellings, remove_underscored};
use portcullis::policy::PolicyHandle;
use portcullis::propagate::remove_hop_by_hop;
use serde_json::json;
use tower::Service;

use super::Body;

/// Headers that override the path a server routes on (IIS URL Rewrite, Symfony, nginx
/// setups): a client's copy would route the upstream past the path the gate checked.
pub(crate) const PATH_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-uri"),
];

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The forwarding headers only the gateway sets; a client's copies, in any spelling, go.
const SET_BY_THE_GATEWAY: [HeaderName; 4] =
    [X_FORWARDED_HOST, X_FORWARDED_PROTO, FORWARDED, X_REAL_IP];

/// The request body as it reaches the upstream: a failure to read it from the client (broken
/// chunked framing, a connection cut mid-body) is marked as the client's, so it answers 400,
/// not 502.
pub(crate) type ClientBody =
    http_body_util::combinators::MapErr<Incoming, fn(hyper::Error) -> ClientBodyError>;

/// A failure reading the client's request body.
#[derive(Debug)]
pub(crate) struct ClientBodyError(pub(crate) hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reading the request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether an upstream client error was caused by the client's request body.
pub(crate) fn caused_by_client(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<ClientBodyError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// What a request must be before it reaches the policy: one `Host` (HTTP/1.1 requires it, and
/// it becomes `X-Forwarded-Host`), no header only a proxy may set, and (unless kept) no header
/// whose name an upstream would read as another's.
pub(crate) fn admit<B>(
    request: &mut Request<B>,
    keep_underscore_headers: bool,
) -> Result<(), &'static str> {
    let hosts = request.headers().get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && request.version() == http::Version::HTTP_11) {
        return Err("a request needs exactly one Host header");
    }
    let headers = request.headers_mut();
    // Before any layer adds headers: a client's Connection header can only remove its own
    // copies.
    remove_hop_by_hop(headers);
    if !keep_underscore_headers {
        remove_underscored(headers);
    }
    remove_every_spelling_of(headers, &PATH_OVERRIDES);
    Ok(())
}

pub(crate) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The service behind the policy: the gateway's own endpoints, else the upstream.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub(crate) client: Client<HttpConnector, ClientBody>,
    pub(crate) upstream: Uri,
    pub(crate) timeout: Duration,
    pub(crate) handle: PolicyHandle,
    pub(crate) metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Proxy {
    async fn forward(self, mut request: Request<ClientBody>) -> Response<Body> {
        // The request id the policy set (a refcount), for an error answer.
        let request_id = request
            .headers()
            .get(self.handle.request_id_header())
            .cloned();
        let request_id = || {
            request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        match request.uri().path() {
            "/health" => return Response::new(full("ok")),
            "/metrics" => {
                self.handle.current().validator().cache_stats().record();
                return Response::new(full(self.metrics.render()));
            }
            "/.well-known/portcullis/jwks.json" => {
                return match self.handle.current().assertion_jwks() {
                    Some(jwks) => json_response(StatusCode::OK, jwks),
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        json!({"error": "no assertion is configured"}),
                    ),
                };
            }
            _ => {}
        }
        // The upstream's address, with its path prefix, and the request's path and query: the
        // parts already parsed are shared, not copied.
        let mut parts = std::mem::take(request.uri_mut()).into_parts();
        parts.scheme = Some(self.upstream.scheme().cloned().unwrap_or(Scheme::HTTP));
        parts.authority = self.upstream.authority().cloned();
        let base = self.upstream.path().trim_end_matches('/');
        if !base.is_empty() || parts.path_and_query.is_none() {
            let path = parts.path_and_query.as_ref().map_or("/", |p| p.as_str());
            parts.path_and_query = format!("{base}{path}").try_into().ok();
        }
        let Ok(uri) = Uri::from_parts(parts) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "request_id": request_id()}),
            );
        };
        *request.uri_mut() = uri;
        let peer = request.extensions_mut().remove::<Arc<ForwardedPeer>>();
        set_forwarding_headers(request.headers_mut(), peer.as_deref());
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let mut response = response.map(|body| body.boxed());
                remove_hop_by_hop(response.headers_mut());
                response
            }
            Ok(Err(error)) if caused_by_client(&error) => {
                tracing::info!(target: "gateway", %error, request_id = request_id(), "bad request body");
                json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "bad_request", "request_id": request_id()}),
                )
            }
            Ok(Err(error)) => {
                tracing::warn!(target: "gateway", %error, request_id = request_id(), "upstream unreachable");
                json_response(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": "bad_gateway", "request_id": request_id()}),
                )
            }
            Err(_) => json_response(
                StatusCode::GATEWAY_TIMEOUT,
                json!({"error": "gateway_timeout", "request_id": request_id()}),
            ),
        }
    }
}

/// The connection's peer as the forwarding headers write it. `serve::connection` works it out
/// once per connection and hands it to each request in its extensions, so a request does not
/// format the address again.
pub(crate) struct ForwardedPeer {
    /// The address alone: `X-Real-IP`, and the end of `X-Forwarded-For`.
    address: HeaderValue,
    /// RFC 7239's `for=` parameter, with its `;`: an IPv6 address is quoted, in brackets.
    forwarded_for: String,
}

impl ForwardedPeer {
    pub(crate) fn new(peer: IpAddr) -> Option<Self> {
        let address = HeaderValue::try_from(peer.to_string()).ok()?;
        let forwarded_for = match peer {
            IpAddr::V4(v4) => format!("for={v4};"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";"),
        };
        Some(ForwardedPeer {
            address,
            forwarded_for,
        })
    }
}

/// The forwarding headers, set by the gateway alone: `X-Forwarded-For` gets the peer appended;
/// `X-Forwarded-Host` (from `Host`), `X-Forwarded-Proto`, `Forwarded` and `X-Real-IP` replace
/// whatever the client sent, in every spelling of their names.
pub(crate) fn set_forwarding_headers(headers: &mut http::HeaderMap, peer: Option<&ForwardedPeer>) {
    let host = headers.remove(HOST);
    remove_every_spelling_of(headers, &SET_BY_THE_GATEWAY);
    remove_other_spellings(headers, &X_FORWARDED_FOR);
    // RFC 7239: `for=` (an IPv6 address quoted, in brackets), `host=` quoted, `proto=`.
    let mut forwarded = String::with_capacity(64);
    if let Some(peer) = peer {
        // The chain the client sent (each value as it came), then the peer.
        let mut chain = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            if value.to_str().is_ok() {
                chain.extend_from_slice(value.as_bytes());
                chain.extend_from_slice(b", ");
            }
        }
        let forwarded_for = if chain.is_empty() {
            Some(peer.address.clone())
        } else {
            chain.extend_from_slice(peer.address.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
        };
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_REAL_IP, peer.address.clone());
        forwarded.push_str(&peer.forwarded_for);
    }
    if let Some(host) = host {
        // `"` and `\` never stand in a valid Host; such a value is left out of `Forwarded`.
        if let Some(text) = host.to_str().ok().filter(|t| !t.contains(['"', '\\'])) {
            forwarded.push_str("host=\"");
            forwarded.push_str(text);
            forwarded.push_str("\";");
        }
        headers.insert(X_FORWARDED_HOST, host);
    }
    forwarded.push_str("proto=http");
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded)) {
        headers.insert(FORWARDED, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

impl Service<Request<ClientBody>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ClientBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(request).await) })
    }
}
