//! The harness for the maildir naming rules of [`crate::maildir`]: file names read from
//! a directory (anything a user or another program put there) and names this server
//! builds.

use crate::maildir::{UniqueName, arrival_key, parse_name, pop3_uid, sanitize_host, with_flag};

/// Fuzzes [`parse_name`], [`with_flag`], [`UniqueName::file_name`], [`sanitize_host`],
/// [`arrival_key`] and [`pop3_uid`].
///
/// Layout: `data[0]` and `data[1]` pick two flag letters (`A`-`Z`, `a`-`z`); the rest is
/// a file name (invalid UTF-8 replaced, as a directory listing read lossily would).
/// When the rest has at least 24 bytes they also build a delivered name: seconds
/// (bytes 0-7), microseconds (8-11, below one million), pid (12-15), counter (16-23),
/// and the host name from the bytes after them.
///
/// Invariants:
/// * [`parse_name`] refuses exactly the empty names, dot files, names with `/`, and
///   names whose unique part would be empty. A parsed unique part is a prefix of the
///   name with no `:`, `,` or `/`; the flags are a suffix of the name.
/// * Adding a flag ([`with_flag`]) keeps the unique part and the size, gives the old
///   flag letters plus the new one in strictly increasing ASCII order, and adding the
///   same flag again, or two flags in either order, gives the same name.
/// * A built name parses back to its unique part (everything before `,S=`), its size
///   and no flags; [`arrival_key`] gives back its seconds, microseconds and counter;
///   the sanitised host is non-empty printable ASCII without `/`, `:` or `,`.
/// * [`pop3_uid`] is 1 to 70 characters of `!`..`~` (RFC 1939 §7), the unique part
///   itself when that fits, and the same for the same input.
pub fn maildir_name(data: &[u8]) {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let letter = |byte: u8| {
        let index = byte % 52;
        char::from(if index < 26 {
            b'A' + index
        } else {
            b'a' + index - 26
        })
    };
    let (first, second) = (letter(*a), letter(*b));
    let name = String::from_utf8_lossy(rest);
    check_parsed(&name);
    check_flags(&name, first, second);
    if let Some(built) = built_name(rest) {
        check_built(&built);
    }
}

/// The [`parse_name`] invariants for one name.
fn check_parsed(name: &str) {
    let parsed = parse_name(name);
    let unique_empty = name.split([':', ',']).next().is_none_or(str::is_empty);
    let refused = name.is_empty() || name.starts_with('.') || name.contains('/') || unique_empty;
    assert_eq!(parsed.is_none(), refused, "{name:?} parsed as {parsed:?}");
    let Some(parsed) = parsed else {
        return;
    };
    assert!(name.starts_with(parsed.unique), "{name:?}: {parsed:?}");
    assert!(name.ends_with(parsed.flags), "{name:?}: {parsed:?}");
    assert!(
        !parsed.unique.contains([':', ',', '/']),
        "{name:?}: unique part {:?}",
        parsed.unique
    );
    check_uid(parsed.unique);
}

/// The [`with_flag`] invariants for one name and two flag letters.
fn check_flags(name: &str, first: char, second: char) {
    let Some(before) = parse_name(name) else {
        return;
    };
    let flagged = with_flag(name, first);
    let after = parse_name(&flagged).expect("a flagged message name parses");
    assert_eq!(after.unique, before.unique, "{name:?} → {flagged:?}");
    assert_eq!(after.size, before.size, "{name:?} → {flagged:?}");
    let mut expected: Vec<char> = before
        .flags
        .chars()
        .filter(char::is_ascii_alphabetic)
        .chain([first])
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let letters: Vec<char> = after.flags.chars().collect();
    assert_eq!(letters, expected, "{name:?} + {first} → {flagged:?}");
    assert!(letters.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(with_flag(&flagged, first), flagged, "adding {first} twice");
    assert_eq!(
        with_flag(&flagged, second),
        with_flag(&with_flag(name, second), first),
        "{name:?}: {first} then {second} differs from the other order"
    );
}

/// A delivered name built from the input (see [`maildir_name`]), with its parts.
struct Built {
    unique: UniqueName,
    size: u64,
    file_name: String,
}

fn built_name(rest: &[u8]) -> Option<Built> {
    let (numbers, host) = rest.split_at_checked(24)?;
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(numbers.get(at..at + 8)?);
        Some(u64::from_le_bytes(bytes))
    };
    let u32_at = |at: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(numbers.get(at..at + 4)?);
        Some(u32::from_le_bytes(bytes))
    };
    let unique = UniqueName {
        seconds: u64_at(0)?,
        micros: u32_at(8)? % 1_000_000,
        pid: u32_at(12)?,
        counter: u64_at(16)?,
        host: sanitize_host(&String::from_utf8_lossy(host)),
    };
    let size = unique.seconds.rotate_left(17) ^ unique.counter;
    let file_name = unique.file_name(size);
    Some(Built {
        unique,
        size,
        file_name,
    })
}

/// The invariants of a name this server builds.
fn check_built(built: &Built) {
    let host = &built.unique.host;
    assert!(!host.is_empty(), "empty sanitised host");
    assert!(
        host.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | ',')),
        "sanitised host {host:?}"
    );
    let name = &built.file_name;
    let parsed = parse_name(name).expect("a built name parses");
    let unique = name
        .rsplit_once(",S=")
        .map(|(unique, _)| unique)
        .expect("a built name has a size");
    assert_eq!(parsed.unique, unique, "{name:?}");
    assert_eq!(parsed.size, Some(built.size), "{name:?}");
    assert_eq!(parsed.flags, "", "{name:?}");
    let u = &built.unique;
    assert_eq!(
        arrival_key(parsed.unique),
        (u.seconds, u64::from(u.micros), u.counter),
        "{name:?}"
    );
    let seen = with_flag(name, 'S');
    let reparsed = parse_name(&seen).expect("a flagged built name parses");
    assert_eq!(
        (reparsed.unique, reparsed.size, reparsed.flags),
        (unique, Some(built.size), "S")
    );
}

/// The RFC 1939 §7 rules for a UIDL.
fn check_uid(unique: &str) {
    let uid = pop3_uid(unique);
    assert!((1..=70).contains(&uid.len()), "UIDL {uid:?} of {unique:?}");
    assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid:?}");
    let fits = unique.len() <= 70 && unique.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if fits {
        assert_eq!(uid, unique);
    }
    assert_eq!(pop3_uid(unique), uid, "not stable");
}
