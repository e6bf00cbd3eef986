//! A load test of the example gateway over real sockets, beside a bare hyper proxy to the same
//! upstream: `cargo run --release --bin load` (in `benches/compare`; it builds and starts the
//! gateway from the main workspace). Loopback only, bounded in time.
//!
//! Both proxies forward to the same in-process upstream (200, a short body). The gateway runs
//! the full policy: request id and trace context, JWT (1 000 users' ES256 tokens, cycled),
//! a route rule, identity headers, a per-subject rate limit that never denies, audit events
//! (written to a discarded stderr) and metrics. With HAProxy installed, it is driven too, with
//! as many threads as cores: without JWT, and with `jwt_verify` doing the gateway's job.
//!
//! `cargo run --release --bin load -- --cpu` measures instead what each proxy's process spends
//! in CPU time per request (user + system, from `/proc`, divided by the requests it answered:
//! a figure that stays steady on a shared machine), each proxy pinned to core 1 with `taskset`:
//! the bare hyper proxy and HAProxy without JWT (the floors), then HAProxy with `jwt_verify`
//! and the gateway example, both verifying ES256 against the same PEM key, checking `iss`,
//! `aud` and `exp`, limiting by `sub` and setting `x-user-id`, over mixes of 1, 1 000, 20 000
//! and 1 000 000 distinct tokens. HAProxy comes from Debian's package (`apt-get install
//! haproxy`); without it that row is left out.
//!
//! `--cache-off` adds, for each mix, a gateway with its verified-token cache off, to separate
//! what the cache's own upkeep costs a miss from the rest.
//!
//! `--alg RS256` signs the tokens with RSA-2048 instead of P-256 (the set-up of the HAProxy
//! comparison that issue 16 started from), for mixes of 1, 1 000 and 20 000 tokens: making a
//! million RSA signatures would take longer than the run. With `--cache-off`, its gateway
//! without a cache verifies every request, a miss each time.
//!
//! `GATEWAY=PATH` runs the gateway binary at `PATH` instead of the one it builds: another
//! commit's build, to compare two builds run after run on the same machine.
//!
//! `cargo run --release --bin load -- --rate N` sends the same requests at N a second in all
//! instead of back to back, so that every proxy gets the same load: a proxy that answers faster
//! does not take the load generator's share of the cores, and the latencies compare the proxies
//! at equal work. N must stay below what the slowest proxy can answer.

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

/// `CONNECTIONS` keep-alive connections sending GETs for `duration`, each request with the next
/// token of the mix in turn: back to back, or at `rate` requests a second in all (each
/// connection sends on a fixed schedule, staggered from the others). A request's latency runs
/// from when it is sent to when its body has been read: a request whose turn came while its
/// connection was still waiting is sent at once, and its wait is not counted.
async fn drive(
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
    name: &'static str,
    duration: Duration,
    rate: Option<u32>,
) -> Result_ {
    let start = Instant::now();
    // Each connection's gap between sends at `rate`.
    let gap = rate.map(|rate| Duration::from_secs_f64(CONNECTIONS as f64 / f64::from(rate)));
    let mut tasks = Vec::new();
    for connection in 0..CONNECTIONS {
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut turn = 0u32;
            while start.elapsed() < duration {
                if let Some(gap) = gap {
                    // Staggered: connection c sends at c/CONNECTIONS of a gap, then a gap apart.
                    let offset = gap.mul_f64(connection as f64 / CONNECTIONS as f64);
                    tokio::time::sleep_until((start + offset + gap * turn).into()).await;
                    turn += 1;
                }
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
    Full { audit: bool, cache: bool },
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
    alg: Alg,
    pin: bool,
) -> (std::process::Child, SocketAddr) {
    let (routes, audit) = match checks {
        Checks::Full { audit, .. } => (
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
    // `cache_budget = "0"` turns the verified-token cache off: every request is verified.
    let token = match checks {
        Checks::Full { cache: false, .. } => "[token]\ncache_budget = \"0\"\n",
        _ => "",
    };
    let (alg, public) = (alg.name(), alg.public_pem());
    let policy = format!(
        r#"{token}
[[issuers]]
issuer = "{issuer}"
audiences = ["api"]
algorithms = ["{alg}"]
keys = {{ pem_files = ["{KEYS}/{public}"] }}
{routes}
[propagate]
audit = {audit}
"#
    );
    let file = dir.join(format!(
        "policy-{}.toml",
        match checks {
            Checks::Full { audit, cache } => format!("full-{audit}-{cache}"),
            Checks::Public => "public".to_owned(),
        }
    ));
    std::fs::write(&file, policy).unwrap();
    // `GATEWAY=PATH` runs another build of the example (an older commit's, side by side).
    let binary = std::env::var("GATEWAY")
        .unwrap_or_else(|_| format!("{ROOT}/target/release/examples/gateway"));
    let mut command = if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", "1"]).arg(&binary);
        command
    } else {
        Command::new(&binary)
    };
    listening(
        command
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
            .unwrap(),
    )
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
        signature_alone(args[2].parse().unwrap(), Alg::parse(&args[3]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--cpu") {
        runtime.block_on(run_cpu(CpuRun::parse(&args[2..])));
    } else if args.get(1).map(String::as_str) == Some("--rate") {
        let rate = args.get(2).and_then(|r| r.parse().ok()).filter(|r| *r > 0);
        runtime.block_on(run(Some(rate.expect("--rate REQUESTS_PER_SECOND"))));
    } else {
        runtime.block_on(run(None));
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

async fn run(rate: Option<u32>) {
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
    let (mut full_policy, gateway) = start_gateway(
        &dir,
        issuer,
        upstream,
        Checks::Full {
            audit: true,
            cache: true,
        },
        Alg::Es256,
        false,
    );
    let (mut quiet_policy, quiet) = start_gateway(
        &dir,
        issuer,
        upstream,
        Checks::Full {
            audit: false,
            cache: true,
        },
        Alg::Es256,
        false,
    );

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

    // HAProxy from Debian's package, when installed, as a peer: without JWT (a proxy's floor)
    // and with `jwt_verify` (which verifies every request: it keeps no cache).
    let mut haproxy = Vec::new();
    for (jwt, name) in [
        (false, "HAProxy 2.6, no JWT (threads: one per core)"),
        (true, "HAProxy 2.6, jwt_verify (threads: one per core)"),
    ] {
        if let Some((child, addr)) = start_haproxy(&dir, issuer, upstream, jwt, Alg::Es256, false) {
            haproxy.push((child, addr, name));
        }
    }

    // Warm each (connections, the gateway's token cache), then measure each in turn.
    let mut proxies = vec![
        (bare, "bare hyper proxy (same client, own process)"),
        (
            gateway,
            "gateway example, full policy (audit events logged)",
        ),
        (quiet, "gateway example, full policy, audit = false"),
    ];
    proxies.extend(haproxy.iter().map(|&(_, addr, name)| (addr, name)));
    for &(addr, _) in &proxies {
        drive(addr, tokens.clone(), "warm", DURATION, rate).await;
    }
    let mut results = Vec::new();
    for &(addr, name) in &proxies {
        results.push(drive(addr, tokens.clone(), name, DURATION, rate).await);
    }
    let children = haproxy.iter_mut().map(|(child, _, _)| child);
    for child in [&mut full_policy, &mut quiet_policy, &mut bare_child]
        .into_iter()
        .chain(children)
    {
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
    let pace = rate.map_or_else(
        || "back to back".to_string(),
        |rate| format!("at {rate} requests a second in all, latency from each send"),
    );
    println!(
        "{CONNECTIONS} keep-alive connections for {} s each, {pace}, loopback; the load generator, the proxies and the upstream share the machine's cores.",
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

/// HAProxy in front of `upstream`; with `jwt`, doing the gateway's job. With `pin`, on core 1
/// with one thread; else on every core, with HAProxy's own thread count (one per core).
fn start_haproxy(
    dir: &std::path::Path,
    issuer: &str,
    upstream: SocketAddr,
    jwt: bool,
    alg: Alg,
    pin: bool,
) -> Option<(std::process::Child, SocketAddr)> {
    let port = free_port();
    let (name, public) = (alg.name(), alg.public_pem());
    let checks = if jwt {
        format!(
            r#"
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str {name} }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{KEYS}/{public}") -m int 1 }}
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
    let threads = if pin { "\n    nbthread 1" } else { "" };
    let config = format!(
        r#"
global{threads}
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
    let file = dir.join(format!("haproxy-{jwt}-{name}-{pin}.cfg"));
    std::fs::write(&file, config).unwrap();
    let mut command = if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", "1", "haproxy"]);
        command
    } else {
        Command::new("haproxy")
    };
    let child = command
        .args(["-db", "-f", file.to_str().unwrap()])
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

/// The algorithm the `--cpu` run's tokens are signed with: ES256 by default, RS256 with
/// `--alg RS256` (the peer's set-up in issue 16: RSA-2048 against a PEM key).
#[derive(Clone, Copy, PartialEq)]
enum Alg {
    Es256,
    Rs256,
}

impl Alg {
    fn parse(name: &str) -> Self {
        match name {
            "ES256" => Alg::Es256,
            "RS256" => Alg::Rs256,
            other => panic!("--alg ES256 or RS256, not {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    /// The public key's PEM file in `tests/keys`, for the gateway and HAProxy.
    fn public_pem(self) -> &'static str {
        match self {
            Alg::Es256 => "p256.pub.pem",
            Alg::Rs256 => "rsa2048.pub.pem",
        }
    }

    /// ring's verification algorithm, for the check alone.
    fn ring(self) -> &'static dyn ring::signature::VerificationAlgorithm {
        match self {
            Alg::Es256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
            Alg::Rs256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// The private key of `tests/keys` for an algorithm, in ring.
enum Signer {
    Ec(ring::signature::EcdsaKeyPair),
    Rsa(ring::signature::RsaKeyPair),
}

impl Signer {
    fn new(alg: Alg) -> Self {
        use base64::Engine as _;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};

        let file = match alg {
            Alg::Es256 => "p256.pem",
            Alg::Rs256 => "rsa2048.pem",
        };
        let pem = std::fs::read_to_string(format!("{KEYS}/{file}")).unwrap();
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        match alg {
            Alg::Es256 => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &ring::rand::SystemRandom::new(),
                )
                .unwrap(),
            ),
            Alg::Rs256 => Signer::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
        }
    }

    fn sign(&self, rng: &ring::rand::SystemRandom, input: &[u8]) -> Vec<u8> {
        match self {
            Signer::Ec(key) => key.sign(rng, input).unwrap().as_ref().to_vec(),
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    rng,
                    input,
                    &mut signature,
                )
                .unwrap();
                signature
            }
        }
    }

    /// The public key in the form ring verifies with (the EC point; the RSA `RSAPublicKey`).
    fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        match self {
            Signer::Ec(key) => key.public_key().as_ref().to_vec(),
            Signer::Rsa(key) => key.public_key().as_ref().to_vec(),
        }
    }
}

/// `count` distinct tokens (subjects `user-0`, …) signed with `alg`, with ring on every core.
fn tokens(alg: Alg, issuer: &str, count: usize) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    let key = Signer::new(alg);
    let rng = ring::rand::SystemRandom::new();
    let header = B64.encode(format!(r#"{{"alg":"{}","typ":"JWT"}}"#, alg.name()));
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
                            let signature = key.sign(rng, input.as_bytes());
                            format!("{input}.{}", B64.encode(signature))
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

/// What `--cpu` runs: every row by default; `--mixes 1,1000000`, `--no-haproxy` and
/// `--rounds N` narrow it (for profiling one row); `--round-secs N` sets how long each row is
/// measured per round (3 s by default; shorter rounds, more of them, put the rows a ratio
/// compares closer together in time); `--cache-off` adds, for each mix, a gateway
/// with its verified-token cache off (what the cache's own work on a miss costs); `--alg RS256`
/// signs the tokens with RSA-2048 instead of P-256, with mixes of 1, 1 000 and 20 000 by
/// default (a million RSA signatures would take the machine half an hour to make).
struct CpuRun {
    alg: Alg,
    mixes: Vec<usize>,
    haproxy: bool,
    rounds: usize,
    /// How long each row is measured in each round.
    round: Duration,
    cache_off: bool,
}

impl CpuRun {
    fn parse(args: &[String]) -> Self {
        let mut run = CpuRun {
            alg: Alg::Es256,
            mixes: Vec::new(),
            haproxy: true,
            rounds: 3,
            round: Duration::from_secs(3),
            cache_off: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--alg" => run.alg = Alg::parse(args.next().expect("--alg ES256")),
                "--no-haproxy" => run.haproxy = false,
                "--cache-off" => run.cache_off = true,
                "--mixes" => {
                    run.mixes = args
                        .next()
                        .expect("--mixes 1,1000")
                        .split(',')
                        .map(|n| n.parse().expect("a number of tokens"))
                        .collect();
                }
                "--round-secs" => {
                    run.round = Duration::from_secs(
                        args.next()
                            .and_then(|n| n.parse().ok())
                            .filter(|n| *n > 0)
                            .expect("--round-secs N, at least 1"),
                    );
                }
                "--rounds" => {
                    run.rounds = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("--rounds N");
                }
                other => panic!("unknown argument {other}"),
            }
        }
        if run.mixes.is_empty() {
            run.mixes = match run.alg {
                Alg::Es256 => vec![1, 1_000, 20_000, 1_000_000],
                Alg::Rs256 => vec![1, 1_000, 20_000],
            };
        }
        run
    }
}

/// `load --signature-alone SECS ALG`: ring's check alone over 1 000 distinct tokens for
/// `SECS`, as its own process pinned like the proxies; prints the CPU time per check in
/// nanoseconds.
fn signature_alone(seconds: u64, alg: Alg) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ring::signature::UnparsedPublicKey;

    let public = Signer::new(alg).public_key();
    let tokens: Vec<(String, Vec<u8>)> = tokens(alg, "https://login.example.com/", 1_000)
        .into_iter()
        .map(|token| {
            let (input, signature) = token.rsplit_once('.').unwrap();
            (input.to_owned(), B64.decode(signature).unwrap())
        })
        .collect();
    let before = cpu_time(std::process::id());
    let start = Instant::now();
    let mut checks = 0u128;
    while start.elapsed() < Duration::from_secs(seconds) {
        for (input, signature) in &tokens {
            UnparsedPublicKey::new(alg.ring(), &public)
                .verify(input.as_bytes(), signature)
                .unwrap();
            checks += 1;
        }
    }
    let spent = cpu_time(std::process::id()) - before;
    println!("{}", spent.as_nanos() / checks);
}

/// Runs `load --signature-alone` on core 1; the CPU time of one check.
fn measure_signature(alg: Alg, round: Duration) -> Duration {
    let output = Command::new("taskset")
        .args(["-c", "1"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--signature-alone",
            &round.as_secs().to_string(),
            alg.name(),
        ])
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

/// A row of the CPU table: what is measured, and each round's figures.
struct Row {
    name: String,
    mix: String,
    target: Target,
    /// Each round's CPU per request (or per check) and p99.
    rounds: Vec<(Duration, Duration)>,
    /// For the gateway: the share of requests its cache answered, over every round.
    cache: Option<(u64, u64)>,
}

enum Target {
    Proxy {
        child: std::process::Child,
        addr: SocketAddr,
        tokens: Arc<Vec<String>>,
        gateway: bool,
    },
    Signature(Alg),
}

impl Row {
    fn proxy(
        name: &str,
        mix: &str,
        child: std::process::Child,
        addr: SocketAddr,
        tokens: Arc<Vec<String>>,
        gateway: bool,
    ) -> Self {
        Row {
            name: name.to_owned(),
            mix: mix.to_owned(),
            target: Target::Proxy {
                child,
                addr,
                tokens,
                gateway,
            },
            rounds: Vec::new(),
            cache: gateway.then_some((0, 0)),
        }
    }

    /// Drives the row's proxy for a while so its connections, caches and tables are warm.
    async fn warm(&self, round: Duration) {
        if let Target::Proxy { addr, tokens, .. } = &self.target {
            drive(*addr, tokens.clone(), "warm", round, None).await;
        }
    }

    /// One round: the CPU per request of the proxy's process over `round`, or one check alone.
    async fn measure(&mut self, round: Duration) {
        match &self.target {
            Target::Signature(alg) => {
                let check = measure_signature(*alg, round);
                self.rounds.push((check, Duration::ZERO));
            }
            Target::Proxy {
                child,
                addr,
                tokens,
                gateway,
            } => {
                let counts = if *gateway {
                    Some(cache_counts(*addr).await)
                } else {
                    None
                };
                let before = cpu_time(child.id());
                let result = drive(*addr, tokens.clone(), "measured", round, None).await;
                let spent = cpu_time(child.id()) - before;
                if let (Some((hits, misses)), Some(total)) = (counts, self.cache.as_mut()) {
                    let (hits_after, misses_after) = cache_counts(*addr).await;
                    total.0 += hits_after - hits;
                    total.1 += misses_after - misses;
                }
                let per_request = spent / u32::try_from(result.requests.max(1)).unwrap();
                self.rounds.push((per_request, result.p99));
            }
        }
    }

    /// The median round's CPU per request, the lowest and the highest.
    fn cpu(&self) -> (Duration, Duration, Duration) {
        let mut cpu: Vec<Duration> = self.rounds.iter().map(|r| r.0).collect();
        cpu.sort_unstable();
        (cpu[cpu.len() / 2], cpu[0], cpu[cpu.len() - 1])
    }

    fn p99(&self) -> Duration {
        let mut p99: Vec<Duration> = self.rounds.iter().map(|r| r.1).collect();
        p99.sort_unstable();
        p99[p99.len() / 2]
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        if let Target::Proxy { child, .. } = &mut self.target {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the bare hyper proxy (this program, `--bare-proxy`) on core 1.
fn start_bare(upstream: SocketAddr) -> (std::process::Child, SocketAddr) {
    listening(
        Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe().unwrap())
            .args(["--bare-proxy", &upstream.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

async fn run_cpu(run: CpuRun) {
    // The load generator and the upstream (this process, every thread) on core 0, the proxies
    // measured on core 1 (each its own process, idle while another is measured).
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    let upstream = serve(|_r| async { Response::new(full("{\"ok\":true}")) }).await;
    let dir = std::env::temp_dir().join(format!("portcullis-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = "https://login.example.com/";
    build_gateway();

    let alg = run.alg;
    let one = Arc::new(tokens(alg, issuer, 1));
    let mut rows = Vec::new();
    // The floors: no token checks at all.
    let (child, addr) = start_bare(upstream);
    rows.push(Row::proxy(
        "bare hyper proxy (the gateway's client)",
        "—",
        child,
        addr,
        one.clone(),
        false,
    ));
    if run.haproxy
        && let Some((child, addr)) = start_haproxy(&dir, issuer, upstream, false, alg, true)
    {
        rows.push(Row::proxy(
            "HAProxy, no JWT",
            "—",
            child,
            addr,
            one.clone(),
            false,
        ));
    }
    let (child, addr) = start_gateway(&dir, issuer, upstream, Checks::Public, alg, true);
    rows.push(Row::proxy(
        "gateway example, every route public (audit on)",
        "—",
        child,
        addr,
        one.clone(),
        false,
    ));
    rows.push(Row {
        name: format!("ring's {} check alone (no proxy)", alg.name()),
        mix: "—".into(),
        target: Target::Signature(alg),
        rounds: Vec::new(),
        cache: None,
    });
    // Each mix its own processes, so one mix's tokens never evict another's.
    for &mix in &run.mixes {
        let tokens = Arc::new(tokens(alg, issuer, mix));
        if run.haproxy
            && let Some((child, addr)) = start_haproxy(&dir, issuer, upstream, true, alg, true)
        {
            rows.push(Row::proxy(
                "HAProxy 2.6, jwt_verify",
                &mix.to_string(),
                child,
                addr,
                tokens.clone(),
                false,
            ));
        }
        let gateways = [
            ("gateway example", true),
            ("gateway example, token cache off", false),
        ];
        for (name, cache) in gateways
            .into_iter()
            .filter(|&(_, cache)| cache || run.cache_off)
        {
            let checks = Checks::Full { audit: true, cache };
            let (child, addr) = start_gateway(&dir, issuer, upstream, checks, alg, true);
            rows.push(Row::proxy(
                name,
                &mix.to_string(),
                child,
                addr,
                tokens.clone(),
                true,
            ));
        }
    }
    for row in &rows {
        row.warm(run.round).await;
    }
    // Rounds, each measuring every row in turn: a slow spell of the machine falls on every
    // row alike rather than on one.
    for _ in 0..run.rounds {
        for row in &mut rows {
            row.measure(run.round).await;
        }
    }

    println!(
        "| proxy (pinned to core 1) | distinct tokens | CPU per request: median (lowest–highest) of {} rounds | p99 | cache hits |",
        run.rounds
    );
    println!("|---|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for row in &rows {
        let (median, low, high) = row.cpu();
        let p99 = match row.target {
            Target::Signature(_) => "—".to_owned(),
            Target::Proxy { .. } => format!("{:.2} ms", row.p99().as_secs_f64() * 1e3),
        };
        // No lookups at all: the cache is off.
        let cache = match row.cache {
            Some((hits, misses)) if hits + misses > 0 => {
                format!("{:.0} %", 100.0 * hits as f64 / (hits + misses) as f64)
            }
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {} | {:.1} µs ({:.1}–{:.1}) | {p99} | {cache} |",
            row.name,
            row.mix,
            us(median),
            us(low),
            us(high)
        );
    }
    println!();
    // The miss's target, round by round: 1.2 × (bare proxy + one check), against each gateway
    // on the last mix in the same round.
    let bare = &rows[0];
    let signature = rows
        .iter()
        .find(|r| matches!(r.target, Target::Signature(_)))
        .unwrap();
    let last_mix = run.mixes.last().map(ToString::to_string);
    for miss in rows
        .iter()
        .filter(|r| r.cache.is_some() && Some(&r.mix) == last_mix.as_ref())
    {
        let mut ratios: Vec<f64> = (0..run.rounds)
            .map(|i| {
                let target = (bare.rounds[i].0 + signature.rounds[i].0).mul_f64(1.2);
                miss.rounds[i].0.as_secs_f64() / target.as_secs_f64()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "The {} on {} distinct tokens, against 1.2 × (bare proxy + one check) in the same round: {} (median {:.2}; under 1.00 meets it).",
            miss.name,
            miss.mix,
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            ratios[ratios.len() / 2]
        );
    }
    println!(
        "{CONNECTIONS} keep-alive connections, each row warmed for {} s then measured for {} s per round, loopback; {} tokens; the load generator and the upstream on core 0.",
        run.round.as_secs(),
        run.round.as_secs(),
        alg.name()
    );
    drop(rows);
    let _ = std::fs::remove_dir_all(&dir);
}
