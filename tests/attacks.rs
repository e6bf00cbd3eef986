//! The attack suite: crafted tokens for every known JWT attack class, each checked for the
//! exact error and the HTTP status the layer answers with.

mod common;

use std::convert::Infallible;

use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::jwt::{JwtAuthLayer, JwtError};
use portcullis::token::JwsError;
use serde_json::json;
use tower::{Layer, ServiceExt, service_fn};

/// Sends `token` through the layer; returns the status and the error the layer recorded.
fn send(token: &str) -> (StatusCode, Option<JwtError>) {
    send_headers(&[("authorization", format!("Bearer {token}"))])
}

fn send_headers(headers: &[(&str, String)]) -> (StatusCode, Option<JwtError>) {
    let layer = JwtAuthLayer::new(validator(clock(), 0));
    let service = layer.layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut request = Request::builder();
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(service.oneshot(request.body(String::new()).unwrap()))
        .unwrap();
    (
        response.status(),
        response.extensions().get::<JwtError>().cloned(),
    )
}

#[track_caller]
fn rejected(token: &str, want: JwtError) {
    let (status, error) = send(token);
    assert_eq!(error.as_ref(), Some(&want), "token {token}");
    assert_eq!(status, want.response_kind().0);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{want:?}");
}

#[track_caller]
fn accepted(token: &str) {
    assert_eq!(send(token), (StatusCode::OK, None), "token {token}");
}

fn malformed(kind: JwsError) -> JwtError {
    JwtError::Malformed(kind)
}

fn with(mut claims: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    claims[key] = value;
    claims
}

#[test]
fn every_supported_algorithm_is_accepted() {
    for alg in [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ] {
        accepted(&mint(alg, &claims("ada")));
    }
    for alg in [Alg::HS256, Alg::HS384, Alg::HS512] {
        accepted(&mint(alg, &with(claims("ada"), "iss", json!(ISS_H))));
    }
    // RFC 9864's fully-specified name.
    let payload = serde_json::to_vec(&claims("ada")).unwrap();
    accepted(&mint_raw(
        Alg::EdDSA,
        r#"{"alg":"Ed25519","kid":"ed"}"#,
        &payload,
    ));
}

#[test]
fn alg_none_in_every_casing() {
    let payload = b64(serde_json::to_vec(&claims("ada")).unwrap());
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{none}","typ":"JWT"}}"#));
        rejected(
            &format!("{header}.{payload}.c2ln"),
            malformed(JwsError::AlgNone),
        );
        // Unsigned form with an empty signature part.
        rejected(&format!("{header}.{payload}."), malformed(JwsError::Shape));
    }
}

#[test]
fn algorithm_confusion_rsa_public_key_as_hmac_secret() {
    portcullis::crypto::install();
    let payload = serde_json::to_vec(&claims("ada")).unwrap();
    for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"HS256","kid":"rsa"}"#),
            b64(&payload)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Alg::HS256).unwrap();
        rejected(&format!("{input}.{sig}"), JwtError::NoMatchingKey);
        let input = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64(&payload));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Alg::HS256).unwrap();
        rejected(&format!("{input}.{sig}"), JwtError::NoMatchingKey);
    }
}

#[test]
fn keys_of_one_issuer_never_verify_another_issuers_tokens() {
    // An HMAC token claiming issuer A: A has no HMAC key, neither by kid nor by kind.
    rejected(&mint(Alg::HS256, &claims("ada")), JwtError::UnknownKid);
    let a_payload = serde_json::to_vec(&claims("ada")).unwrap();
    rejected(
        &mint_raw(Alg::HS256, r#"{"alg":"HS256"}"#, &a_payload),
        JwtError::NoMatchingKey,
    );
    // An RSA token (signed by A's key) claiming issuer H.
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "iss", json!(ISS_H))),
        JwtError::UnknownKid,
    );
    let payload = serde_json::to_vec(&with(claims("ada"), "iss", json!(ISS_H))).unwrap();
    rejected(
        &mint_raw(Alg::RS256, r#"{"alg":"RS256"}"#, &payload),
        JwtError::NoMatchingKey,
    );
}

#[test]
fn curve_and_key_kind_binding() {
    let payload = serde_json::to_vec(&claims("ada")).unwrap();
    // ES256 naming the P-384 key.
    rejected(
        &mint_raw(Alg::ES256, r#"{"alg":"ES256","kid":"p384"}"#, &payload),
        JwtError::NoMatchingKey,
    );
    // EdDSA naming the RSA key.
    rejected(
        &mint_raw(Alg::EdDSA, r#"{"alg":"EdDSA","kid":"rsa"}"#, &payload),
        JwtError::NoMatchingKey,
    );
}

#[test]
fn unsupported_header_parameters() {
    let payload = serde_json::to_vec(&claims("ada")).unwrap();
    let cases = [
        (
            r#"{"alg":"RS256","kid":"rsa","crit":["exp"],"exp":1}"#,
            JwsError::Crit,
        ),
        (r#"{"alg":"RS256","kid":"rsa","crit":[]}"#, JwsError::Crit),
        (
            r#"{"alg":"RS256","kid":"rsa","b64":false,"crit":["b64"]}"#,
            JwsError::Crit,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","b64":false}"#,
            JwsError::UnencodedPayload,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","jku":"https://evil.example/jwks"}"#,
            JwsError::EmbeddedKey,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","x5u":"https://evil.example/cert"}"#,
            JwsError::EmbeddedKey,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","x5c":["MIIBIjANBg"]}"#,
            JwsError::EmbeddedKey,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","cty":"JWT"}"#,
            JwsError::Nested,
        ),
        (
            r#"{"alg":"RS256","kid":"rsa","enc":"A256GCM"}"#,
            JwsError::Nested,
        ),
        (
            r#"{"alg":"rs256","kid":"rsa"}"#,
            JwsError::UnsupportedAlgorithm,
        ),
        (
            r#"{"alg":"HS1","kid":"rsa"}"#,
            JwsError::UnsupportedAlgorithm,
        ),
        (r#"{"kid":"rsa"}"#, JwsError::UnsupportedAlgorithm),
        (r#"{"alg":"RS256","alg":"none"}"#, JwsError::Json),
        (
            r#"{"alg":"RS256","kid":["rsa"]}"#,
            JwsError::HeaderParameter,
        ),
    ];
    for (header, want) in cases {
        rejected(&mint_raw(Alg::RS256, header, &payload), malformed(want));
    }
}

#[test]
fn embedded_jwk_signed_by_the_attackers_own_key() {
    // The attacker signs with a fresh key and embeds its public half.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    use ring::signature::KeyPair;
    let header = json!({"alg": "EdDSA", "kid": "ed", "jwk": {"kty": "OKP", "crv": "Ed25519",
        "x": b64(pair.public_key().as_ref())}});
    let input = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(claims("admin").to_string())
    );
    let token = format!("{input}.{}", b64(pair.sign(input.as_bytes())));
    rejected(&token, malformed(JwsError::EmbeddedKey));
    // Without the jwk header it is simply a bad signature.
    let header = json!({"alg": "EdDSA", "kid": "ed"});
    let input = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(claims("admin").to_string())
    );
    let token = format!("{input}.{}", b64(pair.sign(input.as_bytes())));
    rejected(&token, JwtError::BadSignature);
}

#[test]
fn ecdsa_signature_forms() {
    let good = mint(Alg::ES256, &claims("ada"));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    assert_eq!(sig.len(), 64);
    // DER (ASN.1) encoding of the same r and s.
    let der_int = |v: &[u8]| {
        let mut v = v.to_vec();
        while v.len() > 1 && v[0] == 0 && v[1] & 0x80 == 0 {
            v.remove(0);
        }
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        [vec![0x02, v.len() as u8], v].concat()
    };
    let body = [der_int(&sig[..32]), der_int(&sig[32..])].concat();
    let der = [vec![0x30, body.len() as u8], body].concat();
    rejected(&format!("{input}.{}", b64(&der)), JwtError::BadSignature);
    // r = s = 0 ("psychic signatures", CVE-2022-21449).
    rejected(
        &format!("{input}.{}", b64([0u8; 64])),
        JwtError::BadSignature,
    );
    // r = n, s = n (the P-256 group order), and r = s = n + 1.
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    rejected(
        &format!("{input}.{}", b64([n.clone(), n.clone()].concat())),
        JwtError::BadSignature,
    );
    let mut n1 = n.clone();
    n1[31] += 1;
    rejected(
        &format!("{input}.{}", b64([n1.clone(), n1].concat())),
        JwtError::BadSignature,
    );
    // Truncated and padded signatures.
    rejected(
        &format!("{input}.{}", b64(&sig[..63])),
        JwtError::BadSignature,
    );
    rejected(
        &format!("{input}.{}", b64([&sig[..], &[0][..]].concat())),
        JwtError::BadSignature,
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn hmac_truncated_or_altered_tag() {
    let good = mint(Alg::HS256, &with(claims("ada"), "iss", json!(ISS_H)));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    rejected(
        &format!("{input}.{}", b64(&sig[..16])),
        JwtError::BadSignature,
    );
    rejected(
        &format!("{input}.{}", b64(&sig[..1])),
        JwtError::BadSignature,
    );
    let mut flipped = sig.clone();
    flipped[31] ^= 1;
    rejected(
        &format!("{input}.{}", b64(&flipped)),
        JwtError::BadSignature,
    );
}

#[test]
fn tampering() {
    let good = mint(Alg::RS256, &claims("ada"));
    let parts: Vec<&str> = good.split('.').collect();
    // Payload swapped for an admin's.
    let evil = b64(serde_json::to_vec(&claims("admin")).unwrap());
    rejected(
        &format!("{}.{evil}.{}", parts[0], parts[2]),
        JwtError::BadSignature,
    );
    // Header swapped to RS512 with the same key.
    let header = b64(r#"{"alg":"RS512","kid":"rsa","typ":"JWT"}"#);
    rejected(
        &format!("{header}.{}.{}", parts[1], parts[2]),
        JwtError::BadSignature,
    );
    // A signature bit flipped.
    let mut sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[2])
            .unwrap();
    sig[100] ^= 0x40;
    rejected(
        &format!("{}.{}.{}", parts[0], parts[1], b64(&sig)),
        JwtError::BadSignature,
    );
    // Signature of another valid token.
    let other = mint(Alg::RS256, &claims("eve"));
    rejected(
        &format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.rsplit('.').next().unwrap()
        ),
        JwtError::BadSignature,
    );
    // Signed with a 1024-bit key the set does not hold.
    let weak = portcullis::keys::Key::from_pem(RSA1024_PUBLIC);
    assert!(weak.is_err(), "1024-bit RSA keys are refused at load");
}

#[test]
fn structure() {
    let good = mint(Alg::RS256, &claims("ada"));
    let parts: Vec<&str> = good.split('.').collect();
    rejected(&good[..good.len() - 10], JwtError::BadSignature);
    rejected(&good[..good.len() - 1], malformed(JwsError::Base64));
    rejected(
        &format!("{}.{}", parts[0], parts[1]),
        malformed(JwsError::Shape),
    );
    rejected(&format!("{good}.{}", parts[2]), malformed(JwsError::Shape));
    rejected(
        &format!("{}.e30.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        malformed(JwsError::Shape),
    );
    rejected(
        &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        malformed(JwsError::Base64),
    );
    rejected(
        &format!("{}.+{}.{}", parts[0], parts[1], parts[2]),
        malformed(JwsError::Base64),
    );
    rejected(
        &format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            parts[2].replacen(|c: char| c.is_ascii_alphabetic(), "/", 1)
        ),
        malformed(JwsError::Base64),
    );
    rejected("a.b.c", malformed(JwsError::Base64));
    rejected("....", malformed(JwsError::Shape));
    rejected(
        &format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        malformed(JwsError::Json),
    );
}

#[test]
fn payload_encodings() {
    let header = r#"{"alg":"RS256","kid":"rsa"}"#;
    let mint_payload = |p: &[u8]| mint_raw(Alg::RS256, header, p);
    // Non-UTF-8.
    rejected(
        &mint_payload(b"{\"sub\":\"\xff\xfe\"}"),
        malformed(JwsError::Json),
    );
    // Duplicate keys: two parsers must never disagree on `sub`.
    let dup = format!(
        r#"{{"iss":"{ISS_A}","aud":"api","exp":{},"sub":"ada","sub":"admin"}}"#,
        NOW + 60
    );
    rejected(&mint_payload(dup.as_bytes()), malformed(JwsError::Json));
    let nested_dup = format!(
        r#"{{"iss":"{ISS_A}","aud":"api","exp":{},"org":{{"id":1,"id":2}}}}"#,
        NOW + 60
    );
    rejected(
        &mint_payload(nested_dup.as_bytes()),
        malformed(JwsError::Json),
    );
    // Deep nesting.
    let deep = format!(
        r#"{{"iss":"{ISS_A}","aud":"api","exp":{},"x":{}{}}}"#,
        NOW + 60,
        "[".repeat(40),
        "]".repeat(40)
    );
    rejected(&mint_payload(deep.as_bytes()), malformed(JwsError::Json));
    // Huge numbers.
    let huge = format!(r#"{{"iss":"{ISS_A}","aud":"api","exp":1e400}}"#);
    rejected(&mint_payload(huge.as_bytes()), malformed(JwsError::Json));
    let far = format!(r#"{{"iss":"{ISS_A}","aud":"api","exp":1e300}}"#);
    rejected(
        &mint_payload(far.as_bytes()),
        JwtError::InvalidClaim("exp".into()),
    );
    let big_int =
        format!(r#"{{"iss":"{ISS_A}","aud":"api","exp":123456789012345678901234567890}}"#);
    rejected(
        &mint_payload(big_int.as_bytes()),
        JwtError::InvalidClaim("exp".into()),
    );
    // A JSON array, not an object.
    rejected(&mint_payload(b"[1,2]"), malformed(JwsError::Json));
    // Trailing garbage after the object.
    let trailing = format!(r#"{{"iss":"{ISS_A}","aud":"api","exp":{}}} x"#, NOW + 60);
    rejected(
        &mint_payload(trailing.as_bytes()),
        malformed(JwsError::Json),
    );
}

#[test]
fn registered_claim_types() {
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "exp", json!("1800000000"))),
        JwtError::InvalidClaim("exp".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "exp", json!(-5))),
        JwtError::InvalidClaim("exp".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "nbf", json!(true))),
        JwtError::InvalidClaim("nbf".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "iat", json!({"t": 1}))),
        JwtError::InvalidClaim("iat".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "sub", json!(42))),
        JwtError::InvalidClaim("sub".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "aud", json!(["api", 7]))),
        JwtError::InvalidClaim("aud".into()),
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "iss", json!([ISS_A]))),
        JwtError::InvalidClaim("iss".into()),
    );
    let mut no_exp = claims("ada");
    no_exp.as_object_mut().unwrap().remove("exp");
    rejected(
        &mint(Alg::RS256, &no_exp),
        JwtError::MissingClaim("exp".into()),
    );
    let mut no_iss = claims("ada");
    no_iss.as_object_mut().unwrap().remove("iss");
    rejected(
        &mint(Alg::RS256, &no_iss),
        JwtError::MissingClaim("iss".into()),
    );
}

#[test]
fn time_claims() {
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "exp", json!(NOW - 1))),
        JwtError::Expired,
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "exp", json!(NOW))),
        JwtError::Expired,
    );
    accepted(&mint(
        Alg::RS256,
        &with(claims("ada"), "exp", json!(NOW + 1)),
    ));
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "nbf", json!(NOW + 1))),
        JwtError::NotYetValid,
    );
    accepted(&mint(Alg::RS256, &with(claims("ada"), "nbf", json!(NOW))));
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "iat", json!(NOW + 5))),
        JwtError::IssuedInFuture,
    );
    // Issuer T has 30 s of leeway.
    let t = |c: serde_json::Value| {
        let c = with(c, "iss", json!(ISS_T));
        let payload = serde_json::to_vec(&c).unwrap();
        mint_raw(
            Alg::ES256,
            r#"{"alg":"ES256","kid":"p256","typ":"at+jwt"}"#,
            &payload,
        )
    };
    accepted(&t(with(claims("ada"), "exp", json!(NOW - 29))));
    rejected(
        &t(with(claims("ada"), "exp", json!(NOW - 30))),
        JwtError::Expired,
    );
    accepted(&t(with(claims("ada"), "nbf", json!(NOW + 30))));
    rejected(
        &t(with(claims("ada"), "nbf", json!(NOW + 31))),
        JwtError::NotYetValid,
    );
    // Lifetime of at most an hour.
    rejected(
        &t(with(claims("ada"), "exp", json!(NOW - 10 + 3601))),
        JwtError::LifetimeTooLong,
    );
    accepted(&t(with(claims("ada"), "exp", json!(NOW - 10 + 3600))));
    let mut no_iat = claims("ada");
    no_iat.as_object_mut().unwrap().remove("iat");
    rejected(&t(no_iat), JwtError::MissingClaim("iat".into()));
}

#[test]
fn typ_rules() {
    let payload = serde_json::to_vec(&with(claims("ada"), "iss", json!(ISS_T))).unwrap();
    for typ in [r#""at+jwt""#, r#""AT+JWT""#, r#""application/at+jwt""#] {
        accepted(&mint_raw(
            Alg::ES256,
            &format!(r#"{{"alg":"ES256","kid":"p256","typ":{typ}}}"#),
            &payload,
        ));
    }
    for typ in [r#""JWT""#, r#""at+jwt2""#] {
        rejected(
            &mint_raw(
                Alg::ES256,
                &format!(r#"{{"alg":"ES256","kid":"p256","typ":{typ}}}"#),
                &payload,
            ),
            JwtError::WrongType,
        );
    }
    rejected(
        &mint_raw(Alg::ES256, r#"{"alg":"ES256","kid":"p256"}"#, &payload),
        JwtError::WrongType,
    );
}

#[test]
fn issuer_and_audience() {
    rejected(
        &mint(
            Alg::RS256,
            &with(claims("ada"), "iss", json!("https://evil.example/")),
        ),
        JwtError::UnknownIssuer,
    );
    rejected(
        &mint(
            Alg::RS256,
            &with(claims("ada"), "iss", json!("https://a.example")),
        ),
        JwtError::UnknownIssuer,
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "aud", json!("billing"))),
        JwtError::WrongAudience,
    );
    rejected(
        &mint(Alg::RS256, &with(claims("ada"), "aud", json!([]))),
        JwtError::WrongAudience,
    );
    let mut no_aud = claims("ada");
    no_aud.as_object_mut().unwrap().remove("aud");
    rejected(&mint(Alg::RS256, &no_aud), JwtError::WrongAudience);
    accepted(&mint(
        Alg::RS256,
        &with(claims("ada"), "aud", json!(["billing", "other-api"])),
    ));
}

#[test]
fn key_ids() {
    let payload = serde_json::to_vec(&claims("ada")).unwrap();
    rejected(
        &mint_raw(
            Alg::RS256,
            r#"{"alg":"RS256","kid":"rotated-away"}"#,
            &payload,
        ),
        JwtError::UnknownKid,
    );
    rejected(
        &mint_raw(
            Alg::RS256,
            r#"{"alg":"RS256","kid":"../../etc/passwd"}"#,
            &payload,
        ),
        JwtError::UnknownKid,
    );
    // No kid: every key of the right kind is tried.
    accepted(&mint_raw(Alg::RS256, r#"{"alg":"RS256"}"#, &payload));
}

#[test]
fn request_shapes() {
    let good = mint(Alg::RS256, &claims("ada"));
    let twice = [
        ("authorization", format!("Bearer {good}")),
        ("authorization", format!("Bearer {good}")),
    ];
    assert_eq!(
        send_headers(&twice),
        (StatusCode::BAD_REQUEST, Some(JwtError::Duplicate))
    );
    let two_tokens = [("authorization", format!("Bearer {good} {good}"))];
    assert_eq!(
        send_headers(&two_tokens),
        (StatusCode::BAD_REQUEST, Some(JwtError::MalformedHeader))
    );
    assert_eq!(
        send_headers(&[]),
        (StatusCode::UNAUTHORIZED, Some(JwtError::Missing))
    );
    let basic = [("authorization", "Basic YWRhOnB3".to_owned())];
    assert_eq!(
        send_headers(&basic),
        (StatusCode::UNAUTHORIZED, Some(JwtError::Missing))
    );
    let huge = "a".repeat(9 * 1024);
    rejected(
        &format!("{huge}.{huge}.{huge}"),
        JwtError::TooLarge { limit: 8 * 1024 },
    );
}

#[test]
fn challenges_follow_rfc_6750() {
    let layer = JwtAuthLayer::new(validator(clock(), 0))
        .realm("orders")
        .unwrap();
    let service = layer.layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let send = |auth: Option<String>| {
        let mut req = Request::builder();
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        rt.block_on(service.clone().oneshot(req.body(String::new()).unwrap()))
            .unwrap()
    };
    let none = send(None);
    assert_eq!(
        none.headers()["www-authenticate"],
        r#"Bearer realm="orders""#
    );
    let bad = send(Some("Bearer a.b.c".into()));
    let challenge = bad.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer realm="orders", error="invalid_token""#),
        "{challenge}"
    );
    let dup = send(Some("Bearer a b".into()));
    assert_eq!(dup.status(), StatusCode::BAD_REQUEST);
    assert!(
        dup.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_request""#)
    );
}
