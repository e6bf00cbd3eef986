//! Run with `cargo run --example grpc`.
//!
//! A tonic gRPC server (the standard health-checking service) behind the crate's layers, with
//! no glue: `Server::builder().layer(…)`. A demo issuer signs tokens with a key made at start;
//! the health service needs the `health` scope and allows 5 calls a minute per subject. The
//! example calls itself with tonic's client and prints the status of each call — `OK`, then
//! `UNAUTHENTICATED`, `PERMISSION_DENIED` and `RESOURCE_EXHAUSTED` as gRPC statuses (with the
//! retry pushback), not HTTP statuses a client would have to guess from — then prints a token
//! for your own client and serves until Ctrl-C.

use std::num::NonZeroU32;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use portcullis::authz::{AuthorizeLayer, Route, Routes};
use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
use portcullis::keys::KeySet;
use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

const ISSUER: &str = "https://demo.portcullis.local/";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The demo issuer: an HMAC secret made at start.
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| "no randomness")?;
    let validator = Validator::builder()
        .issuer(Issuer::new(ISSUER, KeySet::hmac(&secret)?).audiences(["health"]))
        .build()?;
    let routes = Routes::new([Route::new("/grpc.health.v1.Health/**")?.scopes_all(["health"])]);
    let limit = Limit::new(
        "default",
        "claim:sub".parse()?,
        Quota::per_minute(NonZeroU32::new(5).ok_or("zero")?),
    )?;
    let layers = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(validator).routes(routes.clone()))
        .layer(AuthorizeLayer::new(routes))
        .layer(RateLimitLayer::new([limit]));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layers)
            .add_service(health)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            ),
    );

    portcullis::crypto::install();
    let key = EncodingKey::from_secret(&secret).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = |sub: &str, scope: &str| {
        let claims = json!({"iss": ISSUER, "aud": "health", "sub": sub, "scope": scope,
            "iat": now, "exp": now + 3600});
        jsonwebtoken::encode(&Header::default(), &claims, &key)
    };
    let allowed = token("demo-user", "health")?;
    let other = token("other-user", "read")?;

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let call = |token: Option<&str>| {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(Ok(value)) = token.map(|token| format!("Bearer {token}").parse()) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    };
    let show = |what: &str, result: Result<tonic::Response<_>, tonic::Status>| match result {
        Ok(response) => {
            let response: tonic_health::pb::HealthCheckResponse = response.into_inner();
            println!("{what}: OK, serving status {}", response.status);
        }
        Err(status) => {
            let pushback = status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok())
                .map(|ms| format!(", retry in {ms} ms"))
                .unwrap_or_default();
            println!(
                "{what}: {:?} ({}){pushback}",
                status.code(),
                status.message()
            );
        }
    };
    println!("gRPC health service behind portcullis on {addr}");
    show("with a token", client.check(call(Some(&allowed))).await);
    show("without a token", client.check(call(None)).await);
    show(
        "without the health scope",
        client.check(call(Some(&other))).await,
    );
    for _ in 0..4 {
        let _ = client.check(call(Some(&allowed))).await;
    }
    show(
        "past 5 calls a minute",
        client.check(call(Some(&allowed))).await,
    );
    println!();
    println!("token (scope health, valid for an hour), for your own gRPC client: {allowed}");
    println!("serving grpc.health.v1.Health on {addr} until Ctrl-C");
    server.await??;
    Ok(())
}
