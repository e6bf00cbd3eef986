use std::fmt;

use serde_json::{Map, Value};

use crate::crypto::Algorithm;

/// The latest numeric date accepted: 9999-12-31T23:59:59Z. Later values are treated as malformed.
pub(crate) const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Who a verified token says the caller is, computed once per token.
///
/// The layer puts an `Arc<Identity>` in the request's extensions; a cache hit hands out the
/// same `Arc`.
#[derive(Clone)]
pub struct Identity {
    /// What later layers derived from the claims, once per token.
    pub(crate) attached: Attachments,
    pub(crate) issuer: Box<str>,
    pub(crate) subject: Option<Box<str>>,
    pub(crate) audiences: Box<[Box<str>]>,
    pub(crate) scopes: Box<[Box<str>]>,
    pub(crate) expires_at: Option<u64>,
    pub(crate) not_before: Option<u64>,
    pub(crate) issued_at: Option<u64>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key_id: Option<Box<str>>,
    pub(crate) claims: Map<String, Value>,
}

/// Values later layers derive from an identity once per token (header values, a signed
/// assertion) and reuse for every request with the same cached token: each attached by its
/// owner (a layer's id) on first use, any number of owners, any type. The identity does not
/// know what they are; [`Clone`] leaves them behind (a clone derives afresh).
#[derive(Default)]
pub(crate) struct Attachments(std::sync::OnceLock<Box<Attachment>>);

struct Attachment {
    owner: u64,
    value: Box<dyn std::any::Any + Send + Sync>,
    next: Attachments,
}

impl Attachments {
    /// The value `owner` attached, attaching `init()` first if it has none. `None` only if
    /// `owner` attached a value of another type (an owner id names one type).
    pub(crate) fn get_or_attach<T: std::any::Any + Send + Sync>(
        &self,
        owner: u64,
        init: impl FnOnce() -> T,
    ) -> Option<&T> {
        let mut init = Some(init);
        let mut slot = self;
        loop {
            let node = slot.0.get_or_init(|| {
                let init = init.take().expect("an empty slot is filled once");
                Box::new(Attachment {
                    owner,
                    value: Box::new(init()),
                    next: Attachments::default(),
                })
            });
            if node.owner == owner {
                return node.value.downcast_ref();
            }
            slot = &node.next;
        }
    }
}

impl Clone for Attachments {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl crate::decision::Principal for Identity {
    fn subject(&self) -> Option<&str> {
        Identity::subject(self)
    }

    fn issuer(&self) -> &str {
        Identity::issuer(self)
    }
}

impl Identity {
    /// The `iss` claim: the issuer that signed the token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The `aud` claim, as a list.
    pub fn audiences(&self) -> &[Box<str>] {
        &self.audiences
    }

    /// The scopes, from `scope` (a space-separated string) and `scp` (an array, or a string).
    pub fn scopes(&self) -> &[Box<str>] {
        &self.scopes
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| &**s == scope)
    }

    /// The `exp` claim, in seconds since the Unix epoch.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// The `nbf` claim, in seconds since the Unix epoch.
    pub fn not_before(&self) -> Option<u64> {
        self.not_before
    }

    /// The `iat` claim, in seconds since the Unix epoch.
    pub fn issued_at(&self) -> Option<u64> {
        self.issued_at
    }

    /// The algorithm the token was signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The id of the key that verified the token, if it had one.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// Every claim of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// One top-level claim.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claim names only: values may be personal data and belong in no log by default.
        f.debug_struct("Identity")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A registered claim has the wrong JSON type or is out of range.
pub(crate) struct InvalidClaim;

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds, fractions truncated.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, InvalidClaim> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(InvalidClaim);
    };
    let secs = match (number.as_u64(), number.as_f64()) {
        (Some(secs), _) => secs,
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= MAX_NUMERIC_DATE as f64 => f as u64,
        _ => return Err(InvalidClaim),
    };
    if secs > MAX_NUMERIC_DATE {
        return Err(InvalidClaim);
    }
    Ok(Some(secs))
}

/// `sub`/`iss`: a string when present.
pub(crate) fn string_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &str,
) -> Result<Option<&'c str>, InvalidClaim> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(InvalidClaim),
    }
}

/// `aud`: a string or an array of strings.
pub(crate) fn audiences(claims: &Map<String, Value>) -> Result<Box<[Box<str>]>, InvalidClaim> {
    match claims.get("aud") {
        None => Ok(Box::default()),
        Some(Value::String(s)) => Ok(Box::new([s.as_str().into()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(Into::into).ok_or(InvalidClaim))
            .collect(),
        Some(_) => Err(InvalidClaim),
    }
}

/// Scopes from `scope` (space-separated string) and `scp` (array of strings, or a string).
pub(crate) fn scopes(claims: &Map<String, Value>) -> Result<Box<[Box<str>]>, &'static str> {
    let mut out: Vec<Box<str>> = Vec::new();
    let mut add_words =
        |s: &str| out.extend(s.split(' ').filter(|w| !w.is_empty()).map(Into::into));
    match claims.get("scope") {
        None => {}
        Some(Value::String(s)) => add_words(s),
        Some(_) => return Err("scope"),
    }
    match claims.get("scp") {
        None => {}
        Some(Value::String(s)) => add_words(s),
        Some(Value::Array(items)) => {
            for item in items {
                add_words(item.as_str().ok_or("scp")?);
            }
        }
        Some(_) => return Err("scp"),
    }
    out.dedup();
    Ok(out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn numeric_dates() {
        let c =
            map(json!({"a": 10, "b": 10.9, "c": "10", "d": -1, "e": 1e300, "f": 253402300800u64}));
        assert!(matches!(numeric_date(&c, "a"), Ok(Some(10))));
        assert!(matches!(numeric_date(&c, "b"), Ok(Some(10))));
        assert!(matches!(numeric_date(&c, "z"), Ok(None)));
        for bad in ["c", "d", "e", "f"] {
            assert!(matches!(numeric_date(&c, bad), Err(InvalidClaim)), "{bad}");
        }
    }

    #[test]
    fn scopes_from_both_forms() {
        let c = map(json!({"scope": "read  write", "scp": ["admin"]}));
        assert_eq!(
            &*scopes(&c).unwrap(),
            &["read".into(), "write".into(), "admin".into()] as &[Box<str>]
        );
        assert!(scopes(&map(json!({"scp": [1]}))).is_err());
        assert!(scopes(&map(json!({"scope": ["a"]}))).is_err());
    }

    #[test]
    fn audience_forms() {
        assert_eq!(audiences(&map(json!({"aud": "a"}))).ok().unwrap().len(), 1);
        assert_eq!(
            audiences(&map(json!({"aud": ["a", "b"]})))
                .ok()
                .unwrap()
                .len(),
            2
        );
        assert!(audiences(&map(json!({"aud": [1]}))).is_err());
        assert!(audiences(&map(json!({"aud": 1}))).is_err());
    }
}
