//! Audit events of a whole stack, captured field by field by a subscriber installed for the
//! whole process (its own test binary, so no other test registers the callsites first), with
//! no token in any event or span of any target.

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use common::recorder::{Seen, echo, send};
use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::Algorithm as Alg;
use portcullis::authz::{AuthorizeLayer, Route, Routes};
use portcullis::jwt::JwtAuthLayer;
use portcullis::propagate::PropagateLayer;
use portcullis::rate_limit::{Limit, Quota, RateLimitLayer};
use tower::Layer;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Every event of every target, each as its fields.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<Record>>>);

/// A target and the fields of one event or span.
type Record = (String, BTreeMap<String, String>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields));
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((format!("span:{}", attrs.metadata().target()), fields));
    }
}

/// The audit events of the request with this id.
fn audit_events<'e>(events: &'e [Record], id: &str) -> Vec<&'e BTreeMap<String, String>> {
    events
        .iter()
        .filter(|(target, fields)| target == "portcullis::audit" && fields["request_id"] == id)
        .map(|(_, fields)| fields)
        .collect()
}

#[test]
fn audit_events_field_by_field() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let routes = Routes::new([
        Route::new("/health")
            .unwrap()
            .auth(portcullis::authz::Auth::None),
        Route::new("/orders/**").unwrap().scopes_all(["read"]),
        Route::new("/admin/**").unwrap().scopes_all(["admin"]),
    ]);
    let limit = Limit::new(
        "per-user",
        "claim:sub".parse().unwrap(),
        Quota::per_minute(NonZeroU32::new(60).unwrap()).burst(NonZeroU32::new(2).unwrap()),
    )
    .unwrap();
    let seen = Seen::default();
    let mut stack = PropagateLayer::new().layer(
        JwtAuthLayer::new(validator(clock(), 100))
            .routes(routes.clone())
            .layer(
                AuthorizeLayer::new(routes).layer(RateLimitLayer::new([limit]).layer(echo(&seen))),
            ),
    );
    let token = mint(Alg::ES256, &claims("ada"));
    let bearer = format!("Bearer {token}");
    let mut expired_claims = claims("bob");
    expired_claims["exp"] = serde_json::json!(NOW - 100);
    let expired = format!("Bearer {}", mint(Alg::ES256, &expired_claims));
    // The signature's first character changed: well-formed, wrong signature.
    let dot = token.rfind('.').unwrap();
    let flipped = if &token[dot + 1..dot + 2] == "A" {
        "B"
    } else {
        "A"
    };
    let bad_sig = format!("Bearer {}.{flipped}{}", &token[..dot], &token[dot + 2..]);

    let mut requests: Vec<(Request<String>, StatusCode, &str, &str)> = Vec::new();
    let request = |path: &str, auth: Option<&str>, id: &str| {
        let mut r = Request::get(path)
            .header("x-request-id", id)
            .header("traceparent", PARENT);
        if let Some(auth) = auth {
            r = r.header("authorization", auth);
        }
        r.body(String::new()).unwrap()
    };
    requests.push((
        request("/orders/1", Some(&bearer), "r1"),
        StatusCode::OK,
        "allowed",
        "none",
    ));
    requests.push((
        request("/health", None, "r2"),
        StatusCode::OK,
        "allowed",
        "none",
    ));
    requests.push((
        request("/orders/1", None, "r3"),
        StatusCode::UNAUTHORIZED,
        "rejected",
        "token_missing",
    ));
    requests.push((
        request("/orders/1", Some(&expired), "r4"),
        StatusCode::UNAUTHORIZED,
        "rejected",
        "token_expired",
    ));
    requests.push((
        request("/orders/1", Some(&bad_sig), "r5"),
        StatusCode::UNAUTHORIZED,
        "rejected",
        "bad_signature",
    ));
    requests.push((
        request("/admin/x", Some(&bearer), "r6"),
        StatusCode::FORBIDDEN,
        "rejected",
        "insufficient_scope",
    ));
    requests.push((
        request("/orders/2", Some(&bearer), "r7"),
        StatusCode::OK,
        "allowed",
        "none",
    ));
    requests.push((
        request("/orders/3", Some(&bearer), "r8"),
        StatusCode::TOO_MANY_REQUESTS,
        "rejected",
        "rate_limited",
    ));

    for (request, status, outcome, reason) in requests {
        let id = request.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let path = request.uri().path().to_owned();
        let response = send(&mut stack, request);
        assert_eq!(response.status(), status, "{path} {id}");
        // The gateway's own 401/403/429 carry the request id too.
        assert_eq!(response.headers()["x-request-id"], id.as_str());
        let events = captured.0.lock().unwrap();
        let audit = audit_events(&events, &id);
        assert_eq!(audit.len(), 1, "one event for {id}: {:?}", *events);
        let event = audit[0];
        assert_eq!(event["outcome"], outcome, "{id}");
        assert_eq!(event["reason"], reason, "{id}");
        assert_eq!(event["status"], status.as_u16().to_string());
        assert_eq!(event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(event["method"], "GET");
        assert!(event["decision_us"].parse::<u64>().is_ok());
        assert_eq!(event["message"], "request decided");
        let known_subject = matches!(id.as_str(), "r1" | "r6" | "r7" | "r8");
        assert_eq!(
            event.get("subject").map(String::as_str),
            known_subject.then_some("ada"),
            "{id}"
        );
        assert_eq!(
            event.get("issuer").map(String::as_str),
            known_subject.then_some(ISS_A),
            "{id}"
        );
        let route = match path.as_str() {
            "/health" => "/health",
            "/admin/x" => "/admin/**",
            _ => "/orders/**",
        };
        assert_eq!(event.get("route").map(String::as_str), Some(route), "{id}");
        let expected: std::collections::BTreeSet<&str> = [
            "message",
            "outcome",
            "reason",
            "status",
            "request_id",
            "trace_id",
            "method",
            "decision_us",
            "route",
        ]
        .into_iter()
        .chain(
            known_subject
                .then_some(["subject", "issuer"])
                .into_iter()
                .flatten(),
        )
        .collect();
        let got: std::collections::BTreeSet<&str> = event.keys().map(String::as_str).collect();
        assert_eq!(got, expected, "the documented field set for {id}");
    }

    // A service that sends a sub-request through another authenticating layer (no propagate
    // layer of its own) while the outer request is being decided: the outer event names the
    // outer request's subject, not the sub-request's — and no subject on a public route.
    for (path, subject) in [("/fan-out", Some("ada")), ("/public/fan-out", None)] {
        use tower::ServiceExt;
        let inner_auth = JwtAuthLayer::new(validator(clock(), 100)).layer(echo(&seen));
        let bob = format!("Bearer {}", mint(Alg::ES256, &claims("bob")));
        let fan_out = tower::service_fn(move |_req: Request<String>| {
            let inner_auth = inner_auth.clone();
            let bob = bob.clone();
            async move {
                let sub = Request::get("/sub")
                    .header("authorization", &bob)
                    .body(String::new())
                    .unwrap();
                inner_auth.oneshot(sub).await
            }
        });
        let public = Routes::new([Route::new("/public/**")
            .unwrap()
            .auth(portcullis::authz::Auth::None)]);
        let mut outer = PropagateLayer::new().layer(
            JwtAuthLayer::new(validator(clock(), 100))
                .routes(public)
                .layer(fan_out),
        );
        let id = format!("f-{}", path.len());
        let response = send(
            &mut outer,
            Request::get(path)
                .header("x-request-id", &id)
                .header("authorization", &bearer)
                .body(String::new())
                .unwrap(),
        );
        assert_eq!(response.status(), StatusCode::OK);
        let events = captured.0.lock().unwrap();
        let [event] = audit_events(&events, &id)[..] else {
            panic!("one event for {id}");
        };
        assert_eq!(event.get("subject").map(String::as_str), subject, "{path}");
    }

    // A limit in Redis decides in the response future, on whichever worker polls it: the
    // events still name the subject and route, and the store going away is its own reason.
    #[cfg(feature = "redis")]
    {
        use portcullis::rate_limit::RedisStore;
        use tower::ServiceExt;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut redis = common::redis_server::RedisServer::start();
        let store = runtime.block_on(RedisStore::connect(&redis.url())).unwrap();
        let routes = Routes::new([Route::new("/orders/**").unwrap().scopes_all(["read"])]);
        let limit = Limit::new(
            "in-redis",
            "claim:sub".parse().unwrap(),
            Quota::per_hour(NonZeroU32::new(1).unwrap()),
        )
        .unwrap()
        .redis(store);
        let stack = PropagateLayer::new().layer(
            JwtAuthLayer::new(validator(clock(), 100))
                .routes(routes.clone())
                .layer(
                    AuthorizeLayer::new(routes)
                        .layer(RateLimitLayer::new([limit]).layer(echo(&seen))),
                ),
        );
        let request = |id: &str| {
            Request::get("/orders/9")
                .header("x-request-id", id)
                .header("authorization", &bearer)
                .body(String::new())
                .unwrap()
        };
        let mut expected = vec![
            ("q1", StatusCode::OK, "none"),
            ("q2", StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ];
        for (id, status, _) in &expected {
            let response = runtime
                .block_on(stack.clone().oneshot(request(id)))
                .unwrap();
            assert_eq!(response.status(), *status, "{id}");
        }
        redis.stop();
        let response = runtime
            .block_on(stack.clone().oneshot(request("q3")))
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        expected.push((
            "q3",
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limit_store_unavailable",
        ));
        let events = captured.0.lock().unwrap();
        for (id, status, reason) in expected {
            let [event] = audit_events(&events, id)[..] else {
                panic!("one event for {id}");
            };
            assert_eq!(event["reason"], reason, "{id}");
            assert_eq!(event["status"], status.as_u16().to_string(), "{id}");
            assert_eq!(event["subject"], "ada", "{id}");
            assert_eq!(event["route"], "/orders/**", "{id}");
        }
    }

    // With `tower::buffer` between every two layers, each layer runs on the buffer's worker
    // task (on whichever thread of the runtime polls it), not in the propagate layer's call or
    // poll: the events still name the subject and the route, which travel in the request.
    {
        use tower::ServiceExt;
        use tower::buffer::BufferLayer;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let routes = Routes::new([
            Route::new("/orders/**").unwrap().scopes_all(["read"]),
            Route::new("/admin/**").unwrap().scopes_all(["admin"]),
        ]);
        let limit = Limit::new(
            "buffered",
            "claim:sub".parse().unwrap(),
            Quota::per_minute(NonZeroU32::new(600).unwrap()),
        )
        .unwrap();
        let stack = runtime.block_on(async {
            tower::ServiceBuilder::new()
                .layer(PropagateLayer::new())
                .layer(BufferLayer::new(8))
                .layer(JwtAuthLayer::new(validator(clock(), 100)).routes(routes.clone()))
                .layer(BufferLayer::new(8))
                .layer(AuthorizeLayer::new(routes))
                .layer(BufferLayer::new(8))
                .layer(RateLimitLayer::new([limit]))
                .service(echo(&seen))
        });
        let cases = [
            (
                "b1",
                "/orders/1",
                Some(&bearer),
                200,
                Some("ada"),
                "/orders/**",
            ),
            (
                "b2",
                "/admin/x",
                Some(&bearer),
                403,
                Some("ada"),
                "/admin/**",
            ),
            ("b3", "/orders/1", None, 401, None, "/orders/**"),
        ];
        for (id, path, auth, status, _, _) in cases {
            let response = runtime
                .block_on(stack.clone().oneshot(request(path, auth.map(|a| &**a), id)))
                .unwrap();
            assert_eq!(response.status(), status, "{id}");
        }
        let events = captured.0.lock().unwrap();
        for (id, _, _, status, subject, route) in cases {
            let [event] = audit_events(&events, id)[..] else {
                panic!("one event for {id}");
            };
            assert_eq!(event["status"], status.to_string(), "{id}");
            assert_eq!(event.get("subject").map(String::as_str), subject, "{id}");
            assert_eq!(event["route"], route, "{id}");
        }
    }

    // The stack built from a policy runs the stages itself, with what they decided as a local:
    // its events name the subject and route the same way.
    #[cfg(feature = "policy")]
    {
        use tower::ServiceExt;

        let policy = portcullis::policy::Policy::from_toml(&issuer_a_policy(
            r#"
            [[routes]]
            path = "/orders/**"
            scopes_all = ["read"]

            [[routes]]
            path = "/admin/**"
            scopes_all = ["admin"]
            "#,
        ))
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let stack = runtime.block_on(policy.build()).unwrap().layer(echo(&seen));
        let fresh = format!("Bearer {}", mint_now("ada"));
        let cases = [
            (
                "p1",
                "/orders/1",
                Some(&fresh),
                200,
                Some("ada"),
                "/orders/**",
            ),
            (
                "p2",
                "/admin/x",
                Some(&fresh),
                403,
                Some("ada"),
                "/admin/**",
            ),
            ("p3", "/orders/1", None, 401, None, "/orders/**"),
        ];
        for (id, path, auth, status, _, _) in cases {
            let response = runtime
                .block_on(stack.clone().oneshot(request(path, auth.map(|a| &**a), id)))
                .unwrap();
            assert_eq!(response.status(), status, "{id}");
            assert_eq!(response.headers()["x-request-id"], id);
        }
        let events = captured.0.lock().unwrap();
        for (id, _, _, status, subject, route) in cases {
            let [event] = audit_events(&events, id)[..] else {
                panic!("one event for {id}");
            };
            assert_eq!(event["status"], status.to_string(), "{id}");
            assert_eq!(event.get("subject").map(String::as_str), subject, "{id}");
            assert_eq!(
                event.get("issuer").map(String::as_str),
                subject.map(|_| ISS_A),
                "{id}"
            );
            assert_eq!(event["route"], route, "{id}");
        }
    }

    // No event and no span of any target carries a token or any part of one.
    let events = captured.0.lock().unwrap();
    assert!(events.iter().any(|(t, _)| t == "span:portcullis::request"));
    let signature = token.rsplit('.').next().unwrap();
    for (target, fields) in events.iter() {
        for value in fields.values() {
            for secret in [&*token, signature, &*bearer, &*expired, &*bad_sig] {
                assert!(!value.contains(secret), "{target}: {value}");
            }
        }
    }
}
