//! W3C Trace Context: `traceparent` and `tracestate`, parsed and written without tower or http.
//!
//! `traceparent` is `version-traceid-parentid-flags` in lower-case hex: `00` and 55 bytes
//! exactly for version 00; version `ff` is invalid; a later version is read by its first four
//! fields when it is at least as long and, if longer, continues with `-` (the specification's
//! rule for versions it does not know). All-zero trace and parent ids are invalid.
//! `tracestate` follows the current recommendation's grammar: a list of at most 32
//! `key=value` members, a key being 1 to 256 of `a-z 0-9 _ - * / @` starting with a letter or
//! digit, a value 1 to 256 printable characters but `,` and `=`, not ending in a space. A list
//! with a malformed member or more than 32 members is dropped whole; a repeated key is dropped
//! (the first member with that key is kept), which the specification allows.

use std::fmt;

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

/// The most members a `tracestate` list may have; a longer list is invalid and dropped.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The sampled flag.
pub const FLAG_SAMPLED: u8 = 0x01;

/// The flags a child keeps: sampled, and Level 2's random-trace-id (both describe the trace,
/// which the child shares).
const KEPT_FLAGS: u8 = 0x03;

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Not `version-traceid-parentid-flags` of the right lengths, or not lower-case hex.
    #[error("malformed traceparent")]
    Malformed,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    InvalidVersion,
    /// The trace id is all zeros.
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent parent id is all zeros")]
    ZeroParentId,
}

/// A parsed `traceparent`.
///
/// ```
/// use portcullis::propagate::TraceParent;
///
/// let text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// let parent = TraceParent::parse(text.as_bytes()).unwrap();
/// assert!(parent.sampled());
/// assert_eq!(parent.to_string(), text);
/// assert!(TraceParent::parse(b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    version: u8,
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl TraceParent {
    /// A `traceparent` of version 00 from its parts; `None` when an id is all zeros.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            version: 0,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Parses a `traceparent` value.
    pub fn parse(value: &[u8]) -> Result<Self, TraceParentError> {
        use TraceParentError::*;
        let head = value.get(..TRACEPARENT_LEN).ok_or(Malformed)?;
        let version = hex_byte(&head[0..2]).ok_or(Malformed)?;
        if version == 0xff {
            return Err(InvalidVersion);
        }
        match (version, value.get(TRACEPARENT_LEN)) {
            (0, Some(_)) => return Err(Malformed),
            // A later version may add fields, after a dash.
            (_, Some(b)) if *b != b'-' => return Err(Malformed),
            _ => {}
        }
        if head[2] != b'-' || head[35] != b'-' || head[52] != b'-' {
            return Err(Malformed);
        }
        let mut trace_id = [0; 16];
        hex_into(&head[3..35], &mut trace_id).ok_or(Malformed)?;
        let mut parent_id = [0; 8];
        hex_into(&head[36..52], &mut parent_id).ok_or(Malformed)?;
        let flags = hex_byte(&head[53..55]).ok_or(Malformed)?;
        if trace_id == [0; 16] {
            return Err(ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(ZeroParentId);
        }
        Ok(Self {
            version,
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The version read (a child is always written as version 00).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The parent (span) id.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The `traceparent` to send on: version 00, the same trace, `span_id` as the parent, and
    /// the flags that describe the trace (sampled, random trace id) kept. `None` when `span_id`
    /// is all zeros.
    pub fn child(&self, span_id: [u8; 8]) -> Option<Self> {
        Self::new(self.trace_id, span_id, self.flags & KEPT_FLAGS)
    }

    /// The 55 bytes of the version-00 form (the version read is not kept: a child is written as
    /// the version this crate knows).
    pub fn to_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        write_hex(&[self.version], &mut out[0..2]);
        write_hex(&self.trace_id, &mut out[3..35]);
        write_hex(&self.parent_id, &mut out[36..52]);
        write_hex(&[self.flags], &mut out[53..55]);
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

/// A trace or span id, printed as lower-case hex (for logs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexId<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Display for HexId<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Through a buffer on the stack, 32 bytes at a time: one write for a trace id, where
        // a `{:02x}` per byte costs an audit line about 4 000 instructions.
        let mut buf = [0; 64];
        for chunk in self.0.chunks(32) {
            let hex = &mut buf[..chunk.len() * 2];
            write_hex(chunk, hex);
            f.write_str(std::str::from_utf8(hex).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for HexId<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lower-case hex digit values; 0xff marks anything else (upper case is invalid here).
const HEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

fn hex_byte(two: &[u8]) -> Option<u8> {
    let (hi, lo) = (HEX[usize::from(two[0])], HEX[usize::from(two[1])]);
    ((hi | lo) & 0xf0 == 0).then_some(hi << 4 | lo)
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    // Decode everything, then check once: no branch per digit.
    let mut bad = 0u8;
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(())
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// What `tracestate` validation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceState {
    /// Valid, already in canonical form (members joined by `,`, no blanks, no empty members,
    /// no repeated key): forward the value as it is.
    Canonical,
    /// Valid but not canonical: forward [`canonical_tracestate`]'s rewrite.
    Rewrite,
    /// A malformed member, or more than 32 members: drop it.
    Invalid,
}

/// Classifies a `tracestate` value made of `parts` (each a header line; several lines are one
/// list). Every member must be well-formed, and there may be at most 32. Does not allocate.
pub fn check_tracestate<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> TraceState {
    scan(parts, |_| {})
}

/// The canonical form of a valid `tracestate`: members joined by `,`, blanks and empty members
/// removed, a repeated key's later members removed. `None` when it is not valid.
pub fn canonical_tracestate<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let state = scan(parts, |member| {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(member);
    });
    (state != TraceState::Invalid).then_some(out)
}

/// Validates, handing each member that is kept to `keep`.
fn scan<'a>(
    parts: impl IntoIterator<Item = &'a [u8]>,
    mut keep: impl FnMut(&'a [u8]),
) -> TraceState {
    let mut canonical = true;
    let mut keys: [&[u8]; MAX_TRACESTATE_MEMBERS] = [&[]; MAX_TRACESTATE_MEMBERS];
    let mut kept = 0usize;
    let mut members = 0usize;
    for (line, part) in parts.into_iter().enumerate() {
        if line > 0 {
            canonical = false;
        }
        for member in part.split(|b| *b == b',') {
            let trimmed = trim_ows(member);
            if trimmed.len() != member.len() || trimmed.is_empty() {
                canonical = false;
            }
            if trimmed.is_empty() {
                continue;
            }
            let Some(key) = member_key(trimmed) else {
                return TraceState::Invalid;
            };
            members += 1;
            if members > MAX_TRACESTATE_MEMBERS {
                return TraceState::Invalid;
            }
            if keys[..kept].contains(&key) {
                // A repeated key: the first member stands.
                canonical = false;
                continue;
            }
            keys[kept] = key;
            kept += 1;
            keep(trimmed);
        }
    }
    if canonical {
        TraceState::Canonical
    } else {
        TraceState::Rewrite
    }
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The key of a `key=value` member when both are valid.
fn member_key(member: &[u8]) -> Option<&[u8]> {
    let eq = member.iter().position(|b| *b == b'=')?;
    let (key, value) = (&member[..eq], &member[eq + 1..]);
    (valid_key(key) && valid_value(value)).then_some(key)
}

/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, `keychar = lcalpha / DIGIT / "_" / "-" /
/// "*" / "/" / "@"`.
fn valid_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && key.len() <= 256
        && key
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// `0*255chr nblk-chr`: 1 to 256 printable ASCII characters but `,` and `=`, not ending in a
/// space.
fn valid_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
        && value.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn hex_ids_of_any_length_print_every_byte() {
        assert_eq!(HexId([]).to_string(), "");
        assert_eq!(HexId([0x0f]).to_string(), "0f");
        let long: [u8; 40] = std::array::from_fn(|i| (i * 7) as u8);
        let expected: String = long.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(HexId(long).to_string(), expected);
        assert_eq!(format!("{:?}", HexId([0xab, 0xcd])), "abcd");
    }

    #[test]
    fn traceparent_conformance() {
        let p = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            HexId(p.trace_id()).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(HexId(p.parent_id()).to_string(), "00f067aa0ba902b7");
        assert!(p.sampled());
        assert_eq!(p.to_string(), VALID);
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceParent::parse(unsampled.as_bytes()).unwrap().sampled());

        use TraceParentError::*;
        for (text, why) in [
            ("", Malformed),
            (&VALID[..54], Malformed),
            (&format!("{VALID}-"), Malformed),
            (&format!("{VALID}0"), Malformed),
            (&VALID.replace("4bf9", "4BF9"), Malformed),
            (&VALID.replace("00-4", "0A-4"), Malformed),
            (&VALID.replacen('-', "_", 1), Malformed),
            (&VALID.replace("-00f0", "_00f0"), Malformed),
            (&VALID.replace("b7-01", "b7_01"), Malformed),
            (&VALID.replace("-01", "-0g"), Malformed),
            (&VALID.replace("4bf9", "4bfz"), Malformed),
            (&format!("ff{}", &VALID[2..]), InvalidVersion),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroParentId,
            ),
        ] {
            assert_eq!(TraceParent::parse(text.as_bytes()), Err(why), "{text}");
        }

        // A later version: the first four fields, with anything after a dash.
        let future = format!("cc{}-what-the-future-holds", &VALID[2..]);
        let p = TraceParent::parse(future.as_bytes()).unwrap();
        assert_eq!(p.version(), 0xcc);
        assert_eq!(
            HexId(p.trace_id()).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(TraceParent::parse(format!("cc{}", &VALID[2..]).as_bytes()).is_ok());
        assert_eq!(
            TraceParent::parse(format!("cc{}x", &VALID[2..]).as_bytes()),
            Err(Malformed)
        );
        // A child is version 00 with the trace kept and unknown flags cleared.
        let child = TraceParent::parse(future.replace("-01-", "-ff-").as_bytes())
            .unwrap()
            .child([1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-03"
        );
        assert!(p.child([0; 8]).is_none());
    }

    #[test]
    fn tracestate_rules() {
        let check = |lines: &[&str]| check_tracestate(lines.iter().map(|l| l.as_bytes()));
        assert_eq!(check(&["congo=t61rcWkgMzE"]), TraceState::Canonical);
        assert_eq!(
            check(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]),
            TraceState::Canonical
        );
        assert_eq!(
            check(&["tenant@vendor=x,a-b_c*d/e=1"]),
            TraceState::Canonical
        );
        assert_eq!(check(&["rojo=1, congo=2"]), TraceState::Rewrite);
        assert_eq!(check(&["rojo=1,,congo=2"]), TraceState::Rewrite);
        assert_eq!(check(&["rojo=1 "]), TraceState::Rewrite);
        assert_eq!(check(&["rojo=1", "congo=2"]), TraceState::Rewrite);
        // Keys: a letter or digit first, then `@` anywhere (the current recommendation).
        for good in [
            "1abc=1",
            "foo@=1",
            "foo@@bar=1",
            "foo@bar@baz=1",
            "tenant@vendorvendorvendor=1",
        ] {
            assert_eq!(check(&[good]), TraceState::Canonical, "{good}");
        }
        for bad in [
            "Rojo=1",
            "rojo",
            "rojo=",
            "rojo=a,b",
            "rojo=x=y",
            "@vendor=1",
            "@foo=1,bar=2",
            "tenant@Vendor=1",
            "foo.bar=1",
            "foo =1",
            "rojo=\u{7f}",
        ] {
            assert_eq!(check(&[bad]), TraceState::Invalid, "{bad}");
        }
        // Key length: 256 characters at most, `@` included.
        for key in [
            "z".repeat(256),
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
        ] {
            assert_eq!(
                check(&["foo=1", &format!("{key}=1")]),
                TraceState::Rewrite,
                "{key}"
            );
        }
        assert_eq!(
            check(&[&format!("{}=1", "z".repeat(257))]),
            TraceState::Invalid
        );
        let value = "v".repeat(256);
        assert_eq!(check(&[&format!("a={value}")]), TraceState::Canonical);
        assert_eq!(check(&[&format!("a={value}v")]), TraceState::Invalid);

        // A repeated key: the first member stands, in one line or across lines.
        assert_eq!(check(&["rojo=1,rojo=2"]), TraceState::Rewrite);
        assert_eq!(
            canonical_tracestate(["rojo=1,rojo=2".as_bytes()]).unwrap(),
            b"rojo=1"
        );
        assert_eq!(
            canonical_tracestate(["foo=1,foo=1".as_bytes()]).unwrap(),
            b"foo=1"
        );
        assert_eq!(
            canonical_tracestate(["foo=1".as_bytes(), b"foo=2"]).unwrap(),
            b"foo=1"
        );

        // 32 members are kept; a 33rd makes the list invalid.
        let many: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        assert_eq!(check(&[&many[..32].join(",")]), TraceState::Canonical);
        assert_eq!(check(&[&many.join(",")]), TraceState::Invalid);
        let lines: Vec<String> = many.chunks(10).map(|c| c.join(",")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(check(&lines), TraceState::Invalid);
        assert_eq!(
            canonical_tracestate(lines.iter().map(|l| l.as_bytes())),
            None
        );
        assert_eq!(
            canonical_tracestate(["rojo=1 , ,congo=2".as_bytes(), b"x=3"]).unwrap(),
            b"rojo=1,congo=2,x=3"
        );
    }
}
