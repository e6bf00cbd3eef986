//! Swapping a running policy: [`PolicyHandle`] holds the current [`PolicyLayer`] behind an
//! `ArcSwap`; [`ReloadLayer`] builds each service's stack from whichever is current.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tower_layer::Layer;
use tower_service::Service;

use super::{Policy, PolicyError, PolicyLayer};
use crate::reject::DefaultRejection;

struct Current {
    generation: u64,
    layer: PolicyLayer,
    /// The policy the layer was built from.
    policy: Arc<Policy>,
    /// The file's text when it was loaded, to see whether it changed.
    text: Option<String>,
}

struct Shared {
    current: ArcSwap<Current>,
    generations: AtomicU64,
    path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// The running policy, swappable. Clones share it.
///
/// A reload reads and checks the new policy completely and builds it (reusing the verified
/// token cache and rate-limit state where their configuration did not change) before it
/// swaps; a bad new file is refused with its error and the old policy keeps serving. Requests
/// in flight finish under the policy they started with.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), portcullis::policy::PolicyError> {
/// use portcullis::policy::{Policy, PolicyHandle};
///
/// let open = r#"
///     [[issuers]]
///     issuer = "https://login.example.com/"
///     audiences = ["orders-api"]
///     keys = { pem_files = ["tests/keys/p256.pub.pem"] }
///     [[routes]]
///     path = "/**"
///     auth = "none"
/// "#;
/// let handle = PolicyHandle::new(Policy::from_toml(open)?).await?;
/// let layer = handle.layer(); // wrap the service with this
/// assert!(handle.replace(Policy::from_toml(open)?).await.is_ok());
/// assert_eq!(handle.generation(), 2);
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PolicyHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("path", &self.shared.path)
            .field("generation", &self.generation())
            .finish()
    }
}

impl PolicyHandle {
    /// A handle serving `policy` (built now).
    pub async fn new(policy: Policy) -> Result<Self, PolicyError> {
        Self::start(policy, None, None).await
    }

    /// A handle serving the policy file at `path`; [`reload`](Self::reload) and
    /// [`watch`](Self::watch) read it again.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref().to_path_buf();
        let text = read(&path)?;
        let policy = Policy::from_file_text(&path, &text)?;
        Self::start(policy, Some(path), Some(text)).await
    }

    async fn start(
        policy: Policy,
        path: Option<PathBuf>,
        text: Option<String>,
    ) -> Result<Self, PolicyError> {
        let layer = policy.build().await?;
        Ok(Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(Current {
                    generation: 1,
                    layer,
                    policy: Arc::new(policy),
                    text,
                }),
                generations: AtomicU64::new(1),
                path,
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// How many policies have been served (1 for the first).
    pub fn generation(&self) -> u64 {
        self.shared.current.load().generation
    }

    /// The policy being served: its `upstream`, `listen` and `[server]` settings, for a server
    /// built on it (the gateway example reads them here, so the file is read once).
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.shared.current.load().policy)
    }

    /// The current stack.
    pub fn current(&self) -> PolicyLayer {
        self.shared.current.load().layer.clone()
    }

    /// The current policy's request id header (cheaper than [`current`](Self::current) for
    /// this one value).
    pub fn request_id_header(&self) -> http::HeaderName {
        self.shared.current.load().layer.request_id_header().clone()
    }

    /// Builds `policy` and, if that succeeds, serves it from now on.
    pub async fn replace(&self, policy: Policy) -> Result<(), PolicyError> {
        let _one = self.shared.reloading.lock().await;
        self.swap(policy, None).await
    }

    async fn swap(&self, policy: Policy, text: Option<String>) -> Result<(), PolicyError> {
        let previous = self.shared.current.load_full();
        let layer = policy.build_reusing(&previous.layer).await?;
        let generation = self.shared.generations.fetch_add(1, Ordering::AcqRel) + 1;
        self.shared.current.store(Arc::new(Current {
            generation,
            layer,
            policy: Arc::new(policy),
            text,
        }));
        tracing::info!(target: "portcullis::policy", generation, "policy loaded");
        Ok(())
    }

    /// Reads the policy file again and serves it if it changed and is valid; `Ok(false)` when
    /// it did not change. On an error the old policy keeps serving.
    pub async fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.shared.path else {
            return Ok(false);
        };
        let _one = self.shared.reloading.lock().await;
        let text = read(path)?;
        if self.shared.current.load().text.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let result = match Policy::from_file_text(path, &text) {
            Ok(policy) => self.swap(policy, Some(text)).await,
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            tracing::warn!(target: "portcullis::policy", error = %error,
                "policy file refused; the old policy keeps serving");
        }
        result.map(|()| true)
    }

    /// Checks the file every `interval` in a background task and reloads it when it changed.
    /// Stops when every handle is dropped.
    pub fn watch(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                let _ = PolicyHandle { shared }.reload().await;
            }
        })
    }

    /// The layer that serves whichever policy is current.
    pub fn layer(&self) -> ReloadLayer {
        ReloadLayer {
            handle: self.clone(),
            rejection: DefaultRejection,
        }
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Wraps a service in the current policy's stack; see [`PolicyHandle::layer`].
#[derive(Clone)]
pub struct ReloadLayer<R = DefaultRejection> {
    handle: PolicyHandle,
    rejection: R,
}

impl<R> fmt::Debug for ReloadLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadLayer")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<R> ReloadLayer<R> {
    /// Replaces the response built for every refusal of every policy served (see
    /// [`PolicyLayer::on_rejection`]).
    pub fn on_rejection<R2: Clone>(self, rejection: R2) -> ReloadLayer<R2> {
        ReloadLayer {
            handle: self.handle,
            rejection,
        }
    }
}

impl<S: Clone, R: Clone> Layer<S> for ReloadLayer<R> {
    type Service = Reloading<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        let current = self.handle.shared.current.load_full();
        Reloading {
            stack: stack(&current.layer, &self.rejection, inner.clone()),
            generation: current.generation,
            inner,
            handle: self.handle.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

/// The policy stack around `S` (`<PolicyLayer<R> as Layer<S>>::Service`).
type Stack<S, R> = super::PolicyService<S, R>;

/// `layer`'s stack around `inner`, refusing through `rejection`.
fn stack<S, R: Clone>(layer: &PolicyLayer, rejection: &R, inner: S) -> Stack<S, R> {
    layer.clone().on_rejection(rejection.clone()).layer(inner)
}

/// A service under the current policy: when a new policy is served, the next `poll_ready`
/// rebuilds the stack around a clone of the inner service (the layers are `Arc`s: no request
/// pays for more than a generation check).
pub struct Reloading<S, R = DefaultRejection> {
    inner: S,
    stack: Stack<S, R>,
    generation: u64,
    handle: PolicyHandle,
    rejection: R,
}

impl<S: Clone, R: Clone> Clone for Reloading<S, R> {
    /// A copy of the stack as it is; `poll_ready` moves it to a newer policy if there is one.
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
            generation: self.generation,
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S, R> fmt::Debug for Reloading<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<S, R, ReqBody, ResBody> Service<http::Request<ReqBody>> for Reloading<S, R>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
    R: Clone,
    <PolicyLayer<R> as Layer<S>>::Service:
        Service<http::Request<ReqBody>, Response = http::Response<ResBody>, Error = S::Error>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future =
        <<PolicyLayer<R> as Layer<S>>::Service as Service<http::Request<ReqBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let current = self.handle.shared.current.load();
        if current.generation != self.generation {
            self.stack = stack(&current.layer, &self.rejection, self.inner.clone());
            self.generation = current.generation;
        }
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        self.stack.call(request)
    }
}
