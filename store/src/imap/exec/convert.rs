//! Conversions between the IMAP session's vocabulary (flag strings, decoded UTF-8
//! mailbox names, [`Failure`]) and the maildir store's (RFC 3501 §2.3.2 flags, §5.1.3
//! mailbox names, §7.1 response codes).

use tidegate_core::Failure;
use tidegate_core::imap::command::StoreMode;
use tidegate_core::imap::mailbox;

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

/// The store flags a list of flag strings names. Keywords (and `\Recent`) are not
/// supported by the maildir store and are ignored.
pub(super) fn flags_from_strings(names: &[String]) -> Flags {
    let mut flags = Flags::default();
    for name in names {
        if let Some(slot) = flag_slot(&mut flags, name) {
            *slot = true;
        }
    }
    flags
}

/// The flag strings of store flags, in RFC 3501 §2.3.2 order.
pub(super) fn flags_to_strings(flags: Flags) -> Vec<String> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_case_insensitively() {
        let flags = flags_from_strings(&["\\seen".into(), "\\DRAFT".into(), "$Junk".into()]);
        assert!(flags.seen && flags.draft && !flags.deleted);
        assert_eq!(flags_to_strings(flags), ["\\Seen", "\\Draft"]);
    }

    #[test]
    fn store_modes() {
        let current = flags_from_strings(&["\\Seen".into(), "\\Flagged".into()]);
        let given = flags_from_strings(&["\\Flagged".into(), "\\Deleted".into()]);
        let strings = |m| flags_to_strings(apply_store(current, m, given));
        assert_eq!(strings(StoreMode::Replace), ["\\Flagged", "\\Deleted"]);
        assert_eq!(
            strings(StoreMode::Add),
            ["\\Seen", "\\Flagged", "\\Deleted"]
        );
        assert_eq!(strings(StoreMode::Remove), ["\\Seen"]);
    }

    #[test]
    fn names_are_stored_in_modified_utf7() {
        assert_eq!(store_name("inbox"), "INBOX");
        assert_eq!(store_name("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(session_name("Entw&APw-rfe"), "Entwürfe");
        assert_eq!(session_name("Bad&-&"), "Bad&-&");
    }
}
