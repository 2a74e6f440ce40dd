//! The LDAPv3 messages this client sends and the answers it understands (RFC 4511 §4):
//! simple Bind, Search, Unbind and the StartTLS extended operation (RFC 4511 §4.14).

use super::ber::{self, BerError, Reader};
use super::filter::Filter;

/// `resultCode` success (RFC 4511 §4.1.9).
pub(crate) const SUCCESS: i64 = 0;
/// `resultCode` sizeLimitExceeded.
pub(crate) const SIZE_LIMIT_EXCEEDED: i64 = 4;
/// `resultCode` invalidCredentials (wrong password or unknown DN).
pub(crate) const INVALID_CREDENTIALS: i64 = 49;
/// `resultCode` noSuchObject (the search base does not exist).
pub(crate) const NO_SUCH_OBJECT: i64 = 32;

/// The StartTLS extended operation's name (RFC 4511 §4.14.1).
const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";

/// Most attribute values kept per attribute of an entry; more are ignored.
pub(crate) const MAX_VALUES: usize = 16;

/// An `LDAPResult` (RFC 4511 §4.1.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LdapResult {
    /// The result code.
    pub(crate) code: i64,
    /// The server's diagnostic message.
    pub(crate) message: String,
}

/// A `SearchResultEntry` (RFC 4511 §4.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The entry's distinguished name.
    pub(crate) dn: String,
    /// `(attribute description, values)` as the server sent them.
    pub(crate) attributes: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// The values of `attribute` (case-insensitive, ignoring `;options` the server added).
    pub(crate) fn values(&self, attribute: &str) -> &[Vec<u8>] {
        self.attributes
            .iter()
            .find(|(name, _)| {
                let base = name.split(';').next().unwrap_or(name);
                base.eq_ignore_ascii_case(attribute)
            })
            .map_or(&[], |(_, values)| values.as_slice())
    }
}

/// One decoded answer from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `BindResponse`.
    Bind(LdapResult),
    /// `SearchResultEntry`.
    Entry(Entry),
    /// `SearchResultReference` (a referral to another server; not followed).
    Reference,
    /// `SearchResultDone`.
    Done(LdapResult),
    /// `ExtendedResponse` (StartTLS's answer, or an unsolicited notice of
    /// disconnection with message id 0, RFC 4511 §4.4.1).
    Extended(LdapResult),
    /// Any other protocol operation.
    Other(u8),
}

/// Wraps `op` in an `LDAPMessage` with `id`.
fn message(id: i32, op: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    ber::put_constructed(&mut out, ber::SEQUENCE, |msg| {
        ber::put_integer(msg, ber::INTEGER, i64::from(id));
        op(msg);
    });
    out
}

/// A simple `BindRequest` (RFC 4511 §4.2), LDAP version 3.
pub(crate) fn bind_request(id: i32, dn: &str, password: &[u8]) -> Vec<u8> {
    message(id, |msg| {
        ber::put_constructed(msg, 0x60, |bind| {
            ber::put_integer(bind, ber::INTEGER, 3);
            ber::put(bind, ber::OCTET_STRING, dn.as_bytes());
            ber::put(bind, 0x80, password);
        });
    })
}

/// A `SearchRequest` (RFC 4511 §4.5.1): whole subtree, never dereferencing aliases,
/// at most `size_limit` entries, `time_limit` seconds on the server.
pub(crate) fn search_request(
    id: i32,
    base: &str,
    filter: &Filter,
    attributes: &[&str],
    size_limit: i64,
    time_limit: i64,
) -> Vec<u8> {
    message(id, |msg| {
        ber::put_constructed(msg, 0x63, |search| {
            ber::put(search, ber::OCTET_STRING, base.as_bytes());
            ber::put_integer(search, ber::ENUMERATED, 2); // wholeSubtree
            ber::put_integer(search, ber::ENUMERATED, 0); // neverDerefAliases
            ber::put_integer(search, ber::INTEGER, size_limit);
            ber::put_integer(search, ber::INTEGER, time_limit);
            ber::put_bool(search, ber::BOOLEAN, false); // typesOnly
            filter.encode(search);
            ber::put_constructed(search, ber::SEQUENCE, |list| {
                if attributes.is_empty() {
                    // "1.1": no attributes (RFC 4511 §4.5.1.8).
                    ber::put(list, ber::OCTET_STRING, b"1.1");
                }
                for attribute in attributes {
                    ber::put(list, ber::OCTET_STRING, attribute.as_bytes());
                }
            });
        });
    })
}

/// An `UnbindRequest` (RFC 4511 §4.3).
pub(crate) fn unbind_request(id: i32) -> Vec<u8> {
    message(id, |msg| ber::put(msg, 0x42, &[]))
}

/// The StartTLS `ExtendedRequest` (RFC 4511 §4.14.1).
pub(crate) fn starttls_request(id: i32) -> Vec<u8> {
    message(id, |msg| {
        ber::put_constructed(msg, 0x77, |ext| {
            ber::put(ext, 0x80, STARTTLS_OID.as_bytes());
        });
    })
}

/// Decodes one complete `LDAPMessage` into its message id and operation.
pub(crate) fn decode(bytes: &[u8]) -> Result<(i64, Response), BerError> {
    let (outer, rest) = ber::read(bytes)?;
    if outer.tag != ber::SEQUENCE || !rest.is_empty() {
        return Err(BerError("not one LDAPMessage"));
    }
    let mut msg = Reader::new(outer.value);
    let id = ber::integer(msg.expect(ber::INTEGER, "messageID")?)?;
    let op = msg.next()?.ok_or(BerError("no protocolOp"))?;
    // Controls ([0]) may follow; this client asks for none and ignores any.
    let response = match op.tag {
        0x61 => Response::Bind(result(&mut Reader::new(op.value))?),
        0x64 => Response::Entry(entry(op.value)?),
        0x65 => Response::Done(result(&mut Reader::new(op.value))?),
        0x73 => Response::Reference,
        0x78 => Response::Extended(result(&mut Reader::new(op.value))?),
        other => Response::Other(other),
    };
    Ok((id, response))
}

/// The leading `LDAPResult` fields of a response; later optional fields are skipped.
fn result(reader: &mut Reader<'_>) -> Result<LdapResult, BerError> {
    let code = ber::integer(reader.expect(ber::ENUMERATED, "resultCode")?)?;
    let _matched = reader.expect(ber::OCTET_STRING, "matchedDN")?;
    let message = reader.expect(ber::OCTET_STRING, "diagnosticMessage")?;
    Ok(LdapResult {
        code,
        message: String::from_utf8_lossy(message).into_owned(),
    })
}

fn entry(contents: &[u8]) -> Result<Entry, BerError> {
    let mut reader = Reader::new(contents);
    let dn = reader.expect(ber::OCTET_STRING, "objectName")?;
    let list = reader.expect(ber::SEQUENCE, "attributes")?;
    let mut attributes = Vec::new();
    let mut list = Reader::new(list);
    while let Some(attribute) = list.next()? {
        if attribute.tag != ber::SEQUENCE {
            return Err(BerError("attribute is not a SEQUENCE"));
        }
        let mut attribute = Reader::new(attribute.value);
        let name = attribute.expect(ber::OCTET_STRING, "attribute type")?;
        let mut values = Reader::new(attribute.expect(ber::SET, "attribute values")?);
        let mut kept = Vec::new();
        while let Some(value) = values.next()? {
            if value.tag != ber::OCTET_STRING {
                return Err(BerError("attribute value is not an OCTET STRING"));
            }
            if kept.len() < MAX_VALUES {
                kept.push(value.value.to_vec());
            }
        }
        attributes.push((String::from_utf8_lossy(name).into_owned(), kept));
    }
    if !reader.is_empty() {
        return Err(BerError("trailing data in SearchResultEntry"));
    }
    Ok(Entry {
        dn: String::from_utf8_lossy(dn).into_owned(),
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_request_bytes() {
        // RFC 4511 §4.2 BindRequest, version 3, simple authentication.
        assert_eq!(
            bind_request(1, "cn=a", b"pw"),
            b"\x30\x12\x02\x01\x01\x60\x0d\x02\x01\x03\x04\x04cn=a\x80\x02pw"
        );
        assert_eq!(unbind_request(7), b"\x30\x05\x02\x01\x07\x42\x00");
    }

    #[test]
    fn decodes_entries_and_results() {
        // Built by hand: entry "uid=a" with mail: [x, y] and a bind result.
        let mut op = Vec::new();
        ber::put_constructed(&mut op, 0x64, |e| {
            ber::put(e, ber::OCTET_STRING, b"uid=a");
            ber::put_constructed(e, ber::SEQUENCE, |attrs| {
                ber::put_constructed(attrs, ber::SEQUENCE, |a| {
                    ber::put(a, ber::OCTET_STRING, b"Mail;x-opt");
                    ber::put_constructed(a, ber::SET, |v| {
                        ber::put(v, ber::OCTET_STRING, b"x");
                        ber::put(v, ber::OCTET_STRING, b"y");
                    });
                });
            });
        });
        let mut msg = Vec::new();
        ber::put_constructed(&mut msg, ber::SEQUENCE, |m| {
            ber::put_integer(m, ber::INTEGER, 5);
            m.extend_from_slice(&op);
        });
        let (id, response) = decode(&msg).unwrap();
        assert_eq!(id, 5);
        let Response::Entry(entry) = response else {
            panic!("{response:?}")
        };
        assert_eq!(entry.dn, "uid=a");
        assert_eq!(entry.values("mail"), &[b"x".to_vec(), b"y".to_vec()]);
        assert!(entry.values("cn").is_empty());

        let done = b"\x30\x0c\x02\x01\x02\x61\x07\x0a\x01\x31\x04\x00\x04\x00";
        assert_eq!(
            decode(done),
            Ok((
                2,
                Response::Bind(LdapResult {
                    code: INVALID_CREDENTIALS,
                    message: String::new()
                })
            ))
        );
    }

    #[test]
    fn truncated_or_garbled_messages_are_errors() {
        let done = b"\x30\x0c\x02\x01\x02\x61\x07\x0a\x01\x31\x04\x00\x04\x00";
        for end in 0..done.len() {
            assert!(decode(&done[..end]).is_err(), "prefix {end}");
        }
        for i in 0..done.len() {
            let mut bad = done.to_vec();
            bad[i] ^= 0xff;
            let _ = decode(&bad); // must not panic
        }
    }
}
