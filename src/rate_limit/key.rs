//! What a request is counted by.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, Request};
use serde_json::Value;

use super::memory::KeyParts;
use crate::claim_path::ClaimPath;
use crate::jwt::Identity;
use crate::net::{IpNet, canonical, peer_ip};

/// Which proxies' forwarding entries to believe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustedProxies {
    /// None: the client is the connection's peer (the default).
    #[default]
    None,
    /// This many proxies in front, each appending the address it saw: the client is that many
    /// entries from the right of the forwarding header + peer.
    Count(u8),
    /// Proxies in these networks: walking from the peer leftwards, the first address outside
    /// them is the client.
    Networks(Box<[IpNet]>),
}

/// The header the trusted proxies append the address they saw to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: 203.0.113.7, 10.0.0.2` (the default; what most load balancers write).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::1]:4711"` (the `for`
    /// parameter of each element; `unknown` and obfuscated identifiers end the walk).
    Forwarded,
}

/// How to find a request's client address: which proxies to trust, and which header they
/// write. Only one header is read: a proxy that sets `X-Forwarded-For` does not clean a
/// client's `Forwarded`, so reading both would let the client choose.
///
/// ```
/// use portcullis::rate_limit::{ClientIp, ForwardedHeader, TrustedProxies, client_ip};
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert("forwarded", "for=6.6.6.6, for=203.0.113.7;proto=https".parse().unwrap());
/// let peer = "10.0.0.2".parse().unwrap();
///
/// let behind_one = ClientIp::trusting(TrustedProxies::Count(1)).header(ForwardedHeader::Forwarded);
/// assert_eq!(client_ip(&headers, peer, &behind_one), "203.0.113.7".parse::<std::net::IpAddr>().unwrap());
/// // The peer alone (the default): no header is believed.
/// assert_eq!(client_ip(&headers, peer, &ClientIp::peer()), peer);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIp {
    trusted: TrustedProxies,
    header: ForwardedHeader,
}

impl ClientIp {
    /// The connection's peer; no header is believed.
    pub fn peer() -> Self {
        Self::default()
    }

    /// Believes `trusted` proxies' entries in `X-Forwarded-For` (see [`ClientIp::header`]).
    pub fn trusting(trusted: TrustedProxies) -> Self {
        Self {
            trusted,
            header: ForwardedHeader::XForwardedFor,
        }
    }

    /// Reads the proxies' entries from this header instead.
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The proxies believed.
    pub fn trusted(&self) -> &TrustedProxies {
        &self.trusted
    }

    /// The header read.
    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }
}

impl From<TrustedProxies> for ClientIp {
    fn from(trusted: TrustedProxies) -> Self {
        Self::trusting(trusted)
    }
}

/// What a limit counts requests by.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RateKey {
    /// A claim of the verified identity (`claim:sub`, `claim:org.id`).
    Claim(ClaimPath),
    /// The client IP, per [`ClientIp`].
    Ip(ClientIp),
    /// A request header's value (the first, when repeated).
    Header(HeaderName),
    /// The matched route (its pattern), or, when no routes are configured, the normalised and
    /// percent-decoded path (every spelling of one path counts as one).
    Route,
    /// Several keys together (route + subject).
    Composite(Box<[RateKey]>),
    /// One bucket for every request.
    Global,
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateKey::Claim(path) => write!(f, "claim:{path}"),
            RateKey::Ip(_) => f.write_str("ip"),
            RateKey::Header(name) => write!(f, "header:{name}"),
            RateKey::Route => f.write_str("route"),
            RateKey::Composite(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "{part}")?;
                }
                Ok(())
            }
            RateKey::Global => f.write_str("global"),
        }
    }
}

impl FromStr for RateKey {
    type Err = String;

    /// `claim:<path>`, `ip`, `header:<name>`, `route`, `global`, or several joined by `+`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('+') {
            let parts: Result<Vec<RateKey>, String> = s.split('+').map(str::parse).collect();
            return Ok(RateKey::Composite(parts?.into_boxed_slice()));
        }
        match s.split_once(':') {
            Some(("claim", path)) => path.parse().map(RateKey::Claim).map_err(|e| e.to_string()),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(RateKey::Header)
                .map_err(|_| format!("{name:?} is not a header name")),
            None if s == "ip" => Ok(RateKey::Ip(ClientIp::peer())),
            None if s == "route" => Ok(RateKey::Route),
            None if s == "global" => Ok(RateKey::Global),
            _ => Err(format!(
                "unknown rate-limit key {s:?}: use claim:<path>, ip, header:<name>, route or global"
            )),
        }
    }
}

/// What the key reads from a request.
pub(crate) struct RequestView<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) peer: Option<IpAddr>,
    pub(crate) identity: Option<&'a Identity>,
    pub(crate) route: Option<&'a str>,
    pub(crate) path: &'a str,
}

impl<'a> RequestView<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>, route: Option<&'a str>) -> Self {
        let extensions = request.extensions();
        let peer = peer_ip(extensions);
        Self {
            headers: request.headers(),
            peer,
            identity: extensions
                .get::<std::sync::Arc<crate::jwt::Identity>>()
                .map(|i| &**i),
            route,
            path: request.uri().path(),
        }
    }
}

impl RateKey {
    /// Feeds this key's material into `builder`; `None` when the request has none (no identity
    /// for a claim key, no such header, no peer address). Does not allocate.
    pub(crate) fn build<K: KeyParts>(&self, view: &RequestView<'_>, builder: K) -> Option<K> {
        match self {
            RateKey::Claim(path) => match path.lookup(view.identity?.claims())? {
                Value::String(s) => Some(builder.part(b"s").part(s.as_bytes())),
                Value::Number(n) => Some(match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => builder.part(b"u").part(&u.to_le_bytes()),
                    (_, Some(i), _) => builder.part(b"i").part(&i.to_le_bytes()),
                    (_, _, f) => builder
                        .part(b"f")
                        .part(&f.unwrap_or_default().to_bits().to_le_bytes()),
                }),
                Value::Bool(b) => Some(builder.part(b"b").part(&[u8::from(*b)])),
                _ => None,
            },
            RateKey::Ip(trusted) => {
                let ip = client_ip(view.headers, view.peer?, trusted);
                Some(match canonical(ip) {
                    IpAddr::V4(v4) => builder.part(&v4.octets()),
                    IpAddr::V6(v6) => builder.part(&v6.octets()),
                })
            }
            RateKey::Header(name) => Some(builder.part(view.headers.get(name)?.as_bytes())),
            RateKey::Route => match (
                view.route,
                crate::route::path::NormalizedPath::new(view.path),
            ) {
                (Some(pattern), _) => Some(builder.part(b"r").part(pattern.as_bytes())),
                // No routes: the normalised, decoded path, so `//orders` or `/%6Frders` is not a
                // fresh bucket for `/orders`.
                (None, Ok(path)) => {
                    let mut builder = Some(builder.part(b"p"));
                    path.for_each_decoded(|chunk| builder = builder.take().map(|b| b.part(chunk)));
                    builder
                }
                // A path normalisation refuses: all such requests share one bucket.
                (None, Err(_)) => Some(builder.part(b"x")),
            },
            RateKey::Composite(parts) => parts
                .iter()
                .try_fold(builder, |b, part| part.build(view, b)),
            RateKey::Global => Some(builder.part(b"global")),
        }
    }
}

/// The client address: the peer, or the entry of the forwarding header the trusted proxies
/// vouch for. Never the leftmost entry on the client's say-so. Does not allocate.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, config: &ClientIp) -> IpAddr {
    match config.header {
        ForwardedHeader::XForwardedFor => walk(
            peer,
            &config.trusted,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .rev()
                .flat_map(|value| value.to_str().unwrap_or("").rsplit(','))
                .map(|entry| entry.trim().parse::<IpAddr>().ok()),
        ),
        ForwardedHeader::Forwarded => walk(
            peer,
            &config.trusted,
            headers
                .get_all(http::header::FORWARDED)
                .iter()
                .rev()
                .flat_map(|value| value.to_str().unwrap_or("").rsplit(','))
                .map(forwarded_for),
        ),
    }
}

/// Walks the hops from the right (the peer first, then the header's entries right to left;
/// `None` for an entry that names no address).
fn walk(
    peer: IpAddr,
    trusted: &TrustedProxies,
    forwarded: impl Iterator<Item = Option<IpAddr>>,
) -> IpAddr {
    match trusted {
        TrustedProxies::None => peer,
        TrustedProxies::Count(count) => {
            let mut client = peer;
            for entry in forwarded.take(usize::from(*count)) {
                match entry {
                    Some(ip) => client = ip,
                    // A malformed entry: stop at the last address a trusted hop vouched for.
                    None => break,
                }
            }
            client
        }
        TrustedProxies::Networks(networks) => {
            let trusted = |ip: IpAddr| networks.iter().any(|n| n.contains(ip));
            let mut client = peer;
            if !trusted(client) {
                return client;
            }
            for entry in forwarded {
                match entry {
                    Some(ip) => {
                        client = ip;
                        if !trusted(ip) {
                            break;
                        }
                    }
                    None => break,
                }
            }
            client
        }
    }
}

/// The address in one RFC 7239 `forwarded-element`'s `for` parameter: `for=192.0.2.60`,
/// `for="192.0.2.60:4711"`, `for="[2001:db8::17]"`, `for="[2001:db8::17]:4711"`. `None` for
/// `unknown`, an obfuscated node (`_hidden`), a missing `for`, or anything malformed — the walk
/// then stops at the last address a trusted hop vouched for. (An element whose quoted strings
/// hold a comma is split there, and so ends the walk too: no node value contains one.)
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in element.split(';') {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            // Two `for` parameters in one element: which one would a proxy mean?
            return None;
        }
        let node = match value.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"')?,
            None => value,
        };
        let ip = match node.strip_prefix('[') {
            Some(v6) => {
                let (addr, port) = v6.split_once(']')?;
                if !(port.is_empty() || valid_port(port.strip_prefix(':')?)) {
                    return None;
                }
                IpAddr::V6(addr.parse().ok()?)
            }
            None => {
                let (addr, port) = node.split_once(':').unwrap_or((node, ""));
                if !port.is_empty() && !valid_port(port) {
                    return None;
                }
                // An unquoted value with a port is not a token: malformed, as is a bare IPv6.
                if !port.is_empty() && !value.starts_with('"') {
                    return None;
                }
                IpAddr::V4(addr.parse().ok()?)
            }
        };
        found = Some(ip);
    }
    found
}

/// An RFC 7239 `node-port`: a port number or an obfuscated port (`_abc`).
fn valid_port(port: &str) -> bool {
    (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
        || (port.len() > 1
            && port.starts_with('_')
            && port
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_proxy_extraction() {
        let peer = ip("10.0.0.1");
        let spoofed = xff(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(client_ip(&spoofed, peer, &ClientIp::peer()), peer);
        assert_eq!(
            client_ip(
                &spoofed,
                peer,
                &ClientIp::trusting(TrustedProxies::Count(1))
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(
                &spoofed,
                peer,
                &ClientIp::trusting(TrustedProxies::Count(2))
            ),
            ip("6.6.6.6")
        );
        assert_eq!(
            client_ip(
                &xff(&["6.6.6.6", "203.0.113.7"]),
                peer,
                &ClientIp::trusting(TrustedProxies::Count(1))
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(
                &HeaderMap::new(),
                peer,
                &ClientIp::trusting(TrustedProxies::Count(1))
            ),
            peer
        );
        assert_eq!(
            client_ip(
                &xff(&["garbage, 203.0.113.7"]),
                peer,
                &ClientIp::trusting(TrustedProxies::Count(3))
            ),
            ip("203.0.113.7")
        );

        let nets = ClientIp::trusting(TrustedProxies::Networks(
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()].into(),
        ));
        assert_eq!(
            client_ip(&xff(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]), peer, &nets),
            ip("203.0.113.7")
        );
        // An untrusted peer: its X-Forwarded-For is not believed at all.
        assert_eq!(
            client_ip(&spoofed, ip("198.51.100.1"), &nets),
            ip("198.51.100.1")
        );
        // Every hop trusted: the leftmost trusted address, never beyond what the header holds.
        assert_eq!(client_ip(&xff(&["10.9.9.9"]), peer, &nets), ip("10.9.9.9"));
        assert_eq!(
            client_ip(&xff(&["[::1]:80, 203.0.113.9"]), peer, &nets),
            ip("203.0.113.9")
        );
    }

    fn fwd(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("forwarded", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn rfc7239_forwarded() {
        let peer = ip("10.0.0.1");
        let one = ClientIp::trusting(TrustedProxies::Count(1)).header(ForwardedHeader::Forwarded);
        let two = ClientIp::trusting(TrustedProxies::Count(2)).header(ForwardedHeader::Forwarded);
        let headers = fwd(&["for=6.6.6.6, for=203.0.113.7;proto=https;by=10.0.0.1"]);
        assert_eq!(client_ip(&headers, peer, &one), ip("203.0.113.7"));
        assert_eq!(client_ip(&headers, peer, &two), ip("6.6.6.6"));
        // Several header lines are one list; names are case-insensitive; quoted forms with
        // ports and IPv6 in brackets.
        for (value, want) in [
            (r#"For="203.0.113.7:4711""#, "203.0.113.7"),
            (r#"for="[2001:db8:cafe::17]""#, "2001:db8:cafe::17"),
            (
                r#"for="[2001:db8:cafe::17]:4711";proto=http"#,
                "2001:db8:cafe::17",
            ),
            (r#"proto=https; for="[2001:db8::1]:_port""#, "2001:db8::1"),
        ] {
            let headers = fwd(&["for=6.6.6.6", value]);
            assert_eq!(client_ip(&headers, peer, &one), ip(want), "{value}");
        }
        // Not an address: the walk stops at the last address a trusted hop vouched for.
        for value in [
            "for=unknown",
            "for=_hidden",
            "for=2001:db8::1",
            "for=203.0.113.7:80",
            r#"for="203.0.113.7"#,
            r#"for="[2001:db8::1]:99999""#,
            "for=203.0.113.7;for=198.51.100.1",
            "proto=https",
            "for",
            "",
        ] {
            let headers = fwd(&[value]);
            assert_eq!(client_ip(&headers, peer, &one), peer, "{value}");
        }
        // X-Forwarded-For is not read when Forwarded is configured, and the reverse.
        assert_eq!(client_ip(&xff(&["203.0.113.7"]), peer, &one), peer);
        let xff_one = ClientIp::trusting(TrustedProxies::Count(1));
        assert_eq!(client_ip(&fwd(&["for=203.0.113.7"]), peer, &xff_one), peer);
        // Trusted networks over Forwarded.
        let nets = ClientIp::trusting(TrustedProxies::Networks(
            vec!["10.0.0.0/8".parse().unwrap()].into(),
        ))
        .header(ForwardedHeader::Forwarded);
        let headers = fwd(&["for=6.6.6.6, for=203.0.113.7", "for=10.2.3.4"]);
        assert_eq!(client_ip(&headers, peer, &nets), ip("203.0.113.7"));
    }

    #[test]
    fn key_specs() {
        for (text, display) in [
            ("claim:sub", "claim:sub"),
            ("ip", "ip"),
            ("header:X-Api-Key", "header:x-api-key"),
            ("route+claim:org.id", "route+claim:org.id"),
            ("global", "global"),
        ] {
            assert_eq!(text.parse::<RateKey>().unwrap().to_string(), display);
        }
        for bad in ["claim:", "header:a b", "cookie:x", ""] {
            assert!(bad.parse::<RateKey>().is_err(), "{bad}");
        }
    }
}
