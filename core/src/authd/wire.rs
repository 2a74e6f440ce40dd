//! The authd line grammar (docs/authd.md, "Protocol"): parsing and encoding of every
//! line either side sends.
//!
//! A line is ASCII words separated by single spaces and ended by CRLF. Free-form words
//! (addresses, secrets, field values, reasons) are percent-encoded: bytes outside
//! `!`..=`~` and `%` itself become `%XX`, so a word never contains a space or a control
//! character and every value survives the trip unchanged. Passwords travel in base64.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;

use crate::secret::Secret;
use crate::user::UserRecord;

/// The protocol versions this implementation speaks, lowest first.
pub const VERSIONS: &[u32] = &[1];

/// Longest request tag: enough for any decimal `u64` with room to spare.
pub const MAX_TAG: usize = 32;

/// A client's request tag: 1 to [`MAX_TAG`] ASCII letters and digits, echoed in the
/// answer so answers can be matched to pipelined requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// The tag, if `text` is a valid one.
    pub fn new(text: &str) -> Option<Tag> {
        let valid = !text.is_empty()
            && text.len() <= MAX_TAG
            && text.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Tag(text.to_owned()))
    }

    /// The tag for a request number (a decimal `u64` is always a valid tag).
    pub fn number(n: u64) -> Tag {
        Tag(n.to_string())
    }

    /// The tag as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A line a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    /// `HELLO <version> <secret>`: picks the protocol version and proves the client
    /// knows the shared secret. The first line of every connection.
    Hello {
        /// The highest version both sides speak.
        version: u32,
        /// The shared secret.
        secret: Secret,
    },
    /// `QUIT`: the server answers `* BYE` and closes.
    Quit,
    /// `<tag> LOOKUP <address>`: who is this address (no password check)?
    Lookup {
        /// Echoed in the answer.
        tag: Tag,
        /// The address as the end client gave it.
        address: String,
    },
    /// `<tag> VERIFY <user> <base64 password> <client ip>`: check a password.
    Verify {
        /// Echoed in the answer.
        tag: Tag,
        /// The login name as the end client gave it.
        user: String,
        /// The password.
        password: Secret,
        /// The end client's address, for the user database's logs and penalties.
        client: IpAddr,
    },
}

/// The answer to one tagged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `FOUND <address> [fields]`: the user exists (LOOKUP). Never carries a password.
    Found(UserRecord),
    /// `NOTFOUND`: a served domain without such a user (LOOKUP).
    NotFound,
    /// `NODOMAIN`: the database does not serve this domain (LOOKUP).
    NoDomain,
    /// `OK <address> [fields]`: the password is right (VERIFY). Never carries a password.
    Accepted(UserRecord),
    /// `DENIED`: unknown user or wrong password (VERIFY).
    Denied,
    /// `DISABLED`: right password, but the account has `nologin` (VERIFY).
    Disabled,
    /// `TEMPFAIL <reason>`: the database could not answer now; try again later.
    TempFail(String),
    /// `BAD <reason>`: the request was malformed.
    Bad(String),
}

/// A line a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// `* TIDEGATE-AUTHD <version>...`: the greeting, listing the versions spoken.
    Greeting(Vec<u32>),
    /// `* OK <version>`: HELLO accepted; requests may follow (they may also be pipelined
    /// right after HELLO).
    Welcome(u32),
    /// `* BYE <reason>`: the server closes the connection (QUIT, idle timeout).
    Bye(String),
    /// `* BAD <reason>`: an untagged error (a line without a usable tag, a failed
    /// HELLO). After a failed HELLO the server closes.
    Bad(String),
    /// `<tag> <answer>`.
    Answer(Tag, Answer),
}

/// Why a client line was rejected, with its tag when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tag of the line, if it had a valid one (then the error is answered with it).
    pub tag: Option<Tag>,
    /// What is wrong, for the `BAD` reply.
    pub reason: &'static str,
}

fn error(tag: Option<&Tag>, reason: &'static str) -> ParseError {
    ParseError {
        tag: tag.cloned(),
        reason,
    }
}

/// Percent-encodes `bytes` onto `out` (see the module documentation).
pub fn push_encoded(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Decodes one percent-encoded word; `None` for a stray byte or a bad escape.
pub fn decode(word: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(word.len());
    let mut rest = word;
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let (hex, tail) = rest.split_first_chunk::<2>()?;
                rest = tail;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'!'..=b'~' => out.push(b),
            _ => return None,
        }
    }
    Some(out)
}

/// Decodes one percent-encoded word that must be UTF-8 text.
fn decode_text(word: &[u8]) -> Option<String> {
    String::from_utf8(decode(word)?).ok()
}

fn keyword_is(word: &[u8], keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword.as_bytes())
}

/// Parses one client line (CRLF removed). Keywords are case-insensitive.
pub fn parse_client(line: &[u8]) -> Result<ClientLine, ParseError> {
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let first = words.first().copied().unwrap_or_default();
    if keyword_is(first, "HELLO") {
        let [_, version, secret] = words[..] else {
            return Err(error(None, "HELLO needs a version and a secret"));
        };
        let version = parse_number(version).ok_or(error(None, "bad version number"))?;
        let secret = decode(secret).ok_or(error(None, "badly encoded secret"))?;
        return Ok(ClientLine::Hello {
            version,
            secret: Secret::new(secret),
        });
    }
    if keyword_is(first, "QUIT") {
        return match words.len() {
            1 => Ok(ClientLine::Quit),
            _ => Err(error(None, "QUIT takes no arguments")),
        };
    }
    let owned_tag = std::str::from_utf8(first)
        .ok()
        .and_then(Tag::new)
        .ok_or(error(None, "a request starts with a tag or HELLO/QUIT"))?;
    let tag = Some(&owned_tag);
    let command = words
        .get(1)
        .copied()
        .ok_or(error(tag, "a command must follow the tag"))?;
    if keyword_is(command, "LOOKUP") {
        let [_, _, address] = words[..] else {
            return Err(error(tag, "LOOKUP needs one address"));
        };
        let address = decode_text(address).ok_or(error(tag, "badly encoded address"))?;
        Ok(ClientLine::Lookup {
            tag: owned_tag.clone(),
            address,
        })
    } else if keyword_is(command, "VERIFY") {
        let [_, _, user, password, client] = words[..] else {
            return Err(error(
                tag,
                "VERIFY needs a user, a password and a client address",
            ));
        };
        let user = decode_text(user).ok_or(error(tag, "badly encoded user"))?;
        let password = BASE64
            .decode(password)
            .map_err(|_| error(tag, "the password must be base64"))?;
        let client = std::str::from_utf8(client)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or(error(tag, "bad client address"))?;
        Ok(ClientLine::Verify {
            tag: owned_tag.clone(),
            user,
            password: Secret::new(password),
            client,
        })
    } else {
        Err(error(tag, "unknown command"))
    }
}

/// A decimal number without sign or leading zeros, as versions are written.
fn parse_number(word: &[u8]) -> Option<u32> {
    if word.is_empty() || word.len() > 9 || (word.len() > 1 && word[0] == b'0') {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// Writes `line` in its canonical form, with CRLF.
pub fn encode_client(line: &ClientLine, out: &mut BytesMut) {
    let mut text = String::new();
    match line {
        ClientLine::Hello { version, secret } => {
            let _ = write!(text, "HELLO {version} ");
            push_encoded(&mut text, secret.expose());
        }
        ClientLine::Quit => text.push_str("QUIT"),
        ClientLine::Lookup { tag, address } => {
            let _ = write!(text, "{} LOOKUP ", tag.0);
            push_encoded(&mut text, address.as_bytes());
        }
        ClientLine::Verify {
            tag,
            user,
            password,
            client,
        } => {
            let _ = write!(text, "{} VERIFY ", tag.0);
            push_encoded(&mut text, user.as_bytes());
            text.push(' ');
            BASE64.encode_string(password.expose(), &mut text);
            let _ = write!(text, " {client}");
        }
    }
    text.push_str("\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// Writes a record as `<address> [key[=value] ...]` (the password is never written).
fn push_record(text: &mut String, record: &UserRecord) {
    push_encoded(text, record.address.as_bytes());
    for (key, value) in &record.fields {
        text.push(' ');
        // The reader splits a field at its first `=`: one in a name must be encoded.
        for part in key.as_bytes().split_inclusive(|&b| b == b'=') {
            match part.split_last() {
                Some((b'=', name)) => {
                    push_encoded(text, name);
                    text.push_str("%3D");
                }
                _ => push_encoded(text, part),
            }
        }
        if !value.is_empty() {
            text.push('=');
            push_encoded(text, value.as_bytes());
        }
    }
}

/// Writes `line` in its canonical form, with CRLF.
pub fn encode_server(line: &ServerLine, out: &mut BytesMut) {
    let mut text = String::new();
    match line {
        ServerLine::Greeting(versions) => {
            text.push_str("* TIDEGATE-AUTHD");
            for version in versions {
                let _ = write!(text, " {version}");
            }
        }
        ServerLine::Welcome(version) => {
            let _ = write!(text, "* OK {version}");
        }
        ServerLine::Bye(reason) => {
            text.push_str("* BYE ");
            push_encoded(&mut text, reason.as_bytes());
        }
        ServerLine::Bad(reason) => {
            text.push_str("* BAD ");
            push_encoded(&mut text, reason.as_bytes());
        }
        ServerLine::Answer(tag, answer) => {
            text.push_str(&tag.0);
            text.push(' ');
            match answer {
                Answer::Found(record) => {
                    text.push_str("FOUND ");
                    push_record(&mut text, record);
                }
                Answer::Accepted(record) => {
                    text.push_str("OK ");
                    push_record(&mut text, record);
                }
                Answer::NotFound => text.push_str("NOTFOUND"),
                Answer::NoDomain => text.push_str("NODOMAIN"),
                Answer::Denied => text.push_str("DENIED"),
                Answer::Disabled => text.push_str("DISABLED"),
                Answer::TempFail(reason) => {
                    text.push_str("TEMPFAIL ");
                    push_encoded(&mut text, reason.as_bytes());
                }
                Answer::Bad(reason) => {
                    text.push_str("BAD ");
                    push_encoded(&mut text, reason.as_bytes());
                }
            }
        }
    }
    text.push_str("\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// Parses one server line (CRLF removed); the error says what is wrong.
pub fn parse_server(line: &[u8]) -> Result<ServerLine, &'static str> {
    let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let (first, rest) = words.split_first().ok_or("empty line")?;
    let (second, args) = rest
        .split_first()
        .ok_or("a line needs at least two words")?;
    let reason = |args: &[&[u8]]| -> Result<String, &'static str> {
        match args {
            [word] => decode_text(word).ok_or("badly encoded reason"),
            _ => Err("a reason is one word"),
        }
    };
    if *first == b"*" {
        return match *second {
            b"TIDEGATE-AUTHD" if !args.is_empty() => args
                .iter()
                .map(|v| parse_number(v))
                .collect::<Option<Vec<_>>>()
                .map(ServerLine::Greeting)
                .ok_or("bad version in the greeting"),
            b"OK" => match args {
                [version] => parse_number(version)
                    .map(ServerLine::Welcome)
                    .ok_or("bad version"),
                _ => Err("* OK takes one version"),
            },
            b"BYE" => reason(args).map(ServerLine::Bye),
            b"BAD" => reason(args).map(ServerLine::Bad),
            _ => Err("unknown untagged line"),
        };
    }
    let tag = std::str::from_utf8(first)
        .ok()
        .and_then(Tag::new)
        .ok_or("bad tag")?;
    let answer = match *second {
        b"FOUND" => Answer::Found(parse_record(args)?),
        b"OK" => Answer::Accepted(parse_record(args)?),
        b"NOTFOUND" | b"NODOMAIN" | b"DENIED" | b"DISABLED" if !args.is_empty() => {
            return Err("unexpected words after the answer");
        }
        b"NOTFOUND" => Answer::NotFound,
        b"NODOMAIN" => Answer::NoDomain,
        b"DENIED" => Answer::Denied,
        b"DISABLED" => Answer::Disabled,
        b"TEMPFAIL" => Answer::TempFail(reason(args)?),
        b"BAD" => Answer::Bad(reason(args)?),
        _ => return Err("unknown answer"),
    };
    Ok(ServerLine::Answer(tag, answer))
}

/// Parses `<address> [key[=value] ...]` into a record without a password.
fn parse_record(words: &[&[u8]]) -> Result<UserRecord, &'static str> {
    let (address, fields) = words.split_first().ok_or("the answer needs an address")?;
    let address = decode_text(address).ok_or("badly encoded address")?;
    let mut record = UserRecord::new(address);
    let mut map = BTreeMap::new();
    for field in fields {
        let (key, value) = match field.iter().position(|&b| b == b'=') {
            Some(eq) => (&field[..eq], &field[eq + 1..]),
            None => (&field[..], &b""[..]),
        };
        let key = decode_text(key)
            .filter(|k| !k.is_empty())
            .ok_or("bad field name")?;
        let value = decode_text(value).ok_or("badly encoded field value")?;
        if map.insert(key, value).is_some() {
            return Err("a field is given twice");
        }
    }
    record.fields = map;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_bytes(line: &ClientLine) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_client(line, &mut out);
        out.to_vec()
    }

    fn server_bytes(line: &ServerLine) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_server(line, &mut out);
        out.to_vec()
    }

    #[test]
    fn client_lines_encode_and_parse() {
        let verify = ClientLine::Verify {
            tag: Tag::new("7").unwrap(),
            user: "Alice Smith@example.com".into(),
            password: Secret::new(b"p w\xff".to_vec()),
            client: "2001:db8::1".parse().unwrap(),
        };
        let bytes = client_bytes(&verify);
        assert_eq!(
            bytes,
            b"7 VERIFY Alice%20Smith@example.com cCB3/w== 2001:db8::1\r\n"
        );
        assert_eq!(parse_client(&bytes[..bytes.len() - 2]), Ok(verify));
        assert_eq!(
            parse_client(b"hello 1 s%25cret"),
            Ok(ClientLine::Hello {
                version: 1,
                secret: Secret::new(b"s%cret".to_vec())
            })
        );
        assert_eq!(
            parse_client(b"a1 lookup bob@example.org"),
            Ok(ClientLine::Lookup {
                tag: Tag::new("a1").unwrap(),
                address: "bob@example.org".into()
            })
        );
    }

    #[test]
    fn malformed_client_lines_keep_their_tag() {
        let cases: [(&[u8], Option<&str>); 9] = [
            (b"", None),
            (b"HELLO 1", None),
            (b"HELLO 01 x", None),
            (b"x-y LOOKUP a@b", None),
            (b"5", Some("5")),
            (b"5 LOOKUP", Some("5")),
            (b"5 LOOKUP a%2", Some("5")),
            (b"5 VERIFY a@b !!! 1.2.3.4", Some("5")),
            (b"5 VERIFY a@b cA== 1.2.3", Some("5")),
        ];
        for (line, tag) in cases {
            let err = parse_client(line).unwrap_err();
            assert_eq!(err.tag.as_ref().map(Tag::as_str), tag, "{line:?}");
        }
    }

    #[test]
    fn server_lines_encode_and_parse() {
        let mut record = UserRecord::new("alice@example.com");
        record.password = "{PLAIN}never-sent".into();
        record.fields.insert("tohost".into(), "10.0.0.2".into());
        record.fields.insert("nologin".into(), String::new());
        record.fields.insert("note".into(), "two words=yes".into());
        let found = ServerLine::Answer(Tag::new("12").unwrap(), Answer::Found(record.clone()));
        let bytes = server_bytes(&found);
        assert_eq!(
            bytes,
            b"12 FOUND alice@example.com nologin note=two%20words=yes tohost=10.0.0.2\r\n"
        );
        record.password.clear();
        assert_eq!(
            parse_server(&bytes[..bytes.len() - 2]),
            Ok(ServerLine::Answer(
                Tag::new("12").unwrap(),
                Answer::Found(record)
            ))
        );
        for line in [
            ServerLine::Greeting(vec![1, 2]),
            ServerLine::Welcome(1),
            ServerLine::Bye("idle timeout".into()),
            ServerLine::Bad("what?".into()),
            ServerLine::Answer(Tag::new("x").unwrap(), Answer::TempFail("db down".into())),
            ServerLine::Answer(Tag::new("x").unwrap(), Answer::NoDomain),
        ] {
            let bytes = server_bytes(&line);
            assert_eq!(parse_server(&bytes[..bytes.len() - 2]), Ok(line));
        }
        assert!(parse_server(b"1 DENIED extra").is_err());
        assert!(parse_server(b"1 FOUND a@b k=1 k=2").is_err());
        assert!(parse_server(b"* TIDEGATE-AUTHD").is_err());
    }

    #[test]
    fn a_field_name_with_an_equals_sign_round_trips() {
        let mut record = UserRecord::new("a");
        record.fields.insert("two=s".into(), String::new());
        record.fields.insert("k=".into(), "v=w".into());
        let mut text = String::new();
        push_record(&mut text, &record);
        assert_eq!(text, "a k%3D=v=w two%3Ds");
        let words: Vec<&[u8]> = text.as_bytes().split(|&b| b == b' ').collect();
        assert_eq!(parse_record(&words).unwrap().fields, record.fields);
    }

    #[test]
    fn percent_coding_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut text = String::new();
        push_encoded(&mut text, &all);
        assert!(!text.contains(' '));
        assert_eq!(decode(text.as_bytes()), Some(all));
        assert_eq!(decode(b"%zz"), None);
        assert_eq!(decode(b"a b"), None);
    }
}
