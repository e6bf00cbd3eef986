//! Metrics (feature `metrics`) through a real recorder, the Prometheus exporter, installed for
//! the whole process (its own test binary): decisions by outcome and reason, the latency
//! histogram, rate-limit results, key fetches against a real JWKS server, and store errors
//! against a real redis-server that goes away.
#![cfg(feature = "metrics")]

mod common;

use std::convert::Infallible;
use std::num::NonZeroU32;

use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use metrics_exporter_prometheus::PrometheusBuilder;
use portcullis::jwt::JwtAuthLayer;
use portcullis::propagate::PropagateLayer;
use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
use tower::{Layer, ServiceExt, service_fn};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// The value of the sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_histogram_reach_the_recorder() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();

    let limit = Limit::new(
        "per-user",
        "claim:sub".parse().unwrap(),
        Quota::per_hour(n(60)).burst(n(1)),
    )
    .unwrap();
    let shadow = Limit::new(
        "shadowed",
        "claim:sub".parse().unwrap(),
        Quota::per_hour(n(60)).burst(n(1)),
    )
    .unwrap();
    let validator = validator(clock(), 100);
    let stack = PropagateLayer::new().layer(JwtAuthLayer::new(validator.clone()).layer(
        RateLimitLayer::new([limit]).layer(RateLimitLayer::new([shadow]).shadow(true).layer(
            service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }),
        )),
    ));
    let token = format!("Bearer {}", mint(Alg::ES256, &claims("ada")));
    let send = |auth: Option<&str>| {
        let mut request = Request::get("/");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        stack.clone().oneshot(request.body(String::new()).unwrap())
    };
    assert_eq!(send(Some(&token)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        send(Some(&token)).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(Some("Bearer a.b.c")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The token cache's figures: ada's token verified once (a miss), then read from the
    // cache (a hit); `a.b.c` was looked up, not found and verified (a miss), and refused.
    let stats = validator.cache_stats();
    assert_eq!(
        (stats.entries, stats.hits, stats.misses),
        (1, 1, 2),
        "{stats:?}"
    );
    stats.record();

    let text = handle.render();
    let count =
        |prefix: &str| sample(&text, prefix).unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    assert_eq!(count("portcullis_token_cache_entries"), 1.0);
    assert_eq!(count("portcullis_token_cache_hits_total"), 1.0);
    assert_eq!(count("portcullis_token_cache_misses_total"), 2.0);
    assert_eq!(count("portcullis_token_cache_evictions_total"), 0.0);
    assert_eq!(count("portcullis_token_cache_not_admitted_total"), 0.0);
    assert_eq!(count("portcullis_token_cache_bytes"), stats.bytes as f64);
    assert_eq!(
        count("portcullis_token_cache_budget_bytes"),
        portcullis::jwt::DEFAULT_CACHE_BUDGET as f64
    );
    assert_eq!(
        count(r#"portcullis_decisions_total{outcome="allowed",reason="none"}"#),
        1.0
    );
    assert_eq!(
        count(r#"portcullis_decisions_total{outcome="rejected",reason="rate_limited"}"#),
        1.0
    );
    assert_eq!(
        count(r#"portcullis_decisions_total{outcome="rejected",reason="token_missing"}"#),
        1.0
    );
    assert_eq!(
        count(r#"portcullis_decisions_total{outcome="rejected",reason="malformed_token"}"#),
        1.0
    );
    assert_eq!(count("portcullis_decision_seconds_count"), 4.0);
    assert_eq!(
        count(r#"portcullis_rate_limit_total{limit="per-user",result="admitted"}"#),
        1.0
    );
    assert_eq!(
        count(r#"portcullis_rate_limit_total{limit="per-user",result="denied"}"#),
        1.0
    );
    assert_eq!(
        count(r#"portcullis_rate_limit_total{limit="shadowed",result="admitted"}"#),
        1.0
    );

    // Every limit is counted, the ninth too.
    let nine = RateLimitLayer::new((0..9).map(|i| {
        Limit::new(
            &format!("m{i}"),
            "global".parse().unwrap(),
            Quota::per_hour(n(60)),
        )
        .unwrap()
    }))
    .layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let response = nine
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = handle.render();
    for i in [0, 8] {
        let line = format!(r#"portcullis_rate_limit_total{{limit="m{i}",result="admitted"}}"#);
        assert_eq!(sample(&text, &line), Some(1.0), "{line}");
    }

    #[cfg(feature = "jwks")]
    {
        use common::jwks_server::{JwksServer, Mode};
        let server = JwksServer::start(jwks(&[Alg::ES256])).await;
        let keys = portcullis::keys::RemoteJwks::builder(server.jwks_url())
            .build()
            .await
            .unwrap();
        server.set_mode(Mode::Status(500));
        assert!(keys.refresh().await.is_err());
        let text = handle.render();
        assert_eq!(
            sample(&text, r#"portcullis_key_fetches_total{outcome="updated"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"portcullis_key_fetches_total{outcome="error"}"#),
            Some(1.0),
            "{text}"
        );
    }

    #[cfg(feature = "redis")]
    {
        use portcullis::rate_limit::RedisStore;
        let mut redis = common::redis_server::RedisServer::start();
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        let limit = Limit::new("shared", "global".parse().unwrap(), Quota::per_hour(n(60)))
            .unwrap()
            .redis(store);
        let limited = RateLimitLayer::new([limit]).layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        redis.stop();
        let response = limited.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = handle.render();
        assert_eq!(
            sample(
                &text,
                r#"portcullis_rate_limit_store_errors_total{limit="shared"}"#
            ),
            Some(1.0),
            "{text}"
        );
    }
}
