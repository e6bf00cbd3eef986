use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::crypto::Algorithm;

/// Why a compact JWS was refused before its signature was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not three non-empty dot-separated parts.
    #[error("not a compact JWS")]
    Shape,
    /// A part is not unpadded base64url.
    #[error("bad base64url")]
    Base64,
    /// The header or payload is not a strict JSON object (duplicate keys, too deep, not UTF-8).
    #[error("bad JSON")]
    Json,
    /// `alg` is `none`, in any casing.
    #[error("alg none")]
    AlgNone,
    /// `alg` is missing, not a string, or not a supported algorithm.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The header names critical extensions (`crit`); none is understood.
    #[error("unsupported critical header")]
    Crit,
    /// `b64: false` (RFC 7797 unencoded payload).
    #[error("unencoded payload")]
    UnencodedPayload,
    /// The header embeds or points at a key (`jwk`, `jku`, `x5u`, `x5c`).
    #[error("embedded key")]
    EmbeddedKey,
    /// A nested JWT (`cty: JWT`) or JWE header parameters (`enc`, `zip`).
    #[error("nested or encrypted token")]
    Nested,
    /// `kid` or `typ` is not a string.
    #[error("bad header parameter")]
    HeaderParameter,
}

/// The JOSE header parameters the validator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    /// The signature algorithm.
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
    /// The media type, if any.
    pub typ: Option<String>,
}

/// A compact JWS split into its parts, borrowed from the token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Jws<'t> {
    signing_input: &'t [u8],
    header: &'t [u8],
    payload: &'t [u8],
    signature: &'t [u8],
}

impl fmt::Debug for Jws<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The parts are a credential: show only their sizes.
        f.debug_struct("Jws")
            .field("header_len", &self.header.len())
            .field("payload_len", &self.payload.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

impl<'t> Jws<'t> {
    /// Splits a compact JWS (`header.payload.signature`) without decoding it.
    pub fn split(token: &'t [u8]) -> Result<Self, JwsError> {
        let mut parts = token.splitn(4, |b| *b == b'.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Shape);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(JwsError::Shape);
        }
        let is_b64url = |part: &[u8]| {
            part.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        };
        if !(is_b64url(header) && is_b64url(payload) && is_b64url(signature)) {
            return Err(JwsError::Base64);
        }
        Ok(Jws {
            signing_input: &token[..header.len() + 1 + payload.len()],
            header,
            payload,
            signature,
        })
    }

    /// The bytes the signature covers: `header.payload` as sent.
    pub fn signing_input(&self) -> &'t [u8] {
        self.signing_input
    }

    /// Decodes and reads the JOSE header, refusing every header the crate does not trust.
    pub fn header(&self) -> Result<JoseHeader, JwsError> {
        let map = decode_json(self.header)?;
        read_header(&map)
    }

    /// Decodes the payload as a strict JSON object.
    pub fn claims(&self) -> Result<Map<String, Value>, JwsError> {
        decode_json(self.payload)
    }

    /// Decodes the signature bytes.
    pub fn signature(&self) -> Result<Vec<u8>, JwsError> {
        decode(self.signature)
    }
}

fn decode(part: &[u8]) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwsError::Base64)
}

fn decode_json(part: &[u8]) -> Result<Map<String, Value>, JwsError> {
    super::parse_object(&decode(part)?).map_err(|_| JwsError::Json)
}

fn read_header(map: &Map<String, Value>) -> Result<JoseHeader, JwsError> {
    let alg = match map.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => {
            return Err(JwsError::AlgNone);
        }
        Some(Value::String(name)) => {
            Algorithm::from_name(name).ok_or(JwsError::UnsupportedAlgorithm)?
        }
        _ => return Err(JwsError::UnsupportedAlgorithm),
    };
    if map.contains_key("crit") {
        return Err(JwsError::Crit);
    }
    match map.get("b64") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(JwsError::UnencodedPayload),
        Some(_) => return Err(JwsError::HeaderParameter),
    }
    if ["jwk", "jku", "x5u", "x5c"]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        return Err(JwsError::EmbeddedKey);
    }
    if map.contains_key("enc") || map.contains_key("zip") {
        return Err(JwsError::Nested);
    }
    if let Some(cty) = map.get("cty") {
        match cty.as_str() {
            Some(cty) if is_jwt_media_type(cty) => return Err(JwsError::Nested),
            Some(_) => {}
            None => return Err(JwsError::HeaderParameter),
        }
    }
    let string = |key: &str| match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwsError::HeaderParameter),
    };
    Ok(JoseHeader {
        alg,
        kid: string("kid")?,
        typ: string("typ")?,
    })
}

fn is_jwt_media_type(value: &str) -> bool {
    let value = strip_application(value);
    value.eq_ignore_ascii_case("jwt")
}

/// RFC 7515 §4.1.9: `application/` may be left off a media type.
pub(crate) fn strip_application(value: &str) -> &str {
    match value.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &value[12..],
        _ => value,
    }
}

/// Splits and reads a JWS from arbitrary bytes, for the fuzz target.
#[cfg(fuzzing)]
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(jws) = Jws::split(data) {
        assert_eq!(
            jws.signing_input().len() + 1 + jws.signature.len(),
            data.len()
        );
        let _ = jws.header();
        let _ = jws.claims();
        if let Ok(sig) = jws.signature() {
            assert_eq!(URL_SAFE_NO_PAD.encode(&sig).as_bytes(), jws.signature);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn header_of(json: &str) -> Result<JoseHeader, JwsError> {
        let token = format!("{}.{}.c2ln", b64(json), b64("{}"));
        Jws::split(token.as_bytes())?.header()
    }

    #[test]
    fn shapes() {
        assert_eq!(Jws::split(b"a.b").unwrap_err(), JwsError::Shape);
        assert_eq!(Jws::split(b"a.b.c.d").unwrap_err(), JwsError::Shape);
        assert_eq!(Jws::split(b"a..c").unwrap_err(), JwsError::Shape);
        assert_eq!(Jws::split(b"a.b+.c").unwrap_err(), JwsError::Base64);
        assert_eq!(Jws::split(b"a.b.c=").unwrap_err(), JwsError::Base64);
        let jws = Jws::split(b"aa.bb.cc").unwrap();
        assert_eq!(jws.signing_input(), b"aa.bb");
    }

    #[test]
    fn headers() {
        assert_eq!(
            header_of(r#"{"alg":"RS256","kid":"k"}"#)
                .unwrap()
                .kid
                .as_deref(),
            Some("k")
        );
        for none in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(
                header_of(&format!(r#"{{"alg":"{none}"}}"#)),
                Err(JwsError::AlgNone)
            );
        }
        let cases = [
            (r#"{"typ":"JWT"}"#, JwsError::UnsupportedAlgorithm),
            (r#"{"alg":"rs256"}"#, JwsError::UnsupportedAlgorithm),
            (r#"{"alg":1}"#, JwsError::UnsupportedAlgorithm),
            (r#"{"alg":"RS256","crit":["exp"],"exp":1}"#, JwsError::Crit),
            (r#"{"alg":"RS256","b64":false}"#, JwsError::UnencodedPayload),
            (r#"{"alg":"RS256","jwk":{}}"#, JwsError::EmbeddedKey),
            (
                r#"{"alg":"RS256","jku":"https://x"}"#,
                JwsError::EmbeddedKey,
            ),
            (
                r#"{"alg":"RS256","x5u":"https://x"}"#,
                JwsError::EmbeddedKey,
            ),
            (r#"{"alg":"RS256","x5c":["MII"]}"#, JwsError::EmbeddedKey),
            (r#"{"alg":"RS256","cty":"JWT"}"#, JwsError::Nested),
            (r#"{"alg":"RS256","kid":7}"#, JwsError::HeaderParameter),
            (r#"{"alg":"RS256","alg":"HS256"}"#, JwsError::Json),
        ];
        for (json, want) in cases {
            assert_eq!(header_of(json), Err(want), "{json}");
        }
    }
}
