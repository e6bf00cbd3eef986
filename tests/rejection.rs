//! One rejection hook for every layer and for the policy stack: the same function shapes the
//! 400/401 of authentication, the 401/403 of authorization and the 429 of the rate limit, alone
//! or in the policy stack (built or reloading); the reason code and typed error stay in the
//! extensions whatever the hook returns, and gRPC requests still get gRPC's trailers-only form.

mod common;

use std::convert::Infallible;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::authz::{AuthorizeLayer, AuthzError, Route, Routes};
use portcullis::jwt::{JwtAuthLayer, JwtError};
use portcullis::policy::{Policy, PolicyHandle};
use portcullis::rate_limit::{Limit, Quota, RateLimitLayer, RateLimited};
use portcullis::reject::{Refused, Rejection};
use serde_json::{Value, json};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// The application's hook: an RFC 9457 problem body naming the status and reason, with the
/// challenge and the retry delay the default would send.
fn problem(rejection: &Rejection<'_>) -> Response<String> {
    let detail = if let Some(error) = rejection.error().downcast_ref::<JwtError>() {
        format!("authentication: {error}")
    } else if let Some(error) = rejection.error().downcast_ref::<AuthzError>() {
        format!("authorization: {error}")
    } else if let Some(error) = rejection.error().downcast_ref::<RateLimited>() {
        format!("limit {}", error.limit)
    } else {
        rejection.error().to_string()
    };
    let body = json!({"status": rejection.status().as_u16(), "type": rejection.reason(),
        "detail": detail, "grpc": rejection.is_grpc()});
    let mut response = Response::new(body.to_string());
    *response.status_mut() = rejection.status();
    let headers = response.headers_mut();
    headers.insert("content-type", "application/problem+json".parse().unwrap());
    if let Some(challenge) = rejection.www_authenticate() {
        headers.insert("www-authenticate", challenge.clone());
    }
    if let Some(secs) = rejection.retry_after() {
        headers.insert("retry-after", secs.into());
    }
    response
}

fn ok() -> tower::util::BoxCloneService<Request<String>, Response<String>, Infallible> {
    tower::util::BoxCloneService::new(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new("upstream".to_owned()))
    }))
}

fn request(path: &str, token: Option<&str>) -> http::request::Builder {
    let mut builder = Request::get(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
}

/// The response as (status, problem body or null, reason record).
fn read(response: &Response<String>) -> (StatusCode, Value, Option<&'static str>) {
    let body = serde_json::from_str(response.body()).unwrap_or(Value::Null);
    let reason = response.extensions().get::<Refused>().map(Refused::reason);
    (response.status(), body, reason)
}

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

#[tokio::test]
async fn each_layer_alone_takes_the_same_hook() {
    let routes = Routes::new([
        Route::new("/admin/**").unwrap().scopes_all(["admin"]),
        Route::new("/**").unwrap(),
    ]);
    let limit = Limit::new("tight", "claim:sub".parse().unwrap(), Quota::per_hour(n(1))).unwrap();
    let service = ServiceBuilder::new()
        .layer(JwtAuthLayer::new(validator(clock(), 16)).on_rejection(problem))
        .layer(AuthorizeLayer::new(routes).on_rejection(problem))
        .layer(RateLimitLayer::new([limit]).on_rejection(problem))
        .service(ok());
    let ada = mint(Alg::ES256, &claims("ada"));

    // Authentication: no token, then a malformed one.
    let response = service
        .clone()
        .oneshot(request("/orders", None).body(String::new()).unwrap())
        .await
        .unwrap();
    let (status, body, reason) = read(&response);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "token_missing");
    assert_eq!(reason, Some("token_missing"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="api""#
    );
    assert_eq!(
        response.extensions().get::<JwtError>(),
        Some(&JwtError::Missing)
    );
    let response = service
        .clone()
        .oneshot(request("/orders", Some("a.b")).body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(read(&response).1["type"], "malformed_token");

    // Authorization: the 403 with its challenge, through the same function.
    let response = service
        .clone()
        .oneshot(
            request("/admin/users", Some(&ada))
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, body, reason) = read(&response);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["type"], "insufficient_scope");
    assert_eq!(
        body["detail"],
        "authorization: insufficient scope for route /admin/**"
    );
    assert_eq!(reason, Some("insufficient_scope"));
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );
    assert!(response.extensions().get::<AuthzError>().is_some());

    // The rate limit: one an hour, then the problem body with the retry delay, and the
    // RateLimit fields added to the hook's response as to any other.
    let first = service
        .clone()
        .oneshot(request("/orders", Some(&ada)).body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.body(), "upstream");
    let response = service
        .clone()
        .oneshot(request("/orders", Some(&ada)).body(String::new()).unwrap())
        .await
        .unwrap();
    let (status, body, reason) = read(&response);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["type"], "rate_limited");
    assert_eq!(body["detail"], "limit tight");
    assert_eq!(reason, Some("rate_limited"));
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    assert!(
        response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with(r#""tight";r=0;t="#)
    );
    assert!(response.extensions().get::<RateLimited>().is_some());
}

#[tokio::test]
async fn a_grpc_request_gets_the_trailers_only_form_whatever_the_hook_writes() {
    let hooked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hooked);
    let hook = move |rejection: &Rejection<'_>| {
        assert!(rejection.is_grpc());
        seen.fetch_add(1, Ordering::SeqCst);
        problem(rejection)
    };
    let service = JwtAuthLayer::new(validator(clock(), 16))
        .on_rejection(hook)
        .layer(ok());
    let response = service
        .oneshot(
            request("/pkg.Service/Method", None)
                .header("content-type", "application/grpc")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(hooked.load(Ordering::SeqCst), 1, "the hook still runs");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(
        response.body(),
        "",
        "no JSON where a gRPC client reads messages"
    );
    assert_eq!(read(&response).2, Some("token_missing"));
}

fn policy_text() -> String {
    format!(
        r#"
[[issuers]]
issuer = "{ISS_A}"
audiences = ["api"]
algorithms = ["ES256"]
keys = {{ pem_files = ["{dir}/tests/keys/p256.pub.pem"] }}

[[routes]]
path = "/admin/**"
scopes_all = ["admin"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "1/h"
"#,
        dir = env!("CARGO_MANIFEST_DIR")
    )
}

fn live_token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    mint(
        Alg::ES256,
        &json!({"iss": ISS_A, "aud": "api", "sub": sub, "iat": now - 10, "exp": now + 600,
            "scope": "read"}),
    )
}

/// Every refusal of a stack: (status, problem type) for no token, a 403, and a 429.
async fn refusals<S>(service: S, sub: &str) -> Vec<(StatusCode, Value, Option<&'static str>)>
where
    S: tower::Service<Request<String>, Response = Response<String>, Error = Infallible> + Clone,
{
    let token = live_token(sub);
    let mut seen = Vec::new();
    for (path, token) in [
        ("/orders", None),
        ("/admin/users", Some(token.as_str())),
        ("/orders", Some(token.as_str())),
        ("/orders", Some(token.as_str())),
    ] {
        let response = service
            .clone()
            .oneshot(request(path, token).body(String::new()).unwrap())
            .await
            .unwrap();
        let (status, body, reason) = read(&response);
        seen.push((status, body["type"].clone(), reason));
    }
    seen
}

#[tokio::test]
async fn the_policy_stack_takes_one_hook_built_or_reloading() {
    let expected = vec![
        (
            StatusCode::UNAUTHORIZED,
            json!("token_missing"),
            Some("token_missing"),
        ),
        (
            StatusCode::FORBIDDEN,
            json!("insufficient_scope"),
            Some("insufficient_scope"),
        ),
        (StatusCode::OK, Value::Null, None),
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!("rate_limited"),
            Some("rate_limited"),
        ),
    ];

    let built = Policy::from_toml(&policy_text())
        .unwrap()
        .build()
        .await
        .unwrap()
        .on_rejection(problem);
    assert_eq!(refusals(built.layer(ok()), "ada").await, expected);

    let handle = PolicyHandle::new(Policy::from_toml(&policy_text()).unwrap())
        .await
        .unwrap();
    let reloading = handle.layer().on_rejection(problem).layer(ok());
    assert_eq!(refusals(reloading.clone(), "bo").await, expected);

    // A new policy keeps the hook: the stack rebuilt on the next request still answers with it
    // (the limits' state is kept across the reload, so another subject).
    handle
        .replace(Policy::from_toml(&policy_text()).unwrap())
        .await
        .unwrap();
    assert_eq!(handle.generation(), 2);
    assert_eq!(refusals(reloading, "cy").await, expected, "same hook");

    // Without a hook, the same refusals have empty bodies and the same reason records.
    let plain = Policy::from_toml(&policy_text())
        .unwrap()
        .build()
        .await
        .unwrap();
    let reasons: Vec<_> = refusals(plain.layer(ok()), "ada")
        .await
        .into_iter()
        .map(|(status, body, reason)| {
            assert_eq!(body, Value::Null);
            (status, reason)
        })
        .collect();
    assert_eq!(
        reasons,
        expected
            .iter()
            .map(|(status, _, reason)| (*status, *reason))
            .collect::<Vec<_>>()
    );
}
