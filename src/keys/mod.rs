//! Verification keys: the key set an issuer signs with, and where it comes from.
//!
//! A [`Key`] is parsed once, at load, from PEM (SPKI or PKCS#1 public keys), a JWK, or an
//! HMAC secret, and bound to the one [`KeyKind`] it can verify: an RSA key never verifies an
//! HS256 token, a P-256 key never an ES384 one. A [`KeySet`] is an immutable, cheaply cloned
//! list of keys; a [`KeySource`] hands out the current set and is told about unknown key ids,
//! which is all a remote JWKS source needs to plug in.
//!
//! # Example
//!
//! ```
//! use portcullis::crypto::Algorithm;
//! use portcullis::keys::{Key, KeySet};
//!
//! let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed-1",
//!     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
//! let keys = KeySet::from_jwks(jwks).unwrap();
//! assert_eq!(keys.len(), 1);
//! assert!(keys.keys()[0].allows(Algorithm::EdDSA));
//! assert!(!keys.keys()[0].allows(Algorithm::HS256));
//!
//! let secret = KeySet::new([Key::hmac(b"0123456789abcdef0123456789abcdef").unwrap().with_kid("h1")]);
//! assert!(secret.keys()[0].allows(Algorithm::HS256));
//! assert!(!secret.keys()[0].allows(Algorithm::HS512)); // 32 bytes are too short for HS512
//! ```

mod jwk;
#[cfg(feature = "jwks")]
mod jwks;
mod pem;

#[cfg(feature = "jwks")]
pub use jwks::{JwksError, RemoteJwks, RemoteJwksBuilder, Startup};

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ring::{digest, hmac, signature as sig};

use crate::crypto::{Algorithm, KeyKind};
use crate::error::ConfigError;

/// One verification key, bound to its kind and optionally to one algorithm and a key id.
pub struct Key {
    kid: Option<Box<str>>,
    alg: Option<Algorithm>,
    material: Material,
    fingerprint: [u8; 32],
    revoked: AtomicBool,
}

struct HmacKeys {
    len: usize,
    hs256: hmac::Key,
    hs384: hmac::Key,
    hs512: hmac::Key,
}

enum Material {
    Hmac(Box<HmacKeys>),
    /// A PKCS#1 `RSAPublicKey`.
    Rsa(Box<[u8]>),
    /// An uncompressed point.
    Ec(KeyKind, Box<[u8]>),
    Ed25519(Box<[u8]>),
}

impl Key {
    /// An HMAC secret. HS256 needs at least 32 bytes, HS384 48, HS512 64 (RFC 7518 §3.2);
    /// the key verifies only the HS algorithms its length allows.
    pub fn hmac(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError::WeakSecret { len: secret.len() });
        }
        Ok(Self::from_material(
            Material::Hmac(Box::new(HmacKeys {
                len: secret.len(),
                hs256: hmac::Key::new(hmac::HMAC_SHA256, secret),
                hs384: hmac::Key::new(hmac::HMAC_SHA384, secret),
                hs512: hmac::Key::new(hmac::HMAC_SHA512, secret),
            })),
            &[b"oct:", secret],
        ))
    }

    /// An RSA public key from its big-endian modulus and exponent. The modulus must be 2048 to
    /// 8192 bits long.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, ConfigError> {
        let der = crate::der::encode_rsa_public_key(n, e);
        Self::rsa_pkcs1(&der)
    }

    pub(crate) fn rsa_pkcs1(der: &[u8]) -> Result<Self, ConfigError> {
        let (n, e) = crate::der::decode_rsa_public_key(der)
            .ok_or_else(|| ConfigError::InvalidKey("malformed RSA public key".into()))?;
        let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
        if !(2048..=8192).contains(&bits) {
            return Err(ConfigError::InvalidKey(format!(
                "an RSA modulus of {bits} bits is outside 2048..=8192"
            )));
        }
        if e.is_empty() || e.len() > 4 {
            return Err(ConfigError::InvalidKey("bad RSA exponent".into()));
        }
        Ok(Self::from_material(
            Material::Rsa(der.into()),
            &[b"rsa:", der],
        ))
    }

    /// An EC public key on P-256 or P-384 from its uncompressed point (`04 ‖ x ‖ y`).
    pub fn ec(point: &[u8]) -> Result<Self, ConfigError> {
        let kind = match point {
            [4, rest @ ..] if rest.len() == 64 => KeyKind::EcP256,
            [4, rest @ ..] if rest.len() == 96 => KeyKind::EcP384,
            _ => {
                return Err(ConfigError::InvalidKey(
                    "an EC key must be an uncompressed P-256 or P-384 point".into(),
                ));
            }
        };
        Ok(Self::from_material(
            Material::Ec(kind, point.into()),
            &[b"ec:", point],
        ))
    }

    /// An Ed25519 public key (32 bytes).
    pub fn ed25519(public: &[u8]) -> Result<Self, ConfigError> {
        if public.len() != 32 {
            return Err(ConfigError::InvalidKey(
                "an Ed25519 public key is 32 bytes".into(),
            ));
        }
        Ok(Self::from_material(
            Material::Ed25519(public.into()),
            &[b"ed25519:", public],
        ))
    }

    /// One public key from a PEM block (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, ConfigError> {
        let mut keys = pem::parse_pem(pem)?;
        match (keys.pop(), keys.is_empty()) {
            (Some(key), true) => Ok(key),
            _ => Err(ConfigError::InvalidKey(
                "expected exactly one PEM public key".into(),
            )),
        }
    }

    /// One key from a JWK document. Symmetric (`oct`) keys are accepted here, since the
    /// document is local configuration.
    pub fn from_jwk(json: &str) -> Result<Self, ConfigError> {
        jwk::parse_jwk(json, jwk::Trust::Local)?
            .ok_or_else(|| ConfigError::InvalidJwks("the key is not a signature key".into()))
    }

    fn from_material(material: Material, parts: &[&[u8]]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in parts {
            ctx.update(part);
        }
        let mut fingerprint = [0; 32];
        fingerprint.copy_from_slice(ctx.finish().as_ref());
        Key {
            kid: None,
            alg: None,
            material,
            fingerprint,
            revoked: AtomicBool::new(false),
        }
    }

    /// Sets the key id tokens name this key by.
    pub fn with_kid(mut self, kid: impl Into<Box<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Pins the key to one algorithm, which must suit its kind.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Result<Self, ConfigError> {
        if !self.suits(alg) {
            return Err(ConfigError::InvalidKey(format!(
                "a {:?} key cannot verify {alg}",
                self.kind()
            )));
        }
        self.alg = Some(alg);
        Ok(self)
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is pinned to, if any.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.alg
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        match &self.material {
            Material::Hmac(_) => KeyKind::Hmac,
            Material::Rsa(_) => KeyKind::Rsa,
            Material::Ec(kind, _) => *kind,
            Material::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn allows(&self, alg: Algorithm) -> bool {
        let pinned = match self.alg {
            None => true,
            Some(Algorithm::EdDSA | Algorithm::Ed25519) => alg.key_kind() == KeyKind::Ed25519,
            Some(pinned) => pinned == alg,
        };
        pinned && self.suits(alg)
    }

    fn suits(&self, alg: Algorithm) -> bool {
        if alg.key_kind() != self.kind() {
            return false;
        }
        match (&self.material, alg) {
            (Material::Hmac(keys), Algorithm::HS384) => keys.len >= 48,
            (Material::Hmac(keys), Algorithm::HS512) => keys.len >= 64,
            _ => true,
        }
    }

    /// Whether `signature` over `message` verifies under this key with `alg`. HMAC tags are
    /// compared in constant time; ECDSA signatures must be the fixed-length `r ‖ s` form with
    /// `r` and `s` in `1..n`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.allows(alg) {
            return false;
        }
        if alg
            .fixed_signature_len()
            .is_some_and(|len| len != signature.len())
        {
            return false;
        }
        match &self.material {
            Material::Hmac(keys) => {
                let key = match alg {
                    Algorithm::HS256 => &keys.hs256,
                    Algorithm::HS384 => &keys.hs384,
                    _ => &keys.hs512,
                };
                hmac::verify(key, message, signature).is_ok()
            }
            Material::Rsa(public) | Material::Ec(_, public) | Material::Ed25519(public) => {
                alg.ring_verification().is_some_and(|ring_alg| {
                    sig::UnparsedPublicKey::new(ring_alg, public)
                        .verify(message, signature)
                        .is_ok()
                })
            }
        }
    }

    /// Whether two keys are the same key material under the same id.
    pub fn same_as(&self, other: &Key) -> bool {
        self.kid == other.kid && self.fingerprint == other.fingerprint && self.alg == other.alg
    }

    /// Revokes the key: it verifies nothing more, and tokens it verified are no longer served
    /// from the cache. A [`KeySource`] that replaces its set does this through
    /// [`KeySet::replace_with`] for every key the new set lacks.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
    }

    /// Whether the key was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the material: an HMAC key is a secret.
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind())
            .field("alg", &self.alg)
            .field("revoked", &self.is_revoked())
            .finish_non_exhaustive()
    }
}

/// An immutable list of keys; clones share it.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Arc<[Arc<Key>]>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

impl KeySet {
    /// A set of these keys.
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Self {
        Self {
            keys: keys.into_iter().map(Arc::new).collect(),
        }
    }

    /// A set with one HMAC secret.
    pub fn hmac(secret: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self::new([Key::hmac(secret)?]))
    }

    /// Every signature key of a JWKS document (`{"keys": [...]}`). Keys marked `use: enc`
    /// are left out; any malformed key is an error, since the document is local configuration.
    pub fn from_jwks(json: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(jwk::parse_jwks(json, jwk::Trust::Local)?))
    }

    /// Every public key in a PEM document (one or more `PUBLIC KEY` / `RSA PUBLIC KEY` blocks).
    pub fn from_pem(pem: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(pem::parse_pem(pem)?))
    }

    /// HMAC secrets from a file: either a JWKS of `oct` keys (several secrets live at once, each
    /// by its `kid`, so a rotation causes no 401s), or the file's bytes as one secret (a final
    /// newline is dropped).
    pub fn hmac_from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::hmac_from_text(&read(path.as_ref())?)
    }

    /// HMAC secrets from an environment variable, read as [`KeySet::hmac_from_file`] reads a
    /// file.
    pub fn hmac_from_env(var: &str) -> Result<Self, ConfigError> {
        let text = std::env::var(var).map_err(|_| ConfigError::Env {
            var: var.to_owned(),
        })?;
        Self::hmac_from_text(&text)
    }

    fn hmac_from_text(text: &str) -> Result<Self, ConfigError> {
        if text.trim_start().starts_with('{') {
            let set = Self::from_jwks(text)?;
            if set.is_empty() || set.keys.iter().any(|k| k.kind() != KeyKind::Hmac) {
                return Err(ConfigError::InvalidJwks(
                    "an HMAC secret set must hold only oct keys".into(),
                ));
            }
            return Ok(set);
        }
        let secret = text.strip_suffix('\n').unwrap_or(text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        Self::hmac(secret.as_bytes())
    }

    /// [`KeySet::from_jwks`] on a file's contents.
    pub fn from_jwks_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_jwks(&read(path.as_ref())?)
    }

    /// [`KeySet::from_pem`] on a file's contents.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_pem(&read(path.as_ref())?)
    }

    /// The keys.
    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether any key is named `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid() == Some(kid))
    }

    /// The set to install in place of this one when a source's keys change: `next`, except
    /// that each key this set already holds (same id, same material) is kept as the same
    /// object, so tokens it verified stay cached; every key of this set that `next` lacks is
    /// revoked, so tokens it verified stop being served from the cache at once.
    pub fn replace_with(&self, next: KeySet) -> Replacement {
        let mut added = 0;
        let keys: Arc<[Arc<Key>]> = next
            .keys
            .iter()
            .map(|key| match self.keys.iter().find(|old| old.same_as(key)) {
                Some(old) => Arc::clone(old),
                None => {
                    added += 1;
                    Arc::clone(key)
                }
            })
            .collect();
        let mut removed = 0;
        for old in self.keys.iter() {
            if !keys.iter().any(|key| Arc::ptr_eq(key, old)) {
                old.revoke();
                removed += 1;
            }
        }
        Replacement {
            keys: KeySet { keys },
            added,
            removed,
        }
    }
}

/// The outcome of [`KeySet::replace_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Replacement {
    /// The set to install.
    pub keys: KeySet,
    /// How many keys are new.
    pub added: usize,
    /// How many keys were revoked.
    pub removed: usize,
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The key set of an issuer is not available (a remote source that has not loaded yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no key set is available yet")]
#[non_exhaustive]
pub struct KeysUnavailable;

impl KeysUnavailable {
    /// The error.
    pub const fn new() -> Self {
        KeysUnavailable
    }
}

impl Default for KeysUnavailable {
    fn default() -> Self {
        Self::new()
    }
}

/// Where an issuer's keys come from.
///
/// The validator asks for the current set on each uncached verification, so an
/// implementation must answer from memory and never wait on the network; a remote source
/// refreshes in the background and installs the set [`KeySet::replace_with`] returns, so cached
/// tokens verified by withdrawn keys are dropped and those of kept keys stay.
pub trait KeySource: Send + Sync + fmt::Debug + 'static {
    /// The keys in hand now.
    fn key_set(&self) -> Result<KeySet, KeysUnavailable>;

    /// Told that a token named a key id the current set lacks. A remote source may start a
    /// refetch (single-flight, rate-limited) in the background; it must return at once.
    fn unknown_kid(&self, kid: &str) {
        let _ = kid;
    }
}

impl KeySource for KeySet {
    fn key_set(&self) -> Result<KeySet, KeysUnavailable> {
        Ok(self.clone())
    }
}

impl<K: KeySource + ?Sized> KeySource for Arc<K> {
    fn key_set(&self) -> Result<KeySet, KeysUnavailable> {
        (**self).key_set()
    }

    fn unknown_kid(&self, kid: &str) {
        (**self).unknown_kid(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_length_rules() {
        assert!(matches!(
            Key::hmac(&[1; 31]),
            Err(ConfigError::WeakSecret { len: 31 })
        ));
        let k48 = Key::hmac(&[1; 48]).unwrap();
        assert!(k48.allows(Algorithm::HS384) && !k48.allows(Algorithm::HS512));
        assert!(!k48.allows(Algorithm::RS256));
    }

    #[test]
    fn pinning_and_kinds() {
        let ed = Key::ed25519(&[7; 32]).unwrap();
        assert!(ed.allows(Algorithm::EdDSA) && ed.allows(Algorithm::Ed25519));
        assert!(ed.with_algorithm(Algorithm::ES256).is_err());
        let ed = Key::ed25519(&[7; 32])
            .unwrap()
            .with_algorithm(Algorithm::Ed25519)
            .unwrap();
        assert!(ed.allows(Algorithm::EdDSA));
        assert!(Key::ec(&[4; 65]).unwrap().allows(Algorithm::ES256));
        assert!(!Key::ec(&[4; 65]).unwrap().allows(Algorithm::ES384));
        assert!(Key::ec(&[4; 64]).is_err());
        assert!(
            Key::rsa(&[0xff; 128], &[1, 0, 1]).is_err(),
            "1024-bit RSA is refused"
        );
    }

    #[test]
    fn hmac_verifies_and_debug_hides_the_secret() {
        let secret = b"a secret of at least thirty-two bytes!";
        let key = Key::hmac(secret).unwrap().with_kid("k");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), b"msg");
        assert!(key.verify(Algorithm::HS256, b"msg", tag.as_ref()));
        assert!(!key.verify(Algorithm::HS256, b"msh", tag.as_ref()));
        assert!(!key.verify(Algorithm::HS256, b"msg", &tag.as_ref()[..31]));
        let debug = format!("{key:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn hmac_secrets_from_text() {
        let one = KeySet::hmac_from_text("0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(one.len(), 1);
        let jwks = r#"{"keys":[{"kty":"oct","kid":"old","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},
            {"kty":"oct","kid":"new","k":"ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA"}]}"#;
        let two = KeySet::hmac_from_text(jwks).unwrap();
        assert!(two.has_kid("old") && two.has_kid("new"));
        assert!(matches!(
            KeySet::hmac_from_text("short"),
            Err(ConfigError::WeakSecret { len: 5 })
        ));
        let err = KeySet::hmac_from_env("PORTCULLIS_TEST_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable PORTCULLIS_TEST_UNSET_VARIABLE is not set or not UTF-8"
        );
    }

    #[test]
    fn rotation_keeps_identical_keys_as_the_same_objects() {
        let a = || Key::hmac(&[1; 32]).unwrap().with_kid("a");
        let b = || Key::hmac(&[2; 32]).unwrap().with_kid("b");
        let first = KeySet::new([a()]);
        let second = first.replace_with(KeySet::new([a(), b()]));
        assert_eq!((second.added, second.removed), (1, 0));
        assert!(Arc::ptr_eq(&first.keys()[0], &second.keys.keys()[0]));
        let third = second.keys.replace_with(KeySet::new([b()]));
        assert_eq!((third.added, third.removed), (0, 1));
        assert!(
            first.keys()[0].is_revoked(),
            "the original object is the one revoked"
        );
        assert!(!third.keys.keys()[0].is_revoked());
    }
}
