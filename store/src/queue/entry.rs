//! One queue entry's envelope and delivery state, and its on-disk text form.
//!
//! The state file is plain text, one field a line, so an operator can read it:
//!
//! ```text
//! tidegate-queue 1
//! sender alice@example.com
//! arrived 1764412345
//! flags 8bit smtputf8
//! warned 0
//! rcpt pending 2 1764412645 bob@example.net 451%204.3.0%20try%20later
//! ```
//!
//! A `rcpt` line is `STATE ATTEMPTS NEXT_ATTEMPT ADDRESS LAST_REPLY [lmtp:HOST]`; the
//! last field is there for a recipient a proxy front-end relays to its back-end `HOST`
//! over LMTP (`tohost`, else `default_host`) instead of to its domain's mail servers.
//! An optional `client ADDR PORT HELO PROTO` line records the SMTP client a proxy
//! front-end received the message from (`-` for a part not known), so the LMTP leg can
//! name it to the back-end with XCLIENT; entries written before it existed have none.
//! The address, the reply and the host are escaped (every byte outside `!`..`~` and `%` itself become `%XX`), so
//! no field can contain a space or a line end. An empty sender or reply is `-`.

use std::fmt::Write as _;
use std::net::IpAddr;

use tidegate_core::proxy::xclient::Xclient;

/// The format's first line; a file without it is not a queue entry.
const MAGIC: &str = "tidegate-queue 1";

/// Marks the optional last field of a `rcpt` line: the recipient's back-end.
const BACKEND_PREFIX: &str = "lmtp:";

/// The longest state file read back (a safety bound: 100 recipients with long replies
/// take a few tens of KiB).
pub const MAX_STATE_FILE: u64 = 1 << 20;

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientState {
    /// Not delivered yet; tried again at `next_attempt`.
    Pending,
    /// The receiving server accepted it (RFC 5321 §4.2: 2yz after the data).
    Delivered,
    /// Given up: a permanent failure, or the entry expired. A bounce was sent.
    Failed,
}

impl RecipientState {
    fn word(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Delivered => "delivered",
            RecipientState::Failed => "failed",
        }
    }

    fn parse(word: &str) -> Option<RecipientState> {
        match word {
            "pending" => Some(RecipientState::Pending),
            "delivered" => Some(RecipientState::Delivered),
            "failed" => Some(RecipientState::Failed),
            _ => None,
        }
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecipient {
    /// The forward-path as the client gave it (without angle brackets).
    pub address: String,
    /// Where it stands.
    pub state: RecipientState,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Unix time (seconds) of the next attempt, while pending.
    pub next_attempt: u64,
    /// The last reply or error, one line (`550 5.1.1 no such user`), for logs and DSNs.
    pub last_reply: String,
    /// Proxy mode: the back-end that owns the mailbox; the recipient is delivered there
    /// over LMTP (RFC 2033) rather than to its domain.
    pub backend: Option<String>,
}

/// Where a recipient is delivered: the unit the runner groups recipients by, one
/// transaction each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A recipient domain (lowercase), by smarthost or MX.
    Domain(String),
    /// A back-end of this cluster, over LMTP.
    Backend(String),
}

impl QueuedRecipient {
    /// A recipient not tried yet, due at `now`.
    pub fn new(address: String, now: u64) -> Self {
        QueuedRecipient {
            address,
            state: RecipientState::Pending,
            attempts: 0,
            next_attempt: now,
            last_reply: String::new(),
            backend: None,
        }
    }

    /// A recipient not tried yet, due at `now`, relayed to `backend` over LMTP.
    pub fn for_backend(address: String, backend: String, now: u64) -> Self {
        QueuedRecipient {
            backend: Some(backend),
            ..QueuedRecipient::new(address, now)
        }
    }

    /// Where the recipient is delivered.
    pub fn destination(&self) -> Destination {
        match &self.backend {
            Some(host) => Destination::Backend(host.clone()),
            None => Destination::Domain(self.domain()),
        }
    }

    /// The domain part of the address (after the last `@`), lowercased: the
    /// destination it is delivered to.
    pub fn domain(&self) -> String {
        domain_of(&self.address)
    }
}

/// The domain part of an address, lowercased; empty without an `@`.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The envelope and state of one queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The entry's unique id (also its file names).
    pub id: String,
    /// The reverse-path; empty for the null sender (bounces).
    pub sender: String,
    /// Unix time the message was accepted.
    pub arrived: u64,
    /// The body needs 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// A delay warning was sent already (at most one per entry).
    pub warned: bool,
    /// Every recipient, in RCPT order.
    pub recipients: Vec<QueuedRecipient>,
    /// The SMTP client the message came from (address, port, HELO name, `SMTP` or
    /// `ESMTP`), for XCLIENT on the LMTP leg; `None` when not recorded.
    pub client: Option<Xclient>,
}

impl QueueEntry {
    /// True when no recipient is pending: the entry can be removed.
    pub fn is_finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.state != RecipientState::Pending)
    }

    /// The earliest next attempt of a pending recipient.
    pub fn next_attempt(&self) -> Option<u64> {
        self.recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
            .map(|r| r.next_attempt)
            .min()
    }

    /// The text form written to the state file.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "sender {}", escape_or_dash(&self.sender));
        let _ = writeln!(out, "arrived {}", self.arrived);
        let mut flags = Vec::new();
        if self.eight_bit {
            flags.push("8bit");
        }
        if self.smtputf8 {
            flags.push("smtputf8");
        }
        let _ = writeln!(out, "flags {}", flags.join(" "));
        let _ = writeln!(out, "warned {}", u8::from(self.warned));
        if let Some(client) = &self.client {
            let addr = client.addr.map(|a| a.to_string()).unwrap_or_default();
            let port = client.port.map(|p| p.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                "client {} {} {} {}",
                escape_or_dash(&addr),
                escape_or_dash(&port),
                escape_or_dash(client.helo.as_deref().unwrap_or_default()),
                escape_or_dash(client.proto.as_deref().unwrap_or_default()),
            );
        }
        for r in &self.recipients {
            let _ = write!(
                out,
                "rcpt {} {} {} {} {}",
                r.state.word(),
                r.attempts,
                r.next_attempt,
                escape_or_dash(&r.address),
                escape_or_dash(&r.last_reply)
            );
            if let Some(host) = &r.backend {
                let _ = write!(out, " {BACKEND_PREFIX}{}", escape_or_dash(host));
            }
            out.push('\n');
        }
        out
    }

    /// Reads the text form back; `None` when it is not a complete, valid state file.
    pub fn from_text(id: &str, text: &str) -> Option<QueueEntry> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut entry = QueueEntry {
            id: id.to_owned(),
            sender: String::new(),
            arrived: 0,
            eight_bit: false,
            smtputf8: false,
            warned: false,
            recipients: Vec::new(),
            client: None,
        };
        let mut seen_sender = false;
        for line in lines {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "sender" => {
                    entry.sender = unescape_or_dash(rest)?;
                    seen_sender = true;
                }
                "arrived" => entry.arrived = rest.parse().ok()?,
                "flags" => {
                    for flag in rest.split_whitespace() {
                        match flag {
                            "8bit" => entry.eight_bit = true,
                            "smtputf8" => entry.smtputf8 = true,
                            _ => return None,
                        }
                    }
                }
                "warned" => entry.warned = rest == "1",
                "rcpt" => entry.recipients.push(parse_recipient(rest)?),
                "client" => entry.client = Some(parse_client(rest)?),
                _ => return None,
            }
        }
        (seen_sender && !entry.recipients.is_empty()).then_some(entry)
    }
}

/// Reads a `client ADDR PORT HELO PROTO` line's fields; `None` when malformed.
fn parse_client(rest: &str) -> Option<Xclient> {
    let fields: Vec<&str> = rest.split(' ').collect();
    let [addr, port, helo, proto] = fields.as_slice() else {
        return None;
    };
    let (addr, port) = (unescape_or_dash(addr)?, unescape_or_dash(port)?);
    let (helo, proto) = (unescape_or_dash(helo)?, unescape_or_dash(proto)?);
    let some = |text: String| (!text.is_empty()).then_some(text);
    Some(Xclient {
        addr: match some(addr) {
            None => None,
            Some(text) => Some(text.parse::<IpAddr>().ok()?),
        },
        port: match some(port) {
            None => None,
            Some(text) => Some(text.parse::<u16>().ok()?),
        },
        helo: some(helo),
        proto: some(proto),
        ..Xclient::default()
    })
}

fn parse_recipient(rest: &str) -> Option<QueuedRecipient> {
    let mut fields = rest.split(' ');
    let state = RecipientState::parse(fields.next()?)?;
    let attempts = fields.next()?.parse().ok()?;
    let next_attempt = fields.next()?.parse().ok()?;
    let address = unescape_or_dash(fields.next()?)?;
    let last_reply = unescape_or_dash(fields.next()?)?;
    let backend = match fields.next() {
        None => None,
        Some(field) => {
            let host = unescape_or_dash(field.strip_prefix(BACKEND_PREFIX)?)?;
            if host.is_empty() {
                return None;
            }
            Some(host)
        }
    };
    if fields.next().is_some() || address.is_empty() {
        return None;
    }
    Some(QueuedRecipient {
        address,
        state,
        attempts,
        next_attempt,
        last_reply,
        backend,
    })
}

/// `-` for an empty field, else the escaped text.
fn escape_or_dash(text: &str) -> String {
    if text.is_empty() {
        return "-".into();
    }
    if text == "-" {
        // A lone `-` means "empty" on read, so a field that is exactly `-` is escaped.
        return "%2D".into();
    }
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The inverse of [`escape_or_dash`]; `None` for a malformed escape or invalid UTF-8.
fn unescape_or_dash(field: &str) -> Option<String> {
    if field == "-" {
        return Some(String::new());
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QueueEntry {
        QueueEntry {
            id: "x".into(),
            sender: "alice@example.com".into(),
            arrived: 1_764_412_345,
            eight_bit: true,
            smtputf8: false,
            warned: true,
            recipients: vec![
                QueuedRecipient {
                    address: "\"b o%b\"@Example.NET".into(),
                    state: RecipientState::Pending,
                    attempts: 2,
                    next_attempt: 1_764_412_645,
                    last_reply: "451 4.3.0 try later".into(),
                    backend: None,
                },
                QueuedRecipient {
                    address: "jörg@example.org".into(),
                    state: RecipientState::Delivered,
                    attempts: 1,
                    next_attempt: 0,
                    last_reply: String::new(),
                    backend: None,
                },
                QueuedRecipient::for_backend("ann@example.org".into(), "back 1".into(), 7),
            ],
            client: Some(Xclient {
                addr: Some("2001:db8::7".parse().unwrap()),
                port: Some(40_000),
                helo: Some("mail sender".into()),
                proto: Some("ESMTP".into()),
                ..Xclient::default()
            }),
        }
    }

    #[test]
    fn text_form_round_trips_and_escapes_spaces() {
        let entry = sample();
        let text = entry.to_text();
        assert!(text.contains(
            "rcpt pending 2 1764412645 \"b%20o%25b\"@Example.NET 451%204.3.0%20try%20later\n"
        ));
        assert!(text.contains("rcpt delivered 1 0 j%C3%B6rg@example.org -\n"));
        assert!(text.contains("rcpt pending 0 7 ann@example.org - lmtp:back%201\n"));
        assert!(
            text.contains("client 2001:db8::7 40000 mail%20sender ESMTP\n"),
            "{text}"
        );
        assert_eq!(QueueEntry::from_text("x", &text), Some(entry));
    }

    #[test]
    fn the_client_line_is_optional_and_its_parts_may_be_unknown() {
        let mut entry = sample();
        entry.client = None;
        let text = entry.to_text();
        assert!(!text.contains("client"));
        assert_eq!(QueueEntry::from_text("x", &text), Some(entry.clone()));
        entry.client = Some(Xclient {
            addr: Some("192.0.2.7".parse().unwrap()),
            ..Xclient::default()
        });
        let text = entry.to_text();
        assert!(text.contains("client 192.0.2.7 - - -\n"), "{text}");
        assert_eq!(QueueEntry::from_text("x", &text), Some(entry));
        for odd in [
            "",
            "1.2.3.4 1 h",
            "nonsense 1 h E",
            "1.2.3.4 70000 h E",
            "- - - - x",
        ] {
            let text = format!("tidegate-queue 1\nsender a\nclient {odd}\nrcpt pending 1 2 a -\n");
            assert_eq!(QueueEntry::from_text("x", &text), None, "{odd:?}");
        }
    }

    #[test]
    fn a_field_that_is_a_lone_dash_is_not_read_back_as_empty() {
        let mut entry = sample();
        entry.sender = "-".into();
        entry.recipients[0].address = "-".into();
        entry.recipients[0].last_reply = "-".into();
        let text = entry.to_text();
        assert!(text.contains("sender %2D\n"), "{text}");
        assert!(text.contains(" %2D %2D\n"), "{text}");
        assert_eq!(QueueEntry::from_text("x", &text), Some(entry));
    }

    #[test]
    fn null_sender_and_domain() {
        let mut entry = sample();
        entry.sender.clear();
        let text = entry.to_text();
        assert!(text.contains("sender -\n"));
        assert_eq!(QueueEntry::from_text("x", &text).unwrap().sender, "");
        assert_eq!(entry.recipients[0].domain(), "example.net");
        assert_eq!(
            entry.recipients[0].destination(),
            Destination::Domain("example.net".into())
        );
        assert_eq!(
            entry.recipients[2].destination(),
            Destination::Backend("back 1".into())
        );
        assert_eq!(entry.next_attempt(), Some(7));
        assert!(!entry.is_finished());
    }

    #[test]
    fn truncated_or_garbled_files_are_refused() {
        let text = sample().to_text();
        for cut in 0..text.len() {
            // A file cut anywhere before the first recipient line ends is refused.
            if let Some(parsed) = QueueEntry::from_text("x", &text[..cut]) {
                assert!(!parsed.recipients.is_empty());
            }
        }
        assert_eq!(QueueEntry::from_text("x", "garbage\n"), None);
        assert_eq!(
            QueueEntry::from_text("x", "tidegate-queue 1\nsender a\nrcpt odd 1 2 a -\n"),
            None
        );
        assert_eq!(
            QueueEntry::from_text("x", "tidegate-queue 1\nsender a\nrcpt pending 1 2 a %G1\n"),
            None
        );
        for odd in ["smtp:b", "lmtp:-", "lmtp:b extra"] {
            let text = format!("tidegate-queue 1\nsender a\nrcpt pending 1 2 a - {odd}\n");
            assert_eq!(QueueEntry::from_text("x", &text), None, "{odd}");
        }
    }
}
