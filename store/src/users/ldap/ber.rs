//! The subset of BER (ITU-T X.690 §8) that LDAP messages use (RFC 4511 §5.1): one-byte
//! tags, definite lengths only, and the INTEGER, ENUMERATED, BOOLEAN, OCTET STRING,
//! SEQUENCE and SET encodings. Decoding borrows from the input and never panics.

use std::fmt;

/// Largest LDAP message accepted from a server (1 MiB). A user entry is a few KiB; the
/// limit only stops a broken or hostile server from making us buffer without bound.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// Universal tag of BOOLEAN.
pub(crate) const BOOLEAN: u8 = 0x01;
/// Universal tag of INTEGER.
pub(crate) const INTEGER: u8 = 0x02;
/// Universal tag of OCTET STRING.
pub(crate) const OCTET_STRING: u8 = 0x04;
/// Universal tag of ENUMERATED.
pub(crate) const ENUMERATED: u8 = 0x0a;
/// Universal tag of a constructed SEQUENCE.
pub(crate) const SEQUENCE: u8 = 0x30;
/// Universal tag of a constructed SET.
pub(crate) const SET: u8 = 0x31;

/// Why bytes from the server are not a valid LDAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BerError(pub(crate) &'static str);

impl fmt::Display for BerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed LDAP message: {}", self.0)
    }
}

/// One decoded tag-length-value element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (class, constructed bit and tag number).
    pub(crate) tag: u8,
    /// The contents octets.
    pub(crate) value: &'a [u8],
}

/// The length of the first element of `input` (header and contents), `Ok(None)` while
/// the header is incomplete. Used to frame messages on a stream.
pub(crate) fn element_len(input: &[u8]) -> Result<Option<usize>, BerError> {
    let Some(&tag) = input.first() else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err(BerError("multi-byte tags are not used by LDAP"));
    }
    let Some(&first) = input.get(1) else {
        return Ok(None);
    };
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err(BerError("indefinite length (RFC 4511 §5.1 forbids it)"));
        }
        if count > 4 {
            return Err(BerError("length field too long"));
        }
        let Some(bytes) = input.get(2..2 + count) else {
            return Ok(None);
        };
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (2 + count, len)
    };
    header
        .checked_add(len)
        .map(Some)
        .ok_or(BerError("length overflows"))
}

/// Decodes the first element of `input`, returning it and the rest.
pub(crate) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), BerError> {
    let total = element_len(input)?.ok_or(BerError("truncated header"))?;
    if total > input.len() {
        return Err(BerError("truncated contents"));
    }
    let header = header_len(input);
    let tlv = Tlv {
        tag: input[0],
        value: &input[header..total],
    };
    Ok((tlv, &input[total..]))
}

fn header_len(input: &[u8]) -> usize {
    match input.get(1) {
        Some(&first) if first >= 0x80 => 2 + usize::from(first & 0x7f),
        _ => 2,
    }
}

/// Walks the elements inside a constructed value.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over the contents of a constructed element.
    pub(crate) fn new(contents: &'a [u8]) -> Reader<'a> {
        Reader { rest: contents }
    }

    /// The next element, `None` at the end.
    pub(crate) fn next(&mut self) -> Result<Option<Tlv<'a>>, BerError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (tlv, rest) = read(self.rest)?;
        self.rest = rest;
        Ok(Some(tlv))
    }

    /// The next element, which must have tag `tag`; returns its contents.
    pub(crate) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], BerError> {
        match self.next()? {
            Some(tlv) if tlv.tag == tag => Ok(tlv.value),
            _ => Err(BerError(what)),
        }
    }

    /// Whether every element was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// Decodes the contents of an INTEGER or ENUMERATED (two's complement, at most 8
/// octets).
pub(crate) fn integer(contents: &[u8]) -> Result<i64, BerError> {
    if contents.is_empty() || contents.len() > 8 {
        return Err(BerError("integer of bad size"));
    }
    let negative = contents[0] & 0x80 != 0;
    let start: i64 = if negative { -1 } else { 0 };
    Ok(contents
        .iter()
        .fold(start, |acc, &b| (acc << 8) | i64::from(b)))
}

/// Appends one element with `tag` and `contents`.
pub(crate) fn put(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

/// Appends a constructed element whose contents `fill` writes.
pub(crate) fn put_constructed(out: &mut Vec<u8>, tag: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut contents = Vec::new();
    fill(&mut contents);
    put(out, tag, &contents);
}

/// Appends an INTEGER-encoded value (minimal two's complement) under `tag`.
pub(crate) fn put_integer(out: &mut Vec<u8>, tag: u8, value: i64) {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let redundant = (bytes[start] == 0x00 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    put(out, tag, &bytes[start..]);
}

/// Appends a BOOLEAN (DER form: `0xff` for true).
pub(crate) fn put_bool(out: &mut Vec<u8>, tag: u8, value: bool) {
    put(out, tag, &[if value { 0xff } else { 0x00 }]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_minimal_form() {
        for (value, bytes) in [
            (0i64, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x00, 0x80]),
            (256, vec![0x01, 0x00]),
            (-1, vec![0xff]),
            (-129, vec![0xff, 0x7f]),
            (i64::from(i32::MAX), vec![0x7f, 0xff, 0xff, 0xff]),
        ] {
            let mut out = Vec::new();
            put_integer(&mut out, INTEGER, value);
            assert_eq!(&out[2..], &bytes[..], "{value}");
            let (tlv, rest) = read(&out).unwrap();
            assert!(rest.is_empty());
            assert_eq!(integer(tlv.value), Ok(value));
        }
    }

    #[test]
    fn long_lengths_frame_correctly() {
        let contents = vec![7u8; 300];
        let mut out = Vec::new();
        put(&mut out, OCTET_STRING, &contents);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(element_len(&out[..3]), Ok(None));
        assert_eq!(element_len(&out), Ok(Some(304)));
        assert_eq!(read(&out).unwrap().0.value, &contents[..]);
        assert!(read(&out[..100]).is_err());
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        assert!(element_len(&[0x30, 0x80]).is_err(), "indefinite");
        assert!(element_len(&[0x1f, 0x01]).is_err(), "multi-byte tag");
        assert!(element_len(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
        assert_eq!(element_len(&[]), Ok(None));
        assert!(integer(&[]).is_err());
        assert!(integer(&[0; 9]).is_err());
        let mut reader = Reader::new(&[0x04, 0x05, 0x61]);
        assert!(reader.next().is_err());
    }
}
