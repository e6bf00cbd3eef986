//! gRPC through the layers over a real socket: tonic's server with the standard health service
//! behind JwtAuth, Authorize and RateLimit, called by tonic's generated client, unary and
//! server-streaming. Every rejection reaches the client as its gRPC status, not a guess from the
//! HTTP status.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU32;

use common::jwks_server::{JwksServer, Mode};
use common::*;
use jsonwebtoken::Algorithm as Alg;
use portcullis::authz::{AuthorizeLayer, Route, Routes};
use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
use portcullis::keys::{RemoteJwks, Startup};
use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
use serde_json::json;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

const ISS_DOWN: &str = "https://down.example/";

/// Serves the health service behind the layers; returns its address.
async fn serve() -> SocketAddr {
    // An issuer whose key set cannot be fetched: requests signed for it meet 503.
    let down = JwksServer::start(jwks(&[Alg::ES256])).await;
    down.set_mode(Mode::Down);
    let unavailable = RemoteJwks::builder(down.jwks_url())
        .startup_attempts(1)
        .startup(Startup::StartEmpty)
        .build()
        .await
        .unwrap();
    std::mem::forget(down);
    let validator = Validator::builder()
        .issuer(Issuer::new(ISS_A, keys_a()).audiences(["api"]))
        .issuer(Issuer::new(ISS_DOWN, unavailable).audiences(["api"]))
        .clock(clock())
        .build()
        .unwrap();
    let routes = Routes::new([Route::new("/grpc.health.v1.Health/**")
        .unwrap()
        .scopes_all(["health"])]);
    let limit = Limit::new(
        "default",
        "claim:sub".parse().unwrap(),
        Quota::per_minute(NonZeroU32::new(3).unwrap()),
    )
    .unwrap();
    let layers = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(validator).routes(routes.clone()))
        .layer(AuthorizeLayer::new(routes))
        .layer(RateLimitLayer::new([limit]).clock(clock()));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    std::mem::forget(reporter);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layers)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

fn token(iss: &str, sub: &str, scope: &str) -> String {
    let mut c = claims(sub);
    c["iss"] = json!(iss);
    c["scope"] = json!(scope);
    mint(Alg::ES256, &c)
}

fn request(tokens: &[&str]) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    for token in tokens {
        request
            .metadata_mut()
            .append("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_grpc_statuses_for_unary_and_streaming_calls() {
    let addr = serve().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let health = token(ISS_A, "ada", "health");

    // Allowed.
    let ok = client.check(request(&[&health])).await.unwrap();
    assert_eq!(
        ok.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let code = |result: Result<_, tonic::Status>| match result {
        Ok(_) => panic!("allowed"),
        Err(status) => (status.code(), status.message().to_owned()),
    };
    // No token, a bad one: UNAUTHENTICATED, as the server said (no "grpc-status header
    // missing" guess).
    assert_eq!(
        code(client.check(request(&[])).await),
        (Code::Unauthenticated, "unauthenticated".to_owned())
    );
    assert_eq!(
        code(client.check(request(&["a.b.c"])).await).0,
        Code::Unauthenticated
    );
    // A valid token without the scope: PERMISSION_DENIED.
    let other = token(ISS_A, "bob", "other");
    assert_eq!(
        code(client.check(request(&[&other])).await).0,
        Code::PermissionDenied
    );
    // The token twice: INVALID_ARGUMENT.
    assert_eq!(
        code(client.check(request(&[&health, &health])).await).0,
        Code::InvalidArgument
    );
    // Keys that cannot be fetched: UNAVAILABLE.
    let stranded = token(ISS_DOWN, "ada", "health");
    assert_eq!(
        code(client.check(request(&[&stranded])).await).0,
        Code::Unavailable
    );

    // A server-streaming call is refused at once, with its status, before any message.
    let watch = client.watch(request(&[])).await.unwrap_err();
    assert_eq!(watch.code(), Code::Unauthenticated);
    let mut stream = client
        .watch(request(&[&health]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    // Rate limited (3 a minute for ada, 2 used): RESOURCE_EXHAUSTED with the pushback, never
    // UNAVAILABLE, which retry policies retry.
    let _ = client.check(request(&[&health])).await;
    let limited = client.check(request(&[&health])).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(limited.message(), "rate limited");
    let pushback = limited
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a retry pushback");
    assert_eq!(pushback, 20_000);
}
