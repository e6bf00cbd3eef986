use crate::der::{SpkiAlgorithm, decode_spki};
use crate::error::ConfigError;

use super::Key;

/// Every public key in a PEM document.
pub(super) fn parse_pem(text: &str) -> Result<Vec<Key>, ConfigError> {
    let blocks =
        pem::parse_many(text).map_err(|_| ConfigError::InvalidKey("malformed PEM".into()))?;
    if blocks.is_empty() {
        return Err(ConfigError::InvalidKey("no PEM block found".into()));
    }
    blocks
        .iter()
        .map(|block| match block.tag() {
            "RSA PUBLIC KEY" => Key::rsa_pkcs1(block.contents()),
            "PUBLIC KEY" => match decode_spki(block.contents()) {
                Some((SpkiAlgorithm::Rsa, pkcs1)) => Key::rsa_pkcs1(pkcs1),
                Some((SpkiAlgorithm::EcP256 | SpkiAlgorithm::EcP384, point)) => Key::ec(point),
                Some((SpkiAlgorithm::Ed25519, public)) => Key::ed25519(public),
                None => Err(ConfigError::InvalidKey(
                    "unsupported public key: expected RSA, P-256, P-384 or Ed25519".into(),
                )),
            },
            tag if tag.contains("PRIVATE") => Err(ConfigError::InvalidKey(
                "a private key where a public key belongs".into(),
            )),
            tag => Err(ConfigError::InvalidKey(format!(
                "unsupported PEM block {tag:?}: expected PUBLIC KEY or RSA PUBLIC KEY"
            ))),
        })
        .collect()
}
