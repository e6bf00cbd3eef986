//! An application on jsonwebtoken 12 that installs its own crypto provider before portcullis:
//! `install()` leaves it in place, `jsonwebtoken::encode` keeps using the application's choice,
//! and portcullis verifies with ring directly, never through that provider.
//!
//! A file of its own: the provider is process-wide, and every other test binary installs ring's.

mod common;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::{Algorithm as Alg, DecodingKey, EncodingKey, Header};
use portcullis::crypto::{Installed, RING_PROVIDER, install};

static SIGNERS: AtomicUsize = AtomicUsize::new(0);
static VERIFIERS: AtomicUsize = AtomicUsize::new(0);

fn counted_signer(
    alg: &Alg,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    SIGNERS.fetch_add(1, Ordering::SeqCst);
    (RING_PROVIDER.signer_factory)(alg, key)
}

fn counted_verifier(
    alg: &Alg,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    VERIFIERS.fetch_add(1, Ordering::SeqCst);
    (RING_PROVIDER.verifier_factory)(alg, key)
}

/// The application's own provider: ring's factories behind a counter, so the test can see
/// whose provider each call went through.
static APPLICATION: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: counted_signer,
    verifier_factory: counted_verifier,
    ..RING_PROVIDER.clone()
});

#[test]
fn an_application_provider_installed_first_stays_and_portcullis_verifies_without_it() {
    APPLICATION.install_default().unwrap();
    assert_eq!(install(), Installed::Other);
    assert_eq!(install(), Installed::Other, "idempotent");
    let active = CryptoProvider::try_get_default().unwrap();
    assert!(
        std::ptr::eq(active, &*APPLICATION),
        "the application's provider is still the one"
    );

    // The application's own jsonwebtoken calls go through its provider.
    let secret = common::HMAC_SECRET;
    let mut claims = common::claims("ada");
    claims["iss"] = common::ISS_H.into();
    let mut header = Header::new(Alg::HS256);
    header.kid = Some("h".into());
    let token =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap();
    assert_eq!(SIGNERS.load(Ordering::SeqCst), 1);
    let mut validation = jsonwebtoken::Validation::new(Alg::HS256);
    validation.validate_exp = false;
    validation.set_audience(&["api"]);
    jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &DecodingKey::from_secret(secret).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(VERIFIERS.load(Ordering::SeqCst), 1);

    // portcullis builds its validator (which calls install) and verifies with ring directly.
    let validator = common::validator(common::clock(), 16);
    let identity = validator.validate(token.as_bytes()).unwrap();
    assert_eq!(identity.subject(), Some("ada"));
    let rs = {
        let (key, kid) = (
            EncodingKey::from_rsa_pem(common::RSA_PRIVATE.as_bytes()).unwrap(),
            "rsa",
        );
        let mut header = Header::new(Alg::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &common::claims("grace"), &key).unwrap()
    };
    assert_eq!(SIGNERS.load(Ordering::SeqCst), 2);
    assert_eq!(
        validator.validate(rs.as_bytes()).unwrap().subject(),
        Some("grace")
    );
    assert_eq!(
        VERIFIERS.load(Ordering::SeqCst),
        1,
        "portcullis never verified through jsonwebtoken's provider"
    );
}
