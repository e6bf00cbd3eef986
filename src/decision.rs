//! The record of what the deciding layers decided about one request, for the layer around them
//! that writes the audit event.
//!
//! The [`Propagate`](crate::propagate::Propagate) layer opens a [`Recorder`] for each request and
//! puts a handle to it in the request's extensions; the layers inside that decide (authenticate,
//! authorize, rate limit) find it there and write what they decided; the propagate layer reads
//! it when the response is ready. The handle travels with the request, so a layer between them
//! that moves the work to another task (`tower::buffer`, a spawned future) keeps the record
//! whole. Each entry is written once: the first record of each kind stands, so a sub-request
//! that carries a copy of the extensions through another authenticating layer cannot rename
//! the request.
//!
//! This module sits below every layer: it names no layer's types. The identity is seen through
//! [`Principal`].
//!
//! The policy stack ([`PolicyService`](crate::policy::PolicyService)) needs no record: it runs
//! the stages itself and keeps what they decided as a local.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Who a request was authenticated as, as the audit event names them.
pub(crate) trait Principal: Send + Sync {
    /// The subject (`sub`), if the credential names one.
    fn subject(&self) -> Option<&str>;
    /// The issuer that vouched for it.
    fn issuer(&self) -> &str;
}

/// One request's record. See the [module](self).
#[derive(Default)]
struct Record {
    /// Set when an authenticating layer has decided: the identity, or `None` on a public or
    /// optional route without a credential.
    identity: OnceLock<Option<Arc<dyn Principal>>>,
    /// The matched route's pattern.
    route: OnceLock<Arc<str>>,
    /// Monotonic nanoseconds when a layer that decides after its `call` returned decided; 0
    /// when none did.
    decided: AtomicU64,
}

/// The handle to one request's record, kept by the layer that opened it and carried in the
/// request's extensions to the layers that write to it.
#[derive(Clone)]
pub(crate) struct Recorder(Arc<Record>);

impl Recorder {
    /// The request's recorder, if a layer around opened one.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Option<&Recorder> {
        request.extensions().get::<Recorder>()
    }

    /// The request's recorder, opening one if no layer around has.
    pub(crate) fn open_in<B>(request: &mut http::Request<B>) -> Recorder {
        if let Some(recorder) = Self::of(request) {
            return recorder.clone();
        }
        let recorder = Recorder::new();
        request.extensions_mut().insert(recorder.clone());
        recorder
    }

    /// Records how the request was authenticated: the verified identity, or none on a public
    /// or optional route. The first record stands.
    pub(crate) fn identity(&self, identity: Option<Arc<dyn Principal>>) {
        let _ = self.0.identity.set(identity);
    }

    /// Records the matched route (before a decision, so that a rejection's event names it
    /// too). The first record stands.
    pub(crate) fn route(&self, pattern: &Arc<str>) {
        let _ = self.0.route.set(Arc::clone(pattern));
    }

    /// Marks the request decided now, for a layer that decides after its `call` returned (a
    /// Redis round trip). The first mark stands.
    pub(crate) fn decided_now(&self) {
        let now = crate::clock::monotonic_nanos().max(1);
        let _ = self
            .0
            .decided
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The identity recorded, if any.
    pub(crate) fn principal(&self) -> Option<&dyn Principal> {
        self.0.identity.get()?.as_deref()
    }

    /// The recorded route pattern.
    pub(crate) fn route_pattern(&self) -> Option<&str> {
        self.0.route.get().map(|r| &**r)
    }

    /// When a late layer marked the request decided.
    pub(crate) fn decided_at(&self) -> Option<u64> {
        match self.0.decided.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// A new, empty record.
    pub(crate) fn new() -> Self {
        Recorder(Arc::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ada;
    impl Principal for Ada {
        fn subject(&self) -> Option<&str> {
            Some("ada")
        }
        fn issuer(&self) -> &str {
            "https://issuer.example/"
        }
    }

    #[test]
    fn the_first_record_of_each_kind_stands() {
        let mut request = http::Request::new(());
        assert!(Recorder::of(&request).is_none());
        let recorder = Recorder::open_in(&mut request);
        let again = Recorder::open_in(&mut request);
        assert!(Arc::ptr_eq(&recorder.0, &again.0), "one record per request");

        recorder.route(&Arc::from("/orders/**"));
        recorder.route(&Arc::from("/ignored"));
        assert_eq!(again.route_pattern(), Some("/orders/**"));

        assert!(recorder.principal().is_none());
        recorder.identity(Some(Arc::new(Ada)));
        recorder.identity(None);
        assert_eq!(again.principal().and_then(|p| p.subject()), Some("ada"));

        assert_eq!(recorder.decided_at(), None);
        recorder.decided_now();
        let first = recorder.decided_at().unwrap();
        recorder.decided_now();
        assert_eq!(again.decided_at(), Some(first));
    }

    #[test]
    fn the_record_crosses_threads() {
        let recorder = Recorder::new();
        let writer = recorder.clone();
        std::thread::spawn(move || writer.route(&Arc::from("/elsewhere")))
            .join()
            .unwrap();
        assert_eq!(recorder.route_pattern(), Some("/elsewhere"));
    }
}
