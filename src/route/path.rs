//! Request-path normalisation and route patterns, without tower or http.
//!
//! # Normalisation
//!
//! A request path is read as segments between `/`, and:
//! 1. refused (400) if it holds an encoded slash, backslash or semicolon (`%2F`, `%5C`, `%3B`),
//!    a backslash, an encoded NUL (`%00`), a malformed percent escape, escapes that do not
//!    decode to UTF-8 (overlong forms such as `%C0%AE`), a control character, or more than 64
//!    segments;
//! 2. a `;` path parameter (`/admin;x`, `/public/..;/admin`), which servlet containers and the
//!    Java runtimes behind them strip before routing, is refused by default
//!    ([`PathParameters::Reject`], as Spring's strict firewall does); with
//!    [`PathParameters::Strip`] it is removed from its segment before anything else, and the
//!    path is forwarded without it;
//! 3. empty segments are dropped (`//orders` is `/orders`, `/orders/` matches `/orders`);
//! 4. a segment that decodes to `.` is dropped, one that decodes to `..` removes the segment
//!    before it (never above the root): `/admin/../orders`, `/admin/%2e%2e/orders` and
//!    `/admin/.%2E/orders` are all `/orders`;
//! 5. segments are compared with patterns after percent-decoding.
//!
//! When the path was not already in this form, the layers forward the normalised path, so the
//! service sees exactly the path that was authorised.
//!
//! # Example
//!
//! ```
//! use portcullis::authz::path::{NormalizedPath, PathError, PathParameters};
//!
//! let path = NormalizedPath::new("/public/%2e%2e//admin/").unwrap();
//! assert_eq!(path.to_path(), "/admin/");
//! assert_eq!(NormalizedPath::new("/admin;jsessionid=1").unwrap_err(), PathError::Parameter);
//! let stripped = NormalizedPath::parse("/public/..;x/admin;v=2", PathParameters::Strip).unwrap();
//! assert_eq!(stripped.to_path(), "/admin");
//! assert_eq!(NormalizedPath::new("/a%3bb").unwrap_err(), PathError::Forbidden);
//! ```

use crate::reject::Reason;
use std::fmt;

/// The most segments a request path may have.
pub const MAX_PATH_SEGMENTS: usize = 64;

/// Why a request cannot be read one way: its path, or its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// An encoded slash, backslash or semicolon, a backslash, an encoded NUL, a control
    /// character, a malformed percent escape, or escapes that do not decode to UTF-8.
    #[error("the path holds a forbidden or malformed character")]
    Forbidden,
    /// More than [`MAX_PATH_SEGMENTS`] segments.
    #[error("the path has too many segments")]
    TooLong,
    /// A `;` path parameter, refused under [`PathParameters::Reject`].
    #[error("the path holds a ';' parameter")]
    Parameter,
    /// The path matches a different route (or none) when letter case is ignored than when it
    /// is not, refused under [`PathCase::RejectAmbiguous`].
    #[error("the path matches another route when case is ignored")]
    AmbiguousCase,
    /// The method is not in upper case (`post`, `Delete`): servers that upper-case it would act
    /// on a method the routes did not see.
    #[error("the method is not in upper case")]
    Method,
}

impl PathError {
    /// A stable reason code for audit events and metrics: `bad_method` for
    /// [`PathError::Method`], `bad_path` for the others.
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::Method => Reason::BadMethod.code(),
            _ => Reason::BadPath.code(),
        }
    }
}

/// How a `;` path parameter (`/admin;jsessionid=1`, `/..;/`) is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathParameters {
    /// Refuse (400) any path with a `;` in it (the default).
    #[default]
    Reject,
    /// Remove `;` and what follows it up to the next `/` from every segment before
    /// normalising and matching, and forward the path without them: for an upstream that
    /// strips parameters itself (a servlet container) and needs none of them.
    Strip,
}

/// How letter case in a request path is compared with route patterns.
///
/// The gate cannot know how the upstream reads case: IIS and other Windows-hosted runtimes
/// serve `/ADMIN/users` as `/admin/users`, most others do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathCase {
    /// Refuse (400) a request whose path would match a different route (or none) compared
    /// case-insensitively than compared exactly (the default): `/ADMIN/users` beside a rule on
    /// `/admin/**`.
    #[default]
    RejectAmbiguous,
    /// The upstream reads paths case-sensitively: compare exactly.
    Sensitive,
    /// The upstream reads paths case-insensitively: compare ignoring ASCII case.
    Insensitive,
}

/// A request path split into its normalised segments, borrowed from the path.
#[derive(Clone, Copy)]
pub struct NormalizedPath<'p> {
    path: &'p str,
    bounds: [(u16, u16); MAX_PATH_SEGMENTS],
    /// Bit `i` is set when segment `i` holds a percent escape.
    escaped: u64,
    len: usize,
    canonical: bool,
    trailing_slash: bool,
}

impl fmt::Debug for NormalizedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.segments()).finish()
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded bytes of a raw segment (escapes already checked).
fn decoded(raw: &str) -> impl Iterator<Item = u8> + '_ {
    let bytes = raw.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *bytes.get(i)?;
        if b == b'%' {
            let value = hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?;
            i += 3;
            Some(value)
        } else {
            i += 1;
            Some(b)
        }
    })
}

/// Whether the raw segment decodes to exactly `literal`.
fn decodes_to(raw: &str, literal: &str) -> bool {
    decoded(raw).eq(literal.bytes())
}

/// Whether the raw segment decodes to `literal`, ignoring ASCII case.
pub(crate) fn decodes_to_ignoring_case(raw: &str, literal: &str) -> bool {
    decoded(raw)
        .map(|b| b.to_ascii_lowercase())
        .eq(literal.bytes().map(|b| b.to_ascii_lowercase()))
}

/// Whether a segment (`escaped` when it holds a percent escape) is `literal`, exactly or
/// ignoring ASCII case. A plain segment is compared as it is, without decoding.
fn same_segment(raw: &str, escaped: bool, literal: &str, ignoring_case: bool) -> bool {
    match (escaped, ignoring_case) {
        (false, false) => raw == literal,
        (false, true) => raw == literal || raw.eq_ignore_ascii_case(literal),
        (true, false) => decodes_to(raw, literal),
        (true, true) => decodes_to_ignoring_case(raw, literal),
    }
}

/// Whether `bytes` are well-formed UTF-8 (no overlong forms, surrogates or values past
/// U+10FFFF), read one byte at a time.
fn is_utf8(bytes: impl Iterator<Item = u8>) -> bool {
    let (mut need, mut lower, mut upper) = (0u8, 0x80u8, 0xBFu8);
    for b in bytes {
        if need == 0 {
            (need, lower, upper) = match b {
                0x00..=0x7F => continue,
                0xC2..=0xDF => (1, 0x80, 0xBF),
                0xE0 => (2, 0xA0, 0xBF),
                0xED => (2, 0x80, 0x9F),
                0xE1..=0xEF => (2, 0x80, 0xBF),
                0xF0 => (3, 0x90, 0xBF),
                0xF1..=0xF3 => (3, 0x80, 0xBF),
                0xF4 => (3, 0x80, 0x8F),
                _ => return false,
            };
        } else {
            if !(lower..=upper).contains(&b) {
                return false;
            }
            (need, lower, upper) = (need - 1, 0x80, 0xBF);
        }
    }
    need == 0
}

impl<'p> NormalizedPath<'p> {
    /// Normalises `path` (the path part of a request target, without the query), refusing `;`
    /// path parameters.
    pub fn new(path: &'p str) -> Result<Self, PathError> {
        Self::parse(path, PathParameters::Reject)
    }

    /// Normalises `path`, reading `;` path parameters as `parameters` says.
    pub fn parse(path: &'p str, parameters: PathParameters) -> Result<Self, PathError> {
        let bytes = path.as_bytes();
        if path.len() > usize::from(u16::MAX) {
            return Err(PathError::TooLong);
        }
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\\' => return Err(PathError::Forbidden),
                b if b < 0x20 || b == 0x7f => return Err(PathError::Forbidden),
                b';' if parameters == PathParameters::Reject => return Err(PathError::Parameter),
                b'%' => {
                    let (Some(hi), Some(lo)) = (
                        bytes.get(i + 1).copied().and_then(hex),
                        bytes.get(i + 2).copied().and_then(hex),
                    ) else {
                        return Err(PathError::Forbidden);
                    };
                    if matches!(hi << 4 | lo, b'/' | b'\\' | b';' | 0) {
                        return Err(PathError::Forbidden);
                    }
                }
                _ => {}
            }
        }
        let mut out = NormalizedPath {
            path,
            bounds: [(0, 0); MAX_PATH_SEGMENTS],
            escaped: 0,
            len: 0,
            canonical: path.starts_with('/') || path.is_empty(),
            trailing_slash: path.len() > 1 && path.ends_with('/'),
        };
        let mut start = 0;
        for whole in path.split('/') {
            let s = start;
            start = s + whole.len() + 1;
            // Under Strip, a segment ends at its first ';' (Reject refused every ';' above).
            let cut = match parameters {
                PathParameters::Strip => whole.find(';'),
                PathParameters::Reject => None,
            };
            let raw = match cut {
                Some(at) => {
                    out.canonical = false;
                    &whole[..at]
                }
                None => whole,
            };
            let e = s + raw.len();
            if raw.is_empty() {
                // Leading "" before the first '/' and one trailing "" are canonical.
                if s != 0 && s + whole.len() != path.len() {
                    out.canonical = false;
                }
                continue;
            }
            let escaped = raw.bytes().any(|b| b == b'%');
            if escaped && !is_utf8(decoded(raw)) {
                return Err(PathError::Forbidden);
            }
            if same_segment(raw, escaped, ".", false) {
                out.canonical = false;
                continue;
            }
            if same_segment(raw, escaped, "..", false) {
                out.canonical = false;
                out.len = out.len.saturating_sub(1);
                continue;
            }
            if out.len == MAX_PATH_SEGMENTS {
                return Err(PathError::TooLong);
            }
            // Both fit in u16: the path is at most u16::MAX bytes long.
            out.bounds[out.len] = (s as u16, e as u16);
            let bit = 1u64 << out.len;
            out.escaped = if escaped {
                out.escaped | bit
            } else {
                out.escaped & !bit
            };
            out.len += 1;
        }
        Ok(out)
    }

    /// The raw (still percent-encoded) segments.
    pub fn segments(&self) -> impl Iterator<Item = &'p str> + '_ {
        self.bounds[..self.len]
            .iter()
            .map(|&(s, e)| &self.path[usize::from(s)..usize::from(e)])
    }

    /// The raw segments, each with whether it holds a percent escape.
    fn segments_marked(&self) -> impl Iterator<Item = (&'p str, bool)> + '_ {
        self.segments()
            .enumerate()
            .map(|(i, raw)| (raw, self.escaped & (1u64 << i) != 0))
    }

    /// How many segments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the path is the root.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the raw path was already normalised (no empty or dot segments, no parameters).
    pub fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// Calls `f` with the percent-decoded bytes of each segment, in chunks of at most 256 bytes
    /// (a segment boundary always starts a new chunk). Spellings of one path that normalise
    /// alike give the same calls. Does not allocate.
    pub fn for_each_decoded(&self, mut f: impl FnMut(&[u8])) {
        let mut buffer = [0u8; 256];
        for segment in self.segments() {
            let mut len = 0;
            for b in decoded(segment) {
                if len == buffer.len() {
                    f(&buffer);
                    len = 0;
                }
                buffer[len] = b;
                len += 1;
            }
            f(&buffer[..len]);
        }
    }

    /// The normalised path as a string (raw segments joined, with a trailing slash when the
    /// request had one). Allocates; the layers call it only when the path was not canonical.
    pub fn to_path(&self) -> String {
        let mut out = String::with_capacity(self.path.len());
        for segment in self.segments() {
            out.push('/');
            out.push_str(segment);
        }
        if out.is_empty() || self.trailing_slash {
            out.push('/');
        }
        out
    }
}

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Any,
}

/// A route's path pattern: exact (`/health`), with `*` (or `{name}`, as axum writes it) for
/// exactly one segment (`/orders/*/items`, `/orders/{id}/items`), and ending in `/**` for a
/// prefix (`/orders/**` matches `/orders` and everything below it).
///
/// A pattern that the matcher could never match as written is an error, never a rule that is
/// silently skipped: empty, `.` or `..` segments, `**` before the end, wildcards inside a
/// segment (`a*`), other routers' syntax (`:id`, `{*rest}`, `{id:[0-9]+}`), regular-expression
/// characters (`( ) [ ] ^ $ | + ?`), `;`, `%`, `#`, `\`, blanks and control characters.
///
/// # Example
///
/// ```
/// use portcullis::authz::path::{NormalizedPath, PathPattern};
///
/// let pattern = PathPattern::new("/orders/{id}/items").unwrap();
/// assert!(pattern.matches(&NormalizedPath::new("/orders/42/items").unwrap()));
/// assert!(PathPattern::new("/orders/:id").is_err());
/// assert!(PathPattern::new("/orders/{*rest}").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: std::sync::Arc<str>,
    segments: Box<[Segment]>,
    prefix: bool,
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({})", self.text)
    }
}

/// Why a path pattern is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern does not start with `/`.
    #[error("path pattern {0:?} must start with '/'")]
    NotAbsolute(String),
    /// A segment could never match a normalised path as written.
    #[error("path pattern {pattern:?} can never match a request: {reason}")]
    NeverMatches {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why one segment of a pattern cannot match, if it cannot.
fn segment_problem(raw: &str) -> Option<&'static str> {
    const REGEX: &[char] = &['(', ')', '[', ']', '^', '$', '|', '+', '?'];
    Some(match raw {
        "" => "an empty segment ('//' or a trailing '/'): requests are matched without them",
        "." | ".." => "a '.' or '..' segment: requests are matched after removing them",
        raw if raw.starts_with("{*") => "'{*rest}' is not supported: end the pattern with '/**'",
        raw if raw.starts_with('{') || raw.ends_with('}') => {
            "'{' and '}' only as a whole segment '{name}' (one segment, like '*')"
        }
        raw if raw.contains('*') => {
            "'*' only as a whole segment, and '**' only as the last one ('/prefix/**')"
        }
        raw if raw.starts_with(':') => "':name' is not supported: use '*' or '{name}'",
        raw if raw.contains(REGEX) => {
            "regular expressions are not supported: use '*' for one segment or '/**' for a prefix"
        }
        raw if raw.contains([';', '%', '#', '\\', '"', '<', '>', '`', '{', '}']) => {
            "';', '%', '#', '\\', quotes, '<', '>' and braces never reach the matcher as written"
        }
        raw if raw.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            "blanks and control characters never reach the matcher as written"
        }
        _ => return None,
    })
}

/// Whether a whole segment is `{name}`, axum's one-segment parameter.
fn is_named_parameter(raw: &str) -> bool {
    raw.strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

impl PathPattern {
    /// Parses a pattern.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let never = |reason| PatternError::NeverMatches {
            pattern: pattern.to_owned(),
            reason,
        };
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute(pattern.to_owned()));
        };
        let (body, prefix) = match body.strip_suffix("**") {
            Some("") => ("", true),
            Some(rest) if rest.ends_with('/') => (&rest[..rest.len() - 1], true),
            _ => (body, false),
        };
        if prefix && body.is_empty() && pattern != "/**" {
            return Err(never("an empty segment before '/**'"));
        }
        let mut segments = Vec::new();
        if !body.is_empty() {
            for raw in body.split('/') {
                let segment = if raw == "*" || is_named_parameter(raw) {
                    Segment::Any
                } else if let Some(reason) = segment_problem(raw) {
                    return Err(never(reason));
                } else {
                    Segment::Literal(raw.into())
                };
                segments.push(segment);
            }
        }
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(never("more segments than a request path may have"));
        }
        Ok(Self {
            text: pattern.into(),
            segments: segments.into_boxed_slice(),
            prefix,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern text, shared.
    pub(crate) fn text(&self) -> &std::sync::Arc<str> {
        &self.text
    }

    /// Whether the normalised path matches, comparing letters exactly. Does not allocate.
    pub fn matches(&self, path: &NormalizedPath<'_>) -> bool {
        self.matches_with(path, false)
    }

    /// Whether the normalised path matches, ignoring ASCII case. Does not allocate.
    pub fn matches_ignoring_case(&self, path: &NormalizedPath<'_>) -> bool {
        self.matches_with(path, true)
    }

    fn matches_with(&self, path: &NormalizedPath<'_>, ignoring_case: bool) -> bool {
        let count_ok = if self.prefix {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        count_ok
            && self
                .segments
                .iter()
                .zip(path.segments_marked())
                .all(|(pattern, (raw, escaped))| match pattern {
                    Segment::Any => true,
                    Segment::Literal(literal) => same_segment(raw, escaped, literal, ignoring_case),
                })
    }
}

/// Normalises and matches arbitrary input, for the fuzz target: whenever the raw path is
/// accepted, its normalised form is canonical, normalises to itself, holds no `;`, and matches
/// the same patterns (so the path forwarded is the path that was matched).
#[cfg(fuzzing)]
pub(crate) fn fuzz_route(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let parameters = if mode & 1 == 0 {
        PathParameters::Reject
    } else {
        PathParameters::Strip
    };
    let patterns = [
        "/",
        "/**",
        "/admin/**",
        "/orders/*",
        "/orders/{id}/items",
        "/a/b",
        "/health",
    ]
    .map(|p| PathPattern::new(p).unwrap());
    let Ok(raw) = NormalizedPath::parse(path, parameters) else {
        return;
    };
    if parameters == PathParameters::Reject {
        assert!(!path.contains(';'), "a ';' is refused: {path:?}");
    }
    let lower = path.to_ascii_lowercase();
    assert!(!lower.contains("%3b") && !lower.contains("%2f") && !lower.contains("%5c"));
    let normal = raw.to_path();
    assert!(!normal.contains(';'), "parameters never reach the upstream");
    let again = NormalizedPath::new(&normal).expect("a normalised path is valid");
    assert!(again.is_canonical(), "{normal:?} is canonical");
    assert_eq!(again.to_path(), normal, "normalisation is idempotent");
    for pattern in &patterns {
        assert_eq!(
            pattern.matches(&raw),
            pattern.matches(&again),
            "{pattern:?} on {path:?}"
        );
        assert_eq!(
            pattern.matches_ignoring_case(&raw),
            pattern.matches_ignoring_case(&again),
            "{pattern:?} on {path:?}"
        );
        if pattern.matches(&raw) {
            assert!(pattern.matches_ignoring_case(&raw));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, PathError> {
        NormalizedPath::new(path).map(|p| p.to_path())
    }

    #[test]
    fn normalisation() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/orders", "/orders"),
            ("//orders", "/orders"),
            ("/orders/", "/orders/"),
            ("/orders//", "/orders/"),
            ("/admin/../orders", "/orders"),
            ("/admin/%2e%2e/orders", "/orders"),
            ("/admin/%2E%2e/orders", "/orders"),
            ("/admin/.%2e/orders", "/orders"),
            ("/admin/./x", "/admin/x"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/../../../c", "/c"),
            ("/a/%2e%2e%2e", "/a/%2e%2e%2e"),
            ("/caf%C3%A9", "/caf%C3%A9"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%00",
            "/a%zz",
            "/a%2",
            "/a\tb",
            "/a%3bb",
            "/a%3Bb",
            "/%3b/admin",
            "/%c0%ae%c0%ae/admin",
            "/%c0%af",
            "/a%80",
            "/a%ed%a0%80",
            "/caf\u{e9}%a9",
            "/a%f4%90%80%80",
        ] {
            assert_eq!(norm(bad), Err(PathError::Forbidden), "{bad}");
        }
        assert_eq!(norm(&"/a".repeat(65)), Err(PathError::TooLong));
        assert!(NormalizedPath::new("/a/b/").unwrap().is_canonical());
        assert!(!NormalizedPath::new("/a//b").unwrap().is_canonical());
        assert!(!NormalizedPath::new("/a/./b").unwrap().is_canonical());
    }

    #[test]
    fn decoded_segments_are_the_same_for_every_spelling() {
        let collect = |path: &str| {
            let mut out = Vec::new();
            NormalizedPath::new(path)
                .unwrap()
                .for_each_decoded(|chunk| out.push(chunk.to_vec()));
            out
        };
        let want = collect("/orders/42");
        for spelling in [
            "//orders/42",
            "/%6Frders/42/",
            "/x/../orders/./42",
            "/%6frders/%34%32",
        ] {
            assert_eq!(collect(spelling), want, "{spelling}");
        }
        assert_ne!(collect("/orders/4/2"), want);
        assert_eq!(collect(&format!("/{}", "a".repeat(300))).len(), 2);
    }

    #[test]
    fn patterns() {
        let m = |pattern: &str, path: &str| {
            PathPattern::new(pattern)
                .unwrap()
                .matches(&NormalizedPath::new(path).unwrap())
        };
        assert!(m("/health", "/health") && m("/health", "/health/") && !m("/health", "/health/x"));
        assert!(m("/orders/**", "/orders") && m("/orders/**", "/orders/1/items"));
        assert!(!m("/orders/**", "/ordersx") && !m("/orders/**", "/"));
        assert!(
            m("/orders/*", "/orders/42")
                && !m("/orders/*", "/orders")
                && !m("/orders/*", "/orders/1/2")
        );
        assert!(m("/orders/*/items", "/orders/7/items"));
        assert!(m("/**", "/") && m("/**", "/anything/at/all"));
        assert!(m("/", "/") && !m("/", "/x"));
        assert!(m("/café", "/caf%C3%A9"), "segments compare decoded");
        assert!(m("/admin/**", "/public/../admin/users"));
        assert!(!m("/public/**", "/public/../admin/users"));
        assert!(m("/orders/{id}", "/orders/42") && !m("/orders/{id}", "/orders/4/2"));
        assert!(m("/orders/{order_id}/items/*", "/orders/7/items/x"));
        for bad in [
            "orders",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/**/b",
            "/a**",
            "/a/b%2f",
            "/orders/",
            "//**",
            "/orders/:id",
            "/orders/{*rest}",
            "/orders/{id:[0-9]+}",
            "/orders/{}",
            "/orders/{id",
            "/orders/id}",
            "/orders/x{id}",
            "/orders/a*",
            "/orders/(\\d+)",
            "/orders/[0-9]",
            "/orders/^x$",
            "/a|b",
            "/a+",
            "/a?b",
            "/a;b",
            "/a#b",
            "/a b",
            "/a\u{0}",
        ] {
            assert!(PathPattern::new(bad).is_err(), "{bad}");
        }
        let err = PathPattern::new("/orders/:id").unwrap_err().to_string();
        assert!(err.contains("'{name}'"), "{err}");
    }

    #[test]
    fn path_parameters_are_refused_or_stripped_in_every_position() {
        for path in [
            "/admin;x/index.html",
            "/public/..;/admin/index.html",
            "/admin;",
            "/;x/admin",
            "/admin/;x",
            "/admin/users;jsessionid=1",
            "/a;b;c/d",
        ] {
            assert_eq!(
                NormalizedPath::new(path).unwrap_err(),
                PathError::Parameter,
                "{path}"
            );
        }
        let strip = |path: &str| {
            NormalizedPath::parse(path, PathParameters::Strip)
                .map(|p| (p.to_path(), p.is_canonical()))
        };
        assert_eq!(
            strip("/admin;x/index.html"),
            Ok(("/admin/index.html".into(), false))
        );
        assert_eq!(
            strip("/public/..;/admin/index.html"),
            Ok(("/admin/index.html".into(), false))
        );
        assert_eq!(
            strip("/public/.;x/admin"),
            Ok(("/public/admin".into(), false))
        );
        assert_eq!(strip("/;x/admin"), Ok(("/admin".into(), false)));
        assert_eq!(strip("/admin;x/"), Ok(("/admin/".into(), false)));
        assert_eq!(strip("/admin/;x"), Ok(("/admin".into(), false)));
        assert_eq!(strip("/admin"), Ok(("/admin".into(), true)));
        // Encoded semicolons are refused in both modes: servers disagree on what they mean.
        assert_eq!(strip("/admin%3bx"), Err(PathError::Forbidden));
        assert_eq!(strip("/public/..%3B/admin"), Err(PathError::Forbidden));
    }

    #[test]
    fn case_insensitive_matching() {
        let pattern = PathPattern::new("/admin/**").unwrap();
        let path = NormalizedPath::new("/ADMIN/users").unwrap();
        assert!(!pattern.matches(&path) && pattern.matches_ignoring_case(&path));
        let path = NormalizedPath::new("/%41dmin/users").unwrap();
        assert!(!pattern.matches(&path) && pattern.matches_ignoring_case(&path));
        assert!(
            PathPattern::new("/café")
                .unwrap()
                .matches_ignoring_case(&NormalizedPath::new("/CAF%C3%A9").unwrap())
        );
    }

    #[test]
    fn utf8_of_escapes() {
        assert!(is_utf8("héllo €𝄞".bytes()));
        for bad in [
            &[0xC0, 0xAE][..],
            &[0xE0, 0x80, 0xAE],
            &[0xED, 0xA0, 0x80],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xC3],
            &[0x80],
        ] {
            assert!(!is_utf8(bad.iter().copied()), "{bad:x?}");
        }
    }
}
