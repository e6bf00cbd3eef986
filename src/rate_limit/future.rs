//! The response future: the checks (when a store answers after a round trip), then the inner
//! service's response with the `RateLimit` fields, or the refusal.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::engine::{Checked, Outcomes};
use super::error::{RATE_LIMIT_STORE_UNAVAILABLE, RateLimitUnavailable};
use super::headers::add_headers;
use super::layer::Config;
use crate::decision::Recorder;
use crate::reject::{DefaultRejection, OnRejection, Refusal, respond};

pin_project! {
    /// The response future of [`RateLimit`]: the checks (only with a shared store), then the
    /// inner service's response with the rate-limit headers added, or the 429 (or 503).
    pub struct ResponseFuture<S, ReqBody, ResBody, R = DefaultRejection>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, ResBody, R>,
        config: Arc<Config>,
        outcomes: Outcomes,
        // When the checks of a shared store let the request through (monotonic nanoseconds).
        decided: Option<u64>,
    }
}

impl<S, ReqBody, ResBody, R> ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>>,
{
    /// A refusal (or a response) decided before the limits: ready at once, no headers.
    #[cfg(feature = "policy")]
    pub(crate) fn done(config: Arc<Config>, response: Response<ResBody>) -> Self {
        Self {
            state: State::Done {
                response: Some(response),
            },
            config,
            outcomes: Outcomes::for_limits(0),
            decided: None,
        }
    }

    /// Decided within `call`: the inner service's future, or the limit's refusal, with the
    /// limits' outcomes for the headers.
    pub(crate) fn decided(
        config: Arc<Config>,
        outcomes: Outcomes,
        next: Result<S::Future, Response<ResBody>>,
    ) -> Self {
        let state = match next {
            Ok(future) => State::Inner { future },
            Err(response) => State::Done {
                response: Some(response),
            },
        };
        Self {
            state,
            config,
            outcomes,
            decided: None,
        }
    }

    /// The checks of a store that answers after a round trip, then `inner` (the instance
    /// that was polled ready) with `request`, or the refusal.
    pub(crate) fn checking(
        config: Arc<Config>,
        check: Pin<Box<dyn Future<Output = Checked> + Send>>,
        request: Request<ReqBody>,
        inner: S,
        rejection: Arc<R>,
    ) -> Self {
        Self {
            state: State::Checking {
                check,
                request: Some(request),
                inner: Some(inner),
                rejection,
            },
            config,
            outcomes: Outcomes::for_limits(0),
            decided: None,
        }
    }

    /// When checks that ran in this future let the request through (monotonic nanoseconds).
    #[cfg(feature = "policy")]
    pub(crate) fn decided_at(&self) -> Option<u64> {
        self.decided
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, ResBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Checking {
            check: Pin<Box<dyn Future<Output = Checked> + Send>>,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
            rejection: Arc<R>,
        },
        Inner { #[pin] future: S::Future },
        Done { response: Option<Response<ResBody>> },
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
        loop {
            let mut response = match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    request,
                    inner,
                    rejection,
                } => {
                    let Poll::Ready(checked) = check.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    let headers = request.as_ref().expect("polled after completion").headers();
                    let refused = match checked {
                        None => {
                            let refusal = Refusal::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                RATE_LIMIT_STORE_UNAVAILABLE,
                            )
                            .grpc(headers);
                            Some(respond(&**rejection, refusal, RateLimitUnavailable))
                        }
                        Some((outcomes, denied)) => {
                            #[cfg(feature = "metrics")]
                            this.config.count(&outcomes);
                            *this.outcomes = outcomes;
                            this.config.rejection(&**rejection, headers, denied)
                        }
                    };
                    let next = match refused {
                        Some(response) => State::Done {
                            response: Some(response),
                        },
                        None => {
                            let (Some(mut inner), Some(request)) = (inner.take(), request.take())
                            else {
                                panic!("polled after completion");
                            };
                            *this.decided = Some(crate::clock::monotonic_nanos());
                            if let Some(recorder) = Recorder::of(&request) {
                                recorder.decided_now();
                            }
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                    };
                    this.state.set(next);
                    continue;
                }
                StateProj::Inner { future } => match future.poll(cx) {
                    Poll::Ready(Ok(response)) => response,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                },
                StateProj::Done { response } => response.take().expect("polled after completion"),
            };
            if this.config.headers {
                add_headers(&this.config.limits, response.headers_mut(), this.outcomes);
            }
            return Poll::Ready(Ok(response));
        }
    }
}
