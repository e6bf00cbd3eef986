use std::fmt;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName};

/// The default cap on a token's length, checked before any decoding: 8 KiB.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// A place in a request where a token may be.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1); the scheme is case-insensitive.
    Bearer,
    /// A custom header whose whole value is the token.
    Header(HeaderName),
    /// A cookie with this exact name.
    Cookie(Box<str>),
}

impl TokenSource {
    /// A cookie source.
    pub fn cookie(name: impl Into<Box<str>>) -> Self {
        TokenSource::Cookie(name.into())
    }

    /// A custom header source.
    pub fn header(name: HeaderName) -> Self {
        TokenSource::Header(name)
    }
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Bearer => f.write_str("header:authorization"),
            TokenSource::Header(name) => write!(f, "header:{name}"),
            TokenSource::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// Why a request's token could not be taken from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The token is present more than once, or in more than one source.
    #[error("the request carries more than one token")]
    Duplicate,
    /// An `Authorization: Bearer` header without exactly one token.
    #[error("the authorization header is malformed")]
    MalformedHeader,
    /// The token has characters outside the token68 set (RFC 7235 §2.1).
    #[error("the token has characters outside the token68 set")]
    BadCharacters,
    /// The token is longer than the configured cap.
    #[error("the token is longer than {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
}

/// Takes the bearer token from a request's headers.
///
/// Looks in every configured source; a token found in two sources, or twice in one (two
/// `Authorization` headers, two cookies of the name), is [`ExtractError::Duplicate`] so no
/// layer downstream can be made to read a different copy from the one that was verified.
#[derive(Clone)]
pub struct TokenExtractor {
    sources: Box<[TokenSource]>,
    max_len: usize,
}

impl Default for TokenExtractor {
    fn default() -> Self {
        Self::new([TokenSource::Bearer])
    }
}

impl fmt::Debug for TokenExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExtractor")
            .field("sources", &self.sources)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl TokenExtractor {
    /// An extractor over these sources, with the default size cap.
    pub fn new(sources: impl IntoIterator<Item = TokenSource>) -> Self {
        Self {
            sources: sources.into_iter().collect(),
            max_len: DEFAULT_MAX_TOKEN_LEN,
        }
    }

    /// Sets the cap on a token's length in bytes.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The cap on a token's length in bytes.
    pub fn limit(&self) -> usize {
        self.max_len
    }

    /// The configured sources.
    pub fn sources(&self) -> &[TokenSource] {
        &self.sources
    }

    /// The token in `headers`, `None` when no source holds one. Does not allocate.
    pub fn extract<'h>(&self, headers: &'h HeaderMap) -> Result<Option<&'h [u8]>, ExtractError> {
        let token = self.extract_unchecked(headers)?;
        if let Some(token) = token {
            Self::check(token)?;
        }
        Ok(token)
    }

    /// [`extract`](Self::extract) without the charset check (see [`TokenExtractor::check`]).
    pub(crate) fn extract_unchecked<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<&'h [u8]>, ExtractError> {
        let mut found: Option<&'h [u8]> = None;
        for source in self.sources.iter() {
            match source {
                TokenSource::Bearer => {
                    for value in headers.get_all(AUTHORIZATION) {
                        if let Some(token) = bearer_token(value.as_bytes())? {
                            take(&mut found, token)?;
                        }
                    }
                }
                TokenSource::Header(name) => {
                    for value in headers.get_all(name) {
                        take(&mut found, trim(value.as_bytes()))?;
                    }
                }
                TokenSource::Cookie(name) => {
                    for value in headers.get_all(COOKIE) {
                        for token in cookie_values(value.as_bytes(), name.as_bytes()) {
                            take(&mut found, token)?;
                        }
                    }
                }
            }
        }
        let Some(token) = found else {
            return Ok(None);
        };
        if token.len() > self.max_len {
            return Err(ExtractError::TooLarge {
                limit: self.max_len,
            });
        }
        if token.is_empty() {
            return Err(ExtractError::MalformedHeader);
        }
        Ok(Some(token))
    }

    /// Checks a token [`extract_unchecked`](Self::extract_unchecked) found: the token68
    /// charset. Separate so that a cache hit — a token that passed before, compared
    /// byte for byte — skips the scan.
    pub(crate) fn check(token: &[u8]) -> Result<(), ExtractError> {
        if is_token68(token) {
            return Ok(());
        }
        // A space inside means several tokens: a malformed request, not a bad token.
        Err(if token.contains(&b' ') {
            ExtractError::MalformedHeader
        } else {
            ExtractError::BadCharacters
        })
    }
}

fn take<'h>(found: &mut Option<&'h [u8]>, token: &'h [u8]) -> Result<(), ExtractError> {
    match found.replace(token) {
        Some(_) => Err(ExtractError::Duplicate),
        None => Ok(()),
    }
}

/// `Some(token)` for a Bearer credential, `None` for another scheme.
fn bearer_token(value: &[u8]) -> Result<Option<&[u8]>, ExtractError> {
    let value = trim(value);
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    // `credentials = auth-scheme 1*SP token68`: one token, nothing after it.
    let token = trim(rest);
    if rest.first() != Some(&b' ') || token.is_empty() {
        return Err(ExtractError::MalformedHeader);
    }
    // The charset (and a space inside, meaning two tokens) is checked once in `extract`.
    Ok(Some(token))
}

/// The values of every cookie named `name` in one `Cookie` header (RFC 6265 §4.2.1).
fn cookie_values<'v, 'n>(
    header: &'v [u8],
    name: &'n [u8],
) -> impl Iterator<Item = &'v [u8]> + use<'v, 'n> {
    header.split(|b| *b == b';').filter_map(move |pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (key, value) = (&pair[..eq], &pair[eq + 1..]);
        if key != name {
            return None;
        }
        Some(match value {
            [b'"', inner @ .., b'"'] => inner,
            _ => value,
        })
    })
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|b| **b == b'=').count();
    body_len > 0 && super::jws::count_non_token68(&token[..body_len]) == 0
}

/// Runs the extractor over raw header lines, for the fuzz target.
#[cfg(fuzzing)]
pub(crate) fn fuzz_extract(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n').take(16) {
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => continue,
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let extractor = TokenExtractor::new([
        TokenSource::Bearer,
        TokenSource::cookie("at"),
        TokenSource::header(HeaderName::from_static("x-token")),
    ])
    .max_len(64);
    if let Ok(Some(token)) = extractor.extract(&headers) {
        assert!(!token.is_empty() && token.len() <= 64 && is_token68(token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn bearer() -> TokenExtractor {
        TokenExtractor::default()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let h = headers(&[("authorization", &format!("{scheme} a.b.c"))]);
            assert_eq!(bearer().extract(&h).unwrap(), Some(&b"a.b.c"[..]));
        }
    }

    #[test]
    fn bearer_shapes() {
        type Outcome = Result<Option<&'static [u8]>, ExtractError>;
        let cases: &[(&str, Outcome)] = &[
            ("Bearer a.b.c", Ok(Some(b"a.b.c"))),
            ("Bearer   a.b.c", Ok(Some(b"a.b.c"))),
            ("Bearer a.b.c==", Ok(Some(b"a.b.c=="))),
            ("Basic dXNlcjpwYXNz", Ok(None)),
            ("Bearer", Err(ExtractError::MalformedHeader)),
            ("Bearer ", Err(ExtractError::MalformedHeader)),
            ("Bearer a.b.c d", Err(ExtractError::MalformedHeader)),
            ("Bearer\ta.b.c", Ok(None)),
            ("Bearer a,b", Err(ExtractError::BadCharacters)),
            ("Bearer =abc", Err(ExtractError::BadCharacters)),
            ("Bearer a=b", Err(ExtractError::BadCharacters)),
            ("Bearertoken", Ok(None)),
        ];
        for (value, want) in cases {
            let h = headers(&[("authorization", value)]);
            assert_eq!(&bearer().extract(&h), want, "{value}");
        }
    }

    #[test]
    fn duplicates_are_rejected() {
        let both = TokenExtractor::new([TokenSource::Bearer, TokenSource::cookie("at")]);
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]);
        assert_eq!(bearer().extract(&h), Err(ExtractError::Duplicate));
        let h = headers(&[("cookie", "at=a; at=b")]);
        assert_eq!(both.extract(&h), Err(ExtractError::Duplicate));
        let h = headers(&[("cookie", "at=a"), ("cookie", "at=a")]);
        assert_eq!(both.extract(&h), Err(ExtractError::Duplicate));
        let h = headers(&[("cookie", "at=a"), ("authorization", "Bearer a")]);
        assert_eq!(both.extract(&h), Err(ExtractError::Duplicate));
        let h = headers(&[
            ("authorization", "Basic x"),
            ("cookie", "xat=1; at=\"a.b\""),
        ]);
        assert_eq!(both.extract(&h), Ok(Some(&b"a.b"[..])));
    }

    #[test]
    fn custom_header_and_size_cap() {
        let ex = TokenExtractor::new([TokenSource::header(HeaderName::from_static("x-token"))])
            .max_len(4);
        assert_eq!(
            ex.extract(&headers(&[("x-token", "abcd")])),
            Ok(Some(&b"abcd"[..]))
        );
        assert_eq!(
            ex.extract(&headers(&[("x-token", "abcde")])),
            Err(ExtractError::TooLarge { limit: 4 })
        );
        assert_eq!(ex.extract(&HeaderMap::new()), Ok(None));
    }
}
