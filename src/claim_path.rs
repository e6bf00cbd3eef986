use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The longest rendered claim value put into a header: 4 KiB.
pub const MAX_HEADER_VALUE_LEN: usize = 4 * 1024;

/// The most segments a path may have.
const MAX_SEGMENTS: usize = 16;

/// A path into a token's claims: segments separated by `.`, a segment with dots (or any other
/// character) written as `["…"]` with `\"` and `\\` escapes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClaimPath {
    segments: Box<[Box<str>]>,
}

/// Why a claim path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimPathError {
    /// The path is empty, or has an empty segment (`a..b`, `.a`).
    #[error("empty segment in claim path {0:?}")]
    EmptySegment(String),
    /// A bracketed segment is not closed, or is followed by something other than `.` or `[`.
    #[error("malformed bracket in claim path {0:?}")]
    Bracket(String),
    /// More than 16 segments.
    #[error("claim path {0:?} is too deep")]
    TooDeep(String),
}

impl ClaimPath {
    /// The segments, unescaped.
    pub fn segments(&self) -> &[Box<str>] {
        &self.segments
    }

    /// The value at this path, if every segment names a member of an object.
    pub fn lookup<'c>(&self, claims: &'c Map<String, Value>) -> Option<&'c Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut value = claims.get(&**first)?;
        for segment in rest {
            value = value.as_object()?.get(&**segment)?;
        }
        Some(value)
    }
}

impl FromStr for ClaimPath {
    type Err = ClaimPathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        let mut segments = Vec::new();
        let mut rest = path;
        let bracket = || ClaimPathError::Bracket(path.to_owned());
        loop {
            let segment;
            if let Some(quoted) = rest.strip_prefix("[\"") {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\'))) => out.push(c),
                            _ => return Err(bracket()),
                        },
                        Some((_, c)) => out.push(c),
                        None => return Err(bracket()),
                    }
                };
                rest = quoted[end + 1..].strip_prefix(']').ok_or_else(bracket)?;
                segment = out;
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                segment = rest[..end].to_owned();
                rest = &rest[end..];
            }
            if segment.is_empty() {
                return Err(ClaimPathError::EmptySegment(path.to_owned()));
            }
            segments.push(segment.into_boxed_str());
            if segments.len() > MAX_SEGMENTS {
                return Err(ClaimPathError::TooDeep(path.to_owned()));
            }
            if rest.is_empty() {
                break;
            }
            if let Some(after_dot) = rest.strip_prefix('.') {
                rest = after_dot;
                if rest.is_empty() {
                    return Err(ClaimPathError::EmptySegment(path.to_owned()));
                }
            } else if !rest.starts_with("[\"") {
                return Err(bracket());
            }
        }
        Ok(Self {
            segments: segments.into_boxed_slice(),
        })
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            let plain = !segment.is_empty() && !segment.contains(['.', '[', ']', '"', '\\']);
            match (plain, i) {
                (true, 0) => f.write_str(segment)?,
                (true, _) => write!(f, ".{segment}")?,
                (false, _) => {
                    f.write_str("[\"")?;
                    for c in segment.chars() {
                        if matches!(c, '"' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"]")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimPath({self})")
    }
}

/// Renders a claim value for an HTTP header: strings as they are, numbers and booleans
/// canonically (serde_json's form), arrays of those comma-joined; objects, nulls and nested
/// arrays render nothing. Bytes outside visible ASCII and space (controls, DEL, non-ASCII), `%`
/// itself, `,` (the list separator) and a space at either end of a string (which an upstream's
/// parser trims) are percent-encoded, so the value is always a valid header value, decodes
/// back exactly, and no two claim values render alike. `None` when nothing renders or the
/// result exceeds [`MAX_HEADER_VALUE_LEN`].
///
/// # Example
///
/// ```
/// use portcullis::claims::render_header_value;
/// use serde_json::json;
///
/// assert_eq!(render_header_value(&json!(" alice ")).as_deref(), Some("%20alice%20"));
/// assert_eq!(render_header_value(&json!("a,b")).as_deref(), Some("a%2Cb"));
/// assert_eq!(render_header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
/// ```
pub fn render_header_value(value: &Value) -> Option<String> {
    let mut out = String::new();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_scalar(item, &mut out)?;
            }
        }
        scalar => render_scalar(scalar, &mut out)?,
    }
    (!out.is_empty() && out.len() <= MAX_HEADER_VALUE_LEN).then_some(out)
}

fn render_scalar(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::String(s) => {
            let last = s.len().saturating_sub(1);
            for (i, b) in s.bytes().enumerate() {
                // A space at either end would be trimmed by the upstream's parser (`" alice "`
                // read as `alice`), and a comma read as a list separator (`"a,b"` as the array
                // `["a", "b"]`): both are encoded, so no two values render alike.
                let edge_space = b == b' ' && (i == 0 || i == last);
                if (0x20..0x7f).contains(&b) && b != b'%' && b != b',' && !edge_space {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
                if out.len() > MAX_HEADER_VALUE_LEN {
                    return None;
                }
            }
        }
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Result<ClaimPath, ClaimPathError> {
        s.parse()
    }

    #[test]
    fn parsing_and_display_round_trip() {
        for (text, segments) in [
            ("sub", vec!["sub"]),
            ("realm_access.roles", vec!["realm_access", "roles"]),
            (
                r#"["https://example.com/roles"]"#,
                vec!["https://example.com/roles"],
            ),
            (
                r#"resource_access["my.client"].roles"#,
                vec!["resource_access", "my.client", "roles"],
            ),
            (r#"["a\"b\\c"]"#, vec!["a\"b\\c"]),
        ] {
            let path = p(text).unwrap();
            assert_eq!(
                path.segments().iter().map(|s| &**s).collect::<Vec<_>>(),
                segments,
                "{text}"
            );
            assert_eq!(p(&path.to_string()).unwrap(), path, "{text}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "[\"a\"",
            "[\"a\"]x",
            "a[b]",
            "[\"\"]",
            "[\"a\\x\"]",
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(p(&vec!["a"; 17].join(".")).is_err());
    }

    #[test]
    fn lookup_walks_objects_only() {
        let claims = json!({"a": {"b": {"c": 1}}, "arr": [{"x": 1}]});
        let claims = claims.as_object().unwrap();
        assert_eq!(p("a.b.c").unwrap().lookup(claims), Some(&json!(1)));
        assert_eq!(p("a.b.d").unwrap().lookup(claims), None);
        assert_eq!(p("a.b.c.d").unwrap().lookup(claims), None);
        assert_eq!(p("arr.x").unwrap().lookup(claims), None);
    }

    #[test]
    fn rendering() {
        assert_eq!(render_header_value(&json!("ada")).as_deref(), Some("ada"));
        assert_eq!(
            render_header_value(&json!(["a", 1, true, 2.5])).as_deref(),
            Some("a,1,true,2.5")
        );
        assert_eq!(
            render_header_value(&json!("evil\r\nx-admin: 1")).as_deref(),
            Some("evil%0D%0Ax-admin: 1")
        );
        assert_eq!(
            render_header_value(&json!("José 100%")).as_deref(),
            Some("Jos%C3%A9 100%25")
        );
        // Values that an upstream would trim or split never render like another value.
        for (value, want) in [
            (json!(" alice "), "%20alice%20"),
            (json!(" alice"), "%20alice"),
            (json!("alice "), "alice%20"),
            (json!(" "), "%20"),
            (json!("a b"), "a b"),
            (json!("alice,admin"), "alice%2Cadmin"),
            (json!([" a", "b "]), "%20a,b%20"),
            (json!("\talice"), "%09alice"),
        ] {
            assert_eq!(
                render_header_value(&value).as_deref(),
                Some(want),
                "{value}"
            );
        }
        assert_ne!(
            render_header_value(&json!("alice")),
            render_header_value(&json!(" alice "))
        );
        for none in [
            json!(null),
            json!({"a": 1}),
            json!([[1]]),
            json!(""),
            json!([]),
            json!("x".repeat(5000)),
        ] {
            assert_eq!(render_header_value(&none), None, "{none}");
        }
        let value = render_header_value(&json!("\u{0}\u{7f}\t")).unwrap();
        assert!(http::HeaderValue::from_str(&value).is_ok());
    }
}
