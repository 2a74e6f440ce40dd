//! Finding the receiving server for outbound mail: a small blocking stub resolver that asks
//! the configured recursive nameservers for MX (RFC 5321 §5.1, RFC 7505) and A/AAAA
//! records. It runs on the queue runner's threads, never on an event loop.
//!
//! The DNS wire format comes from the `simple-dns` crate; the exchange itself (random id,
//! answer checks, one retry, TCP on truncation, nameservers in order) is in [`transport`].
//! Nothing is cached: each delivery attempt asks again, and the recursive resolver the
//! host points at is the cache.

mod resolv_conf;
mod transport;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, RCODE, TYPE};

pub use resolv_conf::{MAX_NAMESERVERS, nameservers as parse_resolv_conf};

/// How many queries one lookup may make to follow CNAME records that point outside the
/// answer it got: bounds the work a CNAME loop between zones can cause.
const MAX_CNAME_QUERIES: usize = 4;

/// How many CNAME hops we follow inside one answer (RFC 1034 §3.6.2 chains are short).
const MAX_CNAME_HOPS: usize = 8;

/// How many MX hosts of one domain we consider: each may cost two address lookups, and no
/// delivery attempt tries more hosts than this anyway.
pub const MAX_MX_HOSTS: usize = 16;

/// A stub resolver asking configured nameservers over UDP (TCP when truncated).
///
/// Nameservers are asked in order; the next one is tried after a timeout (each query is
/// sent twice, `timeout` apart), SERVFAIL, REFUSED or a malformed answer. So the worst
/// case for one query is `2 × timeout × nameservers`.
#[derive(Debug, Clone)]
pub struct Resolver {
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
}

/// One host to deliver to for a domain (RFC 5321 §5.1): its name (also the name its TLS
/// certificate should match), its MX preference, and its addresses (IPv4 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailExchanger {
    /// The MX host name, lower case, without the trailing dot.
    pub host: String,
    /// The MX preference; lower is tried first. 0 for an implicit MX.
    pub preference: u16,
    /// The host's A and AAAA addresses, IPv4 first; never empty in a lookup result.
    pub addrs: Vec<IpAddr>,
}

impl MailExchanger {
    /// The host's addresses with `port` (25 for MX delivery, RFC 5321 §4.5.4.2), in
    /// order, ready for an outbound `Destination`.
    pub fn socket_addrs(&self, port: u16) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect()
    }
}

/// Why a lookup found no server to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The domain publishes a null MX (RFC 7505 "0 ."): it accepts no mail. Permanent.
    NullMx,
    /// The domain does not exist (NXDOMAIN, RFC 1035 §4.1.1 RCODE 3). Permanent.
    NoSuchDomain,
    /// No MX and no A/AAAA, or no MX host has an address. Permanent.
    NoAddress,
    /// Timeout, SERVFAIL, REFUSED or a malformed answer from every nameserver: try later.
    Temporary(String),
}

impl DnsError {
    /// Whether the message should bounce (true) rather than stay queued (false).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(_))
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NullMx => f.write_str("the domain accepts no mail (null MX, RFC 7505)"),
            DnsError::NoSuchDomain => f.write_str("no such domain"),
            DnsError::NoAddress => f.write_str("no mail server address for the domain"),
            DnsError::Temporary(why) => write!(f, "temporary DNS failure: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// One record of an answer, owned and reduced to what mail routing needs.
#[derive(Debug, Clone)]
enum Data {
    Mx(u16, String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Cname(String),
    Other,
}

#[derive(Debug, Clone)]
struct Record {
    owner: String,
    data: Data,
}

/// The answer and additional sections of one response.
type Sections = (Vec<Record>, Vec<Record>);

/// What one query found: NXDOMAIN, or the records of the asked type at the end of any
/// CNAME chain (empty for NODATA), plus the additional section's addresses.
enum Lookup {
    NoSuchDomain,
    Found {
        records: Vec<Data>,
        additional: Vec<Record>,
    },
}

impl Resolver {
    /// A resolver asking `nameservers` in order, waiting `timeout` for each UDP attempt.
    pub fn new(nameservers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Resolver {
            nameservers,
            timeout,
        }
    }

    /// Nameservers from /etc/resolv.conf (the default when `[relay] nameservers` is not set).
    pub fn from_system(timeout: Duration) -> std::io::Result<Self> {
        Self::from_resolv_conf(Path::new("/etc/resolv.conf"), timeout)
    }

    /// Nameservers from a file in resolv.conf(5) format (see [`parse_resolv_conf`]).
    pub fn from_resolv_conf(path: &Path, timeout: Duration) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::new(parse_resolv_conf(&text), timeout))
    }

    /// The nameservers this resolver asks, in order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// RFC 5321 §5.1: MX records by preference (ties in random order), each host's A/AAAA addresses
    /// (from the additional section or looked up); no MX → the domain itself as an implicit MX with preference 0.
    ///
    /// A null MX (RFC 7505) gives [`DnsError::NullMx`]; MX hosts whose addresses cannot be
    /// found are left out. An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`,
    /// RFC 5321 §4.1.3) is returned as is, without a query.
    pub fn mail_exchangers(&self, domain: &str) -> Result<Vec<MailExchanger>, DnsError> {
        let domain = normalize(domain);
        if let Some(ip) = address_literal(&domain) {
            return Ok(vec![MailExchanger {
                host: domain,
                preference: 0,
                addrs: vec![ip],
            }]);
        }
        check_name(&domain)?;
        let (records, additional) = match self.lookup(&domain, TYPE::MX)? {
            Lookup::NoSuchDomain => return Err(DnsError::NoSuchDomain),
            Lookup::Found {
                records,
                additional,
            } => (records, additional),
        };
        let mut hosts: Vec<(u16, String)> = records
            .into_iter()
            .filter_map(|data| match data {
                Data::Mx(preference, host) => Some((preference, host)),
                _ => None,
            })
            .collect();
        if hosts.is_empty() {
            // RFC 5321 §5.1: no MX records, so the domain is its own implicit MX.
            let addrs = self.addresses(&domain)?;
            return Ok(vec![MailExchanger {
                host: domain,
                preference: 0,
                addrs,
            }]);
        }
        // RFC 7505 §3: an MX whose exchange is the root means "no mail". Mixed with real MX
        // records it is a misconfiguration; we then skip the root entries and use the rest.
        hosts.retain(|(_, host)| !host.is_empty());
        if hosts.is_empty() {
            return Err(DnsError::NullMx);
        }
        order_by_preference(&mut hosts);
        let mut seen = std::collections::HashSet::new();
        hosts.retain(|(_, host)| seen.insert(host.clone()));
        hosts.truncate(MAX_MX_HOSTS);

        let mut found = Vec::new();
        let mut temporary = None;
        for (preference, host) in hosts {
            let mut addrs = addresses_in(&additional, &host);
            if addrs.is_empty() {
                match self.addresses(&host) {
                    Ok(looked_up) => addrs = looked_up,
                    Err(DnsError::Temporary(why)) => temporary = Some(why),
                    Err(_) => {}
                }
            }
            if !addrs.is_empty() {
                found.push(MailExchanger {
                    host,
                    preference,
                    addrs,
                });
            }
        }
        if found.is_empty() {
            return Err(match temporary {
                Some(why) => DnsError::Temporary(why),
                None => DnsError::NoAddress,
            });
        }
        Ok(found)
    }

    /// A and AAAA of a host (used for a smarthost given by name), IPv4 first. An IP address
    /// written as the host is returned as is. No address at all is [`DnsError::NoAddress`].
    pub fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let host = normalize(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        check_name(&host)?;
        let mut addrs = Vec::new();
        let mut temporary = None;
        for qtype in [TYPE::A, TYPE::AAAA] {
            match self.lookup(&host, qtype) {
                Ok(Lookup::NoSuchDomain) => return Err(DnsError::NoSuchDomain),
                Ok(Lookup::Found { records, .. }) => {
                    addrs.extend(records.into_iter().filter_map(|data| match data {
                        Data::V4(v4) => Some(IpAddr::V4(v4)),
                        Data::V6(v6) => Some(IpAddr::V6(v6)),
                        _ => None,
                    }));
                }
                Err(error) => temporary = Some(error),
            }
        }
        if addrs.is_empty() {
            return Err(temporary.unwrap_or(DnsError::NoAddress));
        }
        Ok(addrs)
    }

    /// Asks for `qtype` records of `name`, following CNAME records (within the answer, and
    /// by asking again when the chain leaves it).
    fn lookup(&self, name: &str, qtype: TYPE) -> Result<Lookup, DnsError> {
        let mut current = name.to_string();
        for _ in 0..MAX_CNAME_QUERIES {
            let Some(answer) = self.query(&current, qtype)? else {
                return Ok(Lookup::NoSuchDomain);
            };
            let (answers, additional) = answer;
            let mut hops = 0;
            while let Some(target) = answers.iter().find_map(|r| match &r.data {
                Data::Cname(target) if r.owner == current => Some(target.clone()),
                _ => None,
            }) {
                hops += 1;
                if hops > MAX_CNAME_HOPS {
                    return Err(DnsError::Temporary(format!("CNAME loop at {name}")));
                }
                current = target;
            }
            let records: Vec<Data> = answers
                .into_iter()
                .filter(|r| r.owner == current && is_type(&r.data, qtype))
                .map(|r| r.data)
                .collect();
            if !records.is_empty() || hops == 0 {
                return Ok(Lookup::Found {
                    records,
                    additional,
                });
            }
        }
        Err(DnsError::Temporary(format!(
            "CNAME chain too long at {name}"
        )))
    }

    /// One question to the nameservers in order: `None` for NXDOMAIN, otherwise the answer
    /// and additional sections.
    fn query(&self, name: &str, qtype: TYPE) -> Result<Option<Sections>, DnsError> {
        let mut last = String::from("no nameserver configured");
        for server in &self.nameservers {
            let bytes = match transport::exchange(*server, name, qtype, self.timeout) {
                Ok(bytes) => bytes,
                Err(error) => {
                    last = format!("{server}: {error}");
                    continue;
                }
            };
            let Ok(packet) = Packet::parse(&bytes) else {
                last = format!("{server}: malformed answer");
                continue;
            };
            match packet.rcode() {
                RCODE::NoError => {
                    return Ok(Some((
                        packet.answers.iter().map(to_record).collect(),
                        packet.additional_records.iter().map(to_record).collect(),
                    )));
                }
                RCODE::NameError => return Ok(None),
                other => last = format!("{server}: {other:?} for {name}"),
            }
        }
        Err(DnsError::Temporary(last))
    }
}

fn to_record(record: &simple_dns::ResourceRecord<'_>) -> Record {
    let data = match &record.rdata {
        RData::MX(mx) => Data::Mx(mx.preference, name_text(&mx.exchange)),
        RData::A(a) => Data::V4(Ipv4Addr::from(a.address)),
        RData::AAAA(aaaa) => Data::V6(Ipv6Addr::from(aaaa.address)),
        RData::CNAME(cname) => Data::Cname(name_text(&cname.0)),
        _ => Data::Other,
    };
    Record {
        owner: name_text(&record.name),
        data,
    }
}

fn is_type(data: &Data, qtype: TYPE) -> bool {
    matches!(
        (data, qtype),
        (Data::Mx(..), TYPE::MX) | (Data::V4(_), TYPE::A) | (Data::V6(_), TYPE::AAAA)
    )
}

/// A name as lower-case text without the trailing dot ("" for the root).
fn name_text(name: &Name<'_>) -> String {
    normalize(&name.to_string())
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A name we can put in a query: 1–253 octets in labels of 1–63 (RFC 1035 §2.3.4).
fn check_name(name: &str) -> Result<(), DnsError> {
    let labels_ok = name
        .split('.')
        .all(|label| !label.is_empty() && label.len() <= 63);
    if name.is_empty() || name.len() > 253 || !labels_ok || Name::new(name).is_err() {
        return Err(DnsError::NoSuchDomain);
    }
    Ok(())
}

/// `[192.0.2.1]` or `[ipv6:2001:db8::1]` (already lower-cased), RFC 5321 §4.1.3.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.strip_prefix("ipv6:") {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn addresses_in(additional: &[Record], host: &str) -> Vec<IpAddr> {
    let v4 = additional.iter().filter_map(|r| match r.data {
        Data::V4(ip) if r.owner == host => Some(IpAddr::V4(ip)),
        _ => None,
    });
    let v6 = additional.iter().filter_map(|r| match r.data {
        Data::V6(ip) if r.owner == host => Some(IpAddr::V6(ip)),
        _ => None,
    });
    v4.chain(v6).collect()
}

/// Sorts by preference and shuffles each run of equal preference (RFC 5321 §5.1: "the
/// sender-SMTP MUST randomize them to spread the load").
fn order_by_preference(hosts: &mut [(u16, String)]) {
    hosts.sort_by_key(|(preference, _)| *preference);
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].0;
        let end = hosts[start..]
            .iter()
            .position(|(p, _)| *p != preference)
            .map_or(hosts.len(), |offset| start + offset);
        shuffle(&mut hosts[start..end]);
        start = end;
    }
}

/// Fisher–Yates with the system's random source; leaves the order alone if it fails.
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let mut bytes = [0u8; 4];
        if getrandom::getrandom(&mut bytes).is_err() {
            return;
        }
        let j = (u32::from_le_bytes(bytes) as usize) % (i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some(IpAddr::from([192, 0, 2, 1]))
        );
        assert_eq!(
            address_literal("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("[2001:db8::1]"), None);
        assert_eq!(address_literal("example.com"), None);
    }

    #[test]
    fn preference_order_keeps_groups_and_shuffles_within() {
        let mut hosts: Vec<(u16, String)> = vec![
            (20, "c".into()),
            (10, "a".into()),
            (10, "b".into()),
            (5, "z".into()),
        ];
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            order_by_preference(&mut hosts);
            let prefs: Vec<u16> = hosts.iter().map(|h| h.0).collect();
            assert_eq!(prefs, vec![5, 10, 10, 20]);
            orders.insert(hosts[1].1.clone());
        }
        assert_eq!(orders.len(), 2, "ties come in both orders");
    }

    #[test]
    fn bad_names_are_refused_without_a_query() {
        let resolver = Resolver::new(Vec::new(), Duration::from_millis(1));
        assert_eq!(
            resolver.mail_exchangers("a..b"),
            Err(DnsError::NoSuchDomain)
        );
        assert_eq!(
            resolver.mail_exchangers(&"x".repeat(64)),
            Err(DnsError::NoSuchDomain)
        );
        assert_eq!(resolver.mail_exchangers(""), Err(DnsError::NoSuchDomain));
    }
}
