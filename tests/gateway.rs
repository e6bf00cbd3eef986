//! The example gateway, started as a process and driven over real sockets: demo mode as printed,
//! policies with every key source (PEM and JWKS files, a JWKS URL and discovery against a real
//! local server), spoofed headers, 429s, streaming, upstream failures, bad policy files, and a
//! reload under load.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
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
        // SIGTERM first, so that a demo gateway removes its folder as it would for a user;
        // killed if it has not stopped within two seconds.
        if let Ok(None) = self.child.try_wait()
            && self.send("-TERM")
        {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn signal(&self, signal: &str) {
        assert!(self.send(signal), "kill {signal}");
    }

    /// The folder of a demo gateway's policy and keys.
    fn demo_folder(&self) -> PathBuf {
        let policy = self
            .policy
            .as_ref()
            .expect("a demo gateway prints its policy");
        policy.parent().unwrap().to_owned()
    }

    /// Sends `signal` (`-TERM`, `-INT`) to the gateway; whether `kill` did.
    fn send(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// The gateway's command line, under `ulimit -n open_files` when given.
fn command(args: &[&str], open_files: Option<u32>) -> Command {
    let mut command = match open_files {
        None => Command::new(example_binary()),
        Some(limit) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                .arg(example_binary());
            sh
        }
    };
    command.args(["--listen", "127.0.0.1:0"]).args(args);
    command
}

fn start(args: &[&str]) -> Gateway {
    // Audit events go to standard error.
    spawn(command(args, None), Stdio::null())
}

fn spawn(mut command: Command, stderr: Stdio) -> Gateway {
    let child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
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
        "# TYPE portcullis_decision_seconds histogram",
        r#"portcullis_decision_seconds_bucket{le="0.001"}"#,
        "portcullis_token_cache_entries ",
        "portcullis_token_cache_hits_total ",
        "portcullis_token_cache_misses_total ",
        "portcullis_token_cache_evictions_total ",
        "portcullis_token_cache_not_admitted_total ",
        "portcullis_token_cache_bytes ",
        "portcullis_token_cache_budget_bytes 67108864",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // The demo's folder holds the assertion's private key: a new folder with a name nobody can
    // guess (not the process id), readable by this user alone, and removed on shutdown.
    let folder = gateway.demo_folder();
    let name = folder.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("portcullis-demo-"), "{name}");
    assert_ne!(name, format!("portcullis-demo-{}", gateway.child.id()));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700, "the folder is private");
    for file in ["assertion.pem", "demo-issuer.pub.pem", "policy.toml"] {
        assert_eq!(mode(&folder.join(file)), 0o600, "{file} is private");
    }

    gateway.signal("-TERM");
    let status = gateway.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    assert!(!folder.exists(), "the demo folder is removed on shutdown");
}

/// Ctrl-C takes the same way out as SIGTERM: the demo's folder, with its private key, is gone.
#[test]
fn demo_folder_is_removed_on_ctrl_c() {
    let mut gateway = start(&[]);
    let folder = gateway.demo_folder();
    assert!(folder.join("assertion.pem").exists());
    gateway.signal("-INT");
    let status = gateway.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    assert!(!folder.exists(), "the demo folder is removed on Ctrl-C");
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
        ("[server]\nworkers = 0\n", "line 2, column 11"),
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

/// A raw HTTP/1.1 request with the token, as written, on its own connection.
async fn raw(addr: SocketAddr, head: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (first, rest) = head.split_once("\r\n").unwrap_or((head, ""));
    let request = format!("{first}\r\n{auth}{rest}");
    common::raw_exchange(addr, request.as_bytes()).await
}

#[tokio::test]
async fn requests_the_gateway_cannot_read_one_way_are_refused() {
    let gateway = start(&[]);
    let token = Some(gateway.token.as_str());
    let close = "Host: localhost\r\nConnection: close\r\n\r\n";
    let cases = [
        // Path parameters, in any segment, raw or encoded; with and without a token.
        (format!("GET /admin;x/users HTTP/1.1\r\n{close}"), 400),
        (format!("GET /public/..;/admin/users HTTP/1.1\r\n{close}"), 400),
        (format!("GET /orders/42;jsessionid=1 HTTP/1.1\r\n{close}"), 400),
        (format!("GET /admin%3Bx/users HTTP/1.1\r\n{close}"), 400),
        (format!("GET /public/..%3b/admin/users HTTP/1.1\r\n{close}"), 400),
        // Method spellings that upper-casing servers would serve as DELETE or POST.
        (format!("delete /orders/42 HTTP/1.1\r\n{close}"), 400),
        (format!("Post /orders/42 HTTP/1.1\r\n{close}"), 400),
        (format!("GET /orders/42?_method=DELETE HTTP/1.1\r\n{close}"), 400),
        // A case-insensitive upstream would serve this as /admin/users.
        (format!("GET /ADMIN/users HTTP/1.1\r\n{close}"), 400),
        (format!("GET /%41dmin/users HTTP/1.1\r\n{close}"), 400),
        // HTTP/1.1 needs exactly one Host (it becomes X-Forwarded-Host); HTTP/1.0 may omit it.
        ("GET /orders/42 HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(), 400),
        (
            "GET /orders/42 HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"
                .to_owned(),
            400,
        ),
        ("GET /orders/42 HTTP/1.0\r\n\r\n".to_owned(), 200),
        // Broken chunked framing is the client's fault: 400, not 502.
        (
            "POST /orders/42 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_owned(),
            400,
        ),
        (
            "POST /orders/42 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n".to_owned(),
            400,
        ),
        // A header past the bound (64 KiB by default).
        (
            format!("GET /orders/42 HTTP/1.1\r\nX-Big: {}\r\n{close}", "a".repeat(300 * 1024)),
            431,
        ),
        (format!("GET /orders/42 HTTP/1.1\r\n{close}"), 200),
    ];
    for (request, want) in &cases {
        let (status, response) = raw(gateway.addr, request, token).await;
        assert_eq!(
            status,
            *want,
            "{}\n{response}",
            &request[..request.len().min(80)]
        );
    }
    // Without a token the same requests are still refused as unreadable, not as unauthenticated.
    for (request, want) in &cases[..10] {
        assert_eq!(raw(gateway.addr, request, None).await.0, *want, "{request}");
    }
}

/// Python's reference WSGI server (wsgiref) as the upstream, answering with its CGI environment.
struct WsgiUpstream {
    child: Child,
    port: u16,
}

impl Drop for WsgiUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_wsgi_upstream() -> WsgiUpstream {
    let script = format!(
        "{}/tests/upstreams/wsgi_echo.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the WSGI upstream");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the upstream prints its port");
    WsgiUpstream { child, port }
}

#[tokio::test]
async fn a_cgi_style_upstream_sees_only_the_gateways_identity_and_forwarding() {
    let upstream = start_wsgi_upstream();
    let url = format!("http://127.0.0.1:{}", upstream.port);
    let spoofs = "X_User_Id: admin\r\nx-user_id: root\r\nX-Original-URL: /admin/users\r\n\
        X_Original_URL: /admin/users\r\nX-Rewrite-URL: /admin/users\r\nX-Original-URI: /admin\r\n\
        Forwarded: for=6.6.6.6;host=evil\r\nX-Real-IP: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n\
        X-Forwarded-Host: evil\r\nX_Forwarded_Host: evil\r\nX-Forwarded-Proto: https\r\n\
        X_Forwarded_For: 6.6.6.6\r\nX_Request_Id: forged\r\nX_Custom: 1\r\n";
    let request =
        format!("GET /orders/42 HTTP/1.1\r\nHost: localhost\r\n{spoofs}Connection: close\r\n\r\n");

    for keep in [false, true] {
        let mut args = vec!["--upstream", url.as_str()];
        if keep {
            args.extend(["--underscore-headers", "keep"]);
        }
        let gateway = start(&args);
        let (status, response) = raw(gateway.addr, &request, Some(&gateway.token)).await;
        assert_eq!(status, 200, "{response}");
        let seen: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
        let environ = &seen["environ"];
        assert_eq!(seen["path_info"], "/orders/42");
        assert_eq!(environ["HTTP_X_USER_ID"], "demo-user", "keep={keep}");
        for absent in [
            "HTTP_X_ORIGINAL_URL",
            "HTTP_X_REWRITE_URL",
            "HTTP_X_ORIGINAL_URI",
        ] {
            assert!(
                environ.get(absent).is_none(),
                "{absent} keep={keep}: {environ}"
            );
        }
        assert_eq!(environ["HTTP_X_REAL_IP"], "127.0.0.1");
        assert_eq!(
            environ["HTTP_FORWARDED"],
            r#"for=127.0.0.1;host="localhost";proto=http"#
        );
        assert_eq!(environ["HTTP_X_FORWARDED_HOST"], "localhost");
        assert_eq!(environ["HTTP_X_FORWARDED_PROTO"], "http");
        assert_eq!(environ["HTTP_X_FORWARDED_FOR"], "127.0.0.1");
        assert!(
            !environ["HTTP_X_REQUEST_ID"]
                .as_str()
                .unwrap()
                .contains("forged")
        );
        // Other underscored headers are dropped unless the gateway is told to keep them.
        assert_eq!(environ.get("HTTP_X_CUSTOM").is_some(), keep, "{environ}");
    }

    // An upstream under a path prefix gets the prefix and the query; a chain of proxies the
    // client came through gets the peer appended.
    let prefixed = format!("{url}/base/");
    let gateway = start(&["--upstream", prefixed.as_str()]);
    let (status, response) = raw(
        gateway.addr,
        "GET /orders/42?page=2 HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\
         x-forwarded-for: 10.0.0.2, 10.0.0.3\r\nConnection: close\r\n\r\n",
        Some(&gateway.token),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let seen: Value = serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(seen["path_info"], "/base/orders/42");
    assert_eq!(seen["query"], "page=2");
    assert_eq!(
        seen["environ"]["HTTP_X_FORWARDED_FOR"],
        "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"
    );
}

/// Reads from `stream` until the server closes it; `Some(bytes read)` if that happened
/// within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut seen)).await {
        Ok(_) => Some(seen.len()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn connections_are_bounded_in_time_size_and_number() {
    use tokio::io::AsyncWriteExt;
    let gateway = start(&[
        "--header-read-timeout",
        "1",
        "--idle-timeout",
        "2",
        "--max-header-bytes",
        "16384",
    ]);
    let addr = gateway.addr;
    // A header dribbled a byte at a time is cut at the header-read timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let dribble = async {
        for byte in b"GET /orders/42 HTTP/1.1\r\nHost: localhost\r\nX-Slow: " {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..100 {
            if slow.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = std::time::Instant::now();
    dribble.await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the dribbled header was cut, so writing failed before its end"
    );
    // A kept-alive connection that sends nothing more is closed too.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut kept, Duration::from_secs(5))
            .await
            .is_some()
    );
    // A body that stalls is cut at the idle timeout.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /orders/42 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n0123456789",
                gateway.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(8))
            .await
            .is_some()
    );
    // The header bound from the flag.
    let big = |n: usize| {
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
    };
    assert_eq!(
        common::raw_exchange(addr, big(20 * 1024).as_bytes())
            .await
            .0,
        431
    );
    assert_eq!(
        common::raw_exchange(addr, big(10 * 1024).as_bytes())
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn past_the_connection_cap_clients_wait_for_a_place() {
    let gateway = start(&["--max-connections", "2", "--header-read-timeout", "30"]);
    let addr = gateway.addr;
    let idle: Vec<tokio::net::TcpStream> = vec![
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ];
    // Give the gateway time to take both places.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::spawn(common::raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection waits while two are held"
    );
    drop(idle);
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a place is free")
        .unwrap();
    assert_eq!(status, 200);
}

/// CPU time (user + system, in clock ticks) of a process, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state: utime and stime are
    // the 12th and 13th of them.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_descriptors_the_gateway_backs_off_and_recovers() {
    let dir = scratch("emfile");
    let log = dir.join("stderr.log");
    let gateway = spawn(
        command(
            &["--max-connections", "1000", "--header-read-timeout", "30"],
            Some(48),
        ),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let addr = gateway.addr;
    // More idle connections than the descriptors left: the kernel queues them, accept fails.
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(gateway.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(gateway.child.id()) - before;
    // Ticks are 1/100 s: an accept loop retrying at once would spend most of the 2 s.
    assert!(spent < 50, "the accept loop spun: {spent} ticks in 2 s");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("cannot accept a connection"), "{stderr}");
    drop(idle);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = common::raw_exchange(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_policy_file_sets_the_server_limits_and_path_reading() {
    let dir = scratch("server-section");
    let file = dir.join("policy.toml");
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    let text = format!(
        "{}\n[paths]\nparameters = \"strip\"\ncase = \"insensitive\"\n\n[server]\nmax_header_bytes = 16384\nunderscore_headers = \"keep\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"1m\"\nmax_connections = 100\nworkers = 3\n",
        policy(common::ISS_A, &keys, "admin")
    );
    std::fs::write(&file, text).unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap()]);
    assert_eq!(worker_threads(gateway.child.id(), 3), 3, "workers = 3");
    let admin = token(common::ISS_A, "root", "admin");
    let big = |n: usize| {
        format!(
            "GET /orders/1 HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(n)
        )
    };
    assert_eq!(
        raw(gateway.addr, &big(20 * 1024), Some(&admin)).await.0,
        431
    );
    let (status, response) = raw(
        gateway.addr,
        "GET /ADMIN;v=1/users HTTP/1.1\r\nHost: x\r\nX_Custom: kept\r\nConnection: close\r\n\r\n",
        Some(&admin),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let echo = echo_of(response.split_once("\r\n\r\n").unwrap().1);
    assert_eq!(
        echo["path"], "/ADMIN/users",
        "stripped, forwarded as matched"
    );
    assert_eq!(echo["headers"]["x_custom"], "kept");
    let user = token(common::ISS_A, "ada", "read");
    assert_eq!(
        raw(
            gateway.addr,
            "GET /ADMIN/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Some(&user)
        )
        .await
        .0,
        403,
        "case-insensitive: the admin rule applies"
    );
    // The header-read timeout from the file closes an idle connection.
    let mut idle = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// How many worker threads (named `gw-worker-N`) a process runs, from /proc.
///
/// A new thread names itself once it runs, which may be after the gateway has printed its
/// address: the count is read again until it reaches `expected` (5 s at most), and returned.
fn worker_threads(pid: u32, expected: usize) -> usize {
    let count = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter(|task| {
                let comm = std::fs::read_to_string(task.as_ref().unwrap().path().join("comm"));
                comm.is_ok_and(|name| name.starts_with("gw-worker-"))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = count();
        if seen == expected || std::time::Instant::now() >= deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn each_worker_serves_the_connections_it_is_handed() {
    let dir = scratch("workers");
    let file = dir.join("policy.toml");
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    std::fs::write(&file, policy(common::ISS_A, &keys, "admin")).unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap(), "--workers", "4"]);
    assert_eq!(worker_threads(gateway.child.id(), 4), 4);
    // Twelve connections at once, handed to the four workers in turn, each kept alive for
    // three requests: every one is decided and forwarded on its worker.
    let mut clients = Vec::new();
    for n in 0..12 {
        let addr = gateway.addr;
        let bearer = format!(
            "Bearer {}",
            token(common::ISS_A, &format!("user-{n}"), "read")
        );
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            for _ in 0..3 {
                let request = http::Request::get("/orders/1")
                    .header("host", "x")
                    .header("authorization", &bearer)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.unwrap().to_bytes();
                let echo = echo_of(std::str::from_utf8(&body).unwrap());
                assert_eq!(echo["headers"]["x-user-id"], format!("user-{n}"));
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    // One worker by flag, whatever the machine has.
    let one = start(&["--workers", "1"]);
    assert_eq!(worker_threads(one.child.id(), 1), 1);
    assert_eq!(get(one.addr, "/health", None).await.0, StatusCode::OK);
}

/// The resident set of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Sends `count` authenticated GETs of `path` over `connections` kept-alive connections.
async fn drive(
    addr: SocketAddr,
    bearer: &str,
    path: &'static str,
    connections: usize,
    count: usize,
) {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let bearer = bearer.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            for _ in 0..count / connections {
                let request = http::Request::get(path)
                    .header("host", "localhost")
                    .header("authorization", &bearer)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.into_body().collect().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// A soak with audit and metrics on and nobody scraping `/metrics`: the resident set levels
/// off after a warm-up instead of growing with every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_under_load_when_nobody_scrapes_metrics() {
    let dir = scratch("soak");
    let file = dir.join("policy.toml");
    let keys = format!(r#"{{ pem_files = ["{}/p256.pub.pem"] }}"#, keys_dir());
    std::fs::write(&file, policy(common::ISS_A, &keys, "admin")).unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap()]);
    let bearer = format!("Bearer {}", token(common::ISS_A, "ada", "read"));
    let pid = gateway.child.id();
    // The gateway's own /health, behind the policy like everything else: the whole stack,
    // audit and metrics on every request, without the upstream hop (faster in a debug build).
    drive(gateway.addr, &bearer, "/health", 4, 40_000).await;
    let warm = rss_kib(pid);
    let mut after = warm;
    for _ in 0..4 {
        drive(gateway.addr, &bearer, "/health", 4, 20_000).await;
        after = after.max(rss_kib(pid));
    }
    let grown = after.saturating_sub(warm);
    // 80 000 requests: the unbounded latency samples (20 bytes a request) were 1 560 KiB; the
    // allocator's own noise here is within 450 KiB.
    assert!(
        grown < 700,
        "RSS grew {grown} KiB over 80 000 requests ({warm} → {after} KiB)"
    );
}

/// The demo's printed curl lines, replayed in the order printed, answer as their comments say.
#[tokio::test]
async fn the_demo_lines_answer_as_printed() {
    let gateway = start(&[]);
    let bearer = format!("Bearer {}", gateway.token);
    let tampered = format!("{bearer}x");
    let addr = gateway.addr;
    let status = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::http_get(addr, path, &headers).await.0
    };
    let auth = || vec![("authorization", bearer.clone())];
    assert_eq!(status("/orders/42", auth()).await, StatusCode::OK);
    assert_eq!(status("/orders/42", vec![]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status("/orders/42", vec![("authorization", tampered.clone())]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status("/admin/users", auth()).await, StatusCode::FORBIDDEN);
    let mut spoofed = auth();
    spoofed.push(("x-user-id", "admin".to_owned()));
    assert_eq!(status("/orders/42", spoofed).await, StatusCode::OK);
    let mut seen = Vec::new();
    for _ in 0..12 {
        seen.push(status("/orders/42", auth()).await.as_u16());
    }
    assert_eq!(
        seen,
        [200, 200, 200, 200, 200, 200, 200, 200, 429, 429, 429, 429]
    );
}

/// A gateway started beside its identity provider (compose, Kubernetes) before the provider
/// answers: with `startup = "start_empty"` it serves 503 until discovery finds the keys, then
/// 200; with the default it retries at start-up, then exits 2 saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_before_its_identity_provider() {
    use common::jwks_server::{JwksServer, Mode};
    let server = JwksServer::start(common::jwks(&[Alg::ES256])).await;
    server.set_mode(Mode::Down);
    let issuer = server.issuer();
    let dir = scratch("provider-later");
    let file = dir.join("policy.toml");
    std::fs::write(
        &file,
        policy(
            &issuer,
            r#"{ discovery = true, startup = "start_empty" }"#,
            "admin",
        ),
    )
    .unwrap();
    let gateway = start(&["--policy", file.to_str().unwrap()]);
    let bearer = format!("Bearer {}", token(&issuer, "ada", "read"));
    assert_eq!(
        get(gateway.addr, "/orders/1", Some(&bearer)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.set_mode(Mode::Serve);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while get(gateway.addr, "/orders/1", Some(&bearer)).await.0 != StatusCode::OK {
        assert!(std::time::Instant::now() < deadline, "the keys arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gateway);

    // The default: keys are required; a provider that stays down stops the gateway.
    server.set_mode(Mode::Down);
    std::fs::write(&file, policy(&issuer, "{ discovery = true }", "admin")).unwrap();
    let (code, stderr) = refuse(&["--policy", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("openid-configuration"), "{stderr}");
}

/// The gateway's log lines (its own field formatter, `examples/gateway/log.rs`): one line per
/// audit event, fields as `name="text"` or `name=42`, and a field holding a client's quotes,
/// line breaks or terminal escapes written escaped, never raw.
#[tokio::test]
async fn audit_lines_are_one_line_each_with_hostile_text_escaped() {
    let dir = scratch("audit-lines");
    let file = dir.join("policy.toml");
    std::fs::write(
        &file,
        common::issuer_a_policy(
            "[[routes]]\npath = \"/orders/**\"\nscopes_any = [\"read\"]\n[propagate]\naudit = true\n",
        ),
    )
    .unwrap();
    let mut gateway = spawn(
        command(&["--policy", file.to_str().unwrap()], None),
        Stdio::piped(),
    );
    let mut stderr = gateway.child.stderr.take().unwrap();
    let hostile = "ada\"\n\u{1b}[31mforged=1\\";
    for sub in [hostile, "bob"] {
        let bearer = format!("Bearer {}", token(common::ISS_A, sub, "read"));
        let (status, body) = get(gateway.addr, "/orders/1", Some(&bearer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Each line is written whole as its event happens: the log is complete when the process is
    // killed.
    gateway.child.kill().unwrap();
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(
        !log.contains('\u{1b}'),
        "a raw escape reached the log:\n{log}"
    );
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request decided"))
        .collect();
    assert_eq!(audit.len(), 2, "{log}");
    for line in &audit {
        for field in [
            r#"outcome="allowed""#,
            r#"reason="none""#,
            "status=200",
            r#"request_id="t-1""#,
            r#"route="/orders/**""#,
            r#"method="GET""#,
            "decision_us=",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
    assert!(
        audit[0].contains(&format!("subject={hostile:?}")),
        "{}",
        audit[0]
    );
    assert!(audit[1].contains(r#"subject="bob""#), "{}", audit[1]);
}
