//! Request ids and trace/span ids: what an incoming id may look like, and making new ones
//! without a lock.
//!
//! New ids come from SipHash-1-3 (std's `RandomState`, keyed once per process from the OS)
//! over a process-wide atomic counter: unpredictable without the key, never repeated within a
//! process, one relaxed `fetch_add` and one short hash each.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest request id accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an incoming request id is acceptable: 1 to 128 characters of `A-Z a-z 0-9` and
/// `- . _ ~ : + / = @` (UUIDs, ULIDs, base64 and the ids of the common load balancers all fit;
/// quotes, commas, semicolons, blanks and control characters, which break log lines and header
/// lists, do not).
///
/// ```
/// use portcullis::propagate::valid_request_id;
///
/// assert!(valid_request_id(b"0190b6e4-5a8e-7c3a-9f1e-8d2b4c6a1f00"));
/// assert!(!valid_request_id(b"abc\" injected=\"1"));
/// assert!(!valid_request_id(b""));
/// ```
pub fn valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.' | b'_' | b'~' | b':' | b'+' | b'/' | b'=' | b'@'
                )
        })
}

static KEY: OnceLock<RandomState> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 64 unpredictable bits, unique within the process.
pub(crate) fn random_u64() -> u64 {
    counted_random().1
}

/// The counter value drawn and 64 unpredictable bits made from it.
fn counted_random() -> (u64, u64) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (n, KEY.get_or_init(RandomState::new).hash_one(n))
}

/// A new, non-zero trace id.
pub(crate) fn new_trace_id() -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&random_u64().to_be_bytes());
    id[8..].copy_from_slice(&random_u64().to_be_bytes());
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// A new, random, non-zero span id: for the `traceparent` of each call a service makes
/// (`TraceParent::child`).
///
/// # Example
///
/// ```
/// use portcullis::propagate::{TraceParent, new_span_id};
///
/// let incoming = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let outgoing = incoming.child(new_span_id()).unwrap();
/// assert_eq!(outgoing.trace_id(), incoming.trace_id());
/// assert_ne!(outgoing.parent_id(), incoming.parent_id());
/// ```
pub fn new_span_id() -> [u8; 8] {
    match random_u64() {
        0 => 1u64.to_be_bytes(),
        n => n.to_be_bytes(),
    }
}

/// The length of a [`new_request_id`].
pub(crate) const REQUEST_ID_LEN: usize = 36;

/// A new request id: a UUID version 7 (RFC 9562), time-ordered by the millisecond, in the
/// 36-character lower-case form.
///
/// ```
/// let id = portcullis::propagate::new_request_id();
/// assert_eq!(id.len(), 36);
/// assert_eq!(id[14], b'7');
/// assert!(portcullis::propagate::valid_request_id(&id));
/// ```
pub fn new_request_id() -> [u8; REQUEST_ID_LEN] {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // RFC 9562 §6.2 method 1: `rand_a` counts (ids of one millisecond sort in order of
    // making), `rand_b` is random.
    let (n, random) = counted_random();
    uuid_v7(millis, n << 52, random)
}

fn uuid_v7(millis: u64, a: u64, b: u64) -> [u8; 36] {
    let mut raw = [0u8; 16];
    raw[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // `rand_a`: the top 12 bits of `a`.
    raw[6..8].copy_from_slice(&(a >> 4).to_be_bytes()[..2]);
    raw[6] = 0x70 | (raw[6] & 0x0f);
    raw[8..].copy_from_slice(&b.to_be_bytes());
    raw[8] = 0x80 | (raw[8] & 0x3f);
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = DIGITS[usize::from(byte >> 4)];
        out[at + 1] = DIGITS[usize::from(byte & 0x0f)];
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let id = uuid_v7(0x0190_b6e4_5a8e, u64::MAX, 0);
        assert_eq!(&id, b"0190b6e4-5a8e-7fff-8000-000000000000");
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        // Time-ordered by the millisecond prefix.
        assert!(a[..13] <= b[..13]);
        for ok in [&b"a"[..], b"req-1.2_3~4:5+6/7=8@9", &[b'x'; 128]] {
            assert!(valid_request_id(ok));
        }
        for bad in [
            &b""[..],
            &[b'x'; 129],
            b"a b",
            b"a,b",
            b"a;b",
            b"a\"b",
            b"caf\xc3\xa9",
        ] {
            assert!(!valid_request_id(bad));
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(new_span_id()));
            assert_ne!(new_trace_id(), [0; 16]);
        }
    }
}
