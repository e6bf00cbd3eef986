//! Shared test fixtures: issuers with every key kind, and token minting through
//! `jsonwebtoken` (with portcullis' ring provider) or by hand.
#![allow(dead_code, unreachable_pub)]

pub mod jwks_server;
pub mod recorder;
pub mod redis_server;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use portcullis::clock::ManualClock;
use portcullis::jwt::{Issuer, Validator};
use portcullis::keys::{Key, KeySet};
use serde_json::{Value, json};

pub const NOW: u64 = 1_700_000_000;
pub const ISS_A: &str = "https://a.example/";
pub const ISS_H: &str = "https://h.example/";
pub const ISS_T: &str = "https://t.example/";
pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub const RSA_PRIVATE: &str = include_str!("../keys/rsa2048.pem");
pub const RSA_PUBLIC: &str = include_str!("../keys/rsa2048.pub.pem");
pub const RSA_PUBLIC_PKCS1: &str = include_str!("../keys/rsa2048.pkcs1.pub.pem");
pub const RSA1024_PUBLIC: &str = include_str!("../keys/rsa1024.pub.pem");
pub const P256_PRIVATE: &str = include_str!("../keys/p256.pem");
pub const P256_PUBLIC: &str = include_str!("../keys/p256.pub.pem");
pub const P384_PRIVATE: &str = include_str!("../keys/p384.pem");
pub const P384_PUBLIC: &str = include_str!("../keys/p384.pub.pem");
pub const ED_PRIVATE: &str = include_str!("../keys/ed25519.pem");
pub const ED_PUBLIC: &str = include_str!("../keys/ed25519.pub.pem");

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The signing key and kid for an algorithm.
pub fn signing_key(alg: jsonwebtoken::Algorithm) -> (EncodingKey, &'static str) {
    use jsonwebtoken::Algorithm::*;
    let installed = portcullis::crypto::install();
    assert_eq!(installed, portcullis::crypto::Installed::Ring);
    match alg {
        HS256 | HS384 | HS512 => (EncodingKey::from_secret(HMAC_SECRET).unwrap(), "h"),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => (
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            "rsa",
        ),
        ES256 => (
            EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).unwrap(),
            "p256",
        ),
        ES384 => (
            EncodingKey::from_ec_pem(P384_PRIVATE.as_bytes()).unwrap(),
            "p384",
        ),
        EdDSA => (
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
            "ed",
        ),
        _ => unreachable!(),
    }
}

/// Claims valid at `NOW` for issuer A.
pub fn claims(sub: &str) -> Value {
    json!({"iss": ISS_A, "aud": "api", "sub": sub, "iat": NOW - 10, "exp": NOW + 600, "scope": "read write"})
}

/// A token minted with jsonwebtoken (through the ring provider), with the algorithm's kid.
pub fn mint(alg: jsonwebtoken::Algorithm, claims: &Value) -> String {
    let (key, kid) = signing_key(alg);
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token with a hand-written header and payload, signed with `alg`'s key.
pub fn mint_raw(alg: jsonwebtoken::Algorithm, header: &str, payload: &[u8]) -> String {
    let (key, _) = signing_key(alg);
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, alg).unwrap();
    format!("{input}.{sig}")
}

/// The key set of issuer A: RSA, P-256, P-384 and Ed25519, each with a kid.
pub fn keys_a() -> KeySet {
    KeySet::new([
        Key::from_pem(RSA_PUBLIC).unwrap().with_kid("rsa"),
        Key::from_pem(P256_PUBLIC).unwrap().with_kid("p256"),
        Key::from_pem(P384_PUBLIC).unwrap().with_kid("p384"),
        Key::from_pem(ED_PUBLIC).unwrap().with_kid("ed"),
    ])
}

/// A validator trusting issuer A (public keys), H (an HMAC secret) and T (`typ` and lifetime
/// rules), on a manual clock at `NOW`.
pub fn validator(clock: ManualClock, cache_capacity: usize) -> Validator {
    Validator::builder()
        .issuer(Issuer::new(ISS_A, keys_a()).audiences(["api", "other-api"]))
        .issuer(
            Issuer::new(
                ISS_H,
                KeySet::new([Key::hmac(HMAC_SECRET).unwrap().with_kid("h")]),
            )
            .audiences(["api"]),
        )
        .issuer(
            Issuer::new(ISS_T, keys_a())
                .audiences(["api"])
                .typ("at+jwt")
                .max_lifetime(Duration::from_secs(3600))
                .leeway(Duration::from_secs(30)),
        )
        .clock(clock)
        .cache_capacity(cache_capacity)
        .build()
        .unwrap()
}

pub fn clock() -> ManualClock {
    ManualClock::new(Duration::from_secs(NOW))
}

/// One GET over a fresh HTTP/1 connection on a real socket, with extra headers; returns the
/// status, the response headers and the body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = http_body_util::Empty::<bytes::Bytes>::new();
    let response = sender
        .send_request(request.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// The public JWK of an algorithm's fixture key, with its kid.
pub fn jwk(alg: jsonwebtoken::Algorithm) -> Value {
    let (key, kid) = signing_key(alg);
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
            .unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

/// A JWKS of the fixture keys of these algorithms.
pub fn jwks(algs: &[jsonwebtoken::Algorithm]) -> Value {
    json!({"keys": algs.iter().map(|alg| jwk(*alg)).collect::<Vec<_>>()})
}

/// Writes `request` as it is on a fresh connection and reads until the server closes it;
/// returns the status (0 when the server closed without answering) and the whole response.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    // A reset after the answer (the server closing with unread input) still leaves the answer.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Serves `service` over HTTP/1.1 on a free loopback port, a connection per task, until the
/// test ends; returns the address.
pub async fn serve_loopback<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Seconds since the Unix epoch, on the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ES256 token of issuer A for `sub`, valid now on the system clock (for a stack whose
/// validator reads it, as one built from a policy does).
pub fn mint_now(sub: &str) -> String {
    let now = unix_now();
    let mut claims = claims(sub);
    claims["iat"] = json!(now - 10);
    claims["exp"] = json!(now + 600);
    mint(jsonwebtoken::Algorithm::ES256, &claims)
}

/// A policy trusting issuer A (audience `api`) with its P-256 key read from a PEM file, then
/// `rest` (routes, limits, …).
pub fn issuer_a_policy(rest: &str) -> String {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/p256.pub.pem");
    format!(
        "[[issuers]]\nissuer = \"{ISS_A}\"\naudiences = [\"api\"]\nkeys = {{ pem_files = [\"{keys}\"] }}\n{rest}"
    )
}
