//! Authorization: rule truth tables, route modes through the whole stack, and attempts to
//! reach a rule's path by another spelling.

mod common;

use std::convert::Infallible;
use std::sync::Arc;

use common::*;
use http::{Method, Request, Response, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::authz::{Auth, AuthorizeLayer, AuthzError, Route, Routes};
use portcullis::claims::ClaimPath;
use portcullis::jwt::{Identity, JwtAuthLayer, JwtError};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

fn identity(claims: Value) -> Identity {
    let validator = validator(clock(), 0);
    let mut full = common::claims("ada");
    for (k, v) in claims.as_object().unwrap() {
        full[k] = v.clone();
    }
    validator
        .validate_uncached(mint(Alg::ES256, &full).as_bytes())
        .unwrap()
}

fn path(p: &str) -> ClaimPath {
    p.parse().unwrap()
}

#[test]
fn rule_truth_tables() {
    let all = Route::new("/x").unwrap().scopes_all(["a", "b"]);
    let any = Route::new("/x").unwrap().scopes_any(["a", "b"]);
    let cases = [
        (json!({"scope": "a b c"}), true, true),
        (json!({"scope": "a"}), false, true),
        (json!({"scope": "c"}), false, false),
        (json!({"scope": "", "scp": ["b", "a"]}), true, true),
        (json!({"scope": "", "scp": "b"}), false, true),
        (json!({"scope": "ab"}), false, false),
        (json!({"scope": "A B"}), false, false),
    ];
    for (claims, want_all, want_any) in cases {
        let id = identity(claims.clone());
        assert_eq!(all.allows(&id), want_all, "scopes_all {claims}");
        assert_eq!(any.allows(&id), want_any, "scopes_any {claims}");
    }

    let roles = Route::new("/x")
        .unwrap()
        .roles_any(path("realm_access.roles"), ["admin", "ops"]);
    for (claims, want) in [
        (json!({"realm_access": {"roles": ["user", "ops"]}}), true),
        (json!({"realm_access": {"roles": "admin"}}), true),
        (json!({"realm_access": {"roles": ["user"]}}), false),
        (json!({"realm_access": {"roles": [["admin"]]}}), false),
        (json!({"realm_access": "admin"}), false),
        (json!({"roles": ["admin"]}), false),
    ] {
        assert_eq!(
            roles.allows(&identity(claims.clone())),
            want,
            "roles {claims}"
        );
    }

    let claim = Route::new("/x")
        .unwrap()
        .claim(path("org.id"), ["acme", "42"])
        .claim(path(r#"["https://example.com/tier"]"#), ["gold", "true"]);
    for (claims, want) in [
        (
            json!({"org": {"id": "acme"}, "https://example.com/tier": "gold"}),
            true,
        ),
        (
            json!({"org": {"id": 42}, "https://example.com/tier": true}),
            true,
        ),
        (
            json!({"org": {"id": ["x", "acme"]}, "https://example.com/tier": ["gold"]}),
            true,
        ),
        (
            json!({"org": {"id": "acme"}, "https://example.com/tier": "silver"}),
            false,
        ),
        (
            json!({"org": {"id": "ACME"}, "https://example.com/tier": "gold"}),
            false,
        ),
        (
            json!({"org": {"id": 42.0}, "https://example.com/tier": "gold"}),
            false,
        ),
        (json!({"https://example.com/tier": "gold"}), false),
    ] {
        assert_eq!(
            claim.allows(&identity(claims.clone())),
            want,
            "claims {claims}"
        );
    }
    assert!(
        Route::new("/x").unwrap().allows(&identity(json!({}))),
        "no rule"
    );
}

fn routes() -> Routes {
    Routes::new([
        Route::new("/health").unwrap().auth(Auth::None),
        Route::new("/public/**").unwrap().auth(Auth::None),
        Route::new("/catalog/**")
            .unwrap()
            .auth(Auth::Optional)
            .scopes_any(["read"]),
        Route::new("/admin/**").unwrap().scopes_all(["admin"]),
        Route::new("/orders/**")
            .unwrap()
            .methods([Method::POST, Method::PUT])
            .scopes_all(["write"]),
        Route::new("/orders/**")
            .unwrap()
            .scopes_any(["read", "write"]),
    ])
}

struct Outcome {
    status: StatusCode,
    seen_path: Option<String>,
    challenge: Option<String>,
    jwt_error: Option<JwtError>,
    authz_error: Option<AuthzError>,
}

fn send(
    routes: Routes,
    method: Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Outcome {
    let auth = JwtAuthLayer::new(validator(clock(), 100)).routes(routes.clone());
    let authorize = AuthorizeLayer::new(routes);
    let service = auth.layer(
        authorize.layer(service_fn(|req: Request<String>| async move {
            let who = req
                .extensions()
                .get::<Arc<Identity>>()
                .and_then(|i| i.subject().map(str::to_owned));
            let body = format!(
                "{} {}",
                req.uri(),
                who.unwrap_or_else(|| "anonymous".into())
            );
            Ok::<_, Infallible>(Response::new(body))
        })),
    );
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(service.oneshot(request.body(String::new()).unwrap()))
        .unwrap();
    Outcome {
        status: response.status(),
        challenge: response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned()),
        jwt_error: response.extensions().get::<JwtError>().cloned(),
        authz_error: response.extensions().get::<AuthzError>().cloned(),
        seen_path: (response.status() == StatusCode::OK).then(|| response.into_body()),
    }
}

fn token(scope: &str) -> String {
    let mut c = claims("ada");
    c["scope"] = json!(scope);
    mint(Alg::RS256, &c)
}

#[test]
fn route_modes_through_the_stack() {
    let (read, write, admin) = (token("read"), token("read write"), token("admin"));
    let cases: Vec<(Method, &str, Option<&str>, StatusCode)> = vec![
        (Method::GET, "/health", None, StatusCode::OK),
        (
            Method::GET,
            "/health",
            Some("garbage.token.here"),
            StatusCode::OK,
        ),
        (Method::GET, "/catalog/1", None, StatusCode::OK),
        (Method::GET, "/catalog/1", Some(&read), StatusCode::OK),
        (
            Method::GET,
            "/catalog/1",
            Some(&admin),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/catalog/1",
            Some("a.b.c"),
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/orders/1", None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/orders/1", Some(&read), StatusCode::OK),
        (Method::POST, "/orders", Some(&read), StatusCode::FORBIDDEN),
        (Method::POST, "/orders", Some(&write), StatusCode::OK),
        (
            Method::GET,
            "/admin/users",
            Some(&write),
            StatusCode::FORBIDDEN,
        ),
        (Method::GET, "/admin/users", Some(&admin), StatusCode::OK),
        // Unmatched: a valid token, no rule (fail closed on authentication).
        (Method::GET, "/elsewhere", None, StatusCode::UNAUTHORIZED),
        (Method::GET, "/elsewhere", Some(&read), StatusCode::OK),
    ];
    for (method, uri, token, want) in cases {
        let outcome = send(routes(), method.clone(), uri, token, &[]);
        assert_eq!(
            outcome.status,
            want,
            "{method} {uri} {:?}",
            token.map(|t| &t[..10])
        );
    }
    let denied = send(routes(), Method::POST, "/orders", Some(&read), &[]);
    assert_eq!(
        denied.challenge.as_deref(),
        Some(
            r#"Bearer realm="api", error="insufficient_scope", error_description="the access token does not grant this request", scope="write""#
        )
    );
    assert_eq!(denied.authz_error.unwrap().reason(), "insufficient_scope");
    let missing = send(routes(), Method::GET, "/orders/1", None, &[]);
    assert_eq!(missing.challenge.as_deref(), Some(r#"Bearer realm="api""#));
    assert_eq!(missing.jwt_error, Some(JwtError::Missing));
}

#[test]
fn another_spelling_never_reaches_a_rule_it_should_not() {
    let user = token("read");
    let admin = token("admin");
    let spellings = [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2e/admin/users",
        "/public/.%2e/admin/users",
        "//admin/users",
        "/admin//users",
        "/./admin/users",
        "/health/../admin/users",
        "/admin/users/",
        "/admin/x/../users",
    ];
    for uri in spellings {
        let anonymous = send(routes(), Method::GET, uri, None, &[]);
        assert_eq!(
            anonymous.status,
            StatusCode::UNAUTHORIZED,
            "{uri} anonymous"
        );
        assert_eq!(
            send(routes(), Method::GET, uri, Some(&user), &[]).status,
            StatusCode::FORBIDDEN,
            "{uri} user"
        );
        let allowed = send(routes(), Method::GET, uri, Some(&admin), &[]);
        assert_eq!(allowed.status, StatusCode::OK, "{uri} admin");
        let seen = allowed.seen_path.unwrap();
        assert!(
            seen.starts_with("/admin/users"),
            "{uri}: the service saw {seen}"
        );
    }
    // The query survives the rewrite.
    let rewritten = send(
        routes(),
        Method::GET,
        "/public/../admin/users?page=2",
        Some(&admin),
        &[],
    );
    assert_eq!(rewritten.seen_path.unwrap(), "/admin/users?page=2 ada");
    // Encoded separators and other tricks are refused outright.
    for uri in [
        "/public/..%2fadmin/users",
        "/public/..%2Fadmin",
        "/public/..%5cadmin",
        "/public/%00/x",
        "/public/%zz",
    ] {
        let outcome = send(routes(), Method::GET, uri, Some(&admin), &[]);
        assert_eq!(outcome.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(
            outcome.jwt_error.as_ref().map(JwtError::reason),
            Some("bad_path"),
            "{uri}"
        );
    }
    // A public prefix still serves its own paths, normalised.
    let public = send(
        routes(),
        Method::GET,
        "/public//docs/./index.html",
        None,
        &[],
    );
    assert_eq!(
        public.seen_path.unwrap(),
        "/public/docs/index.html anonymous"
    );
}

#[test]
fn cors_preflight_is_let_through_only_when_switched_on() {
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
    ];
    let off = send(routes(), Method::OPTIONS, "/orders/1", None, &preflight);
    assert_eq!(off.status, StatusCode::UNAUTHORIZED);
    let on = send(
        routes().allow_cors_preflight(true),
        Method::OPTIONS,
        "/orders/1",
        None,
        &preflight,
    );
    assert_eq!(on.status, StatusCode::OK);
    // Not a preflight: an OPTIONS without the CORS headers still needs a token.
    let plain = send(
        routes().allow_cors_preflight(true),
        Method::OPTIONS,
        "/orders/1",
        None,
        &[],
    );
    assert_eq!(plain.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn authorize_alone_after_any_identity_layer() {
    let routes = Routes::new([Route::new("/admin/**").unwrap().scopes_all(["admin"])]);
    let admin = Arc::new(identity(json!({"scope": "admin"})));
    let user = Arc::new(identity(json!({"scope": "read"})));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (who, want) in [
        (Some(admin), StatusCode::OK),
        (Some(user), StatusCode::FORBIDDEN),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let service =
            AuthorizeLayer::new(routes.clone()).layer(service_fn(|_: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let mut request = Request::get("/admin/x").body(String::new()).unwrap();
        if let Some(who) = who {
            request.extensions_mut().insert(who);
        }
        assert_eq!(
            rt.block_on(service.oneshot(request)).unwrap().status(),
            want
        );
    }
}
