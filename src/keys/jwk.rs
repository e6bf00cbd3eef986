use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;
use serde_json::Value;

use crate::crypto::Algorithm;
use crate::error::ConfigError;

use super::Key;

/// Where a JWK document came from; a published (remote) document never yields an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    Local,
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    Remote,
}

const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
    d: Option<Value>,
    p: Option<Value>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

/// The keys of a JWKS, and a line per key that had to be skipped (malformed).
pub(crate) fn parse_jwks_lenient(
    json: &str,
    trust: Trust,
) -> Result<(Vec<Key>, Vec<String>), ConfigError> {
    // serde's messages can quote values; a JWK may hold a secret, so only positions are kept.
    let raw: RawJwks = serde_json::from_str(json).map_err(|e| {
        ConfigError::InvalidJwks(format!(
            "not a JWK set (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    let mut skipped = Vec::new();
    for (index, value) in raw.keys.into_iter().enumerate() {
        match jwk_from_value(value, trust) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(why) => skipped.push(format!("key {index}: {why}")),
        }
    }
    Ok((keys, skipped))
}

/// Every signature key of a JWKS; any malformed key is an error.
pub(crate) fn parse_jwks(json: &str, trust: Trust) -> Result<Vec<Key>, ConfigError> {
    let (keys, skipped) = parse_jwks_lenient(json, trust)?;
    match skipped.into_iter().next() {
        Some(first) => Err(ConfigError::InvalidJwks(first)),
        None => Ok(keys),
    }
}

/// One JWK; `None` when it is not a signature key this crate uses.
pub(crate) fn parse_jwk(json: &str, trust: Trust) -> Result<Option<Key>, ConfigError> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        ConfigError::InvalidJwks(format!(
            "not a JWK (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    jwk_from_value(value, trust).map_err(ConfigError::InvalidJwks)
}

fn jwk_from_value(value: Value, trust: Trust) -> Result<Option<Key>, String> {
    let raw: RawJwk =
        serde_json::from_value(value).map_err(|_| "malformed JWK members".to_owned())?;
    let kid = raw
        .kid
        .as_deref()
        .map(|k| format!(" ({k:?})"))
        .unwrap_or_default();
    let key = key_from_raw(raw).map_err(|why| format!("{why}{kid}"))?;
    Ok(key.filter(|key| !(key.kind() == crate::crypto::KeyKind::Hmac && trust == Trust::Remote)))
}

fn field(value: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let value = value.as_deref().ok_or_else(|| format!("missing {name}"))?;
    B64.decode(value)
        .map_err(|_| format!("{name} is not base64url"))
}

fn key_from_raw(raw: RawJwk) -> Result<Option<Key>, String> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Ok(None);
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) if name.eq_ignore_ascii_case("none") => return Err("alg none".into()),
        Some(name) => match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            // An encryption algorithm, or one this crate does not verify.
            None => return Ok(None),
        },
    };
    if raw.d.is_some() || raw.p.is_some() {
        return Err("private key members in a verification key".into());
    }
    let key = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => Key::rsa(&field(&raw.n, "n")?, &field(&raw.e, "e")?),
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (x, y) = (field(&raw.x, "x")?, field(&raw.y, "y")?);
            let len = if crv == "P-256" { 32 } else { 48 };
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            Key::ec(&point)
        }
        ("OKP", Some("Ed25519")) => Key::ed25519(&field(&raw.x, "x")?),
        ("oct", _) => Key::hmac(&field(&raw.k, "k")?),
        // Other curves (secp256k1, Ed448, X25519) and key types are not used.
        _ => return Ok(None),
    }
    .map_err(|e| e.to_string())?;
    let key = match alg {
        Some(alg) => key.with_algorithm(alg).map_err(|e| e.to_string())?,
        None => key,
    };
    Ok(Some(match raw.kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyKind;

    #[test]
    fn key_kinds_and_skips() {
        let jwks = r#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"},
            {"kty":"oct","kid":"h","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}
        ]}"#;
        let local = parse_jwks(jwks, Trust::Local).unwrap();
        assert_eq!(local.len(), 2);
        assert_eq!(local[1].kind(), KeyKind::Hmac);
        let (remote, skipped) = parse_jwks_lenient(jwks, Trust::Remote).unwrap();
        assert_eq!(remote.len(), 1, "a published secret is never trusted");
        assert!(skipped.is_empty());
    }

    #[test]
    fn malformed_keys_are_reported_without_values() {
        let jwks = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"EC","crv":"P-256","x":"AA","y":"AA"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","d":"c2VjcmV0"}, {"kty":"RSA","alg":"ES256","n":"AQAB","e":"AQAB"}]}"#;
        let (keys, skipped) = parse_jwks_lenient(jwks, Trust::Local).unwrap();
        assert!(keys.is_empty());
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped.iter().all(|s| !s.contains("c2VjcmV0")));
        assert!(parse_jwks(jwks, Trust::Local).is_err());
        let err = parse_jwks(r#"{"keys":"c2VjcmV0"}"#, Trust::Local)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}
