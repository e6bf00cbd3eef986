use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::JwtError;
use super::cache::TokenCache;
use super::identity::{self, Identity};
use crate::clock::{Clock, SystemClock};
use crate::crypto::Algorithm;
use crate::error::ConfigError;
use crate::keys::{Key, KeySource};
use crate::token::{DEFAULT_MAX_TOKEN_LEN, Jws};

/// The default memory budget of the verified-token cache: 64 MiB (about 30 000 entries of
/// typical 1 KiB tokens; see the validation guide for what an entry is charged).
pub const DEFAULT_CACHE_BUDGET: usize = 64 << 20;

/// The longest a cached entry is served without re-verification when the token has no `exp`.
const MAX_CACHE_TTL_SECS: u64 = 3_600;

/// A set of algorithms, as a bit mask indexed by [`Algorithm::ALL`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct AlgorithmSet(u16);

impl AlgorithmSet {
    const ALL: AlgorithmSet = AlgorithmSet((1 << Algorithm::ALL.len()) - 1);

    fn bit(alg: Algorithm) -> u16 {
        let index = Algorithm::ALL.iter().position(|a| *a == alg).unwrap_or(0);
        1 << index
    }

    fn from_iter(algs: impl IntoIterator<Item = Algorithm>) -> Self {
        let mut set = 0;
        for alg in algs {
            set |= Self::bit(alg);
            // EdDSA and Ed25519 name the same algorithm on Ed25519 keys (RFC 9864).
            if matches!(alg, Algorithm::EdDSA | Algorithm::Ed25519) {
                set |= Self::bit(Algorithm::EdDSA) | Self::bit(Algorithm::Ed25519);
            }
        }
        AlgorithmSet(set)
    }

    fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }
}

impl fmt::Debug for AlgorithmSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(Algorithm::ALL.iter().filter(|a| self.contains(**a)))
            .finish()
    }
}

/// One trusted issuer: its exact `iss`, its keys and the rules its tokens must meet.
///
/// Defaults: every algorithm its keys can verify, no leeway, `exp` required, no `typ` or
/// lifetime rule. Audiences have no default: set them, or set an empty list to accept any.
pub struct Issuer {
    issuer: Box<str>,
    keys: Arc<dyn KeySource>,
    audiences: Option<Box<[Box<str>]>>,
    algorithms: AlgorithmSet,
    leeway: u64,
    required: Box<[Box<str>]>,
    typ: Option<Box<str>>,
    max_lifetime: Option<u64>,
    require_exp: bool,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("required", &self.required)
            .field("typ", &self.typ)
            .field("max_lifetime", &self.max_lifetime)
            .field("require_exp", &self.require_exp)
            .finish()
    }
}

impl Issuer {
    /// An issuer whose tokens carry exactly `issuer` as `iss` and are signed by `keys`.
    pub fn new(issuer: impl Into<Box<str>>, keys: impl KeySource) -> Self {
        Self {
            issuer: issuer.into(),
            keys: Arc::new(keys),
            audiences: None,
            algorithms: AlgorithmSet::ALL,
            leeway: 0,
            required: Box::default(),
            typ: None,
            max_lifetime: None,
            require_exp: true,
        }
    }

    /// An issuer whose keys are the JWKS at `url`, fetched now (and retried with backoff) and
    /// then refreshed in the background, as [`RemoteJwks`](crate::keys::RemoteJwks) with its
    /// default options does; use [`RemoteJwks::builder`](crate::keys::RemoteJwks::builder) and
    /// [`Issuer::new`] for other options. Feature `jwks`.
    #[cfg(feature = "jwks")]
    pub async fn jwks_url(
        issuer: impl Into<Box<str>>,
        url: impl Into<String>,
    ) -> Result<Self, crate::keys::JwksError> {
        let keys = crate::keys::RemoteJwks::builder(url).build().await?;
        Ok(Self::new(issuer, keys))
    }

    /// An issuer whose keys are found by OpenID Connect discovery from `issuer` (see
    /// [`RemoteJwks::discover`](crate::keys::RemoteJwks::discover)), with default options.
    /// Feature `jwks`.
    #[cfg(feature = "jwks")]
    pub async fn discovered(issuer: &str) -> Result<Self, crate::keys::JwksError> {
        let options = crate::keys::RemoteJwks::builder("");
        let keys = crate::keys::RemoteJwks::discover(issuer, options).await?;
        Ok(Self::new(issuer, keys))
    }

    /// The audiences accepted: a token passes if any of its `aud` values is one of them. An
    /// empty list accepts any audience (and none).
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.audiences = Some(audiences.into_iter().map(Into::into).collect());
        self
    }

    /// The algorithm allow-list. Each key still verifies only the algorithms of its kind.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = AlgorithmSet::from_iter(algorithms);
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs();
        self
    }

    /// Claims that must be present.
    pub fn required_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        self.required = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The `typ` header tokens must carry, e.g. `at+jwt` (RFC 9068). Compared
    /// case-insensitively, with or without `application/`.
    pub fn typ(mut self, typ: impl Into<Box<str>>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// The longest lifetime accepted: `exp` minus `iat` (or `nbf` when there is no `iat`).
    /// Tokens with neither are refused when this is set.
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = Some(max_lifetime.as_secs());
        self
    }

    /// Accepts tokens without `exp`. Off by default; such tokens never expire on their own.
    pub fn allow_missing_exp(mut self) -> Self {
        self.require_exp = false;
        self
    }

    /// The issuer's `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// Verifies tokens against a set of issuers, with a verified-token cache.
///
/// Cheap to clone: the configuration and the cache are shared.
///
/// # Example
///
/// ```
/// use jsonwebtoken::{encode, EncodingKey, Header};
/// use portcullis::jwt::{Issuer, Validator};
/// use portcullis::keys::KeySet;
///
/// let secret = b"0123456789abcdef0123456789abcdef";
/// let validator = Validator::builder()
///     .issuer(Issuer::new("https://issuer.example/", KeySet::hmac(secret).unwrap())
///         .audiences(["orders-api"]))
///     .build()
///     .unwrap();
///
/// let claims = serde_json::json!({"iss": "https://issuer.example/", "aud": "orders-api",
///     "sub": "ada", "exp": 4_000_000_000u64, "scope": "read:orders"});
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap();
///
/// let identity = validator.validate(token.as_bytes()).unwrap();
/// assert_eq!(identity.subject(), Some("ada"));
/// assert!(identity.has_scope("read:orders"));
/// assert!(validator.validate(b"not.a.token").is_err());
/// ```
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Box<[Issuer]>,
    clock: Arc<dyn Clock>,
    cache: Option<TokenCache>,
    max_token_len: usize,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("issuers", &self.inner.issuers)
            .field("cache", &self.inner.cache)
            .field("max_token_len", &self.inner.max_token_len)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Validator`].
pub struct ValidatorBuilder {
    issuers: Vec<Issuer>,
    clock: Arc<dyn Clock>,
    cache_budget: usize,
    cache_capacity: Option<usize>,
    max_token_len: usize,
}

impl fmt::Debug for ValidatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorBuilder")
            .field("issuers", &self.issuers)
            .field("cache_budget", &self.cache_budget)
            .field("cache_capacity", &self.cache_capacity)
            .field("max_token_len", &self.max_token_len)
            .finish_non_exhaustive()
    }
}

impl ValidatorBuilder {
    /// Trusts one more issuer.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// The clock expiry is checked against (the system clock by default).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The memory the verified-token cache may hold, in bytes ([`DEFAULT_CACHE_BUDGET`],
    /// 64 MiB, by default); `0` turns the cache off. Each entry is charged its token, its
    /// identity and claims, an allowance for values derived from them later, and its table
    /// slot (see [`CacheStats`](super::CacheStats)).
    pub fn cache_budget(mut self, bytes: usize) -> Self {
        self.cache_budget = bytes;
        self
    }

    /// Caps the verified-token cache at this many tokens as well as by its
    /// [budget](Self::cache_budget) (no cap by default); `0` turns the cache off.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = Some(capacity);
        self
    }

    /// The longest token accepted, in bytes (8 KiB by default).
    pub fn max_token_len(mut self, max_token_len: usize) -> Self {
        self.max_token_len = max_token_len;
        self
    }

    /// Checks the configuration and builds the validator.
    pub fn build(self) -> Result<Validator, ConfigError> {
        crate::crypto::install();
        if self.issuers.is_empty() {
            return Err(ConfigError::NoIssuers);
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if self.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: issuer.issuer.to_string(),
                });
            }
            if issuer.audiences.is_none() {
                return Err(ConfigError::MissingAudiences {
                    issuer: issuer.issuer.to_string(),
                });
            }
            if issuer.algorithms.0 == 0 {
                return Err(ConfigError::NoAlgorithms {
                    issuer: issuer.issuer.to_string(),
                });
            }
        }
        Ok(Validator {
            inner: Arc::new(Inner {
                issuers: self.issuers.into_boxed_slice(),
                clock: self.clock,
                cache: (self.cache_budget > 0 && self.cache_capacity != Some(0)).then(|| {
                    TokenCache::new(self.cache_budget, self.cache_capacity.unwrap_or(usize::MAX))
                }),
                max_token_len: self.max_token_len,
            }),
        })
    }
}

fn claim_error(name: &str) -> impl FnOnce(identity::InvalidClaim) -> JwtError + '_ {
    move |_| JwtError::InvalidClaim(name.into())
}

impl Validator {
    /// A builder with no issuer, the system clock and the default cache.
    pub fn builder() -> ValidatorBuilder {
        ValidatorBuilder {
            issuers: Vec::new(),
            clock: Arc::new(SystemClock),
            cache_budget: DEFAULT_CACHE_BUDGET,
            cache_capacity: None,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// Verifies `token`, answering from the cache when it was verified before and is still
    /// valid. A cache hit does not allocate.
    pub fn validate(&self, token: &[u8]) -> Result<Arc<Identity>, JwtError> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_len {
            return Err(JwtError::TooLarge {
                limit: inner.max_token_len,
            });
        }
        let now = inner.clock.now_secs();
        if let Some(identity) = inner.cache.as_ref().and_then(|c| c.get(token, now, true)) {
            return Ok(identity);
        }
        let verified = self.verify(token, now)?;
        let identity = Arc::new(verified.identity);
        if let Some(cache) = &inner.cache {
            cache.insert(
                token,
                Arc::clone(&identity),
                verified.key,
                verified.valid_until,
                now,
            );
        }
        Ok(identity)
    }

    /// The cached identity of `token`, when it was verified before and is still valid.
    pub(crate) fn cached(&self, token: &[u8]) -> Option<Arc<Identity>> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_len {
            return None;
        }
        let now = inner.clock.now_secs();
        inner.cache.as_ref().and_then(|c| c.get(token, now, false))
    }

    /// Verifies `token` without reading or filling the cache.
    pub fn validate_uncached(&self, token: &[u8]) -> Result<Identity, JwtError> {
        if token.len() > self.inner.max_token_len {
            return Err(JwtError::TooLarge {
                limit: self.inner.max_token_len,
            });
        }
        let now = self.inner.clock.now_secs();
        self.verify(token, now).map(|v| v.identity)
    }

    /// How many tokens the cache holds now.
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, TokenCache::len)
    }

    /// What the verified-token cache holds and has done: entries, bytes, budget, hits, misses,
    /// evictions and tokens it left out when full (all zero when the cache is off). With the
    /// `metrics` feature, [`CacheStats::record`](super::CacheStats::record) exports them.
    pub fn cache_stats(&self) -> super::CacheStats {
        self.inner
            .cache
            .as_ref()
            .map_or_else(Default::default, TokenCache::stats)
    }

    fn verify(&self, token: &[u8], now: u64) -> Result<Verified, JwtError> {
        let jws = Jws::split(token)?;
        let header = jws.header()?;
        let claims = jws.claims()?;

        // `iss` only picks the key set; it is trusted once the signature verifies.
        let iss = identity::string_claim(&claims, "iss")
            .map_err(claim_error("iss"))?
            .ok_or_else(|| JwtError::MissingClaim("iss".into()))?;
        let issuer = self
            .inner
            .issuers
            .iter()
            .find(|i| &*i.issuer == iss)
            .ok_or(JwtError::UnknownIssuer)?;
        if !issuer.algorithms.contains(header.alg) {
            return Err(JwtError::AlgorithmNotAllowed(header.alg));
        }
        if let Some(want) = &issuer.typ {
            let got = header.typ.as_deref().map(crate::token::strip_application);
            if !got
                .is_some_and(|got| got.eq_ignore_ascii_case(crate::token::strip_application(want)))
            {
                return Err(JwtError::WrongType);
            }
        }

        let key = self.verify_signature(issuer, &jws, header.alg, header.kid.as_deref())?;
        let identity = check_claims(issuer, claims, header.alg, header.kid, now)?;
        let valid_until = match identity.expires_at {
            Some(exp) => exp.saturating_add(issuer.leeway),
            None => now.saturating_add(MAX_CACHE_TTL_SECS),
        };
        Ok(Verified {
            identity,
            key,
            valid_until,
        })
    }

    fn verify_signature(
        &self,
        issuer: &Issuer,
        jws: &Jws<'_>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Arc<Key>, JwtError> {
        let keys = issuer
            .keys
            .key_set()
            .map_err(|_| JwtError::KeysUnavailable)?;
        let mut candidates = keys
            .keys()
            .iter()
            .filter(|key| key.allows(alg) && !key.is_revoked())
            .filter(|key| match (kid, key.kid()) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(match kid {
                Some(kid) if !keys.has_kid(kid) => {
                    issuer.keys.unknown_kid(kid);
                    JwtError::UnknownKid
                }
                _ => JwtError::NoMatchingKey,
            });
        }
        let message = jws.signing_input();
        jws.with_signature(|signature| {
            candidates
                .find(|key| key.verify(alg, message, signature))
                .cloned()
        })?
        .ok_or(JwtError::BadSignature)
    }
}

struct Verified {
    identity: Identity,
    key: Arc<Key>,
    valid_until: u64,
}

fn check_claims(
    issuer: &Issuer,
    claims: Map<String, Value>,
    alg: Algorithm,
    kid: Option<String>,
    now: u64,
) -> Result<Identity, JwtError> {
    let date =
        |name: &'static str| identity::numeric_date(&claims, name).map_err(claim_error(name));
    let exp = date("exp")?;
    let nbf = date("nbf")?;
    let iat = date("iat")?;
    let leeway = issuer.leeway;
    match exp {
        None if issuer.require_exp => return Err(JwtError::MissingClaim("exp".into())),
        Some(exp) if now >= exp.saturating_add(leeway) => return Err(JwtError::Expired),
        _ => {}
    }
    if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if iat.is_some_and(|iat| now.saturating_add(leeway) < iat) {
        return Err(JwtError::IssuedInFuture);
    }
    if let Some(max) = issuer.max_lifetime {
        let start = iat
            .or(nbf)
            .ok_or_else(|| JwtError::MissingClaim("iat".into()))?;
        let exp = exp.ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
        if exp.saturating_sub(start) > max {
            return Err(JwtError::LifetimeTooLong);
        }
    }
    let audiences = identity::audiences(&claims).map_err(claim_error("aud"))?;
    if let Some(accepted) = issuer.audiences.as_deref().filter(|a| !a.is_empty())
        && !audiences.iter().any(|aud| accepted.contains(aud))
    {
        return Err(JwtError::WrongAudience);
    }
    for name in issuer.required.iter() {
        if !claims.contains_key(&**name) {
            return Err(JwtError::MissingClaim(name.clone()));
        }
    }
    let subject = identity::string_claim(&claims, "sub")
        .map_err(claim_error("sub"))?
        .map(Into::into);
    let scopes = identity::scopes(&claims).map_err(|name| JwtError::InvalidClaim(name.into()))?;
    Ok(Identity {
        attached: Default::default(),
        issuer: issuer.issuer.clone(),
        subject,
        audiences,
        scopes,
        expires_at: exp,
        not_before: nbf,
        issued_at: iat,
        algorithm: alg,
        key_id: kid.map(Into::into),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_set_treats_eddsa_names_alike() {
        let set = AlgorithmSet::from_iter([Algorithm::EdDSA]);
        assert!(set.contains(Algorithm::Ed25519));
        assert!(!set.contains(Algorithm::HS256));
        assert!(AlgorithmSet::ALL.contains(Algorithm::PS512));
    }

    #[test]
    fn builder_checks() {
        let keys = crate::keys::KeySet::hmac(&[1; 32]).unwrap();
        let err = Validator::builder()
            .issuer(Issuer::new("a", keys.clone()))
            .build();
        assert!(matches!(err, Err(ConfigError::MissingAudiences { .. })));
        let err = Validator::builder()
            .issuer(Issuer::new("a", keys.clone()).audiences(["x"]))
            .issuer(Issuer::new("a", keys.clone()).audiences(["x"]))
            .build();
        assert!(matches!(err, Err(ConfigError::DuplicateIssuer { .. })));
        assert!(matches!(
            Validator::builder().build(),
            Err(ConfigError::NoIssuers)
        ));
        let err = Validator::builder()
            .issuer(Issuer::new("a", keys).audiences(["x"]).algorithms([]))
            .build();
        assert!(matches!(err, Err(ConfigError::NoAlgorithms { .. })));
    }
}
