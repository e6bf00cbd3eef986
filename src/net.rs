//! Connection addresses and IP networks, read by the layers that trust some peers more than
//! others (the propagate layer's request ids, the rate limit's client IP). Re-exported from
//! [`rate_limit`](crate::rate_limit).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The peer address of a connection, for the request's extensions (a plain `SocketAddr` there is
/// read too, and with the `axum` feature axum's `ConnectInfo<SocketAddr>`, which
/// `into_make_service_with_connect_info::<SocketAddr>()` puts in). The server that accepts
/// connections puts it in; without it, IP keys fall back to the anonymous bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// An IP network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address). Host bits must
/// be zero: `10.1.2.3/8` is refused rather than read as `10.0.0.0/8`, since it is more likely
/// a typo for one address than a wish to trust a whole network.
///
/// # Example
///
/// ```
/// use std::net::IpAddr;
/// use portcullis::rate_limit::IpNet;
///
/// let net: IpNet = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse::<IpAddr>().unwrap()));
/// assert!("10.1.2.3/8".parse::<IpNet>().unwrap_err().contains("10.0.0.0/8"));
/// assert_eq!(net.to_string(), "10.0.0.0/8");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// The network part of `ip` under `prefix` leading bits.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl IpNet {
    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && network(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ip`, with an IPv4-mapped IPv6 address read as the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = canonical(
            addr.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP network"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix in {s:?}"))?,
            None => max,
        };
        let net = network(addr, prefix);
        if net != addr {
            return Err(format!(
                "{s:?} has host bits set: write {net}/{prefix} for the network, or {addr} for one address"
            ));
        }
        Ok(Self { addr, prefix })
    }
}

/// The connection's peer, from the request's extensions: [`PeerAddr`], a `SocketAddr`, or
/// (feature `axum`) axum's `ConnectInfo<SocketAddr>`.
pub(crate) fn peer_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    let peer = extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip));
    #[cfg(feature = "axum")]
    let peer = peer.or_else(|| {
        extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    });
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks() {
        let net: IpNet = "192.168.0.0/16".parse().unwrap();
        assert!(net.contains(ip("192.168.3.4")) && !net.contains(ip("192.169.0.1")));
        assert!(net.contains(ip("::ffff:192.168.1.1")));
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
        assert!("fd00::/8".parse::<IpNet>().unwrap().contains(ip("fd12::1")));
    }
}
