//! The gate and the service agree on what a request is: the policy stack over a real socket,
//! fed raw HTTP/1.1 (lower-case methods, `;` parameters, duplicate and underscored headers),
//! with a service that answers with what reached it. Each class of ambiguity is refused (400)
//! or neutralised, in every position and encoding.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use jsonwebtoken::Algorithm as Alg;
use portcullis::authz::Route;
use portcullis::authz::path::PatternError;
use portcullis::policy::Policy;
use serde_json::{Value, json};
use tower::{Layer, service_fn};

fn keys_dir() -> String {
    format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"))
}

fn policy(paths: &str) -> String {
    format!(
        r#"
{paths}

[[issuers]]
issuer = "{iss}"
audiences = ["api"]
keys = {{ pem_files = ["{keys}/p256.pub.pem"] }}

[[routes]]
path = "/public/**"
auth = "none"
[[routes]]
path = "/admin/**"
scopes_all = ["admin"]
[[routes]]
path = "/orders/{{id}}"
methods = ["POST", "DELETE"]
scopes_all = ["write"]
[[routes]]
path = "/reports/**"
methods = ["GET"]
scopes_all = ["reports"]

[upstream_headers]
x-user-id = "sub"

[assertion]
key_file = "{keys}/p256.pem"
"#,
        iss = common::ISS_A,
        keys = keys_dir(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str, scope: &str) -> String {
    common::mint(
        Alg::ES256,
        &json!({"iss": common::ISS_A, "aud": "api", "sub": sub, "iat": now(),
            "exp": now() + 600, "scope": scope}),
    )
}

/// Serves the policy's stack over a socket in front of a service that answers with the
/// method, path and headers it received.
async fn serve(policy_text: &str) -> SocketAddr {
    let layer = Policy::from_toml(policy_text)
        .unwrap()
        .build()
        .await
        .unwrap();
    let echo = service_fn(|request: Request<Incoming>| async move {
        let mut headers = serde_json::Map::new();
        for name in request.headers().keys() {
            let values: Vec<String> = request
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            headers.insert(name.as_str().to_owned(), json!(values));
        }
        let body = json!({
            "method": request.method().as_str(),
            "path": request.uri().to_string(),
            "headers": headers,
        });
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    });
    let service = layer.layer(echo);
    common::serve_loopback(service).await
}

/// Sends `method target` with `headers` as written, on its own connection; returns the status
/// and, on 200, what reached the service.
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut text = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    let (status, response) = common::raw_exchange(addr, text.as_bytes()).await;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let seen = if status == 200 {
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{response}"))
    } else {
        Value::Null
    };
    (status, seen)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn path_parameters_are_refused_in_every_position_and_encoding() {
    let addr = serve(&policy("")).await;
    let user = bearer(&token("ada", "read"));
    let admin = bearer(&token("root", "admin"));
    for target in [
        "/admin;x/index.html",
        "/admin;/index.html",
        "/admin/index.html;jsessionid=1",
        "/public/..;/admin/index.html",
        "/public/..;x=1/admin/index.html",
        "/;/admin/users",
        "/public;x",
        "/admin%3Bx/index.html",
        "/admin%3bx/index.html",
        "/public/..%3B/admin/index.html",
        "/public/..%3b/admin/index.html",
        "/public/x%3b",
    ] {
        for auth in [None, Some(&user), Some(&admin)] {
            let headers: Vec<(&str, &str)> = auth
                .map(|a| ("authorization", a.as_str()))
                .into_iter()
                .collect();
            assert_eq!(
                raw(addr, "GET", target, &headers).await.0,
                400,
                "{target} {auth:?}"
            );
        }
    }
    // The query is not the path: a ';' there is the service's business.
    let (status, seen) = raw(addr, "GET", "/public/x?a=1;b=2", &[]).await;
    assert_eq!(
        (status, seen["path"].as_str()),
        (200, Some("/public/x?a=1;b=2"))
    );
}

#[tokio::test]
async fn stripped_parameters_are_matched_without_them_and_never_forwarded() {
    let addr = serve(&policy("[paths]\nparameters = \"strip\"")).await;
    let user = bearer(&token("ada", "read"));
    let admin = bearer(&token("root", "admin"));
    for target in [
        "/admin;x/index.html",
        "/public/..;/admin/index.html",
        "/public/..;x=1/admin/index.html",
        "/;x/admin/index.html",
        "/admin/index.html;jsessionid=1",
    ] {
        assert_eq!(raw(addr, "GET", target, &[]).await.0, 401, "{target}");
        assert_eq!(
            raw(addr, "GET", target, &[("authorization", &user)])
                .await
                .0,
            403,
            "{target}"
        );
        let (status, seen) = raw(addr, "GET", target, &[("authorization", &admin)]).await;
        assert_eq!(status, 200, "{target}");
        assert_eq!(
            seen["path"], "/admin/index.html",
            "{target}: forwarded as matched"
        );
    }
    // Encoded semicolons stay refused: servers disagree on whether they separate a parameter.
    assert_eq!(raw(addr, "GET", "/public/..%3b/admin/x", &[]).await.0, 400);
}

#[tokio::test]
async fn a_method_is_read_one_way() {
    let addr = serve(&policy("")).await;
    let reader = bearer(&token("ada", "read"));
    // A rule on POST and DELETE: no spelling skips it.
    for method in [
        "post", "Post", "pOST", "delete", "Delete", "get", "Get", "options", "patch",
    ] {
        assert_eq!(
            raw(addr, method, "/orders/1", &[("authorization", &reader)])
                .await
                .0,
            400,
            "{method}"
        );
    }
    assert_eq!(
        raw(addr, "POST", "/orders/1", &[("authorization", &reader)])
            .await
            .0,
        403
    );
    assert_eq!(
        raw(addr, "DELETE", "/orders/1", &[("authorization", &reader)])
            .await
            .0,
        403
    );
    // HEAD is answered by GET handlers: a rule on GET holds for it.
    for method in ["GET", "HEAD"] {
        let auth = [("authorization", reader.as_str())];
        assert_eq!(
            raw(addr, method, "/reports/q3", &auth).await.0,
            403,
            "{method}"
        );
    }
    // Override headers never reach the service, in any spelling or number.
    let (status, seen) = raw(
        addr,
        "GET",
        "/orders/1",
        &[
            ("authorization", &reader),
            ("X-HTTP-Method-Override", "DELETE"),
            ("x-http-method-override", "POST"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "DELETE"),
            ("X_HTTP_Method_Override", "DELETE"),
            ("x-http_method", "DELETE"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen["method"], "GET");
    let names: Vec<&String> = seen["headers"].as_object().unwrap().keys().collect();
    assert!(
        names.iter().all(|n| !n.contains("method")),
        "override headers reached the service: {names:?}"
    );
    // A `_method` query parameter, which frameworks also honour, is refused in any spelling.
    for target in [
        "/orders/1?_method=DELETE",
        "/orders/1?page=2&_method=POST",
        "/orders/1?_METHOD=DELETE",
        "/orders/1?%5Fmethod=DELETE",
        "/orders/1?_%6Dethod=DELETE",
        "/orders/1?_method",
    ] {
        assert_eq!(
            raw(addr, "GET", target, &[("authorization", &reader)])
                .await
                .0,
            400,
            "{target}"
        );
    }
    let (status, seen) = raw(
        addr,
        "GET",
        "/orders/1?x_method=1",
        &[("authorization", &reader)],
    )
    .await;
    assert_eq!(
        (status, seen["path"].as_str()),
        (200, Some("/orders/1?x_method=1"))
    );
}

#[tokio::test]
async fn header_names_an_upstream_reads_as_the_same_are_removed() {
    let addr = serve(&policy("")).await;
    let reader = bearer(&token("ada", "read"));
    let spoofs = [
        ("X_User_Id", "admin"),
        ("x_user_id", "admin"),
        ("X-User_Id", "admin"),
        ("x_USER-id", "admin"),
        ("X-User-Id", "admin"),
        ("X_Request_Id", "forged\", \"admin"),
        ("X_Portcullis_Assertion", "forged"),
        ("x-portcullis_assertion", "forged"),
    ];
    let mut with_token = vec![("authorization", reader.as_str())];
    with_token.extend(spoofs);
    let (status, seen) = raw(addr, "GET", "/orders/1", &with_token).await;
    assert_eq!(status, 200);
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-user-id"], json!(["ada"]));
    for name in headers.keys() {
        assert!(
            !name.contains('_'),
            "{name} reached the service beside the gate's header"
        );
    }
    assert_eq!(headers["x-request-id"].as_array().unwrap().len(), 1);
    let assertion = headers["x-portcullis-assertion"].as_array().unwrap();
    assert_eq!(assertion.len(), 1);
    assert_ne!(assertion[0], "forged");
    // On a public route with no identity the client's copies go all the same.
    let (status, seen) = raw(addr, "GET", "/public/x", &spoofs).await;
    assert_eq!(status, 200);
    let headers = seen["headers"].as_object().unwrap();
    assert!(
        headers
            .keys()
            .all(|n| !n.replace('_', "-").eq_ignore_ascii_case("x-user-id"))
    );
}

#[tokio::test]
async fn a_case_ambiguous_path_is_refused_unless_the_upstream_is_named() {
    let addr = serve(&policy("")).await;
    let user = bearer(&token("ada", "read"));
    let admin = bearer(&token("root", "admin"));
    for target in [
        "/ADMIN/users",
        "/Admin/users",
        "/aDmIn",
        "/%41DMIN/users",
        "/PUBLIC/x",
    ] {
        assert_eq!(raw(addr, "GET", target, &[]).await.0, 400, "{target}");
        assert_eq!(
            raw(addr, "GET", target, &[("authorization", &user)])
                .await
                .0,
            400,
            "{target}"
        );
    }
    // The method counts: the orders rule is on POST, so only a POST is ambiguous.
    assert_eq!(
        raw(addr, "POST", "/Orders/1", &[("authorization", &user)])
            .await
            .0,
        400
    );
    assert_eq!(
        raw(addr, "GET", "/Orders/1", &[("authorization", &user)])
            .await
            .0,
        200
    );
    // Case only in what no route names is the service's business.
    let (status, seen) = raw(addr, "GET", "/admin/USERS", &[("authorization", &admin)]).await;
    assert_eq!((status, seen["path"].as_str()), (200, Some("/admin/USERS")));

    let insensitive = serve(&policy("[paths]\ncase = \"insensitive\"")).await;
    for target in ["/ADMIN/users", "/%41dmin/users"] {
        assert_eq!(
            raw(insensitive, "GET", target, &[]).await.0,
            401,
            "{target}"
        );
        assert_eq!(
            raw(insensitive, "GET", target, &[("authorization", &user)])
                .await
                .0,
            403
        );
        assert_eq!(
            raw(insensitive, "GET", target, &[("authorization", &admin)])
                .await
                .0,
            200
        );
    }
    assert_eq!(raw(insensitive, "GET", "/PUBLIC/x", &[]).await.0, 200);

    let sensitive = serve(&policy("[paths]\ncase = \"sensitive\"")).await;
    // Matched exactly: no route, so a valid token passes and no rule applies.
    assert_eq!(
        raw(
            sensitive,
            "GET",
            "/ADMIN/users",
            &[("authorization", &user)]
        )
        .await
        .0,
        200
    );
    assert_eq!(raw(sensitive, "GET", "/ADMIN/users", &[]).await.0, 401);
}

#[tokio::test]
async fn axum_style_parameters_match_and_other_syntaxes_are_errors() {
    let addr = serve(&policy("")).await;
    let reader = bearer(&token("ada", "read"));
    let writer = bearer(&token("wes", "write"));
    // `/orders/{id}` is one segment: the rule on POST applies.
    assert_eq!(
        raw(addr, "POST", "/orders/42", &[("authorization", &reader)])
            .await
            .0,
        403
    );
    assert_eq!(
        raw(addr, "POST", "/orders/42", &[("authorization", &writer)])
            .await
            .0,
        200
    );
    for pattern in [
        "/orders/:id",
        "/orders/{*rest}",
        "/orders/{id:[0-9]+}",
        "/orders/(\\\\d+)",
        "/orders/[0-9]*",
        "/orders/a*",
        "/orders//items",
        "/orders/",
        "/orders/^x$",
        "/orders/x|y",
        "/orders/x;y",
    ] {
        assert!(
            matches!(Route::new(pattern), Err(PatternError::NeverMatches { .. })),
            "{pattern}"
        );
        let text = format!("[[routes]]\npath = \"{pattern}\"\n");
        let error = Policy::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains("line 2, column 8"), "{pattern}: {error}");
        assert!(error.contains("can never match"), "{pattern}: {error}");
    }
}

#[tokio::test]
async fn claim_values_an_upstream_would_trim_or_split_are_encoded() {
    let addr = serve(&policy("")).await;
    for (sub, want) in [(" alice ", "%20alice%20"), ("alice,admin", "alice%2Cadmin")] {
        let token = common::mint(
            Alg::ES256,
            &json!({"iss": common::ISS_A, "aud": "api", "sub": sub, "iat": now(), "exp": now() + 600}),
        );
        let (status, seen) = raw(
            addr,
            "GET",
            "/orders/1",
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(seen["headers"]["x-user-id"], json!([want]), "{sub:?}");
    }
}
