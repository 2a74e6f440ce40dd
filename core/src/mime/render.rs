//! IMAP renderings of a message's structure: ENVELOPE and BODY/BODYSTRUCTURE
//! (RFC 3501 §7.4.2, grammar in §9).

use super::address::{Address, parse_address_list};
use super::header::{Structured, fields, first_value, structured, unfold};
use super::structure::{Body, Part, parse};

/// Longest value sent as a quoted string; longer ones go as literals.
const MAX_QUOTED: usize = 1024;

/// Appends `bytes` as an IMAP string (RFC 3501 §4.3): quoted when it is short 7-bit text
/// without CR, LF or NUL, a `{n}` literal otherwise.
pub(crate) fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable = bytes.len() <= MAX_QUOTED
        && bytes
            .iter()
            .all(|&b| (0x01..0x80).contains(&b) && b != b'\r' && b != b'\n');
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        push_literal(out, bytes);
    }
}

/// Appends `bytes` as a `{n}` literal.
fn push_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an nstring: `NIL` for `None`.
pub(crate) fn push_nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_string(out, bytes),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// The ENVELOPE of a message (RFC 3501 §7.4.2): `(date subject from sender reply-to to
/// cc bcc in-reply-to message-id)`. Values are unfolded but not decoded. As Dovecot
/// does: a repeated Date, Subject, In-Reply-To or Message-ID counts by its last
/// occurrence, and repeated address fields are joined. Sender and Reply-To default to
/// From when absent or empty.
pub fn envelope(message: &[u8]) -> Vec<u8> {
    envelope_of(message, &parse(message))
}

/// [`envelope`] from a tree [`parse`] already built for `message` (several FETCH
/// items of one message need only one parse). `root` must come from this message.
pub fn envelope_of(message: &[u8], root: &Part) -> Vec<u8> {
    let mut out = Vec::new();
    push_envelope(
        &mut out,
        message.get(root.header.clone()).unwrap_or_default(),
    );
    out
}

fn push_envelope(out: &mut Vec<u8>, header: &[u8]) {
    let push_text = |out: &mut Vec<u8>, name: &str| {
        push_nstring(out, last_value(header, name).as_deref());
    };
    let addresses = |name: &str| {
        let list: Vec<Address> = fields(header)
            .filter(|f| f.is(name))
            .flat_map(|f| parse_address_list(&unfold(f.value)))
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let from = addresses("From");
    out.push(b'(');
    push_text(out, "Date");
    out.push(b' ');
    push_text(out, "Subject");
    out.push(b' ');
    push_addresses(out, from.as_deref());
    for name in ["Sender", "Reply-To"] {
        out.push(b' ');
        push_addresses(out, addresses(name).as_deref().or(from.as_deref()));
    }
    for name in ["To", "Cc", "Bcc"] {
        out.push(b' ');
        push_addresses(out, addresses(name).as_deref());
    }
    out.push(b' ');
    push_text(out, "In-Reply-To");
    out.push(b' ');
    push_text(out, "Message-ID");
    out.push(b')');
}

/// The last field called `name`, unfolded.
fn last_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header)
        .filter(|f| f.is(name))
        .last()
        .map(|f| unfold(f.value))
}

fn push_addresses(out: &mut Vec<u8>, list: Option<&[Address]>) {
    let Some(list) = list else {
        out.extend_from_slice(b"NIL");
        return;
    };
    out.push(b'(');
    for address in list {
        match address {
            Address::Mailbox {
                name,
                route,
                mailbox,
                host,
            } => {
                out.push(b'(');
                push_nstring(out, name.as_deref());
                out.push(b' ');
                push_nstring(out, route.as_deref());
                out.push(b' ');
                push_string(out, mailbox);
                out.push(b' ');
                push_string(out, host);
                out.push(b')');
            }
            Address::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                push_string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            Address::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// The BODY (`extensible == false`) or BODYSTRUCTURE (`true`) of a message
/// (RFC 3501 §7.4.2), in the form Dovecot gives it, so clients see the same structure
/// from either server:
///
/// * types, subtypes, parameters, encodings and dispositions are written as stored
///   (case included); defaults are lower case: `"text" "plain"`, `"7bit"`;
/// * a text part without a `charset` parameter gets `"charset" "us-ascii"` after its
///   own parameters (RFC 2045 §5.2);
/// * a message (the whole message, or one inside message/rfc822) with neither
///   MIME-Version nor Content-Type is not MIME: its other Content-* fields are ignored;
///   parts of a multipart always are MIME;
/// * the first of repeated Content-* fields counts, except Content-Disposition (see
///   `disposition`); languages are always a list; a Content-Transfer-Encoding that is
///   not one token counts as none (`"7bit"`);
/// * sizes are body octets as stored; line counts (text and message/rfc822) are the
///   number of line ends; the MD5 member is always NIL.
pub fn body_structure(message: &[u8], extensible: bool) -> Vec<u8> {
    body_structure_of(message, &parse(message), extensible)
}

/// [`body_structure`] from a tree [`parse`] already built for `message`. `root` must
/// come from this message: offsets outside it render as empty parts.
pub fn body_structure_of(message: &[u8], root: &Part, extensible: bool) -> Vec<u8> {
    let mut out = Vec::new();
    push_part(&mut out, message, root, true, extensible);
    out
}

/// The header whose Content-* fields describe `part`: none for a message root that is
/// not MIME (no MIME-Version, no Content-Type).
fn mime_header<'m>(message: &'m [u8], part: &Part, message_root: bool) -> &'m [u8] {
    let header = message.get(part.header.clone()).unwrap_or_default();
    let is_mime =
        !message_root || fields(header).any(|f| f.is("MIME-Version") || f.is("Content-Type"));
    if is_mime { header } else { b"" }
}

/// `type/subtype` as written in a Content-Type, when it names the part's type.
fn written_media(ct: Option<&Structured>, part: &Part) -> Option<(Vec<u8>, Vec<u8>)> {
    let head = &ct?.head;
    let slash = head.iter().position(|&b| b == b'/')?;
    let (kind, sub) = (&head[..slash], &head[slash + 1..]);
    (kind.eq_ignore_ascii_case(part.media_type.as_bytes())
        && sub.eq_ignore_ascii_case(part.media_subtype.as_bytes()))
    .then(|| (kind.to_vec(), sub.to_vec()))
}

fn push_part(out: &mut Vec<u8>, message: &[u8], part: &Part, message_root: bool, ext: bool) {
    let header = mime_header(message, part, message_root);
    let content_type = fields(header)
        .find(|f| f.is("Content-Type"))
        .map(|f| structured(&unfold(f.value)));
    // The declared type, unless the parser overrode it (malformed, or a container past
    // the limits served as application/octet-stream).
    let written = written_media(content_type.as_ref(), part);
    let params = written
        .as_ref()
        .and(content_type.as_ref())
        .map_or(&[][..], |ct| ct.params.as_slice());
    let (kind, subtype) = written.unwrap_or_else(|| {
        (
            part.media_type.clone().into(),
            part.media_subtype.clone().into(),
        )
    });
    out.push(b'(');
    if let Body::Multipart(children) = &part.content {
        for child in children {
            push_part(out, message, child, false, ext);
        }
        out.push(b' ');
        push_string(out, &subtype);
        if ext {
            out.push(b' ');
            push_params(out, params, false);
            push_extension_tail(out, header);
        }
        out.push(b')');
        return;
    }
    push_string(out, &kind);
    out.push(b' ');
    push_string(out, &subtype);
    out.push(b' ');
    push_params(out, params, part.media_type == "text");
    out.push(b' ');
    push_nstring(out, first_value(header, "Content-ID").as_deref());
    out.push(b' ');
    push_nstring(out, first_value(header, "Content-Description").as_deref());
    out.push(b' ');
    // One token (RFC 2045 §6.1); anything else is no encoding, which means 7bit.
    let encoding = first_value(header, "Content-Transfer-Encoding")
        .filter(|e| !e.is_empty() && e.iter().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| b"7bit".to_vec());
    push_string(out, &encoding);
    let body = message.get(part.body.clone()).unwrap_or_default();
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &part.content {
        Body::Message(inner) => {
            out.push(b' ');
            push_envelope(out, message.get(inner.header.clone()).unwrap_or_default());
            out.push(b' ');
            push_part(out, message, inner, true, ext);
            out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
        }
        _ if part.media_type == "text" => {
            out.extend_from_slice(format!(" {}", line_count(body)).as_bytes());
        }
        _ => {}
    }
    if ext {
        out.extend_from_slice(b" NIL");
        push_extension_tail(out, header);
    }
    out.push(b')');
}

/// `("name" "value" ...)`, or NIL for none; `default_charset` adds `"charset"
/// "us-ascii"` when no charset parameter is among them (text parts).
fn push_params(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)], default_charset: bool) {
    let has_charset = params
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(b"charset"));
    if params.is_empty() && !default_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        push_string(out, name);
        out.push(b' ');
        push_string(out, value);
    }
    if default_charset && !has_charset {
        if !params.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// The Content-Disposition that counts, as Dovecot picks it: each repetition replaces
/// the previous one until one with parameters was seen.
fn disposition(header: &[u8]) -> Option<Structured> {
    let mut chosen: Option<Structured> = None;
    for field in fields(header).filter(|f| f.is("Content-Disposition")) {
        if chosen.as_ref().is_some_and(|d| !d.params.is_empty()) {
            break;
        }
        chosen = Some(structured(&unfold(field.value)));
    }
    chosen
}

/// ` disposition language location` of the extension data.
fn push_extension_tail(out: &mut Vec<u8>, header: &[u8]) {
    out.push(b' ');
    match disposition(header) {
        Some(disposition) if !disposition.head.is_empty() => {
            out.push(b'(');
            push_string(out, &disposition.head);
            out.push(b' ');
            push_params(out, &disposition.params, false);
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let languages: Vec<Vec<u8>> = first_value(header, "Content-Language")
        .map(|v| {
            // Each tag is one word; what follows it before the next comma is junk.
            v.split(|&b| b == b',')
                .filter_map(|l| l.split(|b| b.is_ascii_whitespace()).find(|w| !w.is_empty()))
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    match languages.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        many => {
            out.push(b'(');
            for (i, language) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                push_string(out, language);
            }
            out.push(b')');
        }
    }
    out.push(b' ');
    push_nstring(out, first_value(header, "Content-Location").as_deref());
}

/// Lines in a body: its line ends (a last line without one is not counted, as
/// Dovecot does).
fn line_count(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}
