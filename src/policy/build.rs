//! From a read policy file to layers: every check that needs more than one value, the local
//! keys loaded, then (asynchronously) remote key sets and Redis, and the stack assembled.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tower_layer::Layer;

use super::file::{KeysSection, PolicyFile, StoreValue};
use super::stack::{PolicyService, Stages};
use super::{Locator, Policy, PolicyError};
use crate::authz::{AuthorizeLayer, Route, Routes};
use crate::claims::{AssertionSigner, ClaimPath, MapClaimsLayer};
use crate::crypto::{Algorithm, KeyKind};
use crate::jwt::{Issuer, JwtAuthLayer, Validator};
use crate::keys::KeySet;
use crate::propagate::{PropagateLayer, TrustIncoming};
use crate::rate_limit::{IpNet, Limit, RateLimitLayer, Scope};
use crate::reject::DefaultRejection;

/// The options of an issuer's remote key set: its start-up choice.
#[cfg(feature = "jwks")]
fn remote_options(
    section: &super::file::IssuerSection,
    url: &str,
) -> crate::keys::RemoteJwksBuilder {
    use crate::keys::Startup;
    let startup = match section.keys.get_ref().startup {
        Some(value) if value.start_empty() => Startup::StartEmpty,
        _ => Startup::RequireKeys,
    };
    crate::keys::RemoteJwks::builder(url).startup(startup)
}

/// Where an issuer's keys come from, once local files are read.
#[derive(Clone)]
pub(crate) enum KeysFrom {
    Local(KeySet),
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    JwksUrl(String),
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    Discovery,
}

/// What the checks produce: everything but what needs the network.
#[derive(Clone)]
pub(crate) struct Resolved {
    keys: Vec<KeysFrom>,
    algorithms: Vec<Vec<Algorithm>>,
    routes: Routes,
    scopes: Vec<Scope>,
    mapping: MapClaimsLayer,
    propagate: PropagateLayer,
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Hmac => "an HMAC secret",
        KeyKind::Rsa => "an RSA key",
        KeyKind::EcP256 => "a P-256 key",
        KeyKind::EcP384 => "a P-384 key",
        KeyKind::Ed25519 => "an Ed25519 key",
    }
}

/// Relative paths in a policy are read from the policy file's directory.
fn in_dir(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Checks the whole file and builds what needs no network, one section after another; each
/// error names the line and column of what it is about.
pub(crate) fn resolve(
    file: &PolicyFile,
    base: &Path,
    at: &Locator<'_>,
) -> Result<Resolved, PolicyError> {
    let (keys, algorithms) = issuers(file, base, at)?;
    let names = limit_names(file, at)?;
    let (routes, named) = routes(file, &names, at)?;
    let scopes = limit_scopes(file, &names, &named, at)?;
    let mapping = mapping(file, base, at)?;
    let propagate = propagate(file);
    // Last, so that a file with other mistakes hears of those first.
    if file.issuers.is_empty() {
        return Err(at.error(
            0..0,
            "no [[issuers]]: a policy trusts at least one token issuer",
        ));
    }
    Ok(Resolved {
        keys,
        algorithms,
        routes: Routes::new(routes)
            .path_parameters(file.paths.parameters.0)
            .path_case(file.paths.case.0),
        scopes,
        mapping,
        propagate,
    })
}

/// `[[issuers]]`: each issuer once, with its audiences stated, exactly one key source and
/// algorithms its keys can verify. Returns each issuer's keys and algorithms, in order.
fn issuers(
    file: &PolicyFile,
    base: &Path,
    at: &Locator<'_>,
) -> Result<(Vec<KeysFrom>, Vec<Vec<Algorithm>>), PolicyError> {
    let mut keys = Vec::new();
    let mut algorithms = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for issuer in &file.issuers {
        let span = issuer.span();
        let section = issuer.get_ref();
        if !seen.insert(section.issuer.clone()) {
            return Err(at.error(
                span,
                format!("issuer {:?} is configured twice", section.issuer),
            ));
        }
        if section.audiences.is_none() {
            return Err(at.error(
                span,
                format!(
                    "issuer {:?}: audiences is required (audiences = [] accepts any audience)",
                    section.issuer
                ),
            ));
        }
        let from = issuer_keys(&section.keys, base, at)?;
        let hmac = {
            let keys = section.keys.get_ref();
            keys.hmac_secret_env.is_some() || keys.hmac_secret_file.is_some()
        };
        algorithms.push(issuer_algorithms(section, &from, hmac, at)?);
        keys.push(from);
    }
    Ok((keys, algorithms))
}

/// An issuer's `keys`: exactly one source; local keys are read now.
fn issuer_keys(
    keys: &toml::Spanned<KeysSection>,
    base: &Path,
    at: &Locator<'_>,
) -> Result<KeysFrom, PolicyError> {
    let span = keys.span();
    let section = keys.get_ref();
    let given = [
        section.jwks_url.is_some(),
        section.discovery == Some(true),
        section.jwks_file.is_some(),
        section.pem_files.is_some(),
        section.hmac_secret_env.is_some(),
        section.hmac_secret_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(at.error(
            span,
            "keys: set exactly one of jwks_url, discovery = true, jwks_file, pem_files, \
             hmac_secret_env, hmac_secret_file",
        ));
    }
    let remote = section.jwks_url.is_some() || section.discovery == Some(true);
    if section.startup.is_some() && !remote {
        return Err(at.error(
            span,
            "keys.startup applies to jwks_url and discovery only: local keys are read at once",
        ));
    }
    let bad_keys = |e: crate::ConfigError| at.error(span.clone(), format!("keys: {e}"));
    Ok(if let Some(url) = &section.jwks_url {
        if !cfg!(feature = "jwks") {
            return Err(at.error(span, "keys.jwks_url needs the crate's jwks feature"));
        }
        KeysFrom::JwksUrl(url.clone())
    } else if section.discovery == Some(true) {
        if !cfg!(feature = "jwks") {
            return Err(at.error(span, "keys.discovery needs the crate's jwks feature"));
        }
        KeysFrom::Discovery
    } else if let Some(file) = &section.jwks_file {
        KeysFrom::Local(KeySet::from_jwks_file(in_dir(base, file)).map_err(bad_keys)?)
    } else if let Some(files) = &section.pem_files {
        let mut all = String::new();
        for file in files {
            let text = std::fs::read_to_string(in_dir(base, file))
                .map_err(|e| at.error(span.clone(), format!("keys: pem file {file:?}: {e}")))?;
            all.push_str(&text);
            all.push('\n');
        }
        KeysFrom::Local(KeySet::from_pem(&all).map_err(bad_keys)?)
    } else if let Some(var) = &section.hmac_secret_env {
        KeysFrom::Local(KeySet::hmac_from_env(var).map_err(bad_keys)?)
    } else {
        let file = section.hmac_secret_file.as_deref().unwrap_or_default();
        KeysFrom::Local(KeySet::hmac_from_file(in_dir(base, file)).map_err(bad_keys)?)
    })
}

/// An issuer's `algorithms`: each of a kind its keys are (HMAC or public), and, for local
/// public keys, at least one a key can verify; all of its keys' kind when not given.
fn issuer_algorithms(
    section: &super::file::IssuerSection,
    from: &KeysFrom,
    hmac: bool,
    at: &Locator<'_>,
) -> Result<Vec<Algorithm>, PolicyError> {
    let Some(list) = &section.algorithms else {
        return Ok(Algorithm::ALL
            .into_iter()
            .filter(|a| hmac == (a.key_kind() == KeyKind::Hmac))
            .collect());
    };
    let span = list.span();
    let list: Vec<Algorithm> = list.get_ref().iter().map(|a| a.0).collect();
    if list.is_empty() {
        return Err(at.error(span, "algorithms: name at least one"));
    }
    for alg in &list {
        let kind = alg.key_kind();
        if hmac != (kind == KeyKind::Hmac) {
            let source = if hmac {
                "an HMAC secret"
            } else {
                "public keys"
            };
            return Err(at.error(
                span,
                format!(
                    "algorithms: {} needs {}, but this issuer's keys are {source}",
                    alg.name(),
                    kind_name(kind)
                ),
            ));
        }
    }
    if let KeysFrom::Local(set) = from
        && !hmac
        && !list
            .iter()
            .any(|alg| set.keys().iter().any(|k| k.allows(*alg)))
    {
        return Err(at.error(
            span,
            "algorithms: none of these can be verified by this issuer's keys",
        ));
    }
    Ok(list)
}

/// `[[rate_limits]]` names: each once; a Redis store only with the feature.
fn limit_names<'f>(file: &'f PolicyFile, at: &Locator<'_>) -> Result<Vec<&'f str>, PolicyError> {
    let mut names: Vec<&str> = Vec::new();
    for limit in &file.rate_limits {
        let name = limit.get_ref().name.get_ref();
        if names.contains(&name.as_str()) {
            return Err(at.error(
                limit.get_ref().name.span(),
                format!("rate limit {name:?} is defined twice"),
            ));
        }
        if let StoreValue::Redis(_) = limit.get_ref().store
            && !cfg!(feature = "redis")
        {
            return Err(at.error(
                limit.span(),
                "store = { redis = … } needs the crate's redis feature",
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// `[[routes]]`, in order, each naming its rate limits; and whether some route names each
/// limit.
fn routes(
    file: &PolicyFile,
    names: &[&str],
    at: &Locator<'_>,
) -> Result<(Vec<Route>, Vec<bool>), PolicyError> {
    let mut routes = Vec::new();
    let mut named = vec![false; names.len()];
    for route in &file.routes {
        let span = route.span();
        let section = route.get_ref();
        let mut built = Route::new(section.path.0.as_str())
            .map_err(|e| at.error(span.clone(), e.to_string()))?
            .auth(section.auth.0);
        if let Some(methods) = &section.methods {
            built = built.methods(methods.iter().map(|m| m.0.clone()));
        }
        if !section.scopes_all.is_empty() {
            built = built.scopes_all(section.scopes_all.iter().map(String::as_str));
        }
        if !section.scopes_any.is_empty() {
            built = built.scopes_any(section.scopes_any.iter().map(String::as_str));
        }
        if !section.roles_any.is_empty() {
            let claim = section.roles_claim.as_ref().map_or_else(
                || "roles".parse::<ClaimPath>().expect("a path"),
                |c| c.0.clone(),
            );
            built = built.roles_any(claim, section.roles_any.iter().map(String::as_str));
        } else if section.roles_claim.is_some() {
            return Err(at.error(span, "roles_claim without roles_any"));
        }
        for (claim, values) in &section.claims {
            let values: Vec<String> = values
                .iter()
                .map(|v| match v {
                    serde_json::Value::String(s) => Ok(s.clone()),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => Ok(v.to_string()),
                    _ => Err(at.error(
                        span.clone(),
                        format!(
                            "claims.{:?}: values are strings, numbers or booleans",
                            claim
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?;
            built = built.claim(claim.0.clone(), values);
        }
        if built.auth_mode() == crate::authz::Auth::None && built.has_rule() {
            return Err(at.error(
                span,
                "a route with auth = \"none\" cannot have rules (scopes, roles or claims)",
            ));
        }
        if let Some(limits) = &section.rate_limit {
            for name in limits.get_ref().iter() {
                let Some(i) = names.iter().position(|n| n == name) else {
                    return Err(at.error(
                        limits.span(),
                        format!("rate_limit {name:?} is not defined in [[rate_limits]]"),
                    ));
                };
                named[i] = true;
            }
            built = built.rate_limits(limits.get_ref().iter().map(String::as_str));
        }
        routes.push(built);
    }
    Ok((routes, named))
}

/// Where each rate limit applies: on the routes that name it, and for the one named `default`
/// also on the routes that name none and on requests that match no route. A limit no route
/// names is a mistake.
fn limit_scopes(
    file: &PolicyFile,
    names: &[&str],
    named: &[bool],
    at: &Locator<'_>,
) -> Result<Vec<Scope>, PolicyError> {
    let mut scopes = Vec::new();
    for ((limit, name), named) in file.rate_limits.iter().zip(names).zip(named) {
        if *name == "default" {
            scopes.push(Scope::Default);
        } else if *named {
            scopes.push(Scope::Named);
        } else {
            return Err(at.error(
                limit.span(),
                format!("rate limit {name:?} is used by no route (name it \"default\" to apply it where no route names one)"),
            ));
        }
    }
    Ok(scopes)
}

/// `[upstream_headers]` and `[assertion]`: the claims layer.
fn mapping(
    file: &PolicyFile,
    base: &Path,
    at: &Locator<'_>,
) -> Result<MapClaimsLayer, PolicyError> {
    let (span, headers) = match &file.upstream_headers {
        Some(headers) => (headers.span(), &headers.get_ref().0[..]),
        None => (0..0, &[][..]),
    };
    let mut mapping = MapClaimsLayer::new(
        headers
            .iter()
            .map(|(header, path)| (header.as_str().to_owned(), path.to_string())),
    )
    .map_err(|e| at.error(span, format!("upstream_headers: {e}")))?
    .remove_authorization(!file.token.forward);
    if let Some(assertion) = &file.assertion {
        let span = assertion.span();
        let section = assertion.get_ref();
        let pem = std::fs::read_to_string(in_dir(base, &section.key_file)).map_err(|e| {
            at.error(
                span.clone(),
                format!("assertion key_file {:?}: {e}", section.key_file),
            )
        })?;
        let mut signer = AssertionSigner::from_pem(&pem, &section.issuer, &section.audience)
            .map_err(|_| {
                at.error(
                    span.clone(),
                    format!(
                        "assertion key_file {:?} must hold an ES256 (P-256) or Ed25519 private key (PKCS#8)",
                        section.key_file
                    ),
                )
            })?
            .header(section.header.0.clone());
        if let Some(ttl) = &section.ttl {
            signer = signer.ttl(ttl.0);
        }
        mapping = mapping.assertion(signer);
    }
    Ok(mapping)
}

/// `[propagate]`: every value was checked as it was read.
fn propagate(file: &PolicyFile) -> PropagateLayer {
    let section = &file.propagate;
    let mut propagate = PropagateLayer::new()
        .request_id_header(section.request_id.0.clone())
        .trace_context(section.trace_context)
        .sample_new_traces(section.sample_new_traces)
        .propagate_headers(section.response_headers.iter().map(|h| h.0.clone()))
        .audit(section.audit)
        .request_context(section.request_context);
    if let Some(networks) = &section.trust_request_ids_from {
        let networks: Vec<IpNet> = networks.iter().map(|n| n.0).collect();
        propagate = propagate.trust_request_ids(TrustIncoming::Peers(networks.into()));
    }
    propagate
}

/// The whole stack a policy describes, as one layer: propagate, authenticate, authorize, map
/// claims, rate limit, in that order, run as one service ([`PolicyService`]) that matches the
/// route once per request and keeps what the stages decided as a local. Cheap to clone.
///
/// Its refusals are shaped by one hook, [`on_rejection`](Self::on_rejection), as for each layer
/// alone (see [`reject`](crate::reject)).
#[derive(Clone)]
pub struct PolicyLayer<R = DefaultRejection> {
    propagate: PropagateLayer,
    jwt: JwtAuthLayer<R>,
    authorize: AuthorizeLayer<R>,
    mapping: MapClaimsLayer,
    rate_limit: RateLimitLayer<R>,
    /// What was built from, to reuse what did not change.
    from: Arc<PolicyFile>,
    validator: Validator,
    limits: Arc<[Limit]>,
    /// The route table, matched once per request by the stack's decision core.
    routes: Routes,
}

impl<R> fmt::Debug for PolicyLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("propagate", &self.propagate)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl<R> PolicyLayer<R> {
    /// Replaces the response built for every refusal of the stack: authentication's 401 and
    /// 400, authorization's 403 and 401, the rate limit's 429 and 503 (see
    /// [`reject`](crate::reject)).
    pub fn on_rejection<R2: Clone>(self, rejection: R2) -> PolicyLayer<R2> {
        PolicyLayer {
            propagate: self.propagate,
            jwt: self.jwt.on_rejection(rejection.clone()),
            authorize: self.authorize.on_rejection(rejection.clone()),
            mapping: self.mapping,
            rate_limit: self.rate_limit.on_rejection(rejection),
            from: self.from,
            validator: self.validator,
            limits: self.limits,
            routes: self.routes,
        }
    }

    /// The validator (for its verified-token cache and statistics).
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The rate limits.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// The request id header (`[propagate] request_id`): every request the stack lets through
    /// carries the request's id in it.
    pub fn request_id_header(&self) -> &http::HeaderName {
        self.propagate.request_id_name()
    }

    /// The identity assertion's public keys as a JWKS, for the upstream to verify with (the
    /// gateway example serves it at `/.well-known/portcullis/jwks.json`).
    pub fn assertion_jwks(&self) -> Option<serde_json::Value> {
        self.mapping.assertion_signer().map(AssertionSigner::jwks)
    }
}

impl<S, R: Clone> Layer<S> for PolicyLayer<R> {
    type Service = PolicyService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService::new(
            inner,
            Arc::new(Stages {
                propagate: Arc::clone(self.propagate.config()),
                routes: self.routes.clone(),
                jwt: self.jwt.config(),
                authorize: self.authorize.parts(),
                mapping: self.mapping.clone(),
                rate_limit: self.rate_limit.parts(),
            }),
        )
    }
}

pub(crate) async fn build(
    policy: &Policy,
    previous: Option<&PolicyLayer>,
) -> Result<PolicyLayer, PolicyError> {
    let file = &policy.file;
    let resolved = &policy.resolved;
    let failed = |what: String| PolicyError::Build(what);

    // The validator: reused when the token sources and issuers are the same.
    let reuse_validator =
        previous.filter(|p| p.from.token == file.token && p.from.issuers == file.issuers);
    let validator = match reuse_validator {
        Some(previous) => previous.validator.clone(),
        None => {
            let mut builder = Validator::builder();
            for (i, issuer) in file.issuers.iter().enumerate() {
                let section = issuer.get_ref();
                let mut built = match &resolved.keys[i] {
                    KeysFrom::Local(set) => Issuer::new(section.issuer.as_str(), set.clone()),
                    #[cfg(feature = "jwks")]
                    KeysFrom::JwksUrl(url) => {
                        let keys = remote_options(section, url.as_str())
                            .build()
                            .await
                            .map_err(|e| failed(format!("issuer {:?}: {e}", section.issuer)))?;
                        Issuer::new(section.issuer.as_str(), keys)
                    }
                    #[cfg(feature = "jwks")]
                    KeysFrom::Discovery => {
                        let keys = crate::keys::RemoteJwks::discover(
                            &section.issuer,
                            remote_options(section, ""),
                        )
                        .await
                        .map_err(|e| failed(format!("issuer {:?}: {e}", section.issuer)))?;
                        Issuer::new(section.issuer.as_str(), keys)
                    }
                    #[cfg(not(feature = "jwks"))]
                    KeysFrom::JwksUrl(_) | KeysFrom::Discovery => {
                        return Err(failed("remote keys need the jwks feature".into()));
                    }
                };
                built = built
                    .audiences(section.audiences.iter().flatten().map(String::as_str))
                    .algorithms(resolved.algorithms[i].iter().copied());
                if let Some(leeway) = &section.leeway {
                    built = built.leeway(leeway.0);
                }
                if let Some(max) = &section.max_lifetime {
                    built = built.max_lifetime(max.0);
                }
                if let Some(typ) = &section.typ {
                    built = built.typ(typ.as_str());
                }
                if let Some(required) = &section.required_claims {
                    built = built.required_claims(required.iter().map(String::as_str));
                }
                builder = builder.issuer(built);
            }
            if let Some(budget) = &file.token.cache_budget {
                builder = builder.cache_budget(budget.0);
            }
            builder.build().map_err(|e| failed(e.to_string()))?
        }
    };

    // Rate limits: a limit whose section did not change keeps its state.
    let mut limits = Vec::new();
    for (i, section) in file.rate_limits.iter().enumerate() {
        let section = section.get_ref();
        let reused = previous.and_then(|p| {
            p.from
                .rate_limits
                .iter()
                .position(|old| old.get_ref() == section)
                .map(|j| p.limits[j].clone())
        });
        let limit = match reused {
            Some(limit) => limit,
            None => {
                let name = section.name.get_ref();
                let mut quota = section.rate.0;
                if let Some(burst) = section.burst {
                    quota = quota.burst(burst);
                }
                let mut limit = Limit::new(name, section.key.0.clone(), quota)
                    .map_err(|e| failed(format!("rate limit {name:?}: {e}")))?;
                if let Some(max) = section.max_keys {
                    limit = limit.max_keys(max);
                }
                if let Some(tiers) = &section.tiers {
                    limit = limit
                        .tiers(
                            tiers.claim.0.clone(),
                            tiers.values.iter().map(|(v, q)| (v.as_str(), q.0)),
                        )
                        .map_err(|e| failed(format!("rate limit {name:?}: {e}")))?;
                }
                match &section.store {
                    StoreValue::Memory => {}
                    #[cfg(feature = "redis")]
                    StoreValue::Redis(url) => {
                        let store = crate::rate_limit::RedisStore::connect(url)
                            .await
                            .map_err(|e| failed(format!("rate limit {name:?}: {e}")))?;
                        limit = limit.redis(store);
                    }
                    #[cfg(not(feature = "redis"))]
                    StoreValue::Redis(_) => {
                        return Err(failed("a Redis store needs the redis feature".into()));
                    }
                }
                limit
            }
        };
        limits.push(limit.scope(resolved.scopes[i]));
    }

    // One table: the decision core matches it once per request and hands the match to each
    // stage (the layers keep it too, for their configuration).
    let routes = resolved.routes.clone();
    let sources = file.token.sources.iter().map(|s| s.0.clone());
    let jwt = JwtAuthLayer::new(validator.clone())
        .sources(sources)
        .routes(routes.clone());
    let rate_limit = RateLimitLayer::new(limits.clone()).routes(routes.clone());
    let limits = limits.into();
    Ok(PolicyLayer {
        propagate: resolved.propagate.clone(),
        jwt,
        authorize: AuthorizeLayer::new(routes.clone()),
        mapping: resolved.mapping.clone(),
        rate_limit,
        from: Arc::new(file.clone()),
        validator,
        limits,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use http::{Request, Response, StatusCode};
    use tower_layer::Layer;
    use tower_service::Service;

    use crate::policy::Policy;

    /// The stack's three route-reading stages (authenticate, authorize, rate limit by route)
    /// share one search of the table per request, whatever the outcome.
    #[test]
    fn the_policy_stack_matches_the_route_once_per_request() {
        let policy = Policy::from_toml(
            r#"
            [[issuers]]
            issuer = "https://login.example.com/"
            audiences = ["orders-api"]
            keys = { pem_files = ["tests/keys/p256.pub.pem"] }

            [[routes]]
            path = "/health"
            auth = "none"
            rate_limit = "per-route"

            [[routes]]
            path = "/orders/**"
            scopes_all = ["read"]
            rate_limit = "per-route"

            [[rate_limits]]
            name = "per-route"
            key = "route"
            rate = "1000/s"
            "#,
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let layer = runtime.block_on(policy.build()).unwrap();
        let mut service = layer.layer(tower::service_fn(|_: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        }));
        let mut cx = Context::from_waker(Waker::noop());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |scope: &str| {
            let key =
                jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!("../../tests/keys/p256.pem"))
                    .unwrap();
            let claims = serde_json::json!({
                "iss": "https://login.example.com/", "aud": "orders-api", "sub": "ada",
                "scope": scope, "iat": now, "exp": now + 600,
            });
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            format!(
                "Bearer {}",
                jsonwebtoken::encode(&header, &claims, &key).unwrap()
            )
        };
        let (reader, writer) = (token("read"), token("write"));
        let mut send = |path: &str, bearer: Option<&str>| {
            let mut request = Request::get(path).body(()).unwrap();
            if let Some(bearer) = bearer {
                request
                    .headers_mut()
                    .insert("authorization", bearer.parse().unwrap());
            }
            let Poll::Ready(Ok(response)) = pin!(service.call(request)).poll(&mut cx) else {
                panic!("decided at once");
            };
            response.status()
        };
        let before = layer.routes.searches();
        let cases = [
            ("/health", None, StatusCode::OK, "public, limited by route"),
            (
                "/orders/1",
                None,
                StatusCode::UNAUTHORIZED,
                "refused at authentication",
            ),
            (
                "/elsewhere/../health",
                None,
                StatusCode::OK,
                "a path normalised once",
            ),
            (
                "/orders/1",
                Some(&reader),
                StatusCode::OK,
                "allowed, limited by route",
            ),
            (
                "/orders/1",
                Some(&writer),
                StatusCode::FORBIDDEN,
                "refused by the rule",
            ),
        ];
        for (n, (path, bearer, status, what)) in cases.into_iter().enumerate() {
            assert_eq!(send(path, bearer.map(|b| b.as_str())), status, "{what}");
            assert_eq!(layer.routes.searches() - before, n + 1, "{what}");
        }
    }
}
