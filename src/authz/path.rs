//! Request-path normalisation and route patterns, without tower or http.
//!
//! # Normalisation
//!
//! A request path is read as segments between `/`, and:
//! 1. refused (400) if it holds an encoded slash or backslash (`%2F`, `%5C`), a backslash, an
//!    encoded NUL (`%00`), a malformed percent escape, a control character, or more than 64
//!    segments;
//! 2. empty segments are dropped (`//orders` is `/orders`, `/orders/` matches `/orders`);
//! 3. a segment that decodes to `.` is dropped, one that decodes to `..` removes the segment
//!    before it (never above the root): `/admin/../orders`, `/admin/%2e%2e/orders` and
//!    `/admin/.%2E/orders` are all `/orders`;
//! 4. segments are compared with patterns after percent-decoding.
//!
//! When the path was not already in this form, the layers forward the normalised path, so the
//! service sees exactly the path that was authorised.

use std::fmt;

/// The most segments a request path may have.
pub const MAX_PATH_SEGMENTS: usize = 64;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// An encoded slash or backslash, a backslash, an encoded NUL, a control character, or a
    /// malformed percent escape.
    #[error("the path holds a forbidden or malformed character")]
    Forbidden,
    /// More than [`MAX_PATH_SEGMENTS`] segments.
    #[error("the path has too many segments")]
    TooLong,
}

/// A request path split into its normalised segments, borrowed from the path.
#[derive(Clone, Copy)]
pub struct NormalizedPath<'p> {
    path: &'p str,
    bounds: [(u16, u16); MAX_PATH_SEGMENTS],
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

impl<'p> NormalizedPath<'p> {
    /// Normalises `path` (the path part of a request target, without the query).
    pub fn new(path: &'p str) -> Result<Self, PathError> {
        let bytes = path.as_bytes();
        if path.len() > usize::from(u16::MAX) {
            return Err(PathError::TooLong);
        }
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\\' => return Err(PathError::Forbidden),
                b if b < 0x20 || b == 0x7f => return Err(PathError::Forbidden),
                b'%' => {
                    let (Some(hi), Some(lo)) = (
                        bytes.get(i + 1).copied().and_then(hex),
                        bytes.get(i + 2).copied().and_then(hex),
                    ) else {
                        return Err(PathError::Forbidden);
                    };
                    if matches!(hi << 4 | lo, b'/' | b'\\' | 0) {
                        return Err(PathError::Forbidden);
                    }
                }
                _ => {}
            }
        }
        let mut out = NormalizedPath {
            path,
            bounds: [(0, 0); MAX_PATH_SEGMENTS],
            len: 0,
            canonical: path.starts_with('/') || path.is_empty(),
            trailing_slash: path.len() > 1 && path.ends_with('/'),
        };
        let mut start = 0;
        for raw in path.split('/') {
            let end = start + raw.len();
            let (s, e) = (start, end);
            start = end + 1;
            if raw.is_empty() {
                // Leading "" before the first '/' and one trailing "" are canonical.
                if s != 0 && e != path.len() {
                    out.canonical = false;
                }
                continue;
            }
            if decodes_to(raw, ".") {
                out.canonical = false;
                continue;
            }
            if decodes_to(raw, "..") {
                out.canonical = false;
                out.len = out.len.saturating_sub(1);
                continue;
            }
            if out.len == MAX_PATH_SEGMENTS {
                return Err(PathError::TooLong);
            }
            // Both fit in u16: the path is at most u16::MAX bytes long.
            out.bounds[out.len] = (s as u16, e as u16);
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

    /// How many segments.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the path is the root.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the raw path was already normalised (no empty or dot segments).
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

/// A route's path pattern: exact (`/health`), with `*` for exactly one segment
/// (`/orders/*/items`), and ending in `/**` for a prefix (`/orders/**` matches `/orders` and
/// everything below it).
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
    /// A segment could never match a normalised path: empty (`//`), `.`, `..`, a `**` before the
    /// end, a character normalisation refuses, or too many segments.
    #[error("path pattern {0:?} can never match a normalised path")]
    NeverMatches(String),
}

impl PathPattern {
    /// Parses a pattern.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let never = || PatternError::NeverMatches(pattern.to_owned());
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute(pattern.to_owned()));
        };
        let (body, prefix) = match body.strip_suffix("**") {
            Some(rest) if rest.is_empty() || rest.ends_with('/') => {
                (rest.trim_end_matches('/'), true)
            }
            _ => (body, false),
        };
        let mut segments = Vec::new();
        if !body.is_empty() {
            for raw in body.split('/') {
                let segment = match raw {
                    "*" => Segment::Any,
                    "" | "." | ".." => return Err(never()),
                    raw if raw.contains("**") || raw.contains(['\\', '%', '?', '#']) => {
                        return Err(never());
                    }
                    raw if raw.bytes().any(|b| b < 0x20 || b == 0x7f) => return Err(never()),
                    raw => Segment::Literal(raw.into()),
                };
                segments.push(segment);
            }
        }
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(never());
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

    /// Whether the normalised path matches. Does not allocate.
    pub fn matches(&self, path: &NormalizedPath<'_>) -> bool {
        let count_ok = if self.prefix {
            path.len() >= self.segments.len()
        } else {
            path.len() == self.segments.len()
        };
        count_ok
            && self
                .segments
                .iter()
                .zip(path.segments())
                .all(|(pattern, raw)| match pattern {
                    Segment::Any => true,
                    Segment::Literal(literal) => decodes_to(raw, literal),
                })
    }
}

/// Normalises and matches arbitrary input, for the fuzz target: whenever both the raw path and
/// its normalised form are valid, they match the same patterns.
#[cfg(fuzzing)]
pub(crate) fn fuzz_route(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let patterns = [
        "/",
        "/**",
        "/admin/**",
        "/orders/*",
        "/orders/*/items",
        "/a/b",
        "/health",
    ]
    .map(|p| PathPattern::new(p).unwrap());
    let Ok(raw) = NormalizedPath::new(path) else {
        return;
    };
    let normal = raw.to_path();
    let again = NormalizedPath::new(&normal).expect("a normalised path is valid");
    assert!(again.is_canonical(), "{normal:?} is canonical");
    assert_eq!(again.to_path(), normal, "normalisation is idempotent");
    for pattern in &patterns {
        assert_eq!(
            pattern.matches(&raw),
            pattern.matches(&again),
            "{pattern:?} on {path:?}"
        );
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
            "/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b", "/a%00", "/a%zz", "/a%2", "/a\tb",
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
        for bad in [
            "orders", "/a//b", "/a/./b", "/a/../b", "/a/**/b", "/a**", "/a/b%2f",
        ] {
            assert!(PathPattern::new(bad).is_err(), "{bad}");
        }
    }
}
