//! A JWKS and discovery server on 127.0.0.1 that a test controls: it rotates keys, goes down,
//! hangs, answers garbage or a huge body, and counts what it is asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the server answers key-set requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Serve,
    /// Connections are closed at once.
    Down,
    /// The answer comes after this long.
    Slow(Duration),
    Garbage,
    /// A body of this many bytes.
    Huge(usize),
    Status(u16),
}

struct State {
    jwks: String,
    version: u64,
    mode: Mode,
    cache_control: Option<String>,
    discovery_issuer: Option<String>,
}

#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    fetches: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(jwks: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                jwks: jwks.to_string(),
                version: 1,
                mode: Mode::Serve,
                cache_control: None,
                discovery_issuer: None,
            })),
            fetches: Arc::default(),
            not_modified: Arc::default(),
        };
        let this = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if this.state.lock().unwrap().mode == Mode::Down {
                    drop(stream);
                    continue;
                }
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set_jwks(&self, jwks: Value) {
        let mut state = self.state.lock().unwrap();
        state.jwks = jwks.to_string();
        state.version += 1;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn set_cache_control(&self, value: &str) {
        self.state.lock().unwrap().cache_control = Some(value.to_owned());
    }

    pub fn set_discovery_issuer(&self, issuer: &str) {
        self.state.lock().unwrap().discovery_issuer = Some(issuer.to_owned());
    }

    /// Requests for the key set, answered or not.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Conditional requests answered 304.
    pub fn not_modified(&self) -> usize {
        self.not_modified.load(Ordering::SeqCst)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut response = self.answer_inner(req).await;
        // No keep-alive: a server set `Down` must not keep serving through a pooled connection.
        response
            .headers_mut()
            .insert("connection", "close".parse().unwrap());
        response
    }

    async fn answer_inner(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        if path.starts_with("/.well-known/") {
            let issuer = self
                .state
                .lock()
                .unwrap()
                .discovery_issuer
                .clone()
                .unwrap_or_else(|| self.issuer());
            let doc = json!({"issuer": issuer, "jwks_uri": self.jwks_url(), "id_token_signing_alg_values_supported": ["RS256"]});
            return Response::new(Full::new(Bytes::from(doc.to_string())));
        }
        if path != "/jwks.json" {
            return status(404);
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (mode, jwks, version, cache_control) = {
            let state = self.state.lock().unwrap();
            (
                state.mode.clone(),
                state.jwks.clone(),
                state.version,
                state.cache_control.clone(),
            )
        };
        let etag = format!("\"v{version}\"");
        match mode {
            Mode::Slow(delay) => tokio::time::sleep(delay).await,
            Mode::Garbage => {
                return Response::new(Full::new(Bytes::from_static(
                    b"<html>502 bad gateway</html>",
                )));
            }
            Mode::Huge(len) => {
                let mut body = b"{\"keys\":[".to_vec();
                body.resize(len, b' ');
                return Response::new(Full::new(Bytes::from(body)));
            }
            Mode::Status(code) => return status(code),
            Mode::Serve | Mode::Down => {}
        }
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            self.not_modified.fetch_add(1, Ordering::SeqCst);
            let mut response = status(304);
            response.headers_mut().insert("etag", etag.parse().unwrap());
            if let Some(cc) = cache_control {
                response
                    .headers_mut()
                    .insert("cache-control", cc.parse().unwrap());
            }
            return response;
        }
        let mut response = Response::new(Full::new(Bytes::from(jwks)));
        response.headers_mut().insert("etag", etag.parse().unwrap());
        response
            .headers_mut()
            .insert("content-type", "application/jwk-set+json".parse().unwrap());
        if let Some(cc) = cache_control {
            response
                .headers_mut()
                .insert("cache-control", cc.parse().unwrap());
        }
        response
    }
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(code).unwrap();
    response
}
