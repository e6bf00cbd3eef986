//! Header names as the servers behind a gateway read them.
//!
//! CGI, WSGI, Rack, PHP and many servlet filters turn a header name into a variable name, so
//! `X_User_Id` and `X-User-Id` reach the application as the same `HTTP_X_USER_ID`. A gateway
//! that sets `x-user-id` and leaves the client's `X_User_Id` in place lets the client's copy
//! win, or be joined with the gateway's. The layers of this crate therefore remove every
//! spelling of a header they set (see [`remove_every_spelling`]), and a proxy can drop client
//! headers with underscores altogether (see [`remove_underscored`]), as nginx does by default.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderName};
//! use portcullis::headers::{remove_every_spelling, remove_underscored, same_to_upstream};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-user-id", "admin".parse().unwrap());
//! headers.insert("x_user_id", "admin".parse().unwrap());
//! headers.insert("x_user-ID", "admin".parse().unwrap());
//! headers.insert("accept", "*/*".parse().unwrap());
//! assert!(same_to_upstream("x_user-id", "X-User-Id"));
//!
//! remove_every_spelling(&mut headers, &HeaderName::from_static("x-user-id"));
//! assert_eq!(headers.len(), 1);
//!
//! headers.insert("x_tenant", "acme".parse().unwrap());
//! assert_eq!(remove_underscored(&mut headers), 1);
//! assert_eq!(headers.len(), 1);
//! ```

use http::{HeaderMap, HeaderName};

/// Whether two header names are the same to a server that reads `_` as `-` and ignores case.
pub fn same_to_upstream(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// Removes `name` and every header whose name is the same to an upstream that reads `_` as `-`
/// (`x_user_id` and `x-user_id` for `x-user-id`). Allocates only when such a spelling is
/// present.
pub fn remove_every_spelling(headers: &mut HeaderMap, name: &HeaderName) {
    remove_every_spelling_of(headers, std::slice::from_ref(name));
}

/// [`remove_every_spelling`] for several names, in one pass over the request's header names
/// when none is present (the common case). Allocates only when one is.
pub fn remove_every_spelling_of(headers: &mut HeaderMap, names: &[HeaderName]) {
    let plain = !names.iter().any(|n| has_underscore(n.as_str()));
    remove_spellings(headers, names, plain, true);
}

/// Removes every header whose name is the same as `name` to an upstream that reads `_` as `-`,
/// but not `name` itself: for a header that is read, then set. Allocates only when such a
/// spelling is present.
pub fn remove_other_spellings(headers: &mut HeaderMap, name: &HeaderName) {
    remove_other_spellings_of(headers, std::slice::from_ref(name));
}

/// [`remove_other_spellings`] for several names, in one pass over the request's header names
/// when none is present (the common case).
pub fn remove_other_spellings_of(headers: &mut HeaderMap, names: &[HeaderName]) {
    let plain = !names.iter().any(|n| has_underscore(n.as_str()));
    remove_spellings(headers, names, plain, false);
}

/// The removal behind the functions above, for callers that know whether `names` hold a `_`
/// (`plain` when none does) and whether the exact names go too. Another spelling holds a `_`
/// where the name has a `-` (or the other way round), so when neither the names nor the
/// request's header names hold one, only the exact names can be there: one cheap pass over the
/// request's header names decides, and nothing is allocated.
pub(crate) fn remove_spellings(
    headers: &mut HeaderMap,
    names: &[HeaderName],
    plain: bool,
    exact_too: bool,
) {
    if plain
        && !headers.keys().any(|k| {
            let k = k.as_str();
            has_underscore(k) || (exact_too && names.iter().any(|n| n.as_str() == k))
        })
    {
        return;
    }
    remove_where(headers, |other| {
        names.iter().any(|name| {
            (exact_too || other != name.as_str()) && same_to_upstream(other, name.as_str())
        })
    });
}

/// Removes every header whose name holds an underscore; returns how many names were removed.
/// Allocates only when there is one.
pub fn remove_underscored(headers: &mut HeaderMap) -> usize {
    remove_where(headers, has_underscore)
}

/// Whether `name` holds a `_`, eight bytes at a time (header names are short, and a call into
/// `memchr` costs more than it saves; this runs for every header name of every request).
fn has_underscore(name: &str) -> bool {
    const UNDERSCORES: u64 = u64::from_ne_bytes([b'_'; 8]);
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = name.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        // A byte of `x` is zero where the name holds `_`; the classic zero-byte test.
        let x = u64::from_ne_bytes(eight) ^ UNDERSCORES;
        if x.wrapping_sub(LOW) & !x & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&b'_')
}

fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) -> usize {
    if !headers.keys().any(|name| matches(name.as_str())) {
        return 0;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches(name.as_str()))
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_goes_and_nothing_else() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-user-id", "a"),
            ("x_user_id", "b"),
            ("x-user_id", "c"),
            ("x_user-id", "d"),
            ("x-user-idx", "keep"),
            ("x-userid", "keep"),
            ("x_tenant", "keep"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers.append("x-user-id", "e".parse().unwrap());
        remove_every_spelling(&mut headers, &HeaderName::from_static("x-user-id"));
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-user-idx", "x-userid", "x_tenant"]);
        assert_eq!(remove_underscored(&mut headers), 1);
        assert_eq!(remove_underscored(&mut headers), 0);
        assert!(!same_to_upstream("x-a", "x-ab"));
        for (name, want) in [
            ("", false),
            ("x", false),
            ("_", true),
            ("x-request-id", false),
            ("x_request-id", true),
            ("x-request_id", true),
            ("x-request-i_", true),
            ("abcdefgh_", true),
            ("abcdefg_", true),
            ("^`^`^`^`^`^`^`^`", false),
        ] {
            assert_eq!(has_underscore(name), want, "{name}");
        }
        assert!(same_to_upstream("X_A-b", "x-a_B"));
    }
}
