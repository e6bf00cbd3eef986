//! A load test of the example gateway over real sockets, beside a bare hyper proxy to the same
//! upstream: `cargo run --release --bin load` (in `benches/compare`; it builds and starts the
//! gateway from the main workspace). Loopback only, bounded in time.
//!
//! Both proxies forward to the same in-process upstream (200, a short body). The gateway runs
//! the full policy: request id and trace context, JWT (1 000 users' ES256 tokens, cycled),
//! a route rule, identity headers, a per-subject rate limit that never denies, audit events
//! (written to a discarded stderr) and metrics.
//!
//! `cargo run --release --bin load -- --cpu` measures instead what each proxy's process spends
//! in CPU time per request (user + system, from `/proc`, divided by the requests it answered:
//! a figure that stays steady on a shared machine), each proxy pinned to core 1 with `taskset`:
//! the bare hyper proxy and HAProxy without JWT (the floors), then HAProxy with `jwt_verify`
//! and the gateway example, both verifying ES256 against the same PEM key, checking `iss`,
//! `aud` and `exp`, limiting by `sub` and setting `x-user-id`, over mixes of 1, 1 000, 20 000
//! and 1 000 000 distinct tokens. HAProxy comes from Debian's package (`apt-get install
//! haproxy`); without it that row is left out.

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

/// The next token to send, across every run: a measured run goes on where its warm-up stopped,
/// so a mix larger than a proxy's cache is never replayed in the order it was cached.
static NEXT_TOKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `CONNECTIONS` keep-alive connections sending GETs back to back for `DURATION`, each request
/// with the next token of the mix in turn.
async fn drive(addr: SocketAddr, tokens: Arc<Vec<String>>, name: &'static str) -> Result_ {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            while start.elapsed() < DURATION {
                let i = NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let request = Request::get("/orders/42")
                    .header("host", "localhost")
                    .header(
                        "authorization",
                        format!("Bearer {}", tokens[i % tokens.len()]),
                    )
                    .body(Empty::<Bytes>::new())
                    .unwrap();
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

/// Builds the gateway example (release) in the main workspace.
fn build_gateway() {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--example", "gateway"])
        .current_dir(ROOT)
        .status()
        .unwrap();
    assert!(status.success(), "building the gateway");
}

/// What the gateway's policy checks: the full job, or nothing (every route public: the
/// gateway's own floor).
#[derive(Clone, Copy, PartialEq)]
enum Checks {
    Full { audit: bool },
    Public,
}

/// Starts the gateway on a policy; returns the process and its address. With `pin`, it runs on
/// core 1 from its start (so it sizes its runtime to the one core it may use, as the other
/// pinned proxies do).
fn start_gateway(
    dir: &std::path::Path,
    issuer: &str,
    upstream: SocketAddr,
    checks: Checks,
    pin: bool,
) -> (std::process::Child, SocketAddr) {
    let (routes, audit) = match checks {
        Checks::Full { audit } => (
            r#"
[[routes]]
path = "/orders/**"
scopes_any = ["read"]

[[rate_limits]]
name = "default"
key = "claim:sub"
rate = "1000000/s"

[[routes]]
path = "/metrics"
auth = "none"

[upstream_headers]
x-user-id = "sub"
"#,
            audit,
        ),
        Checks::Public => (
            r#"
[[routes]]
path = "/**"
auth = "none"
"#,
            true,
        ),
    };
    let policy = format!(
        r#"
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
algorithms = ["ES256"]
keys = {{ pem_files = ["{KEYS}/p256.pub.pem"] }}
{routes}
[propagate]
audit = {audit}
"#
    );
    let file = dir.join(format!(
        "policy-{}.toml",
        match checks {
            Checks::Full { audit } => format!("full-{audit}"),
            Checks::Public => "public".to_owned(),
        }
    ));
    std::fs::write(&file, policy).unwrap();
    let mut command = if pin {
        let mut command = Command::new("taskset");
        command
            .args(["-c", "1"])
            .arg(format!("{ROOT}/target/release/examples/gateway"));
        command
    } else {
        Command::new(format!("{ROOT}/target/release/examples/gateway"))
    };
    let mut child = command
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
    if args.get(1).map(String::as_str) == Some("--signature-alone") {
        signature_alone();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--cpu") {
        runtime.block_on(run_cpu(CpuRun::parse(&args[2..])));
    } else {
        runtime.block_on(run());
    }
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
    build_gateway();
    let dir = std::env::temp_dir().join(format!("portcullis-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = "https://login.example.com/";
    let (mut full_policy, gateway) =
        start_gateway(&dir, issuer, upstream, Checks::Full { audit: true }, false);
    let (mut quiet_policy, quiet) =
        start_gateway(&dir, issuer, upstream, Checks::Full { audit: false }, false);

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

/// The process's CPU time (user + system, every thread) from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second: u64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy in front of `upstream` on core 1, one thread; with `jwt`, doing the gateway's job.
fn start_haproxy(
    dir: &std::path::Path,
    issuer: &str,
    upstream: SocketAddr,
    jwt: bool,
) -> Option<(std::process::Child, SocketAddr)> {
    let port = free_port();
    let checks = if jwt {
        format!(
            r#"
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str ES256 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{KEYS}/p256.pub.pem") -m int 1 }}
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
    http-request deny deny_status 401 unless {{ var(txn.iss) -m str {issuer} }}
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
    http-request deny deny_status 401 unless {{ var(txn.aud) -m str api }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')
    http-request track-sc0 var(txn.sub) table per_user
    http-request deny deny_status 429 if {{ sc_http_req_rate(0,per_user) gt 1000000 }}
    http-request set-header x-user-id %[var(txn.sub)]"#
        )
    } else {
        String::new()
    };
    let config = format!(
        r#"
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

backend per_user
    stick-table type string len 64 size 2m expire 10m store http_req_rate(1s)

frontend gateway
    bind 127.0.0.1:{port}
    http-request set-var(txn.now) date(){checks}
    default_backend upstream

backend upstream
    http-reuse always
    server upstream {upstream}
"#
    );
    let file = dir.join(format!("haproxy-{jwt}.cfg"));
    std::fs::write(&file, config).unwrap();
    let child = Command::new("taskset")
        .args(["-c", "1", "haproxy", "-db", "-f", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, addr))
}

/// `count` distinct ES256 tokens (subjects `user-0`, …), signed with ring on every core.
fn es256_tokens(issuer: &str, count: usize) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

    let pem = std::fs::read_to_string(format!("{KEYS}/p256.pem")).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
    let header = B64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (key, rng, header) = (&key, &rng, &header);
                scope.spawn(move || {
                    (t * chunk..((t + 1) * chunk).min(count))
                        .map(|i| {
                            let claims = json!({"iss": issuer, "aud": "api",
                                "sub": format!("user-{i}"), "scope": "read", "iat": now,
                                "exp": now + 3_600});
                            let input = format!("{header}.{}", B64.encode(claims.to_string()));
                            let signature = key.sign(rng, input.as_bytes()).unwrap();
                            format!("{input}.{}", B64.encode(signature.as_ref()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// One measured run: `tokens` through `addr` after a warm-up, and the CPU time per request
/// of process `pid` meanwhile.
async fn cpu_per_request(
    pid: u32,
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
    name: &'static str,
) -> (Result_, Duration) {
    drive(addr, tokens.clone(), "warm").await;
    let before = cpu_time(pid);
    let result = drive(addr, tokens, name).await;
    let spent = cpu_time(pid) - before;
    let per_request = spent / u32::try_from(result.requests).unwrap();
    (result, per_request)
}

/// The gateway's token-cache hits and misses so far, from its `/metrics`.
async fn cache_counts(addr: SocketAddr) -> (u64, u64) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::get("/metrics")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let read = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    };
    (
        read("portcullis_token_cache_hits_total "),
        read("portcullis_token_cache_misses_total "),
    )
}

/// What `--cpu` runs: every row by default; `--mixes 1,1000000` and `--no-haproxy` narrow it
/// (for profiling one row).
struct CpuRun {
    mixes: Vec<usize>,
    haproxy: bool,
}

impl CpuRun {
    fn parse(args: &[String]) -> Self {
        let mut run = CpuRun {
            mixes: vec![1, 1_000, 20_000, 1_000_000],
            haproxy: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--no-haproxy" => run.haproxy = false,
                "--mixes" => {
                    run.mixes = args
                        .next()
                        .expect("--mixes 1,1000")
                        .split(',')
                        .map(|n| n.parse().expect("a number of tokens"))
                        .collect();
                }
                other => panic!("unknown argument {other}"),
            }
        }
        run
    }
}

/// `load --signature-alone`: ring's ES256 check alone over 1 000 distinct tokens for
/// `DURATION`, as its own process pinned like the proxies; prints the CPU time per check in
/// nanoseconds.
fn signature_alone() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    let pem = std::fs::read_to_string(format!("{KEYS}/p256.pub.pem")).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    // The SubjectPublicKeyInfo of a P-256 key ends with the 65-byte uncompressed point.
    let point = &spki[spki.len() - 65..];
    let tokens: Vec<(String, Vec<u8>)> = es256_tokens("https://login.example.com/", 1_000)
        .into_iter()
        .map(|token| {
            let (input, signature) = token.rsplit_once('.').unwrap();
            (input.to_owned(), B64.decode(signature).unwrap())
        })
        .collect();
    let before = cpu_time(std::process::id());
    let start = Instant::now();
    let mut checks = 0u128;
    while start.elapsed() < DURATION {
        for (input, signature) in &tokens {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), signature)
                .unwrap();
            checks += 1;
        }
    }
    let spent = cpu_time(std::process::id()) - before;
    println!("{}", spent.as_nanos() / checks);
}

/// Runs `load --signature-alone` on core 1; the CPU time of one check.
fn measure_signature() -> Duration {
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(std::env::current_exe().unwrap())
        .arg("--signature-alone")
        .output()
        .unwrap();
    assert!(output.status.success(), "the signature check alone");
    let nanos: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Duration::from_nanos(nanos)
}

async fn run_cpu(run: CpuRun) {
    // The load generator and the upstream (this process, every thread) on core 0, the proxy
    // measured on core 1.
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let upstream = serve(|_r| async { Response::new(full("{\"ok\":true}")) }).await;
    let dir = std::env::temp_dir().join(format!("portcullis-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = "https://login.example.com/";
    build_gateway();

    let mut rows: Vec<(String, String, usize, Duration, Duration)> = Vec::new();
    let one = Arc::new(es256_tokens(issuer, 1));

    // The floors: no token checks at all.
    let (mut bare_child, bare) = listening(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe().unwrap())
            .args(["--bare-proxy", &upstream.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (r, bare_cpu) = cpu_per_request(bare_child.id(), bare, one.clone(), "bare").await;
    rows.push((
        "bare hyper proxy (the gateway's client)".into(),
        "—".into(),
        r.requests,
        bare_cpu,
        r.p99,
    ));
    let _ = bare_child.kill();
    let _ = bare_child.wait();
    if run.haproxy
        && let Some((mut child, addr)) = start_haproxy(&dir, issuer, upstream, false)
    {
        let (r, cpu) = cpu_per_request(child.id(), addr, one.clone(), "haproxy").await;
        rows.push(("HAProxy, no JWT".into(), "—".into(), r.requests, cpu, r.p99));
        let _ = child.kill();
        let _ = child.wait();
    }
    {
        let (mut child, addr) = start_gateway(&dir, issuer, upstream, Checks::Public, true);
        let (r, cpu) = cpu_per_request(child.id(), addr, one.clone(), "public").await;
        rows.push((
            "gateway example, every route public (audit on)".into(),
            "—".into(),
            r.requests,
            cpu,
            r.p99,
        ));
        let _ = child.kill();
        let _ = child.wait();
    }

    let (mut gateway_child, gateway) =
        start_gateway(&dir, issuer, upstream, Checks::Full { audit: true }, true);
    let haproxy = if run.haproxy {
        start_haproxy(&dir, issuer, upstream, true)
    } else {
        None
    };
    let signature = measure_signature();
    for &mix in &run.mixes {
        let tokens = Arc::new(es256_tokens(issuer, mix));
        if let Some((child, addr)) = &haproxy {
            let (r, cpu) = cpu_per_request(child.id(), *addr, tokens.clone(), "haproxy").await;
            rows.push((
                "HAProxy 2.6, jwt_verify".into(),
                mix.to_string(),
                r.requests,
                cpu,
                r.p99,
            ));
        }
        drive(gateway, tokens.clone(), "warm").await;
        let (hits, misses) = cache_counts(gateway).await;
        let before = cpu_time(gateway_child.id());
        let r = drive(gateway, tokens, "gateway").await;
        let cpu = (cpu_time(gateway_child.id()) - before) / u32::try_from(r.requests).unwrap();
        let (hits_after, misses_after) = cache_counts(gateway).await;
        let (hits, misses) = (hits_after - hits, misses_after - misses);
        rows.push((
            format!(
                "gateway example ({:.0} % of tokens from its cache)",
                100.0 * hits as f64 / (hits + misses).max(1) as f64
            ),
            mix.to_string(),
            r.requests,
            cpu,
            r.p99,
        ));
    }
    let _ = gateway_child.kill();
    let _ = gateway_child.wait();
    if let Some((mut child, _)) = haproxy {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("| proxy (pinned to core 1) | distinct tokens | requests | CPU per request | p99 |");
    println!("|---|---|---|---|---|");
    for (name, mix, requests, cpu, p99) in rows {
        println!(
            "| {name} | {mix} | {requests} | {:.1} µs | {:.2} ms |",
            cpu.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e3
        );
    }
    println!();
    let target = (bare_cpu + signature).mul_f64(1.2);
    println!(
        "ring's ES256 check alone, on core 1: {:.1} µs. A miss's target, 1.2 × (bare proxy + one check): {:.1} µs.",
        signature.as_secs_f64() * 1e6,
        target.as_secs_f64() * 1e6
    );
    println!(
        "{CONNECTIONS} keep-alive connections for {} s after a warm-up of as long, loopback; ES256 tokens; the load generator and the upstream share the machine with the pinned proxy.",
        DURATION.as_secs()
    );
}
