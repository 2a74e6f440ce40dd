//! The command grammar (RFC 3501 §9 and the extensions' ABNF) in nom, on complete input.

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take, take_while, take_while1};
use nom::combinator::{all_consuming, map, map_opt, opt, value, verify};
use nom::multi::{many1, separated_list0, separated_list1};
use nom::sequence::{delimited, preceded, separated_pair, terminated};
use nom::{IResult, Parser};

use super::{Command, CommandBody, MAX_TAG_LEN, ParseError, StatusItem, StoreMode};
use crate::imap::date::{self, Date};
use crate::imap::fetch::{FetchAttribute, Section, SectionText};
use crate::imap::mailbox;
use crate::imap::response::is_atom_char;
use crate::imap::search::{MAX_DEPTH, SearchKey};
use crate::imap::sequence::{MAX_RANGES, SeqNumber, SequenceSet};
use crate::secret::Secret;

type Res<'a, T> = IResult<&'a [u8], T>;

/// Parses one complete command (without its final CRLF).
pub fn parse(input: &[u8]) -> Result<Command, ParseError> {
    let Ok((rest, tag)) = command_tag(input) else {
        return Err(ParseError {
            tag: None,
            reason: "Missing or invalid tag",
        });
    };
    let fail = |reason| ParseError {
        tag: Some(tag.clone()),
        reason,
    };
    let rest = rest.strip_prefix(b" ").ok_or(fail("Missing command"))?;
    let (args, name) = atom(rest).map_err(|_| fail("Missing command"))?;
    let name = name.to_ascii_uppercase();
    let (args, name, uid) = if name == b"UID" {
        let args = args.strip_prefix(b" ").ok_or(fail("UID needs a command"))?;
        let (args, sub) = atom(args).map_err(|_| fail("UID needs a command"))?;
        (args, sub.to_ascii_uppercase(), true)
    } else {
        (args, name, false)
    };
    let body = match command_body(&name, uid, args) {
        Some(Ok((_, body))) => body,
        Some(Err(_)) => return Err(fail("Syntax error in arguments")),
        None => return Err(fail("Unknown command")),
    };
    Ok(Command { tag, body })
}

fn command_tag(input: &[u8]) -> Res<'_, String> {
    map(
        verify(
            take_while1(|b| is_astring_char(b) && b != b'+'),
            |t: &[u8]| t.len() <= MAX_TAG_LEN,
        ),
        |t: &[u8]| String::from_utf8_lossy(t).into_owned(),
    )
    .parse(input)
}

/// The parser for the arguments of `name` (after the name itself), or `None` for an
/// unknown command.
fn command_body<'a>(name: &[u8], uid: bool, args: &'a [u8]) -> Option<Res<'a, CommandBody>> {
    use CommandBody as C;
    let none = |body: CommandBody| {
        if args.is_empty() {
            Ok((args, body))
        } else {
            fail(args)
        }
    };
    let result = match (name, uid) {
        (b"CAPABILITY", false) => none(C::Capability),
        (b"NOOP", false) => none(C::Noop),
        (b"LOGOUT", false) => none(C::Logout),
        (b"STARTTLS", false) => none(C::StartTls),
        (b"CHECK", false) => none(C::Check),
        (b"CLOSE", false) => none(C::Close),
        (b"UNSELECT", false) => none(C::Unselect),
        (b"EXPUNGE", false) => none(C::Expunge(None)),
        (b"IDLE", false) => none(C::Idle),
        (b"NAMESPACE", false) => none(C::Namespace),
        (b"AUTHENTICATE", false) => all_consuming(authenticate).parse(args),
        (b"LOGIN", false) => all_consuming(login).parse(args),
        (b"SELECT", false) => one_mailbox(args, C::Select),
        (b"EXAMINE", false) => one_mailbox(args, C::Examine),
        (b"CREATE", false) => one_mailbox(args, C::Create),
        (b"DELETE", false) => one_mailbox(args, C::Delete),
        (b"SUBSCRIBE", false) => one_mailbox(args, C::Subscribe),
        (b"UNSUBSCRIBE", false) => one_mailbox(args, C::Unsubscribe),
        (b"RENAME", false) => all_consuming(map(
            (preceded(sp, mailbox_name), preceded(sp, mailbox_name)),
            |(a, b)| C::Rename(a, b),
        ))
        .parse(args),
        (b"LIST", false) => all_consuming(|i| list(i, false)).parse(args),
        (b"LSUB", false) => all_consuming(|i| list(i, true)).parse(args),
        (b"STATUS", false) => all_consuming(status).parse(args),
        (b"ENABLE", false) => all_consuming(map(
            preceded(sp, separated_list1(sp, atom)),
            |caps: Vec<&[u8]>| {
                C::Enable(
                    caps.iter()
                        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
                        .collect(),
                )
            },
        ))
        .parse(args),
        (b"ID", false) => all_consuming(id).parse(args),
        (b"EXPUNGE", true) => {
            all_consuming(map(preceded(sp, sequence_set), |s| C::Expunge(Some(s)))).parse(args)
        }
        (b"SEARCH", uid) => all_consuming(|i| search(i, uid)).parse(args),
        (b"FETCH", uid) => all_consuming(|i| fetch(i, uid)).parse(args),
        (b"STORE", uid) => all_consuming(|i| store(i, uid)).parse(args),
        (b"COPY", uid) => all_consuming(|i| copy(i, uid, false)).parse(args),
        (b"MOVE", uid) => all_consuming(|i| copy(i, uid, true)).parse(args),
        // The session handles APPEND before the grammar sees it; reaching here means
        // its arguments did not parse (RFC 3501 §6.3.11).
        (b"APPEND", false) => fail(args),
        _ => return None,
    };
    Some(result)
}

// ---------------------------------------------------------------------------------------
// Basic rules (RFC 3501 §9)
// ---------------------------------------------------------------------------------------

fn sp(i: &[u8]) -> Res<'_, ()> {
    value((), tag(&b" "[..])).parse(i)
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn atom(i: &[u8]) -> Res<'_, &[u8]> {
    take_while1(is_atom_char).parse(i)
}

fn number(i: &[u8]) -> Res<'_, u32> {
    map_opt(take_while1(|b: u8| b.is_ascii_digit()), |d: &[u8]| {
        d.iter().try_fold(0u32, |acc, &c| {
            acc.checked_mul(10)?.checked_add(u32::from(c - b'0'))
        })
    })
    .parse(i)
}

fn nz_number(i: &[u8]) -> Res<'_, u32> {
    verify(number, |n| *n != 0).parse(i)
}

/// `quoted`: `"` chars with `\"` and `\\` escapes `"`. 8-bit bytes are accepted (UTF-8
/// from clients that assume RFC 6855), CR, LF and NUL are not.
fn quoted(i: &[u8]) -> Res<'_, Vec<u8>> {
    let (mut rest, _) = tag(&b"\""[..]).parse(i)?;
    let mut out = Vec::new();
    loop {
        match rest.split_first() {
            Some((b'"', tail)) => return Ok((tail, out)),
            Some((b'\\', tail)) => match tail.split_first() {
                Some((&c @ (b'"' | b'\\'), tail)) => {
                    out.push(c);
                    rest = tail;
                }
                _ => return fail(rest),
            },
            Some((&c, tail)) if c != b'\r' && c != b'\n' && c != 0 => {
                out.push(c);
                rest = tail;
            }
            _ => return fail(rest),
        }
    }
}

fn fail<T>(i: &[u8]) -> Res<'_, T> {
    Err(nom::Err::Error(nom::error::Error::new(
        i,
        nom::error::ErrorKind::Verify,
    )))
}

/// `literal`: `{n}` or `{n+}`, CRLF, then n bytes (the session put them in place).
fn literal(i: &[u8]) -> Res<'_, Vec<u8>> {
    let (i, n) = delimited(
        tag(&b"{"[..]),
        terminated(number, opt(tag(&b"+"[..]))),
        tag(&b"}\r\n"[..]),
    )
    .parse(i)?;
    let (i, bytes) = take(n as usize).parse(i)?;
    Ok((i, bytes.to_vec()))
}

fn string(i: &[u8]) -> Res<'_, Vec<u8>> {
    alt((quoted, literal)).parse(i)
}

fn astring(i: &[u8]) -> Res<'_, Vec<u8>> {
    alt((map(take_while1(is_astring_char), <[u8]>::to_vec), string)).parse(i)
}

fn nstring(i: &[u8]) -> Res<'_, Option<Vec<u8>>> {
    alt((value(None, tag_no_case(&b"NIL"[..])), map(string, Some))).parse(i)
}

fn utf8(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok()
}

fn mailbox_name(i: &[u8]) -> Res<'_, String> {
    map_opt(astring, |raw| mailbox::decode(&raw).map(mailbox::canonical)).parse(i)
}

fn one_mailbox(args: &[u8], make: fn(String) -> CommandBody) -> Res<'_, CommandBody> {
    all_consuming(map(preceded(sp, mailbox_name), make)).parse(args)
}

fn flag(i: &[u8]) -> Res<'_, String> {
    map(
        alt((nom::combinator::recognize((tag(&b"\\"[..]), atom)), atom)),
        |f: &[u8]| String::from_utf8_lossy(f).into_owned(),
    )
    .parse(i)
}

fn flag_list(i: &[u8]) -> Res<'_, Vec<String>> {
    delimited(tag(&b"("[..]), separated_list0(sp, flag), tag(&b")"[..])).parse(i)
}

fn seq_number(i: &[u8]) -> Res<'_, SeqNumber> {
    alt((
        value(SeqNumber::Last, tag(&b"*"[..])),
        map(nz_number, SeqNumber::Value),
    ))
    .parse(i)
}

fn sequence_set(i: &[u8]) -> Res<'_, SequenceSet> {
    let range = map(
        (seq_number, opt(preceded(tag(&b":"[..]), seq_number))),
        |(a, b)| (a, b.unwrap_or(a)),
    );
    map(
        verify(separated_list1(tag(&b","[..]), range), |r: &Vec<_>| {
            r.len() <= MAX_RANGES
        }),
        SequenceSet,
    )
    .parse(i)
}

fn date(i: &[u8]) -> Res<'_, Date> {
    let text = take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'-');
    map_opt(
        alt((
            delimited(tag(&b"\""[..]), text, tag(&b"\""[..])),
            take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'-'),
        )),
        date::parse_date,
    )
    .parse(i)
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

fn authenticate(i: &[u8]) -> Res<'_, CommandBody> {
    map(
        (
            preceded(sp, atom),
            opt(preceded(
                sp,
                take_while1(|b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')),
            )),
        ),
        |(mechanism, initial): (&[u8], Option<&[u8]>)| CommandBody::Authenticate {
            mechanism: String::from_utf8_lossy(mechanism).to_ascii_uppercase(),
            initial: initial.map(Secret::new),
        },
    )
    .parse(i)
}

fn login(i: &[u8]) -> Res<'_, CommandBody> {
    map(
        (preceded(sp, map_opt(astring, utf8)), preceded(sp, astring)),
        |(user, password)| CommandBody::Login {
            user,
            password: Secret::new(password),
        },
    )
    .parse(i)
}

fn list_mailbox(i: &[u8]) -> Res<'_, String> {
    let list_char = |b: u8| is_astring_char(b) || b == b'%' || b == b'*';
    map_opt(
        alt((map(take_while1(list_char), <[u8]>::to_vec), string)),
        |raw| mailbox::decode(&raw),
    )
    .parse(i)
}

fn list(i: &[u8], subscribed: bool) -> Res<'_, CommandBody> {
    map(
        (preceded(sp, list_mailbox), preceded(sp, list_mailbox)),
        move |(reference, pattern)| CommandBody::List {
            reference,
            pattern,
            subscribed,
        },
    )
    .parse(i)
}

fn status(i: &[u8]) -> Res<'_, CommandBody> {
    let item = alt((
        value(StatusItem::Messages, tag_no_case(&b"MESSAGES"[..])),
        value(StatusItem::Recent, tag_no_case(&b"RECENT"[..])),
        value(StatusItem::UidNext, tag_no_case(&b"UIDNEXT"[..])),
        value(StatusItem::UidValidity, tag_no_case(&b"UIDVALIDITY"[..])),
        value(StatusItem::Unseen, tag_no_case(&b"UNSEEN"[..])),
    ));
    map(
        separated_pair(
            preceded(sp, mailbox_name),
            sp,
            delimited(tag(&b"("[..]), separated_list1(sp, item), tag(&b")"[..])),
        ),
        |(mailbox, items)| CommandBody::Status(mailbox, items),
    )
    .parse(i)
}

fn id(i: &[u8]) -> Res<'_, CommandBody> {
    let pair = separated_pair(
        map_opt(string, utf8),
        sp,
        map(nstring, |v| v.and_then(utf8)),
    );
    let params = alt((
        value(Vec::new(), tag_no_case(&b"NIL"[..])),
        delimited(tag(&b"("[..]), separated_list0(sp, pair), tag(&b")"[..])),
    ));
    map(
        preceded(sp, verify(params, |p: &Vec<_>| p.len() <= 30)),
        CommandBody::Id,
    )
    .parse(i)
}

fn copy(i: &[u8], uid: bool, remove: bool) -> Res<'_, CommandBody> {
    map(
        (preceded(sp, sequence_set), preceded(sp, mailbox_name)),
        move |(set, mailbox)| CommandBody::Copy {
            uid,
            set,
            mailbox,
            remove,
        },
    )
    .parse(i)
}

fn store(i: &[u8], uid: bool) -> Res<'_, CommandBody> {
    let mode = alt((
        value(StoreMode::Add, tag(&b"+"[..])),
        value(StoreMode::Remove, tag(&b"-"[..])),
        value(StoreMode::Replace, tag(&b""[..])),
    ));
    let flags = alt((flag_list, separated_list1(sp, flag)));
    map(
        (
            preceded(sp, sequence_set),
            preceded(sp, mode),
            tag_no_case(&b"FLAGS"[..]),
            opt(tag_no_case(&b".SILENT"[..])),
            preceded(sp, flags),
        ),
        move |(set, mode, _, silent, flags)| CommandBody::Store {
            uid,
            set,
            mode,
            silent: silent.is_some(),
            flags,
        },
    )
    .parse(i)
}

fn fetch(i: &[u8], uid: bool) -> Res<'_, CommandBody> {
    let items = alt((
        value(FetchAttribute::all(), tag_no_case(&b"ALL"[..])),
        value(FetchAttribute::full(), tag_no_case(&b"FULL"[..])),
        value(FetchAttribute::fast(), tag_no_case(&b"FAST"[..])),
        map(fetch_att, |a| vec![a]),
        delimited(
            tag(&b"("[..]),
            separated_list1(sp, fetch_att),
            tag(&b")"[..]),
        ),
    ));
    map(
        (preceded(sp, sequence_set), preceded(sp, items)),
        move |(set, items)| CommandBody::Fetch { uid, set, items },
    )
    .parse(i)
}

fn fetch_att(i: &[u8]) -> Res<'_, FetchAttribute> {
    use FetchAttribute as F;
    alt((
        value(F::Envelope, tag_no_case(&b"ENVELOPE"[..])),
        value(F::Flags, tag_no_case(&b"FLAGS"[..])),
        value(F::InternalDate, tag_no_case(&b"INTERNALDATE"[..])),
        value(F::Rfc822Header, tag_no_case(&b"RFC822.HEADER"[..])),
        value(F::Rfc822Size, tag_no_case(&b"RFC822.SIZE"[..])),
        value(F::Rfc822Text, tag_no_case(&b"RFC822.TEXT"[..])),
        value(F::Rfc822, tag_no_case(&b"RFC822"[..])),
        value(F::BodyStructure, tag_no_case(&b"BODYSTRUCTURE"[..])),
        value(F::Uid, tag_no_case(&b"UID"[..])),
        map(
            (
                alt((
                    value(true, tag_no_case(&b"BODY.PEEK"[..])),
                    value(false, tag_no_case(&b"BODY"[..])),
                )),
                section,
                opt(partial),
            ),
            |(peek, section, partial)| F::Section {
                peek,
                section,
                partial,
            },
        ),
        value(F::Body, tag_no_case(&b"BODY"[..])),
    ))
    .parse(i)
}

fn partial(i: &[u8]) -> Res<'_, (u32, u32)> {
    delimited(
        tag(&b"<"[..]),
        separated_pair(number, tag(&b"."[..]), nz_number),
        tag(&b">"[..]),
    )
    .parse(i)
}

fn header_list(i: &[u8]) -> Res<'_, Vec<String>> {
    delimited(
        tag(&b"("[..]),
        separated_list1(sp, map_opt(astring, utf8)),
        tag(&b")"[..]),
    )
    .parse(i)
}

fn section_text(i: &[u8]) -> Res<'_, SectionText> {
    alt((
        map(
            preceded(tag_no_case(&b"HEADER.FIELDS.NOT "[..]), header_list),
            SectionText::HeaderFieldsNot,
        ),
        map(
            preceded(tag_no_case(&b"HEADER.FIELDS "[..]), header_list),
            SectionText::HeaderFields,
        ),
        value(SectionText::Header, tag_no_case(&b"HEADER"[..])),
        value(SectionText::Text, tag_no_case(&b"TEXT"[..])),
        value(SectionText::Mime, tag_no_case(&b"MIME"[..])),
    ))
    .parse(i)
}

fn section(i: &[u8]) -> Res<'_, Section> {
    let parts = verify(
        separated_list1(tag(&b"."[..]), nz_number),
        |p: &Vec<u32>| p.len() <= 64,
    );
    let spec = alt((
        map(
            (parts, opt(preceded(tag(&b"."[..]), section_text))),
            |(part, text)| Section { part, text },
        ),
        map(verify(section_text, |t| *t != SectionText::Mime), |text| {
            Section {
                part: Vec::new(),
                text: Some(text),
            }
        }),
    ));
    map(
        delimited(tag(&b"["[..]), opt(spec), tag(&b"]"[..])),
        Option::unwrap_or_default,
    )
    .parse(i)
}

fn search(i: &[u8], uid: bool) -> Res<'_, CommandBody> {
    let charset = opt(preceded(
        (sp, tag_no_case(&b"CHARSET"[..]), sp),
        map(astring, |c| {
            String::from_utf8_lossy(&c).to_ascii_uppercase()
        }),
    ));
    map(
        (charset, many1(preceded(sp, |i| search_key(i, 0)))),
        move |(charset, keys)| CommandBody::Search {
            uid,
            charset,
            key: SearchKey::And(keys),
        },
    )
    .parse(i)
}

fn search_string(i: &[u8]) -> Res<'_, String> {
    map_opt(astring, utf8).parse(i)
}

fn search_key(i: &[u8], depth: usize) -> Res<'_, SearchKey> {
    use SearchKey as K;
    if depth > MAX_DEPTH {
        return fail(i);
    }
    let (rest, word) = match atom(i) {
        Ok(ok) => ok,
        Err(_) => {
            // A parenthesised list, or a sequence set starting with `*`.
            if i.first() == Some(&b'(') {
                return map(
                    delimited(
                        tag(&b"("[..]),
                        separated_list1(sp, |i| search_key(i, depth + 1)),
                        tag(&b")"[..]),
                    ),
                    K::And,
                )
                .parse(i);
            }
            return map(sequence_set, K::Sequence).parse(i);
        }
    };
    let upper = word.to_ascii_uppercase();
    let next = |i| search_key(i, depth + 1);
    let arg_string =
        |make: fn(String) -> SearchKey| move |i| map(preceded(sp, search_string), make).parse(i);
    let arg_date = |make: fn(Date) -> SearchKey| move |i| map(preceded(sp, date), make).parse(i);
    match upper.as_slice() {
        b"ALL" => Ok((rest, K::All)),
        b"ANSWERED" => Ok((rest, K::Answered)),
        b"DELETED" => Ok((rest, K::Deleted)),
        b"DRAFT" => Ok((rest, K::Draft)),
        b"FLAGGED" => Ok((rest, K::Flagged)),
        b"NEW" => Ok((rest, K::New)),
        b"OLD" => Ok((rest, K::Old)),
        b"RECENT" => Ok((rest, K::Recent)),
        b"SEEN" => Ok((rest, K::Seen)),
        b"UNANSWERED" => Ok((rest, K::Unanswered)),
        b"UNDELETED" => Ok((rest, K::Undeleted)),
        b"UNDRAFT" => Ok((rest, K::Undraft)),
        b"UNFLAGGED" => Ok((rest, K::Unflagged)),
        b"UNSEEN" => Ok((rest, K::Unseen)),
        b"BCC" => arg_string(K::Bcc)(rest),
        b"BODY" => arg_string(K::Body)(rest),
        b"CC" => arg_string(K::Cc)(rest),
        b"FROM" => arg_string(K::From)(rest),
        b"SUBJECT" => arg_string(K::Subject)(rest),
        b"TEXT" => arg_string(K::Text)(rest),
        b"TO" => arg_string(K::To)(rest),
        b"KEYWORD" => map(preceded(sp, atom_string), K::Keyword).parse(rest),
        b"UNKEYWORD" => map(preceded(sp, atom_string), K::Unkeyword).parse(rest),
        b"BEFORE" => arg_date(K::Before)(rest),
        b"ON" => arg_date(K::On)(rest),
        b"SINCE" => arg_date(K::Since)(rest),
        b"SENTBEFORE" => arg_date(K::SentBefore)(rest),
        b"SENTON" => arg_date(K::SentOn)(rest),
        b"SENTSINCE" => arg_date(K::SentSince)(rest),
        b"LARGER" => map(preceded(sp, number), K::Larger).parse(rest),
        b"SMALLER" => map(preceded(sp, number), K::Smaller).parse(rest),
        b"UID" => map(preceded(sp, sequence_set), K::Uid).parse(rest),
        b"HEADER" => map(
            (preceded(sp, search_string), preceded(sp, search_string)),
            |(name, value)| K::Header(name, value),
        )
        .parse(rest),
        b"NOT" => map(preceded(sp, next), |k| K::Not(Box::new(k))).parse(rest),
        b"OR" => map((preceded(sp, next), preceded(sp, next)), |(a, b)| {
            K::Or(Box::new(a), Box::new(b))
        })
        .parse(rest),
        _ => map(sequence_set, K::Sequence).parse(i),
    }
}

fn atom_string(i: &[u8]) -> Res<'_, String> {
    map(atom, |a: &[u8]| String::from_utf8_lossy(a).into_owned()).parse(i)
}

// ---------------------------------------------------------------------------------------
// APPEND
// ---------------------------------------------------------------------------------------

/// The part of an APPEND command before its message literal (RFC 3501 §6.3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendPrefix {
    /// The tag.
    pub tag: String,
    /// The target mailbox.
    pub mailbox: String,
    /// Flags to set on the message.
    pub flags: Vec<String>,
    /// The internal date (Unix seconds, zone minutes), if given.
    pub date: Option<(i64, i32)>,
}

/// Recognises `tag APPEND mailbox [flags] [date-time] {n}` (or `{n+}`) where the
/// announced literal, at the very end of `input`, is the message. `None` when `input`
/// is not such a command (another command, or a literal in the mailbox name).
pub fn parse_append_prefix(input: &[u8]) -> Option<AppendPrefix> {
    let (rest, command) = command_tag(input).ok()?;
    let rest = rest.strip_prefix(b" ")?;
    let (rest, _) = tag_no_case::<_, _, nom::error::Error<&[u8]>>(&b"APPEND "[..])
        .parse(rest)
        .ok()?;
    let date_time = map_opt(
        delimited(tag(&b"\""[..]), take_while(|b| b != b'"'), tag(&b"\""[..])),
        date::parse_date_time,
    );
    let announcement = (tag(&b"{"[..]), number, opt(tag(&b"+"[..])), tag(&b"}"[..]));
    let (_, (mailbox, flags, date, _)) = all_consuming((
        mailbox_name,
        opt(preceded(sp, flag_list)),
        opt(preceded(sp, date_time)),
        preceded(sp, announcement),
    ))
    .parse(rest)
    .ok()?;
    Some(AppendPrefix {
        tag: command,
        mailbox,
        flags: flags.unwrap_or_default(),
        date,
    })
}
