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
        let (invalid, dots) = count_jws_bytes(token);
        if dots != 2 {
            return Err(JwsError::Shape);
        }
        if invalid != 0 {
            return Err(JwsError::Base64);
        }
        let first = token.iter().position(|b| *b == b'.').unwrap_or(0);
        let second = first
            + 1
            + token[first + 1..]
                .iter()
                .position(|b| *b == b'.')
                .unwrap_or(0);
        let (header, payload, signature) = (
            &token[..first],
            &token[first + 1..second],
            &token[second + 1..],
        );
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(JwsError::Shape);
        }
        Ok(Jws {
            signing_input: &token[..second],
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
        with_decoded(self.header, super::strict_json::parse_header)?
    }

    /// Decodes the payload as a strict JSON object.
    pub fn claims(&self) -> Result<Map<String, Value>, JwsError> {
        with_decoded(self.payload, |json| {
            super::parse_object(json).map_err(|_| JwsError::Json)
        })?
    }

    /// Decodes the signature bytes.
    pub fn signature(&self) -> Result<Vec<u8>, JwsError> {
        decode(self.signature)
    }

    /// Decodes the signature and hands its bytes to `read`, without a heap allocation when
    /// it is no longer than an RSA-8192 signature.
    pub(crate) fn with_signature<R>(&self, read: impl FnOnce(&[u8]) -> R) -> Result<R, JwsError> {
        with_decoded(self.signature, read)
    }
}

/// Decodes `part` into a buffer on the stack when it fits (a typical header, payload or
/// signature does), else onto the heap, and hands the bytes to `read`. Both ways accept and
/// refuse exactly the same input: the same engine decodes.
fn with_decoded<R>(part: &[u8], read: impl FnOnce(&[u8]) -> R) -> Result<R, JwsError> {
    let mut buffer = [0u8; 2048];
    if base64::decoded_len_estimate(part.len()) <= buffer.len() {
        let len = URL_SAFE_NO_PAD
            .decode_slice(part, &mut buffer)
            .map_err(|_| JwsError::Base64)?;
        Ok(read(&buffer[..len]))
    } else {
        Ok(read(&decode(part)?))
    }
}

#[inline(always)]
fn base64url_mask(b: u8) -> u8 {
    let lower = b | 0x20;
    u8::from(lower.wrapping_sub(b'a') < 26)
        | u8::from(b.wrapping_sub(b'0') < 10)
        | u8::from(b == b'-')
        | u8::from(b == b'_')
}

/// Counts, over `bytes`, the bytes outside base64url and `.`, and the dots.
///
/// Mask arithmetic on `u8` lanes with no early exit, so it vectorizes: tokens are hundreds of
/// bytes and this runs on every uncached request. Kept out of line: once inlined into an
/// `== 0` test, LLVM turns it back into a byte-at-a-time early-exit loop.
#[inline(never)]
pub(crate) fn count_jws_bytes(bytes: &[u8]) -> (usize, usize) {
    let (mut invalid, mut dots) = (0usize, 0usize);
    for chunk in bytes.chunks(128) {
        let (mut bad, mut dot) = (0u8, 0u8);
        for &b in chunk {
            let is_dot = u8::from(b == b'.');
            bad += 1 - (base64url_mask(b) | is_dot);
            dot += is_dot;
        }
        invalid += usize::from(bad);
        dots += usize::from(dot);
    }
    (invalid, dots)
}

/// Counts the bytes of `bytes` outside the token68 body set (`A-Z a-z 0-9 - . _ ~ + /`).
/// Out of line and branch-free, as [`count_jws_bytes`].
#[inline(never)]
pub(crate) fn count_non_token68(bytes: &[u8]) -> usize {
    let mut invalid = 0usize;
    for chunk in bytes.chunks(128) {
        let mut bad = 0u8;
        for &b in chunk {
            let extra = u8::from(b == b'.')
                | u8::from(b == b'~')
                | u8::from(b == b'+')
                | u8::from(b == b'/');
            bad += 1 - (base64url_mask(b) | extra);
        }
        invalid += usize::from(bad);
    }
    invalid
}

fn decode(part: &[u8]) -> Result<Vec<u8>, JwsError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| JwsError::Base64)
}

pub(crate) fn is_jwt_media_type(value: &str) -> bool {
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
pub(crate) fn fuzz_parse(data: &[u8]) {
    if let Ok(jws) = Jws::split(data) {
        assert_eq!(
            jws.signing_input().len() + 1 + jws.signature.len(),
            data.len()
        );
        let _ = jws.header();
        let _ = jws.claims();
        let on_the_stack = jws.with_signature(<[u8]>::to_vec);
        if let Ok(sig) = jws.signature() {
            assert_eq!(URL_SAFE_NO_PAD.encode(&sig).as_bytes(), jws.signature);
        }
        // The stack and the heap decode the same bytes and refuse the same ones.
        assert_eq!(on_the_stack, jws.signature());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_decode_alike_on_the_stack_and_on_the_heap() {
        // Around the stack buffer's 2 048 bytes, on both sides.
        for len in [10, 1_536, 2_045, 2_046, 2_047, 2_048, 2_049, 2_050, 3_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let encoded = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                with_decoded(encoded.as_bytes(), <[u8]>::to_vec),
                Ok(bytes.clone())
            );
            // Whatever the input, both ways give the same answer.
            for odd in [
                format!("{encoded}="),
                format!("{encoded}A"),
                format!("{encoded}AA"),
                format!("{encoded}*"),
                format!("!{encoded}"),
                encoded[1..].to_owned(),
            ] {
                assert_eq!(
                    with_decoded(odd.as_bytes(), <[u8]>::to_vec),
                    decode(odd.as_bytes()),
                    "{len}"
                );
            }
            assert_eq!(
                with_decoded(format!("{encoded}*").as_bytes(), <[u8]>::to_vec),
                Err(JwsError::Base64)
            );
        }
        // A payload larger than the stack buffer still reads.
        let claims = format!(r#"{{"sub":"ada","pad":"{}"}}"#, "x".repeat(4_000));
        let token = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"ES256"}"#),
            b64(&claims),
            b64("sig")
        );
        let jws = Jws::split(token.as_bytes()).unwrap();
        assert_eq!(jws.claims().unwrap()["sub"], "ada");
        assert_eq!(jws.with_signature(<[u8]>::to_vec), Ok(b"sig".to_vec()));
    }

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
