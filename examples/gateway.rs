//! Run with `cargo run --example gateway` (demo mode), or
//! `cargo run --example gateway -- --policy FILE [--listen ADDR] [--upstream URL]`
//! `[--upstream-timeout SECS] [--header-read-timeout SECS] [--idle-timeout SECS]`
//! `[--max-connections N] [--max-header-bytes N] [--underscore-headers drop|keep]`.
//!
//! A small identity-aware reverse proxy built only from the crate's public API: the policy file
//! in ([`PolicyHandle`], reloaded when the file changes or on SIGHUP), hyper on the front, a
//! hyper-util client to the upstream. Every request passes the policy's stack — request id and
//! trace context, token, route rules, identity headers and signed assertion, rate limits —
//! before it is forwarded; bodies stream through in both directions without buffering.
//! Hop-by-hop headers are removed both ways; the upstream gets `X-Forwarded-For` (the peer
//! appended), and `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` set by
//! the gateway alone (a client's copies are replaced). Headers only a proxy may set are never
//! taken from a client: `X-Original-URL`, `X-Rewrite-URL` and `X-Original-URI` (path overrides
//! that IIS, Symfony and nginx setups honour) are removed, and so is every client header whose
//! name holds `_` (`X_User_Id`, which CGI-style servers read as `X-User-Id`), unless
//! `--underscore-headers keep`. A request that cannot be read one way is answered 400: an
//! HTTP/1.1 request without exactly one `Host`, a request body whose framing breaks. An
//! upstream that cannot be reached answers 502, one that does not answer within 30 s
//! (`--upstream-timeout SECS`) answers 504, each with the request id.
//!
//! Connections are bounded: a request's header must arrive within 10 s of the connection
//! waiting for it (`--header-read-timeout`; this also closes kept-alive connections that send
//! nothing more), a connection that moves no byte either way for 60 s is closed
//! (`--idle-timeout`), the request line and header may hold 64 KiB at most
//! (`--max-header-bytes`, 431 past it), and at most `--max-connections` are served at once
//! (default: half the process's open-file limit less a reserve, at most 10 000), the rest wait
//! in the listen queue. An accept error (out of descriptors) is logged and retried with
//! back-off. The `[server]` section of the policy sets the same values; flags win.
//!
//! The gateway itself answers `/health`, `/metrics` (Prometheus text format) and
//! `/.well-known/portcullis/jwks.json` (the keys that verify the identity assertion) — behind
//! the policy like everything else, so a policy makes them public with `auth = "none"` routes.
//! Without `--upstream` (and no `upstream` in the file) requests go to a built-in echo upstream
//! on another loopback port, which answers with the method, path and headers that reached it.
//!
//! With no arguments, demo mode: an embedded demo issuer (an ES256 key pair made at start), a
//! sample policy written to a temporary folder, and a printed token with curl lines that show
//! 200, 401, 403 and 429. Audit events go to standard error. It prints
//! `listening on http://ADDR` when ready; SIGINT or SIGTERM stops accepting, finishes in-flight
//! requests and exits 0.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::headers::{remove_every_spelling, remove_other_spellings, remove_underscored};
use portcullis::policy::{Policy, PolicyHandle, ServerSettings};
use portcullis::propagate::remove_hop_by_hop;
use portcullis::rate_limit::PeerAddr;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

type Body = BoxBody<Bytes, hyper::Error>;

const DEMO_ISSUER: &str = "https://demo.portcullis.local/";
const DEMO_AUDIENCE: &str = "demo-api";

fn usage() -> ExitCode {
    eprintln!(
        "usage: gateway [--policy FILE] [--listen ADDR] [--upstream URL] [--upstream-timeout SECS]\n\
         \x20              [--header-read-timeout SECS] [--idle-timeout SECS] [--max-connections N]\n\
         \x20              [--max-header-bytes N] [--underscore-headers drop|keep]"
    );
    ExitCode::from(2)
}

/// Headers that override the path a server routes on (IIS URL Rewrite, Symfony, nginx
/// setups): a client's copy would route the upstream past the path the gate checked.
const PATH_OVERRIDES: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// The request body as it reaches the upstream: a failure to read it from the client (broken
/// chunked framing, a connection cut mid-body) is marked as the client's, so it answers 400,
/// not 502.
type ClientBody =
    http_body_util::combinators::MapErr<Incoming, fn(hyper::Error) -> ClientBodyError>;

/// A failure reading the client's request body.
#[derive(Debug)]
struct ClientBodyError(hyper::Error);

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
fn caused_by_client(error: &(dyn std::error::Error + 'static)) -> bool {
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
fn admit<B>(request: &mut Request<B>, keep_underscore_headers: bool) -> Result<(), &'static str> {
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
    for name in PATH_OVERRIDES {
        remove_every_spelling(headers, &HeaderName::from_static(name));
    }
    Ok(())
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
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
struct Proxy {
    client: Client<HttpConnector, ClientBody>,
    upstream: Uri,
    timeout: Duration,
    handle: PolicyHandle,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
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
        // The upstream's address, with its path prefix, and the request's path and query.
        let base = self.upstream.path().trim_end_matches('/');
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme(self.upstream.scheme_str().unwrap_or("http"))
            .authority(self.upstream.authority().map_or("", |a| a.as_str()))
            .path_and_query(format!("{base}{path}"))
            .build();
        let Ok(uri) = uri else {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "request_id": request_id()}),
            );
        };
        *request.uri_mut() = uri;
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        set_forwarding_headers(request.headers_mut(), peer);
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

/// The forwarding headers, set by the gateway alone: `X-Forwarded-For` gets the peer appended;
/// `X-Forwarded-Host` (from `Host`), `X-Forwarded-Proto`, `Forwarded` and `X-Real-IP` replace
/// whatever the client sent, in every spelling of their names.
fn set_forwarding_headers(headers: &mut http::HeaderMap, peer: Option<std::net::IpAddr>) {
    let host = headers.remove(HOST);
    for name in [
        "x-forwarded-host",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
    ] {
        remove_every_spelling(headers, &HeaderName::from_static(name));
    }
    let forwarded_for = HeaderName::from_static("x-forwarded-for");
    remove_other_spellings(headers, &forwarded_for);
    // RFC 7239: `for=` (an IPv6 address quoted, in brackets), `host=` quoted, `proto=`.
    let mut forwarded = Vec::new();
    if let Some(peer) = peer {
        let mut chain: Vec<String> = headers
            .get_all(&forwarded_for)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        chain.push(peer.to_string());
        if let Ok(value) = HeaderValue::from_str(&chain.join(", ")) {
            headers.insert(&forwarded_for, value);
        }
        if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
            headers.insert("x-real-ip", value);
        }
        forwarded.push(match peer {
            std::net::IpAddr::V4(v4) => format!("for={v4}"),
            std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        });
    }
    if let Some(host) = host {
        // `"` and `\` never stand in a valid Host; such a value is left out of `Forwarded`.
        if let Some(text) = host.to_str().ok().filter(|t| !t.contains(['"', '\\'])) {
            forwarded.push(format!("host=\"{text}\""));
        }
        headers.insert("x-forwarded-host", host);
    }
    forwarded.push("proto=http".to_owned());
    if let Ok(value) = HeaderValue::from_str(&forwarded.join(";")) {
        headers.insert("forwarded", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
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

/// The echo upstream: answers with what reached it, as JSON.
async fn start_echo() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let mut headers = BTreeMap::new();
                    for (name, value) in request.headers() {
                        headers.insert(
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        );
                    }
                    let path = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let method = request.method().as_str().to_owned();
                    // Read the body through, so a streamed upload is consumed.
                    let size = request
                        .into_body()
                        .collect()
                        .await
                        .map_or(0, |b| b.to_bytes().len());
                    let body = json!({"method": method, "path": path, "headers": headers, "body_bytes": size});
                    Ok::<_, Infallible>(json_response(StatusCode::OK, body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Bucket bounds of `portcullis_decision_seconds`, in seconds.
const DECISION_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// How often the metrics recorder folds recorded samples into its histograms.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The first and the longest wait before accepting again after an accept error.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How the gateway treats its connections: flags, else the policy's `[server]`, else defaults.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_header_bytes: usize,
    keep_underscore_headers: bool,
}

impl ConnectionLimits {
    fn new(flags: &ServerSettings, policy: &ServerSettings) -> Self {
        let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            header_read_timeout: flags
                .header_read_timeout
                .or(policy.header_read_timeout)
                .unwrap_or(Duration::from_secs(10)),
            idle_timeout: flags
                .idle_timeout
                .or(policy.idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            max_connections: flags
                .max_connections
                .or(policy.max_connections)
                .map_or_else(default_max_connections, to_usize),
            // hyper reads at least 8 KiB at a time: a smaller cap could not be kept.
            max_header_bytes: flags
                .max_header_bytes
                .or(policy.max_header_bytes)
                .map_or(64 * 1024, to_usize)
                .max(8 * 1024),
            keep_underscore_headers: flags
                .keep_underscore_headers
                .or(policy.keep_underscore_headers)
                .unwrap_or(false),
        }
    }
}

/// Half the process's open-file limit less a reserve (each connection may hold one to the
/// upstream too), between 16 and 10 000; 1 024 where the limit cannot be read.
fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    soft.map_or(1024, |n| (n.saturating_sub(64) / 2).clamp(16, 10_000))
}

/// A connection that fails with `TimedOut` once no byte has moved either way for `limit`:
/// a stalled upload, or a client that stops reading its response.
struct IdleTimeout {
    io: tokio::net::TcpStream,
    limit: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(io: tokio::net::TcpStream, limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            io,
            limit,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// After a poll of the stream: notes progress, or while it is pending, fails once the
    /// limit has passed since the last progress. The timer is reset only when it fires early.
    fn check<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match poll {
            Poll::Ready(Ok(value)) => {
                if progressed(&value) {
                    self.last = tokio::time::Instant::now();
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => loop {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = self.last + self.limit;
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                }
                self.timer.as_mut().reset(deadline);
            },
        }
    }
}

impl tokio::io::AsyncRead for IdleTimeout {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        let after = buf.filled().len();
        this.check(cx, poll, |_| after > before)
    }
}

impl tokio::io::AsyncWrite for IdleTimeout {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The demo: an issuer key pair and an assertion key in a temporary folder, a sample policy
/// beside them, and a token. Returns the policy file and the token.
fn demo(dir: &Path) -> Result<(PathBuf, String), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot make a key")?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot make a key")?;
    // SubjectPublicKeyInfo for a P-256 point: the fixed DER prefix, then the point.
    let mut spki = hex_prefix();
    spki.extend_from_slice(pair.public_key().as_ref());
    let assertion = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot make a key")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write("demo-issuer.pub.pem", pem("PUBLIC KEY", &spki))?;
    write("assertion.pem", pem("PRIVATE KEY", assertion.as_ref()))?;
    let policy = format!(
        r#"# The demo policy: edit it while the gateway runs, and it reloads.
[token]
forward = false                     # the upstream gets identity headers, not the token

[[issuers]]
issuer = "{DEMO_ISSUER}"
audiences = ["{DEMO_AUDIENCE}"]
algorithms = ["ES256"]
leeway = "30s"
keys = {{ pem_files = ["demo-issuer.pub.pem"] }}

[[routes]]
path = "/health"
auth = "none"
[[routes]]
path = "/metrics"
auth = "none"
[[routes]]
path = "/.well-known/portcullis/jwks.json"
auth = "none"
[[routes]]
path = "/orders/**"
methods = ["POST", "PUT", "DELETE"]
scopes_all = ["write:orders"]
[[routes]]
path = "/orders/**"
scopes_any = ["read:orders", "write:orders"]
[[routes]]
path = "/admin/**"
scopes_all = ["admin"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "60/min"
burst = 10

[upstream_headers]
x-user-id = "sub"
x-scopes = "scope"

[assertion]
key_file = "assertion.pem"
issuer = "https://gateway.demo.portcullis.local"
audience = "demo-upstream"
"#
    );
    write("policy.toml", policy)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-1".into());
    let claims = json!({"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "demo-user", "iat": now,
        "exp": now + 3600, "scope": "read:orders write:orders"});
    portcullis::crypto::install();
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref()))
        .map_err(|e| e.to_string())?;
    Ok((dir.join("policy.toml"), token))
}

fn hex_prefix() -> Vec<u8> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (65 bytes) }
    vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    let (mut policy_path, mut listen, mut upstream) = (None, None, None);
    let mut timeout = Duration::from_secs(30);
    let mut flags = ServerSettings::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let secs = || {
            value
                .as_deref()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
        };
        let count = || {
            value
                .as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| *n > 0)
        };
        match (arg.as_str(), value.clone()) {
            ("--policy", Some(path)) => policy_path = Some(PathBuf::from(path)),
            ("--listen", Some(addr)) => listen = Some(addr),
            ("--upstream", Some(url)) => upstream = Some(url),
            ("--upstream-timeout", Some(_)) => match secs() {
                Some(secs) => timeout = secs,
                None => return usage(),
            },
            ("--header-read-timeout", Some(_)) if secs().is_some() => {
                flags.header_read_timeout = secs();
            }
            ("--idle-timeout", Some(_)) if secs().is_some() => flags.idle_timeout = secs(),
            ("--max-connections", Some(_)) if count().is_some() => flags.max_connections = count(),
            ("--max-header-bytes", Some(_)) if count().is_some() => {
                flags.max_header_bytes = count();
            }
            ("--underscore-headers", Some(keep)) if keep == "keep" || keep == "drop" => {
                flags.keep_underscore_headers = Some(keep == "keep");
            }
            _ => return usage(),
        }
    }

    // Metrics first, so the layers' counters reach this recorder; audit events to stderr.
    // The decision latency as a histogram (buckets add up across replicas; the exporter's
    // default, a summary, does not), from 5 µs to 100 ms.
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("portcullis_decision_seconds".into()),
            &DECISION_BUCKETS,
        )
        .and_then(|builder| builder.install_recorder())
    {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("cannot install the metrics recorder: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The recorder keeps each latency sample until its upkeep folds them into the histogram:
    // without it, memory grows with every request for as long as nobody scrapes /metrics.
    {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        });
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();

    let demo_dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    let (path, token) = match policy_path {
        Some(path) => (path, None),
        None => match demo(&demo_dir) {
            Ok((path, token)) => (path, Some(token)),
            Err(err) => {
                eprintln!("cannot set up the demo: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    let handle = match PolicyHandle::from_file(&path).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let policy = Policy::from_file(&path).ok();
    let _watcher = handle.watch(Duration::from_secs(2));
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match handle.reload().await {
                    Ok(changed) => eprintln!("policy reloaded on SIGHUP (changed: {changed})"),
                    Err(err) => eprintln!("policy refused on SIGHUP: {err}"),
                }
            }
        });
    }

    let limits = ConnectionLimits::new(
        &flags,
        &policy.as_ref().map(Policy::server).unwrap_or_default(),
    );
    let listen = listen
        .or_else(|| policy.as_ref().and_then(|p| p.listen().map(str::to_owned)))
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let upstream = match upstream.or_else(|| {
        policy
            .as_ref()
            .and_then(|p| p.upstream().map(str::to_owned))
    }) {
        Some(url) => url,
        None => match start_echo().await {
            Ok(addr) => format!("http://{addr}"),
            Err(err) => {
                eprintln!("cannot start the echo upstream: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    let upstream: Uri = match upstream.parse() {
        Ok(uri) if matches!(Uri::scheme_str(&uri), Some("http")) => uri,
        _ => {
            eprintln!("--upstream must be an http:// URL, not {upstream:?}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("a bound address");

    let proxy = Proxy {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream: upstream.clone(),
        timeout,
        handle: handle.clone(),
        metrics,
    };
    let app = handle.layer().layer(proxy);

    if let Some(token) = &token {
        println!("demo issuer: {DEMO_ISSUER} (audience {DEMO_AUDIENCE}, ES256, valid for an hour)");
        println!("policy: {} (edit it: it reloads)", path.display());
        println!("token: {token}");
        println!();
        println!("# 200, the echo upstream shows what reached it:");
        println!("curl -i -H 'Authorization: Bearer {token}' http://{addr}/orders/42");
        println!("# 401, no token:");
        println!("curl -i http://{addr}/orders/42");
        println!("# 401 invalid_token, a tampered token:");
        println!("curl -i -H 'Authorization: Bearer {token}x' http://{addr}/orders/42");
        println!("# 403 insufficient_scope, the token lacks the admin scope:");
        println!("curl -i -H 'Authorization: Bearer {token}' http://{addr}/admin/users");
        println!("# the upstream never sees a client's x-user-id; it gets the token's subject:");
        println!(
            "curl -i -H 'Authorization: Bearer {token}' -H 'X-User-Id: admin' http://{addr}/orders/42"
        );
        println!(
            "# 429 with Retry-After once demo-user's burst of 10 is spent (the 200s above count\n\
             # too: after them, 8 more 200s, then 429s; RateLimit headers on each):"
        );
        println!(
            "for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'Authorization: Bearer {token}' http://{addr}/orders/42; done; echo"
        );
        println!("# decisions, rate-limit results and latency, in Prometheus text format:");
        println!("curl -s http://{addr}/metrics");
        println!("# the keys that verify the x-portcullis-assertion header the upstream receives:");
        println!("curl -i http://{addr}/.well-known/portcullis/jwks.json");
        println!("# 200, a public route:");
        println!("curl -i http://{addr}/health");
        println!();
    }
    println!("upstream: {upstream}");
    println!("listening on http://{addr}");

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = pin!(shutdown_signal());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        // A free place first: past the cap, connections wait in the listen queue.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(error) => {
                // Out of descriptors (EMFILE) and the like: retrying at once would spin.
                tracing::warn!(target: "gateway", %error, retry_in_ms = backoff.as_millis() as u64, "cannot accept a connection");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let app = app.clone();
        let keep_underscore_headers = limits.keep_underscore_headers;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            let admitted = admit(&mut request, keep_underscore_headers);
            let app = app.clone();
            async move {
                if let Err(reason) = admitted {
                    return Ok(json_response(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "bad_request", "reason": reason}),
                    ));
                }
                let request = request.map(|body| {
                    body.map_err(ClientBodyError as fn(hyper::Error) -> ClientBodyError)
                });
                app.oneshot(request).await
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .serve_connection(
                TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    if token.is_some() {
        let _ = std::fs::remove_dir_all(&demo_dir);
    }
    ExitCode::SUCCESS
}
