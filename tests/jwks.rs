//! Remote key sets against a real HTTP server on 127.0.0.1 that each test controls.
#![cfg(feature = "jwks")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::jwks_server::{JwksServer, Mode};
use common::*;
use jsonwebtoken::Algorithm as Alg;
use portcullis::jwt::{Issuer, JwtError, Validator};
use portcullis::keys::{JwksError, KeySource, RemoteJwks, Startup};
use serde_json::json;

fn validator_for(issuer: &str, keys: RemoteJwks) -> Validator {
    Validator::builder()
        .issuer(Issuer::new(issuer, keys).audiences(["api"]))
        .clock(clock())
        .build()
        .unwrap()
}

/// Claims of `claims("ada")` for another issuer.
fn claims_for(issuer: &str, sub: &str) -> serde_json::Value {
    let mut c = claims(sub);
    c["iss"] = json!(issuer);
    c
}

/// Polls `check` every 10 ms until it holds; fails after 10 s (a bound, not a measurement).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn fetches_before_serving_and_follows_a_rotation() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .unknown_kid_interval(Duration::ZERO)
        .build()
        .await
        .unwrap();
    assert_eq!(server.fetches(), 1);
    let validator = validator_for(&server.issuer(), keys.clone());
    let rs = mint(Alg::RS256, &claims_for(&server.issuer(), "ada"));
    let es = mint(Alg::ES256, &claims_for(&server.issuer(), "bob"));
    assert!(validator.validate(rs.as_bytes()).is_ok());

    // A new key appears at the IdP: the first token naming it gets 401 at once and triggers
    // one refetch in the background; after it, the token verifies.
    server.set_jwks(jwks(&[Alg::RS256, Alg::ES256]));
    assert_eq!(
        validator.validate(es.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    eventually("the refetch", || server.fetches() == 2).await;
    eventually("the new key", || validator.validate(es.as_bytes()).is_ok()).await;

    // The old key disappears: its cached tokens stop being accepted after the next refresh.
    server.set_jwks(jwks(&[Alg::ES256]));
    keys.refresh().await.unwrap();
    assert_eq!(
        validator.validate(rs.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    assert!(validator.validate(es.as_bytes()).is_ok());
}

#[tokio::test]
async fn a_failing_server_keeps_the_last_good_key_set() {
    let server = JwksServer::start(jwks(&[Alg::RS256, Alg::EdDSA])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .timeout(Duration::from_millis(300))
        .max_body(64 * 1024)
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    let token = mint(Alg::EdDSA, &claims_for(&server.issuer(), "ada"));
    let uncached = Validator::builder()
        .issuer(Issuer::new(server.issuer(), keys.clone()).audiences(["api"]))
        .clock(clock())
        .cache_capacity(0)
        .build()
        .unwrap();

    let cases: [(Mode, &str); 5] = [
        (Mode::Down, "connect"),
        (Mode::Status(500), "status"),
        (Mode::Garbage, "malformed"),
        (Mode::Huge(10 * 1024 * 1024), "too_large"),
        (Mode::Slow(Duration::from_secs(5)), "timeout"),
    ];
    for (mode, reason) in cases {
        server.set_mode(mode.clone());
        let err = keys.refresh().await.unwrap_err();
        assert_eq!(err.reason(), reason, "{mode:?}: {err}");
        assert!(
            validator.validate(token.as_bytes()).is_ok(),
            "{mode:?}: cached token"
        );
        assert!(
            uncached.validate(token.as_bytes()).is_ok(),
            "{mode:?}: stale keys still verify"
        );
    }
    // A set with one malformed key and one good one: the good one is installed.
    server.set_mode(Mode::Serve);
    let mut mixed = jwks(&[Alg::ES256]);
    mixed["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}));
    mixed["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
    server.set_jwks(mixed);
    keys.refresh().await.unwrap();
    let set = keys.key_set().unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.has_kid("p256") && !set.has_kid("broken"));
    // An empty set is a failure, not a reason to drop every key.
    server.set_jwks(json!({"keys": []}));
    assert_eq!(keys.refresh().await.unwrap_err().reason(), "malformed");
    assert!(keys.key_set().unwrap().has_kid("p256"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_wait_on_a_hanging_server() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    let good = mint(Alg::RS256, &claims_for(&server.issuer(), "ada"));
    let unknown = mint(Alg::ES256, &claims_for(&server.issuer(), "eve"));
    assert!(validator.validate(good.as_bytes()).is_ok());

    server.set_mode(Mode::Slow(Duration::from_secs(30)));
    let hanging = tokio::spawn({
        let keys = keys.clone();
        async move { keys.refresh().await }
    });
    eventually("the hanging fetch to start", || server.fetches() == 2).await;
    let started = Instant::now();
    for _ in 0..10_000 {
        assert!(validator.validate(good.as_bytes()).is_ok());
    }
    let cached = started.elapsed() / 10_000;
    let started = Instant::now();
    for _ in 0..10_000 {
        assert_eq!(
            validator.validate(unknown.as_bytes()).unwrap_err(),
            JwtError::UnknownKid
        );
    }
    let unknown_kid = started.elapsed() / 10_000;
    // Not a timing assertion: the point is that all of the above finished while the fetch
    // is still hanging. The figures are printed for the record.
    assert!(!hanging.is_finished(), "the fetch still hangs");
    eprintln!(
        "while the JWKS server hangs: cached token {cached:?}, unknown kid {unknown_kid:?} per request"
    );
    hanging.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_storm_causes_exactly_one_fetch() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .build()
        .await
        .unwrap();
    let validator = Validator::builder()
        .issuer(Issuer::new(server.issuer(), keys.clone()).audiences(["api"]))
        .clock(clock())
        .build()
        .unwrap();
    server.set_jwks(jwks(&[Alg::RS256, Alg::ES256]));
    let token = Arc::new(mint(Alg::ES256, &claims_for(&server.issuer(), "ada")));
    let mut tasks = Vec::new();
    for _ in 0..1_000 {
        let (validator, token) = (validator.clone(), Arc::clone(&token));
        tasks.push(tokio::spawn(
            async move { validator.validate(token.as_bytes()) },
        ));
    }
    let mut unknown = 0;
    for task in tasks {
        match task.await.unwrap() {
            Err(JwtError::UnknownKid) => unknown += 1,
            Ok(_) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(unknown > 0);
    eventually("the refetch", || {
        validator.validate(token.as_bytes()).is_ok()
    })
    .await;
    // Another storm within the interval: the kid is known now, and nothing is fetched.
    for _ in 0..1_000 {
        let other = mint(Alg::ES256, &claims_for(&server.issuer(), "x"));
        let _ = validator.validate(other.as_bytes());
    }
    let bogus = mint_raw(
        Alg::ES256,
        r#"{"alg":"ES256","kid":"nope"}"#,
        claims_for(&server.issuer(), "x").to_string().as_bytes(),
    );
    for _ in 0..1_000 {
        assert_eq!(
            validator.validate(bogus.as_bytes()).unwrap_err(),
            JwtError::UnknownKid
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.fetches(),
        2,
        "one start-up fetch and one refetch for the whole storm"
    );
    assert_eq!(keys.fetches(), 2);
    eprintln!("fetches under 1 000 concurrent unknown-kid requests: 1 (plus the start-up fetch)");
}

/// The unknown-kid throttle reads the clock it is given, not the wall: a manual clock that
/// does not move keeps the throttle shut, and moving it past the interval opens it once.
#[tokio::test]
async fn the_unknown_kid_throttle_runs_on_the_injected_clock() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let manual = clock();
    let keys = RemoteJwks::builder(server.jwks_url())
        .unknown_kid_interval(Duration::from_secs(30))
        .clock(manual.clone())
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    let unknown = |kid: &str| {
        mint_raw(
            Alg::ES256,
            &format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
            claims_for(&server.issuer(), "x").to_string().as_bytes(),
        )
    };
    let (first, second) = (unknown("one"), unknown("two"));
    assert_eq!(
        validator.validate(first.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    eventually("the refetch", || keys.fetches() == 2).await;
    // A minute of wall time is not what counts: the manual clock has not moved.
    for _ in 0..100 {
        let _ = validator.validate(second.as_bytes());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        keys.fetches(),
        2,
        "the throttle holds while the clock stands"
    );
    manual.advance(Duration::from_secs(30));
    let _ = validator.validate(second.as_bytes());
    eventually("the next refetch", || keys.fetches() == 3).await;
    let _ = validator.validate(second.as_bytes());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(keys.fetches(), 3, "one refetch per interval");
}

#[tokio::test]
async fn background_refresh_follows_the_interval_and_cache_control() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    server.set_cache_control("public, max-age=0");
    let keys = RemoteJwks::builder(server.jwks_url())
        .refresh_bounds(Duration::from_millis(100), Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    // max-age=0 is held at the 100 ms lower bound: refreshes come, and are conditional.
    eventually("conditional refreshes", || server.not_modified() >= 2).await;
    server.set_jwks(jwks(&[Alg::ES256]));
    let es = mint(Alg::ES256, &claims_for(&server.issuer(), "ada"));
    eventually("the new set", || validator.validate(es.as_bytes()).is_ok()).await;
    // A long max-age is honoured: no more fetches for a while.
    server.set_cache_control("max-age=3600");
    let before = server.fetches();
    eventually("the long max-age to be read", || server.fetches() > before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = server.fetches();
    keys.refresh().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.fetches(), seen + 1, "only the explicit refresh");
}

#[tokio::test]
async fn start_up_policies() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    server.set_mode(Mode::Down);
    let err = RemoteJwks::builder(server.jwks_url())
        .startup_attempts(2)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "connect");
    let keys = RemoteJwks::builder(server.jwks_url())
        .startup_attempts(1)
        .startup(Startup::StartEmpty)
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    let token = mint(Alg::RS256, &claims_for(&server.issuer(), "ada"));
    assert_eq!(
        validator.validate(token.as_bytes()).unwrap_err(),
        JwtError::KeysUnavailable
    );
    server.set_mode(Mode::Serve);
    eventually("the background retry", || {
        validator.validate(token.as_bytes()).is_ok()
    })
    .await;
    assert_eq!(
        RemoteJwks::builder("http://login.example.com/keys")
            .build()
            .await
            .unwrap_err()
            .reason(),
        "insecure_url"
    );
}

#[tokio::test]
async fn discovery() {
    let server = JwksServer::start(jwks(&[Alg::EdDSA])).await;
    let issuer = server.issuer();
    let keys = RemoteJwks::discover(&issuer, RemoteJwks::builder(""))
        .await
        .unwrap();
    assert_eq!(keys.url().unwrap().to_string(), server.jwks_url());
    let validator = validator_for(&issuer, keys);
    assert!(
        validator
            .validate(mint(Alg::EdDSA, &claims_for(&issuer, "ada")).as_bytes())
            .is_ok()
    );
    let keys = RemoteJwks::discover_oauth(&issuer, RemoteJwks::builder(""))
        .await
        .unwrap();
    assert!(keys.key_set().unwrap().has_kid("ed"));

    server.set_discovery_issuer("https://evil.example/");
    let err = RemoteJwks::discover(&issuer, RemoteJwks::builder(""))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        JwksError::IssuerMismatch {
            expected: issuer.clone(),
            found: "https://evil.example/".into()
        }
    );
    // A trailing slash is part of the issuer: exact match means exactly that.
    server.set_discovery_issuer(&issuer);
    let err = RemoteJwks::discover(&format!("{issuer}/"), RemoteJwks::builder(""))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "issuer_mismatch");
}

#[tokio::test]
async fn each_issuer_has_its_own_keys() {
    let a = JwksServer::start(jwks(&[Alg::RS256])).await;
    let b = JwksServer::start(jwks(&[Alg::ES256])).await;
    let validator = Validator::builder()
        .issuer(
            Issuer::new(
                a.issuer(),
                RemoteJwks::builder(a.jwks_url()).build().await.unwrap(),
            )
            .audiences(["api"]),
        )
        .issuer(
            Issuer::new(
                b.issuer(),
                RemoteJwks::builder(b.jwks_url()).build().await.unwrap(),
            )
            .audiences(["api"]),
        )
        .clock(clock())
        .build()
        .unwrap();
    assert!(
        validator
            .validate(mint(Alg::RS256, &claims_for(&a.issuer(), "ada")).as_bytes())
            .is_ok()
    );
    assert!(
        validator
            .validate(mint(Alg::ES256, &claims_for(&b.issuer(), "ada")).as_bytes())
            .is_ok()
    );
    // Signed with A's key, claiming B.
    let forged = mint(Alg::RS256, &claims_for(&b.issuer(), "admin"));
    assert_eq!(
        validator.validate(forged.as_bytes()).unwrap_err(),
        JwtError::UnknownKid
    );
    let payload = claims_for(&b.issuer(), "admin").to_string();
    let forged = mint_raw(Alg::RS256, r#"{"alg":"RS256"}"#, payload.as_bytes());
    assert_eq!(
        validator.validate(forged.as_bytes()).unwrap_err(),
        JwtError::NoMatchingKey
    );
}

#[tokio::test]
async fn background_refresh_on_a_paused_clock() {
    let server = JwksServer::start(jwks(&[Alg::RS256])).await;
    let keys = RemoteJwks::builder(server.jwks_url())
        .refresh_interval(Duration::from_secs(300))
        .build()
        .await
        .unwrap();
    let validator = validator_for(&server.issuer(), keys.clone());
    let es = mint(Alg::ES256, &claims_for(&server.issuer(), "ada"));
    server.set_jwks(jwks(&[Alg::ES256]));

    // Let the background task reach its sleep, so its deadline is taken before the pause.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Time stands still for the scheduler: 299 s pass and nothing is fetched.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(server.fetches(), 1);
    // Past the interval the refresh starts; the clock runs again for its real I/O and timeout.
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    eventually("the scheduled refresh", || server.fetches() == 2).await;
    eventually("the new key", || validator.validate(es.as_bytes()).is_ok()).await;
}

#[tokio::test]
async fn discovery_waits_for_a_provider_that_is_not_up_yet() {
    let server = JwksServer::start(jwks(&[Alg::EdDSA])).await;
    let issuer = server.issuer();
    server.set_mode(Mode::Down);
    // It comes up while start-up is still retrying (100, 200, 400, 800 ms apart).
    let up = {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            server.set_mode(Mode::Serve);
        })
    };
    let keys = RemoteJwks::discover(&issuer, RemoteJwks::builder(""))
        .await
        .expect("discovery retried until the provider answered");
    up.await.unwrap();
    assert_eq!(keys.url().unwrap().to_string(), server.jwks_url());
    assert!(keys.key_set().unwrap().has_kid("ed"));
}

#[tokio::test]
async fn discovery_against_a_provider_that_stays_down() {
    let server = JwksServer::start(jwks(&[Alg::EdDSA])).await;
    let issuer = server.issuer();
    server.set_mode(Mode::Down);
    // Required keys: an error once the attempts are spent, naming the metadata URL.
    let err = RemoteJwks::discover(&issuer, RemoteJwks::builder("").startup_attempts(2))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(".well-known/openid-configuration"),
        "{err}"
    );
    // Started empty: no URL and no keys yet, then both once the provider is up.
    let keys = RemoteJwks::discover(
        &issuer,
        RemoteJwks::builder("")
            .startup_attempts(1)
            .startup(Startup::StartEmpty),
    )
    .await
    .unwrap();
    assert!(keys.url().is_none() && keys.key_set().is_err());
    let validator = validator_for(&issuer, keys.clone());
    let token = mint(Alg::EdDSA, &claims_for(&issuer, "ada"));
    assert_eq!(
        validator.validate(token.as_bytes()).unwrap_err().reason(),
        "keys_unavailable"
    );
    server.set_mode(Mode::Serve);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while keys.key_set().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "found in the background"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys.url().unwrap().to_string(), server.jwks_url());
    assert!(validator.validate(token.as_bytes()).is_ok());
}
