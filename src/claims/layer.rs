use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower_layer::Layer;
use tower_service::Service;

use super::{AssertionSigner, ClaimPath, render_header_value};
use crate::error::ConfigError;
use crate::headers::remove_spellings;
use crate::jwt::Identity;

/// Copies claims of the verified identity into request headers for the service, after removing
/// every copy of those headers the client sent.
///
/// The removal happens on every request, with or without an identity: a client can never make
/// the service see its own `x-user-id`, whatever the casing, how many times it sends it, or
/// whether it writes `_` for `-` (`X_User_Id`, which CGI-style servers read as the same name;
/// see [`crate::headers`]).
/// Values are rendered once per cached token (see
/// [`render_header_value`](super::render_header_value)); a claim that is missing or renders to
/// nothing leaves its header unset. Identity headers always override.
///
/// # Example
///
/// ```
/// use portcullis::claims::MapClaimsLayer;
///
/// let layer = MapClaimsLayer::new([("x-user-id", "sub"), ("x-tenant", "org.id")])
///     .unwrap()
///     .remove_authorization(true);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct MapClaimsLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    id: u64,
    mappings: Box<[(HeaderName, ClaimPath)]>,
    /// The mapped headers' names and the assertion's: the headers this layer sets.
    managed: Box<[HeaderName]>,
    /// Whether no managed name holds a `_`.
    managed_plain: bool,
    remove_authorization: bool,
    assertion: Option<AssertionSigner>,
}

impl Config {
    fn with_managed(mut self) -> Self {
        self.managed = self
            .mappings
            .iter()
            .map(|(name, _)| name.clone())
            .chain(self.assertion.as_ref().map(|s| s.header_name().clone()))
            .collect();
        self.managed_plain = !self.managed.iter().any(|n| n.as_str().contains('_'));
        self
    }
}

impl fmt::Debug for MapClaimsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapClaimsLayer")
            .field("mappings", &self.config.mappings)
            .field("remove_authorization", &self.config.remove_authorization)
            .finish()
    }
}

impl MapClaimsLayer {
    /// A layer setting each header to the claim at its path (`("x-tenant", "org.id")`).
    pub fn new<I, H, P>(mappings: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (H, P)>,
        H: AsRef<str>,
        P: AsRef<str>,
    {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let mut out = Vec::new();
        for (header, path) in mappings {
            let name = HeaderName::from_bytes(header.as_ref().as_bytes()).map_err(|_| {
                ConfigError::InvalidHeader(format!("{:?} is not a header name", header.as_ref()))
            })?;
            if out.iter().any(|(n, _)| *n == name) {
                return Err(ConfigError::InvalidHeader(format!(
                    "header {name} is mapped twice"
                )));
            }
            if name == AUTHORIZATION || name == http::header::HOST || name == http::header::COOKIE {
                return Err(ConfigError::InvalidHeader(format!(
                    "header {name} cannot carry a claim"
                )));
            }
            let path: ClaimPath = path
                .as_ref()
                .parse()
                .map_err(|e: super::ClaimPathError| ConfigError::InvalidHeader(e.to_string()))?;
            out.push((name, path));
        }
        Ok(Self {
            config: Arc::new(
                Config {
                    id: IDS.fetch_add(1, Ordering::Relaxed),
                    mappings: out.into_boxed_slice(),
                    managed: Box::default(),
                    managed_plain: true,
                    remove_authorization: false,
                    assertion: None,
                }
                .with_managed(),
            ),
        })
    }

    /// Also removes the `Authorization` header before the request goes on (Envoy's
    /// `forward: false`, Kong's `hide_credentials`). Off by default.
    pub fn remove_authorization(mut self, remove: bool) -> Self {
        Arc::make_mut(&mut self.config).remove_authorization = remove;
        self
    }

    /// Also sets a signed identity assertion (see [`AssertionSigner`]) in the signer's header,
    /// removing any copy the client sent.
    pub fn assertion(mut self, signer: AssertionSigner) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.assertion = Some(signer);
        *config = config.clone().with_managed();
        self
    }

    /// The signer of the identity assertion, when there is one (its
    /// [`jwks`](AssertionSigner::jwks) is what the upstream verifies with).
    pub fn assertion_signer(&self) -> Option<&AssertionSigner> {
        self.config.assertion.as_ref()
    }

    /// The headers this layer manages.
    pub fn headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.config.mappings.iter().map(|(name, _)| name)
    }

    /// Applies the mapping to `headers` for `identity`. Does not allocate when the identity's
    /// values were rendered before (on an earlier request with the same cached token) and the
    /// header map has room.
    pub fn apply(&self, headers: &mut HeaderMap, identity: Option<&Identity>) {
        self.config.apply(headers, identity);
    }
}

impl Config {
    fn render(&self, identity: &Identity) -> Box<[Option<HeaderValue>]> {
        self.mappings
            .iter()
            .map(|(_, path)| {
                let value = render_header_value(path.lookup(identity.claims())?)?;
                HeaderValue::try_from(value).ok()
            })
            .collect()
    }

    fn apply(&self, headers: &mut HeaderMap, identity: Option<&Identity>) {
        // Every value of each name (names are case-insensitive), and in one pass over the
        // request's header names every other spelling an upstream reads as the same name
        // (`X_User_Id` for `x-user-id`).
        for name in self.managed.iter() {
            headers.remove(name);
        }
        remove_spellings(headers, &self.managed, self.managed_plain, false);
        if self.remove_authorization {
            headers.remove(AUTHORIZATION);
        }
        let Some(identity) = identity else {
            return;
        };
        let derived = identity.attached.get_or_attach(self.id, || Derived {
            headers: self.render(identity),
            assertion: Default::default(),
        });
        let rendered;
        let values = match derived {
            Some(derived) => &derived.headers,
            None => {
                // Not reachable (this layer's id names only `Derived`): render for this request.
                rendered = self.render(identity);
                &rendered
            }
        };
        for ((name, _), value) in self.mappings.iter().zip(values.iter()) {
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(signer) = &self.assertion {
            let mapped = || {
                self.mappings
                    .iter()
                    .filter_map(|(name, path)| {
                        Some((
                            name.as_str().to_owned(),
                            path.lookup(identity.claims())?.clone(),
                        ))
                    })
                    .collect()
            };
            let fresh = std::sync::RwLock::new(None);
            let slot = derived.map_or(&fresh, |derived| &derived.assertion);
            if let Some(value) = signer.cached(slot, identity, mapped) {
                headers.insert(signer.header_name().clone(), value);
            }
        }
    }
}

/// What one layer derived from an identity, computed on first use and reused for every later
/// request with the same cached token.
#[derive(Debug)]
struct Derived {
    headers: Box<[Option<http::HeaderValue>]>,
    /// The signed assertion and the time (seconds) after which it is signed anew.
    assertion: std::sync::RwLock<Option<(http::HeaderValue, u64)>>,
}

impl<S> Layer<S> for MapClaimsLayer {
    type Service = MapClaims<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MapClaims {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`MapClaimsLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct MapClaims<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for MapClaims<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapClaims")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for MapClaims<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let identity = parts.extensions.get::<Arc<Identity>>();
        self.config
            .apply(&mut parts.headers, identity.map(|i| &**i));
        self.inner.call(Request::from_parts(parts, body))
    }
}
