//! The HTTP(S) client for key sets and discovery documents: one GET with a timeout, a body
//! cap and conditional headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::cache_control::max_age;
use super::{JwksError, Options};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP(S) client for key sets: rustls with ring and the webpki roots, HTTP/1.
#[derive(Clone)]
pub(super) struct Fetcher {
    client: HttpsClient,
    timeout: Duration,
    max_body: usize,
}

/// A fetched document, or `Not Modified`.
pub(super) enum Fetched {
    NotModified {
        max_age: Option<Duration>,
    },
    Body {
        body: Bytes,
        etag: Option<HeaderValue>,
        last_modified: Option<HeaderValue>,
        max_age: Option<Duration>,
    },
}

impl Fetcher {
    pub(super) fn new(options: &Options) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .expect("ring supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            // One fetch every few minutes gains nothing from a pool; a pooled connection would
            // also hide a server that stopped accepting new ones.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            timeout: options.timeout,
            max_body: options.max_body,
        }
    }

    pub(super) async fn get(
        &self,
        url: &Uri,
        etag: Option<&HeaderValue>,
        last_modified: Option<&HeaderValue>,
    ) -> Result<Fetched, JwksError> {
        let name = url.to_string();
        tokio::time::timeout(self.timeout, self.get_inner(url, etag, last_modified))
            .await
            .unwrap_or(Err(JwksError::Timeout(name)))
    }

    async fn get_inner(
        &self,
        url: &Uri,
        etag: Option<&HeaderValue>,
        last_modified: Option<&HeaderValue>,
    ) -> Result<Fetched, JwksError> {
        let name = || url.to_string();
        let mut request =
            Request::get(url.clone()).header(ACCEPT, "application/jwk-set+json, application/json");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(last_modified) = last_modified {
            request = request.header(IF_MODIFIED_SINCE, last_modified);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| JwksError::InvalidUrl(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| JwksError::Connect {
                url: name(),
                reason: error_chain(&e),
            })?;
        let max_age = max_age(response.headers().get(CACHE_CONTROL));
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified { max_age }),
            StatusCode::OK => {}
            status => {
                return Err(JwksError::Status {
                    url: name(),
                    status: status.as_u16(),
                });
            }
        }
        let too_large = || JwksError::TooLarge {
            url: name(),
            limit: self.max_body,
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_body as u64) {
            return Err(too_large());
        }
        let etag = response.headers().get(ETAG).cloned();
        let last_modified = response.headers().get(LAST_MODIFIED).cloned();
        let body = Limited::new(response.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large()
                } else {
                    JwksError::Connect {
                        url: name(),
                        reason: e.to_string(),
                    }
                }
            })?
            .to_bytes();
        Ok(Fetched::Body {
            body,
            etag,
            last_modified,
            max_age,
        })
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
