//! Rate limiting: headers, 429s, several limits, tiers, costs, shadow mode, concurrency, and the
//! GCRA admission bound as a property.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use http::{HeaderName, Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::clock::ManualClock;
use portcullis::jwt::Identity;
use portcullis::rate_limit::{Gcra, decide};
use portcullis::rate_limit::{Limit, PeerAddr, Quota, RateLimitLayer, RateLimited};
use proptest::prelude::*;
use serde_json::json;
use tower::{Layer, ServiceExt, service_fn};

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

fn identity(sub: &str, plan: Option<&str>) -> Arc<Identity> {
    let mut c = claims(sub);
    if let Some(plan) = plan {
        c["plan"] = json!(plan);
    }
    Arc::new(
        validator(clock(), 0)
            .validate_uncached(mint(Alg::ES256, &c).as_bytes())
            .unwrap(),
    )
}

struct Sent {
    status: StatusCode,
    retry_after: Option<String>,
    policy: Vec<String>,
    ratelimit: Vec<String>,
    limited: Option<RateLimited>,
}

fn send(
    layer: &RateLimitLayer,
    identity: Option<Arc<Identity>>,
    peer: Option<&str>,
    headers: &[(&str, &str)],
) -> Sent {
    let service = layer.layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut request = Request::builder().uri("/orders");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut request = request.body(String::new()).unwrap();
    if let Some(identity) = identity {
        request.extensions_mut().insert(identity);
    }
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    }
    let response = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(service.oneshot(request))
        .unwrap();
    let all = |name: &str| {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    Sent {
        status: response.status(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        policy: all("ratelimit-policy"),
        ratelimit: all("ratelimit"),
        limited: response.extensions().get::<RateLimited>().cloned(),
    }
}

fn manual() -> ManualClock {
    ManualClock::new(Duration::from_secs(NOW))
}

#[test]
fn headers_and_429() {
    let limit = Limit::new(
        "default",
        "claim:sub".parse().unwrap(),
        Quota::per_minute(n(3)),
    )
    .unwrap();
    let layer = RateLimitLayer::new([limit]).clock(manual());
    let ada = identity("ada", None);
    let first = send(&layer, Some(ada.clone()), None, &[]);
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.policy, [r#""default";q=3;w=60"#]);
    // `t` is the seconds until more quota is available (draft-ietf-httpapi-ratelimit-headers-10):
    // one unit comes back every 20 s, whatever is left.
    assert_eq!(first.ratelimit, [r#""default";r=2;t=20"#]);
    assert_eq!(
        send(&layer, Some(ada.clone()), None, &[]).ratelimit,
        [r#""default";r=1;t=20"#]
    );
    assert_eq!(
        send(&layer, Some(ada.clone()), None, &[]).ratelimit,
        [r#""default";r=0;t=20"#]
    );
    let denied = send(&layer, Some(ada.clone()), None, &[]);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.retry_after.as_deref(), Some("20"));
    assert_eq!(denied.ratelimit, [r#""default";r=0;t=20"#]);
    assert_eq!(denied.limited.unwrap().limit.as_ref(), "default");
    // Another subject has its own bucket.
    assert_eq!(
        send(&layer, Some(identity("bob", None)), None, &[]).status,
        StatusCode::OK
    );
    // Switched off: no headers.
    let quiet =
        RateLimitLayer::new([
            Limit::new("q", "global".parse().unwrap(), Quota::per_minute(n(3))).unwrap(),
        ])
        .headers(false);
    let sent = send(&quiet, None, None, &[]);
    assert!(sent.policy.is_empty() && sent.ratelimit.is_empty());
}

#[test]
fn retry_after_is_rounded_up_and_never_zero() {
    let clock = manual();
    let limit = Limit::new(
        "fast",
        "global".parse().unwrap(),
        Quota::per_second(n(10)).burst(n(1)),
    )
    .unwrap();
    let layer = RateLimitLayer::new([limit]).clock(clock.clone());
    assert_eq!(send(&layer, None, None, &[]).status, StatusCode::OK);
    clock.advance(Duration::from_millis(99));
    let denied = send(&layer, None, None, &[]);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        denied.retry_after.as_deref(),
        Some("1"),
        "1 ms left reads as 1 s, not 0"
    );
}

#[test]
fn a_denied_request_is_not_charged_against_the_other_limits() {
    let burst = Limit::new(
        "burst",
        "claim:sub".parse().unwrap(),
        Quota::per_second(n(2)),
    )
    .unwrap();
    let daily = Limit::new(
        "daily",
        "claim:sub".parse().unwrap(),
        Quota::new(n(5), Duration::from_secs(86_400)).unwrap(),
    )
    .unwrap();
    let layer = RateLimitLayer::new([daily, burst]).clock(manual());
    let ada = identity("ada", None);
    assert_eq!(
        send(&layer, Some(ada.clone()), None, &[]).status,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, Some(ada.clone()), None, &[]).status,
        StatusCode::OK
    );
    let denied = send(&layer, Some(ada.clone()), None, &[]);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.limited.unwrap().limit.as_ref(), "burst");
    // daily had 5; two admitted requests used 2; the denied one was refunded.
    assert!(
        denied.ratelimit[0].starts_with(r#""daily";r=2;"#),
        "{:?}",
        denied.ratelimit
    );
    assert_eq!(denied.ratelimit.len(), 2);
}

#[test]
fn costs_tiers_and_anonymous_buckets() {
    let limit = Limit::new(
        "default",
        "claim:sub".parse().unwrap(),
        Quota::per_minute(n(10)),
    )
    .unwrap()
    .tiers(
        "plan".parse().unwrap(),
        [("gold", Quota::per_minute(n(1000)))],
    )
    .unwrap();
    let layer = RateLimitLayer::new([limit])
        .clock(manual())
        .cost_header(HeaderName::from_static("x-cost"));
    let weighted = send(
        &layer,
        Some(identity("ada", None)),
        None,
        &[("x-cost", "4")],
    );
    assert_eq!(weighted.ratelimit, [r#""default";r=6;t=6"#]);
    let gold = send(&layer, Some(identity("gil", Some("gold"))), None, &[]);
    assert_eq!(gold.policy, [r#""default";q=1000;w=60"#]);
    assert!(gold.ratelimit[0].starts_with(r#""default";r=999;"#));
    // No identity: counted by client IP; without a peer address, one shared bucket.
    let a = send(&layer, None, Some("203.0.113.1:5000"), &[("x-cost", "10")]);
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        send(&layer, None, Some("203.0.113.1:6000"), &[]).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&layer, None, Some("203.0.113.2:5000"), &[]).status,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, None, None, &[("x-cost", "10")]).status,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, None, None, &[]).status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[test]
fn shadow_mode_counts_and_never_rejects() {
    let limit = Limit::new(
        "default",
        "global".parse().unwrap(),
        Quota::per_minute(n(2)),
    )
    .unwrap();
    let layer = RateLimitLayer::new([limit]).clock(manual()).shadow(true);
    for _ in 0..5 {
        assert_eq!(send(&layer, None, None, &[]).status, StatusCode::OK);
    }
    assert_eq!(layer.shadow_denied(), 3);
}

#[test]
fn one_key_from_many_threads_never_over_admits() {
    let quota = Quota::per_minute(n(600)).burst(n(50));
    let key = Gcra::new();
    let admitted = AtomicU64::new(0);
    let now = NOW * 1_000_000_000;
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..10_000 {
                    if key.check(&quota, now, 1).allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(
        admitted.load(Ordering::Relaxed),
        50,
        "exactly the burst at one instant"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over any sequence of arrivals, admitted units ≤ burst + elapsed / T, and a key at rest
    /// for a full period is full again.
    #[test]
    fn gcra_admits_at_most_burst_plus_rate(
        count in 1u32..1_000,
        period_ms in 1u64..100_000,
        burst in 1u32..100,
        steps in proptest::collection::vec((0u64..2_000_000_000, 1u32..5), 1..200),
    ) {
        let Some(quota) = Quota::new(n(count), Duration::from_millis(period_ms)) else { return Ok(()) };
        let quota = quota.burst(n(burst));
        let key = Gcra::new();
        let start = 1_000_000_000_000u64;
        let mut now = start;
        let mut admitted = 0u64;
        for (dt, cost) in steps {
            now += dt;
            if key.check(&quota, now, cost).allowed {
                admitted += u64::from(cost);
            }
            let bound = u64::from(burst) + (now - start) / quota.emission_interval();
            prop_assert!(admitted <= bound, "admitted {admitted} > bound {bound}");
        }
        let rested = now + quota.emission_interval() * u64::from(burst);
        prop_assert!(key.is_full(rested));
        let (decision, _) = decide(&quota, 0, rested, burst);
        prop_assert!(decision.allowed);
    }
}

#[test]
fn refunds_reach_every_earlier_limit_however_many() {
    let mut limits: Vec<Limit> = (0..9)
        .map(|i| {
            Limit::new(
                &format!("l{i}"),
                "global".parse().unwrap(),
                Quota::per_minute(n(10)),
            )
            .unwrap()
        })
        .collect();
    limits.push(Limit::new("tight", "global".parse().unwrap(), Quota::per_minute(n(1))).unwrap());
    let layer = RateLimitLayer::new(limits).clock(manual());
    let first = send(&layer, None, None, &[]);
    assert_eq!(first.status, StatusCode::OK);
    // Every limit is reported, the ninth and tenth too.
    assert_eq!(first.policy.len(), 10, "{:?}", first.policy);
    assert_eq!(first.ratelimit.len(), 10, "{:?}", first.ratelimit);
    assert!(
        first.ratelimit[9].starts_with(r#""tight";r=0;"#),
        "{:?}",
        first.ratelimit
    );
    let mut last = None;
    for _ in 0..5 {
        let sent = send(&layer, None, None, &[]);
        assert_eq!(sent.status, StatusCode::TOO_MANY_REQUESTS);
        last = Some(sent);
    }
    // l0 holds one real charge; each denied request's charge was taken back (else r would be 3).
    let last = last.unwrap();
    assert!(
        last.ratelimit[0].starts_with(r#""l0";r=8;"#),
        "{:?}",
        last.ratelimit
    );
    assert_eq!(last.ratelimit.len(), 10, "{:?}", last.ratelimit);
    assert_eq!(last.limited.unwrap().limit.as_ref(), "tight");
}

#[test]
fn spellings_of_one_path_share_a_route_bucket() {
    let limit = Limit::new(
        "per-path",
        "route".parse().unwrap(),
        Quota::per_minute(n(2)),
    )
    .unwrap();
    let layer = RateLimitLayer::new([limit]).clock(manual());
    let status = |uri: &str| {
        let service = layer.layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let request = Request::builder().uri(uri).body(String::new()).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(service.oneshot(request))
            .unwrap()
            .status()
    };
    assert_eq!(status("/orders"), StatusCode::OK);
    assert_eq!(status("//orders/"), StatusCode::OK);
    assert_eq!(status("/%6Frders"), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status("/x/../orders"), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status("/other"), StatusCode::OK);
}

#[test]
fn forwarded_client_ip_through_the_layer() {
    use portcullis::rate_limit::{ClientIp, ForwardedHeader, TrustedProxies};
    let key = portcullis::rate_limit::RateKey::Ip(
        ClientIp::trusting(TrustedProxies::Networks(
            vec!["10.0.0.0/8".parse().unwrap()].into(),
        ))
        .header(ForwardedHeader::Forwarded),
    );
    let limit = Limit::new("ip", key, Quota::per_minute(n(60)).burst(n(1))).unwrap();
    let layer = RateLimitLayer::new([limit]).clock(manual());
    let lb = Some("10.0.0.2:443");
    // Two clients behind the load balancer have a bucket each, however they spoof.
    let ada = [("forwarded", "for=203.0.113.7")];
    let bob = [("forwarded", "for=6.6.6.6, for=198.51.100.4")];
    assert_eq!(send(&layer, None, lb, &ada).status, StatusCode::OK);
    assert_eq!(send(&layer, None, lb, &bob).status, StatusCode::OK);
    assert_eq!(
        send(&layer, None, lb, &ada).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Bob's spoofed leftmost entry is not his key: 198.51.100.4 is.
    let bob_again = [("forwarded", "for=1.2.3.4, for=198.51.100.4")];
    assert_eq!(
        send(&layer, None, lb, &bob_again).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // X-Forwarded-For is not read: the load balancer's own address is the key.
    let xff = [("x-forwarded-for", "192.0.2.1")];
    assert_eq!(send(&layer, None, lb, &xff).status, StatusCode::OK);
    assert_eq!(
        send(&layer, None, lb, &xff).status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// axum's `ConnectInfo<SocketAddr>` is the peer address, over a real socket.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_connect_info_is_the_peer() {
    let limit = Limit::new(
        "ip",
        "ip".parse().unwrap(),
        Quota::per_minute(n(60)).burst(n(1)),
    )
    .unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        // Without a peer address a request would fall to this anonymous key: a bucket per
        // x-bucket value, so two requests with two values would both pass.
        .layer(RateLimitLayer::new([limit]).anonymous("header:x-bucket".parse().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let (first, _, _) = http_get(addr, "/", &[("x-bucket", "a")]).await;
    let (second, _, _) = http_get(addr, "/", &[("x-bucket", "b")]).await;
    assert_eq!(first, StatusCode::OK);
    // One bucket for the one peer, whatever x-bucket says.
    assert_eq!(second, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn limits_scoped_to_routes() {
    use portcullis::authz::{Route, Routes};
    use portcullis::rate_limit::Scope;
    let routes = Routes::new([
        Route::new("/writes/**").unwrap().rate_limits(["writes"]),
        Route::new("/reads/**").unwrap(),
    ]);
    let writes = Limit::new("writes", "global".parse().unwrap(), Quota::per_hour(n(1)))
        .unwrap()
        .scope(Scope::Named);
    let default = Limit::new("default", "global".parse().unwrap(), Quota::per_hour(n(2)))
        .unwrap()
        .scope(Scope::Default);
    let layer = RateLimitLayer::new([writes, default])
        .routes(routes)
        .clock(manual());
    let send_to = |path: &str| {
        let service = layer.layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let request = Request::get(path).body(String::new()).unwrap();
        let response = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(service.oneshot(request))
            .unwrap();
        let reported: Vec<String> = response
            .headers()
            .get_all("ratelimit")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (response.status(), reported)
    };
    // The writes route counts only against "writes".
    let (status, reported) = send_to("/writes/1");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reported, [r#""writes";r=0;t=3600"#]);
    assert_eq!(send_to("/writes/2").0, StatusCode::TOO_MANY_REQUESTS);
    // Reads and unmatched paths share "default", untouched by the writes.
    assert_eq!(
        send_to("/reads/1"),
        (StatusCode::OK, vec![r#""default";r=1;t=1800"#.to_owned()])
    );
    assert_eq!(send_to("/elsewhere").0, StatusCode::OK);
    assert_eq!(send_to("/reads/2").0, StatusCode::TOO_MANY_REQUESTS);
}

/// The `RateLimit` members of a response as an independent Structured Fields parser reads
/// them: each name a String, `r` and `t` Integers.
fn parse_ratelimit(values: &[String]) -> Vec<(String, i64, i64)> {
    let joined = values.join(", ");
    let list = sfv::Parser::new(&joined).parse::<sfv::List>().unwrap();
    list.iter()
        .map(|member| {
            let sfv::ListEntry::Item(item) = member else {
                panic!("an inner list in {joined}")
            };
            let sfv::BareItem::String(name) = &item.bare_item else {
                panic!("the name is not a String in {joined}")
            };
            let integer = |key: &str| match item.params.get(key) {
                Some(sfv::BareItem::Integer(n)) => i64::from(*n),
                other => panic!("{key} is {other:?} in {joined}"),
            };
            (name.as_str().to_owned(), integer("r"), integer("t"))
        })
        .collect()
}

#[test]
fn retry_after_and_t_agree_for_every_limit_listed() {
    let clock = manual();
    let layer = RateLimitLayer::new([
        Limit::new(
            "second",
            "claim:sub".parse().unwrap(),
            Quota::per_second(n(2)),
        )
        .unwrap(),
        Limit::new(
            "hour",
            "claim:sub".parse().unwrap(),
            Quota::new(n(4), Duration::from_secs(3600)).unwrap(),
        )
        .unwrap(),
    ])
    .clock(clock.clone());
    let ada = identity("ada", None);
    // Both admit twice in the same instant; then the per-second limit denies.
    for _ in 0..2 {
        assert_eq!(
            send(&layer, Some(ada.clone()), None, &[]).status,
            StatusCode::OK
        );
    }
    let denied = send(&layer, Some(ada.clone()), None, &[]);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.retry_after.as_deref(), Some("1"));
    // Limits after the denying one are not checked, so not listed.
    assert_eq!(
        parse_ratelimit(&denied.ratelimit),
        [("second".to_owned(), 0, 1)]
    );
    // Two seconds on, two more pass; the hourly limit is spent and denies.
    clock.advance(Duration::from_secs(2));
    for _ in 0..2 {
        assert_eq!(
            send(&layer, Some(ada.clone()), None, &[]).status,
            StatusCode::OK
        );
    }
    clock.advance(Duration::from_secs(2));
    let denied = send(&layer, Some(ada.clone()), None, &[]);
    assert_eq!(denied.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: i64 = denied.retry_after.unwrap().parse().unwrap();
    let members = parse_ratelimit(&denied.ratelimit);
    let hour = members.iter().find(|m| m.0 == "hour").unwrap();
    // The first of four units comes back 900 s after it was taken, 4 s ago.
    assert_eq!((hour.1, hour.2), (0, 896));
    assert_eq!(
        retry_after, hour.2,
        "Retry-After is the exhausted limit's t"
    );
    for (name, remaining, t) in &members {
        assert!(*t >= 0);
        if *remaining == 0 {
            assert!(
                retry_after >= *t,
                "Retry-After {retry_after} before {name}'s t={t}"
            );
        }
    }
}
