//! A load test of the example gateway over real sockets, beside a bare hyper proxy to the same
//! upstream: `cargo run --release --bin load` (in `benches/compare`; it builds and starts the
//! gateway from the main workspace). Loopback only, bounded in time.
//!
//! Both proxies forward to the same in-process upstream (200, a short body). The gateway runs
//! the full policy: request id and trace context, JWT (1 000 users' ES256 tokens, cycled),
//! a route rule, identity headers, a per-subject rate limit that never denies, audit events
//! (written to a discarded stderr) and metrics.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/keys");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const CONNECTIONS: usize = 32;
const DURATION: Duration = Duration::from_secs(5);

async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>,
        > + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |r| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(r).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn full(text: &'static str) -> http_body_util::combinators::BoxBody<Bytes, hyper::Error> {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|n| match n {})
        .boxed()
}

struct Result_ {
    name: &'static str,
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

/// `CONNECTIONS` keep-alive connections sending GETs back to back for `DURATION`.
async fn drive(addr: SocketAddr, tokens: Arc<Vec<String>>, name: &'static str) -> Result_ {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut i = c;
            while start.elapsed() < DURATION {
                let request = Request::get("/orders/42")
                    .header("host", "localhost")
                    .header(
                        "authorization",
                        format!("Bearer {}", tokens[i % tokens.len()]),
                    )
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                i += CONNECTIONS;
                let sent = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let _ = response.into_body().collect().await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Result_ {
        name,
        requests: all.len(),
        seconds,
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Starts the gateway on a policy with `audit` on or off; returns the process and its address.
fn start_gateway(
    dir: &std::path::Path,
    issuer: &str,
    upstream: SocketAddr,
    audit: bool,
) -> (std::process::Child, SocketAddr) {
    let policy = format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
algorithms = ["ES256"]
keys = {{ pem_files = ["{KEYS}/p256.pub.pem"] }}

[[routes]]
path = "/orders/**"
scopes_any = ["read"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "1000000/s"

[upstream_headers]
x-user-id = "sub"

[propagate]
audit = {audit}
"#
    );
    let file = dir.join(format!("policy-{audit}.toml"));
    std::fs::write(&file, policy).unwrap();
    let mut child = Command::new(format!("{ROOT}/target/release/examples/gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .args(["--policy", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(addr) = line.strip_prefix("listening on http://") {
            return (child, addr.parse().unwrap());
        }
    }
}

fn main() {
    // `load --bare-proxy UPSTREAM`: the baseline proxy, as its own process like the gateway.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare-proxy") {
        let upstream: SocketAddr = args[2].parse().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let addr = bare_proxy(upstream).await;
            println!("listening on http://{addr}");
            std::future::pending::<()>().await;
        });
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// A bare hyper proxy: the same client as the gateway's, nothing else.
async fn bare_proxy(upstream: SocketAddr) -> SocketAddr {
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    serve(move |mut r: Request<Incoming>| {
        let client = client.clone();
        async move {
            let path = r
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            *r.uri_mut() = format!("http://{upstream}{path}").parse().unwrap();
            r.headers_mut().remove(http::header::HOST);
            match client.request(r).await {
                Ok(response) => response.map(|b| b.boxed()),
                Err(_) => {
                    let mut response = Response::new(full(""));
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    response
                }
            }
        }
    })
    .await
}

/// Starts a child process and waits for its `listening on http://ADDR` line.
fn listening(mut child: std::process::Child) -> (std::process::Child, SocketAddr) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(addr) = line.strip_prefix("listening on http://") {
            return (child, addr.parse().unwrap());
        }
    }
}

async fn run() {
    // The upstream, shared by both proxies.
    let upstream = serve(|_r| async { Response::new(full("{\"ok\":true}")) }).await;

    // The baseline: a bare hyper proxy, in its own process as the gateway is.
    let (mut bare_child, bare) = listening(
        Command::new(std::env::current_exe().unwrap())
            .args(["--bare-proxy", &upstream.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // The gateway example with a full policy, and with audit events (and decision metrics) off.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--example", "gateway"])
        .current_dir(ROOT)
        .status()
        .unwrap();
    assert!(status.success(), "building the gateway");
    let dir = std::env::temp_dir().join(format!("portcullis-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = "https://login.example.com/";
    let (mut full_policy, gateway) = start_gateway(&dir, issuer, upstream, true);
    let (mut quiet_policy, quiet) = start_gateway(&dir, issuer, upstream, false);

    let key =
        EncodingKey::from_ec_pem(&std::fs::read(format!("{KEYS}/p256.pem")).unwrap()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..1_000)
            .map(|i| {
                let claims = json!({"iss": issuer, "aud": "api", "sub": format!("user-{i}"),
                    "scope": "read", "iat": now, "exp": now + 3_600});
                jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
            })
            .collect(),
    );

    // Warm both (connections, the gateway's token cache), then measure each in turn.
    drive(bare, tokens.clone(), "warm").await;
    drive(gateway, tokens.clone(), "warm").await;
    drive(quiet, tokens.clone(), "warm").await;
    let results = [
        drive(
            bare,
            tokens.clone(),
            "bare hyper proxy (same client, own process)",
        )
        .await,
        drive(
            gateway,
            tokens.clone(),
            "gateway example, full policy (audit events logged)",
        )
        .await,
        drive(
            quiet,
            tokens.clone(),
            "gateway example, full policy, audit = false",
        )
        .await,
    ];
    for child in [&mut full_policy, &mut quiet_policy, &mut bare_child] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("| proxy | requests | throughput | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} req/s | {:.0} µs | {:.0} µs |",
            r.name,
            r.requests,
            r.requests as f64 / r.seconds,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6
        );
    }
    println!();
    println!(
        "{CONNECTIONS} keep-alive connections for {} s each, loopback; the load generator, the proxies and the upstream share the machine's cores.",
        DURATION.as_secs()
    );
}
