//! The part tree of a message (RFC 2045 §5, RFC 2046 §5.1 multipart, §5.2.1
//! message/rfc822) with byte offsets into the stored message.

use std::ops::Range;

use super::header::{Structured, fields, is_blank, line_end, structured, unfold};

/// Deepest nesting of multiparts and encapsulated messages that is parsed; deeper
/// containers are served as opaque `application/octet-stream` leaves. Bounds the work
/// per message to `MAX_DEPTH` passes over its bytes.
pub const MAX_DEPTH: usize = 32;

/// Most parts parsed in one message; containers found after that are opaque leaves.
/// Bounds the size of the tree (and of BODYSTRUCTURE) whatever the input.
pub const MAX_PARTS: usize = 5_000;

/// Longest boundary honoured (RFC 2046 §5.1.1 allows 70 characters); a longer one is
/// treated as missing.
const MAX_BOUNDARY: usize = 200;

/// One MIME part (or the whole message, at the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The header block, with its closing blank line if there is one.
    pub header: Range<usize>,
    /// The body, after the blank line; for multipart children it ends before the line
    /// break that precedes the next boundary (RFC 2046 §5.1.1).
    pub body: Range<usize>,
    /// The media type in lower case (`text`), after defaults were applied.
    pub media_type: String,
    /// The media subtype in lower case (`plain`).
    pub media_subtype: String,
    /// What the body holds.
    pub content: Body,
}

/// What a part's body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Data: text, image, application, or a container past the limits.
    Leaf,
    /// The parts of a multipart, in order; never empty (a multipart without any
    /// boundary line gets one empty text/plain part, as Dovecot gives it).
    Multipart(Vec<Part>),
    /// The message inside a message/rfc822 part.
    Message(Box<Part>),
}

impl Part {
    /// Whether this part has the given type and subtype (lower case).
    pub fn is(&self, media_type: &str, subtype: &str) -> bool {
        self.media_type == media_type && self.media_subtype == subtype
    }
}

/// Parses a stored message into its part tree. The root's header is the message header.
pub fn parse(message: &[u8]) -> Part {
    let mut parser = Parser {
        message,
        parts_left: MAX_PARTS,
    };
    parser.part(0..message.len(), Implicit::Text, 0)
}

/// The type a part has when it has no usable Content-Type (RFC 2045 §5.2, RFC 2046
/// §5.1.5 for digests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Implicit {
    Text,
    Message,
}

struct Parser<'a> {
    message: &'a [u8],
    parts_left: usize,
}

impl Parser<'_> {
    fn part(&mut self, range: Range<usize>, default: Implicit, depth: usize) -> Part {
        self.parts_left = self.parts_left.saturating_sub(1);
        let (header, body) = split_header(self.message, range);
        let content_type = fields(&self.message[header.clone()])
            .find(|f| f.is("Content-Type"))
            .map(|f| structured(&unfold(f.value)));
        let (media_type, media_subtype) = match content_type.as_ref().and_then(media_of) {
            Some(media) => media,
            None => match default {
                Implicit::Text => ("text".to_owned(), "plain".to_owned()),
                Implicit::Message => ("message".to_owned(), "rfc822".to_owned()),
            },
        };
        let mut part = Part {
            header,
            body,
            media_type,
            media_subtype,
            content: Body::Leaf,
        };
        let container = part.media_type == "multipart" || part.is("message", "rfc822");
        if !container {
            return part;
        }
        if depth >= MAX_DEPTH || self.parts_left == 0 {
            part.media_type = "application".into();
            part.media_subtype = "octet-stream".into();
            return part;
        }
        if part.media_type == "multipart" {
            let child_default = if part.media_subtype == "digest" {
                Implicit::Message
            } else {
                Implicit::Text
            };
            let boundary = content_type
                .as_ref()
                .and_then(|ct| param(ct, "boundary"))
                .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY);
            let ranges = match boundary {
                Some(boundary) => split_multipart(self.message, part.body.clone(), boundary),
                None => Vec::new(),
            };
            let mut children = Vec::with_capacity(ranges.len().min(self.parts_left));
            for range in ranges {
                if self.parts_left == 0 {
                    break;
                }
                children.push(self.part(range, child_default, depth + 1));
            }
            if children.is_empty() {
                // As Dovecot does: one empty text/plain part.
                let start = part.body.start;
                children.push(Part {
                    header: start..start,
                    body: start..start,
                    media_type: "text".into(),
                    media_subtype: "plain".into(),
                    content: Body::Leaf,
                });
            }
            part.content = Body::Multipart(children);
        } else {
            let inner = self.part(part.body.clone(), Implicit::Text, depth + 1);
            part.content = Body::Message(Box::new(inner));
        }
        part
    }
}

/// `type/subtype` of a parsed Content-Type, lower case; `None` when malformed.
fn media_of(ct: &Structured) -> Option<(String, String)> {
    let text = std::str::from_utf8(&ct.head).ok()?;
    let (kind, sub) = text.split_once('/')?;
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    (valid(kind) && valid(sub)).then(|| (kind.to_ascii_lowercase(), sub.to_ascii_lowercase()))
}

/// The value of parameter `name` (case-insensitive).
pub(crate) fn param<'s>(ct: &'s Structured, name: &str) -> Option<&'s [u8]> {
    ct.params
        .iter()
        .find(|(attribute, _)| attribute.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, value)| value.as_slice())
}

/// Splits `range` into header (up to and including the first blank line) and body. A
/// part without a blank line is all header; one starting with a blank line has an
/// empty header apart from that line.
pub(crate) fn split_header(message: &[u8], range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let slice = &message[range.clone()];
    let mut pos = 0;
    while pos < slice.len() {
        let end = line_end(slice, pos);
        if is_blank(&slice[pos..end]) {
            let split = range.start + end;
            return (range.start..split, split..range.end);
        }
        pos = end;
    }
    (range.clone(), range.end..range.end)
}

/// The body ranges of the parts of a multipart body delimited by `--boundary` lines.
/// The line break before a delimiter belongs to the delimiter; the preamble and the
/// epilogue are not parts. Without a closing delimiter the last part runs to the end.
fn split_multipart(message: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut current: Option<usize> = None;
    let mut pos = body.start;
    while pos < body.end {
        let end = line_end(&message[..body.end], pos);
        let line = &message[pos..end];
        if let Some(close) = delimiter(line, boundary) {
            let mut content_end = pos;
            if pos > body.start && message[pos - 1] == b'\n' {
                content_end -= 1;
                if content_end > body.start && message[content_end - 1] == b'\r' {
                    content_end -= 1;
                }
            }
            if let Some(start) = current {
                ranges.push(start..content_end.max(start));
            }
            if close {
                return ranges;
            }
            current = Some(end);
            if ranges.len() >= MAX_PARTS {
                return ranges;
            }
        }
        pos = end;
    }
    if let Some(start) = current {
        ranges.push(start..body.end);
    }
    ranges
}

/// `Some(is_close)` if `line` is `--boundary` or `--boundary--` followed only by
/// blanks (RFC 2046 §5.1.1 transport padding).
fn delimiter(line: &[u8], boundary: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}
