//! SEARCH keys (RFC 3501 §6.4.4) and their evaluation.
//!
//! Metadata keys (flags, size, dates, numbers) are answered by the session from its
//! snapshot. Content keys (header fields, BODY, TEXT, the SENT* dates) need the message
//! bytes: the session sends them to the store in [`crate::imap::ImapRequest::Search`]
//! and the store calls [`evaluate`] on each candidate message with its bytes. Strings
//! are compared case-insensitively as substrings (RFC 3501 §6.4.4). A header field
//! matches on its raw bytes or on its text with RFC 2047 encoded words decoded (UTF-8,
//! US-ASCII, ISO-8859-1); bodies are searched as stored, without undoing transfer
//! encodings. Charsets of the search strings: US-ASCII and UTF-8.

use crate::imap::date::{Date, parse_header_date};
use crate::imap::sequence::SequenceSet;

/// The most nesting of parentheses, NOT and OR in one search: deep enough for any
/// real client, shallow enough that the recursive parser and evaluator cannot exhaust
/// the stack.
pub const MAX_DEPTH: usize = 32;

/// One search key. A list of keys (the command's arguments, a parenthesised group) is
/// [`SearchKey::And`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// Every key must match (a parenthesised list or the top level).
    And(Vec<SearchKey>),
    /// `ALL`.
    All,
    /// `ANSWERED`.
    Answered,
    /// `BCC string`.
    Bcc(String),
    /// `BEFORE date`: internal date earlier than the day.
    Before(Date),
    /// `BODY string`.
    Body(String),
    /// `CC string`.
    Cc(String),
    /// `DELETED`.
    Deleted,
    /// `DRAFT`.
    Draft,
    /// `FLAGGED`.
    Flagged,
    /// `FROM string`.
    From(String),
    /// `HEADER field-name string`.
    Header(String, String),
    /// `KEYWORD flag`.
    Keyword(String),
    /// `LARGER n`.
    Larger(u32),
    /// `NEW`: recent and unseen.
    New,
    /// `NOT key`.
    Not(Box<SearchKey>),
    /// `OLD`: not recent.
    Old,
    /// `ON date`.
    On(Date),
    /// `OR key key`.
    Or(Box<SearchKey>, Box<SearchKey>),
    /// `RECENT`.
    Recent,
    /// `SEEN`.
    Seen,
    /// `SENTBEFORE date` (the Date: header).
    SentBefore(Date),
    /// `SENTON date`.
    SentOn(Date),
    /// `SENTSINCE date`.
    SentSince(Date),
    /// `SINCE date`: internal date on or after the day.
    Since(Date),
    /// `SMALLER n`.
    Smaller(u32),
    /// `SUBJECT string`.
    Subject(String),
    /// `TEXT string`: header or body.
    Text(String),
    /// `TO string`.
    To(String),
    /// `UID set`.
    Uid(SequenceSet),
    /// `UNANSWERED`.
    Unanswered,
    /// `UNDELETED`.
    Undeleted,
    /// `UNDRAFT`.
    Undraft,
    /// `UNFLAGGED`.
    Unflagged,
    /// `UNKEYWORD flag`.
    Unkeyword(String),
    /// `UNSEEN`.
    Unseen,
    /// A bare sequence set: messages with these sequence numbers.
    Sequence(SequenceSet),
}

impl SearchKey {
    /// True when the key needs the message bytes (see the module documentation).
    pub fn needs_content(&self) -> bool {
        use SearchKey::*;
        match self {
            And(keys) => keys.iter().any(SearchKey::needs_content),
            Not(k) => k.needs_content(),
            Or(a, b) => a.needs_content() || b.needs_content(),
            Bcc(_) | Body(_) | Cc(_) | From(_) | Header(..) | SentBefore(_) | SentOn(_)
            | SentSince(_) | Subject(_) | Text(_) | To(_) => true,
            _ => false,
        }
    }
}

/// What a message is apart from its bytes: the session's snapshot entry.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// Message sequence number.
    pub seq: u32,
    /// UID.
    pub uid: u32,
    /// Flags (`\Seen`, keywords), as the store spells them.
    pub flags: &'a [String],
    /// RFC822.SIZE.
    pub size: u64,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
    /// The session sees the message as recent (RFC 3501 §2.3.2).
    pub recent: bool,
    /// The highest sequence number in the mailbox (what `*` means for sequence sets).
    pub last_seq: u32,
    /// The highest UID in the mailbox (what `*` means for UID sets).
    pub last_uid: u32,
}

impl MessageFacts<'_> {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// Whether a message matches `key`. `content` is the whole message (header and body);
/// with `None`, content keys do not match, so callers pass it whenever
/// [`SearchKey::needs_content`] is true.
pub fn evaluate(key: &SearchKey, facts: &MessageFacts<'_>, content: Option<&[u8]>) -> bool {
    use SearchKey::*;
    let day = Date::from_unix(facts.internal_date);
    match key {
        And(keys) => keys.iter().all(|k| evaluate(k, facts, content)),
        All => true,
        Answered => facts.has("\\Answered"),
        Unanswered => !facts.has("\\Answered"),
        Deleted => facts.has("\\Deleted"),
        Undeleted => !facts.has("\\Deleted"),
        Draft => facts.has("\\Draft"),
        Undraft => !facts.has("\\Draft"),
        Flagged => facts.has("\\Flagged"),
        Unflagged => !facts.has("\\Flagged"),
        Seen => facts.has("\\Seen"),
        Unseen => !facts.has("\\Seen"),
        Keyword(k) => facts.has(k),
        Unkeyword(k) => !facts.has(k),
        Recent => facts.recent,
        Old => !facts.recent,
        New => facts.recent && !facts.has("\\Seen"),
        Before(d) => day < *d,
        On(d) => day == *d,
        Since(d) => day >= *d,
        Larger(n) => facts.size > u64::from(*n),
        Smaller(n) => facts.size < u64::from(*n),
        Not(k) => !evaluate(k, facts, content),
        Or(a, b) => evaluate(a, facts, content) || evaluate(b, facts, content),
        Uid(set) => set.contains(facts.uid, facts.last_uid),
        Sequence(set) => set.contains(facts.seq, facts.last_seq),
        Bcc(s) => header_contains(content, "Bcc", s),
        Cc(s) => header_contains(content, "Cc", s),
        From(s) => header_contains(content, "From", s),
        To(s) => header_contains(content, "To", s),
        Subject(s) => header_contains(content, "Subject", s),
        Header(name, s) => header_contains(content, name, s),
        Body(s) => content.is_some_and(|c| contains(split_header(c).1, s)),
        Text(s) => content.is_some_and(|c| contains(c, s)),
        SentBefore(d) => sent_date(content).is_some_and(|sent| sent < *d),
        SentOn(d) => sent_date(content).is_some_and(|sent| sent == *d),
        SentSince(d) => sent_date(content).is_some_and(|sent| sent >= *d),
    }
}

/// The header (up to and including the blank line) and the body of a message.
pub fn split_header(message: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < message.len() {
        let line_end = message[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| i + p + 1);
        let line = &message[i..line_end];
        if line == b"\r\n" || line == b"\n" {
            return (&message[..line_end], &message[line_end..]);
        }
        i = line_end;
    }
    (message, &[])
}

/// The unfolded values of every header field named `name` (case-insensitive).
pub fn header_values(header: &[u8], name: &str) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(value) = current.as_mut() {
                value.extend_from_slice(line);
            }
            continue;
        }
        if let Some(value) = current.take() {
            values.push(value);
        }
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            current = Some(line[colon + 1..].trim_ascii_start().to_vec());
        }
    }
    values.extend(current);
    values
}

fn header_contains(content: Option<&[u8]>, name: &str, needle: &str) -> bool {
    let Some(content) = content else { return false };
    header_values(split_header(content).0, name)
        .iter()
        .any(|v| {
            contains(v, needle)
                || (v.windows(2).any(|w| w == b"=?")
                    && crate::mime::decode_encoded_words(v)
                        .to_lowercase()
                        .contains(&needle.to_lowercase()))
        })
}

fn sent_date(content: Option<&[u8]>) -> Option<Date> {
    let header = split_header(content?).0;
    header_values(header, "Date")
        .first()
        .and_then(|v| parse_header_date(v))
}

/// Case-insensitive substring test (Unicode lower-casing; bytes that are not UTF-8
/// compare as U+FFFD). `str::contains` is linear in the haystack, so a long needle
/// cannot make a search quadratic.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    String::from_utf8_lossy(haystack)
        .to_lowercase()
        .contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::sequence::SeqNumber;

    const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nSubject: Quarterly\r\n report\r\nDate: Tue, 1 Jul 2003 10:52:37 +0200\r\n\r\nHello Bob, the N\xc3\x9cMBERS are in.\r\n";

    fn facts(flags: &[String]) -> MessageFacts<'_> {
        MessageFacts {
            seq: 2,
            uid: 7,
            flags,
            size: 100,
            internal_date: 1_057_049_557,
            recent: true,
            last_seq: 3,
            last_uid: 9,
        }
    }

    #[test]
    fn metadata_and_content_keys() {
        use SearchKey::*;
        let flags = vec!["\\Seen".to_string(), "$Work".to_string()];
        let f = facts(&flags);
        let m = Some(MESSAGE);
        assert!(evaluate(&Seen, &f, None));
        assert!(!evaluate(&New, &f, None));
        assert!(evaluate(&Keyword("$work".into()), &f, None));
        assert!(evaluate(&Larger(99), &f, None));
        assert!(!evaluate(&Smaller(100), &f, None));
        assert!(evaluate(
            &On(Date::from_ymd(2003, 7, 1).unwrap_or(Date { days: 0 })),
            &f,
            None
        ));
        let uid_set = SequenceSet(vec![(SeqNumber::Value(8), SeqNumber::Last)]);
        assert!(!evaluate(&Uid(uid_set), &f, None));
        assert!(evaluate(&Subject("quarterly report".into()), &f, m));
        assert!(evaluate(&From("ALICE@".into()), &f, m));
        assert!(!evaluate(&From("bob".into()), &f, m));
        assert!(evaluate(&Body("nümbers".into()), &f, m), "UTF-8 folding");
        assert!(!evaluate(&Body("Subject".into()), &f, m));
        assert!(evaluate(&Text("Subject".into()), &f, m));
        assert!(evaluate(&Header("date".into(), String::new()), &f, m));
        assert!(!evaluate(&Header("X-None".into(), String::new()), &f, m));
        let sent = Date::from_ymd(2003, 7, 2).unwrap_or(Date { days: 0 });
        assert!(evaluate(&SentBefore(sent), &f, m));
        assert!(!evaluate(&SentSince(sent), &f, m));
        assert!(
            !evaluate(&Subject("q".into()), &f, None),
            "no content, no match"
        );
        let or = Or(Box::new(Deleted), Box::new(Not(Box::new(Draft))));
        assert!(evaluate(&or, &f, None));
        assert!(And(vec![All, Body("x".into())]).needs_content());
        assert!(!And(vec![All, Not(Box::new(Seen))]).needs_content());
    }
}
