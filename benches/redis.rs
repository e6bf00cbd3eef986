//! The Redis store's round trip on loopback: one GCRA check (EVALSHA of the Lua script), and a
//! request through `RateLimitLayer` with one Redis limit. Starts its own `redis-server` on a free
//! loopback port (`.ci/run` installs it when missing).
//!
//! Run with `cargo bench --features redis --bench redis`.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use portcullis::rate_limit::{Limit, PeerAddr, Quota, RateLimitLayer, RedisStore};
use tower_layer::Layer;
use tower_service::Service;

#[path = "../tests/common/redis_server.rs"]
#[allow(unreachable_pub, dead_code)]
mod redis_server;

fn bench(c: &mut Criterion) {
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

criterion_group!(benches, bench);
criterion_main!(benches);
