//! The Redis store against a real `redis-server` the test starts on a free loopback port.
#![cfg(feature = "redis")]

mod common;

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::*;
use http::{Request, Response, StatusCode};
use portcullis::clock::ManualClock;
use portcullis::rate_limit::{Limit, OnStoreError, Quota, RateLimitLayer, RedisStore};
use tower::{Layer, ServiceExt, service_fn};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

async fn send(layer: &RateLimitLayer) -> (StatusCode, Vec<String>) {
    let service = layer.layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    let ratelimit = response
        .headers()
        .get_all("ratelimit")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (response.status(), ratelimit)
}

fn global(quota: Quota, store: RedisStore) -> Limit {
    Limit::new("shared", "global".parse().unwrap(), quota)
        .unwrap()
        .redis(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_sharing_redis_admit_exactly_what_one_would() {
    let redis = RedisServer::start();
    let quota = Quota::per_hour(n(10));
    let a = RateLimitLayer::new([global(
        quota,
        RedisStore::connect(&redis.url()).await.unwrap(),
    )]);
    let b = RateLimitLayer::new([global(
        quota,
        RedisStore::connect(&redis.url()).await.unwrap(),
    )]);
    let mut admitted = 0;
    let started = Instant::now();
    for i in 0..30 {
        let (status, _) = send(if i % 2 == 0 { &a } else { &b }).await;
        if status == StatusCode::OK {
            admitted += 1;
        } else {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    eprintln!(
        "Redis check through the layer on loopback: {:?} per request",
        started.elapsed() / 30
    );
    assert_eq!(admitted, 10);

    // And concurrently: 200 requests from both at once, on a fresh key.
    let quota = Quota::per_hour(n(50));
    let limit = |store| {
        Limit::new("storm", "global".parse().unwrap(), quota)
            .unwrap()
            .redis(store)
    };
    let a = RateLimitLayer::new([limit(RedisStore::connect(&redis.url()).await.unwrap())]);
    let b = RateLimitLayer::new([limit(RedisStore::connect(&redis.url()).await.unwrap())]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let layer = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { send(&layer).await.0 }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 50);
}

#[tokio::test]
async fn keys_carry_a_ttl_and_a_hash_tag() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    let layer = RateLimitLayer::new([global(Quota::per_minute(n(60)).burst(n(10)), store)]);
    assert_eq!(send(&layer).await.0, StatusCode::OK);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("portcullis:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].starts_with("portcullis:{shared:") && keys[0].ends_with('}'),
        "{}",
        keys[0]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=1_001).contains(&ttl),
        "one unit of one per second: the key expires within a second, got {ttl} ms"
    );
}

#[tokio::test]
async fn a_denied_request_is_refunded_in_redis_too() {
    let redis = RedisServer::start();
    let clock = ManualClock::new(Duration::from_secs(NOW));
    let daily = Limit::new(
        "daily",
        "global".parse().unwrap(),
        Quota::new(n(5), Duration::from_secs(86_400)).unwrap(),
    )
    .unwrap()
    .redis(RedisStore::connect(&redis.url()).await.unwrap());
    let burst = Limit::new("burst", "global".parse().unwrap(), Quota::per_second(n(2))).unwrap();
    let layer = RateLimitLayer::new([daily, burst]).clock(clock.clone());
    assert_eq!(send(&layer).await.0, StatusCode::OK);
    assert_eq!(send(&layer).await.0, StatusCode::OK);
    assert_eq!(send(&layer).await.0, StatusCode::TOO_MANY_REQUESTS);
    clock.advance(Duration::from_secs(1));
    assert_eq!(send(&layer).await.0, StatusCode::OK);
    let (status, ratelimit) = send(&layer).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ratelimit[0].starts_with(r#""daily";r=1;"#),
        "four charges kept, the denied one refunded: {ratelimit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_as_configured_and_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let quota = Quota::per_hour(n(1_000));
    let closed = RateLimitLayer::new([global(
        quota,
        RedisStore::connect(&redis.url()).await.unwrap(),
    )]);
    let open = RateLimitLayer::new([global(
        quota,
        RedisStore::connect(&redis.url())
            .await
            .unwrap()
            .on_error(OnStoreError::FailOpen),
    )]);
    assert_eq!(send(&closed).await.0, StatusCode::OK);
    assert_eq!(send(&open).await.0, StatusCode::OK);

    redis.stop();
    assert_eq!(
        send(&closed).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "fail closed"
    );
    assert_eq!(send(&open).await.0, StatusCode::OK, "fail open");

    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if send(&closed).await.0 == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store reconnects once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_shared_store_path_refuses_through_the_rejection_hook() {
    use portcullis::rate_limit::RateLimitUnavailable;
    use portcullis::reject::{Refused, Rejection};

    let hook = |rejection: &Rejection<'_>| {
        let mut response = Response::new(format!(
            "{} {} {:?}",
            rejection.status().as_u16(),
            rejection.reason(),
            rejection.retry_after()
        ));
        *response.status_mut() = rejection.status();
        response
    };
    let mut redis = RedisServer::start();
    let layer = RateLimitLayer::new([global(
        Quota::per_hour(n(1)),
        RedisStore::connect(&redis.url()).await.unwrap(),
    )])
    .on_rejection(hook);
    let call = || async {
        layer
            .layer(service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }))
            .oneshot(Request::new(String::new()))
            .await
            .unwrap()
    };
    assert_eq!(call().await.status(), StatusCode::OK);
    let denied = call().await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        denied.body().starts_with("429 rate_limited Some("),
        "{}",
        denied.body()
    );
    assert!(denied.headers().contains_key("ratelimit"));

    redis.stop();
    let unavailable = call().await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.body(), "503 rate_limit_store_unavailable None");
    assert_eq!(
        unavailable
            .extensions()
            .get::<Refused>()
            .map(Refused::reason),
        Some("rate_limit_store_unavailable")
    );
    assert!(
        unavailable
            .extensions()
            .get::<RateLimitUnavailable>()
            .is_some()
    );
}
