//! The engine: plan (each limit that applies to a request, its tier and its key), charge
//! (each limit in order, through its [`Store`](super::store::Store)), refund (the earlier
//! charges, when a later limit denies or a store fails closed). Within the layer's `call` when
//! every store answers at once; in the response future otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Request;

use super::gcra::Decision;
use super::key::RequestView;
use super::layer::Config;
use super::memory::KeyParts;
use super::store::{Answer, OnStoreError, StoreError, StoreKey};
use crate::route::Route;

/// One limit's outcome for a request.
#[derive(Clone, Copy)]
pub(crate) struct LimitOutcome {
    pub(super) limit: usize,
    pub(super) tier: usize,
    pub(super) decision: Decision,
}

/// How many limits' outcomes a request keeps without a heap allocation.
const INLINE: usize = 8;

/// Each limit's outcome for one request, by the limit's index: inline for up to [`INLINE`]
/// limits, on the heap for more. Every limit is reported, however many there are.
#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "the inline variant is the point: no allocation for up to 8 limits"
)]
pub(crate) enum Outcomes {
    Inline([Option<LimitOutcome>; INLINE]),
    Heap(Box<[Option<LimitOutcome>]>),
}

impl Outcomes {
    /// Room for `limits` outcomes.
    pub(crate) fn for_limits(limits: usize) -> Self {
        if limits <= INLINE {
            Outcomes::Inline([None; INLINE])
        } else {
            Outcomes::Heap(vec![None; limits].into_boxed_slice())
        }
    }

    fn slots(&mut self) -> &mut [Option<LimitOutcome>] {
        match self {
            Outcomes::Inline(slots) => slots,
            Outcomes::Heap(slots) => slots,
        }
    }

    pub(super) fn set(&mut self, outcome: LimitOutcome) {
        if let Some(slot) = self.slots().get_mut(outcome.limit) {
            *slot = Some(outcome);
        }
    }

    /// Whether limit `i` has an outcome (was charged).
    pub(super) fn has(&self, i: usize) -> bool {
        let slots: &[Option<LimitOutcome>] = match self {
            Outcomes::Inline(slots) => slots,
            Outcomes::Heap(slots) => slots,
        };
        slots.get(i).is_some_and(Option::is_some)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &LimitOutcome> {
        let slots: &[Option<LimitOutcome>] = match self {
            Outcomes::Inline(slots) => slots,
            Outcomes::Heap(slots) => slots,
        };
        slots.iter().flatten()
    }
}

/// One limit that applies to a request, planned: its index, the tier of its quota, and the
/// request's key in its store.
pub(super) struct Planned {
    limit: usize,
    tier: usize,
    key: StoreKey,
}

/// What the checks of a request came to: each limit's outcome and the denying one, or `None`
/// when a store that fails closed could not answer.
pub(crate) type Checked = Option<(Outcomes, Option<LimitOutcome>)>;

/// A store that fails closed could not answer: the request is refused with 503.
pub(crate) struct Unavailable;

impl Config {
    /// The request's cost: the cost header's value when it is a positive integer, else 1.
    pub(super) fn request_cost<B>(&self, request: &Request<B>) -> u32 {
        self.cost
            .as_ref()
            .and_then(|name| request.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|c| *c > 0)
            .unwrap_or(1)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The matched route (for the layer on its own; the policy stack hands on its match).
    pub(crate) fn route<'r, B>(&'r self, request: &Request<B>) -> Option<&'r Route> {
        self.routes
            .as_ref()
            .and_then(|routes| routes.resolve_normalized(request))
            .map(|(_, route)| route)
    }

    /// Whether every limit's store answers at once (the engine then runs within `call`).
    pub(crate) fn answers_now(&self) -> bool {
        self.limits.iter().all(|limit| limit.store.answers_now())
    }

    /// The plan: each limit that applies to the request, in order, with its tier and its key.
    /// Lazy, so the in-memory path allocates nothing for it.
    fn plan<'a>(
        &'a self,
        view: &'a RequestView<'a>,
        route: Option<&'a Route>,
    ) -> impl Iterator<Item = Planned> + 'a {
        self.limits
            .iter()
            .enumerate()
            .filter(move |(_, limit)| limit.scope.applies(&limit.name, route))
            .map(move |(i, limit)| {
                let start = || limit.store.key();
                let key = limit
                    .key
                    .build(view, start().part(b"k"))
                    .or_else(|| self.anonymous.build(view, start().part(b"a")))
                    .unwrap_or_else(|| start().part(b"anonymous"))
                    .finish(&limit.name);
                Planned {
                    limit: i,
                    tier: limit.quota_for(view).0,
                    key,
                }
            })
    }

    /// Charges `planned` against its limit's store: the outcome, or the store's error.
    fn charge<'a>(
        &'a self,
        planned: &'a Planned,
        now: u64,
        cost: u32,
    ) -> Answer<'a, Result<LimitOutcome, StoreError>> {
        let limit = &self.limits[planned.limit];
        let quota = limit.quota_of_tier(planned.tier);
        let outcome = |decision| LimitOutcome {
            limit: planned.limit,
            tier: planned.tier,
            decision,
        };
        match limit.store.charge(&planned.key, quota, now, cost) {
            Answer::Now(result) => Answer::Now(result.map(outcome)),
            Answer::Later(future) => {
                Answer::Later(Box::pin(async move { future.await.map(outcome) }))
            }
        }
    }

    /// Takes back the charge of `planned` (a later limit denied). A refund that fails leaves
    /// the charge: it errs on the strict side.
    fn refund<'a>(&'a self, planned: &'a Planned, now: u64, cost: u32) -> Answer<'a, ()> {
        let limit = &self.limits[planned.limit];
        let quota = limit.quota_of_tier(planned.tier);
        match limit.store.refund(&planned.key, quota, now, cost) {
            Answer::Now(_) => Answer::Now(()),
            Answer::Later(future) => Answer::Later(Box::pin(async move {
                let _ = future.await;
            })),
        }
    }

    /// A store could not answer: reported, counted, and whether the limit lets the request
    /// through.
    fn store_failed(&self, planned: &Planned, error: &StoreError) -> bool {
        let limit = &self.limits[planned.limit];
        let fail_open = limit.store.on_error() == OnStoreError::FailOpen;
        tracing::warn!(target: "portcullis::rate_limit", limit = %limit.name, error = %error,
            fail_open, "rate-limit store unavailable");
        #[cfg(feature = "metrics")]
        limit
            .counters
            .count(&limit.name, crate::telemetry::LimitResult::StoreError);
        fail_open
    }

    /// Runs the engine within the layer's `call`, every store answering at once: charges each
    /// limit in order and, on a denial, refunds the earlier charges. Returns the denying
    /// outcome. Does not allocate for known keys (with up to [`INLINE`] limits).
    pub(crate) fn run_now<B>(
        &self,
        request: &Request<B>,
        route: Option<&Route>,
        outcomes: &mut Outcomes,
    ) -> Result<Option<LimitOutcome>, Unavailable> {
        let view = RequestView::of(request, route.map(Route::pattern));
        let cost = self.request_cost(request);
        let now = self.now();
        for planned in self.plan(&view, route) {
            let Answer::Now(charged) = self.charge(&planned, now, cost) else {
                // Not reached: `answers_now` said every store answers at once.
                continue;
            };
            let outcome = match charged {
                Ok(outcome) => outcome,
                Err(error) if self.store_failed(&planned, &error) => continue,
                Err(_) => {
                    self.refund_now(&view, route, outcomes, now, cost);
                    return Err(Unavailable);
                }
            };
            if !outcome.decision.allowed {
                // Every limit charged so far admitted: take those charges back. Keys are
                // planned again (a hash, no allocation) on this, the denial path.
                self.refund_now(&view, route, outcomes, now, cost);
                outcomes.set(outcome);
                return Ok(Some(outcome));
            }
            outcomes.set(outcome);
        }
        Ok(None)
    }

    /// Refunds the limits charged so far (those with an outcome), each store answering at
    /// once.
    fn refund_now(
        &self,
        view: &RequestView<'_>,
        route: Option<&Route>,
        charged: &Outcomes,
        now: u64,
        cost: u32,
    ) {
        for planned in self.plan(view, route) {
            if charged.has(planned.limit) {
                let _ = self.refund(&planned, now, cost);
            }
        }
    }

    /// Runs the engine in a future, for limits whose stores answer after a round trip: the
    /// plan is made now (the future owns it), then each limit is charged in order and, on a
    /// denial or a store that fails closed, the earlier charges are refunded.
    pub(crate) fn run_later<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        route: Option<&Route>,
    ) -> Pin<Box<dyn Future<Output = Checked> + Send>> {
        let view = RequestView::of(request, route.map(Route::pattern));
        let cost = self.request_cost(request);
        let now = self.now();
        let plan: Vec<Planned> = self.plan(&view, route).collect();
        let config = Arc::clone(self);
        Box::pin(async move {
            let mut outcomes = Outcomes::for_limits(config.limits.len());
            let mut charged: Vec<&Planned> = Vec::new();
            for planned in &plan {
                let outcome = match config.charge(planned, now, cost).get().await {
                    Ok(outcome) => outcome,
                    Err(error) if config.store_failed(planned, &error) => continue,
                    Err(_) => {
                        config.refund_later(&charged, now, cost).await;
                        return None;
                    }
                };
                outcomes.set(outcome);
                if !outcome.decision.allowed {
                    config.refund_later(&charged, now, cost).await;
                    return Some((outcomes, Some(outcome)));
                }
                charged.push(planned);
            }
            Some((outcomes, None))
        })
    }

    async fn refund_later(&self, charged: &[&Planned], now: u64, cost: u32) {
        for planned in charged {
            self.refund(planned, now, cost).get().await;
        }
    }
}
