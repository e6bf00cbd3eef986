//! Claims to upstream headers: the client can never supply an identity header.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::Algorithm as Alg;
use portcullis::claims::MapClaimsLayer;
use portcullis::jwt::{Identity, JwtAuthLayer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, service_fn};

fn mapping() -> MapClaimsLayer {
    MapClaimsLayer::new([
        ("x-user-id", "sub"),
        ("x-tenant", "org.id"),
        ("x-roles", "realm_access.roles"),
        ("x-tier", r#"["https://example.com/tier"]"#),
        ("x-email", "email"),
    ])
    .unwrap()
}

fn identity(extra: serde_json::Value) -> Identity {
    let mut c = claims("ada");
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    validator(clock(), 0)
        .validate_uncached(mint(Alg::ES256, &c).as_bytes())
        .unwrap()
}

fn spoofed() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("X-User-Id", "admin"),
        ("x-user-id", "root"),
        ("X-USER-ID", "eve"),
        ("x-tenant", "other-tenant"),
        ("X-Roles", "admin"),
        ("x-email", "ceo@example.com"),
        ("x-unrelated", "kept"),
    ] {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    headers
}

#[test]
fn client_copies_are_removed_and_identity_headers_set() {
    let id = identity(
        json!({"org": {"id": "acme"}, "realm_access": {"roles": ["user", "ops"]},
        "https://example.com/tier": "gold"}),
    );
    let mut headers = spoofed();
    mapping().apply(&mut headers, Some(&id));
    let all = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-user-id"), ["ada"]);
    assert_eq!(all("x-tenant"), ["acme"]);
    assert_eq!(all("x-roles"), ["user,ops"]);
    assert_eq!(all("x-tier"), ["gold"]);
    assert!(
        all("x-email").is_empty(),
        "a missing claim leaves the header unset, never the client's"
    );
    assert_eq!(all("x-unrelated"), ["kept"]);
}

#[test]
fn without_an_identity_the_client_copies_are_still_removed() {
    let mut headers = spoofed();
    mapping().apply(&mut headers, None);
    for name in ["x-user-id", "x-tenant", "x-roles", "x-email"] {
        assert!(headers.get(name).is_none(), "{name}");
    }
}

#[test]
fn hostile_claim_values_cannot_inject_headers() {
    let id = identity(json!({"sub": "ada\r\nx-admin: true", "org": {"id": {"nested": 1}}}));
    let mut headers = HeaderMap::new();
    mapping().apply(&mut headers, Some(&id));
    assert_eq!(headers["x-user-id"], "ada%0D%0Ax-admin: true");
    assert!(headers.get("x-tenant").is_none(), "objects render nothing");
    assert!(headers.get("x-admin").is_none());
}

#[test]
fn the_authorization_header_can_be_hidden() {
    let id = identity(json!({}));
    let mut headers = HeaderMap::new();
    headers.insert("authorization", "Bearer x".parse().unwrap());
    mapping().apply(&mut headers, Some(&id));
    assert!(headers.contains_key("authorization"));
    mapping()
        .remove_authorization(true)
        .apply(&mut headers, Some(&id));
    assert!(!headers.contains_key("authorization"));
}

#[test]
fn values_are_rendered_once_per_cached_token() {
    let validator = validator(clock(), 10);
    let token = mint(Alg::ES256, &claims("ada"));
    let first = validator.validate(token.as_bytes()).unwrap();
    let layer = mapping();
    let mut headers = HeaderMap::new();
    layer.apply(&mut headers, Some(&first));
    let second = validator.validate(token.as_bytes()).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    let mut again = HeaderMap::new();
    layer.apply(&mut again, Some(&second));
    // The same bytes, not a re-rendering: HeaderValue clones share their storage.
    assert_eq!(
        headers["x-user-id"].as_bytes().as_ptr(),
        again["x-user-id"].as_bytes().as_ptr()
    );
    // A second mapping layer still works; it renders for itself.
    let other = MapClaimsLayer::new([("x-subject", "sub")]).unwrap();
    let mut third = HeaderMap::new();
    other.apply(&mut third, Some(&second));
    assert_eq!(third["x-subject"], "ada");
}

#[test]
fn bad_configurations() {
    assert!(MapClaimsLayer::new([("x user", "sub")]).is_err());
    assert!(MapClaimsLayer::new([("x-a", "sub"), ("X-A", "iss")]).is_err());
    assert!(MapClaimsLayer::new([("authorization", "sub")]).is_err());
    assert!(MapClaimsLayer::new([("x-a", "a..b")]).is_err());
}

#[tokio::test]
async fn spoofing_over_a_real_socket() {
    let echo = service_fn(|req: Request<Incoming>| async move {
        let mut seen = serde_json::Map::new();
        for name in req.headers().keys() {
            let values: Vec<String> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            seen.insert(name.as_str().to_owned(), json!(values));
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
            serde_json::Value::Object(seen).to_string(),
        ))))
    });
    let service = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(validator(clock(), 10)))
        .layer(mapping().remove_authorization(true))
        .service(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = TowerToHyperService::new(service);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let mut c = claims("ada");
    c["org"] = json!({"id": "acme"});
    let token = mint(Alg::RS256, &c);
    let raw = format!(
        "GET /orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nX-User-Id: admin\r\nx-USER-id: root\r\nX-User-ID: eve\r\nX-TENANT: other\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["x-user-id"], json!(["ada"]), "{response}");
    assert_eq!(seen["x-tenant"], json!(["acme"]));
    assert!(seen.get("authorization").is_none());
}

mod assertion {
    use std::time::Duration;

    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
    use portcullis::claims::AssertionSigner;

    /// Verifies an assertion the way an upstream would: jsonwebtoken with the published JWKS.
    fn try_verify(
        signer: &AssertionSigner,
        token: &str,
        audience: &str,
    ) -> jsonwebtoken::errors::Result<serde_json::Value> {
        let jwks: JwkSet = serde_json::from_value(signer.jwks()).unwrap();
        let header = decode_header(token)?;
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("the kid is published");
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&["https://gateway.example"]);
        Ok(decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims)
    }

    fn verify(signer: &AssertionSigner, token: &str, audience: &str) -> serde_json::Value {
        try_verify(signer, token, audience).unwrap()
    }

    fn stack_headers(signer: &AssertionSigner, identity: &Identity, spoof: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if spoof {
            headers.insert("x-portcullis-assertion", "forged".parse().unwrap());
        }
        MapClaimsLayer::new([("x-user-id", "sub"), ("x-tenant", "org.id")])
            .unwrap()
            .assertion(signer.clone())
            .apply(&mut headers, Some(identity));
        headers
    }

    #[test]
    fn round_trip_with_an_independent_verifier() {
        // On real time: the upstream's verifier checks `exp` against its own clock.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let validator = portcullis::jwt::Validator::builder()
            .issuer(portcullis::jwt::Issuer::new(ISS_A, keys_a()).audiences(["api"]))
            .build()
            .unwrap();
        for pem in [P256_PRIVATE, ED_PRIVATE] {
            let signer =
                AssertionSigner::from_pem(pem, "https://gateway.example", "orders-service")
                    .unwrap();
            let mut c = claims("ada");
            c["org"] = json!({"id": "acme"});
            c["iat"] = json!(now);
            c["exp"] = json!(now + 600);
            let id = validator
                .validate_uncached(mint(Alg::ES256, &c).as_bytes())
                .unwrap();
            let headers = stack_headers(&signer, &id, true);
            let token = headers["x-portcullis-assertion"].to_str().unwrap();
            assert_ne!(token, "forged");
            let claims = verify(&signer, token, "orders-service");
            assert_eq!(claims["sub"], "ada");
            assert_eq!(claims["x-tenant"], "acme");
            assert_eq!(claims["x-user-id"], "ada");
            let (iat, exp) = (
                claims["iat"].as_u64().unwrap(),
                claims["exp"].as_u64().unwrap(),
            );
            assert_eq!(exp - iat, 60);
            assert!(verify_fails(&signer, token, "another-service"));
            assert!(!format!("{signer:?}").contains("PRIVATE"));
        }
    }

    fn verify_fails(signer: &AssertionSigner, token: &str, audience: &str) -> bool {
        try_verify(signer, token, audience).is_err()
    }

    #[test]
    fn signed_once_per_token_until_near_expiry() {
        let clock = clock();
        let signer = AssertionSigner::from_pem(P256_PRIVATE, "https://gateway.example", "svc")
            .unwrap()
            .ttl(Duration::from_secs(40))
            .clock(clock.clone());
        let validator = validator(clock.clone(), 10);
        let token = mint(Alg::ES256, &claims("ada"));
        let id = validator.validate(token.as_bytes()).unwrap();
        let mapping = MapClaimsLayer::new([("x-user-id", "sub")])
            .unwrap()
            .assertion(signer.clone());
        let mut first = HeaderMap::new();
        mapping.apply(&mut first, Some(&id));
        clock.advance(Duration::from_secs(29));
        let mut second = HeaderMap::new();
        mapping.apply(
            &mut second,
            Some(&validator.validate(token.as_bytes()).unwrap()),
        );
        assert_eq!(
            first["x-portcullis-assertion"], second["x-portcullis-assertion"],
            "reused"
        );
        clock.advance(Duration::from_secs(2)); // a quarter of the 40 s left: signed anew
        let mut third = HeaderMap::new();
        mapping.apply(
            &mut third,
            Some(&validator.validate(token.as_bytes()).unwrap()),
        );
        assert_ne!(
            first["x-portcullis-assertion"],
            third["x-portcullis-assertion"]
        );
    }

    #[test]
    fn never_outlives_the_token() {
        let signer = AssertionSigner::from_pem(ED_PRIVATE, "https://gateway.example", "svc")
            .unwrap()
            .clock(clock());
        let mut c = claims("ada");
        c["exp"] = json!(NOW + 5);
        let id = validator(clock(), 0)
            .validate_uncached(mint(Alg::RS256, &c).as_bytes())
            .unwrap();
        let headers = stack_headers(&signer, &id, false);
        let payload = headers["x-portcullis-assertion"]
            .to_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["exp"], NOW + 5);
    }

    #[test]
    fn key_types() {
        for wrong in [RSA_PRIVATE, P384_PRIVATE, RSA_PUBLIC, P256_PUBLIC] {
            assert!(AssertionSigner::from_pem(wrong, "i", "a").is_err());
        }
        let generated = AssertionSigner::generate_es256("https://gateway.example", "svc").unwrap();
        assert_eq!(generated.jwks()["keys"][0]["kid"], generated.kid());
    }
}

#[tokio::test]
async fn typed_claims_in_an_axum_handler() {
    use axum::routing::get;
    use portcullis::jwt::Claims;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Token {
        sub: String,
        org: Org,
    }
    #[derive(serde::Deserialize)]
    struct Org {
        id: String,
    }
    async fn handler(Claims(token): Claims<Token>) -> String {
        format!("{} of {}", token.sub, token.org.id)
    }
    let app = axum::Router::new()
        .route("/", get(handler))
        .layer(JwtAuthLayer::new(validator(clock(), 10)).optional());
    let call = |token: Option<String>| {
        let app = app.clone();
        async move {
            let mut request = Request::get("/");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = app
                .oneshot(request.body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status.as_u16(), String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let mut c = claims("ada");
    c["org"] = json!({"id": "acme"});
    assert_eq!(
        call(Some(mint(Alg::ES256, &c))).await,
        (200, "ada of acme".to_owned())
    );
    // Authentic, but without the claim the handler needs: 403, saying nothing of which.
    assert_eq!(
        call(Some(mint(Alg::ES256, &claims("ada")))).await,
        (403, String::new())
    );
    // No identity at all: 401.
    assert_eq!(call(None).await.0, 401);
}
