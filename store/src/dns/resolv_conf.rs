//! The `nameserver` lines of resolv.conf(5): which recursive resolvers the host uses.

use std::net::{IpAddr, SocketAddr};

/// The most nameservers we take from the file, like the system resolver (MAXNS).
pub const MAX_NAMESERVERS: usize = 3;

/// The nameserver addresses (port 53) named by `nameserver` lines, in file order, at most
/// [`MAX_NAMESERVERS`]. Comments (`#`, `;`), other keywords and unparsable addresses are
/// skipped; an IPv6 address with a `%zone` suffix is skipped too (link-local servers need
/// a scope we cannot express in a `SocketAddr` portably). No usable line means the local
/// host, as the system resolver assumes.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(address) = words.next() else {
            continue;
        };
        if let Ok(ip) = address.parse::<IpAddr>() {
            found.push(SocketAddr::new(ip, 53));
            if found.len() == MAX_NAMESERVERS {
                break;
            }
        }
    }
    if found.is_empty() {
        found.push(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 53));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_nameserver_lines_in_order_and_at_most_three() {
        let text = "# comment\nsearch example.com\nnameserver 192.0.2.1\n\
                    nameserver   2001:db8::53\nnameserver fe80::1%eth0\nnameserver bogus\n\
                    nameserver 192.0.2.2\nnameserver 192.0.2.3\n";
        let got = nameservers(text);
        let want: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            "192.0.2.2:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn no_nameserver_means_localhost() {
        assert_eq!(
            nameservers("options ndots:2\n"),
            vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
    }
}
