//! Fuzz harnesses for the store's own file formats, shared by the cargo-fuzz targets in
//! `fuzz/` and the stable replay in `tests/fuzz_corpus.rs` (behind the `fuzzing`
//! feature, like `tidegate_core::fuzzing`).
//!
//! | harness | input layout | invariants |
//! | --- | --- | --- |
//! | [`users_file`] | a users file | no panic; reading line by line agrees with parsing the text; every user is found by its address; rendering every record and parsing again gives the same users and domains |
//! | [`queue_entry`] | a queue state file, or the fields of an entry | no panic; parse → render → parse round trip; any entry with a recipient renders and parses back unchanged; rendered fields never hold a space or a line end |
//!
//! Each harness panics (through `assert!`) only when an invariant breaks.

use crate::queue::{QueueEntry, QueuedRecipient, RecipientState};
use crate::users::{MAX_LINE, UserTable, UsersError};

/// Fuzzes [`UserTable::parse`] and [`UserTable::read`] (the users file, design.md §4).
///
/// Input: the file's bytes.
///
/// Invariants:
/// * Bytes that are not UTF-8 are refused by [`UserTable::read`].
/// * For UTF-8 without a line over [`MAX_LINE`], [`UserTable::read`] (what a server
///   loads) and [`UserTable::parse`] (what `tidegate user` edits check) agree: the same
///   users in the same order, or the same error on the same line.
/// * Every parsed user is found by its address, also written in upper case with
///   surrounding blanks; its domain is a local domain.
/// * Writing every record as a line ([`UserRecord::to_line`](crate::UserRecord::to_line),
///   what the editor writes) and parsing that text gives the same users and domains.
pub fn users_file(data: &[u8]) {
    let read = UserTable::read(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(read.is_err(), "read accepted bytes that are not UTF-8");
        return;
    };
    let parsed = UserTable::parse(text);
    let short_lines = text.split('\n').all(|line| line.len() < MAX_LINE);
    if short_lines {
        match (&parsed, &read) {
            (Ok(parsed), Ok(read)) => {
                assert!(parsed.users().eq(read.users()), "parse and read differ");
                assert_eq!(parsed.local_domains(), read.local_domains());
            }
            (Err(parsed), Err(UsersError::Syntax(read))) => assert_eq!(parsed, read),
            (parsed, read) => panic!("parse gave {parsed:?}, read gave {read:?}"),
        }
    }
    let Ok(table) = parsed else {
        return;
    };
    let mut rendered = String::new();
    for user in table.users() {
        assert_eq!(table.lookup(&user.address).as_ref(), Some(&user));
        let shouted = format!(" {}\t", user.address.to_ascii_uppercase());
        assert_eq!(
            table.lookup(&shouted).as_ref(),
            Some(&user),
            "{shouted:?} is not found"
        );
        let domain = user.address.rsplit_once('@').map_or("", |(_, d)| d);
        assert!(table.is_local_domain(domain), "{domain:?} is not local");
        rendered.push_str(&user.to_line());
        rendered.push('\n');
    }
    let again = UserTable::parse(&rendered)
        .unwrap_or_else(|e| panic!("the rendered table does not parse: {e}\n{rendered}"));
    assert!(
        again.users().eq(table.users()),
        "rendering changed the users:\n{rendered}"
    );
    assert_eq!(again.local_domains(), table.local_domains());
    assert_eq!(again.len(), table.len());
}

/// Fuzzes [`QueueEntry::from_text`] and [`QueueEntry::to_text`] (the queue's state
/// file).
///
/// Input: read twice. First as a state file (invalid UTF-8 replaced). Then as the fields
/// of an entry, separated by `0xff` bytes: the sender, then for each recipient a field
/// whose first byte picks the state and the attempts and whose rest is the address,
/// followed by a field with its last reply; the first input byte sets the flags.
///
/// Invariants:
/// * A state file that parses has a recipient, and rendering it and parsing again gives
///   the same entry; rendering that gives the same text.
/// * An entry built from arbitrary text (spaces, line ends, `%`, non-ASCII) with at
///   least one non-empty address, some of them tagged with a back-end (the proxy
///   front-end's LMTP route), renders to lines whose fields hold no space, and parses
///   back unchanged; a field that is exactly `-` (the mark for an empty field) too.
pub fn queue_entry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(entry) = QueueEntry::from_text("fuzz", &text) {
        assert!(!entry.recipients.is_empty(), "an entry without recipients");
        let rendered = entry.to_text();
        let again = QueueEntry::from_text("fuzz", &rendered);
        assert_eq!(again.as_ref(), Some(&entry), "{rendered}");
        if let Some(again) = again {
            assert_eq!(again.to_text(), rendered, "rendering is not stable");
        }
    }
    if let Some(entry) = built_entry(data) {
        let rendered = entry.to_text();
        let lines = rendered.lines().filter(|l| l.starts_with("rcpt "));
        for (line, recipient) in lines.zip(&entry.recipients) {
            let fields = 6 + usize::from(recipient.backend.is_some());
            assert_eq!(line.split(' ').count(), fields, "{line:?}");
        }
        assert_eq!(
            QueueEntry::from_text(&entry.id, &rendered),
            Some(entry),
            "{rendered}"
        );
    }
}

/// An entry from the fields of `data` (see [`queue_entry`]); `None` without a
/// recipient with a non-empty address.
fn built_entry(data: &[u8]) -> Option<QueueEntry> {
    let (&flags, rest) = data.split_first()?;
    let mut fields = rest
        .split(|&b| b == 0xff)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    // A valid minimal entry whose public fields are then replaced, so this harness
    // keeps building when the entry gains fields.
    let mut entry = QueueEntry::from_text(
        "fuzz-built",
        "tidegate-queue 1\nsender -\narrived 0\nflags\nwarned 0\nrcpt pending 0 0 x -\n",
    )?;
    entry.sender = fields.next()?;
    entry.arrived = u64::from(flags).wrapping_mul(0x0123_4567_89ab);
    entry.eight_bit = flags & 1 != 0;
    entry.smtputf8 = flags & 2 != 0;
    entry.warned = flags & 4 != 0;
    entry.recipients.clear();
    while let Some(address) = fields.next() {
        let mut chars = address.chars();
        let pick = chars.next().map_or(0, u32::from);
        let address: String = chars.collect();
        if address.is_empty() {
            continue;
        }
        let mut recipient = QueuedRecipient::new(address, u64::from(pick) << 20);
        recipient.state = match pick % 3 {
            0 => RecipientState::Pending,
            1 => RecipientState::Delivered,
            _ => RecipientState::Failed,
        };
        recipient.attempts = pick / 3;
        recipient.last_reply = fields.next().unwrap_or_default();
        if pick & 0x40 != 0 {
            // A back-end recipient of a proxy front-end (an empty host is not one).
            recipient.backend = fields.next().filter(|host| !host.is_empty());
        }
        entry.recipients.push(recipient);
    }
    (!entry.recipients.is_empty()).then_some(entry)
}
