//! Maildir naming rules (the Maildir convention and Maildir++ size fields): pure
//! functions the store uses to create and read file names.
//!
//! A delivered file is `TIME.M<usec>P<pid>Q<counter>.<host>,S=<size>` (microseconds
//! zero-padded to six digits, so names of one second sort in delivery order), which is unique
//! across hosts sharing one maildir (NFS) because the host name is part of it, and
//! unique within a host because of pid and counter. Flags follow `:2,` in ASCII order.

use std::fmt::Write as _;

/// What makes a delivered file name unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueName {
    /// Seconds since the epoch at delivery.
    pub seconds: u64,
    /// Microseconds within that second.
    pub micros: u32,
    /// Delivering process.
    pub pid: u32,
    /// Per-process delivery counter.
    pub counter: u64,
    /// Delivering host, sanitised by [`sanitize_host`].
    pub host: String,
}

impl UniqueName {
    /// The file name for a message of `size` octets, as placed in tmp/ and new/.
    pub fn file_name(&self, size: u64) -> String {
        let mut name = String::with_capacity(64);
        let _ = write!(
            name,
            "{}.M{:06}P{}Q{}.{},S={}",
            self.seconds, self.micros, self.pid, self.counter, self.host, size
        );
        name
    }
}

/// Makes a host name safe inside a file name: `/` and `:` are replaced as the Maildir
/// convention says (`\057`, `\072`), and anything outside printable ASCII becomes `_`.
pub fn sanitize_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c if c.is_ascii_graphic() => out.push(c),
            _ => out.push('_'),
        }
    }
    if out.is_empty() {
        "localhost".into()
    } else {
        out
    }
}

/// The parts of a maildir file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName<'a> {
    /// Everything before `:2,` (and before any `,KEY=VALUE` fields): stable for the life
    /// of the message, whatever its flags.
    pub unique: &'a str,
    /// The `S=` size field, if present.
    pub size: Option<u64>,
    /// The flag letters after `:2,`, if any.
    pub flags: &'a str,
}

/// Splits a name at its first `:` into the base and the info (the Maildir convention:
/// the unique part never holds a `:`, [`sanitize_host`] escapes it); the flags are the
/// info after `2,` (any other info, such as experimental `1,` info, has none).
fn split_info(name: &str) -> (&str, &str) {
    let (base, info) = name.split_once(':').unwrap_or((name, ""));
    (base, info.strip_prefix("2,").unwrap_or(""))
}

/// Splits a maildir file name. Returns `None` for names that are not messages (dot
/// files, empty names).
///
/// The unique part ends at the first `:` whatever follows it, so renames that add or
/// change the info (`:2,FLAGS`), as [`with_flag`] and the store do, never change it.
pub fn parse_name(name: &str) -> Option<ParsedName<'_>> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return None;
    }
    let (base, flags) = split_info(name);
    let mut fields = base.split(',');
    let unique = fields.next().filter(|u| !u.is_empty())?;
    let size = fields
        .filter_map(|f| f.strip_prefix("S="))
        .find_map(|s| s.parse().ok());
    Some(ParsedName {
        unique,
        size,
        flags,
    })
}

/// A key that sorts delivered names in arrival order: seconds, then microseconds, then
/// the per-process counter of `SECONDS.M<usec>P<pid>Q<counter>.<host>` names. Names in
/// other formats sort by their leading seconds, after all timed names if they have none;
/// ties fall back to the name.
pub fn arrival_key(unique: &str) -> (u64, u64, u64) {
    fn number_after(text: &str, marker: char) -> (u64, &str) {
        let Some(rest) = text.strip_prefix(marker) else {
            return (0, text);
        };
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        (rest[..end].parse().unwrap_or(0), &rest[end..])
    }
    let (seconds, rest) = unique.split_once('.').unwrap_or((unique, ""));
    let seconds = seconds.parse().unwrap_or(u64::MAX);
    let (micros, rest) = number_after(rest, 'M');
    let (_pid, rest) = number_after(rest, 'P');
    let (counter, _) = number_after(rest, 'Q');
    (seconds, micros, counter)
}

/// The POP3 UIDL of a message (RFC 1939 §7: 1 to 70 characters in 0x21..=0x7E).
/// The unique name is used as is when it fits; otherwise a stable 64-bit FNV-1a hash of
/// it, so the id never changes between sessions.
pub fn pop3_uid(unique: &str) -> String {
    let fits = !unique.is_empty()
        && unique.len() <= 70
        && unique.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if fits {
        return unique.to_owned();
    }
    let hash = unique.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("H{hash:016x}")
}

/// The file name with `flag` added to its `:2,` flags (kept sorted, no duplicates;
/// letters only). Info other than `2,` flags is replaced, so the unique part
/// ([`parse_name`]) stays the same.
pub fn with_flag(name: &str, flag: char) -> String {
    let (base, flags) = split_info(name);
    let mut letters: Vec<char> = flags.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    if !letters.contains(&flag) {
        letters.push(flag);
    }
    letters.sort_unstable();
    letters.dedup();
    let mut out = String::with_capacity(base.len() + 3 + letters.len());
    out.push_str(base);
    out.push_str(":2,");
    out.extend(letters);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_names_round_trip() {
        let name = UniqueName {
            seconds: 1_790_000_000,
            micros: 42,
            pid: 77,
            counter: 3,
            host: sanitize_host("mx1.example.com"),
        }
        .file_name(4096);
        assert_eq!(name, "1790000000.M000042P77Q3.mx1.example.com,S=4096");
        let parsed = parse_name(&name).unwrap();
        assert_eq!(parsed.unique, "1790000000.M000042P77Q3.mx1.example.com");
        assert_eq!(parsed.size, Some(4096));
        assert_eq!(parsed.flags, "");
    }

    #[test]
    fn flags_do_not_change_the_unique_part() {
        let parsed = parse_name("123.abc,S=10,W=12:2,RS").unwrap();
        assert_eq!(
            (parsed.unique, parsed.size, parsed.flags),
            ("123.abc", Some(10), "RS")
        );
        assert_eq!(with_flag("123.abc,S=10", 'S'), "123.abc,S=10:2,S");
        assert_eq!(with_flag("123.abc,S=10:2,T", 'S'), "123.abc,S=10:2,ST");
        assert_eq!(with_flag("x:2,S", 'S'), "x:2,S");
        assert_eq!(parse_name(".hidden"), None);
        // The unique part ends at the first colon, however the info goes on.
        let odd = parse_name("123.abc:1,x:2,S").unwrap();
        assert_eq!((odd.unique, odd.flags), ("123.abc", ""));
        assert_eq!(with_flag("123.abc:1,x", 'S'), "123.abc:2,S");
        assert_eq!(parse_name("123.abc:1,x:2,").unwrap().unique, "123.abc");
        assert_eq!(parse_name(""), None);
    }

    #[test]
    fn arrival_order_follows_time_then_counter() {
        let mut names = vec![
            "100.M99999P1Q3.h",
            "100.M100000P1Q2.h",
            "99.M5P1Q1.h",
            "100.M99999P1Q10.h",
            "other-tool-name",
        ];
        names.sort_by_key(|n| (arrival_key(n), n.to_string()));
        assert_eq!(
            names,
            [
                "99.M5P1Q1.h",
                "100.M99999P1Q3.h",
                "100.M99999P1Q10.h",
                "100.M100000P1Q2.h",
                "other-tool-name"
            ]
        );
    }

    #[test]
    fn hostile_host_names_are_escaped() {
        assert_eq!(sanitize_host("a/b:c,d e"), "a\\057b\\072c\\054d_e");
        assert_eq!(sanitize_host(""), "localhost");
    }

    #[test]
    fn uids_fit_rfc_1939() {
        assert_eq!(pop3_uid("1790000000.M1P2Q3.host"), "1790000000.M1P2Q3.host");
        let long = "x".repeat(71);
        let uid = pop3_uid(&long);
        assert_eq!(uid.len(), 17);
        assert_eq!(uid, pop3_uid(&long), "stable");
        assert_ne!(pop3_uid("a b"), "a b");
    }
}
