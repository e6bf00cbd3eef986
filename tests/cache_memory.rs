//! The verified-token cache stays within its memory budget, measured with dhat: a population of
//! distinct tokens much larger than the budget, each sent twice, each with realistic claims,
//! each read by the claims layer (header values and a signed assertion derived and cached in
//! the identity).
//!
//! One test per binary: dhat's profiler is process-wide.

mod common;

use common::*;
use http::HeaderMap;
use portcullis::claims::{AssertionSigner, MapClaimsLayer};
use portcullis::jwt::{Issuer, Validator};
use portcullis::keys::{Key, KeySet};
use serde_json::json;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn heap_bytes() -> usize {
    dhat::HeapStats::get().curr_bytes
}

/// Claims as an identity provider issues them: about 550 bytes of token.
fn claims_of(i: usize) -> serde_json::Value {
    json!({"iss": ISS_H, "aud": "api", "sub": format!("user-{i:07}"), "iat": NOW - 10,
        "exp": NOW + 3_600, "scope": "orders:read orders:write profile",
        "name": format!("User Number {i}"), "email": format!("user{i}@example.com"),
        "org": {"id": "acme", "plan": "gold"}, "roles": ["reader", "writer", "billing"],
        "sid": format!("{i:032x}"), "azp": "web-client", "auth_time": NOW - 100})
}

#[test]
fn the_token_cache_stays_within_its_budget() {
    let _profiler = dhat::Profiler::builder().testing().build();

    const BUDGET: usize = 2 << 20;
    const TOKENS: usize = 6_000;
    let validator = Validator::builder()
        .issuer(
            Issuer::new(
                ISS_H,
                KeySet::new([Key::hmac(HMAC_SECRET).unwrap().with_kid("h")]),
            )
            .audiences(["api"]),
        )
        .clock(clock())
        .cache_budget(BUDGET)
        .build()
        .unwrap();
    let signer = AssertionSigner::from_pem(P256_PRIVATE, "https://gateway.example", "svc")
        .unwrap()
        .clock(clock());
    let mapping = MapClaimsLayer::new([("x-user-id", "sub"), ("x-tenant", "org.id")])
        .unwrap()
        .assertion(signer);
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| mint(jsonwebtoken::Algorithm::HS256, &claims_of(i)))
        .collect();
    let token_len = tokens[0].len();
    assert!((500..900).contains(&token_len), "{token_len}");
    let mut headers = HeaderMap::with_capacity(16);
    // Warm every lazily built piece (the provider, the signer's state) with a token of its own.
    let warm = mint(jsonwebtoken::Algorithm::HS256, &claims_of(TOKENS));
    mapping.apply(
        &mut headers,
        Some(&validator.validate(warm.as_bytes()).unwrap()),
    );

    let before = heap_bytes();
    let mut largest = 0;
    for token in &tokens {
        // Twice, as a client sends its token more than once: a full cache admits a token on
        // its second miss.
        validator.validate(token.as_bytes()).unwrap();
        let identity = validator.validate(token.as_bytes()).unwrap();
        headers.clear();
        mapping.apply(&mut headers, Some(&identity));
        drop(identity);
        largest = largest.max(heap_bytes().saturating_sub(before));
    }
    headers.clear();
    let held = heap_bytes().saturating_sub(before);
    let stats = validator.cache_stats();
    println!(
        "{TOKENS} tokens of {token_len} bytes, budget {BUDGET}: {} entries, charged {} bytes \
         ({} per entry), heap held {held} bytes ({} per entry), at most {largest}; \
         {} evictions",
        stats.entries,
        stats.bytes,
        stats.bytes / stats.entries,
        held / stats.entries,
        stats.evictions
    );
    assert!(stats.bytes <= BUDGET, "{stats:?}");
    assert!(
        stats.evictions > 0,
        "the population is larger than the budget"
    );
    assert!(
        largest <= BUDGET + BUDGET / 10,
        "the heap the cache holds ({largest}) stays within its budget ({BUDGET}) + 10 %"
    );
    assert!(
        held >= stats.bytes / 2,
        "the charge is not wildly above what is held: {held} held for {} charged",
        stats.bytes
    );
}
