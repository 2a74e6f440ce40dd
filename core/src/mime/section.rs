//! `BODY[section]` (RFC 3501 §6.4.5): which stored bytes a section names.

use std::borrow::Cow;
use std::ops::Range;

use super::header::fields;
use super::structure::{Body, Part, parse};

/// The part of a section after its part numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionPart {
    /// No keyword: the whole message (empty path) or the body of the numbered part.
    Full,
    /// `HEADER`: the header with its closing blank line.
    Header,
    /// `HEADER.FIELDS (names)`: only the listed fields, then a blank line.
    HeaderFields(Vec<String>),
    /// `HEADER.FIELDS.NOT (names)`: all fields but the listed ones, then a blank line.
    HeaderFieldsNot(Vec<String>),
    /// `TEXT`: the body of the message.
    Text,
    /// `MIME`: the MIME header of a numbered part (not valid without part numbers).
    Mime,
}

/// The bytes of a section: a range of the stored message, or bytes built from it
/// (`HEADER.FIELDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionBytes {
    /// These stored bytes, exactly.
    Range(Range<usize>),
    /// Selected header fields as stored, followed by CRLF.
    Built(Vec<u8>),
}

impl SectionBytes {
    /// The section's bytes, given the message it was computed from.
    pub fn bytes<'a>(&'a self, message: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            SectionBytes::Range(range) => {
                Cow::Borrowed(message.get(range.clone()).unwrap_or_default())
            }
            SectionBytes::Built(bytes) => Cow::Borrowed(bytes),
        }
    }
}

/// The bytes `BODY[path.part]` names, or `None` when the section does not exist (a part
/// number out of range, `MIME` without a part number, `HEADER`/`TEXT` of a part that is
/// not message/rfc822). A part number of 0 never exists.
///
/// Numbering follows RFC 3501 §6.4.5: a non-multipart message has only part 1 (its
/// body); the parts of a message/rfc822 part are those of the message inside it.
pub fn section(message: &[u8], path: &[u32], part: &SectionPart) -> Option<SectionBytes> {
    section_of(message, &parse(message), path, part)
}

/// [`section`] from a tree [`parse`] already built for `message`. `root` must come
/// from this message.
pub fn section_of(
    message: &[u8],
    root: &Part,
    path: &[u32],
    part: &SectionPart,
) -> Option<SectionBytes> {
    let mut current = root;
    for (depth, &number) in path.iter().enumerate() {
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        // Part 1 of a non-multipart message is its body; other parts have no subparts.
        let mut is_message = depth == 0;
        if depth > 0
            && let Body::Message(inner) = &current.content
        {
            current = inner;
            is_message = true;
        }
        current = match &current.content {
            Body::Multipart(children) => children.get(index)?,
            _ if index == 0 && is_message => current,
            _ => return None,
        };
    }
    // HEADER, HEADER.FIELDS and TEXT address a message: the root, or the message inside
    // a message/rfc822 part.
    let message_part: Option<&Part> = if path.is_empty() {
        Some(root)
    } else if let Body::Message(inner) = &current.content {
        Some(inner)
    } else {
        None
    };
    Some(match part {
        SectionPart::Full if path.is_empty() => SectionBytes::Range(0..message.len()),
        SectionPart::Full => SectionBytes::Range(current.body.clone()),
        SectionPart::Mime if path.is_empty() => return None,
        SectionPart::Mime => SectionBytes::Range(current.header.clone()),
        SectionPart::Header => SectionBytes::Range(message_part?.header.clone()),
        SectionPart::Text => SectionBytes::Range(message_part?.body.clone()),
        SectionPart::HeaderFields(names) => {
            SectionBytes::Built(select_fields(message, message_part?, names, true))
        }
        SectionPart::HeaderFieldsNot(names) => {
            SectionBytes::Built(select_fields(message, message_part?, names, false))
        }
    })
}

/// The fields of `part`'s header whose names are (or, with `keep == false`, are not)
/// in `names`, as stored, then CRLF.
fn select_fields(message: &[u8], part: &Part, names: &[String], keep: bool) -> Vec<u8> {
    let header = message.get(part.header.clone()).unwrap_or_default();
    let mut out = Vec::new();
    for field in fields(header) {
        if names.iter().any(|n| field.is(n)) == keep {
            out.extend_from_slice(&header[field.raw.clone()]);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
