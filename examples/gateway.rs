//! Run with `cargo run --example gateway` (demo mode), or
//! `cargo run --example gateway -- --policy FILE [--listen ADDR] [--upstream URL]`.
//!
//! A small identity-aware reverse proxy built only from the crate's public API: the policy file
//! in ([`PolicyHandle`], reloaded when the file changes or on SIGHUP), hyper on the front, a
//! hyper-util client to the upstream. Every request passes the policy's stack — request id and
//! trace context, token, route rules, identity headers and signed assertion, rate limits —
//! before it is forwarded; bodies stream through in both directions without buffering.
//! Hop-by-hop headers are removed both ways; the upstream gets `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `X-Forwarded-Host`. An upstream that cannot be reached answers 502,
//! one that does not answer within 30 s (`--upstream-timeout SECS`) answers 504, each with the
//! request id.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::policy::{Policy, PolicyHandle};
use portcullis::propagate::remove_hop_by_hop;
use portcullis::rate_limit::PeerAddr;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use tower::{Layer, Service, ServiceExt};

type Body = BoxBody<Bytes, hyper::Error>;

const DEMO_ISSUER: &str = "https://demo.portcullis.local/";
const DEMO_AUDIENCE: &str = "demo-api";

fn usage() -> ExitCode {
    eprintln!(
        "usage: gateway [--policy FILE] [--listen ADDR] [--upstream URL] [--upstream-timeout SECS]"
    );
    ExitCode::from(2)
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
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    timeout: Duration,
    handle: PolicyHandle,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl Proxy {
    async fn forward(self, mut request: Request<Incoming>) -> Response<Body> {
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
            "/metrics" => return Response::new(full(self.metrics.render())),
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
        let headers = request.headers_mut();
        if let Some(host) = headers.remove(HOST) {
            headers.insert("x-forwarded-host", host);
        }
        if let Some(peer) = request.extensions().get::<PeerAddr>().map(|p| p.0.ip()) {
            let headers = request.headers_mut();
            let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {peer}"),
                None => peer.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert("x-forwarded-for", value);
            }
        }
        request
            .headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => {
                let mut response = response.map(|body| body.boxed());
                remove_hop_by_hop(response.headers_mut());
                response
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

impl Service<Request<Incoming>> for Proxy {
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

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--policy", Some(path)) => policy_path = Some(PathBuf::from(path)),
            ("--listen", Some(addr)) => listen = Some(addr),
            ("--upstream", Some(url)) => upstream = Some(url),
            ("--upstream-timeout", Some(secs)) => match secs.parse() {
                Ok(secs) => timeout = Duration::from_secs(secs),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }

    // Metrics first, so the layers' counters reach this recorder; audit events to stderr.
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("cannot install the metrics recorder: {err}");
            return ExitCode::FAILURE;
        }
    };
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
            "# 429 with Retry-After once the burst of 10 is spent (RateLimit headers on each):"
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
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    // Before any layer adds headers: a client's Connection header can only
                    // remove its own copies.
                    remove_hop_by_hop(request.headers_mut());
                    let app = app.clone();
                    async move { app.oneshot(request).await }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    if token.is_some() {
        let _ = std::fs::remove_dir_all(&demo_dir);
    }
    ExitCode::SUCCESS
}
