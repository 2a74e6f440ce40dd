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
        out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Appends an nstring: `NIL` for `None`.
pub(crate) fn push_nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_string(out, bytes),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// The ENVELOPE of a message (RFC 3501 §7.4.2): `(date subject from sender reply-to to
/// cc bcc in-reply-to message-id)`, taken from the first occurrence of each field.
/// Values are unfolded but not decoded. Sender and Reply-To default to From when absent
/// or empty.
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
    let text = |name: &str| first_value(header, name);
    let addresses = |name: &str| {
        first_value(header, name)
            .map(|v| parse_address_list(&v))
            .filter(|list| !list.is_empty())
    };
    let from = addresses("From");
    out.push(b'(');
    push_nstring(out, text("Date").as_deref());
    out.push(b' ');
    push_nstring(out, text("Subject").as_deref());
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
    push_nstring(out, text("In-Reply-To").as_deref());
    out.push(b' ');
    push_nstring(out, text("Message-ID").as_deref());
    out.push(b')');
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
/// (RFC 3501 §7.4.2). Types, subtypes, parameter names and encodings are upper case,
/// parameter values as stored. A part without Content-Type is `text/plain` with
/// `("CHARSET" "us-ascii")`. Sizes are body octets as stored; line counts (text/* and
/// message/rfc822) count line ends, plus one for a last line without one. The MD5
/// member is always NIL.
pub fn body_structure(message: &[u8], extensible: bool) -> Vec<u8> {
    body_structure_of(message, &parse(message), extensible)
}

/// [`body_structure`] from a tree [`parse`] already built for `message`. `root` must
/// come from this message: offsets outside it render as empty parts.
pub fn body_structure_of(message: &[u8], root: &Part, extensible: bool) -> Vec<u8> {
    let mut out = Vec::new();
    push_part(&mut out, message, root, extensible);
    out
}

fn push_upper(out: &mut Vec<u8>, text: &[u8]) {
    push_string(out, &text.to_ascii_uppercase());
}

fn push_part(out: &mut Vec<u8>, message: &[u8], part: &Part, ext: bool) {
    let header = message.get(part.header.clone()).unwrap_or_default();
    let content_type = fields(header)
        .find(|f| f.is("Content-Type"))
        .map(|f| structured(&unfold(f.value)));
    out.push(b'(');
    if let Body::Multipart(children) = &part.content {
        for child in children {
            push_part(out, message, child, ext);
        }
        out.push(b' ');
        push_upper(out, part.media_subtype.as_bytes());
        if ext {
            out.push(b' ');
            push_params(out, content_type.as_ref().map(|ct| ct.params.as_slice()));
            push_extension_tail(out, header);
        }
        out.push(b')');
        return;
    }
    push_upper(out, part.media_type.as_bytes());
    out.push(b' ');
    push_upper(out, part.media_subtype.as_bytes());
    out.push(b' ');
    // Parameters: the declared ones; the RFC 2045 §5.2 default charset when the part has
    // no Content-Type at all.
    let declared = content_type
        .as_ref()
        .filter(|_| part.media_type != "application" || !is_container_type(&content_type))
        .map(|ct| ct.params.as_slice());
    match declared {
        Some(params) => push_params(out, Some(params)),
        None if content_type.is_none() && part.is("text", "plain") => {
            out.extend_from_slice(b"(\"CHARSET\" \"us-ascii\")")
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    push_nstring(out, first_value(header, "Content-ID").as_deref());
    out.push(b' ');
    push_nstring(out, first_value(header, "Content-Description").as_deref());
    out.push(b' ');
    let encoding = first_value(header, "Content-Transfer-Encoding")
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| b"7bit".to_vec());
    push_upper(out, &encoding);
    let body = message.get(part.body.clone()).unwrap_or_default();
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &part.content {
        Body::Message(inner) => {
            out.push(b' ');
            push_envelope(out, message.get(inner.header.clone()).unwrap_or_default());
            out.push(b' ');
            push_part(out, message, inner, ext);
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

/// Whether a Content-Type declared a container the parser did not open (depth or part
/// limits): its parameters (a boundary) do not describe the octet-stream it became.
fn is_container_type(ct: &Option<Structured>) -> bool {
    ct.as_ref().is_some_and(|ct| {
        let head = ct.head.to_ascii_lowercase();
        head.starts_with(b"multipart/") || head == b"message/rfc822"
    })
}

/// `("NAME" "value" ...)` or NIL for no parameters.
fn push_params(out: &mut Vec<u8>, params: Option<&[(Vec<u8>, Vec<u8>)]>) {
    match params {
        Some(params) if !params.is_empty() => {
            out.push(b'(');
            for (i, (name, value)) in params.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                push_upper(out, name);
                out.push(b' ');
                push_string(out, value);
            }
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
}

/// ` disposition language location` of the extension data.
fn push_extension_tail(out: &mut Vec<u8>, header: &[u8]) {
    out.push(b' ');
    match first_value(header, "Content-Disposition").map(|v| structured(&v)) {
        Some(disposition) if !disposition.head.is_empty() => {
            out.push(b'(');
            push_upper(out, &disposition.head);
            out.push(b' ');
            push_params(out, Some(&disposition.params));
            out.push(b')');
        }
        _ => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    let languages: Vec<Vec<u8>> = first_value(header, "Content-Language")
        .map(|v| {
            v.split(|&b| b == b',')
                .map(unfold)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match languages.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => push_string(out, one),
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

/// Lines in a body: line ends, plus one for a last line without one.
fn line_count(body: &[u8]) -> usize {
    let ends = body.iter().filter(|&&b| b == b'\n').count();
    ends + usize::from(body.last().is_some_and(|&b| b != b'\n'))
}
