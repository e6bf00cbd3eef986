//! Criterion benches: uncached validation per algorithm beside ring's signature check alone on
//! the same token, and the cached hit.
//!
//! Run with `cargo bench --bench portcullis` (`--features redis` adds the Redis round trip, with
//! its own `redis-server`); `cargo bench -- --test` runs each once.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use jsonwebtoken::{Algorithm as Alg, EncodingKey, Header};
use portcullis::clock::ManualClock;
use portcullis::jwt::{Issuer, JwtAuthLayer, Validator};
use portcullis::keys::{Key, KeySet};
use ring::{hmac, signature as sig};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://issuer.example/";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Ring verifying a signature over a message, with nothing else.
type RingCheck = Box<dyn Fn(&[u8], &[u8]) -> bool>;

struct Case {
    name: &'static str,
    token: String,
    ring_only: RingCheck,
}

fn pem_der(pem: &str) -> Vec<u8> {
    pem::parse(pem).unwrap().into_contents()
}

fn cases() -> (Validator, Vec<Case>) {
    portcullis::crypto::install();
    let rsa_pub = include_str!("../tests/keys/rsa2048.pub.pem");
    let rsa_pkcs1 = pem_der(include_str!("../tests/keys/rsa2048.pkcs1.pub.pem"));
    let p256_pub = include_str!("../tests/keys/p256.pub.pem");
    let p256_point = pem_der(p256_pub)[26..].to_vec();
    let ed_pub = include_str!("../tests/keys/ed25519.pub.pem");
    let ed_raw = pem_der(ed_pub)[12..].to_vec();
    let keys = KeySet::new([
        Key::from_pem(rsa_pub).unwrap().with_kid("rsa"),
        Key::from_pem(p256_pub).unwrap().with_kid("p256"),
        Key::from_pem(ed_pub).unwrap().with_kid("ed"),
        Key::hmac(SECRET).unwrap().with_kid("h"),
    ]);
    let validator = Validator::builder()
        .issuer(Issuer::new(ISS, keys).audiences(["api"]))
        .clock(ManualClock::new(Duration::from_secs(NOW)))
        .build()
        .unwrap();

    let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": "user-42", "iat": NOW,
        "exp": NOW + 3600, "scope": "read:orders write:orders", "org": {"id": "acme"}});
    let mint = |alg: Alg, kid: &str, key: EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let rsa_key = EncodingKey::from_rsa_pem(include_bytes!("../tests/keys/rsa2048.pem")).unwrap();
    let es_key = EncodingKey::from_ec_pem(include_bytes!("../tests/keys/p256.pem")).unwrap();
    let ed_key = EncodingKey::from_ed_pem(include_bytes!("../tests/keys/ed25519.pem")).unwrap();
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let cases = vec![
        Case {
            name: "RS256",
            token: mint(Alg::RS256, "rsa", rsa_key),
            ring_only: Box::new(move |m, s| {
                sig::UnparsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, &rsa_pkcs1)
                    .verify(m, s)
                    .is_ok()
            }),
        },
        Case {
            name: "ES256",
            token: mint(Alg::ES256, "p256", es_key),
            ring_only: Box::new(move |m, s| {
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &p256_point)
                    .verify(m, s)
                    .is_ok()
            }),
        },
        Case {
            name: "EdDSA",
            token: mint(Alg::EdDSA, "ed", ed_key),
            ring_only: Box::new(move |m, s| {
                sig::UnparsedPublicKey::new(&sig::ED25519, &ed_raw)
                    .verify(m, s)
                    .is_ok()
            }),
        },
        Case {
            name: "HS256",
            token: mint(Alg::HS256, "h", EncodingKey::from_secret(SECRET).unwrap()),
            ring_only: Box::new(move |m, s| hmac::verify(&hmac_key, m, s).is_ok()),
        },
    ];
    (validator, cases)
}

/// The whole stack of `stack/full_cached`: propagate, authenticate (with the routes), authorize
/// (`/orders/**` needs `read:orders`), `x-user-id` from `sub`, a per-subject limit that never
/// denies, around a no-op service.
fn full_stack(
    validator: Validator,
) -> impl tower_service::Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = std::convert::Infallible,
> {
    use portcullis::authz::{AuthorizeLayer, Route, Routes};
    use portcullis::claims::MapClaimsLayer;
    use portcullis::propagate::PropagateLayer;
    use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
    use tower_layer::Layer;

    let routes = Routes::new([Route::new("/orders/**")
        .unwrap()
        .scopes_all(["read:orders"])]);
    let limit = Limit::new(
        "per-user",
        "claim:sub".parse().unwrap(),
        Quota::per_second(std::num::NonZeroU32::new(1_000_000_000).unwrap()),
    )
    .unwrap();
    PropagateLayer::new().layer(JwtAuthLayer::new(validator).routes(routes.clone()).layer(
        AuthorizeLayer::new(routes).layer(
            MapClaimsLayer::new([("x-user-id", "sub")]).unwrap().layer(
                RateLimitLayer::new([limit]).layer(tower::service_fn(|_: http::Request<()>| {
                    std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
                })),
            ),
        ),
    ))
}

mod verify {
    use super::*;

    /// Uncached validation next to ring verifying the same signature over the same bytes.
    pub(super) fn bench(c: &mut Criterion) {
        let (validator, cases) = cases();
        for case in &cases {
            let (input, signature) = case.token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            assert!((case.ring_only)(input.as_bytes(), &signature));
            assert!(validator.validate_uncached(case.token.as_bytes()).is_ok());
            let mut group = c.benchmark_group(format!("verify/{}", case.name));
            group.bench_function("ring_only", |b| {
                b.iter(|| (case.ring_only)(black_box(input.as_bytes()), black_box(&signature)))
            });
            group.bench_function("uncached", |b| {
                b.iter(|| {
                    validator
                        .validate_uncached(black_box(case.token.as_bytes()))
                        .is_ok()
                })
            });
            group.finish();
        }
    }
}

mod cache {
    use super::*;

    /// A cached token: the validator alone, and the layer's whole decision from the headers.
    pub(super) fn bench(c: &mut Criterion) {
        let (validator, cases) = cases();
        let token = &cases[0].token;
        let layer = JwtAuthLayer::new(validator.clone());
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert!(validator.validate(token.as_bytes()).is_ok());
        let mut group = c.benchmark_group("cached");
        group.bench_function("validate_hit", |b| {
            b.iter(|| validator.validate(black_box(token.as_bytes())).is_ok())
        });
        group.bench_function("authenticate_hit", |b| {
            b.iter(|| layer.authenticate(black_box(&headers)).is_ok())
        });
        group.finish();
    }
}

mod authz {
    use super::*;
    use http::Method;
    use portcullis::authz::{Auth, Route, Routes};

    /// Route resolution (with path normalisation) and rule evaluation on a cached identity.
    pub(super) fn bench(c: &mut Criterion) {
        let (validator, cases) = cases();
        let identity = validator.validate(cases[0].token.as_bytes()).unwrap();
        let routes = Routes::new([
            Route::new("/health").unwrap().auth(Auth::None),
            Route::new("/admin/**").unwrap().scopes_all(["admin"]),
            Route::new("/orders/**")
                .unwrap()
                .methods([Method::POST])
                .scopes_all(["write:orders"]),
            Route::new("/orders/*/items")
                .unwrap()
                .scopes_any(["read:orders"])
                .claim("org.id".parse().unwrap(), ["acme"]),
        ]);
        let mut group = c.benchmark_group("authz");
        group.bench_function("resolve_and_allow", |b| {
            b.iter(|| {
                let route = routes
                    .resolve(black_box(&Method::GET), black_box("/orders/42/items"))
                    .unwrap()
                    .unwrap();
                route.allows(&identity)
            })
        });
        group.bench_function("resolve_dotted_path", |b| {
            b.iter(|| {
                routes
                    .resolve(
                        black_box(&Method::GET),
                        black_box("/public/../orders/42/./items"),
                    )
                    .unwrap()
                    .is_some()
            })
        });
        group.finish();
    }
}

mod claims {
    use super::*;
    use portcullis::claims::{AssertionSigner, MapClaimsLayer};

    /// Claims to headers on a cached identity, and the signed assertion on a hit and a miss.
    pub(super) fn bench(c: &mut Criterion) {
        let (validator, cases) = cases();
        let token = &cases[0].token;
        let mapping = MapClaimsLayer::new([
            ("x-user-id", "sub"),
            ("x-tenant", "org.id"),
            ("x-scopes", "scope"),
        ])
        .unwrap();
        let identity = validator.validate(token.as_bytes()).unwrap();
        let mut headers = HeaderMap::with_capacity(16);
        let mut group = c.benchmark_group("claims");
        group.bench_function("map_headers_cached", |b| {
            b.iter(|| mapping.apply(black_box(&mut headers), Some(&identity)))
        });
        let signer = AssertionSigner::from_pem(
            include_str!("../tests/keys/p256.pem"),
            "https://gw.example",
            "svc",
        )
        .unwrap()
        .clock(ManualClock::new(Duration::from_secs(NOW)));
        let with_assertion = MapClaimsLayer::new([("x-user-id", "sub")])
            .unwrap()
            .assertion(signer);
        group.bench_function("assertion_hit", |b| {
            b.iter(|| with_assertion.apply(black_box(&mut headers), Some(&identity)))
        });
        group.bench_function("assertion_miss", |b| {
            b.iter_batched(
                || validator.validate_uncached(token.as_bytes()).unwrap(),
                |fresh| with_assertion.apply(&mut headers, Some(&fresh)),
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

mod rate_limit {
    use super::*;
    use portcullis::rate_limit::{MemoryStore, Quota};
    use std::num::NonZeroU32;

    /// A check for a known key in the in-memory store: key hashing, a read lock, a CAS.
    pub(super) fn bench(c: &mut Criterion) {
        let store = MemoryStore::new(100_000);
        let quota = Quota::per_second(NonZeroU32::new(1_000_000).unwrap());
        let subjects: Vec<String> = (0..10_000).map(|i| format!("user-{i:05}")).collect();
        for s in &subjects {
            store.check(store.key().part(s.as_bytes()).finish(), &quota, 0, 1);
        }
        let mut group = c.benchmark_group("rate_limit");
        let mut i = 0usize;
        let mut now = 1_000_000_000u64;
        group.bench_function("known_key_check", |b| {
            b.iter(|| {
                i = (i + 1) % subjects.len();
                now += 1_000;
                let key = store.key().part(subjects[i].as_bytes()).finish();
                store.check(black_box(key), &quota, now, 1).allowed
            })
        });
        group.finish();
    }
}

mod propagate {
    use super::*;
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use http::{HeaderValue, Request, Response};
    use portcullis::propagate::{PropagateLayer, TraceParent};
    use tower_layer::Layer;
    use tower_service::Service;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Calls and polls once (every layer and the no-op service answer at once).
    fn serve<S>(service: &mut S, request: Request<()>) -> Response<()>
    where
        S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
    {
        let mut cx = Context::from_waker(Waker::noop());
        let future = pin!(service.call(request));
        match future.poll(&mut cx) {
            Poll::Ready(Ok(response)) => response,
            _ => unreachable!("ready at once"),
        }
    }

    /// A request, with the client's request id and traceparent when `ids`.
    fn request(ids: bool) -> Request<()> {
        let mut request = Request::get("/orders/42").body(()).unwrap();
        if ids {
            let headers = request.headers_mut();
            headers.insert("x-request-id", HeaderValue::from_static("req-1"));
            headers.insert("traceparent", HeaderValue::from_static(PARENT));
        }
        request
    }

    /// A request with the client's ids and `bearer`, through `stack`, which answers 200.
    fn through_stack<S>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        stack: &mut S,
        bearer: &HeaderValue,
    ) where
        S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
    {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut r = request(true);
                    r.headers_mut().insert("authorization", bearer.clone());
                    r
                },
                |r| {
                    let response = serve(stack, r);
                    assert_eq!(response.status(), 200);
                    response
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }

    fn noop() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
        tower::service_fn(|_: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        })
    }

    /// The propagate layer per request (ids from the client, or made here), the traceparent
    /// parser, and the whole stack on a cached token.
    pub(super) fn bench(c: &mut Criterion) {
        let mut group = c.benchmark_group("propagate");
        let mut layer = PropagateLayer::new().layer(noop());
        group.bench_function("layer_ids_from_client", |b| {
            b.iter_batched(
                || request(true),
                |r| serve(&mut layer, r),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function("layer_ids_made_here", |b| {
            b.iter_batched(
                || request(false),
                |r| serve(&mut layer, r),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function("traceparent_parse_and_child", |b| {
            b.iter(|| {
                TraceParent::parse(black_box(PARENT.as_bytes()))
                    .unwrap()
                    .child([1; 8])
                    .unwrap()
                    .to_bytes()
            })
        });
        group.finish();

        // Propagate, authenticate (cached), authorize, claims to a header, rate limit (known
        // key), around a no-op service.
        let (validator, cases) = cases();
        let token = &cases[1].token;
        let mut stack = super::full_stack(validator);
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let _shared = bearer.clone();
        let mut group = c.benchmark_group("stack");
        through_stack(&mut group, "full_cached", &mut stack, &bearer);

        // The same work as `PolicyLayer` builds it from a policy file: one service running the
        // stages, the route matched once per request, what they decided kept as a local.
        let policy: portcullis::policy::Policy = format!(
            r#"
            [[issuers]]
            issuer = "{ISS}"
            audiences = ["api"]
            algorithms = ["ES256"]
            keys = {{ pem_files = ["tests/keys/p256.pub.pem"] }}

            [[routes]]
            path = "/orders/**"
            scopes_all = ["read:orders"]

            [[rate_limits]]
            name = "default"
            key = "claim:sub"
            rate = "1000000000/s"

            [upstream_headers]
            "x-user-id" = "sub"
            "#
        )
        .parse()
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let layer = runtime.block_on(policy.build()).unwrap();
        let mut stack = layer.layer(noop());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": "user-42", "iat": now,
            "exp": now + 3600, "scope": "read:orders"});
        let key = EncodingKey::from_ec_pem(include_bytes!("../tests/keys/p256.pem")).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Alg::ES256), &claims, &key).unwrap();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        through_stack(&mut group, "policy_cached", &mut stack, &bearer);
        group.finish();
    }
}

/// The whole stack over populations of distinct tokens larger and smaller than the
/// verified-token cache (its default 64 MiB budget), each request carrying the next token in
/// turn: the worst order for any recency-based cache. HS256 tokens keep the set-up of a million
/// of them short; a miss then costs an HMAC where an RS256 token would cost an RSA verify.
/// After each run the cache's entries, bytes and hit ratio go to stderr.
mod population {
    use super::*;
    use std::convert::Infallible;

    use criterion::BenchmarkId;
    use http::{HeaderValue, Request, Response};
    use tower_service::Service;

    /// `Bearer` and an HS256 token for subject `i`, minted by hand (fast).
    fn bearer(key: &hmac::Key, i: usize) -> HeaderValue {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"h"}"#);
        let claims = serde_json::json!({"iss": ISS, "aud": "api", "sub": format!("user-{i:07}"),
            "iat": NOW, "exp": NOW + 3600, "scope": "read:orders write:orders",
            "org": {"id": "acme"}});
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(key, input.as_bytes()));
        HeaderValue::from_str(&format!("Bearer {input}.{signature}")).unwrap()
    }

    fn serve<S>(service: &mut S, bearer: &HeaderValue)
    where
        S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
    {
        let mut request = Request::get("/orders/42").body(()).unwrap();
        request
            .headers_mut()
            .insert("authorization", bearer.clone());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let future = std::pin::pin!(service.call(request));
        match future.poll(&mut cx) {
            std::task::Poll::Ready(Ok(response)) => assert_eq!(response.status(), 200),
            _ => unreachable!("ready at once"),
        }
    }

    pub(super) fn bench(c: &mut Criterion) {
        // `cargo bench -- --test` runs each bench once: keep its set-up small.
        let smoke = std::env::args().any(|a| a == "--test");
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        let mut group = c.benchmark_group("population");
        let populations: &[usize] = if smoke {
            &[100, 1_000]
        } else {
            &[1_000, 100_000, 1_000_000]
        };
        for &population in populations {
            let validator = Validator::builder()
                .issuer(
                    Issuer::new(ISS, KeySet::new([Key::hmac(SECRET).unwrap().with_kid("h")]))
                        .audiences(["api"]),
                )
                .clock(ManualClock::new(Duration::from_secs(NOW)))
                .build()
                .unwrap();
            // Set up on the first call only, so a filter that leaves this bench out skips
            // minting and warming a million tokens.
            let mut state = None;
            let mut warm = None;
            let mut next = 0;
            group.bench_function(BenchmarkId::new("stack", population), |b| {
                let (stack, bearers) = state.get_or_insert_with(|| {
                    let mut stack = super::full_stack(validator.clone());
                    let bearers: Vec<HeaderValue> =
                        (0..population).map(|i| bearer(&key, i)).collect();
                    for bearer in &bearers {
                        serve(&mut stack, bearer);
                    }
                    warm = Some(validator.cache_stats());
                    (stack, bearers)
                });
                b.iter(|| {
                    next = (next + 1) % population;
                    serve(stack, &bearers[next]);
                })
            });
            let Some(warm) = warm else {
                continue;
            };
            let stats = validator.cache_stats();
            let (hits, misses) = (stats.hits - warm.hits, stats.misses - warm.misses);
            eprintln!(
                "population/{population}: cache {} entries, {} bytes ({} per entry) of a {} budget; \
                 hit ratio while measured {:.3}; {} evictions",
                stats.entries,
                stats.bytes,
                stats.bytes / stats.entries.max(1),
                stats.budget,
                hits as f64 / (hits + misses).max(1) as f64,
                stats.evictions
            );
        }
        group.finish();
    }
}

#[cfg(feature = "redis")]
#[path = "../tests/common/redis_server.rs"]
#[allow(unreachable_pub, dead_code)]
mod redis_server;

/// The Redis store's round trip on loopback (feature `redis`; starts its own `redis-server`):
/// one GCRA check (EVALSHA), and a request through `RateLimitLayer` with one Redis limit.
#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::num::NonZeroU32;

    use http::{Request, Response};
    use portcullis::rate_limit::{Limit, PeerAddr, Quota, RateLimitLayer, RedisStore};
    use tower_layer::Layer;
    use tower_service::Service;

    use super::redis_server;

    pub(super) fn bench(c: &mut Criterion) {
        let server = redis_server::RedisServer::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(RedisStore::connect(&server.url())).unwrap();
        // Never denies: the bench measures the round trip, not the 429.
        let big = NonZeroU32::new(1_000_000_000).unwrap();
        let quota = Quota::per_second(big).burst(big);
        let mut group = c.benchmark_group("redis");
        group.bench_function("check_round_trip", |b| {
            b.iter(|| {
                let decision = rt
                    .block_on(store.check(black_box("bench-key"), &quota, 1))
                    .unwrap();
                assert!(decision.allowed);
            })
        });

        let limit = Limit::new("ip", "ip".parse().unwrap(), quota)
            .unwrap()
            .redis(store.clone());
        let mut service =
            RateLimitLayer::new([limit]).layer(tower::service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
        let peer = PeerAddr("203.0.113.7:5000".parse::<SocketAddr>().unwrap());
        group.bench_function("layer_request", |b| {
            b.iter(|| {
                let mut request = Request::new(());
                request.extensions_mut().insert(peer);
                let response = rt.block_on(service.call(request)).unwrap();
                assert!(response.status().is_success());
            })
        });
        group.finish();
        drop(server);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = verify::bench, cache::bench, authz::bench, claims::bench, rate_limit::bench, propagate::bench, population::bench
}

#[cfg(feature = "redis")]
criterion_group! {
    name = redis_benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = redis::bench
}

#[cfg(feature = "redis")]
criterion_main!(benches, redis_benches);
#[cfg(not(feature = "redis"))]
criterion_main!(benches);
