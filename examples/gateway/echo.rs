//! The built-in echo upstream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::proxy::json_response;

/// The echo upstream: answers with what reached it, as JSON.
pub(crate) async fn start_echo() -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let mut headers = BTreeMap::new();
                    for (name, value) in request.headers() {
                        headers.insert(
                            name.as_str().to_owned(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        );
                    }
                    let path = request
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_owned();
                    let method = request.method().as_str().to_owned();
                    // Read the body through, so a streamed upload is consumed.
                    let size = request
                        .into_body()
                        .collect()
                        .await
                        .map_or(0, |b| b.to_bytes().len());
                    let body = json!({"method": method, "path": path, "headers": headers, "body_bytes": size});
                    Ok::<_, Infallible>(json_response(StatusCode::OK, body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
