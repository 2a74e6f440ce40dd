//! Conversions between the IMAP session's vocabulary (flag strings, decoded UTF-8
//! mailbox names, [`Failure`]) and the maildir store's (RFC 3501 §2.3.2 flags, §5.1.3
//! mailbox names, §7.1 response codes).

use tidegate_core::Failure;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::mailbox;
use tidegate_core::keywords::KeywordMap;

use crate::imap::{FolderInfo, ImapStoreError, is_inbox};

use super::super::Flags;

/// The system flags in the order RFC 3501 §2.3.2 lists them, with their setters.
const SYSTEM_FLAGS: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// Which [`Flags`] field a flag string names (case-insensitive); `None` for keywords and
/// `\Recent`, which maildir does not store.
fn flag_slot<'a>(flags: &'a mut Flags, name: &str) -> Option<&'a mut bool> {
    let index = SYSTEM_FLAGS
        .iter()
        .position(|f| f.eq_ignore_ascii_case(name))?;
    Some(match index {
        0 => &mut flags.seen,
        1 => &mut flags.answered,
        2 => &mut flags.flagged,
        3 => &mut flags.deleted,
        _ => &mut flags.draft,
    })
}

/// The system flags a list of flag strings names, and the keywords among them (names
/// not starting with `\\`). `\Recent` and unknown system flags are ignored.
pub(super) fn split_flags(names: &[String]) -> (Flags, Vec<&str>) {
    let mut flags = Flags::default();
    let mut keywords = Vec::new();
    for name in names {
        if let Some(slot) = flag_slot(&mut flags, name) {
            *slot = true;
        } else if !name.starts_with('\\') {
            keywords.push(name.as_str());
        }
    }
    (flags, keywords)
}

/// The store flags a list of flag strings names, keywords by their letters in `map`
/// (keywords `map` does not define are left out).
pub(super) fn flags_from_strings(names: &[String], map: &KeywordMap) -> Flags {
    let (mut flags, keywords) = split_flags(names);
    for keyword in keywords {
        if let Some(letter) = map.letter_of(keyword) {
            flags.set_keyword(letter);
        }
    }
    flags
}

/// The flag strings of store flags: system flags in RFC 3501 §2.3.2 order, then the
/// keywords by letter as `map` names them (letters without a name are left out).
pub(super) fn flags_to_strings(flags: Flags, map: &KeywordMap) -> Vec<String> {
    let set = [
        flags.seen,
        flags.answered,
        flags.flagged,
        flags.deleted,
        flags.draft,
    ];
    SYSTEM_FLAGS
        .iter()
        .zip(set)
        .filter(|(_, on)| *on)
        .map(|(name, _)| (*name).to_owned())
        .chain(
            flags
                .keyword_letters()
                .filter_map(|letter| map.name_of(letter).map(str::to_owned)),
        )
        .collect()
}

/// STORE (RFC 3501 §6.4.6): `current` changed by `mode` with `given`.
pub(super) fn apply_store(current: Flags, mode: StoreMode, given: Flags) -> Flags {
    let merge = |old: bool, new: bool| match mode {
        StoreMode::Replace => new,
        StoreMode::Add => old || new,
        StoreMode::Remove => old && !new,
    };
    Flags {
        seen: merge(current.seen, given.seen),
        answered: merge(current.answered, given.answered),
        flagged: merge(current.flagged, given.flagged),
        deleted: merge(current.deleted, given.deleted),
        draft: merge(current.draft, given.draft),
        keywords: match mode {
            StoreMode::Replace => given.keywords,
            StoreMode::Add => current.keywords | given.keywords,
            StoreMode::Remove => current.keywords & !given.keywords,
        },
    }
}

/// The store's folder name for a session mailbox name: `INBOX` as is, others in
/// modified UTF-7 (RFC 3501 §5.1.3), the form Maildir++ tools keep on disk.
pub(super) fn store_name(name: &str) -> String {
    if is_inbox(name) {
        "INBOX".to_owned()
    } else {
        mailbox::encode(name)
    }
}

/// The session's (decoded UTF-8) name of a stored folder; a name that does not decode
/// (written by another tool) is shown as stored.
pub(super) fn session_name(stored: &str) -> String {
    if is_inbox(stored) {
        return "INBOX".to_owned();
    }
    mailbox::decode(stored.as_bytes()).unwrap_or_else(|| stored.to_owned())
}

/// A LIST entry for a stored folder.
pub(super) fn mailbox_info(folder: &FolderInfo) -> tidegate_core::imap::MailboxInfo {
    tidegate_core::imap::MailboxInfo {
        name: session_name(&folder.name),
        attributes: folder.attributes().into_iter().map(str::to_owned).collect(),
        subscribed: folder.subscribed,
    }
}

/// The failure a store error answers (RFC 5530 response codes through the session):
/// filesystem and lock trouble is temporary and its detail is logged, never sent.
pub(super) fn failure(error: ImapStoreError) -> Failure {
    match error {
        ImapStoreError::Io(e) => {
            log::warn!("imap store: {e}");
            Failure::Temporary("mailbox temporarily unavailable".into())
        }
        ImapStoreError::Lock(e) => {
            log::warn!("imap store lock: {e}");
            Failure::Temporary("mailbox temporarily unavailable".into())
        }
        ImapStoreError::Gone | ImapStoreError::NoSuchFolder => Failure::Gone,
        ImapStoreError::InvalidName => Failure::Permanent("invalid mailbox name".into()),
        ImapStoreError::InvalidAccount => Failure::Permanent("invalid account".into()),
        ImapStoreError::AlreadyExists => Failure::Permanent("mailbox already exists".into()),
        ImapStoreError::NotAllowed => Failure::Permanent("not allowed on this mailbox".into()),
        ImapStoreError::UidsExhausted => Failure::Permanent("mailbox has no UIDs left".into()),
        ImapStoreError::BadKeywords => {
            log::warn!("imap store: a keywords file is damaged; new keywords refused");
            Failure::Temporary("mailbox keywords temporarily unavailable".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_case_insensitively() {
        let none = KeywordMap::new();
        let names = [
            "\\seen".into(),
            "\\DRAFT".into(),
            "$junk".into(),
            "Work".into(),
        ];
        let flags = flags_from_strings(&names, &none);
        assert!(flags.seen && flags.draft && !flags.deleted && flags.keywords == 0);
        assert_eq!(flags_to_strings(flags, &none), ["\\Seen", "\\Draft"]);
        let map = KeywordMap::parse(b"0 Other\n1 $Junk\n").unwrap();
        let flags = flags_from_strings(&names, &map);
        assert_eq!(flags.keywords, 1 << 1);
        assert_eq!(
            flags_to_strings(flags, &map),
            ["\\Seen", "\\Draft", "$Junk"]
        );
        assert_eq!(split_flags(&names).1, ["$junk", "Work"]);
    }

    #[test]
    fn store_modes() {
        let map = KeywordMap::parse(b"0 A\n1 B\n").unwrap();
        let current = flags_from_strings(&["\\Seen".into(), "\\Flagged".into(), "a".into()], &map);
        let given = flags_from_strings(&["\\Flagged".into(), "\\Deleted".into(), "B".into()], &map);
        let strings = |m| flags_to_strings(apply_store(current, m, given), &map);
        assert_eq!(strings(StoreMode::Replace), ["\\Flagged", "\\Deleted", "B"]);
        assert_eq!(
            strings(StoreMode::Add),
            ["\\Seen", "\\Flagged", "\\Deleted", "A", "B"]
        );
        assert_eq!(strings(StoreMode::Remove), ["\\Seen", "A"]);
    }

    #[test]
    fn names_are_stored_in_modified_utf7() {
        assert_eq!(store_name("inbox"), "INBOX");
        assert_eq!(store_name("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(session_name("Entw&APw-rfe"), "Entwürfe");
        assert_eq!(session_name("Bad&-&"), "Bad&-&");
    }
}
