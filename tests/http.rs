//! The layer in real servers over loopback sockets: a bare hyper service, and axum 0.8.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use portcullis::jwt::{Identity, JwtAuthLayer};
use tokio::net::TcpListener;
use tower::{Layer, service_fn};

/// A GET with an optional `Authorization`; returns the status, the challenge and the body.
async fn get(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    let (status, headers, body) = http_get(addr, path, &headers).await;
    let challenge = headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, body)
}

#[tokio::test]
async fn bare_hyper_service() {
    let layer = JwtAuthLayer::new(validator(clock(), 100));
    let service = layer.layer(service_fn(|req: Request<Incoming>| async move {
        let sub = req
            .extensions()
            .get::<Arc<Identity>>()
            .and_then(|identity| identity.subject().map(str::to_owned))
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(sub))))
    }));
    let addr = serve_loopback(service).await;

    let token = mint(jsonwebtoken::Algorithm::ES256, &claims("ada"));
    let bearer = format!("Bearer {token}");
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/", Some(&bearer)).await,
            (StatusCode::OK, None, "ada".into())
        );
    }
    let (status, challenge, body) = get(addr, "/", None).await;
    assert_eq!(
        (status, challenge.as_deref(), body.as_str()),
        (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="api""#), "")
    );
    let (status, challenge, _) = get(addr, "/", Some(&format!("{bearer}x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains(r#"error="invalid_token""#));
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_router_with_the_extractor() {
    use axum::Router;
    use axum::routing::get as route_get;
    use portcullis::jwt::Authenticated;

    async fn whoami(Authenticated(identity): Authenticated) -> String {
        format!(
            "{} {}",
            identity.subject().unwrap_or("?"),
            identity.scopes().join(",")
        )
    }
    async fn maybe(identity: Option<Authenticated>) -> String {
        identity.map_or("anonymous".to_owned(), |Authenticated(i)| {
            i.subject().unwrap_or("?").to_owned()
        })
    }

    let protected = Router::new()
        .route("/whoami", route_get(whoami))
        .layer(JwtAuthLayer::new(validator(clock(), 100)));
    let optional = Router::new()
        .route("/maybe", route_get(maybe))
        .layer(JwtAuthLayer::new(validator(clock(), 100)).optional());
    let unprotected = Router::new().route("/open", route_get(whoami));
    let app = protected.merge(optional).merge(unprotected);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let bearer = format!(
        "Bearer {}",
        mint(jsonwebtoken::Algorithm::RS256, &claims("ada"))
    );
    assert_eq!(
        get(addr, "/whoami", Some(&bearer)).await.2,
        "ada read,write"
    );
    assert_eq!(get(addr, "/whoami", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(addr, "/maybe", None).await.2, "anonymous");
    assert_eq!(get(addr, "/maybe", Some(&bearer)).await.2, "ada");
    assert_eq!(
        get(addr, "/maybe", Some("Bearer a.b.c")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A handler that asks for an identity no layer provided answers 401 itself.
    assert_eq!(
        get(addr, "/open", Some(&bearer)).await.0,
        StatusCode::UNAUTHORIZED
    );
}
