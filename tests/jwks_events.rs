//! The events a remote key set emits, captured by a subscriber in a test binary of its own.
#![cfg(feature = "jwks")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::jwks_server::{JwksServer, Mode};
use common::*;
use jsonwebtoken::Algorithm as Alg;
use portcullis::keys::{KeySource, RemoteJwks};
use serde_json::json;

/// A writer that keeps what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn fetch_events_name_the_outcome_and_never_a_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, in a binary of its own: a thread-local subscriber races tracing's per-callsite
    // interest cache with the other tests of a binary.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let mut with_bad = jwks(&[Alg::RS256, Alg::ES256]);
    with_bad["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "EC", "crv": "P-256", "kid": "short", "x": "AA", "y": "AA"}));
    server.set_jwks(with_bad);
    keys.refresh().await.unwrap();
    server.set_mode(Mode::Slow(Duration::from_secs(2)));
    assert!(keys.refresh().await.is_err());
    keys.unknown_kid("rotated");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"))
            .to_owned()
    };
    let first = line("key set updated");
    assert!(
        first.contains("added=1") && first.contains("removed=0") && first.contains("keys=1"),
        "{first}"
    );
    let rotated = log
        .lines()
        .filter(|l| l.contains("key set updated"))
        .nth(1)
        .unwrap();
    assert!(
        rotated.contains("added=1") && rotated.contains("keys=2") && rotated.contains("skipped=1"),
        "{rotated}"
    );
    assert!(line("skipped a malformed key").contains("short"));
    let failed = line("key set fetch failed");
    assert!(
        failed.contains("reason=\"timeout\"") || failed.contains("reason=timeout"),
        "{failed}"
    );
    assert!(line("unknown key id").contains("rotated"));
    // No key material: neither the modulus nor the coordinates of any served key.
    let served = jwks(&[Alg::RS256, Alg::ES256]);
    for key in served["keys"].as_array().unwrap() {
        for member in ["n", "x", "y"] {
            if let Some(value) = key[member].as_str() {
                assert!(!log.contains(&value[..16]), "key material in the log");
            }
        }
    }
}
