//! FETCH data items (RFC 3501 §6.4.5) and how each is answered: from the session's
//! snapshot (FLAGS, UID, INTERNALDATE, RFC822.SIZE), by streaming the message file
//! (BODY[], RFC822, partials) or from a store answer (ENVELOPE, BODYSTRUCTURE,
//! sections).

use std::fmt;

/// The text part of a section specification (RFC 3501 §6.4.5 `section-text`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionText {
    /// `HEADER`: the header, blank line included.
    Header,
    /// `HEADER.FIELDS (…)`: only these fields (names as given, compared case-insensitively).
    HeaderFields(Vec<String>),
    /// `HEADER.FIELDS.NOT (…)`: every field but these.
    HeaderFieldsNot(Vec<String>),
    /// `TEXT`: the body without the header.
    Text,
    /// `MIME`: the MIME header of a body part (only after a part number).
    Mime,
}

/// A `section`: part numbers (empty for the whole message) and an optional text
/// specifier. `BODY[]` is the default value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Section {
    /// `1.2.3` as `[1, 2, 3]`.
    pub part: Vec<u32>,
    /// What of the part.
    pub text: Option<SectionText>,
}

impl Section {
    /// True for `BODY[]`: the whole message file, which the session can stream.
    pub fn is_whole_message(&self) -> bool {
        self.part.is_empty() && self.text.is_none()
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.part.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))?;
        if let Some(text) = &self.text {
            if !self.part.is_empty() {
                f.write_str(".")?;
            }
            match text {
                SectionText::Header => f.write_str("HEADER")?,
                SectionText::Text => f.write_str("TEXT")?,
                SectionText::Mime => f.write_str("MIME")?,
                SectionText::HeaderFields(names) => {
                    write!(f, "HEADER.FIELDS ({})", names.join(" "))?
                }
                SectionText::HeaderFieldsNot(names) => {
                    write!(f, "HEADER.FIELDS.NOT ({})", names.join(" "))?
                }
            }
        }
        Ok(())
    }
}

/// One FETCH data item (RFC 3501 §6.4.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchAttribute {
    /// `ENVELOPE`.
    Envelope,
    /// `FLAGS`.
    Flags,
    /// `INTERNALDATE`.
    InternalDate,
    /// `RFC822`: `BODY[]` under its old name; sets \Seen.
    Rfc822,
    /// `RFC822.HEADER`: `BODY.PEEK[HEADER]` under its old name.
    Rfc822Header,
    /// `RFC822.SIZE`.
    Rfc822Size,
    /// `RFC822.TEXT`: `BODY[TEXT]` under its old name; sets \Seen.
    Rfc822Text,
    /// `BODY`: the non-extensible body structure.
    Body,
    /// `BODYSTRUCTURE`.
    BodyStructure,
    /// `UID`.
    Uid,
    /// `BODY[section]<partial>` or `BODY.PEEK[…]`.
    Section {
        /// `BODY.PEEK`: do not set \Seen.
        peek: bool,
        /// Which bytes.
        section: Section,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
    },
}

impl FetchAttribute {
    /// The `ALL` macro: `(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)`.
    pub fn all() -> Vec<FetchAttribute> {
        use FetchAttribute::*;
        vec![Flags, InternalDate, Rfc822Size, Envelope]
    }
    /// The `FAST` macro: `(FLAGS INTERNALDATE RFC822.SIZE)`.
    pub fn fast() -> Vec<FetchAttribute> {
        use FetchAttribute::*;
        vec![Flags, InternalDate, Rfc822Size]
    }
    /// The `FULL` macro: `(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY)`.
    pub fn full() -> Vec<FetchAttribute> {
        use FetchAttribute::*;
        vec![Flags, InternalDate, Rfc822Size, Envelope, Body]
    }

    /// True when fetching this item sets \Seen (RFC 3501 §6.4.5: BODY[…] without PEEK,
    /// RFC822 and RFC822.TEXT).
    pub fn sets_seen(&self) -> bool {
        matches!(
            self,
            FetchAttribute::Rfc822
                | FetchAttribute::Rfc822Text
                | FetchAttribute::Section { peek: false, .. }
        )
    }

    /// The data item name as it appears in the FETCH response (RFC 3501 §7.4.2: PEEK is
    /// not echoed; a partial shows only its origin).
    pub fn response_name(&self) -> String {
        match self {
            FetchAttribute::Envelope => "ENVELOPE".into(),
            FetchAttribute::Flags => "FLAGS".into(),
            FetchAttribute::InternalDate => "INTERNALDATE".into(),
            FetchAttribute::Rfc822 => "RFC822".into(),
            FetchAttribute::Rfc822Header => "RFC822.HEADER".into(),
            FetchAttribute::Rfc822Size => "RFC822.SIZE".into(),
            FetchAttribute::Rfc822Text => "RFC822.TEXT".into(),
            FetchAttribute::Body => "BODY".into(),
            FetchAttribute::BodyStructure => "BODYSTRUCTURE".into(),
            FetchAttribute::Uid => "UID".into(),
            FetchAttribute::Section {
                section, partial, ..
            } => match partial {
                Some((offset, _)) => format!("BODY[{section}]<{offset}>"),
                None => format!("BODY[{section}]"),
            },
        }
    }

    /// What the store must supply for this item, or `None` when the session answers it
    /// from its snapshot or by streaming the message file.
    pub fn content(&self) -> Option<ContentItem> {
        match self {
            FetchAttribute::Envelope => Some(ContentItem::Envelope),
            FetchAttribute::Body => Some(ContentItem::Body),
            FetchAttribute::BodyStructure => Some(ContentItem::BodyStructure),
            FetchAttribute::Rfc822Header => Some(ContentItem::Section(Section {
                part: Vec::new(),
                text: Some(SectionText::Header),
            })),
            FetchAttribute::Rfc822Text => Some(ContentItem::Section(Section {
                part: Vec::new(),
                text: Some(SectionText::Text),
            })),
            FetchAttribute::Section { section, .. } if !section.is_whole_message() => {
                Some(ContentItem::Section(section.clone()))
            }
            _ => None,
        }
    }
}

/// Something about a message's content that only the store (with the MIME parser) can
/// produce; see [`crate::imap::ImapRequest::FetchContent`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentItem {
    /// The ENVELOPE structure, rendered as its parenthesised list.
    Envelope,
    /// The BODY (non-extensible) structure, rendered.
    Body,
    /// The BODYSTRUCTURE, rendered.
    BodyStructure,
    /// The raw bytes of a section (never the whole message: that one is streamed).
    Section(Section),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_responses() {
        let item = FetchAttribute::Section {
            peek: true,
            section: Section {
                part: vec![1, 2],
                text: Some(SectionText::HeaderFields(vec!["From".into(), "To".into()])),
            },
            partial: Some((10, 20)),
        };
        assert_eq!(
            item.response_name(),
            "BODY[1.2.HEADER.FIELDS (From To)]<10>"
        );
        assert!(!item.sets_seen());
        assert!(FetchAttribute::Rfc822.sets_seen());
        assert_eq!(FetchAttribute::Rfc822.content(), None);
    }
}
