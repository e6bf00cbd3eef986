//! Entry points for the cargo-fuzz targets in `fuzz/`, built only under `cfg(fuzzing)`.
//! Each one asserts an invariant, not only the absence of a panic.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::clock::ManualClock;
use crate::jwt::{Issuer, Validator};
use crate::keys::{Key, KeySet};

/// The issuer of the validation target.
pub const ISSUER: &str = "https://fuzz.example/";
/// The HMAC secret of the validation target.
pub const SECRET: &[u8] = b"fuzzing-secret-of-at-least-32-bytes!!";
/// The time of the validation target's clock.
pub const NOW: u64 = 1_700_000_000;

/// Token extraction over arbitrary header lines (`name:value\n…`): an accepted token is
/// non-empty, within the cap and in the token68 set.
pub fn extract(data: &[u8]) {
    crate::token::fuzz_extract(data);
}

/// JWS splitting and header/claims reading over arbitrary bytes: no panic, the parts add up
/// to the input, and a decoded signature re-encodes to the same text.
pub fn parse_jws(data: &[u8]) {
    crate::token::fuzz_parse(data);
}

/// Route matching over arbitrary paths and requests. The first byte chooses how parameters
/// and case are read. Whenever a path is accepted, its normalised form is canonical, holds no
/// `;`, normalises to itself and matches the same patterns; whenever a request (method, space,
/// target) is accepted, it is forwarded with exactly that normalised path, which resolves to
/// the same route, and without method-override headers.
pub fn route(data: &[u8]) {
    crate::route::path::fuzz_route(data);
    crate::route::fuzz_resolve(data);
}

/// Claim-path parsing and lookup over arbitrary JSON. The input is a path, a NUL byte, then a
/// JSON document. A parsed path prints back to itself; a value found renders only to a valid
/// header value without control characters.
pub fn claim_path(data: &[u8]) {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let Ok(text) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let Ok(path) = text.parse::<crate::claims::ClaimPath>() else {
        return;
    };
    let printed = path.to_string();
    assert_eq!(
        printed.parse::<crate::claims::ClaimPath>().as_ref(),
        Ok(&path),
        "{printed}"
    );
    let json = data.get(split + 1..).unwrap_or_default();
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(json) else {
        return;
    };
    if let Some(value) = path.lookup(&claims)
        && let Some(rendered) = crate::claims::render_header_value(value)
    {
        assert!(rendered.len() <= crate::claims::MAX_HEADER_VALUE_LEN);
        assert!(
            rendered.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{rendered:?}"
        );
        assert!(http::HeaderValue::from_str(&rendered).is_ok());
    }
}

/// GCRA through the in-memory store over arbitrary (key, time step, cost) sequences and an
/// arbitrary quota: per key, admitted units never exceed `burst + elapsed / T`; the time until
/// more quota (`t`) never exceeds the time until full nor, after an admission, `T`, and for a
/// denial of one unit equals the `Retry-After` wait.
pub fn gcra(data: &[u8]) {
    use crate::rate_limit::{MemoryStore, Quota};
    use std::num::NonZeroU32;
    let Some((head, steps)) = data.split_first_chunk::<5>() else {
        return;
    };
    let count = NonZeroU32::new(u32::from(u16::from_le_bytes([head[0], head[1]])))
        .unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_millis(u64::from(u16::from_le_bytes([head[2], head[3]])));
    let burst = NonZeroU32::new(u32::from(head[4])).unwrap_or(NonZeroU32::MIN);
    let Some(quota) = Quota::new(count, period) else {
        return;
    };
    let quota = quota.burst(burst);
    // Large enough that nothing is evicted: eviction forgets a key by design.
    let store = MemoryStore::new(4_096);
    let start = 1_000_000_000_000u64;
    let mut now = start;
    let mut admitted = [0u64; 256];
    for step in steps.chunks_exact(4) {
        let (key, dt, cost) = (
            step[0],
            u64::from(u16::from_le_bytes([step[1], step[2]])),
            u32::from(step[3] % 8) + 1,
        );
        now += dt * 1_000_000;
        let hashed = store.key().part(&[key]).finish();
        let decision = store.check(hashed, &quota, now, cost);
        if decision.allowed {
            admitted[usize::from(key)] += u64::from(cost);
        }
        // `t` (more quota) comes no later than the key is full, is 0 only on a full key, and
        // for a denial of one unit is exactly the `Retry-After` wait.
        assert!(decision.next <= decision.reset, "{decision:?}");
        assert_eq!(decision.next == 0, decision.reset == 0, "{decision:?}");
        if decision.allowed {
            assert!(decision.next <= quota.emission_interval(), "{decision:?}");
        }
        if !decision.allowed && cost == 1 {
            assert_eq!(decision.next, decision.retry_after, "{decision:?}");
        }
        let bound = u64::from(burst.get()) + (now - start) / quota.emission_interval();
        assert!(
            admitted[usize::from(key)] <= bound,
            "key {key}: {} > {bound}",
            admitted[usize::from(key)]
        );
    }
}

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        Validator::builder()
            .issuer(
                Issuer::new(
                    ISSUER,
                    KeySet::new([Key::hmac(SECRET).unwrap().with_kid("k")]),
                )
                .audiences(["api"]),
            )
            .clock(ManualClock::new(Duration::from_secs(NOW)))
            .cache_capacity(0)
            .build()
            .unwrap()
    })
}

fn signs(input: &[u8], signature_b64: &[u8], alg: hmac::Algorithm) -> bool {
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return false;
    };
    hmac::verify(&hmac::Key::new(alg, SECRET), input, &signature).is_ok()
}

/// Full validation against a fixed HMAC issuer.
///
/// The first byte picks the mode. Raw: the rest is the token; if accepted, its signature must
/// verify under the secret with the algorithm the identity reports. Signed: the rest is split
/// into header and payload JSON, signed with the secret; if accepted, the identity's claims
/// must equal a plain parse of the payload. Either way nothing panics.
pub fn validate(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(identity) = validator().validate_uncached(rest) {
            let cut = rest.iter().rposition(|b| *b == b'.').unwrap();
            let alg = identity
                .algorithm()
                .hmac()
                .expect("only HMAC keys are configured");
            assert!(
                signs(&rest[..cut], &rest[cut + 1..], alg),
                "accepted a forged token"
            );
        }
        return;
    }
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let (header, payload) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag));
    if let Ok(identity) = validator().validate_uncached(token.as_bytes()) {
        let plain: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).expect("accepted claims are JSON");
        assert_eq!(identity.claims(), &plain);
        assert_eq!(identity.issuer(), ISSUER);
    }
}

/// Client-IP extraction over arbitrary `X-Forwarded-For` / `Forwarded` values (one per line):
/// with no trusted proxies or an untrusted peer the answer is the peer; trusting every network
/// walks exactly as far as trusting every hop by count.
pub fn client_ip(data: &[u8]) {
    use crate::rate_limit::{ClientIp, ForwardedHeader, IpNet, TrustedProxies, client_ip};
    use std::net::IpAddr;
    // At most 200 bytes: under 255 entries, so Count(255) reaches every one.
    let Some((&which, rest)) = data
        .get(..data.len().min(200))
        .and_then(<[u8]>::split_first)
    else {
        return;
    };
    let header = if which & 1 == 0 {
        ForwardedHeader::XForwardedFor
    } else {
        ForwardedHeader::Forwarded
    };
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        _ => "forwarded",
    };
    let mut headers = http::HeaderMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(line) {
            headers.append(name, value);
        }
    }
    let peer: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([10, 0, 0, 1]));
    let outsider: IpAddr = IpAddr::from([198, 51, 100, 1]);
    let by = |trusted: TrustedProxies, peer: IpAddr| {
        client_ip(&headers, peer, &ClientIp::trusting(trusted).header(header))
    };
    assert_eq!(by(TrustedProxies::None, peer), peer);
    assert_eq!(by(TrustedProxies::Count(0), peer), peer);
    let all: Box<[IpNet]> = ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(
        by(TrustedProxies::Networks(all), peer),
        by(TrustedProxies::Count(255), peer)
    );
    let private: Box<[IpNet]> = ["10.0.0.0/8"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(by(TrustedProxies::Networks(private), outsider), outsider);
}

/// `traceparent` and `tracestate` parsing over arbitrary bytes (the first byte chooses). An
/// accepted `traceparent` writes back to the same bytes (its first 55, for a later version
/// with more fields) and its child parses; a `tracestate` (lines split at `\n`) that is
/// canonical rewrites to itself, and any valid one rewrites to a canonical value.
pub fn trace_context(data: &[u8]) {
    use crate::propagate::{TraceParent, TraceState, canonical_tracestate, check_tracestate};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(parent) = TraceParent::parse(rest) {
            assert_eq!(&parent.to_bytes()[..], &rest[..55]);
            assert!(rest.len() == 55 || parent.version() != 0);
            let child = parent.child([7; 8]).expect("non-zero span id");
            assert_eq!(TraceParent::parse(&child.to_bytes()), Ok(child));
            assert_eq!(child.trace_id(), parent.trace_id());
        }
        return;
    }
    let lines = || rest.split(|b| *b == b'\n');
    let state = check_tracestate(lines());
    let rewritten = canonical_tracestate(lines());
    match state {
        TraceState::Invalid => assert!(rewritten.is_none()),
        TraceState::Canonical => assert_eq!(rewritten.as_deref(), Some(rest)),
        TraceState::Rewrite => {
            let rewritten = rewritten.expect("valid");
            // At most 32 members, each key once.
            let keys: Vec<&[u8]> = rewritten
                .split(|b| *b == b',')
                .filter(|m| !m.is_empty())
                .map(|m| m.split(|b| *b == b'=').next().unwrap_or_default())
                .collect();
            assert!(keys.len() <= crate::propagate::MAX_TRACESTATE_MEMBERS);
            for (i, key) in keys.iter().enumerate() {
                assert!(!keys[..i].contains(key), "a repeated key is forwarded once");
            }
            if !rewritten.is_empty() {
                assert_eq!(check_tracestate([&rewritten[..]]), TraceState::Canonical);
            }
            assert_eq!(
                canonical_tracestate([&rewritten[..]]).as_deref(),
                Some(&rewritten[..])
            );
        }
    }
}

/// The policy file over arbitrary text: never a panic; a refusal names a line and column inside
/// the text (or the whole file); an accepted policy is accepted again.
#[cfg(feature = "policy")]
pub fn policy(data: &[u8]) {
    use crate::policy::{Policy, PolicyError};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A policy may name files to read; device files would block the target, not the parser.
    if ["/dev", "/proc", "/sys"].iter().any(|d| text.contains(d)) {
        return;
    }
    match Policy::from_toml(text) {
        Ok(_) => assert!(Policy::from_toml(text).is_ok()),
        Err(PolicyError::Invalid { line, column, .. }) => {
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "{line}"
            );
            assert!(column >= 1);
        }
        Err(_) => {}
    }
}
