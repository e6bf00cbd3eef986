//! The example gateway, started as a process and driven over real sockets: demo mode as printed,
//! policies with every key source (PEM and JWKS files, a JWKS URL and discovery against a real
//! local server), spoofed headers, 429s, streaming, upstream failures, bad policy files, and a
//! reload under load.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm as Alg;
use serde_json::{Value, json};

/// `target/<profile>/examples/gateway`: `cargo test` builds it beside this test binary; a run
/// filtered to this test (`--test gateway`) does not, so it is built here when it is missing
/// or older than this test binary.
fn example_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let mut path = me.clone();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    let binary = path.join("examples").join("gateway");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&binary).is_none_or(|built| Some(built) < modified(&me)) {
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
    policy: Option<PathBuf>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }
}

fn start(args: &[&str]) -> Gateway {
    let child = Command::new(example_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
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
        policy: None,
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
        if let Some(rest) = line.strip_prefix("policy: ") {
            gateway.policy = Some(PathBuf::from(rest.split(" (").next().unwrap()));
        }
        if let Some(addr) = line.strip_prefix("listening on http://") {
            gateway.addr = addr.parse().unwrap();
            return gateway;
        }
    }
}

/// Starts the gateway expecting it to refuse to start; returns its exit code and stderr.
fn refuse(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(example_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap().code().unwrap(), stderr)
}

async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut headers = vec![("x-request-id", "t-1")];
    headers.extend(auth.map(|a| ("authorization", a)));
    let (status, _, body) = common::http_get(addr, path, &headers).await;
    (status, body)
}

fn echo_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test]
async fn demo_mode_answers_as_printed_and_stops_on_sigterm() {
    let mut gateway = start(&[]);
    let bearer = format!("Bearer {}", gateway.token);

    let (status, body) = get(gateway.addr, "/orders/42", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    let echo = echo_of(&body);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(echo["headers"]["x-request-id"], "t-1");
    assert_eq!(echo["headers"]["x-user-id"], "demo-user");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-host"], "localhost");
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
    let claims = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "demo-user");

    assert_eq!(
        get(gateway.addr, "/admin/users", Some(&bearer)).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = get(gateway.addr, "/public/../orders/7", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo_of(&body)["path"], "/orders/7");
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

    // The request id comes back on the gateway's own 401; a trace reaches the upstream; spoofed
    // identity headers and hop-by-hop headers do not.
    let (status, headers, _) =
        common::http_get(gateway.addr, "/orders/42", &[("x-request-id", "r-401")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["x-request-id"], "r-401");
    let (_, headers, body) = common::http_get(
        gateway.addr,
        "/orders/42",
        &[
            ("authorization", &bearer),
            ("x-user-id", "admin"),
            ("X-User-Id", "root"),
            ("x-portcullis-assertion", "forged"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
        ],
    )
    .await;
    let echo = echo_of(&body);
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        echo["headers"]["x-request-id"], id,
        "a new id, the same both ways"
    );
    assert_eq!(echo["headers"]["traceparent"].as_str().unwrap().len(), 55);
    assert_eq!(echo["headers"]["x-user-id"], "demo-user");
    assert_ne!(echo["headers"]["x-portcullis-assertion"], "forged");
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
    assert!(limited.contains_key("x-request-id"));

    // Metrics, in Prometheus text format.
    let (status, metrics) = get(gateway.addr, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"portcullis_decisions_total{outcome="allowed",reason="none"}"#,
        r#"portcullis_decisions_total{outcome="rejected",reason="rate_limited"}"#,
        r#"portcullis_decisions_total{outcome="rejected",reason="insufficient_scope"}"#,
        r#"portcullis_rate_limit_total{limit="default",result="denied"}"#,
        "portcullis_decision_seconds",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    gateway.signal("-TERM");
    let status = gateway.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("portcullis-gateway-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keys_dir() -> String {
    format!("{}/tests/keys", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn policy(issuer: &str, keys: &str, admin_scope: &str) -> String {
    format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
keys = {keys}

[[routes]]
path = "/admin/**"
scopes_all = ["{admin_scope}"]

[upstream_headers]
x-user-id = "sub"
"#
    )
}

fn token(issuer: &str, sub: &str, scope: &str) -> String {
    common::mint(
        Alg::ES256,
        &json!({"iss": issuer, "aud": "api", "sub": sub, "iat": now(), "exp": now() + 600, "scope": scope}),
    )
}

async fn check_policy_gateway(issuer: &str, keys: &str) {
    let dir = scratch(&format!("keys-{}", keys.len()));
    let file = dir.join("policy.toml");
    std::fs::write(&file, policy(issuer, keys, "admin")).unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap()]);
    let bearer = format!("Bearer {}", token(issuer, "ada", "read"));
    let (status, body) = get(gateway.addr, "/orders/1", Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(echo_of(&body)["headers"]["x-user-id"], "ada");
    // The token is forwarded by default.
    assert_eq!(echo_of(&body)["headers"]["authorization"], bearer);
    assert_eq!(
        get(gateway.addr, "/admin", Some(&bearer)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(gateway.addr, "/orders/1", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

// Two workers: `start` blocks one reading the gateway's output while the other serves JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_with_each_kind_of_key_source() {
    check_policy_gateway(
        common::ISS_A,
        &format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir()),
    )
    .await;
    let dir = scratch("jwks-file");
    std::fs::write(
        dir.join("jwks.json"),
        common::jwks(&[Alg::ES256]).to_string(),
    )
    .unwrap();
    check_policy_gateway(
        common::ISS_A,
        &format!(r#"{{ jwks_file = "{}/jwks.json" }}"#, dir.display()),
    )
    .await;
    let server = common::jwks_server::JwksServer::start(common::jwks(&[Alg::ES256])).await;
    check_policy_gateway(
        common::ISS_A,
        &format!(r#"{{ jwks_url = "{}" }}"#, server.jwks_url()),
    )
    .await;
    check_policy_gateway(&server.issuer(), "{ discovery = true }").await;
}

#[tokio::test]
async fn bad_policy_files_stop_the_gateway_with_the_message() {
    let dir = scratch("bad");
    let file = dir.join("policy.toml");
    for (text, wanted) in [
        (
            "[[routes]]\npath = \"/a\"\nscope_all = [\"x\"]\n",
            "line 3, column 1",
        ),
        (
            "[[rate_limits]]\nname = \"default\"\nkey = \"ip\"\nrate = \"fast\"\n",
            "bad rate \"fast\"",
        ),
        (
            "[[issuers]]\nissuer = \"i\"\naudiences = []\nalgorithms = [\"HS256\"]\nkeys = { pem_files = [\"KEYS/p256.pub.pem\"] }\n",
            "HS256 needs an HMAC secret",
        ),
    ] {
        std::fs::write(&file, text.replace("KEYS", &keys_dir())).unwrap();
        let (code, stderr) = refuse(&["--policy", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(wanted), "{wanted} in {stderr}");
        assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    }
    let (code, stderr) = refuse(&["--policy", "/nonexistent/policy.toml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read policy file"), "{stderr}");
}

/// A request body fed from a channel, a chunk at a time.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// An upstream that answers as soon as the first chunk of a request body arrives, saying how
/// many bytes it had then.
async fn start_eager_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let mut body = request.into_body();
                        let first = body
                            .frame()
                            .await
                            .and_then(|f| f.ok())
                            .and_then(|f| f.into_data().ok());
                        let got = first.map_or(0, |b| b.len());
                        // Keep reading in the background so the connection drains.
                        tokio::spawn(async move { while body.frame().await.is_some() {} });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from(format!("first chunk: {got}"))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends a request whose body streams in two parts; the upstream answers after reading the
/// first, while the client holds the second back: a gateway that buffered bodies would wait
/// for the whole body and never answer.
async fn streamed_through(gateway: SocketAddr, bearer: &str) -> (StatusCode, String) {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(2);
    let stream = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post("/upload")
        .header("host", "localhost")
        .header("authorization", bearer)
        .body(ChannelBody(receiver))
        .unwrap();
    sender
        .send(Bytes::from_static(b"first part"))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.send_request(request))
        .await
        .expect("the upstream answered before the body ended: nothing buffered it")
        .unwrap();
    let status = response.status();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let _ = sender.send(Bytes::from_static(b"second part")).await;
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn bodies_stream_and_upstream_failures_answer_502_and_504() {
    let dir = scratch("upstreams");
    let file = dir.join("policy.toml");
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    std::fs::write(&file, policy(common::ISS_A, &keys, "admin")).unwrap();
    let bearer = format!("Bearer {}", token(common::ISS_A, "ada", "read"));

    let eager = start_eager_upstream().await;
    let upstream = format!("http://{eager}");
    let gateway = start(&["--policy", file.to_str().unwrap(), "--upstream", &upstream]);
    assert_eq!(
        streamed_through(gateway.addr, &bearer).await,
        (StatusCode::OK, "first chunk: 10".to_owned())
    );
    drop(gateway);

    // Nothing listens there: 502, with the request id in the header and the body.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gateway = start(&[
        "--policy",
        file.to_str().unwrap(),
        "--upstream",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let (status, headers, body) = common::http_get(
        gateway.addr,
        "/orders",
        &[("authorization", &bearer), ("x-request-id", "up-1")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-request-id"], "up-1");
    assert_eq!(echo_of(&body)["request_id"], "up-1");
    drop(gateway);

    // It accepts and never answers: 504 after the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let gateway = start(&[
        "--policy",
        file.to_str().unwrap(),
        "--upstream",
        &format!("http://{silent_addr}"),
        "--upstream-timeout",
        "1",
    ]);
    let (status, headers, body) = common::http_get(
        gateway.addr,
        "/orders",
        &[("authorization", &bearer), ("x-request-id", "up-2")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["x-request-id"], "up-2");
    assert_eq!(echo_of(&body)["error"], "gateway_timeout");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request() {
    let dir = scratch("reload");
    let file = dir.join("policy.toml");
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    std::fs::write(&file, policy(common::ISS_A, &keys, "admin")).unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap()]);
    let ops = format!("Bearer {}", token(common::ISS_A, "ops", "ops"));
    assert_eq!(
        get(gateway.addr, "/admin", Some(&ops)).await.0,
        StatusCode::FORBIDDEN
    );

    let addr = gateway.addr;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let ops = ops.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = (0, 0);
            for _ in 0..50 {
                let (status, _, _) =
                    common::http_get(addr, "/admin", &[("authorization", &ops)]).await;
                match status {
                    StatusCode::OK => seen.0 += 1,
                    StatusCode::FORBIDDEN => seen.1 += 1,
                    other => panic!("{other} during a reload"),
                }
            }
            seen
        }));
    }
    // Flip the admin rule back and forth, reloading with SIGHUP each time.
    for i in 0..10 {
        let scope = if i % 2 == 0 { "ops" } else { "admin" };
        std::fs::write(&file, policy(common::ISS_A, &keys, scope)).unwrap();
        gateway.signal("-HUP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answered = 0;
    for task in tasks {
        let (ok, forbidden) = task.await.unwrap();
        answered += ok + forbidden;
    }
    assert_eq!(answered, 200);
    // The last policy lets ops in (i = 8 wrote "ops", i = 9 "admin"; write "ops" once more).
    std::fs::write(&file, policy(common::ISS_A, &keys, "ops")).unwrap();
    gateway.signal("-HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(gateway.addr, "/admin", Some(&ops)).await.0 != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
