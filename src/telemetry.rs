//! Metrics through the `metrics` facade (feature `metrics`): whatever recorder the application
//! installs (Prometheus, StatsD, OpenTelemetry) receives them. The names and labels are listed
//! in the observability guide and are stable.

use crate::reject::Reason;

type Handles = hashbrown::HashMap<&'static str, metrics::Counter, foldhash::fast::RandomState>;

/// The decision counters, one per reason, registered on the first decision (so with the
/// recorder installed by then) and afterwards incremented without allocating: the `counter!`
/// macro would build its labels in a `Vec` on every call, as these are not literals.
fn handles() -> &'static Handles {
    static HANDLES: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| {
        Reason::ALL
            .iter()
            .map(|reason| reason.code())
            .map(|reason| {
                let outcome = match reason {
                    "none" => "allowed",
                    "service_error" => "error",
                    _ => "rejected",
                };
                let counter = metrics::counter!(
                    "portcullis_decisions_total", "outcome" => outcome, "reason" => reason
                );
                (reason, counter)
            })
            .collect()
    })
}

/// Counts one request decision and records its latency.
pub(crate) fn decision(outcome: &'static str, reason: &'static str, nanos: u64) {
    match handles().get(reason) {
        Some(counter) => counter.increment(1),
        None => metrics::counter!(
            "portcullis_decisions_total", "outcome" => outcome, "reason" => reason
        )
        .increment(1),
    }
    metrics::histogram!("portcullis_decision_seconds").record(nanos as f64 / 1e9);
}

/// Counts one key-set fetch: `updated`, `not_modified` or `error`.
#[cfg(feature = "jwks")]
pub(crate) fn key_fetch(outcome: &'static str) {
    metrics::counter!("portcullis_key_fetches_total", "outcome" => outcome).increment(1);
}

/// A limit's counters, made on first use (so a recorder installed after the layer was built
/// still receives them) and then incremented without allocating.
#[derive(Debug, Default)]
pub(crate) struct LimitCounters {
    counters: std::sync::OnceLock<[metrics::Counter; 4]>,
}

impl Clone for LimitCounters {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// What happened to a request at one limit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LimitResult {
    Admitted = 0,
    Denied = 1,
    ShadowDenied = 2,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    StoreError = 3,
}

impl LimitCounters {
    pub(crate) fn count(&self, limit: &str, result: LimitResult) {
        let counters = self.counters.get_or_init(|| {
            let limit = limit.to_owned();
            let counter = |result: &'static str| {
                metrics::counter!("portcullis_rate_limit_total", "limit" => limit.clone(), "result" => result)
            };
            [
                counter("admitted"),
                counter("denied"),
                counter("shadow_denied"),
                metrics::counter!("portcullis_rate_limit_store_errors_total", "limit" => limit.clone()),
            ]
        });
        counters[result as usize].increment(1);
    }
}
