//! Counts heap allocations on the cached decision path with dhat (testing mode).
//!
//! One test per binary: dhat's profiler is process-wide.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use common::*;
use http::Method;
use http::{HeaderMap, Request, Response};
use portcullis::authz::{Auth, AuthorizeLayer, Route, Routes};
use portcullis::claims::{AssertionSigner, ClaimPath, MapClaimsLayer};
use portcullis::jwt::JwtAuthLayer;
use portcullis::rate_limit::{MemoryStore, Quota};
use portcullis::token::TokenSource;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// Calls `service` with each request, polls each answer once (the inner service is ready at
/// once), and returns the heap blocks allocated meanwhile.
fn blocks_to_serve<S>(service: &mut S, requests: Vec<Request<()>>) -> u64
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    let before = blocks();
    for req in requests {
        let future = pin!(service.call(req));
        let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
            panic!("the inner service is ready at once");
        };
        assert_eq!(response.status(), 200);
    }
    blocks() - before
}

#[test]
fn cached_hit_allocates_nothing_in_the_decision_path() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let layer = JwtAuthLayer::new(validator(clock(), 1_000))
        .sources([TokenSource::Bearer, TokenSource::cookie("access_token")]);
    let mut tokens = Vec::new();
    for alg in [
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::EdDSA,
    ] {
        tokens.push(mint(alg, &claims("ada")));
    }
    let header_maps: Vec<HeaderMap> = tokens
        .iter()
        .flat_map(|token| {
            let mut bearer = HeaderMap::new();
            bearer.insert("authorization", format!("Bearer {token}").parse().unwrap());
            let mut cookie = HeaderMap::new();
            cookie.insert(
                "cookie",
                format!("theme=dark; access_token={token}").parse().unwrap(),
            );
            [bearer, cookie]
        })
        .collect();

    // First sight of each token: a miss, which allocates what the cache keeps (the entry, the
    // token's bytes, the identity and its claims) and the parsing's scratch.
    for headers in &header_maps {
        assert!(layer.authenticate(headers).unwrap().is_some());
    }
    // A miss, counted on 100 tokens never seen (ES256, six claims, a kid). Verifying one
    // allocates 25 blocks: the claims map with its node, keys and string values (11), the
    // header's `alg`, `kid` and `typ` strings (3), the identity's subject, audiences, scopes and
    // key id, and the parsers' scratch. The header, payload and signature decode on the
    // stack. Caching it adds the `Arc` and the cache's copy of the token.
    let fresh_validator = validator(clock(), 1_000);
    let fresh: Vec<String> = (0..100)
        .map(|n| {
            mint(
                jsonwebtoken::Algorithm::ES256,
                &claims(&format!("user-{n}")),
            )
        })
        .collect();
    let before = blocks();
    for token in &fresh {
        assert!(fresh_validator.validate_uncached(token.as_bytes()).is_ok());
    }
    let verify_blocks = blocks() - before;
    dhat::assert_eq!(verify_blocks, 25 * 100);
    let before = blocks();
    for token in &fresh {
        assert!(fresh_validator.validate(token.as_bytes()).is_ok());
    }
    let miss_blocks = blocks() - before;
    // Each of the 100 tokens costs 27. Besides, the cache's 16 shards grow their tables as they
    // fill from empty: how often depends on how the tokens spread over the shards (the hash is
    // keyed per process), a few times per shard (34 in the runs seen).
    dhat::assert!(
        (27 * 100..=27 * 100 + 16 * 8).contains(&miss_blocks),
        "{miss_blocks}"
    );

    // The decision path on a hit: extraction, cache lookup, expiry and key checks, Arc clone.
    let before = blocks();
    for _ in 0..1_000 {
        for headers in &header_maps {
            let identity = layer.authenticate(headers).unwrap().unwrap();
            assert_eq!(identity.subject(), Some("ada"));
        }
    }
    let decision_blocks = blocks() - before;
    dhat::assert_eq!(decision_blocks, 0);

    // The whole layer on a hit, around an inner service that allocates nothing. The one cost
    // outside the decision path is putting the identity in the request's extensions: the
    // extensions map (a Box), its table, and the boxed value — 3 blocks per request.
    let mut service = layer.layer(service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    }));
    let requests: Vec<Request<()>> = (0..100)
        .map(|_| {
            let mut req = Request::new(());
            *req.headers_mut() = header_maps[0].clone();
            req
        })
        .collect();
    let layer_blocks = blocks_to_serve(&mut service, requests);
    dhat::assert_eq!(layer_blocks, 3 * 100);

    // Route resolution (normalisation included) and rule evaluation on a cached identity.
    let routes = Routes::new([
        Route::new("/health").unwrap().auth(Auth::None),
        Route::new("/orders/**")
            .unwrap()
            .methods([Method::POST])
            .scopes_all(["write"]),
        Route::new("/orders/*/items")
            .unwrap()
            .scopes_any(["read", "write"])
            .roles_any("realm.roles".parse::<ClaimPath>().unwrap(), ["user"])
            .claim("org.id".parse::<ClaimPath>().unwrap(), ["acme", "42"]),
    ]);
    let mut claims = claims("ada");
    claims["realm"] = serde_json::json!({"roles": ["user"]});
    claims["org"] = serde_json::json!({"id": "acme"});
    claims["scope"] = serde_json::json!("read");
    let validator = validator(clock(), 100);
    let token = mint(jsonwebtoken::Algorithm::ES256, &claims);
    let identity = validator.validate(token.as_bytes()).unwrap();
    let before = blocks();
    for _ in 0..1_000 {
        let route = routes
            .resolve(&Method::GET, "/orders/42/items")
            .unwrap()
            .unwrap();
        assert!(route.allows(&identity));
        let route = routes
            .resolve(&Method::POST, "/orders/42")
            .unwrap()
            .unwrap();
        assert!(!route.allows(&identity));
        assert!(validator.validate(token.as_bytes()).is_ok());
    }
    let rule_blocks = blocks() - before;
    dhat::assert_eq!(rule_blocks, 0);

    // The whole stack with routes: still only the extensions insert.
    let auth = JwtAuthLayer::new(validator.clone()).routes(routes.clone());
    let mut service = auth.layer(AuthorizeLayer::new(routes).layer(service_fn(
        |_req: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))),
    )));
    let requests: Vec<Request<()>> = (0..100)
        .map(|_| {
            let mut req = Request::get("/orders/42/items").body(()).unwrap();
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            req
        })
        .collect();
    let stack_blocks = blocks_to_serve(&mut service, requests);
    dhat::assert_eq!(stack_blocks, 3 * 100);

    // Claims to headers on a cached identity: the values were rendered on first use; later
    // requests clone them (refcounts) into a header map with room, after removing spoofed copies.
    let mapping = MapClaimsLayer::new([
        ("x-user-id", "sub"),
        ("x-tenant", "org.id"),
        ("x-roles", "realm.roles"),
    ])
    .unwrap()
    .remove_authorization(true);
    let mut maps: Vec<HeaderMap> = (0..1_001)
        .map(|_| {
            let mut headers = HeaderMap::with_capacity(16);
            headers.insert("x-user-id", "spoofed".parse().unwrap());
            headers.append("x-user-id", "again".parse().unwrap());
            headers.insert("authorization", "Bearer x".parse().unwrap());
            headers
        })
        .collect();
    mapping.apply(&mut maps[1_000], Some(&identity));
    let before = blocks();
    for headers in &mut maps[..1_000] {
        mapping.apply(headers, Some(&identity));
    }
    let mapping_blocks = blocks() - before;
    dhat::assert_eq!(mapping_blocks, 0);
    assert_eq!(maps[0]["x-user-id"], "ada");
    assert_eq!(maps[0]["x-tenant"], "acme");

    // Six mapping layers on one identity: each keeps its own rendering with the token (any
    // number of layers can), so none renders per request.
    let layers: Vec<MapClaimsLayer> = (0..6)
        .map(|i| MapClaimsLayer::new([(format!("x-claim-{i}"), "sub")]).unwrap())
        .collect();
    let mut maps: Vec<HeaderMap> = (0..101).map(|_| HeaderMap::with_capacity(16)).collect();
    for layer in &layers {
        layer.apply(&mut maps[100], Some(&identity));
    }
    let before = blocks();
    for headers in &mut maps[..100] {
        for layer in &layers {
            layer.apply(headers, Some(&identity));
        }
    }
    let six_blocks = blocks() - before;
    dhat::assert_eq!(six_blocks, 0);
    assert_eq!(maps[0]["x-claim-5"], "ada");

    // With a signed assertion: signed on first use, then reused (a read lock and a refcount).
    let signer = AssertionSigner::from_pem(P256_PRIVATE, "https://gateway.example", "svc")
        .unwrap()
        .clock(clock());
    let with_assertion = MapClaimsLayer::new([("x-user-id", "sub")])
        .unwrap()
        .assertion(signer);
    let fresh = validator.validate_uncached(token.as_bytes()).unwrap();
    let mut maps: Vec<HeaderMap> = (0..1_001).map(|_| HeaderMap::with_capacity(16)).collect();
    with_assertion.apply(&mut maps[1_000], Some(&fresh));
    let before = blocks();
    for headers in &mut maps[..1_000] {
        with_assertion.apply(headers, Some(&fresh));
    }
    let assertion_blocks = blocks() - before;
    dhat::assert_eq!(assertion_blocks, 0);

    // A rate-limit check for a known key: a keyed hash, a read lock, a compare-exchange.
    let store = MemoryStore::new(10_000);
    let quota = Quota::per_second(std::num::NonZeroU32::new(1_000).unwrap());
    let subjects: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    for subject in &subjects {
        store.check(store.key().part(subject.as_bytes()).finish(), &quota, 0, 1);
    }
    let before = blocks();
    for round in 0..10u64 {
        for subject in &subjects {
            let key = store.key().part(b"s").part(subject.as_bytes()).finish();
            let _ = store.check(key, &quota, round * 1_000_000_000, 1);
        }
    }
    // The first sight of those 100 keys (with the b"s" part) inserts them: allowed.
    let first_sight = blocks() - before;
    let before = blocks();
    for round in 10..20u64 {
        for subject in &subjects {
            let key = store.key().part(b"s").part(subject.as_bytes()).finish();
            assert!(store.check(key, &quota, round * 1_000_000_000, 1).allowed);
        }
    }
    let known_key_blocks = blocks() - before;
    dhat::assert_eq!(known_key_blocks, 0);

    whole_stack(&validator, &token);
    under_axum(&validator, &token);
    #[cfg(feature = "policy")]
    policy_stack();
    assert!(first_sight <= 100, "{first_sight}");
    assert_eq!(
        maps[0]["x-portcullis-assertion"],
        maps[999]["x-portcullis-assertion"]
    );
}

/// The whole stack as the policy assembles it (propagate, authenticate, authorize, map claims,
/// rate limit) on a cached token and a known rate-limit key, around a service whose response
/// already has headers (as every real one does). Request headers are shared `Bytes`, as hyper
/// parses them, so cloning one is a refcount.
fn whole_stack(validator: &portcullis::jwt::Validator, token: &str) {
    use portcullis::propagate::PropagateLayer;
    use portcullis::rate_limit::{Limit, RateLimitLayer};

    let routes = Routes::new([Route::new("/orders/**").unwrap().scopes_all(["read"])]);
    let limit = || {
        Limit::new(
            "per-user",
            "claim:sub".parse().unwrap(),
            Quota::per_second(std::num::NonZeroU32::new(1_000_000).unwrap()),
        )
        .unwrap()
    };
    let service = |rate_limit_headers: bool| {
        PropagateLayer::new().layer(
            JwtAuthLayer::new(validator.clone())
                .routes(routes.clone())
                .layer(
                    AuthorizeLayer::new(routes.clone()).layer(
                        MapClaimsLayer::new([("x-user-id", "sub")]).unwrap().layer(
                            RateLimitLayer::new([limit()])
                                .headers(rate_limit_headers)
                                .layer(service_fn(|_req: Request<()>| {
                                    let mut response = Response::new(());
                                    response.headers_mut().insert(
                                        "content-type",
                                        http::HeaderValue::from_static("application/json"),
                                    );
                                    std::future::ready(Ok::<_, Infallible>(response))
                                })),
                        ),
                    ),
                ),
        )
    };
    let bearer =
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("Bearer {token}")))
            .unwrap();
    let _shared = bearer.clone();
    let requests = |n: usize, with_ids: bool| -> Vec<Request<()>> {
        (0..n)
            .map(|_| {
                let mut req = Request::get("/orders/42").body(()).unwrap();
                client_headers(req.headers_mut(), &bearer, with_ids);
                req
            })
            .collect()
    };
    // The baseline: the service alone.
    let mut bare = service_fn(|_req: Request<()>| {
        let mut response = Response::new(());
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let bare_blocks = blocks_to_serve(&mut bare, requests(100, true));
    let inner = || {
        service_fn(|_req: Request<()>| {
            let mut response = Response::new(());
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let per_request = |service: &mut dyn FnMut(Vec<Request<()>>) -> u64, with_ids: bool| {
        // One request first: one-time set-up (callsites, metric handles) is not per request.
        service(requests(1, with_ids));
        (service(requests(100, with_ids)) - bare_blocks) / 100
    };

    // Propagate alone, audit off, the client's request id kept, no trace context: nothing (the
    // id is a refcount).
    let mut propagate = PropagateLayer::new()
        .trace_context(false)
        .audit(false)
        .layer(inner());
    let blocks = per_request(&mut |r| blocks_to_serve(&mut propagate, r), true);
    dhat::assert_eq!(blocks, 0);
    // Audit on (the default): the decision record (an Arc the layer keeps) and its entry in the
    // extensions of a request that has none yet (the map, its table, the boxed handle).
    let mut propagate = PropagateLayer::new().trace_context(false).layer(inner());
    let blocks = per_request(&mut |r| blocks_to_serve(&mut propagate, r), true);
    dhat::assert_eq!(blocks, 4);
    // With trace context: + the child traceparent (a new header value).
    let mut propagate = PropagateLayer::new().layer(inner());
    let blocks = per_request(&mut |r| blocks_to_serve(&mut propagate, r), true);
    dhat::assert_eq!(blocks, 5);
    // With the RequestContext asked for: + its boxed entry (the map has room for two).
    let mut propagate = PropagateLayer::new().request_context(true).layer(inner());
    let blocks = per_request(&mut |r| blocks_to_serve(&mut propagate, r), true);
    dhat::assert_eq!(blocks, 6);

    // The whole stack: the child traceparent; the decision record and its entry in the
    // extensions of a request that has none yet (the map, its table, the boxed handle); the
    // Arc<Identity>'s boxed entry. Authorize, MapClaims and the rate limit's known key add
    // nothing. (The record is the cost of carrying the decision explicitly, in the request,
    // rather than in a thread-local slot: 2 blocks, the Arc and its entry.)
    let mut stack = service(false);
    let blocks = per_request(&mut |r| blocks_to_serve(&mut stack, r), true);
    dhat::assert_eq!(blocks, 6);
    // Where something before the stack has put extensions in the request already (a router:
    // axum's puts the matched path and the path parameters), the record's and the identity's
    // entries fill the table past its first size (3 entries), so it grows once: the whole
    // stack allocates 5 — the child traceparent, the record and its entry, the larger table,
    // the identity's entry.
    let in_use = |requests: Vec<Request<()>>| -> Vec<Request<()>> {
        requests
            .into_iter()
            .map(|mut req| {
                req.extensions_mut().insert(MatchedPathLike("/orders/{id}"));
                req.extensions_mut().insert(PathParamsLike(42));
                req
            })
            .collect()
    };
    let before = blocks_to_serve(&mut bare, in_use(requests(100, true)));
    let blocks = (blocks_to_serve(&mut stack, in_use(requests(100, true))) - before) / 100;
    dhat::assert_eq!(blocks, 5);
    // No request id from the client: the new id shares the child traceparent's block (one
    // buffer, two slices), so still 6.
    let blocks = per_request(&mut |r| blocks_to_serve(&mut stack, r), false);
    dhat::assert_eq!(blocks, 6);
    // RateLimit headers on: + the RateLimit value (RateLimit-Policy is built once and shared).
    let mut stack = service(true);
    let blocks = per_request(&mut |r| blocks_to_serve(&mut stack, r), true);
    dhat::assert_eq!(blocks, 7);
}

/// A client's headers, with room to spare (as hyper parses them): the bearer token and, with
/// `ids`, a request id and a traceparent.
fn client_headers(headers: &mut HeaderMap, bearer: &http::HeaderValue, ids: bool) {
    headers.reserve(16);
    headers.insert("authorization", bearer.clone());
    if ids {
        headers.insert("x-request-id", http::HeaderValue::from_static("req-1"));
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
    }
}

/// Stand-ins for what a router puts in a request's extensions before the stack sees it (with
/// data, as the router's entries have: a boxed zero-sized value would not allocate).
#[derive(Clone)]
#[expect(dead_code, reason = "only its size matters")]
struct MatchedPathLike(&'static str);
#[derive(Clone)]
#[expect(dead_code, reason = "only its size matters")]
struct PathParamsLike(u64);

/// The same stack under a real axum `Router` (default features), both ways a user applies it:
/// around the whole router, and with `Router::layer` (after routing, when axum has put the
/// original URI, the matched path and the path parameters in the extensions). Counted against
/// the same router without the stack.
fn under_axum(validator: &portcullis::jwt::Validator, token: &str) {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use portcullis::propagate::PropagateLayer;
    use portcullis::rate_limit::{Limit, RateLimitLayer};
    use tower::ServiceBuilder;

    let routes = Routes::new([Route::new("/orders/*").unwrap().scopes_all(["read"])]);
    let stack = ServiceBuilder::new()
        .layer(PropagateLayer::new())
        .layer(JwtAuthLayer::new(validator.clone()).routes(routes.clone()))
        .layer(AuthorizeLayer::new(routes))
        .layer(MapClaimsLayer::new([("x-user-id", "sub")]).unwrap())
        .layer(RateLimitLayer::new([Limit::new(
            "per-user",
            "claim:sub".parse().unwrap(),
            Quota::per_second(std::num::NonZeroU32::new(1_000_000).unwrap()),
        )
        .unwrap()]));
    let router = || Router::new().route("/orders/{id}", get(|| async { "ok" }));
    let bearer =
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("Bearer {token}")))
            .unwrap();
    let requests = |n: usize| -> Vec<Request<Body>> {
        (0..n)
            .map(|_| {
                let mut req = Request::get("/orders/42").body(Body::empty()).unwrap();
                client_headers(req.headers_mut(), &bearer, true);
                req
            })
            .collect()
    };
    fn serve<S>(service: &mut S, requests: Vec<Request<Body>>) -> u64
    where
        S: Service<Request<Body>, Response = axum::response::Response, Error = Infallible>,
    {
        let mut cx = Context::from_waker(Waker::noop());
        let before = blocks();
        for req in requests {
            let future = pin!(service.call(req));
            let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
                panic!("the router answers at once");
            };
            assert_eq!(response.status(), 200);
        }
        blocks() - before
    }
    let per_request = |service: &mut dyn FnMut(Vec<Request<Body>>) -> u64| {
        service(requests(1));
        service(requests(100))
    };
    let mut bare = router().with_state(());
    let baseline = per_request(&mut |r| serve(&mut bare, r));

    // Around the router: the request reaches the stack with no extensions (as from hyper), so
    // the decision record's entry brings the map and its table, which the router then uses
    // instead of making its own — but the entries after it grow the table once. Net: the
    // record and its entry, the identity's entry, the larger table, the child traceparent.
    let mut around = stack.clone().service(router().with_state(()));
    let blocks = (per_request(&mut |r| serve(&mut around, r)) - baseline) / 100;
    dhat::assert_eq!(blocks, 5);

    // `Router::layer`: axum's three entries fill the table's first size, so the record's entry
    // grows it: the record and its entry, the identity's entry, the larger table, the child
    // traceparent.
    // `Router::layer` with any layer at all costs axum 2 per request (the layered route is
    // cloned and its future boxed); measured with a no-op layer and taken off.
    let mut noop = router()
        .layer(tower::util::MapRequestLayer::new(|r: Request<Body>| r))
        .with_state(());
    let axum_layering = (per_request(&mut |r| serve(&mut noop, r)) - baseline) / 100;
    dhat::assert_eq!(axum_layering, 2);
    let mut layered = router().layer(stack).with_state(());
    let blocks = (per_request(&mut |r| serve(&mut layered, r)) - baseline) / 100 - axum_layering;
    dhat::assert_eq!(blocks, 5);
}

/// The same stack built from a policy file: one service that runs the stages itself and keeps
/// what they decided as a local, so it needs no record in the request's extensions. Per
/// request: the child traceparent, the identity's entry in the extensions of a request that has
/// none yet (the map, its table, the boxed entry) and the `RateLimit` value (a policy's limits
/// send their headers) — 5, the figure of the layered stack with headers on before it carried
/// a decision record (that stack now makes 7).
#[cfg(feature = "policy")]
fn policy_stack() {
    // The policy's validator reads the system clock: a token valid now.
    let token = mint_now("ada");
    let policy = portcullis::policy::Policy::from_toml(&issuer_a_policy(
        r#"
        [[routes]]
        path = "/orders/**"
        scopes_all = ["read"]

        [[rate_limits]]
        name = "default"
        key = "claim:sub"
        rate = "1000000/s"

        [upstream_headers]
        x-user-id = "sub"
        "#,
    ))
    .unwrap();
    let layer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(policy.build())
        .unwrap();
    let inner = || {
        service_fn(|_req: Request<()>| {
            let mut response = Response::new(());
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let bearer =
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("Bearer {token}")))
            .unwrap();
    let requests = |n: usize| -> Vec<Request<()>> {
        (0..n)
            .map(|_| {
                let mut req = Request::get("/orders/42").body(()).unwrap();
                client_headers(req.headers_mut(), &bearer, true);
                req
            })
            .collect()
    };
    let mut bare = inner();
    let bare_blocks = blocks_to_serve(&mut bare, requests(100));
    let mut stack = layer.layer(inner());
    blocks_to_serve(&mut stack, requests(1));
    let blocks = (blocks_to_serve(&mut stack, requests(100)) - bare_blocks) / 100;
    dhat::assert_eq!(blocks, 5);
}
