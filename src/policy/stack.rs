//! The policy stack as one service: the decision core run once per request over the canonical
//! request, owning what it decided as a local.
//!
//! [`PolicyService`] runs the stages in order — the propagate layer's request side (request id,
//! trace context), the one route match, authentication, authorization, the claim headers and
//! the rate limits — each a plain function of its layer over the request head, and keeps the
//! identity, the route and when it decided in a local [`Decided`](crate::propagate::Decided)
//! for the audit event. It needs no record in the request's extensions and searches the route
//! table once. The layers stay usable alone and behave the same; this service is what
//! [`PolicyLayer`](super::PolicyLayer) builds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::claims::MapClaimsLayer;
use crate::decision::Principal;
use crate::jwt::{Identity, JwtError};
use crate::propagate::{Decided, Pending};
use crate::reject::{DefaultRejection, OnRejection};
use crate::route::Routes;

/// What the stages run with, shared by every clone of the service.
pub(crate) struct Stages<R> {
    pub(crate) propagate: Arc<crate::propagate::Config>,
    /// The route table, matched once per request.
    pub(crate) routes: Routes,
    pub(crate) jwt: Arc<crate::jwt::Config<R>>,
    pub(crate) authorize: (Arc<crate::authz::Config>, Arc<R>),
    pub(crate) mapping: MapClaimsLayer,
    pub(crate) rate_limit: (Arc<crate::rate_limit::Config>, Arc<R>),
}

/// The service [`PolicyLayer`](super::PolicyLayer) wraps around an inner service: the whole
/// stack, run as one decision per request.
pub struct PolicyService<S, R = DefaultRejection> {
    inner: S,
    stages: Arc<Stages<R>>,
}

impl<S, R> PolicyService<S, R> {
    pub(crate) fn new(inner: S, stages: Arc<Stages<R>>) -> Self {
        Self { inner, stages }
    }
}

impl<S: Clone, R> Clone for PolicyService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stages: Arc::clone(&self.stages),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for PolicyService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What the core decided about one request, owned by its future.
#[derive(Default)]
struct Decision {
    identity: Option<Arc<Identity>>,
    route: Option<Arc<str>>,
}

impl<R> Stages<R> {
    /// Authentication, authorization and the claim headers, in order, on the request head:
    /// `Ok` with the matched route when the request goes on to the limits, else the refusal.
    /// The identity goes into the request's extensions (for the service and the limits' claim
    /// keys) and into `decision`.
    fn authorize<'a, B, ResBody>(
        &'a self,
        request: &mut Request<B>,
        decision: &mut Decision,
    ) -> Result<Option<&'a crate::route::Route>, Response<ResBody>>
    where
        R: OnRejection<ResBody>,
        ResBody: Default,
    {
        let jwt = &*self.jwt;
        let (route, preflight) = match self.routes.resolve_request(request) {
            Ok(matched) => matched,
            Err(error) => {
                let error = JwtError::BadPath(error);
                return Err(jwt.refuse(&jwt.rejection, request.headers(), error));
            }
        };
        decision.route = route.map(|(_, route)| Arc::clone(route.pattern_text()));
        let mode = jwt.mode(Some((route.map(|(_, route)| route), preflight)));
        let identity = match jwt.identify(mode, request.headers()) {
            Ok(identity) => identity,
            Err(error) => return Err(jwt.refuse(&jwt.rejection, request.headers(), error)),
        };
        decision.identity = identity.clone();
        let (authorize, hook) = &self.authorize;
        if let Err(refused) = authorize.check(route, preflight, identity.as_ref()) {
            return Err(authorize.refuse(&**hook, request.headers(), refused));
        }
        self.mapping
            .apply(request.headers_mut(), identity.as_deref());
        if let Some(identity) = identity {
            request.extensions_mut().insert(identity);
        }
        Ok(route.map(|(_, route)| route))
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for PolicyService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let stages = &*self.stages;
        let (mut pending, span) = crate::propagate::begin(&stages.propagate, &mut request);
        let mut decision = Decision::default();
        let (config, hook) = &stages.rate_limit;
        let inner = {
            let _entered = span.enter();
            match stages.authorize(&mut request, &mut decision) {
                Err(refusal) => {
                    crate::rate_limit::ResponseFuture::done(Arc::clone(config), refusal)
                }
                Ok(route) => config.limit(hook, &mut self.inner, request, route),
            }
        };
        // The stages that decide within this call have decided (a shared store decides later,
        // in the future, which says when).
        pending.called = crate::clock::monotonic_nanos();
        ResponseFuture {
            inner,
            state: Some((pending, decision)),
            span,
        }
    }
}

pin_project! {
    /// The response future of [`PolicyService`]: the limits' checks when a store answers
    /// after a round trip, the inner service's response with the request id and the
    /// `RateLimit` fields (or the refusal), and the audit event.
    pub struct ResponseFuture<S, ReqBody, ResBody, R = DefaultRejection>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        inner: crate::rate_limit::ResponseFuture<S, ReqBody, ResBody, R>,
        state: Option<(Pending, Decision)>,
        span: tracing::Span,
    }
}

impl<S, ReqBody, ResBody, R> fmt::Debug for ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = {
            let _entered = this.span.enter();
            match this.inner.as_mut().poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            }
        };
        let Some((pending, decision)) = this.state.take() else {
            return Poll::Ready(result);
        };
        let decided = Decided {
            principal: decision
                .identity
                .as_deref()
                .map(|identity| identity as &dyn Principal),
            route: decision.route.as_deref(),
            at: this.inner.as_ref().get_ref().decided_at(),
        };
        Poll::Ready(pending.finish(result, decided, this.span))
    }
}
