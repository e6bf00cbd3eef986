//! Remote key sets: a JWKS fetched over HTTP(S), refreshed in the background, and OIDC /
//! RFC 8414 discovery of its URL.
//!
//! [`RemoteJwks`] fetches its JWKS before serving, then keeps it fresh from one background task
//! per source: on an interval that honours `Cache-Control: max-age` within bounds, with
//! conditional requests (`ETag` / `Last-Modified`), and on demand when a token names an
//! unknown key id, at most once per `unknown_kid_interval`. A request never waits on the
//! network: it is answered with the keys in hand. A failed, slow, oversized or malformed
//! response keeps the last good set (stale-if-error); one malformed key in a set skips that
//! key, not the set.

mod cache_control;
mod discovery;
mod error;
mod fetch;
mod schedule;
mod url;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use http::{HeaderValue, Uri};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use discovery::Discovery;
pub use error::JwksError;
use fetch::{Fetched, Fetcher};
use schedule::{Backoff, KidThrottle, next_refresh};
use url::check_url;

use crate::clock::{Clock, MonotonicClock};

use super::jwk::{Trust, parse_jwks_lenient};
use super::{KeySet, KeySource, KeysUnavailable};

/// What to do when the first fetch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Startup {
    /// Return the error from [`RemoteJwksBuilder::build`]: the service does not start without
    /// keys (the default).
    #[default]
    RequireKeys,
    /// Start with no keys (requests get 503) and keep trying in the background.
    StartEmpty,
}

/// The defaults, and the bounds a server's `Cache-Control: max-age` is held within.
#[derive(Debug, Clone)]
struct Options {
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    max_refresh_interval: Duration,
    unknown_kid_interval: Duration,
    timeout: Duration,
    max_body: usize,
    startup: Startup,
    startup_attempts: u32,
    allow_http: bool,
    /// The clock the unknown-kid throttle reads.
    clock: ClockHandle,
}

/// The injected clock, in options that are printed.
#[derive(Clone)]
struct ClockHandle(Arc<dyn Clock>);

impl fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(60),
            max_refresh_interval: Duration::from_secs(24 * 3600),
            unknown_kid_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
            startup: Startup::RequireKeys,
            startup_attempts: 5,
            allow_http: false,
            clock: ClockHandle(Arc::new(MonotonicClock::new())),
        }
    }
}

/// What the last full response said about itself.
#[derive(Clone, Default)]
struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    max_age: Option<Duration>,
}

struct Shared {
    /// The key set's URL: given, or found by `discovery` (on the first fetch that succeeds in
    /// finding it, at start-up or in the background).
    url: OnceLock<Uri>,
    discovery: Option<Discovery>,
    options: Options,
    fetcher: Fetcher,
    keys: RwLock<Option<KeySet>>,
    /// The last 200's `ETag`, `Last-Modified` and `max-age`, for conditional requests.
    validators: RwLock<Validators>,
    wake: Notify,
    /// One refetch per interval for unknown key ids.
    kid_throttle: KidThrottle,
    fetches: AtomicU64,
}

/// The key set's URL for events; the metadata document's while discovery has not found it.
struct Location<'a>(&'a Shared);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.url.get(), &self.0.discovery) {
            (Some(url), _) => write!(f, "{url}"),
            (None, Some(discovery)) => write!(f, "{}", discovery.metadata),
            (None, None) => Ok(()),
        }
    }
}

impl Shared {
    /// The key set's URL, found by discovery when it is not known yet: the metadata is fetched,
    /// must name exactly the issuer, and its `jwks_uri` must be a URL the options allow.
    async fn locate(&self) -> Result<&Uri, JwksError> {
        if let Some(url) = self.url.get() {
            return Ok(url);
        }
        let Some(discovery) = &self.discovery else {
            // Not built so: a source has its URL or finds it by discovery.
            return Err(JwksError::InvalidUrl(String::new()));
        };
        let url = discovery.metadata.to_string();
        let Fetched::Body { body, .. } = self.fetcher.get(&discovery.metadata, None, None).await?
        else {
            return Err(JwksError::Malformed {
                url,
                reason: "not modified".into(),
            });
        };
        let found = discovery.jwks_uri(&url, &body, self.options.allow_http)?;
        tracing::info!(target: "portcullis::jwks", issuer = %discovery.issuer, url = %found,
            "key set found by discovery");
        Ok(self.url.get_or_init(|| found))
    }

    /// One fetch (after discovery, when the URL is not known yet); installs a new set on
    /// success. Returns the delay until the next scheduled fetch.
    async fn refresh(&self) -> Result<Duration, JwksError> {
        let url = self.locate().await?;
        let validators = self
            .validators
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let has_keys = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        // Conditional only when there is a set to keep.
        let (etag, last_modified) = match has_keys {
            true => (validators.etag.as_ref(), validators.last_modified.as_ref()),
            false => (None, None),
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = self.fetcher.get(url, etag, last_modified).await;
        #[cfg(feature = "metrics")]
        if fetched.is_err() {
            crate::telemetry::key_fetch("error");
        }
        let fetched = fetched?;
        let max_age = match fetched {
            Fetched::NotModified { max_age } => {
                tracing::debug!(target: "portcullis::jwks", url = %url, "key set not modified");
                #[cfg(feature = "metrics")]
                crate::telemetry::key_fetch("not_modified");
                // A 304 should repeat Cache-Control; when it does not, the last one holds.
                max_age.or(validators.max_age)
            }
            Fetched::Body {
                body,
                etag,
                last_modified,
                max_age,
            } => {
                let installed = self.install(&body);
                #[cfg(feature = "metrics")]
                crate::telemetry::key_fetch(if installed.is_ok() {
                    "updated"
                } else {
                    "error"
                });
                installed?;
                *self
                    .validators
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Validators {
                    etag,
                    last_modified,
                    max_age,
                };
                max_age
            }
        };
        let options = &self.options;
        Ok(next_refresh(
            max_age,
            options.refresh_interval,
            options.min_refresh_interval,
            options.max_refresh_interval,
        ))
    }

    fn install(&self, body: &[u8]) -> Result<(), JwksError> {
        let malformed = |reason: String| JwksError::Malformed {
            url: Location(self).to_string(),
            reason,
        };
        let text = std::str::from_utf8(body).map_err(|_| malformed("not UTF-8".into()))?;
        let (keys, skipped) =
            parse_jwks_lenient(text, Trust::Remote).map_err(|e| malformed(e.to_string()))?;
        for why in &skipped {
            tracing::warn!(target: "portcullis::jwks", url = %Location(self), reason = %why, "skipped a malformed key");
        }
        if keys.is_empty() {
            return Err(malformed("no usable signature key".into()));
        }
        let next = KeySet::new(keys);
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let (installed, added, removed) = match current.as_ref() {
            Some(old) => {
                let rotation = old.replace_with(next);
                (rotation.keys, rotation.added, rotation.removed)
            }
            None => {
                let added = next.len();
                (next, added, 0)
            }
        };
        if added > 0 || removed > 0 {
            tracing::info!(target: "portcullis::jwks", url = %Location(self), added, removed,
                keys = installed.len(), skipped = skipped.len(), "key set updated");
        } else {
            tracing::debug!(target: "portcullis::jwks", url = %Location(self), keys = installed.len(),
                "key set fetched, unchanged");
        }
        *current = Some(installed);
        Ok(())
    }

    /// [`Shared::refresh`], with a failure reported as an event.
    async fn refresh_reported(&self) -> Result<Duration, JwksError> {
        self.refresh().await.inspect_err(|err| {
            tracing::warn!(target: "portcullis::jwks", url = %Location(self), reason = err.reason(),
                error = %err, "key set fetch failed; keeping the last good set");
        })
    }

    async fn run(self: Arc<Self>, mut delay: Duration) {
        let mut backoff = Backoff::new(Duration::from_secs(1), self.options.refresh_interval);
        loop {
            let woken = self.wake.notified();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = woken => {}
            }
            delay = match self.refresh_reported().await {
                Ok(next) => {
                    backoff.reset();
                    next
                }
                Err(_) => backoff.failed(),
            };
        }
    }
}

/// Aborts the background task when the last handle to the source is dropped.
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A JWKS fetched over HTTP(S) and kept fresh in the background; a [`KeySource`].
///
/// Cheap to clone: clones share the key set and the background task, which stops when the last
/// clone is dropped. Must be built inside a tokio runtime.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> Result<(), portcullis::keys::JwksError> {
/// use std::time::Duration;
/// use portcullis::keys::RemoteJwks;
///
/// let keys = RemoteJwks::builder("https://login.example.com/.well-known/jwks.json")
///     .refresh_interval(Duration::from_secs(600))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteJwks {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("RemoteJwks")
            .field("url", &self.shared.url.get())
            .field("keys", &keys.as_ref().map(KeySet::len))
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RemoteJwks`].
#[derive(Debug, Clone)]
pub struct RemoteJwksBuilder {
    url: String,
    options: Options,
}

impl RemoteJwksBuilder {
    /// The interval between refreshes when the server sends no `Cache-Control: max-age`
    /// (default 5 minutes).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.options.refresh_interval = interval;
        self
    }

    /// The bounds a server's `max-age` is held within (default 1 minute to 1 day).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.options.min_refresh_interval = min;
        self.options.max_refresh_interval = max.max(min);
        self
    }

    /// The least time between two refetches caused by unknown key ids (default 30 s).
    pub fn unknown_kid_interval(mut self, interval: Duration) -> Self {
        self.options.unknown_kid_interval = interval;
        self
    }

    /// The time a fetch may take, connection and body included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// The largest body accepted (default 1 MiB).
    pub fn max_body(mut self, max_body: usize) -> Self {
        self.options.max_body = max_body;
        self
    }

    /// What to do when the first fetch fails (default: fail).
    pub fn startup(mut self, startup: Startup) -> Self {
        self.options.startup = startup;
        self
    }

    /// How many times the first fetch is tried, with backoff, before [`Startup`] applies
    /// (default 5).
    pub fn startup_attempts(mut self, attempts: u32) -> Self {
        self.options.startup_attempts = attempts.max(1);
        self
    }

    /// The clock the unknown-kid throttle reads (default: a [`MonotonicClock`]). The
    /// scheduled refreshes run on the runtime's timer (`tokio::time`, which a test can pause).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.options.clock = ClockHandle(Arc::new(clock));
        self
    }

    /// Allows plain HTTP to hosts other than loopback. Off by default: a key set fetched over
    /// plain HTTP can be replaced by anyone on the path.
    pub fn allow_http(mut self) -> Self {
        self.options.allow_http = true;
        self
    }

    /// Fetches the key set (retrying with backoff) and starts the background refresh.
    pub async fn build(self) -> Result<RemoteJwks, JwksError> {
        let url = check_url(&self.url, self.options.allow_http)?;
        self.start(OnceLock::from(url), None).await
    }

    /// Fetches the key set, finding it by `discovery` first when `url` is empty, as
    /// `startup_attempts` and [`Startup`] say; starts the background refresh.
    async fn start(
        self,
        url: OnceLock<Uri>,
        discovery: Option<Discovery>,
    ) -> Result<RemoteJwks, JwksError> {
        let fetcher = Fetcher::new(&self.options);
        let shared = Arc::new(Shared {
            url,
            discovery,
            fetcher,
            keys: RwLock::new(None),
            validators: RwLock::default(),
            wake: Notify::new(),
            kid_throttle: KidThrottle::new(self.options.unknown_kid_interval),
            fetches: AtomicU64::new(0),
            options: self.options,
        });
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut last_error = None;
        let mut delay = shared.options.refresh_interval;
        for attempt in 0..shared.options.startup_attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff.failed()).await;
            }
            match shared.refresh().await {
                Ok(next) => {
                    delay = next;
                    last_error = None;
                    break;
                }
                Err(err) => {
                    tracing::warn!(target: "portcullis::jwks", url = %Location(&shared), attempt,
                        reason = err.reason(), error = %err, "initial key set fetch failed");
                    last_error = Some(err);
                }
            }
        }
        if let Some(err) = last_error {
            match shared.options.startup {
                Startup::RequireKeys => return Err(err),
                Startup::StartEmpty => delay = Duration::from_secs(1),
            }
        }
        let task = tokio::spawn(Arc::clone(&shared).run(delay));
        Ok(RemoteJwks {
            shared,
            _task: Arc::new(TaskGuard(task.abort_handle())),
        })
    }
}

impl RemoteJwks {
    /// A builder for the key set at `url`.
    pub fn builder(url: impl Into<String>) -> RemoteJwksBuilder {
        RemoteJwksBuilder {
            url: url.into(),
            options: Options::default(),
        }
    }

    /// Finds the key set of `issuer` by OpenID Connect discovery
    /// (`{issuer}/.well-known/openid-configuration`), checks that the document names exactly
    /// `issuer`, and builds the source for its `jwks_uri` with `options`. Discovery is part of
    /// each fetch attempt until it succeeds: at start-up it is retried with backoff
    /// (`startup_attempts`), and with [`Startup::StartEmpty`] a provider that is not up yet is
    /// tried again in the background until it is.
    pub async fn discover(
        issuer: &str,
        options: RemoteJwksBuilder,
    ) -> Result<RemoteJwks, JwksError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        Self::discover_at(issuer, &url, options).await
    }

    /// As [`RemoteJwks::discover`], with RFC 8414 authorization-server metadata
    /// (`/.well-known/oauth-authorization-server` inserted before the issuer's path).
    pub async fn discover_oauth(
        issuer: &str,
        options: RemoteJwksBuilder,
    ) -> Result<RemoteJwks, JwksError> {
        let uri = check_url(issuer, options.options.allow_http)?;
        let path = uri.path().trim_end_matches('/');
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let scheme = uri.scheme_str().unwrap_or("https");
        let url = format!("{scheme}://{authority}/.well-known/oauth-authorization-server{path}");
        Self::discover_at(issuer, &url, options).await
    }

    async fn discover_at(
        issuer: &str,
        url: &str,
        options: RemoteJwksBuilder,
    ) -> Result<RemoteJwks, JwksError> {
        let metadata = check_url(url, options.options.allow_http)?;
        let discovery = Discovery {
            issuer: issuer.to_owned(),
            metadata,
        };
        options.start(OnceLock::new(), Some(discovery)).await
    }

    /// How many fetches of the key set were made (for monitoring and tests).
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::Relaxed)
    }

    /// The URL of the key set; `None` while discovery has not found it (a source started
    /// empty with [`Startup::StartEmpty`]).
    pub fn url(&self) -> Option<&Uri> {
        self.shared.url.get()
    }

    /// Fetches the key set now, outside the schedule, and waits for the outcome.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        self.shared.refresh_reported().await.map(|_| ())
    }
}

impl KeySource for RemoteJwks {
    fn key_set(&self) -> Result<KeySet, KeysUnavailable> {
        self.shared
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(KeysUnavailable::new())
    }

    fn unknown_kid(&self, kid: &str) {
        let shared = &self.shared;
        // Only the caller that takes the turn wakes the fetcher: one fetch per interval.
        if shared.kid_throttle.take_turn(shared.options.clock.0.now()) {
            tracing::debug!(target: "portcullis::jwks", url = %Location(shared), kid, "unknown key id: refetching");
            shared.wake.notify_one();
        }
    }
}
