//! An inner service that records what reached it (headers and `RequestContext`), and a helper
//! to send one request through a service on a fresh runtime.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response};
use portcullis::propagate::RequestContext;
use tower::{Service, ServiceExt, service_fn};

/// What reached the inner service, request by request.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<Reached>>>);

pub type Reached = (HeaderMap, Option<RequestContext>);

impl Seen {
    pub fn last(&self) -> Reached {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

pub type Inner = tower::util::BoxCloneService<Request<String>, Response<String>, Infallible>;

/// Records each request in `seen` and answers 200 with `x-upstream: 1`.
pub fn echo(seen: &Seen) -> Inner {
    let seen = seen.clone();
    tower::util::BoxCloneService::new(service_fn(move |req: Request<String>| {
        let seen = seen.clone();
        async move {
            seen.0.lock().unwrap().push((
                req.headers().clone(),
                req.extensions().get::<RequestContext>().cloned(),
            ));
            let mut response = Response::new(String::new());
            response
                .headers_mut()
                .insert("x-upstream", "1".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    }))
}

/// Sends one request on a fresh current-thread runtime.
pub fn send<S>(service: &mut S, request: Request<String>) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async { service.ready().await.unwrap().call(request).await.unwrap() })
}
