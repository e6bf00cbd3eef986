//! Algorithms, and a `jsonwebtoken` `CryptoProvider` backed by `ring`.
//!
//! [`RING_PROVIDER`] is a [`CryptoProvider`] for `jsonwebtoken`. portcullis verifies tokens
//! with `ring` directly (see [`Validator`](crate::jwt::Validator)), never through
//! `jsonwebtoken`'s process-wide provider. It still depends on `jsonwebtoken`
//! with its crypto features off, so an application that uses both crates never meets the
//! "no provider" or "two providers" panic: [`install`] puts [`RING_PROVIDER`] in place, and the
//! crate calls it wherever it could reach `jsonwebtoken`'s provider (building a
//! [`Validator`](crate::jwt::Validator) does).
//!
//! # When the application installed another provider first
//!
//! `jsonwebtoken` accepts one process-wide provider, first come first served. If the
//! application installed its own (aws-lc-rs or RustCrypto) before portcullis, [`install`]
//! leaves it in place and returns [`Installed::Other`]: `jsonwebtoken::encode`/`decode` keep
//! using the application's choice, and portcullis' own verification is unaffected because it
//! does not go through that provider.
//!
//! # Which `jsonwebtoken`
//!
//! portcullis depends on `jsonwebtoken` 12 with no default features (no `use_pem`, no crypto
//! backend). An application on `jsonwebtoken` 12 shares that one copy, so [`install`] serves
//! its `encode` and `decode` too. An application still on 11 or earlier links a second copy of
//! `jsonwebtoken` with a provider slot of its own, which [`install`] does not reach: that copy
//! needs its own provider (its `rust_crypto` or `aws_lc_rs` feature, or an explicit install).
//!
//! # Example
//!
//! ```
//! use jsonwebtoken::{decode, encode, DecodingKey, EncodingKey, Header, Validation};
//!
//! portcullis::crypto::install();
//! let secret = b"a secret of at least thirty-two bytes!";
//! let token = encode(&Header::default(), &serde_json::json!({"sub": "ada", "exp": 4_000_000_000u64}),
//!     &EncodingKey::from_secret(secret).unwrap()).unwrap();
//! let data = decode::<serde_json::Value>(&token, &DecodingKey::from_secret(secret).unwrap(),
//!     &Validation::default()).unwrap();
//! assert_eq!(data.claims["sub"], "ada");
//! ```

use std::fmt;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtLibError, ErrorKind as JwtLibErrorKind, new_error};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair as _};
use ring::{digest, hmac};

/// A JWS signature algorithm (RFC 7518, RFC 8037, RFC 9864).
///
/// `none` is not an algorithm here: a token that names it is always rejected.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA (RFC 8037); only Ed25519 keys are supported.
    EdDSA,
    /// Ed25519, the fully-specified name of RFC 9864.
    Ed25519,
}

/// The kind of key an [`Algorithm`] verifies with. An algorithm never verifies with a key of
/// another kind: an RSA public key is never used as an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// A shared HMAC secret.
    Hmac,
    /// An RSA public key.
    Rsa,
    /// An EC public key on P-256.
    EcP256,
    /// An EC public key on P-384.
    EcP384,
    /// An Ed25519 public key.
    Ed25519,
}

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::Ed25519,
    ];

    /// The algorithm's registered name, as it appears in a JOSE header.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::Ed25519 => "Ed25519",
        }
    }

    /// Looks an algorithm up by its exact, case-sensitive name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The kind of key this algorithm verifies with.
    pub const fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyKind::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyKind::Rsa,
            Algorithm::ES256 => KeyKind::EcP256,
            Algorithm::ES384 => KeyKind::EcP384,
            Algorithm::EdDSA | Algorithm::Ed25519 => KeyKind::Ed25519,
        }
    }

    /// The same algorithm as `jsonwebtoken` names it (`Ed25519` maps to `EdDSA`).
    pub const fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            Algorithm::HS512 => jsonwebtoken::Algorithm::HS512,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
            Algorithm::PS512 => jsonwebtoken::Algorithm::PS512,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            Algorithm::EdDSA | Algorithm::Ed25519 => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    /// The algorithm `jsonwebtoken` names `alg`.
    pub fn from_jsonwebtoken(alg: jsonwebtoken::Algorithm) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|ours| ours.to_jsonwebtoken() == alg)
    }

    pub(crate) fn hmac(self) -> Option<hmac::Algorithm> {
        match self {
            Algorithm::HS256 => Some(hmac::HMAC_SHA256),
            Algorithm::HS384 => Some(hmac::HMAC_SHA384),
            Algorithm::HS512 => Some(hmac::HMAC_SHA512),
            _ => None,
        }
    }

    /// The ring verification algorithm for a public-key algorithm.
    pub(crate) fn ring_verification(self) -> Option<&'static dyn sig::VerificationAlgorithm> {
        Some(match self {
            Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
            // The FIXED forms take exactly r‖s and reject r or s of 0 or not below the order.
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA | Algorithm::Ed25519 => &sig::ED25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => return None,
        })
    }

    /// The exact signature length for fixed-length algorithms (ECDSA r‖s, Ed25519).
    pub(crate) const fn fixed_signature_len(self) -> Option<usize> {
        match self {
            Algorithm::ES256 | Algorithm::EdDSA | Algorithm::Ed25519 => Some(64),
            Algorithm::ES384 => Some(96),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`install`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// [`RING_PROVIDER`] is `jsonwebtoken`'s process-wide provider (now, or already).
    Ring,
    /// The application installed another provider first; it stays in place.
    Other,
}

/// Installs [`RING_PROVIDER`] as `jsonwebtoken`'s process-wide provider unless one is
/// already installed. Idempotent and cheap; safe to call from any thread, any number of times.
pub fn install() -> Installed {
    if RING_PROVIDER.install_default().is_ok() {
        return Installed::Ring;
    }
    // `install_default` hands back the provider it was given, not the one in place: ask.
    match CryptoProvider::try_get_default() {
        Some(active) if std::ptr::eq(active, &RING_PROVIDER) => Installed::Ring,
        _ => Installed::Other,
    }
}

/// A `jsonwebtoken` provider backed by `ring`: HS256/384/512, RS256/384/512, PS256/384/512,
/// ES256/384 and EdDSA (Ed25519).
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_components_from_private_key,
        compute_digest,
    },
};

fn invalid(kind: JwtLibErrorKind) -> JwtLibError {
    new_error(kind)
}

fn ours(alg: &jsonwebtoken::Algorithm) -> Result<Algorithm, JwtLibError> {
    Algorithm::from_jsonwebtoken(*alg).ok_or_else(|| invalid(JwtLibErrorKind::InvalidAlgorithm))
}

enum SigningKey {
    Hmac(hmac::Key),
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

struct RingSigner {
    alg: jsonwebtoken::Algorithm,
    key: SigningKey,
}

fn rsa_key_pair(der: &[u8]) -> Result<sig::RsaKeyPair, JwtLibError> {
    sig::RsaKeyPair::from_der(der)
        .or_else(|_| sig::RsaKeyPair::from_pkcs8(der))
        .map_err(|e| invalid(JwtLibErrorKind::InvalidRsaKey(e.to_string())))
}

fn ecdsa_signing(alg: Algorithm) -> &'static sig::EcdsaSigningAlgorithm {
    if alg == Algorithm::ES384 {
        &sig::ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &sig::ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

fn new_signer(
    alg: &jsonwebtoken::Algorithm,
    key: &EncodingKey,
) -> Result<Box<dyn JwtSigner>, JwtLibError> {
    let ours = ours(alg)?;
    let bytes = key.as_bytes();
    let key = match ours.key_kind() {
        KeyKind::Hmac => SigningKey::Hmac(hmac::Key::new(
            ours.hmac()
                .ok_or_else(|| invalid(JwtLibErrorKind::InvalidAlgorithm))?,
            bytes,
        )),
        KeyKind::Rsa => {
            let encoding: &'static dyn sig::RsaEncoding = match ours {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                _ => &sig::RSA_PSS_SHA512,
            };
            SigningKey::Rsa(rsa_key_pair(bytes)?, encoding)
        }
        KeyKind::EcP256 | KeyKind::EcP384 => SigningKey::Ecdsa(
            sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(ours), bytes, &SystemRandom::new())
                .map_err(|_| invalid(JwtLibErrorKind::InvalidEcdsaKey))?,
        ),
        KeyKind::Ed25519 => SigningKey::Ed25519(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
                .map_err(|_| invalid(JwtLibErrorKind::InvalidEddsaKey))?,
        ),
    };
    Ok(Box::new(RingSigner { alg: *alg, key }))
}

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Hmac(key) => Ok(hmac::sign(key, msg).as_ref().to_vec()),
            SigningKey::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.alg
    }
}

struct RingVerifier {
    alg: Algorithm,
    /// The HMAC secret, or the public key as ring reads it (PKCS#1 DER, EC point, Ed25519).
    material: Vec<u8>,
}

fn new_verifier(
    alg: &jsonwebtoken::Algorithm,
    key: &DecodingKey,
) -> Result<Box<dyn JwtVerifier>, JwtLibError> {
    let ours = ours(alg)?;
    if key.family() != alg.family() {
        return Err(invalid(JwtLibErrorKind::InvalidKeyFormat));
    }
    let material = match key.try_get_as_bytes() {
        Ok(bytes) => bytes.to_vec(),
        // An RSA key held as modulus and exponent: the JWK form is the one public way to them.
        Err(_) => match Jwk::from_decoding_key(key, None)?.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let b64 = |v: &str| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(v)
                        .map_err(|_| invalid(JwtLibErrorKind::InvalidKeyFormat))
                };
                crate::der::encode_rsa_public_key(&b64(&rsa.n)?, &b64(&rsa.e)?)
            }
            _ => return Err(invalid(JwtLibErrorKind::InvalidKeyFormat)),
        },
    };
    Ok(Box::new(RingVerifier {
        alg: ours,
        material,
    }))
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (self.alg.hmac(), self.alg.ring_verification()) {
            (Some(hmac_alg), _) => {
                hmac::verify(&hmac::Key::new(hmac_alg, &self.material), msg, signature).is_ok()
            }
            (None, Some(ring_alg)) => sig::UnparsedPublicKey::new(ring_alg, &self.material)
                .verify(msg, signature)
                .is_ok(),
            (None, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> jsonwebtoken::Algorithm {
        self.alg.to_jsonwebtoken()
    }
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), JwtLibError> {
    let pair = rsa_key_pair(der)?;
    rsa_components_from_public_key(pair.public().as_ref())
}

fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), JwtLibError> {
    let (n, e) = crate::der::decode_rsa_public_key(der)
        .ok_or_else(|| invalid(JwtLibErrorKind::InvalidRsaKey("bad der".into())))?;
    Ok((n.to_vec(), e.to_vec()))
}

fn ec_components_from_private_key(
    der: &[u8],
    alg: jsonwebtoken::Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), JwtLibError> {
    let (curve, coordinate_len) = match alg {
        jsonwebtoken::Algorithm::ES256 => (EllipticCurve::P256, 32),
        jsonwebtoken::Algorithm::ES384 => (EllipticCurve::P384, 48),
        _ => return Err(invalid(JwtLibErrorKind::InvalidEcdsaKey)),
    };
    let ours = Algorithm::from_jsonwebtoken(alg).unwrap_or(Algorithm::ES256);
    let pair = sig::EcdsaKeyPair::from_pkcs8(ecdsa_signing(ours), der, &SystemRandom::new())
        .map_err(|_| invalid(JwtLibErrorKind::InvalidEcdsaKey))?;
    match pair.public_key().as_ref() {
        [4, point @ ..] if point.len() == 2 * coordinate_len => {
            let (x, y) = point.split_at(coordinate_len);
            Ok((curve, x.to_vec(), y.to_vec()))
        }
        _ => Err(invalid(JwtLibErrorKind::InvalidEcdsaKey)),
    }
}

fn ed_components_from_private_key(
    der: &[u8],
    curve: &EllipticCurve,
) -> Result<Vec<u8>, JwtLibError> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(invalid(JwtLibErrorKind::InvalidAlgorithm));
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| invalid(JwtLibErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, JwtLibError> {
    let alg = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(invalid(JwtLibErrorKind::InvalidAlgorithm)),
    };
    Ok(digest::digest(alg, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Algorithm::from_name("rs256"), None);
        assert_eq!(Algorithm::from_name("none"), None);
    }

    #[test]
    fn install_is_idempotent() {
        assert_eq!(install(), Installed::Ring);
        assert_eq!(install(), Installed::Ring);
    }

    #[test]
    fn round_trips_ecdsa_and_eddsa_through_jsonwebtoken() {
        install();
        let rng = SystemRandom::new();
        let es =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
        // jsonwebtoken's JWK export expects OpenSSL's v1 PKCS#8 for Ed25519, so a fixture.
        let ed = include_str!("../tests/keys/ed25519.pem");
        for (alg, enc) in [
            (
                jsonwebtoken::Algorithm::ES256,
                EncodingKey::from_ec_der(es.as_ref()),
            ),
            (
                jsonwebtoken::Algorithm::EdDSA,
                EncodingKey::from_ed_pem(ed.as_bytes()).unwrap(),
            ),
        ] {
            let token =
                jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &enc).unwrap();
            let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap();
            let dec = DecodingKey::from_jwk(&jwk).unwrap();
            let data = jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &dec,
                &jsonwebtoken::Validation::new(alg),
            )
            .unwrap();
            assert_eq!(data.claims["sub"], "x");
        }
    }
}
