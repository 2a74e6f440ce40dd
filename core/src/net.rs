//! Address ranges (`127.0.0.0/8`, `2001:db8::/32`) for `[trust] networks` and the
//! plaintext-login policy.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network in CIDR notation (RFC 4632 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `addr` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) matches IPv4 networks.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                prefix_match(&net.octets(), &a.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                prefix_match(&net.octets(), &a.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], addr: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != addr[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (net[full] & mask) == (addr[full] & mask)
}

/// Why a network string is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid network {:?}: expected ADDRESS or ADDRESS/PREFIX",
            self.0
        )
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| err())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(err)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// When a password may be sent over a connection without TLS (`[tls] plaintext_auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaintextAuth {
    /// Never: TLS first (STLS/STARTTLS or an implicit-TLS port).
    Never,
    /// From loopback clients and the listed trusted networks only (the default).
    Trusted(Vec<Cidr>),
    /// From anyone.
    Always,
}

impl PlaintextAuth {
    /// Whether a client at `addr` may log in without TLS.
    pub fn allows(&self, addr: IpAddr) -> bool {
        match self {
            PlaintextAuth::Never => false,
            PlaintextAuth::Always => true,
            PlaintextAuth::Trusted(networks) => {
                addr.is_loopback()
                    || addr.to_canonical().is_loopback()
                    || networks.iter().any(|n| n.contains(addr))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_and_ipv6_ranges() {
        let lan: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(lan.contains(ip("10.1.200.3")));
        assert!(!lan.contains(ip("10.2.0.1")));
        assert!(lan.contains(ip("::ffff:10.1.0.9")));
        let odd: Cidr = "192.168.0.0/23".parse().unwrap();
        assert!(odd.contains(ip("192.168.1.255")));
        assert!(!odd.contains(ip("192.168.2.0")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let host: Cidr = "127.0.0.2".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.2/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn plaintext_policy() {
        let trusted = PlaintextAuth::Trusted(vec!["192.0.2.0/24".parse().unwrap()]);
        assert!(trusted.allows(ip("127.0.0.1")));
        assert!(trusted.allows(ip("::1")));
        assert!(trusted.allows(ip("192.0.2.7")));
        assert!(!trusted.allows(ip("198.51.100.1")));
        assert!(!PlaintextAuth::Never.allows(ip("127.0.0.1")));
        assert!(PlaintextAuth::Always.allows(ip("198.51.100.1")));
    }
}
