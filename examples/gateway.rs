//! Run with `cargo run --example gateway` (demo mode), or
//! `cargo run --example gateway -- --listen 127.0.0.1:8080`.
//!
//! A small identity-aware gateway: an embedded demo issuer (an ES256 key pair made at start),
//! routes with rules, and the whole stack — `PropagateLayer` (request id, trace context,
//! hop-by-hop headers, audit events), `JwtAuthLayer`, `AuthorizeLayer`, `MapClaimsLayer`
//! (identity headers and a signed assertion) and `RateLimitLayer` — in front of an echo
//! upstream that answers with the method, path and headers that reached it. The assertion's
//! JWKS is served at `/.well-known/portcullis/jwks.json`, metrics in Prometheus text format at
//! `/metrics`. It prints a valid token and curl lines, then `listening on http://ADDR`.
//! Audit events go to standard error (`RUST_LOG`-style filtering is left to real deployments).
//! SIGINT or SIGTERM stops accepting, finishes in-flight requests and exits 0.
//!
//! Policy files (`--policy FILE`) and the full proxy arrive with the policy module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, get};
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::authz::{Auth, AuthorizeLayer, Route, Routes};
use portcullis::claims::{AssertionSigner, MapClaimsLayer};
use portcullis::jwt::{Identity, Issuer, JwtAuthLayer, Validator};
use portcullis::keys::{Key, KeySet};
use portcullis::propagate::PropagateLayer;
use portcullis::rate_limit::{Limit, Quota};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

const ISSUER: &str = "https://demo.portcullis.local/";
const AUDIENCE: &str = "demo-api";

fn usage() -> ExitCode {
    eprintln!("usage: gateway [--listen ADDR]");
    ExitCode::from(2)
}

/// The echo upstream: what reached it, as JSON.
async fn echo(request: Request) -> axum::Json<serde_json::Value> {
    let mut headers = BTreeMap::new();
    for (name, value) in request.headers() {
        headers.insert(
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let subject = request
        .extensions()
        .get::<Arc<Identity>>()
        .and_then(|identity| identity.subject().map(str::to_owned));
    axum::Json(json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "headers": headers,
        "subject": subject,
    }))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().expect("a valid address");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(addr)) => match addr.parse() {
                Ok(addr) => listen = addr,
                Err(_) => return usage(),
            },
            ("--policy", _) => {
                eprintln!("policy files are not supported by this version of the example yet");
                return ExitCode::from(2);
            }
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

    // The demo issuer: a fresh ES256 key pair.
    portcullis::crypto::install();
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("a key");
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .expect("a key");
    let public = Key::ec(pair.public_key().as_ref())
        .expect("a P-256 point")
        .with_kid("demo-1");
    let validator = Validator::builder()
        .issuer(
            Issuer::new(ISSUER, KeySet::new([public]))
                .audiences([AUDIENCE])
                .leeway(Duration::from_secs(30)),
        )
        .build()
        .expect("a valid configuration");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-1".into());
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "demo-user", "iat": now, "exp": now + 3600,
        "scope": "read:orders write:orders"});
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref()))
        .expect("the demo token");

    let routes = Routes::new([
        Route::new("/health").expect("a pattern").auth(Auth::None),
        Route::new("/.well-known/portcullis/jwks.json")
            .expect("a pattern")
            .auth(Auth::None),
        Route::new("/metrics").expect("a pattern").auth(Auth::None),
        Route::new("/orders/**")
            .expect("a pattern")
            .methods([Method::POST, Method::PUT, Method::DELETE])
            .scopes_all(["write:orders"]),
        Route::new("/orders/**")
            .expect("a pattern")
            .scopes_any(["read:orders", "write:orders"]),
        Route::new("/admin/**")
            .expect("a pattern")
            .scopes_all(["admin"]),
    ]);
    let signer =
        AssertionSigner::generate_es256("https://gateway.demo.portcullis.local", "demo-upstream")
            .expect("a key");
    let jwks = signer.jwks();
    let mapping = MapClaimsLayer::new([("x-user-id", "sub"), ("x-scopes", "scope")])
        .expect("valid mappings")
        .remove_authorization(true)
        .assertion(signer);

    // 10 requests at once per subject (per client IP without a token), then one a second.
    let rate_limit = portcullis::rate_limit::RateLimitLayer::new([Limit::new(
        "per-subject",
        "claim:sub".parse().expect("a key"),
        Quota::per_minute(NonZeroU32::new(60).expect("non-zero"))
            .burst(NonZeroU32::new(10).expect("non-zero")),
    )
    .expect("a valid limit")]);

    let app = Router::new()
        .route("/{*path}", any(echo))
        .route("/", any(echo))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/.well-known/portcullis/jwks.json",
            get(move || async move { axum::Json(jwks) }),
        )
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .layer(
            tower::ServiceBuilder::new()
                .layer(PropagateLayer::new().remove_hop_by_hop(true))
                .layer(JwtAuthLayer::new(validator).routes(routes.clone()))
                .layer(AuthorizeLayer::new(routes))
                .layer(mapping)
                .layer(rate_limit),
        );

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("a bound address");
    println!("demo issuer: {ISSUER} (audience {AUDIENCE}, ES256, valid for an hour)");
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
    println!("# 429 with Retry-After once the burst of 10 is spent (RateLimit headers on each):");
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
    println!("listening on http://{addr}");

    match axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("server error: {err}");
            ExitCode::FAILURE
        }
    }
}
