//! Accepting and serving connections, within their limits, until a signal stops it.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use portcullis::policy::ServerSettings;
use portcullis::rate_limit::PeerAddr;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tower::{Service, ServiceExt};

use super::Body;
use super::proxy::{ClientBody, ClientBodyError, ForwardedPeer, admit, json_response};

/// The first and the longest wait before accepting again after an accept error.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How the gateway treats its connections: flags, else the policy's `[server]`, else defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) keep_underscore_headers: bool,
    /// Worker threads.
    pub(crate) workers: usize,
}

impl ConnectionLimits {
    pub(crate) fn new(flags: &ServerSettings, policy: &ServerSettings) -> Self {
        let to_usize = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            header_read_timeout: flags
                .header_read_timeout
                .or(policy.header_read_timeout)
                .unwrap_or(Duration::from_secs(10)),
            idle_timeout: flags
                .idle_timeout
                .or(policy.idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            max_connections: flags
                .max_connections
                .or(policy.max_connections)
                .map_or_else(default_max_connections, to_usize),
            // hyper reads at least 8 KiB at a time: a smaller cap could not be kept.
            max_header_bytes: flags
                .max_header_bytes
                .or(policy.max_header_bytes)
                .map_or(64 * 1024, to_usize)
                .max(8 * 1024),
            keep_underscore_headers: flags
                .keep_underscore_headers
                .or(policy.keep_underscore_headers)
                .unwrap_or(false),
            workers: flags
                .workers
                .or(policy.workers)
                .map_or_else(default_workers, to_usize),
        }
    }
}

/// One worker per core this process may run on (`taskset` and cgroup CPU limits count), or one
/// where that cannot be read.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Half the process's open-file limit less a reserve (each connection may hold one to the
/// upstream too), between 16 and 10 000; 1 024 where the limit cannot be read.
pub(crate) fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    soft.map_or(1024, |n| (n.saturating_sub(64) / 2).clamp(16, 10_000))
}

/// A connection that fails with `TimedOut` once no byte has moved either way for `limit`:
/// a stalled upload, or a client that stops reading its response.
pub(crate) struct IdleTimeout {
    io: tokio::net::TcpStream,
    limit: Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    pub(crate) fn new(io: tokio::net::TcpStream, limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            io,
            limit,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    /// After a poll of the stream: notes progress, or while it is pending, fails once the
    /// limit has passed since the last progress. The timer is reset only when it fires early.
    fn check<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        match poll {
            Poll::Ready(Ok(value)) => {
                if progressed(&value) {
                    self.last = tokio::time::Instant::now();
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => loop {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = self.last + self.limit;
                if deadline <= tokio::time::Instant::now() {
                    return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                }
                self.timer.as_mut().reset(deadline);
            },
        }
    }
}

impl tokio::io::AsyncRead for IdleTimeout {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.io).poll_read(cx, buf);
        let after = buf.filled().len();
        this.check(cx, poll, |_| after > before)
    }
}

impl tokio::io::AsyncWrite for IdleTimeout {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The service a worker serves its connections with: the policy's stack around the proxy.
pub(crate) trait App:
    Service<Request<ClientBody>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: Service<Request<ClientBody>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// A connection accepted, with the place it holds under the connection cap, on its way to a
/// worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// The worker threads, each running its own single-threaded runtime: the connections handed to
/// a worker are served on it from start to end, and so is every request on them, with no other
/// thread to wake or steal from. A request's work (read, decide, forward, answer) stays on one
/// core and in its caches.
pub(crate) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Accepted>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers; each builds its own service with `make_app` (its own upstream
    /// client, whose pooled connections belong to that worker's runtime).
    pub(crate) fn start<F, S>(
        count: usize,
        make_app: F,
        limits: ConnectionLimits,
    ) -> std::io::Result<Self>
    where
        F: Fn() -> S + Send + Sync + 'static,
        S: App,
    {
        let make_app = Arc::new(make_app);
        let mut workers = Workers {
            queues: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count.max(1) {
            let (queue, accepted) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let make_app = Arc::clone(&make_app);
            let thread = std::thread::Builder::new()
                .name(format!("gw-worker-{index}"))
                .spawn(move || runtime.block_on(work(make_app(), accepted, limits)))?;
            workers.queues.push(queue);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Lets the workers finish what they serve (10 s at most each) and waits for them.
    async fn stop(self) {
        drop(self.queues);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// One worker: serves each connection it is handed until the acceptor stops, then lets the
/// connections in flight finish (10 s at most).
async fn work(
    app: impl App,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    limits: ConnectionLimits,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    while let Some(Accepted {
        stream,
        peer,
        permit,
    }) = accepted.recv().await
    {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let connection = graceful.watch(connection(stream, peer, app.clone(), limits));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// One client connection, served with `app`.
fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: impl App,
    limits: ConnectionLimits,
) -> impl hyper_util::server::graceful::GracefulConnection {
    let keep_underscore_headers = limits.keep_underscore_headers;
    let forwarded_peer = ForwardedPeer::new(peer.ip()).map(Arc::new);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        if let Some(forwarded_peer) = &forwarded_peer {
            request.extensions_mut().insert(forwarded_peer.clone());
        }
        let admitted = admit(&mut request, keep_underscore_headers);
        let app = app.clone();
        async move {
            if let Err(reason) = admitted {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "bad_request", "reason": reason}),
                ));
            }
            let request = request
                .map(|body| body.map_err(ClientBodyError as fn(hyper::Error) -> ClientBodyError));
            app.oneshot(request).await
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(
            TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout)),
            service,
        )
}

/// Accepts connections on `listener` and hands each to a worker in turn, within `limits`, until
/// SIGINT or SIGTERM; then stops accepting and lets in-flight requests finish (10 s at most).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    workers: Workers,
    limits: ConnectionLimits,
) {
    let mut shutdown = pin!(shutdown_signal());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut next = 0;
    loop {
        // A free place first: past the cap, connections wait in the listen queue.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(error) => {
                // Out of descriptors (EMFILE) and the like: retrying at once would spin.
                tracing::warn!(target: "gateway", %error, retry_in_ms = backoff.as_millis() as u64, "cannot accept a connection");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        // Handed over as a plain socket: the worker registers it with its own runtime.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let _ = workers.queues[next].send(Accepted {
            stream,
            peer,
            permit,
        });
        next = (next + 1) % workers.queues.len();
    }
    drop(listener);
    workers.stop().await;
}
