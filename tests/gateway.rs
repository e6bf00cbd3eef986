//! The example gateway in demo mode, started as a process and driven over real sockets.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use http::StatusCode;

/// `target/<profile>/examples/gateway`: `cargo test` builds it beside this test binary; a run
/// filtered to this test (`--test gateway`) does not, so it is built here when missing.
fn example_binary() -> PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path.join("examples").join("gateway");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", "gateway"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build --example gateway");
    }
    binary
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Gateway {
    let child = Command::new(example_binary())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        // Audit events go to standard error.
        .stderr(Stdio::null())
        .spawn()
        .expect("the example is built by cargo test");
    // Owned by the guard from here on, so the process is killed and reaped on every path.
    let mut gateway = Gateway {
        child,
        addr: ([0, 0, 0, 0], 0).into(),
        token: String::new(),
    };
    let mut lines = BufReader::new(gateway.child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the gateway prints its address")
            .unwrap();
        if let Some(token) = line.strip_prefix("token: ") {
            gateway.token = token.to_owned();
        }
        if let Some(addr) = line.strip_prefix("listening on http://") {
            gateway.addr = addr.parse().unwrap();
            assert!(!gateway.token.is_empty(), "a token line comes first");
            return gateway;
        }
    }
}

async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut headers = vec![("x-request-id", "t-1")];
    headers.extend(auth.map(|a| ("authorization", a)));
    let (status, _, body) = common::http_get(addr, path, &headers).await;
    (status, body)
}

#[tokio::test]
async fn demo_mode_answers_as_printed_and_stops_on_sigterm() {
    let mut gateway = start();
    let bearer = format!("Bearer {}", gateway.token);

    let (status, body) = get(gateway.addr, "/orders/42", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(echo["subject"], "demo-user");
    assert_eq!(echo["headers"]["x-request-id"], "t-1");
    assert_eq!(echo["headers"]["x-user-id"], "demo-user");
    assert!(
        echo["headers"].get("authorization").is_none(),
        "credentials are hidden"
    );

    // The assertion verifies against the published keys.
    let assertion = echo["headers"]["x-portcullis-assertion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, jwks) = get(gateway.addr, "/.well-known/portcullis/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).unwrap();
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(jwks.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&["demo-upstream"]);
    portcullis::crypto::install();
    let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "demo-user");

    assert_eq!(
        get(gateway.addr, "/admin/users", Some(&bearer)).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = get(gateway.addr, "/public/../orders/7", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["path"],
        "/orders/7"
    );

    assert_eq!(
        get(gateway.addr, "/orders/42", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(gateway.addr, "/orders/42", Some(&format!("{bearer}x")))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(gateway.addr, "/health", None).await,
        (StatusCode::OK, "ok".to_owned())
    );

    // The request id comes back on the gateway's own 401, a trace reaches the upstream, and
    // hop-by-hop headers do not.
    let (status, headers, _) =
        common::http_get(gateway.addr, "/orders/42", &[("x-request-id", "r-401")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-request-id"], "r-401");
    let (_, headers, body) = common::http_get(
        gateway.addr,
        "/orders/42",
        &[
            ("authorization", &bearer),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ],
    )
    .await;
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        echo["headers"]["x-request-id"], id,
        "a new id, the same both ways"
    );
    assert_eq!(echo["headers"]["traceparent"].as_str().unwrap().len(), 55);
    assert!(echo["headers"].get("x-hop").is_none());
    assert!(headers.contains_key("ratelimit"));

    // The burst of 10 per subject is spent: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..12 {
        let (status, headers, _) =
            common::http_get(gateway.addr, "/orders/42", &[("authorization", &bearer)]).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(headers);
            break;
        }
    }
    let limited = limited.expect("a 429 after the burst");
    assert!(
        limited["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );

    // Metrics, in Prometheus text format.
    let (status, metrics) = get(gateway.addr, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"portcullis_decisions_total{outcome="allowed",reason="none"}"#,
        r#"portcullis_decisions_total{outcome="rejected",reason="rate_limited"}"#,
        r#"portcullis_decisions_total{outcome="rejected",reason="insufficient_scope"}"#,
        r#"portcullis_rate_limit_total{limit="per-subject",result="denied"}"#,
        "portcullis_decision_seconds",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    let pid = gateway.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = gateway.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}
