//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1): one service extension
//! keyword per line after the first, with its parameters.

use super::reply::SmtpReply;

/// The most AUTH mechanisms remembered from one EHLO reply; a server lists a handful.
const MAX_MECHANISMS: usize = 16;

/// The service extensions the client uses, as one EHLO reply announced them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING (RFC 2920): commands may be sent in groups.
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(limit)` when offered; a limit of 0 means none is declared.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152): `BODY=8BITMIME` is understood.
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531): UTF-8 addresses and headers are accepted.
    pub smtputf8: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// CHUNKING (RFC 3030): BDAT may replace DATA.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// SASL mechanisms from `AUTH` (RFC 4954 §3), upper-cased; also the older
    /// `AUTH=` form some servers still send.
    pub auth: Vec<String>,
    /// XCLIENT (Postfix `XCLIENT_README`): `Some` with the attribute names the server
    /// accepts (upper-cased, at most [`MAX_XCLIENT_NAMES`]) when offered.
    pub xclient: Option<Vec<String>>,
}

/// The most XCLIENT attribute names remembered; Postfix lists eight.
pub const MAX_XCLIENT_NAMES: usize = 16;

impl Capabilities {
    /// Reads the keywords of a positive EHLO reply; its first line is the server's name
    /// and greeting, so it is skipped. Unknown keywords are ignored.
    pub fn from_ehlo(reply: &SmtpReply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    // A malformed limit is read as "no declared limit", as RFC 1870 §4
                    // treats a missing one.
                    caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mechanism in words {
                        let mechanism = mechanism.to_ascii_uppercase();
                        if caps.auth.len() < MAX_MECHANISMS && !caps.auth.contains(&mechanism) {
                            caps.auth.push(mechanism);
                        }
                    }
                }
                "XCLIENT" => {
                    let mut names = Vec::new();
                    for name in words {
                        let name = name.to_ascii_uppercase();
                        if names.len() < MAX_XCLIENT_NAMES && !names.contains(&name) {
                            names.push(name);
                        }
                    }
                    caps.xclient = Some(names);
                }
                _ => {}
            }
        }
        caps
    }

    /// Whether the server offers the SASL mechanism `name` (upper case).
    pub fn offers_auth(&self, name: &str) -> bool {
        self.auth.iter().any(|m| m == name)
    }

    /// Whether the server accepts the XCLIENT attribute `name` (upper case).
    pub fn offers_xclient(&self, name: &str) -> bool {
        self.xclient
            .as_ref()
            .is_some_and(|names| names.iter().any(|n| n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> SmtpReply {
        SmtpReply {
            code: 250,
            enhanced: None,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn keywords_and_parameters() {
        let caps = Capabilities::from_ehlo(&ehlo(&[
            "mx.example.net greets you",
            "pipelining",
            "SIZE 35882577",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "AUTH PLAIN login",
            "AUTH=LOGIN",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
            "X-UNKNOWN foo",
            "XCLIENT addr PORT HELO ADDR",
        ]));
        assert_eq!(
            caps,
            Capabilities {
                pipelining: true,
                size: Some(35882577),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
                auth: vec!["PLAIN".into(), "LOGIN".into()],
                xclient: Some(vec!["ADDR".into(), "PORT".into(), "HELO".into()]),
            }
        );
        assert!(caps.offers_auth("LOGIN"));
        assert!(caps.offers_xclient("ADDR") && !caps.offers_xclient("NAME"));
        let bare = Capabilities::from_ehlo(&ehlo(&["mx", "XCLIENT"]));
        assert_eq!(bare.xclient, Some(Vec::new()));
        assert!(!bare.offers_xclient("ADDR"));
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword() {
        let caps = Capabilities::from_ehlo(&ehlo(&["STARTTLS"]));
        assert!(!caps.starttls);
        let caps = Capabilities::from_ehlo(&ehlo(&["mx", "SIZE", "SIZE x"]));
        assert_eq!(caps.size, Some(0));
    }
}
