//! The policy file: a whole stack from TOML with every kind of key source (PEM and JWKS files,
//! an HMAC secret from the environment, a JWKS URL and OIDC discovery against a real local
//! server), the messages bad files get, and reloading (state kept, bad files refused, no
//! request lost under load).
#![cfg(feature = "policy")]

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::{Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::policy::{Policy, PolicyError, PolicyHandle, PolicyLayer};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

/// A scratch folder for this test run.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-policy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keys_dir() -> String {
    format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"))
}

/// The echo service: the headers that reached it, as JSON.
fn echo() -> tower::util::BoxCloneService<Request<String>, Response<String>, Infallible> {
    tower::util::BoxCloneService::new(service_fn(|req: Request<String>| async move {
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
            .collect();
        let context = req
            .extensions()
            .get::<portcullis::propagate::RequestContext>()
            .map(|c| c.request_id().to_owned());
        Ok::<_, Infallible>(Response::new(
            json!({"headers": headers, "context": context}).to_string(),
        ))
    }))
}

async fn send(
    layer: &PolicyLayer,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = layer
        .layer(echo())
        .oneshot(request.body(String::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = serde_json::from_str(response.body()).unwrap_or(Value::Null);
    (status, body)
}

fn token(sub: &str, scope: &str, extra: Value) -> String {
    let mut claims = json!({"iss": ISS_A, "aud": "api", "sub": sub, "iat": unix_now() - 10,
        "exp": unix_now() + 600, "scope": scope, "org": {"id": "acme"}});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    mint(Alg::ES256, &claims)
}

fn full_policy(keys: &str) -> String {
    format!(
        r#"
[token]
sources = ["header:authorization", "cookie:access_token"]

[[issuers]]
issuer = "{ISS_A}"
audiences = ["api"]
algorithms = ["ES256", "RS256"]
leeway = "30s"
max_lifetime = "24h"
keys = {keys}

[[routes]]
path = "/health"
auth = "none"

[[routes]]
path = "/orders/**"
methods = ["POST", "PUT"]
scopes_all = ["write"]
rate_limit = "writes"

[[routes]]
path = "/orders/**"
scopes_any = ["read", "write"]

[[routes]]
path = "/tenants/*/reports"
claims = {{ "org.id" = ["acme"] }}

[[routes]]
path = "/admin/**"
roles_any = ["admin"]
roles_claim = "realm.roles"

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "100/min"
burst = 3
tiers = {{ claim = "plan", values = {{ gold = "1000/min" }} }}

[[rate_limits]]
name = "writes"
key = "claim:sub"
rate = "1/h"

[upstream_headers]
x-user-id = "sub"
x-tenant = "org.id"

[assertion]
key_file = "{keys_dir}/p256.pem"
ttl = "60s"
audience = "orders"

[propagate]
request_id = "x-request-id"
trace_context = true
request_context = true
"#,
        keys_dir = keys_dir()
    )
}

async fn check_full_stack(keys: &str) {
    let policy = Policy::from_toml(&full_policy(keys)).unwrap();
    let layer = policy.build().await.unwrap();
    let reader = token("ada", "read", json!({}));
    let writer = token("wes", "write", json!({}));

    let (status, body) = send(&layer, "GET", "/orders/1", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    let headers = &body["headers"];
    assert_eq!(headers["x-user-id"], "ada");
    assert_eq!(headers["x-tenant"], "acme");
    assert!(headers["x-portcullis-assertion"].as_str().unwrap().len() > 100);
    assert_eq!(headers["traceparent"].as_str().unwrap().len(), 55);
    assert_eq!(headers["x-request-id"].as_str().unwrap().len(), 36);
    assert_eq!(body["context"], headers["x-request-id"]);

    assert_eq!(send(&layer, "GET", "/health", None).await.0, StatusCode::OK);
    assert_eq!(
        send(&layer, "GET", "/orders/1", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&layer, "POST", "/orders", Some(&reader)).await.0,
        StatusCode::FORBIDDEN
    );
    // The writes limit: one an hour on the write route, apart from the default limit.
    assert_eq!(
        send(&layer, "POST", "/orders", Some(&writer)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, "POST", "/orders", Some(&writer)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&layer, "GET", "/orders/2", Some(&writer)).await.0,
        StatusCode::OK
    );
    // The default limit: a burst of 3 for ada (one used above), the gold tier more.
    assert_eq!(
        send(&layer, "GET", "/orders/3", Some(&reader)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, "GET", "/orders/4", Some(&reader)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, "GET", "/orders/5", Some(&reader)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let gold = token("gia", "read", json!({"plan": "gold"}));
    for _ in 0..10 {
        assert_eq!(
            send(&layer, "GET", "/orders/1", Some(&gold)).await.0,
            StatusCode::OK
        );
    }
    // Claims and roles rules.
    assert_eq!(
        send(&layer, "GET", "/tenants/acme/reports", Some(&gold))
            .await
            .0,
        StatusCode::OK
    );
    let other = token("oli", "read", json!({"org": {"id": "umbrella"}}));
    assert_eq!(
        send(&layer, "GET", "/tenants/x/reports", Some(&other))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let admin = token("ana", "", json!({"realm": {"roles": ["admin"]}}));
    assert_eq!(
        send(&layer, "GET", "/admin/users", Some(&admin)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, "GET", "/admin/users", Some(&gold)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_whole_stack_from_pem_files() {
    check_full_stack(&format!(
        r#"{{ pem_files = ["{}/p256.pub.pem", "{}/rsa2048.pub.pem"] }}"#,
        keys_dir(),
        keys_dir()
    ))
    .await;
}

#[tokio::test]
async fn a_whole_stack_from_a_jwks_file() {
    let dir = scratch("jwks-file");
    std::fs::write(
        dir.join("jwks.json"),
        jwks(&[Alg::ES256, Alg::RS256]).to_string(),
    )
    .unwrap();
    check_full_stack(&format!(
        r#"{{ jwks_file = "{}/jwks.json" }}"#,
        dir.display()
    ))
    .await;
}

#[cfg(feature = "jwks")]
#[tokio::test]
async fn a_whole_stack_from_a_jwks_url_and_from_discovery() {
    use common::jwks_server::JwksServer;
    let server = JwksServer::start(jwks(&[Alg::ES256, Alg::RS256])).await;
    check_full_stack(&format!(r#"{{ jwks_url = "{}" }}"#, server.jwks_url())).await;

    // Discovery: the issuer is the server itself.
    let issuer = server.issuer();
    let policy = Policy::from_toml(&format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
keys = {{ discovery = true }}
"#
    ))
    .unwrap();
    let layer = policy.build().await.unwrap();
    let claims = json!({"iss": issuer, "aud": "api", "sub": "ada", "iat": unix_now(), "exp": unix_now() + 60});
    let token = mint(Alg::ES256, &claims);
    assert_eq!(
        send(&layer, "GET", "/x", Some(&token)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&layer, "GET", "/x", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// The secret comes from the environment. `std::env::set_var` is `unsafe` in edition 2024 and
/// this crate forbids `unsafe`, so the test runs itself again in a child process with the
/// variable set.
#[tokio::test]
async fn hmac_secret_from_the_environment() {
    let var = "PORTCULLIS_TEST_POLICY_SECRET";
    let secret = std::str::from_utf8(HMAC_SECRET).unwrap();
    if std::env::var(var).as_deref() != Ok(secret) {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "hmac_secret_from_the_environment"])
            .env(var, secret)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("1 passed"), "{stdout}");
        return;
    }
    let policy = Policy::from_toml(&format!(
        r#"
[[issuers]]
issuer = "{ISS_H}"
audiences = ["api"]
algorithms = ["HS256"]
keys = {{ hmac_secret_env = "{var}" }}
"#
    ))
    .unwrap();
    let layer = policy.build().await.unwrap();
    let claims =
        json!({"iss": ISS_H, "aud": "api", "sub": "h", "iat": unix_now(), "exp": unix_now() + 60});
    let token = mint(Alg::HS256, &claims);
    let (status, body) = send(&layer, "GET", "/x", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    // No `request_context` key: no RequestContext in the extensions, the id on the headers.
    assert_eq!(body["context"], Value::Null);
    assert_eq!(body["headers"]["x-request-id"].as_str().unwrap().len(), 36);
    // An HMAC issuer refuses asymmetric algorithms.
    let message = Policy::from_toml(&format!(
        "[[issuers]]\nissuer = \"h\"\naudiences = []\nalgorithms = [\"ES256\"]\nkeys = {{ hmac_secret_env = \"{var}\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("ES256 needs a P-256 key, but this issuer's keys are an HMAC secret"),
        "{message}"
    );
}

fn refused(policy: &str) -> String {
    match Policy::from_toml(policy) {
        Ok(_) => panic!("accepted:\n{policy}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn bad_policies_get_clear_messages() {
    let pem = format!("{}/p256.pub.pem", keys_dir());
    let issuer = |extra: &str| {
        format!(
            "[[issuers]]\nissuer = \"https://i/\"\naudiences = [\"api\"]\nkeys = {{ pem_files = [\"{pem}\"] }}\n{extra}"
        )
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        // Unknown keys, with line and column.
        ("[[routes]]\npath = \"/a\"\nscope_all = [\"x\"]\n".into(), vec!["line 3, column 1", "unknown field `scope_all`"]),
        ("[propagate]\nrequest_ids = \"x\"\n".into(), vec!["line 2", "unknown field `request_ids`"]),
        ("[[issuers]]\nissuer = \"x\"\naudiences = []\nkeys = { pem_file = \"x\" }\n".into(), vec!["line 4", "unknown field `pem_file`"]),
        // Bad values, at the value.
        ("[[rate_limits]]\nname = \"default\"\nkey = \"claim:sub\"\nrate = \"100 per minute\"\n".into(), vec!["line 4, column 8", "bad rate \"100 per minute\""]),
        ("[[rate_limits]]\nname = \"default\"\nkey = \"cookie:x\"\nrate = \"1/s\"\n".into(), vec!["line 3", "unknown rate-limit key"]),
        (issuer("algorithms = [\"RS256\", \"XS512\"]\n"), vec!["unknown algorithm \"XS512\""]),
        ("[[routes]]\npath = \"/a/../b\"\n".into(), vec!["line 2, column 8", "can never match"]),
        ("[[routes]]\npath = \"orders\"\n".into(), vec!["must start with '/'"]),
        ("[[routes]]\npath = \"/a\"\nmethods = [\"get\"]\n".into(), vec!["line 3", "not an HTTP method"]),
        ("[[routes]]\npath = \"/a\"\nauth = \"maybe\"\n".into(), vec!["unknown auth \"maybe\""]),
        ("[propagate]\nrequest_id = \"bad header\"\n".into(), vec!["line 2", "not a header name"]),
        (issuer("leeway = \"soon\"\n"), vec!["line 5", "bad duration \"soon\""]),
        ("[token]\nsources = [\"query:token\"]\n".into(), vec!["unknown token source"]),
        ("[[rate_limits]]\nname = \"default\"\nkey = \"ip\"\nrate = \"1/s\"\nstore = \"memcached\"\n".into(), vec!["line 5", "unknown store \"memcached\""]),
        // Checks across values, at the section.
        (issuer("algorithms = [\"HS256\"]\n"), vec!["line 5", "HS256 needs an HMAC secret, but this issuer's keys are public keys"]),
        (issuer("algorithms = [\"RS256\"]\n"), vec!["none of these can be verified by this issuer's keys"]),
        ("[[issuers]]\nissuer = \"https://i/\"\nkeys = { pem_files = [\"x\"] }\n".into(), vec!["line 1", "audiences is required"]),
        ("[[issuers]]\nissuer = \"https://i/\"\naudiences = []\nkeys = { jwks_file = \"a\", pem_files = [\"b\"] }\n".into(), vec!["line 4", "set exactly one of"]),
        ("[[issuers]]\nissuer = \"https://i/\"\naudiences = []\nkeys = { pem_files = [\"/nonexistent.pem\"] }\n".into(), vec!["/nonexistent.pem"]),
        ("[[issuers]]\nissuer = \"https://i/\"\naudiences = []\nkeys = { hmac_secret_env = \"PORTCULLIS_SURELY_UNSET\" }\n".into(), vec!["PORTCULLIS_SURELY_UNSET"]),
        (format!("{}{}", issuer(""), issuer("")), vec!["line 5", "configured twice"]),
        ("[[routes]]\npath = \"/a\"\nrate_limit = \"nope\"\n".into(), vec!["line 3", "rate_limit \"nope\" is not defined"]),
        ("[[rate_limits]]\nname = \"spare\"\nkey = \"ip\"\nrate = \"1/s\"\n".into(), vec!["line 1", "rate limit \"spare\" is used by no route"]),
        ("[[rate_limits]]\nname = \"default\"\nkey = \"ip\"\nrate = \"1/s\"\n[[rate_limits]]\nname = \"default\"\nkey = \"ip\"\nrate = \"1/s\"\n".into(), vec!["line 6", "defined twice"]),
        ("[[routes]]\npath = \"/a\"\nauth = \"none\"\nscopes_all = [\"x\"]\n".into(), vec!["auth = \"none\" cannot have rules"]),
        (format!("[assertion]\nkey_file = \"{}/rsa2048.pem\"\n", keys_dir()), vec!["line 1", "must hold an ES256 (P-256) or Ed25519 private key"]),
        (format!("[assertion]\nkey_file = \"{}/p256.pub.pem\"\n", keys_dir()), vec!["must hold an ES256"]),
        // Identity headers and trusted networks, at the line they are on.
        ("[[routes]]\npath = \"/a\"\n[upstream_headers]\nx-user = \"sub\"\nauthorization = \"sub\"\n".into(), vec!["line 3", "header authorization cannot carry a claim"]),
        ("[upstream_headers]\nX-User = \"sub\"\nx-user = \"email\"\n".into(), vec!["line 1", "header x-user is mapped twice"]),
        ("[upstream_headers]\n\"bad header\" = \"sub\"\n".into(), vec!["line 1", "\"bad header\" is not a header name"]),
        ("[propagate]\ntrust_request_ids_from = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n".into(), vec!["line 2, column 26", "has host bits set"]),
        ("[propagate]\n\ntrust_request_ids_from = [\"nope\"]\n".into(), vec!["line 3", "\"nope\" is not an IP network"]),
        ("not toml at all = = =".into(), vec!["line 1"]),
        ("[propagate]\naudit = false\n".into(), vec!["line 1, column 1", "no [[issuers]]"]),
    ];
    for (policy, wanted) in cases {
        let message = refused(&policy);
        for want in wanted {
            assert!(
                message.contains(want),
                "wanted {want:?} in:\n{message}\nfor:\n{policy}"
            );
        }
    }
    // From a file, the message names it.
    let dir = scratch("bad-file");
    let path = dir.join("policy.toml");
    std::fs::write(&path, "[[routes]]\npath = \"/a\"\nsurprise = 1\n").unwrap();
    let message = Policy::from_file(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{message}"
    );
    assert!(matches!(
        Policy::from_file(dir.join("missing.toml")),
        Err(PolicyError::Read { .. })
    ));
}

fn reload_policy(burst: u32, admin_scope: &str) -> String {
    format!(
        r#"
[[issuers]]
issuer = "{ISS_A}"
audiences = ["api"]
keys = {{ pem_files = ["{keys}/p256.pub.pem"] }}

[[routes]]
path = "/admin/**"
scopes_all = ["{admin_scope}"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "1/h"
burst = {burst}
"#,
        keys = keys_dir()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_state_refuses_bad_files_and_loses_no_request() {
    let dir = scratch("reload");
    let path = dir.join("policy.toml");
    std::fs::write(&path, reload_policy(3, "admin")).unwrap();
    let handle = PolicyHandle::from_file(&path).await.unwrap();
    let service = handle.layer().layer(echo());
    let call = move |path: &'static str, token: String| {
        let service = service.clone();
        async move {
            let request = Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(String::new())
                .unwrap();
            service.oneshot(request).await.unwrap().status()
        }
    };
    let ops = token("ops", "ops", json!({}));
    let ada = token("ada", "read", json!({}));
    assert_eq!(call("/admin/x", ops.clone()).await, StatusCode::FORBIDDEN);
    assert_eq!(call("/orders", ada.clone()).await, StatusCode::OK);
    assert_eq!(handle.current().validator().cached_tokens(), 2);

    // The admin rule changes; the rate limit and the issuers do not: ada's bucket and the
    // token cache survive.
    std::fs::write(&path, reload_policy(3, "ops")).unwrap();
    assert_eq!(handle.reload().await, Ok(true));
    assert_eq!(handle.reload().await, Ok(false), "unchanged");
    assert_eq!(handle.generation(), 2);
    assert_eq!(
        handle.current().validator().cached_tokens(),
        2,
        "the cache survived"
    );
    assert_eq!(call("/admin/x", ops.clone()).await, StatusCode::OK);
    // Ada spent 1 of her burst of 3 before the reload: 2 are left, not 3.
    assert_eq!(call("/orders", ada.clone()).await, StatusCode::OK);
    assert_eq!(call("/orders", ada.clone()).await, StatusCode::OK);
    assert_eq!(
        call("/orders", ada.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "state kept"
    );

    // A bad file is refused with its message; the old policy keeps serving.
    std::fs::write(&path, "[[routes]]\npath = \"nope\"\n").unwrap();
    let error = handle.reload().await.unwrap_err().to_string();
    assert!(error.contains("must start with '/'"), "{error}");
    assert_eq!(handle.generation(), 2);
    assert_eq!(call("/admin/x", ops.clone()).await, StatusCode::OK);

    // A changed limit starts afresh.
    std::fs::write(&path, reload_policy(5, "ops")).unwrap();
    assert_eq!(handle.reload().await, Ok(true));
    assert_eq!(call("/orders", ada.clone()).await, StatusCode::OK);

    // Under load: 400 requests from 8 tasks while the policy flips 20 times; none is lost or
    // answered by a half-built stack.
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let ops = ops.clone();
        let call = call.clone();
        let served = served.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let status = call("/admin/x", ops.clone()).await;
                assert!(
                    status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                    "{status}"
                );
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..20 {
        std::fs::write(&path, reload_policy(1_000 + i, "ops")).unwrap();
        assert_eq!(handle.reload().await, Ok(true));
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(served.load(Ordering::Relaxed), 400);

    // Watching: a change on disk is picked up by itself.
    let watcher = handle.watch(std::time::Duration::from_millis(20));
    let before = handle.generation();
    std::fs::write(&path, reload_policy(7, "admin")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle.generation() == before {
        assert!(std::time::Instant::now() < deadline, "the watcher reloads");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(call("/admin/x", ops.clone()).await, StatusCode::FORBIDDEN);
    watcher.abort();
}

#[tokio::test]
async fn the_token_cache_budget_comes_from_the_token_section() {
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    let with = |token: &str| {
        format!(
            "{token}\n[[issuers]]\nissuer = \"{ISS_A}\"\naudiences = [\"api\"]\nkeys = {keys}\n"
        )
    };
    let default = Policy::from_toml(&with("")).unwrap().build().await.unwrap();
    assert_eq!(
        default.validator().cache_stats().budget,
        portcullis::jwt::DEFAULT_CACHE_BUDGET
    );
    let big = Policy::from_toml(&with("[token]\ncache_budget = \"256MiB\""))
        .unwrap()
        .build()
        .await
        .unwrap();
    assert_eq!(big.validator().cache_stats().budget, 256 << 20);
    // Off: a valid token is verified every time and nothing is cached.
    let off = Policy::from_toml(&with("[token]\ncache_budget = \"0\""))
        .unwrap()
        .build()
        .await
        .unwrap();
    let token = token("ada", "read", json!({}));
    for _ in 0..2 {
        assert_eq!(send(&off, "GET", "/", Some(&token)).await.0, StatusCode::OK);
    }
    assert_eq!(off.validator().cached_tokens(), 0);
    let error = Policy::from_toml(&with("[token]\ncache_budget = \"64MB\"")).unwrap_err();
    assert!(error.to_string().contains("bad size \"64MB\""), "{error}");
}
