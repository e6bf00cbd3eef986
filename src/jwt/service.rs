use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::JwtError;
use super::future::ResponseFuture;
use super::layer::Config;
use crate::decision::{Principal, Recorder};
use crate::reject::OnRejection;

/// The service [`JwtAuthLayer`](super::JwtAuthLayer) wraps around an inner service.
pub struct JwtAuth<S, R = crate::reject::DefaultRejection> {
    inner: S,
    config: Arc<Config<R>>,
}

impl<S, R> JwtAuth<S, R> {
    pub(crate) fn new(inner: S, config: Arc<Config<R>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, R> Clone for JwtAuth<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for JwtAuth<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("validator", &self.config.validator)
            .field("optional", &self.config.optional)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let matched = match &config.routes {
            Some(routes) => match routes.resolve_request(&mut req) {
                Ok((route, preflight)) => Some((route.map(|(_, route)| route), preflight)),
                Err(error) => {
                    return ResponseFuture::rejected(config.refuse(
                        &config.rejection,
                        req.headers(),
                        JwtError::BadPath(error),
                    ));
                }
            },
            None => None,
        };
        let recorder = Recorder::of(&req);
        if let (Some(recorder), Some((Some(route), _))) = (recorder, matched) {
            recorder.route(route.pattern_text());
        }
        match config.identify(config.mode(matched), req.headers()) {
            Ok(identity) => {
                if let Some(recorder) = recorder {
                    recorder.identity(identity.clone().map(|i| i as Arc<dyn Principal>));
                }
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(error) => {
                ResponseFuture::rejected(config.refuse(&config.rejection, req.headers(), error))
            }
        }
    }
}
