//! The common case as the README shows it: JWTs verified with keys from a JWKS URL (a real
//! HTTP server on 127.0.0.1) and one per-subject limit, on an axum router, through a real
//! hyper connection — in five named types of this crate.
#![cfg(all(feature = "jwks", feature = "axum"))]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use common::jwks_server::JwksServer;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use jsonwebtoken::Algorithm as Alg;
use portcullis::prelude::*;
use serde_json::json;

#[tokio::test]
async fn jwks_url_and_a_per_subject_limit_on_an_axum_router() {
    let server = JwksServer::start(jwks(&[Alg::ES256])).await;

    // The set-up, as the README has it.
    let issuer = Issuer::jwks_url(server.issuer(), server.jwks_url())
        .await
        .unwrap()
        .audiences(["api"]);
    let app = Router::new()
        .route("/orders/{id}", get(|| async { "order" }))
        .layer(RateLimitLayer::new([Limit::per_subject(
            Quota::per_minute(2),
        )]))
        .layer(JwtAuthLayer::for_issuer(issuer).unwrap());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |sub: &str| {
        let claims = json!({
            "iss": server.issuer(), "aud": "api", "sub": sub, "iat": now, "exp": now + 600,
        });
        format!("Bearer {}", mint(Alg::ES256, &claims))
    };
    let (ada, bob) = (token("ada"), token("bob"));
    let mut send = async |bearer: Option<&str>| {
        let mut request = http::Request::get("/orders/7").header("host", "orders");
        if let Some(bearer) = bearer {
            request = request.header("authorization", bearer);
        }
        let response = client
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };

    assert_eq!(send(Some(&ada)).await, (200, "order".into()));
    assert_eq!(send(Some(&ada)).await.0, 200);
    assert_eq!(
        send(Some(&ada)).await.0,
        429,
        "ada's two a minute are spent"
    );
    assert_eq!(send(Some(&bob)).await.0, 200, "bob has his own");
    assert_eq!(send(None).await.0, 401);
    let mut forged = ada.clone();
    forged.pop();
    forged.push(if ada.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(send(Some(&forged)).await.0, 401);
    assert_eq!(server.fetches(), 1);
}
