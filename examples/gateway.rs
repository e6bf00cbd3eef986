//! Run with `cargo run --example gateway` (demo mode), or
//! `cargo run --example gateway -- --policy FILE [--listen ADDR] [--upstream URL]`
//! `[--upstream-timeout SECS] [--header-read-timeout SECS] [--idle-timeout SECS]`
//! `[--max-connections N] [--max-header-bytes N] [--underscore-headers drop|keep]`
//! `[--workers N]`.
//!
//! A small identity-aware reverse proxy built only from the crate's public API: the policy file
//! in ([`PolicyHandle`], reloaded when the file changes or on SIGHUP), hyper on the front, a
//! hyper-util client to the upstream. Every request passes the policy's stack — request id and
//! trace context, token, route rules, identity headers and signed assertion, rate limits —
//! before it is forwarded; bodies stream through in both directions without buffering.
//! Hop-by-hop headers are removed both ways; the upstream gets `X-Forwarded-For` (the peer
//! appended), and `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` set by
//! the gateway alone (a client's copies are replaced). Headers only a proxy may set are never
//! taken from a client: `X-Original-URL`, `X-Rewrite-URL` and `X-Original-URI` (path overrides
//! that IIS, Symfony and nginx setups honour) are removed, and so is every client header whose
//! name holds `_` (`X_User_Id`, which CGI-style servers read as `X-User-Id`), unless
//! `--underscore-headers keep`. A request that cannot be read one way is answered 400: an
//! HTTP/1.1 request without exactly one `Host`, a request body whose framing breaks. An
//! upstream that cannot be reached answers 502, one that does not answer within 30 s
//! (`--upstream-timeout SECS`) answers 504, each with the request id.
//!
//! Connections are bounded: a request's header must arrive within 10 s of the connection
//! waiting for it (`--header-read-timeout`; this also closes kept-alive connections that send
//! nothing more), a connection that moves no byte either way for 60 s is closed
//! (`--idle-timeout`), the request line and header may hold 64 KiB at most
//! (`--max-header-bytes`, 431 past it), and at most `--max-connections` are served at once
//! (default: half the process's open-file limit less a reserve, at most 10 000), the rest wait
//! in the listen queue. An accept error (out of descriptors) is logged and retried with
//! back-off. Requests are served by worker threads, one per core the process may run on
//! (`--workers N`), each connection by one worker from start to end. The `[server]` section of
//! the policy sets the same values; flags win.
//!
//! The gateway itself answers `/health`, `/metrics` (Prometheus text format) and
//! `/.well-known/portcullis/jwks.json` (the keys that verify the identity assertion) — behind
//! the policy like everything else, so a policy makes them public with `auth = "none"` routes.
//! Without `--upstream` (and no `upstream` in the file) requests go to a built-in echo upstream
//! on another loopback port, which answers with the method, path and headers that reached it.
//!
//! With no arguments, demo mode: an embedded demo issuer (an ES256 key pair made at start), a
//! sample policy written to a temporary folder, and a printed token with curl lines that show
//! 200, 401, 403 and 429. Audit events go to standard error. It prints
//! `listening on http://ADDR` when ready; SIGINT or SIGTERM stops accepting, finishes in-flight
//! requests and exits 0.

#[path = "gateway/args.rs"]
mod args;
#[path = "gateway/demo.rs"]
mod demo;
#[path = "gateway/echo.rs"]
mod echo;
#[path = "gateway/log.rs"]
mod log;
#[path = "gateway/proxy.rs"]
mod proxy;
#[path = "gateway/serve.rs"]
mod serve;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis::policy::PolicyHandle;
use tower::Layer;

type Body = BoxBody<Bytes, hyper::Error>;

/// Bucket bounds of `portcullis_decision_seconds`, in seconds.
const DECISION_BUCKETS: [f64; 14] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1,
];

/// How often the metrics recorder folds recorded samples into its histograms.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The main thread runs the gateway's own tasks (accepting connections, reloading the policy,
/// refreshing key sets, the metrics' upkeep) on a single-threaded runtime; requests are served
/// by the workers (`serve::Workers`), one thread and runtime each.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(args) = args::Args::parse(std::env::args().skip(1)) else {
        return args::usage();
    };
    let metrics = match install_metrics() {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("cannot install the metrics recorder: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .fmt_fields(log::Fields)
        .with_timer(log::Rfc3339)
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();

    // The demo's folder lives as long as `main`: it is removed when the gateway stops.
    let mut demo_dir = None;
    let (path, token) = match args.policy {
        Some(path) => (path, None),
        None => match demo::folder().and_then(|dir| {
            let made = demo::demo(dir.path());
            demo_dir = Some(dir);
            made
        }) {
            Ok((path, token)) => (path, Some(token)),
            Err(err) => {
                eprintln!("cannot set up the demo: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    // The file is read once: the handle serves it and says what it sets for the server.
    let handle = match PolicyHandle::from_file(&path).await {
        Ok(handle) => handle,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let policy = handle.policy();
    let _watcher = handle.watch(Duration::from_secs(2));
    reload_on_sighup(handle.clone());

    let limits = serve::ConnectionLimits::new(&args.server, &policy.server());
    let listen = args
        .listen
        .or_else(|| policy.listen().map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let upstream = match args
        .upstream
        .or_else(|| policy.upstream().map(str::to_owned))
    {
        Some(url) => url,
        None => match echo::start_echo().await {
            Ok(addr) => format!("http://{addr}"),
            Err(err) => {
                eprintln!("cannot start the echo upstream: {err}");
                return ExitCode::FAILURE;
            }
        },
    };
    let upstream: Uri = match upstream.parse() {
        Ok(uri) if matches!(Uri::scheme_str(&uri), Some("http")) => uri,
        _ => {
            eprintln!("--upstream must be an http:// URL, not {upstream:?}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("a bound address");

    let upstream_timeout = args.upstream_timeout.unwrap_or(Duration::from_secs(30));
    let layer = handle.layer();
    let proxy_handle = handle.clone();
    let proxy_upstream = upstream.clone();
    let workers = match serve::Workers::start(
        limits.workers,
        move || {
            let proxy = proxy::Proxy {
                client: Client::builder(TokioExecutor::new()).build_http(),
                upstream: proxy_upstream.clone(),
                timeout: upstream_timeout,
                handle: proxy_handle.clone(),
                metrics: metrics.clone(),
            };
            layer.layer(proxy)
        },
        limits,
    ) {
        Ok(workers) => workers,
        Err(err) => {
            eprintln!("cannot start the workers: {err}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(token) = &token {
        demo::print_commands(token, &path, addr);
    }
    println!("upstream: {upstream}");
    println!("listening on http://{addr}");
    serve::serve(listener, workers, limits).await;
    drop(demo_dir);
    ExitCode::SUCCESS
}

/// The Prometheus recorder, installed before the first request so the layers' counters reach
/// it, with its upkeep running. The decision latency is a histogram (buckets add up across
/// replicas; the exporter's default, a summary, does not), from 5 µs to 100 ms.
fn install_metrics()
-> Result<metrics_exporter_prometheus::PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("portcullis_decision_seconds".into()),
            &DECISION_BUCKETS,
        )?
        .install_recorder()?;
    // The recorder keeps each latency sample until its upkeep folds them into the histogram:
    // without it, memory grows with every request for as long as nobody scrapes /metrics.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(metrics)
}

/// Reloads the policy file on SIGHUP, saying on standard error whether it took.
fn reload_on_sighup(handle: PolicyHandle) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match handle.reload().await {
                Ok(changed) => eprintln!("policy reloaded on SIGHUP (changed: {changed})"),
                Err(err) => eprintln!("policy refused on SIGHUP: {err}"),
            }
        }
    });
}
