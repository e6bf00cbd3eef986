use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::JwtError;
use super::future::ResponseFuture;
use super::layer::{Config, authenticate};
use crate::decision::{Principal, Recorder};
use crate::reject::{OnRejection, Refusal, respond};
use crate::route::Auth;

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

impl<S, R> JwtAuth<S, R> {
    fn reject<B: Default>(&self, request: &http::HeaderMap, error: JwtError) -> Response<B>
    where
        R: OnRejection<B>,
    {
        let (status, challenge) = error.response_kind();
        let refusal = Refusal::new(status, error.reason())
            .challenge(self.config.challenges.get(challenge))
            .grpc(request);
        respond(&self.config.rejection, refusal, error)
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
        let mut mode = if config.optional {
            Auth::Optional
        } else {
            Auth::Required
        };
        let mut pattern = None;
        if let Some(routes) = &config.routes {
            match routes
                .resolve_request(&mut req)
                .map(|(route, preflight)| (route.map(|(_, route)| route), preflight))
            {
                Err(error) => {
                    return ResponseFuture::rejected(
                        self.reject(req.headers(), JwtError::BadPath(error)),
                    );
                }
                Ok((route, true)) => {
                    pattern = route.map(|r| r.pattern_text());
                    mode = Auth::None;
                }
                Ok((Some(route), false)) => {
                    pattern = Some(route.pattern_text());
                    mode = route.auth_mode();
                }
                Ok((None, false)) => mode = Auth::Required,
            }
        }
        let recorder = Recorder::of(&req);
        if let (Some(recorder), Some(pattern)) = (recorder, pattern) {
            recorder.route(pattern);
        }
        if mode == Auth::None {
            if let Some(recorder) = recorder {
                recorder.identity(None);
            }
            return ResponseFuture::inner(self.inner.call(req));
        }
        let optional = mode == Auth::Optional;
        match authenticate(
            &config.extractor,
            &config.validator,
            optional,
            req.headers(),
        ) {
            Ok(identity) => {
                if let Some(recorder) = recorder {
                    recorder.identity(identity.clone().map(|i| i as Arc<dyn Principal>));
                }
                if let Some(identity) = identity {
                    req.extensions_mut().insert(identity);
                }
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(error) => ResponseFuture::rejected(self.reject(req.headers(), error)),
        }
    }
}
