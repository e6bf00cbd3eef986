//! What the deciding layers tell the [`Propagate`](super::Propagate) layer around them, without
//! a heap allocation per request.
//!
//! The propagate layer needs the identity and the route for its audit event, but the request
//! (and its extensions) moves into the inner service and does not come back. So, while the
//! propagate layer runs its inner service's `call`, and each time it polls the inner future, it
//! installs the request's [`Decisions`] in a thread-local slot; a layer inside that decides
//! records there and the propagate layer takes the record back when the call or poll returns.
//! The first record of each kind stands (see [`record_identity`]). Every layer of this crate
//! decides within those calls and polls — synchronously in `call`, or in its future (a Redis
//! round trip) — so the record is complete. A layer between them that moves the work to another
//! task (`tower::buffer`) hides it: the audit event then lacks the subject and route; the
//! decision is not lost, only its naming.

use std::cell::RefCell;
use std::sync::Arc;

use crate::authz::Route;
use crate::jwt::Identity;

/// The record of one request's decisions.
#[derive(Default)]
pub(crate) struct Decisions {
    /// Whether an authenticating layer has decided (with or without an identity).
    pub(crate) authenticated: bool,
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) route: Option<Arc<str>>,
    /// Monotonic nanoseconds when a layer that decides after its `call` returned decided.
    pub(crate) decided: Option<u64>,
    /// The route match of the policy stack's shared table (see `Routes::shared`).
    pub(crate) matched: Option<RouteMatch>,
}

/// Which route of which table a request matched.
pub(crate) struct RouteMatch {
    table: Arc<[Route]>,
    index: Option<usize>,
    preflight: bool,
}

thread_local! {
    static CURRENT: RefCell<Option<Decisions>> = const { RefCell::new(None) };
}

/// The slot installed for the duration of one call or poll; [`exit`](Self::exit) takes the
/// record back. Dropped without `exit` (a panic unwinding), it still restores the outer slot.
pub(crate) struct Scope {
    previous: Option<Option<Decisions>>,
}

impl Scope {
    /// Installs `decisions` as the current record, keeping whichever was current (a propagate
    /// layer nested in another).
    pub(crate) fn enter(decisions: Decisions) -> Self {
        let previous = CURRENT
            .try_with(|slot| slot.try_borrow_mut().ok().map(|mut s| s.replace(decisions)))
            .ok()
            .flatten();
        Self { previous }
    }

    /// Takes the record back and reinstalls the outer one.
    pub(crate) fn exit(mut self) -> Decisions {
        let Some(previous) = self.previous.take() else {
            return Decisions::default();
        };
        CURRENT
            .try_with(|slot| {
                slot.try_borrow_mut()
                    .ok()
                    .and_then(|mut s| std::mem::replace(&mut *s, previous))
            })
            .ok()
            .flatten()
            .unwrap_or_default()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = CURRENT.try_with(|slot| {
                if let Ok(mut s) = slot.try_borrow_mut() {
                    *s = previous;
                }
            });
        }
    }
}

/// Runs `f` on the current record, if a propagate layer is around.
fn with_current(f: impl FnOnce(&mut Decisions)) {
    let _ = CURRENT.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut()
            && let Some(decisions) = slot.as_mut()
        {
            f(decisions);
        }
    });
}

/// Records how the request was authenticated (the verified identity, or none on a public or
/// optional route) for the audit event. The first record stands: the request's own
/// authenticating layer decides before its service runs, and a request the service sends
/// through another authenticating layer within the same call or poll (a sub-request) must not
/// rename it.
pub(crate) fn record_identity(identity: Option<&Arc<Identity>>) {
    with_current(|d| {
        if !d.authenticated {
            d.authenticated = true;
            d.identity = identity.cloned();
        }
    });
}

/// Records the matched route (before a decision, so that a rejection's audit event names the
/// route too). The first layer to match one names it.
pub(crate) fn record_route(route: &Arc<str>) {
    with_current(|d| {
        if d.route.is_none() {
            d.route = Some(Arc::clone(route));
        }
    });
}

/// Marks the request decided now, for a layer that decides after its `call` returned (a Redis
/// round trip): otherwise the propagate layer takes the time its inner `call` returned, by which
/// time every synchronous layer has decided.
pub(crate) fn mark_decided() {
    with_current(|d| {
        d.decided.get_or_insert_with(crate::clock::monotonic_nanos);
    });
}

/// Records the match of a shared route table.
pub(crate) fn record_match(table: &Arc<[Route]>, index: Option<usize>, preflight: bool) {
    with_current(|d| {
        d.matched = Some(RouteMatch {
            table: Arc::clone(table),
            index,
            preflight,
        });
    });
}

/// The recorded match in `table`: the route's index (if one matched) and whether the request
/// is a CORS preflight; `None` when none was recorded for this table.
pub(crate) fn recorded_match(table: &Arc<[Route]>) -> Option<(Option<usize>, bool)> {
    let mut found = None;
    with_current(|d| {
        if let Some(m) = &d.matched
            && Arc::ptr_eq(&m.table, table)
        {
            found = Some((m.index, m.preflight));
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_reach_the_innermost_scope_and_nesting_restores() {
        // No scope: nothing recorded, nothing panics.
        record_route(&Arc::from("/a"));
        let outer = Scope::enter(Decisions::default());
        record_route(&Arc::from("/outer"));
        let inner = Scope::enter(Decisions::default());
        record_route(&Arc::from("/inner"));
        mark_decided();
        let inner = inner.exit();
        assert_eq!(inner.route.as_deref(), Some("/inner"));
        assert!(inner.decided.is_some());
        record_route(&Arc::from("/ignored: the outer has one"));
        mark_decided();
        let first = CURRENT.with_borrow(|slot| slot.as_ref().unwrap().decided);
        mark_decided();
        let outer = outer.exit();
        assert_eq!(outer.route.as_deref(), Some("/outer"));
        assert_eq!(outer.decided, first, "the first mark stands");
        CURRENT.with_borrow(|slot| assert!(slot.is_none()));
    }

    #[test]
    fn a_scope_dropped_by_a_panic_restores_the_outer_one() {
        let outer = Scope::enter(Decisions::default());
        let result = std::panic::catch_unwind(|| {
            let _inner = Scope::enter(Decisions::default());
            panic!("the inner service panicked");
        });
        assert!(result.is_err());
        record_route(&Arc::from("/after"));
        assert_eq!(outer.exit().route.as_deref(), Some("/after"));
    }
}
