//! The policy file's shape: serde types that refuse unknown keys, and value types that check
//! themselves as they are read, so that a bad value is reported at its line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use crate::authz::path::PathPattern;
use crate::claims::ClaimPath;
use crate::crypto::Algorithm;
use crate::rate_limit::{Quota, RateKey};
use crate::token::TokenSource;

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    pub(crate) upstream: Option<String>,
    pub(crate) listen: Option<String>,
    #[serde(default)]
    pub(crate) token: TokenSection,
    #[serde(default)]
    pub(crate) issuers: Vec<Spanned<IssuerSection>>,
    #[serde(default)]
    pub(crate) routes: Vec<Spanned<RouteSection>>,
    #[serde(default)]
    pub(crate) rate_limits: Vec<Spanned<RateLimitSection>>,
    pub(crate) upstream_headers: Option<Spanned<UpstreamHeaders>>,
    pub(crate) assertion: Option<Spanned<AssertionSection>>,
    #[serde(default)]
    pub(crate) propagate: PropagateSection,
    #[serde(default)]
    pub(crate) paths: PathsSection,
    #[serde(default)]
    pub(crate) server: ServerSection,
}

/// How request paths are read before routes are matched.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathsSection {
    #[serde(default)]
    pub(crate) parameters: ParametersValue,
    #[serde(default)]
    pub(crate) case: CaseValue,
}

/// How a server built on the policy (the gateway example) treats its connections; the library's
/// layers do not read it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub(crate) header_read_timeout: Option<DurationValue>,
    pub(crate) idle_timeout: Option<DurationValue>,
    pub(crate) max_connections: Option<NonZeroU32>,
    pub(crate) max_header_bytes: Option<NonZeroU32>,
    pub(crate) underscore_headers: Option<UnderscoreValue>,
    pub(crate) workers: Option<NonZeroU32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSection {
    #[serde(default = "default_sources")]
    pub(crate) sources: Vec<SourceValue>,
    /// Whether the upstream receives the `Authorization` header (default: yes).
    #[serde(default = "yes")]
    pub(crate) forward: bool,
    /// The verified-token cache's memory budget (default: 64 MiB; `"0"` turns it off).
    #[serde(default)]
    pub(crate) cache_budget: Option<ByteSizeValue>,
}

impl Default for TokenSection {
    fn default() -> Self {
        Self {
            sources: default_sources(),
            forward: true,
            cache_budget: None,
        }
    }
}

fn default_sources() -> Vec<SourceValue> {
    vec![SourceValue(TokenSource::Bearer)]
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerSection {
    pub(crate) issuer: String,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) algorithms: Option<Spanned<Vec<AlgorithmValue>>>,
    pub(crate) leeway: Option<DurationValue>,
    pub(crate) max_lifetime: Option<DurationValue>,
    pub(crate) typ: Option<String>,
    pub(crate) required_claims: Option<Vec<String>>,
    pub(crate) keys: Spanned<KeysSection>,
}

/// Where an issuer's keys come from: exactly one of these.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysSection {
    pub(crate) jwks_url: Option<String>,
    pub(crate) discovery: Option<bool>,
    pub(crate) jwks_file: Option<String>,
    pub(crate) pem_files: Option<Vec<String>>,
    pub(crate) hmac_secret_env: Option<String>,
    pub(crate) hmac_secret_file: Option<String>,
    /// For `jwks_url` and `discovery`: `"require_keys"` (the default) or `"start_empty"`.
    pub(crate) startup: Option<StartupValue>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteSection {
    pub(crate) path: PatternValue,
    #[serde(default)]
    pub(crate) auth: AuthValue,
    pub(crate) methods: Option<Vec<MethodValue>>,
    #[serde(default)]
    pub(crate) scopes_all: Vec<String>,
    #[serde(default)]
    pub(crate) scopes_any: Vec<String>,
    #[serde(default)]
    pub(crate) roles_any: Vec<String>,
    pub(crate) roles_claim: Option<ClaimPathValue>,
    #[serde(default)]
    pub(crate) claims: BTreeMap<ClaimPathValue, OneOrMany<serde_json::Value>>,
    pub(crate) rate_limit: Option<Spanned<OneOrMany<String>>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitSection {
    pub(crate) name: Spanned<String>,
    pub(crate) key: RateKeyValue,
    pub(crate) rate: RateValue,
    pub(crate) burst: Option<NonZeroU32>,
    pub(crate) tiers: Option<TiersSection>,
    #[serde(default)]
    pub(crate) store: StoreValue,
    pub(crate) max_keys: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TiersSection {
    pub(crate) claim: ClaimPathValue,
    pub(crate) values: BTreeMap<String, RateValue>,
}

/// `"memory"` or `{ redis = "redis://…" }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum StoreValue {
    #[default]
    Memory,
    Redis(String),
}

impl<'de> Deserialize<'de> for StoreValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Redis {
            redis: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Redis(Redis),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            de::Error::custom("store must be \"memory\" or { redis = \"redis://…\" }")
        })? {
            Raw::Name(name) if name == "memory" => Ok(StoreValue::Memory),
            Raw::Name(name) => Err(de::Error::custom(format!(
                "unknown store {name:?}: use \"memory\" or {{ redis = \"redis://…\" }}"
            ))),
            Raw::Redis(Redis { redis }) => Ok(StoreValue::Redis(redis)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssertionSection {
    #[serde(default = "default_assertion_header")]
    pub(crate) header: HeaderNameValue,
    pub(crate) key_file: String,
    pub(crate) ttl: Option<DurationValue>,
    #[serde(default = "default_assertion_issuer")]
    pub(crate) issuer: String,
    #[serde(default = "default_assertion_audience")]
    pub(crate) audience: String,
}

fn default_assertion_header() -> HeaderNameValue {
    HeaderNameValue(http::HeaderName::from_static("x-portcullis-assertion"))
}

fn default_assertion_issuer() -> String {
    "portcullis".to_owned()
}

fn default_assertion_audience() -> String {
    "upstream".to_owned()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PropagateSection {
    #[serde(default = "default_request_id")]
    pub(crate) request_id: HeaderNameValue,
    #[serde(default = "yes")]
    pub(crate) trace_context: bool,
    #[serde(default = "yes")]
    pub(crate) sample_new_traces: bool,
    /// CIDRs whose request ids are kept; absent: any client's.
    pub(crate) trust_request_ids_from: Option<Vec<IpNetValue>>,
    #[serde(default)]
    pub(crate) response_headers: Vec<HeaderNameValue>,
    #[serde(default = "yes")]
    pub(crate) audit: bool,
    #[serde(default)]
    pub(crate) request_context: bool,
}

impl Default for PropagateSection {
    fn default() -> Self {
        Self {
            request_id: default_request_id(),
            trace_context: true,
            sample_new_traces: true,
            trust_request_ids_from: None,
            response_headers: Vec::new(),
            audit: true,
            request_context: false,
        }
    }
}

fn default_request_id() -> HeaderNameValue {
    HeaderNameValue(crate::propagate::X_REQUEST_ID)
}

fn yes() -> bool {
    true
}

/// A value or a list of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    // A list first: a JSON value would take a list as one value.
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one).iter(),
            OneOrMany::Many(many) => many.iter(),
        }
    }
}

/// Reads a string and parses it with `parse`, reporting `parse`'s message at the value.
fn parsed<'de, D, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(de::Error::custom)
}

macro_rules! value_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), |$text:ident| $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub(crate) struct $name(pub(crate) $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                parsed(deserializer, |$text: &str| $parse.map($name))
            }
        }
    };
}

value_type!(
    /// `"30s"`, `"5m"`, `"24h"`, `"250ms"`, `"1d"`, `"2 minutes"` (humantime's forms).
    DurationValue(Duration),
    |text| parse_duration(text)
);

value_type!(
    /// `"64MiB"`, `"512 KiB"`, `"1GiB"`, or a number of bytes (`"1048576"`).
    ByteSizeValue(usize),
    |text| parse_byte_size(text)
);

value_type!(
    /// `"100/min"`, `"10/s"`, `"5000/h"` (also `/sec`, `/second`, `/minute`, `/hour`, `/day`).
    RateValue(Quota),
    |text| parse_rate(text)
);

value_type!(
    /// An algorithm's registered name (`RS256`, `ES256`, `EdDSA`, …).
    AlgorithmValue(Algorithm),
    |text| Algorithm::from_name(text).ok_or_else(|| {
        format!(
            "unknown algorithm {text:?}: use one of {}",
            Algorithm::ALL.map(Algorithm::name).join(", ")
        )
    })
);

value_type!(
    /// A route pattern that can match a normalised path.
    PatternValue(PathPattern),
    |text| PathPattern::new(text).map_err(|e| e.to_string())
);

value_type!(
    /// `claim:<path>`, `ip`, `header:<name>`, `route`, `global`, or several joined by `+`.
    RateKeyValue(RateKey),
    |text| text.parse::<RateKey>()
);

value_type!(
    /// An HTTP method.
    MethodValue(http::Method),
    |text| {
        http::Method::from_bytes(text.as_bytes())
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| format!("{text:?} is not an HTTP method (upper case, as GET or POST)"))
    }
);

value_type!(
    /// `header:<name>` (`header:authorization` is the Bearer scheme), or `cookie:<name>`.
    SourceValue(TokenSource),
    |text| parse_source(text)
);

value_type!(
    /// An IP network in CIDR notation, or one address.
    IpNetValue(crate::rate_limit::IpNet),
    |text| text.parse::<crate::rate_limit::IpNet>()
);

/// `[upstream_headers]`: header name = claim path, in the file's order. Checked as it is read:
/// a header name, one that can carry a claim, and each at most once in any letter case (a map
/// keyed by the parsed name would keep only the last of `X-User` and `x-user`).
#[derive(Clone, PartialEq)]
pub(crate) struct UpstreamHeaders(pub(crate) Vec<(http::HeaderName, ClaimPath)>);

impl<'de> Deserialize<'de> for UpstreamHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = UpstreamHeaders;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of header names and claim paths")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(http::HeaderName, ClaimPath)> = Vec::new();
                while let Some((header, path)) = map.next_entry::<String, ClaimPathValue>()? {
                    let name = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                        de::Error::custom(format!("{header:?} is not a header name"))
                    })?;
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format!("header {name} is mapped twice")));
                    }
                    if [
                        http::header::AUTHORIZATION,
                        http::header::HOST,
                        http::header::COOKIE,
                    ]
                    .contains(&name)
                    {
                        return Err(de::Error::custom(format!(
                            "header {name} cannot carry a claim"
                        )));
                    }
                    out.push((name, path.0));
                }
                Ok(UpstreamHeaders(out))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl fmt::Debug for UpstreamHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(h, p)| (h.as_str(), p.to_string())))
            .finish()
    }
}

/// A header name (a map key, so it also orders and compares).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct HeaderNameValue(pub(crate) http::HeaderName);

impl PartialOrd for HeaderNameValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HeaderNameValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl<'de> Deserialize<'de> for HeaderNameValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parsed(deserializer, |text| {
            http::HeaderName::from_bytes(text.as_bytes())
                .map(HeaderNameValue)
                .map_err(|_| format!("{text:?} is not a header name"))
        })
    }
}

/// A claim path (a map key, so it also orders and compares).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClaimPathValue(pub(crate) ClaimPath);

impl PartialOrd for ClaimPathValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClaimPathValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_string().cmp(&other.0.to_string())
    }
}

impl<'de> Deserialize<'de> for ClaimPathValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        parsed(deserializer, |text| {
            text.parse::<ClaimPath>()
                .map(ClaimPathValue)
                .map_err(|e| format!("claim path {text:?}: {e}"))
        })
    }
}

macro_rules! keyword_value {
    ($(#[$doc:meta])* $name:ident($inner:ty), $what:literal, { $($text:literal => $value:expr),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                parsed(deserializer, |text| match text {
                    $($text => Ok($name($value)),)+
                    other => {
                        let choices = [$(concat!("\"", $text, "\"")),+];
                        let list = match choices.split_last() {
                            Some((last, rest)) if !rest.is_empty() => {
                                format!("{} or {last}", rest.join(", "))
                            }
                            _ => choices.join(""),
                        };
                        Err(format!(concat!("unknown ", $what, " {:?}: use {}"), other, list))
                    }
                })
            }
        }
    };
}

keyword_value!(
    /// `"required"` (the default), `"optional"` or `"none"`.
    AuthValue(crate::authz::Auth), "auth", {
        "required" => crate::authz::Auth::Required,
        "optional" => crate::authz::Auth::Optional,
        "none" => crate::authz::Auth::None,
    }
);

keyword_value!(
    /// `"reject"` (the default) or `"strip"`.
    ParametersValue(crate::authz::path::PathParameters), "parameters", {
        "reject" => crate::authz::path::PathParameters::Reject,
        "strip" => crate::authz::path::PathParameters::Strip,
    }
);

keyword_value!(
    /// `"reject_ambiguous"` (the default), `"sensitive"` or `"insensitive"`.
    CaseValue(crate::authz::path::PathCase), "case", {
        "reject_ambiguous" => crate::authz::path::PathCase::RejectAmbiguous,
        "sensitive" => crate::authz::path::PathCase::Sensitive,
        "insensitive" => crate::authz::path::PathCase::Insensitive,
    }
);

keyword_value!(
    /// `"drop"` or `"keep"`: whether client headers whose names hold `_` are kept.
    UnderscoreValue(bool), "underscore_headers", { "drop" => false, "keep" => true }
);

keyword_value!(
    /// `"require_keys"`: the policy is not built until the keys are fetched; `"start_empty"`: it
    /// is built at once, requests answer 503 until the keys arrive, and fetching goes on in the
    /// background.
    StartupValue(bool), "startup", { "require_keys" => false, "start_empty" => true }
);

impl Default for AuthValue {
    fn default() -> Self {
        AuthValue(crate::authz::Auth::Required)
    }
}

impl Default for ParametersValue {
    fn default() -> Self {
        ParametersValue(crate::authz::path::PathParameters::Reject)
    }
}

impl Default for CaseValue {
    fn default() -> Self {
        CaseValue(crate::authz::path::PathCase::RejectAmbiguous)
    }
}

impl StartupValue {
    #[cfg_attr(not(feature = "jwks"), allow(dead_code))]
    pub(crate) fn start_empty(self) -> bool {
        self.0
    }
}

macro_rules! debug_and_eq_by {
    ($name:ident, |$v:ident| $key:expr) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $v = self;
                write!(f, "{:?}", $key)
            }
        }
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                let key = |$v: &Self| $key;
                key(self) == key(other)
            }
        }
    };
}

debug_and_eq_by!(DurationValue, |v| v.0);
debug_and_eq_by!(ByteSizeValue, |v| v.0);
debug_and_eq_by!(RateValue, |v| v.0);
debug_and_eq_by!(AlgorithmValue, |v| v.0);
debug_and_eq_by!(PatternValue, |v| v.0.as_str().to_owned());
debug_and_eq_by!(RateKeyValue, |v| v.0.to_string());
debug_and_eq_by!(MethodValue, |v| v.0.clone());
debug_and_eq_by!(SourceValue, |v| format!("{:?}", v.0));
debug_and_eq_by!(IpNetValue, |v| v.0);

impl fmt::Debug for HeaderNameValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for ClaimPathValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `30s`, `5m`, `24h`, `250ms`, `1d`, `1h 30m`, `2 minutes` (humantime's forms), or a bare
/// number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = |why: String| {
        format!(
            "bad duration {text:?} ({why}): use a number and a unit, as \"30s\", \"5m\", \"24h\""
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| bad(e.to_string()));
    }
    humantime::parse_duration(text).map_err(|e| bad(e.to_string()))
}

/// `64MiB`, `512 KiB`, `1GiB`, `100B`, or a bare number of bytes.
pub(crate) fn parse_byte_size(text: &str) -> Result<usize, String> {
    let bad = || {
        format!(
            "bad size {text:?}: use a number of bytes or a number and KiB, MiB or GiB, as \"64MiB\""
        )
    };
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(bad()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// The period a rate's unit names: the unit words durations take, one of each.
fn rate_period(unit: &str) -> Option<Duration> {
    Some(Duration::from_secs(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    }))
}

/// `100/min`, `10/s`, `5000/h`, `20000/day` (also `/second`, `/minutes`, `/hours`, …).
pub(crate) fn parse_rate(text: &str) -> Result<Quota, String> {
    let bad = || {
        format!("bad rate {text:?}: use a count per unit, as \"100/min\", \"10/s\" or \"5000/h\"")
    };
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
    let period = rate_period(unit.trim()).ok_or_else(bad)?;
    Quota::new(count, period)
        .ok_or_else(|| format!("rate {text:?} is faster than one a nanosecond"))
}

fn parse_source(text: &str) -> Result<TokenSource, String> {
    match text.split_once(':') {
        Some(("header", name)) if name.eq_ignore_ascii_case("authorization") => {
            Ok(TokenSource::Bearer)
        }
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .map(TokenSource::header)
            .map_err(|_| format!("{name:?} is not a header name")),
        Some(("cookie", name)) if !name.is_empty() => Ok(TokenSource::cookie(name)),
        _ => Err(format!(
            "unknown token source {text:?}: use \"header:<name>\" or \"cookie:<name>\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_byte_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_byte_size("0"), Ok(0));
        for bad in ["64MB", "64 mb", "MiB", "-1MiB", "1.5GiB", ""] {
            let error = parse_byte_size(bad).unwrap_err();
            assert!(error.contains("use a number of bytes"), "{bad}: {error}");
        }
        let file: PolicyFile = toml::from_str("[token]\ncache_budget = \"256MiB\"\n").unwrap();
        assert_eq!(file.token.cache_budget.map(|b| b.0), Some(256 << 20));
    }

    #[test]
    fn keyword_values_name_their_choices() {
        let error = |text: &str| toml::from_str::<PolicyFile>(text).unwrap_err().to_string();
        let auth = error("[[routes]]\npath = \"/a\"\nauth = \"maybe\"\n");
        assert!(
            auth.contains(r#"unknown auth "maybe": use "required", "optional" or "none""#),
            "{auth}"
        );
        let server = error("[server]\nunderscore_headers = \"yes\"\n");
        assert!(
            server.contains(r#"unknown underscore_headers "yes": use "drop" or "keep""#),
            "{server}"
        );
        let paths: PolicyFile = toml::from_str("[paths]\ncase = \"sensitive\"\n").unwrap();
        assert_eq!(paths.paths.case.0, crate::authz::path::PathCase::Sensitive);
        assert_eq!(
            paths.paths.parameters.0,
            crate::authz::path::PathParameters::Reject
        );
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "s",
            "-1s",
            "1.5.1s",
            "10 parsecs",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // humantime reads fractions too.
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("2 minutes"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        // Rates take the same unit words.
        for (rate, seconds) in [
            ("1/seconds", 1),
            ("1/mins", 60),
            ("1/minutes", 60),
            ("1/hours", 3_600),
            ("1/hr", 3_600),
            ("1/days", 86_400),
        ] {
            assert_eq!(
                parse_rate(rate).unwrap().period(),
                Duration::from_secs(seconds),
                "{rate}"
            );
        }
        assert_eq!(parse_rate("100/min").unwrap().count(), 100);
        assert_eq!(
            parse_rate("10 / s").unwrap().period(),
            Duration::from_secs(1)
        );
        for bad in ["100", "0/min", "x/min", "100/fortnight", "-1/s", "/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
