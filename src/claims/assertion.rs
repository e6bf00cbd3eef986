//! A signed identity assertion for the upstream: a short-lived JWT the gateway signs, which
//! the upstream verifies against the gateway's published JWKS (as Pomerium and Google IAP do).

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Map, Value};

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::jwt::Identity;

/// Signs identity assertions with an ES256 (P-256) or Ed25519 key.
///
/// An assertion carries `iss` (the gateway), `aud` (the upstream), `sub`, `iat`, `exp` (at most
/// `ttl` ahead, never past the token's own `exp`) and the claims the layer maps to headers,
/// keyed by header name. It is signed once per cached token and reused until a quarter of its
/// lifetime remains.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use portcullis::claims::AssertionSigner;
///
/// let signer = AssertionSigner::generate_es256("https://gateway.example", "orders-service")
///     .unwrap()
///     .ttl(Duration::from_secs(60));
/// let jwks = signer.jwks();
/// assert_eq!(jwks["keys"][0]["alg"], "ES256");
/// ```
#[derive(Clone)]
pub struct AssertionSigner {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    key: EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: String,
    public: Value,
    issuer: Box<str>,
    audience: Box<str>,
    ttl: u64,
    header: HeaderName,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key.
        f.debug_struct("AssertionSigner")
            .field("alg", &self.inner.alg)
            .field("kid", &self.inner.kid)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("ttl", &self.inner.ttl)
            .field("header", &self.inner.header)
            .finish_non_exhaustive()
    }
}

/// The default header: `x-portcullis-assertion`.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-portcullis-assertion";

impl AssertionSigner {
    /// A signer with a private key in PEM (PKCS#8 `PRIVATE KEY`, P-256 or Ed25519).
    pub fn from_pem(pem: &str, issuer: &str, audience: &str) -> Result<Self, ConfigError> {
        crate::crypto::install();
        let wrong = || {
            ConfigError::InvalidKey(
                "an assertion key must be a P-256 or Ed25519 PKCS#8 private key".into(),
            )
        };
        let block = pem::parse(pem).map_err(|_| ConfigError::InvalidKey("malformed PEM".into()))?;
        if block.tag() != "PRIVATE KEY" {
            return Err(wrong());
        }
        let der = block.contents();
        if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
            .is_ok()
        {
            return Self::new(
                EncodingKey::from_ec_der(der),
                jsonwebtoken::Algorithm::ES256,
                issuer,
                audience,
            );
        }
        if ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
            return Self::new(
                EncodingKey::from_ed_der(der),
                jsonwebtoken::Algorithm::EdDSA,
                issuer,
                audience,
            );
        }
        Err(wrong())
    }

    /// A signer with a fresh P-256 key (for demos and tests: the key dies with the process).
    pub fn generate_es256(issuer: &str, audience: &str) -> Result<Self, ConfigError> {
        crate::crypto::install();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| ConfigError::InvalidKey("cannot generate a key".into()))?;
        Self::new(
            EncodingKey::from_ec_der(pkcs8.as_ref()),
            jsonwebtoken::Algorithm::ES256,
            issuer,
            audience,
        )
    }

    fn new(
        key: EncodingKey,
        alg: jsonwebtoken::Algorithm,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, ConfigError> {
        let invalid = |e: jsonwebtoken::errors::Error| ConfigError::InvalidKey(e.to_string());
        let mut jwk = Jwk::from_encoding_key(&key, alg).map_err(invalid)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(invalid)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let public =
            serde_json::to_value(&jwk).map_err(|e| ConfigError::InvalidKey(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                key,
                alg,
                kid,
                public,
                issuer: issuer.into(),
                audience: audience.into(),
                ttl: 60,
                header: HeaderName::from_static(DEFAULT_ASSERTION_HEADER),
                clock: Arc::new(SystemClock),
            }),
        })
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// How long an assertion is valid (default 60 s, whole seconds, at least 1).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.inner_mut().ttl = ttl.as_secs().max(1);
        self
    }

    /// The header the assertion goes in (default `x-portcullis-assertion`).
    pub fn header(mut self, name: HeaderName) -> Self {
        self.inner_mut().header = name;
        self
    }

    /// The clock `iat` and `exp` are read from.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.inner_mut().clock = Arc::new(clock);
        self
    }

    /// The header name.
    pub fn header_name(&self) -> &HeaderName {
        &self.inner.header
    }

    /// The key id (the RFC 7638 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The public key set the upstream verifies assertions with.
    pub fn jwks(&self) -> Value {
        serde_json::json!({ "keys": [self.inner.public.clone()] })
    }

    /// Signs an assertion for `identity` with `claims` (header name → value) added.
    pub fn sign(
        &self,
        identity: &Identity,
        claims: Map<String, Value>,
    ) -> Option<(HeaderValue, u64)> {
        let inner = &*self.inner;
        let now = inner.clock.now_secs();
        let mut exp = now + inner.ttl;
        if let Some(token_exp) = identity.expires_at() {
            exp = exp.min(token_exp);
        }
        if exp <= now {
            return None;
        }
        let mut body = claims;
        body.insert("iss".into(), Value::from(&*inner.issuer));
        body.insert("aud".into(), Value::from(&*inner.audience));
        if let Some(sub) = identity.subject() {
            body.insert("sub".into(), Value::from(sub));
        }
        body.insert("iat".into(), Value::from(now));
        body.insert("exp".into(), Value::from(exp));
        let mut header = Header::new(inner.alg);
        header.kid = Some(inner.kid.clone());
        let token = jsonwebtoken::encode(&header, &body, &inner.key).ok()?;
        let refresh_after = exp - (exp - now) / 4;
        Some((HeaderValue::try_from(token).ok()?, refresh_after))
    }

    /// The assertion for `identity`, from `slot` while it is fresh, signed anew otherwise.
    pub(crate) fn cached(
        &self,
        slot: &RwLock<Option<(HeaderValue, u64)>>,
        identity: &Identity,
        claims: impl FnOnce() -> Map<String, Value>,
    ) -> Option<HeaderValue> {
        let now = self.inner.clock.now_secs();
        if let Some((value, refresh_after)) = &*slot.read().unwrap_or_else(PoisonError::into_inner)
            && now < *refresh_after
        {
            return Some(value.clone());
        }
        let (value, refresh_after) = self.sign(identity, claims())?;
        *slot.write().unwrap_or_else(PoisonError::into_inner) =
            Some((value.clone(), refresh_after));
        Some(value)
    }
}
