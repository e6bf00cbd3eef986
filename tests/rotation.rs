//! Key rotation through a custom `KeySource`, the cache under concurrency, and a custom
//! rejection response.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use common::*;
use http::{HeaderMap, Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::jwt::{Issuer, JwtAuthLayer, JwtError, Validator};
use portcullis::keys::{Key, KeySet, KeySource, KeysUnavailable};
use portcullis::reject::Rejection;
use serde_json::json;
use tower::{Layer, ServiceExt, service_fn};

/// A source whose set is swapped by the test, as a remote JWKS source swaps after a fetch.
#[derive(Debug, Default)]
struct Swappable {
    current: RwLock<Option<KeySet>>,
    unknown: Mutex<Vec<String>>,
}

impl Swappable {
    fn swap(&self, next: KeySet) {
        let mut current = self.current.write().unwrap();
        let next = match current.as_ref() {
            Some(old) => old.replace_with(next).keys,
            None => next,
        };
        *current = Some(next);
    }
}

impl KeySource for Swappable {
    fn key_set(&self) -> Result<KeySet, KeysUnavailable> {
        self.current
            .read()
            .unwrap()
            .clone()
            .ok_or(KeysUnavailable::new())
    }

    fn unknown_kid(&self, kid: &str) {
        self.unknown.lock().unwrap().push(kid.to_owned());
    }
}

fn rsa() -> Key {
    Key::from_pem(RSA_PUBLIC).unwrap().with_kid("rsa")
}

fn p256() -> Key {
    Key::from_pem(P256_PUBLIC).unwrap().with_kid("p256")
}

#[test]
fn removing_a_key_evicts_the_tokens_it_verified() {
    let source = Arc::new(Swappable::default());
    let validator = Validator::builder()
        .issuer(Issuer::new(ISS_A, Arc::clone(&source)).audiences(["api"]))
        .clock(clock())
        .build()
        .unwrap();
    let rs = mint(Alg::RS256, &claims("ada"));
    let es = mint(Alg::ES256, &claims("bob"));

    // No keys yet: 503, not 401.
    assert_eq!(
        validator.validate(rs.as_bytes()).unwrap_err(),
        JwtError::KeysUnavailable
    );

    source.swap(KeySet::new([rsa(), p256()]));
    assert!(validator.validate(rs.as_bytes()).is_ok());
    assert!(validator.validate(es.as_bytes()).is_ok());
    assert_eq!(validator.cached_tokens(), 2);

    // The RSA key is rotated away; an equal P-256 key (same kid, same material) stays.
    source.swap(KeySet::new([p256()]));
    assert_eq!(
        validator.validate(rs.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    assert_eq!(*source.unknown.lock().unwrap(), ["rsa"]);
    assert!(
        validator.validate(es.as_bytes()).is_ok(),
        "tokens of a kept key stay valid"
    );

    // The key comes back under its id: tokens verify again.
    source.swap(KeySet::new([p256(), rsa()]));
    assert!(validator.validate(rs.as_bytes()).is_ok());
}

#[test]
fn an_hmac_rotation_with_both_secrets_live_causes_no_401() {
    let old = || Key::hmac(HMAC_SECRET).unwrap().with_kid("h");
    let new = || Key::hmac(&[0x5a; 64]).unwrap().with_kid("h2");
    let source = Arc::new(Swappable::default());
    source.swap(KeySet::new([old()]));
    let validator = Validator::builder()
        .issuer(Issuer::new(ISS_H, Arc::clone(&source)).audiences(["api"]))
        .clock(clock())
        .build()
        .unwrap();
    let before = mint(
        Alg::HS256,
        &json!({"iss": ISS_H, "aud": "api", "exp": NOW + 60}),
    );
    assert!(validator.validate(before.as_bytes()).is_ok());
    source.swap(KeySet::new([old(), new()]));
    let mut header = jsonwebtoken::Header::new(Alg::HS256);
    header.kid = Some("h2".into());
    let after = jsonwebtoken::encode(
        &header,
        &json!({"iss": ISS_H, "aud": "api", "exp": NOW + 60}),
        &jsonwebtoken::EncodingKey::from_secret(&[0x5a; 64]).unwrap(),
    )
    .unwrap();
    assert!(validator.validate(before.as_bytes()).is_ok());
    assert!(validator.validate(after.as_bytes()).is_ok());
    source.swap(KeySet::new([new()]));
    assert_eq!(
        validator.validate(before.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    assert!(validator.validate(after.as_bytes()).is_ok());
}

#[test]
fn cached_tokens_expire_with_the_clock() {
    let clock = clock();
    let validator = validator(clock.clone(), 100);
    let token = mint(Alg::EdDSA, &with_exp(NOW + 10));
    assert!(validator.validate(token.as_bytes()).is_ok());
    clock.advance(Duration::from_secs(9));
    assert!(validator.validate(token.as_bytes()).is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        validator.validate(token.as_bytes()).unwrap_err(),
        JwtError::Expired
    );
}

fn with_exp(exp: u64) -> serde_json::Value {
    let mut c = claims("ada");
    c["exp"] = json!(exp);
    c
}

#[test]
fn the_cache_is_bounded_and_shared_by_threads() {
    let validator = validator(clock(), 64);
    let tokens: Vec<String> = (0..200)
        .map(|i| {
            mint(
                Alg::HS256,
                &json!({"iss": ISS_H, "aud": "api", "sub": format!("u{i}"), "exp": NOW + 60}),
            )
        })
        .collect();
    let accepted = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (validator, tokens, accepted) = (&validator, &tokens, &accepted);
            scope.spawn(move || {
                for round in 0..20 {
                    for (i, token) in tokens.iter().enumerate().skip((t + round) % 3) {
                        let identity = validator.validate(token.as_bytes()).unwrap();
                        assert_eq!(identity.subject(), Some(format!("u{i}").as_str()));
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(accepted.load(Ordering::Relaxed) > 10_000);
    assert!(
        validator.cached_tokens() <= 64,
        "{}",
        validator.cached_tokens()
    );
}

#[test]
fn a_custom_rejection_and_the_error_in_extensions() {
    let layer =
        JwtAuthLayer::new(validator(clock(), 0)).on_rejection(|rejection: &Rejection<'_>| {
            let mut response = Response::new(format!("{{\"error\":\"{}\"}}", rejection.reason()));
            *response.status_mut() = rejection.status();
            response
        });
    let service = layer.layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let expired = mint(Alg::RS256, &with_exp(NOW - 1));
    let request = Request::builder()
        .header("authorization", format!("Bearer {expired}"))
        .body(String::new())
        .unwrap();
    let response = rt.block_on(service.oneshot(request)).unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.extensions().get::<JwtError>(),
        Some(&JwtError::Expired)
    );
    assert_eq!(response.body(), r#"{"error":"token_expired"}"#);
}

#[test]
fn errors_and_debug_output_never_hold_tokens_or_secrets() {
    let validator = validator(clock(), 10);
    let token = mint(
        Alg::HS256,
        &json!({"iss": ISS_H, "aud": "api", "sub": "ada", "exp": NOW + 60}),
    );
    let identity = validator.validate(token.as_bytes()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let layer = JwtAuthLayer::new(validator.clone());
    let dumps = [
        format!("{validator:?}"),
        format!("{layer:?}"),
        format!("{identity:?}"),
        format!("{:?}", KeySet::new([Key::hmac(HMAC_SECRET).unwrap()])),
        format!(
            "{:?}",
            portcullis::token::Jws::split(token.as_bytes()).unwrap()
        ),
    ];
    let signature = token.rsplit('.').next().unwrap();
    let secret = String::from_utf8_lossy(HMAC_SECRET);
    for dump in dumps {
        assert!(
            !dump.contains(signature) && !dump.contains(&token[..20]),
            "{dump}"
        );
        assert!(
            !dump.contains(&*secret) && !dump.contains("0123456789abcdef"),
            "{dump}"
        );
    }
    // Every error message, for a token of every kind of fault.
    for bad in [
        format!("{token}x"),
        token.replace('.', ".."),
        format!("{}.{}", &token[..30], signature),
    ] {
        let err = validator.validate(bad.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(signature) && !format!("{err:?}").contains(signature));
    }
}

#[test]
fn hmac_secrets_from_a_file_rotate_by_kid() {
    let dir = std::env::temp_dir().join(format!("portcullis-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secrets.json");
    let b64 =
        |s: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s);
    std::fs::write(
        &path,
        json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(HMAC_SECRET)},
        {"kty": "oct", "kid": "h2", "k": b64(&[0x5a; 64])}]})
        .to_string(),
    )
    .unwrap();
    let keys = KeySet::hmac_from_file(&path).unwrap();
    assert!(keys.has_kid("h") && keys.has_kid("h2"));
    std::fs::write(&path, "a raw secret of at least thirty-two bytes\n").unwrap();
    assert_eq!(KeySet::hmac_from_file(&path).unwrap().len(), 1);
    let missing = KeySet::hmac_from_file(dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(missing.starts_with("cannot read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}
