//! The side-by-side comparison, one command: `cargo run --release --bin compare` (in
//! `benches/compare`).
//!
//! The same requests — 1 000 users' RS256 and ES256 tokens, cycled — go through the same work
//! (a request id, JWT validation, a per-subject rate limit that never denies) around a no-op
//! service, in each stack a user could build:
//!
//! - portcullis, with its verified-token cache and with the cache disabled;
//! - jwt-authorizer 0.15 + tower_governor 0.8 + tower-http;
//! - tower-oauth2-resource-server 0.12 + tower_governor 0.8 + tower-http.
//!
//! Every stack reads its keys from the same JWKS, served over HTTP on loopback (discovery too
//! for tower-oauth2-resource-server). Each stack gets a warm-up pass (keys fetched, caches
//! filled), then timed passes; heap allocations are counted by an instrumented global allocator
//! (the same one for every stack) over the timed requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const USERS: usize = 1_000;
const AUDIENCE: &str = "api";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/keys");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key(name: &str) -> String {
    std::fs::read_to_string(format!("{KEYS}/{name}")).unwrap()
}

/// The JWKS (RSA and P-256 keys) and the tokens, half RS256, half ES256.
fn keys_and_tokens(issuer: &str) -> (Value, Vec<String>) {
    let rsa = EncodingKey::from_rsa_pem(key("rsa2048.pem").as_bytes()).unwrap();
    let p256 = EncodingKey::from_ec_pem(key("p256.pem").as_bytes()).unwrap();
    let jwk = |k: &EncodingKey, alg: Algorithm, kid: &str| {
        let mut jwk =
            serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(k, alg).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk
    };
    let jwks =
        json!({"keys": [jwk(&rsa, Algorithm::RS256, "rsa"), jwk(&p256, Algorithm::ES256, "p256")]});
    let tokens = (0..USERS)
        .map(|i| {
            let (alg, key, kid) = if i % 2 == 0 {
                (Algorithm::RS256, &rsa, "rsa")
            } else {
                (Algorithm::ES256, &p256, "p256")
            };
            let mut header = Header::new(alg);
            header.kid = Some(kid.into());
            let claims = json!({"iss": issuer, "aud": AUDIENCE, "sub": format!("user-{i}"),
                "iat": now(), "nbf": now(), "exp": now() + 3_600});
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        })
        .collect();
    (jwks, tokens)
}

/// A loopback server for the JWKS and OIDC discovery.
async fn serve_keys(jwks: Value) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (jwks, issuer) = (jwks.clone(), issuer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => json!({
                            "issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
                            "authorization_endpoint": format!("{issuer}/authorize"),
                            "response_types_supported": ["code"], "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256", "ES256"]}),
                            _ => jwks.clone(),
                        };
                        let mut response = Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body.to_string()),
                        ));
                        response
                            .headers_mut()
                            .insert("content-type", HeaderValue::from_static("application/json"));
                        async move { Ok::<_, Infallible>(response) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Row {
    name: &'static str,
    nanos: f64,
    allocations: f64,
    glue: &'static str,
}

/// Runs `requests` through `service` (ready, call, await each), timed and counted.
async fn measure<S, B, R>(service: &mut S, tokens: &[String], rounds: usize) -> (f64, f64)
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: std::fmt::Debug,
    B: Default,
{
    let make = |round: usize| -> Vec<Request<B>> {
        (0..tokens.len())
            .map(|i| {
                let token = &tokens[(i + round) % tokens.len()];
                let mut request = Request::new(B::default());
                *request.uri_mut() = "/orders/42".parse().unwrap();
                request.headers_mut().insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
                );
                request
            })
            .collect()
    };
    // Warm-up: keys fetched, caches and buckets made.
    for request in make(0) {
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mut best = f64::MAX;
    let mut allocations = 0.0;
    for round in 0..rounds {
        let requests = make(round + 1);
        let n = requests.len() as f64;
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        for request in requests {
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            debug_assert_eq!(response.status(), StatusCode::OK);
        }
        let elapsed = start.elapsed().as_nanos() as f64 / n;
        let stats = region.change();
        best = best.min(elapsed);
        allocations = stats.allocations as f64 / n;
    }
    (best, allocations)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let (jwks, _) = keys_and_tokens("x");
    let addr = serve_keys(jwks).await;
    let issuer = format!("http://{addr}");
    let (_, tokens) = keys_and_tokens(&issuer);
    let jwks_url = format!("{issuer}/jwks");
    let million = NonZeroU32::new(1_000_000_000).unwrap();
    let mut rows = Vec::new();
    // `compare portcullis` runs only the stacks whose name contains the argument (to profile).
    let only = std::env::args().nth(1).unwrap_or_default();
    let wanted = |name: &str| name.contains(only.as_str());

    // (a) portcullis: request id, JWT (cached, and uncached), per-subject rate limit.
    for (name, cache) in [
        ("portcullis (cached)", 10_000),
        ("portcullis (cache disabled)", 0),
    ] {
        if !wanted(name) {
            continue;
        }
        use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
        use portcullis::propagate::PropagateLayer;
        use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
        let keys = portcullis::keys::RemoteJwks::builder(jwks_url.as_str())
            .build()
            .await
            .unwrap();
        let validator = Validator::builder()
            .issuer(Issuer::new(issuer.as_str(), keys).audiences([AUDIENCE]))
            .cache_capacity(cache)
            .build()
            .unwrap();
        let limit = Limit::new(
            "per-user",
            "claim:sub".parse().unwrap(),
            Quota::per_second(million),
        )
        .unwrap();
        let mut service = PropagateLayer::new()
            .trace_context(false)
            .audit(false)
            .layer(
                JwtAuthLayer::new(validator).layer(RateLimitLayer::new([limit]).layer(
                    tower::service_fn(|_: Request<String>| async {
                        Ok::<_, Infallible>(Response::new(String::new()))
                    }),
                )),
            );
        let rounds = if cache > 0 { 20 } else { 3 };
        let (nanos, allocations) = measure(&mut service, &tokens, rounds).await;
        rows.push(Row {
            name,
            nanos,
            allocations,
            glue: "none",
        });
    }

    // (b) jwt-authorizer + tower_governor + tower-http.
    if wanted("jwt-authorizer") {
        use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, RegisteredClaims, Validation};
        use tower_governor::governor::GovernorConfigBuilder;
        use tower_governor::{GovernorError, GovernorLayer, key_extractor::KeyExtractor};
        use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

        /// Glue: tower_governor keys by subject only through a custom extractor that knows
        /// where jwt-authorizer put the claims (a jsonwebtoken 9 `TokenData`).
        #[derive(Clone)]
        struct Subject;
        impl KeyExtractor for Subject {
            type Key = String;
            fn extract<T>(&self, req: &Request<T>) -> Result<String, GovernorError> {
                req.extensions()
                    .get::<jsonwebtoken9::TokenData<RegisteredClaims>>()
                    .and_then(|t| t.claims.sub.clone())
                    .ok_or(GovernorError::UnableToExtractKey)
            }
        }
        let auth: Authorizer<RegisteredClaims> = JwtAuthorizer::from_jwks_url(&jwks_url)
            .validation(Validation::new().iss(&[issuer.as_str()]).aud(&[AUDIENCE]))
            .build()
            .await
            .unwrap();
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .key_extractor(Subject)
            .finish()
            .unwrap();
        // Glue: jwt-authorizer needs the service inside it to answer with axum 0.7's
        // `Response` (`S::Response: From<AuthError>`), while tower_governor 0.8 needs a body
        // with `From<GovernorError>` (axum 0.8's), even with an error handler; no body has
        // both, and the governor must sit inside the authorizer to see the claims. So a
        // response-mapping layer converts axum 0.8 bodies to axum 0.7 ones in between.
        type Body07 = axum07::body::Body;
        type Body08 = axum::body::Body;
        let inner = tower::service_fn(|_: Request<Body07>| async {
            Ok::<_, Infallible>(Response::new(Body08::empty()))
        });
        let governed = GovernorLayer::new(config).layer(inner);
        let bridged = tower::util::MapResponseLayer::new(|r: Response<Body08>| r.map(Body07::new))
            .layer(governed);
        let mut service = SetRequestIdLayer::x_request_id(MakeRequestUuid)
            .layer(PropagateRequestIdLayer::x_request_id().layer(auth.into_layer().layer(bridged)));
        let (nanos, allocations) = measure(&mut service, &tokens, 3).await;
        rows.push(Row {
            name: "jwt-authorizer + tower_governor + tower-http",
            nanos,
            allocations,
            glue: "a KeyExtractor reading jsonwebtoken 9's TokenData; a response-mapping layer from axum 0.8 to axum 0.7 bodies between the authorizer (From<AuthError>) and tower_governor (From<GovernorError>)",
        });
    }

    // (c) tower-oauth2-resource-server + tower_governor + tower-http.
    if wanted("tower-oauth2-resource-server") {
        use tower_governor::governor::GovernorConfigBuilder;
        use tower_governor::{GovernorError, GovernorLayer, key_extractor::KeyExtractor};
        use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
        use tower_oauth2_resource_server::claims::DefaultClaims;
        use tower_oauth2_resource_server::server::OAuth2ResourceServer;
        use tower_oauth2_resource_server::tenant::TenantConfiguration;

        /// Glue: a KeyExtractor reading the claims this middleware puts in the extensions.
        #[derive(Clone)]
        struct Subject;
        impl KeyExtractor for Subject {
            type Key = String;
            fn extract<T>(&self, req: &Request<T>) -> Result<String, GovernorError> {
                req.extensions()
                    .get::<DefaultClaims>()
                    .and_then(|c| c.sub.clone())
                    .ok_or(GovernorError::UnableToExtractKey)
            }
        }
        let server: OAuth2ResourceServer = OAuth2ResourceServer::builder()
            .add_tenant(
                TenantConfiguration::builder(issuer.as_str())
                    .audiences(&[AUDIENCE])
                    .build()
                    .await
                    .unwrap(),
            )
            .build()
            .await
            .unwrap();
        let config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .key_extractor(Subject)
            .finish()
            .unwrap();
        type Body = axum::body::Body;
        let inner = tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let mut service = SetRequestIdLayer::x_request_id(MakeRequestUuid).layer(
            PropagateRequestIdLayer::x_request_id().layer(
                server
                    .into_layer()
                    .layer(GovernorLayer::new(config).layer(inner)),
            ),
        );
        // The keys are fetched in the background after start: wait until a request passes.
        for _ in 0..100 {
            let request = Request::builder()
                .header("authorization", format!("Bearer {}", tokens[0]))
                .body(Body::empty())
                .unwrap();
            if service
                .ready()
                .await
                .unwrap()
                .call(request)
                .await
                .unwrap()
                .status()
                == StatusCode::OK
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (nanos, allocations) = measure(&mut service, &tokens, 3).await;
        rows.push(Row {
            name: "tower-oauth2-resource-server + tower_governor + tower-http",
            nanos,
            allocations,
            glue: "a KeyExtractor reading its DefaultClaims; a body with Default",
        });
    }

    let fastest_peer = rows
        .iter()
        .filter(|r| !r.name.starts_with("portcullis"))
        .map(|r| r.nanos)
        .fold(f64::MAX, f64::min);
    println!(
        "| stack | time per request | heap allocations per request | vs the fastest peer | glue a user writes |"
    );
    println!("|---|---|---|---|---|");
    for row in &rows {
        let time = if row.nanos >= 1_000.0 {
            format!("{:.1} µs", row.nanos / 1_000.0)
        } else {
            format!("{:.0} ns", row.nanos)
        };
        let ratio = if fastest_peer == f64::MAX || !row.name.starts_with("portcullis") {
            "—".to_owned()
        } else {
            format!("{:.1}× faster", fastest_peer / row.nanos)
        };
        println!(
            "| {} | {time} | {:.1} | {ratio} | {} |",
            row.name, row.allocations, row.glue
        );
    }
    println!();
    println!(
        "{USERS} users' tokens (RS256 and ES256 alternating), request id + JWT + per-subject rate limit, no-op service; best of the timed passes. {}",
        std::env::consts::ARCH
    );
}
