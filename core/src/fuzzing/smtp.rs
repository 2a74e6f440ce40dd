//! SMTP and LMTP harnesses: the command parser, DATA/BDAT framing on raw line-buffer
//! bytes, and the session driven by a script of shell events, plain and inside
//! [`Secured`] (STARTTLS).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;

use super::wire::reference_unstuff;
use super::{Chunker, Client, FuzzTls, Script, WIND_DOWN_STEPS, contains};
use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::request::{Account, DeliveryId, Failure, RecipientCheck, Reply, Request};
use crate::smtp::command::{self, Command};
use crate::smtp::{
    MAX_DOMAIN, MAX_LOCAL_PART, MAX_PATH, Param, Path, SmtpConfig, SmtpConnInfo, SmtpLimits,
    SmtpRole, SmtpSession,
};
use crate::tls::Secured;
use crate::wire::{DotUnstuffer, LineBuffer, LineEvent};

// ---------------------------------------------------------------------------------------
// SMTP command parser
// ---------------------------------------------------------------------------------------

/// Fuzzes [`command::parse`] with `line` (one command line, CRLF already removed).
///
/// Invariants:
/// * parsing never panics;
/// * upper-, lower- and alternating-case copies of the verb (the bytes before the first
///   space) parse to the same result;
/// * a parsed MAIL or RCPT path is within the RFC 5321 §4.5.3.1 limits: local part at
///   most [`MAX_LOCAL_PART`] octets, domain at most [`MAX_DOMAIN`], `<address>` at most
///   [`MAX_PATH`]; it is empty only for MAIL's `<>`; its `utf8` flag says whether it is
///   non-ASCII;
/// * nothing a command carries into a reply or a trace header (HELO name, address,
///   parameter, AUTH mechanism and response) contains an ASCII control character (CR,
///   LF, NUL …; RFC 6531 addresses may contain any other UTF-8), and only a quoted
///   local part contains a space;
/// * a parsed command, written back in canonical form (upper-case verb, single spaces,
///   no source route), parses to the same command again.
pub fn smtp_command(line: &[u8]) {
    let parsed = command::parse(line);
    let verb_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    for copy in recased(line, verb_len) {
        assert_eq!(
            command::parse(&copy),
            parsed,
            "verb case changed the parse of {line:?} (copy {copy:?})"
        );
    }
    let Ok(command) = &parsed else { return };
    check_command(command, line);
    let canonical = encode_smtp_command(command);
    assert_eq!(
        command::parse(&canonical).as_ref(),
        Ok(command),
        "{line:?} parsed to {command:?}, whose canonical form {canonical:?} parses differently"
    );
}

/// Upper-, lower- and alternating-case copies of `line` with only its first `n` bytes
/// changed.
fn recased(line: &[u8], n: usize) -> [Vec<u8>; 3] {
    let mut copies = [line.to_vec(), line.to_vec(), line.to_vec()];
    copies[0][..n].make_ascii_uppercase();
    copies[1][..n].make_ascii_lowercase();
    for (i, b) in copies[2][..n].iter_mut().enumerate() {
        if i % 2 == 0 {
            b.make_ascii_lowercase();
        } else {
            b.make_ascii_uppercase();
        }
    }
    copies
}

/// The checks of [`smtp_command`] on one parsed command.
fn check_command(command: &Command, line: &[u8]) {
    let no_controls = |what: &str, text: &str| {
        assert!(
            !text.chars().any(|c| c.is_ascii_control()),
            "{what} {text:?} from {line:?} contains a control character"
        );
    };
    match command {
        Command::Helo(name) | Command::Ehlo(name) | Command::Lhlo(name) => {
            assert!(
                !name.is_empty() && name.len() <= MAX_DOMAIN && name.is_ascii(),
                "HELO name {name:?} from {line:?}"
            );
            assert!(!name.contains(' '), "HELO name {name:?} has a space");
            no_controls("HELO name", name);
        }
        Command::Mail { path, params } | Command::Rcpt { path, params } => {
            let mail = matches!(command, Command::Mail { .. });
            check_path(path, mail, line);
            for Param { keyword, value } in params {
                assert!(
                    !keyword.is_empty()
                        && keyword
                            .bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-'),
                    "parameter keyword {keyword:?} from {line:?}"
                );
                if let Some(value) = value {
                    assert!(
                        !value.is_empty() && !value.contains([' ', '=']),
                        "parameter value {value:?} from {line:?}"
                    );
                    no_controls("parameter value", value);
                }
            }
        }
        Command::Auth {
            mechanism,
            initial_response,
        } => {
            assert!(
                !mechanism.is_empty()
                    && mechanism.len() <= 20
                    && mechanism
                        .bytes()
                        .all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_')),
                "AUTH mechanism {mechanism:?} from {line:?}"
            );
            if let Some(response) = initial_response {
                let response = response.expose();
                assert!(
                    !response.is_empty() && !response.contains(&b' '),
                    "AUTH response {response:?} from {line:?}"
                );
            }
        }
        Command::Xclient(Ok(x)) => {
            let texts = [&x.helo, &x.name, &x.proto];
            for text in texts.into_iter().flatten() {
                assert!(!text.is_empty(), "empty XCLIENT value from {line:?}");
            }
        }
        Command::Xclient(Err(_))
        | Command::Data
        | Command::Bdat { .. }
        | Command::Rset
        | Command::Noop
        | Command::Quit
        | Command::Vrfy
        | Command::Expn
        | Command::Help
        | Command::StartTls => {}
    }
}

/// RFC 5321 §4.5.3.1 limits and the shape of an accepted path.
fn check_path(path: &Path, mail: bool, line: &[u8]) {
    let address = path.address.as_str();
    assert_eq!(
        path.utf8,
        !address.is_ascii(),
        "utf8 flag of {address:?} from {line:?}"
    );
    assert!(
        !address.chars().any(|c| c.is_ascii_control()),
        "address {address:?} from {line:?} contains a control character"
    );
    if address.is_empty() {
        assert!(mail, "an empty forward-path from {line:?}");
        return;
    }
    if !mail && address.eq_ignore_ascii_case("postmaster") {
        return;
    }
    // A domain never contains `@`; an address literal never contains `@[`, which a
    // quoted local part may.
    let at = if address.ends_with(']') {
        address.rfind("@[")
    } else {
        address.rfind('@')
    };
    let Some(at) = at else {
        panic!("address {address:?} from {line:?} has no domain");
    };
    let (local, domain) = (&address[..at], &address[at + 1..]);
    assert!(
        !local.is_empty() && local.len() <= MAX_LOCAL_PART,
        "local part of {address:?} ({} octets) from {line:?}",
        local.len()
    );
    assert!(
        !domain.is_empty() && domain.len() <= MAX_DOMAIN,
        "domain of {address:?} ({} octets) from {line:?}",
        domain.len()
    );
    assert!(
        address.len() + 2 <= MAX_PATH,
        "<{address}> is over {MAX_PATH} octets (from {line:?})"
    );
    if !local.starts_with('"') {
        assert!(!local.contains(' '), "unquoted local part with a space");
    }
    assert!(!domain.contains(' '), "domain {domain:?} with a space");
}

/// The canonical command line for `command`.
fn encode_smtp_command(command: &Command) -> Vec<u8> {
    fn path_line(head: &str, path: &Path, params: &[Param]) -> Vec<u8> {
        let mut line = format!("{head}<{}>", path.address);
        for Param { keyword, value } in params {
            line.push(' ');
            line.push_str(keyword);
            if let Some(value) = value {
                line.push('=');
                line.push_str(value);
            }
        }
        line.into_bytes()
    }
    match command {
        Command::Helo(name) => format!("HELO {name}").into_bytes(),
        Command::Ehlo(name) => format!("EHLO {name}").into_bytes(),
        Command::Lhlo(name) => format!("LHLO {name}").into_bytes(),
        Command::Mail { path, params } => path_line("MAIL FROM:", path, params),
        Command::Rcpt { path, params } => path_line("RCPT TO:", path, params),
        Command::Data => b"DATA".to_vec(),
        Command::Bdat { size, last } => {
            format!("BDAT {size}{}", if *last { " LAST" } else { "" }).into_bytes()
        }
        Command::Rset => b"RSET".to_vec(),
        Command::Noop => b"NOOP".to_vec(),
        Command::Quit => b"QUIT".to_vec(),
        Command::Vrfy => b"VRFY someone".to_vec(),
        Command::Expn => b"EXPN".to_vec(),
        Command::Help => b"HELP".to_vec(),
        Command::StartTls => b"STARTTLS".to_vec(),
        Command::Auth {
            mechanism,
            initial_response,
        } => {
            let mut line = format!("AUTH {mechanism}").into_bytes();
            if let Some(response) = initial_response {
                line.push(b' ');
                line.extend_from_slice(response.expose());
            }
            line
        }
        Command::Xclient(parsed) => encode_xclient(parsed),
    }
}

/// A canonical XCLIENT line that parses to `parsed` again (shared with the POP3
/// grammar target): the encoder's own line, or a small line that fails the same way.
pub(crate) fn encode_xclient(
    parsed: &Result<crate::proxy::xclient::Xclient, crate::proxy::xclient::XclientError>,
) -> Vec<u8> {
    use crate::proxy::xclient::{self, Xclient, XclientError};
    match parsed {
        // Only ignored or unavailable attributes: say so with one of them.
        Ok(x) if *x == Xclient::default() => b"XCLIENT ADDR=[UNAVAILABLE]".to_vec(),
        Ok(x) => xclient::encode(x).into_bytes(),
        Err(XclientError::Syntax) => b"XCLIENT".to_vec(),
        Err(XclientError::UnknownAttribute) => b"XCLIENT FOO=1".to_vec(),
        Err(XclientError::BadValue) => b"XCLIENT ADDR=nonsense".to_vec(),
        Err(XclientError::TooLong) => {
            let mut line = b"XCLIENT HELO=".to_vec();
            line.resize(xclient::MAX_LINE + 1, b'a');
            line
        }
    }
}

// ---------------------------------------------------------------------------------------
// DATA and BDAT framing
// ---------------------------------------------------------------------------------------

/// What the framer of [`smtp_data`] found in the client's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// A command line (CRLF removed).
    Line(Vec<u8>),
    /// A line over the limit.
    TooLong,
    /// A complete DATA message: its unstuffed bytes and where its raw bytes start (just
    /// after the DATA line) and end (just after the `.` line), as stream offsets.
    Message {
        data: Vec<u8>,
        start: usize,
        end: usize,
    },
    /// A complete BDAT chunk.
    Chunk { data: Vec<u8>, last: bool },
}

/// Where the framer of [`smtp_data`] stands when the input runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tail {
    /// Between commands (possibly inside an unfinished line).
    Lines,
    /// Inside DATA: the bytes unstuffed so far.
    Data { data: Vec<u8>, start: usize },
    /// Inside a BDAT chunk: its bytes so far and the octets still owed.
    Bdat {
        data: Vec<u8>,
        remaining: u64,
        last: bool,
    },
}

/// Fuzzes the SMTP session's message framing: [`DotUnstuffer`] on [`LineBuffer::raw`]
/// bytes for DATA and octet counting for BDAT, switching between command lines and raw
/// data exactly as `SmtpSession` does (take a line with [`LineBuffer::next_line`]; after
/// `DATA` or `BDAT n`, unstuff or count [`LineBuffer::raw`] and
/// [`LineBuffer::consume`] what was used; back to lines at the end marker or count).
///
/// Layout: `data[0]` below 128 sets `max_line` to 16 + `data[0] % 64`, otherwise it is
/// 1000; `data[1]` sets the largest chunk (1 to 64 bytes) and, with `data[2]`, seeds the
/// chunk sizes and how much raw input each step may take (the session's room before the
/// next append); the rest is what the client sends. Commands are recognised with
/// [`command::parse`]; every other command is just a line.
///
/// Invariants, for one push of everything, random chunks processed after every push,
/// and random chunks processed only sometimes (input piling up while the session waits
/// for the store), each step taking a random amount of raw input:
/// * every run gives the same frames and the same final state, equal to a reference
///   framer over the whole input (lines end at LF, one CR before it removed; DATA
///   decoded by the obvious line-based unstuffer; BDAT takes exactly its count);
/// * a DATA message ends only after CRLF `.` CRLF in the raw input: its raw bytes are
///   `.` CRLF alone or end with CRLF `.` CRLF;
/// * a message is never longer than the raw bytes it was decoded from, and the
///   unstuffer never stops early without the end marker;
/// * while raw data is read the line buffer is not discarding an overlong line (raw
///   access only ever follows a complete line).
pub fn smtp_data(data: &[u8]) {
    let [max_line, chunking, seed, input @ ..] = data else {
        return;
    };
    let max_line = if *max_line < 128 {
        16 + usize::from(max_line % 64)
    } else {
        1000
    };
    let max_chunk = 1 + usize::from(chunking % 64);
    let mut chunker = Chunker::new(u16::from_le_bytes([*chunking, *seed]), max_chunk);

    let expected = reference_frames(input, max_line);
    for frame in &expected.0 {
        if let Frame::Message { data, start, end } = frame {
            check_message_end(input, data, *start, *end);
        }
    }

    let mut whole = Framer::new(max_line);
    whole.push(input);
    whole.process(&mut || usize::MAX);
    assert_eq!(
        whole.result(),
        expected,
        "one push of {input:?}, max_line {max_line}"
    );

    let mut chunked = Framer::new(max_line);
    let mut rooms = Chunker::new(u16::from_le_bytes([*seed, *chunking]), max_chunk);
    for chunk in chunker.split(input) {
        chunked.push(chunk);
        chunked.process(&mut || rooms.chunk_len());
    }
    assert_eq!(
        chunked.result(),
        expected,
        "chunked push of {input:?}, max_line {max_line}"
    );

    let mut lazy = Framer::new(max_line);
    for chunk in chunker.split(input) {
        lazy.push(chunk);
        if chunker.coin() {
            lazy.process(&mut || rooms.chunk_len());
        }
    }
    lazy.process(&mut || rooms.chunk_len());
    assert_eq!(
        lazy.result(),
        expected,
        "lazily processed push of {input:?}"
    );
}

/// The smuggling check: a DATA message whose raw bytes are `input[start..end]` ended
/// only at CRLF `.` CRLF, and decoded to no more bytes than it used.
fn check_message_end(input: &[u8], data: &[u8], start: usize, end: usize) {
    let raw = &input[start..end];
    assert!(
        raw == b".\r\n" || (raw.len() >= 5 && raw.ends_with(b"\r\n.\r\n")),
        "DATA ended at offset {end} without CRLF.CRLF: {raw:?}"
    );
    assert!(
        data.len() <= raw.len(),
        "{} message bytes from {} raw bytes",
        data.len(),
        raw.len()
    );
}

/// The framing state machine of [`smtp_data`], as `SmtpSession` drives [`LineBuffer`].
struct Framer {
    lines: LineBuffer,
    /// Bytes pushed so far: `lines.raw()` ends at this stream offset.
    pushed: usize,
    mode: Mode,
    frames: Vec<Frame>,
}

enum Mode {
    Lines,
    Data {
        unstuffer: DotUnstuffer,
        out: BytesMut,
        start: usize,
        consumed: usize,
    },
    Bdat {
        out: Vec<u8>,
        remaining: u64,
        last: bool,
    },
}

impl Framer {
    fn new(max_line: usize) -> Self {
        Framer {
            lines: LineBuffer::new(max_line),
            pushed: 0,
            mode: Mode::Lines,
            frames: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
        self.pushed += bytes.len();
    }

    /// Processes everything buffered; each raw step takes at most `room()` bytes.
    fn process(&mut self, room: &mut dyn FnMut() -> usize) {
        while self.step(room) {}
    }

    fn step(&mut self, room: &mut dyn FnMut() -> usize) -> bool {
        if !matches!(self.mode, Mode::Lines) {
            assert_eq!(
                self.lines.raw().len(),
                self.lines.buffered(),
                "raw data is being read while the line buffer discards a line"
            );
        }
        let raw_start = self.pushed - self.lines.raw().len();
        match &mut self.mode {
            Mode::Lines => match self.lines.next_line() {
                None => return false,
                Some(LineEvent::TooLong) => self.frames.push(Frame::TooLong),
                Some(LineEvent::Line(line)) => {
                    self.mode = match command::parse(&line) {
                        Ok(Command::Data) => Mode::Data {
                            unstuffer: DotUnstuffer::new(),
                            out: BytesMut::new(),
                            start: self.pushed - self.lines.raw().len(),
                            consumed: 0,
                        },
                        Ok(Command::Bdat { size, last }) => Mode::Bdat {
                            out: Vec::new(),
                            remaining: size,
                            last,
                        },
                        _ => Mode::Lines,
                    };
                    self.frames.push(Frame::Line(line.to_vec()));
                }
            },
            Mode::Data {
                unstuffer,
                out,
                start,
                consumed,
            } => {
                let raw = self.lines.raw();
                if raw.is_empty() {
                    return false;
                }
                assert_eq!(
                    raw_start,
                    *start + *consumed,
                    "raw bytes skipped or repeated"
                );
                let n = raw.len().min(room().max(1));
                let progress = unstuffer.unstuff(&raw[..n], out);
                assert!(progress.consumed <= n);
                assert!(
                    progress.done || progress.consumed == n,
                    "the unstuffer stopped early without the end marker"
                );
                *consumed += progress.consumed;
                assert!(
                    out.len() <= *consumed,
                    "{} bytes unstuffed from {consumed}",
                    out.len()
                );
                self.lines.consume(progress.consumed);
                if progress.done {
                    let frame = Frame::Message {
                        data: out.to_vec(),
                        start: *start,
                        end: *start + *consumed,
                    };
                    self.frames.push(frame);
                    self.mode = Mode::Lines;
                }
            }
            Mode::Bdat {
                out,
                remaining,
                last,
            } => {
                if *remaining == 0 {
                    let frame = Frame::Chunk {
                        data: std::mem::take(out),
                        last: *last,
                    };
                    self.frames.push(frame);
                    self.mode = Mode::Lines;
                    return true;
                }
                let raw = self.lines.raw();
                if raw.is_empty() {
                    return false;
                }
                let wanted = usize::try_from(*remaining).unwrap_or(usize::MAX);
                let n = wanted.min(room().max(1)).min(raw.len());
                out.extend_from_slice(&raw[..n]);
                *remaining -= n as u64;
                self.lines.consume(n);
            }
        }
        true
    }

    fn result(&self) -> (Vec<Frame>, Tail) {
        let tail = match &self.mode {
            Mode::Lines => Tail::Lines,
            Mode::Data { out, start, .. } => Tail::Data {
                data: out.to_vec(),
                start: *start,
            },
            Mode::Bdat {
                out,
                remaining,
                last,
            } => Tail::Bdat {
                data: out.clone(),
                remaining: *remaining,
                last: *last,
            },
        };
        (self.frames.clone(), tail)
    }
}

/// The obvious framer over the whole input, as the oracle for [`Framer`].
fn reference_frames(input: &[u8], max_line: usize) -> (Vec<Frame>, Tail) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &input[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            return (frames, Tail::Lines);
        };
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += lf + 1;
        if line.len() > max_line {
            frames.push(Frame::TooLong);
            continue;
        }
        frames.push(Frame::Line(line.to_vec()));
        match command::parse(line) {
            Ok(Command::Data) => {
                let start = pos;
                match reference_unstuff(&input[start..]) {
                    (data, Some(n)) => {
                        frames.push(Frame::Message {
                            data,
                            start,
                            end: start + n,
                        });
                        pos = start + n;
                    }
                    (data, None) => return (frames, Tail::Data { data, start }),
                }
            }
            Ok(Command::Bdat { size, last }) => {
                let available = input.len() - pos;
                let n = usize::try_from(size).unwrap_or(usize::MAX).min(available);
                let data = input[pos..pos + n].to_vec();
                pos += n;
                if (n as u64) < size {
                    let remaining = size - n as u64;
                    return (
                        frames,
                        Tail::Bdat {
                            data,
                            remaining,
                            last,
                        },
                    );
                }
                frames.push(Frame::Chunk { data, last });
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// SMTP session
// ---------------------------------------------------------------------------------------

/// The longest reply line that names an address, CRLF included: the longest reply text
/// (the LMTP per-recipient form of the bare-line-end refusal, about 75 octets) plus an
/// address, which is at most [`MAX_PATH`] octets.
const ADDRESS_LINE: usize = 100 + MAX_PATH;

/// Slack in the output bound of [`smtp_session`]; see there for the derivation. It
/// covers the short lines that may follow the high-water mark without a new command:
/// the EHLO answer (about 170 octets) or one reply line, then an AUTH failure and a
/// `421` from timers (about 130 octets).
pub const SMTP_OUTPUT_SLACK: usize = 512;

/// Fuzzes [`SmtpSession`] (RFC 5321 SMTP, RFC 2033 LMTP) driven by a script of shell
/// events.
///
/// `epoch` is the time the connection was accepted (the caller's clock: the core reads
/// none); the script only advances virtual time from it.
///
/// # Input
///
/// `data[0]` chooses the connection: bits 0-1 the role (0 inbound, 1 and 3 submission,
/// 2 LMTP), bit 2 AUTH refused before TLS (`plaintext_auth` off; on otherwise), bit 3
/// STARTTLS available, bit 4 small limits (64-octet command lines, 128-octet AUTH
/// lines, 40-octet text lines, 256 bytes of buffered input, 16-byte appends, 3
/// recipients, 512 bytes of output high water, 200-octet messages) instead of the
/// defaults, bit 6 relaying on (submission accepts `NotLocal` recipients and commits
/// with `CommitSubmission`), bit 7 a 5-second login timeout (60 s otherwise). The rest is a script; each operation is one tag byte, and bytes that are
/// no tag are skipped, so a script can be written by hand with spaces and newlines:
///
/// | op | meaning |
/// | --- | --- |
/// | `>` *line* | the client sends *line* (up to and including the next LF); the shell reads once |
/// | `+` *line* | the client sends *line*; the shell does not read yet (pipelining) |
/// | `-` *line* | the client sends *line* without its LF (a partial line) |
/// | `X` *n* | the client sends (*n* + 1) × 128 bytes of pipelined `NOOP` CRLF |
/// | `Y` *n* | the client sends (*n* + 1) × 128 bytes of `x` (an overlong line) |
/// | `M` *n* | the client sends (*n* + 1) × 128 bytes of message text (CRLF lines, some dot-stuffed, no end marker) |
/// | `R` *n* | the shell reads once, at most *n* + 1 bytes |
/// | `P` | the shell reads until the socket is empty or `wants_read` is false |
/// | `F` | the shell feeds all sent bytes at once, ignoring `wants_read` and [`MAX_READ`] |
/// | `E` | the client shut its sending side (`handle_eof`); it may still read |
/// | `T` *b* | time passes (digits `0`-`9`: 10^d ms; any other byte: *b* seconds), then `handle_timeout` if a deadline passed |
/// | `t` | a spurious `handle_timeout` |
/// | `D` | `handle_drained`: the client read everything |
/// | `A` *k* | the store answers the outstanding request with reply kind *k* (a late reply, as `L`, if none is outstanding) |
/// | `L` *k* | the store answers the newest request the session no longer waits for (given up after its deadline, or fired on the way out); with none, a duplicate reply to the newest answered id |
/// | `O` *k* | the same for the oldest such request |
///
/// Reply kinds *k* fit the request they answer; a byte that is not one of the request's
/// kinds picks one by its value, `o` is always the success:
///
/// | request | kinds |
/// | --- | --- |
/// | `Authenticate` | `a` Authenticated, `d` Denied, `x` Disabled, `t` Temporary, `p` Permanent |
/// | `CheckRecipient` | `l` Local (the account is the lower-cased address), `m` Local (always the same account), `u` Unknown, `n` NotLocal, `q` OverQuota, `Q` Failed(OverQuota), `t`, `p` |
/// | `BeginDelivery` | `s` DeliveryStarted (a fresh id), `t`, `p`, `Q` |
/// | `AppendDelivery` | `o` Done, `t`, `Q`, `p` |
/// | `CommitDelivery`, `CommitSubmission` (one result more, the queue's) | `o` Delivered (all delivered), `v` *b* Delivered with recipient *i* failed when bit *i* % 7 of *b* is set (OverQuota if bit 7 is set, else Temporary), `t` Failed(Temporary), `Q` Failed(OverQuota) |
/// | `AbortDelivery` | `o` Done, `t` |
///
/// # Invariants
///
/// * No panic, whatever the script.
/// * The greeting is a `220`. Every line the session writes ends with CRLF and has no
///   other CR or LF, is at most 512 octets (RFC 5321 §4.5.3.1.5), and starts with a
///   3-digit code from 2xx to 5xx and a space or `-`; the lines of one multi-line reply
///   share the code. Every line of a 2xx, 4xx or 5xx reply carries an RFC 3463
///   enhanced status code of the same class (`2.0.0 `, `4.3.0 `, `5.7.11 ` …), except
///   220 and 221 (greeting class) and the HELO/EHLO/LHLO answer (a 250 reply whose
///   first line is the host name), as RFC 2034 §3 allows. 3xx replies (`354`, `334`)
///   carry none.
/// * After [`Action::Close`] the session emits no action at all, `wants_read` is false
///   and no deadline is armed; while it is open a deadline (the idle timeout) always is.
/// * Request ids are strictly increasing. At most one request is outstanding: a new
///   one is issued only when the previous one was answered or its deadline
///   (`store_timeout`) passed and `handle_timeout` told the session so. Two exceptions
///   are requests the session does not wait for, both `AbortDelivery`: one right before
///   `Close` (only writes between them), and one in answer to a late `DeliveryStarted`
///   for a `BeginDelivery` the session gave up on (the module documentation of
///   [`crate::smtp`] describes both).
/// * While a request is outstanding, input produces no action (pipelined commands wait).
/// * A late or duplicate reply produces nothing, except that a late `DeliveryStarted`
///   must be aborted at once (that `AbortDelivery` and nothing else).
/// * Deliveries: every id the store hands out in `DeliveryStarted` while the session is
///   open is eventually committed or aborted, once; appends, the commit and the abort
///   name only open deliveries. Appends are non-empty, at most `append_chunk` bytes,
///   and only the last one of a message is shorter. A commit names at least one
///   account, each once, with `all_or_nothing` unless the role is LMTP; the message is
///   at most `max_message_size`, and unless the client ever sent `BINARYMIME` it has
///   only CRLF line ends (no bare CR or LF, not ending in CR) and no line over
///   `max_text_line`. The header of `BeginDelivery` starts with `Return-Path: <`, has a
///   `Received:` field and only CRLF line ends.
/// * `Authenticate` only on the submission port, and only after STARTTLS unless
///   `plaintext_auth`; for a user name without controls or spaces, from the client's
///   address. On the submission port `CheckRecipient` and `BeginDelivery` only after the
///   store accepted an `Authenticate` (since the last STARTTLS, which forgets it).
///   `CheckRecipient` addresses fit in a path and have no ASCII controls.
/// * `StartTls` at most once and only when STARTTLS is available, and nothing but
///   `Close` after it in the same round of actions: pipelined input after STARTTLS is
///   discarded (the STARTTLS injection class). Every `Write` and `Close` is for the
///   client.
/// * A shell that honours `wants_read` and [`MAX_READ`] never gets the input-overflow
///   reply.
/// * Bytes written since the last `handle_drained` never exceed `output_high_water +
///   (max_recipients + 2) × ADDRESS_LINE + SMTP_OUTPUT_SLACK`, where `ADDRESS_LINE` is
///   100 + [`MAX_PATH`], the longest reply line that names an address. The session
///   starts a step (a command, or moving message bytes) only below the high-water mark.
///   The last such step writes at most one reply line or, when a message ends without
///   a store request, its final reply (LMTP: one line per recipient). Without a new
///   step, the answer to the request that step made (or the session's own answer when
///   the store is too slow) adds at most one line or one final reply, then timers at
///   most an AUTH failure and a `421`. A transaction has one final reply, and a new one
///   needs new steps.
/// * After EOF the session answers what it has buffered and closes, given store replies
///   and drains (and timers only for an AUTH delay or the idle timeout).
/// * The login timeout: its `421 4.4.2` comes only before an `Authenticate` succeeded
///   or a MAIL got `250 2.1.0`, and not before `login_timeout` after the connect; once
///   that time has passed without either, the next timeout round closes the session.
pub fn smtp_session(epoch: Instant, data: &[u8]) {
    run_smtp(epoch, None, data, None);
}

/// Fuzzes [`Secured`]`<`[`SmtpSession`]`>` with a real rustls client (all in memory):
/// STARTTLS, garbage instead of a handshake, and the [`smtp_session`] script carried
/// inside TLS records.
///
/// Input as in [`smtp_session`] (STARTTLS is always available) with two more
/// operations:
///
/// | op | meaning |
/// | --- | --- |
/// | `H` | the client starts TLS now (after STARTTLS, or at any other time) |
/// | `G` *line* | raw bytes on the wire, behind the client's back (up to and including the next LF) |
///
/// Invariants as in [`smtp_session`], checked on the plaintext the client decrypts
/// (bytes it cannot read, once either side's TLS failed or the two disagree about
/// whether TLS is on, are not checked); `StartTls` never reaches the shell ([`Secured`]
/// consumes it), and `Authenticate` before TLS needs `plaintext_auth`. After a TLS
/// failure the wrapped session may keep a deadline, so a closed connection is only
/// required to emit nothing more and to refuse input.
pub fn smtp_tls_session(epoch: Instant, tls: &FuzzTls, data: &[u8]) {
    run_smtp(epoch, Some(tls), data, None);
}

/// Runs [`smtp_session`] (or, given `tls`, [`smtp_tls_session`]) and reports every
/// event to `out` as it happens (`C:` bytes the session read, `c:` plaintext the client
/// sent through TLS, `S:` plaintext the session wrote, `>` other actions, `*` other
/// shell events), for looking at a seed or a crashing input with `--nocapture`.
pub fn smtp_session_trace(
    epoch: Instant,
    tls: Option<&FuzzTls>,
    data: &[u8],
    out: &mut dyn FnMut(&str),
) {
    run_smtp(epoch, tls, data, Some(out));
}

fn run_smtp(epoch: Instant, tls: Option<&FuzzTls>, data: &[u8], log: Option<&mut dyn FnMut(&str)>) {
    let Some((&conn_byte, script)) = data.split_first() else {
        return;
    };
    let mut script = Script { rest: script };
    match tls {
        None => {
            let mut harness = SmtpHarness::plain(epoch, conn_byte, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
        Some(tls) => {
            let mut harness = SmtpHarness::secured(epoch, conn_byte, tls, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
    }
}

/// The host name of the fuzzed server: the HELO/EHLO/LHLO answer starts with it.
const HOSTNAME: &str = "mx.example";

/// The session settings and connection facts chosen by `conn_byte` (see
/// [`smtp_session`]).
fn smtp_setup(conn_byte: u8, tls: bool) -> (Arc<SmtpConfig>, SmtpConnInfo) {
    let role = match conn_byte & 3 {
        0 => SmtpRole::Inbound,
        2 => SmtpRole::Lmtp,
        _ => SmtpRole::Submission,
    };
    let mut cfg = SmtpConfig {
        hostname: HOSTNAME.into(),
        role,
        ..SmtpConfig::default()
    };
    cfg.relay = conn_byte & 64 != 0;
    if conn_byte & 128 != 0 {
        cfg.login_timeout = Duration::from_secs(5);
    }
    if conn_byte & 16 != 0 {
        cfg.max_message_size = 200;
        cfg.limits = SmtpLimits {
            max_command_line: 64,
            max_auth_line: 128,
            max_text_line: 40,
            max_buffered_input: 256,
            append_chunk: 16,
            max_recipients: 3,
            output_high_water: 512,
            ..SmtpLimits::default()
        };
    }
    let conn = SmtpConnInfo {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50_000),
        accepted_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        starttls_available: tls || conn_byte & 8 != 0,
        plaintext_auth: conn_byte & 4 == 0,
        trusted: true,
        may_override_client: conn_byte & 32 != 0,
    };
    (Arc::new(cfg), conn)
}

/// What the SMTP harness needs to know about the session under test beyond [`Session`].
trait SmtpDriven: Session {
    /// The session's own view that it has closed.
    fn is_closed(&self) -> bool;
    /// Whether the server side speaks TLS now (its writes are TLS records).
    fn server_tls(&self) -> bool;
    /// Whether a closed session must have disarmed every deadline.
    const DISARMS_ON_CLOSE: bool;
    /// Whether [`Action::StartTls`] may reach the shell.
    const SHOWS_START_TLS: bool;
}

impl SmtpDriven for SmtpSession {
    fn is_closed(&self) -> bool {
        SmtpSession::is_closed(self)
    }
    fn server_tls(&self) -> bool {
        // The plain harness only notes StartTls; the bytes stay plaintext.
        false
    }
    const DISARMS_ON_CLOSE: bool = true;
    const SHOWS_START_TLS: bool = true;
}

impl SmtpDriven for Secured<SmtpSession> {
    fn is_closed(&self) -> bool {
        // A TLS failure closes the connection while the SMTP session stays open inside.
        !self.wants_read(Peer::Client)
    }
    fn server_tls(&self) -> bool {
        self.is_tls()
    }
    const DISARMS_ON_CLOSE: bool = false;
    const SHOWS_START_TLS: bool = false;
}

/// What a request asked for, so its reply can fit it.
#[derive(Debug, Clone)]
enum Asked {
    Auth,
    Recipient(String),
    Begin,
    Append,
    /// A commit for this many accounts.
    Commit(usize),
    Abort,
}

/// A request the store has not answered.
#[derive(Debug)]
struct Pending {
    id: RequestId,
    asked: Asked,
    /// When the session gives up on it (`None`: the session does not wait for it).
    deadline: Option<Instant>,
}

/// A message file the store opened, as the harness (the store) sees it.
#[derive(Debug, Default)]
struct Delivery {
    /// Bytes appended.
    size: u64,
    /// An append shorter than `append_chunk` was made: it must have been the last.
    short_append: bool,
    /// Line-end state of the appended bytes.
    prev_cr: bool,
    line_len: usize,
    bare_line_end: bool,
    long_line: bool,
}

impl Delivery {
    fn append(&mut self, bytes: &[u8], max_line: usize) {
        self.size += bytes.len() as u64;
        for &b in bytes {
            if self.prev_cr && b != b'\n' {
                self.bare_line_end = true;
            }
            match b {
                b'\n' if !self.prev_cr => self.bare_line_end = true,
                b'\n' => self.line_len = 0,
                b'\r' => {}
                _ => {
                    self.line_len += 1;
                    self.long_line |= self.line_len > max_line;
                }
            }
            self.prev_cr = b == b'\r';
        }
    }
}

/// Checks the reply lines the client reads (see [`smtp_session`]).
#[derive(Debug, Default)]
struct ReplyLines {
    /// An unfinished line.
    partial: Vec<u8>,
    /// The code of the multi-line reply in progress, and whether it needs no enhanced
    /// status code.
    open: Option<(u16, bool)>,
    lines: usize,
    /// A `250 2.1.0` (MAIL accepted) was seen: the login timeout is over.
    sender_ok: bool,
    /// Login-timeout `421` lines seen.
    login_timeouts: usize,
}

impl ReplyLines {
    fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(lf) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=lf).collect();
            self.check(&line);
        }
        assert!(
            self.partial.len() <= 512,
            "a reply line over 512 octets: {:?}",
            self.partial.escape_ascii().to_string()
        );
    }

    fn check(&mut self, line: &[u8]) {
        let shown = line.escape_ascii().to_string();
        assert!(line.len() <= 512, "reply line over 512 octets: {shown}");
        let text = line.strip_suffix(b"\r\n");
        let Some(text) = text.filter(|t| !t.contains(&b'\r') && !t.contains(&b'\n')) else {
            panic!("reply line without CRLF or with a bare CR: {shown}");
        };
        let valid = text.len() >= 4
            && matches!(text[0], b'2'..=b'5')
            && text[1].is_ascii_digit()
            && text[2].is_ascii_digit()
            && matches!(text[3], b' ' | b'-');
        assert!(valid, "not a reply line: {shown}");
        let code = u16::from(text[0] - b'0') * 100
            + u16::from(text[1] - b'0') * 10
            + u16::from(text[2] - b'0');
        let rest = &text[4..];
        if self.lines == 0 {
            assert_eq!(code, 220, "the greeting is {shown}");
        }
        if text.starts_with(b"250 2.1.0 ") {
            self.sender_ok = true;
        }
        if code == 421 && contains(rest, b"timeout exceeded before") {
            assert!(rest.starts_with(b"4.4.2 "), "login timeout reply {shown}");
            self.login_timeouts += 1;
        }
        self.lines += 1;
        let exempt = match self.open {
            Some((open_code, exempt)) => {
                assert_eq!(
                    open_code, code,
                    "a multi-line reply changed its code: {shown}"
                );
                exempt
            }
            None => {
                let hello = code == 250
                    && (rest == HOSTNAME.as_bytes()
                        || rest.starts_with(format!("{HOSTNAME} ").as_bytes()));
                code == 220 || code == 221 || hello || code / 100 == 3
            }
        };
        if !exempt {
            assert!(
                enhanced_code(rest, (code / 100) as u8),
                "no enhanced status code of class {} in {shown}",
                code / 100
            );
        }
        self.open = (text[3] == b'-').then_some((code, exempt));
    }
}

/// Whether `text` starts with an RFC 3463 enhanced status code of `class` followed by a
/// space or the end: class "." 1*3digit "." 1*3digit.
fn enhanced_code(text: &[u8], class: u8) -> bool {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let mut parts = text[..end].split(|&b| b == b'.');
    let digits = |p: Option<&[u8]>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
    };
    parts.next() == Some(&[b'0' + class][..])
        && digits(parts.next())
        && digits(parts.next())
        && parts.next().is_none()
}

/// A shell, a store and a client around one SMTP session, checking the driving contract
/// at every step.
struct SmtpHarness<'log, S> {
    log: Option<&'log mut dyn FnMut(&str)>,
    session: S,
    cfg: Arc<SmtpConfig>,
    conn: SmtpConnInfo,
    client: Client,
    epoch: Instant,
    now: Instant,
    /// Bytes on the wire towards the session that the shell has not read.
    socket: Vec<u8>,
    closed: bool,
    last_id: Option<RequestId>,
    /// The request the session waits for.
    outstanding: Option<Pending>,
    /// Requests the session no longer waits for that the store has not answered,
    /// oldest first.
    unanswered: Vec<Pending>,
    /// Requests answered, newest last (for duplicate replies).
    answered: Vec<(RequestId, Asked)>,
    /// Message files the store handed out and the session has not committed or
    /// aborted yet.
    deliveries: BTreeMap<u64, Delivery>,
    next_delivery: u64,
    /// The store accepted an `Authenticate` (since the last STARTTLS).
    authenticated: bool,
    /// The store accepted an `Authenticate` at some point: the login timeout is over.
    logged_in: bool,
    /// STARTTLS happened (the session emitted `StartTls`, or `Secured` turned TLS on).
    tls_started: bool,
    /// The last bytes the client sent, to spot `BINARYMIME` across sends.
    sent_tail: Vec<u8>,
    /// The client sent `BINARYMIME` (in any case) at some point.
    binary: bool,
    /// A late `DeliveryStarted` for this file was just handed over: the session may
    /// abort it without waiting for the answer.
    orphan: Option<DeliveryId>,
    replies: ReplyLines,
    /// Plaintext the client received since the last `handle_drained`.
    unflushed: usize,
    output_bound: usize,
}

impl<'log> SmtpHarness<'log, SmtpSession> {
    fn plain(epoch: Instant, conn_byte: u8, log: Option<&'log mut dyn FnMut(&str)>) -> Self {
        let (cfg, conn) = smtp_setup(conn_byte, false);
        let session = SmtpSession::new(cfg.clone(), conn.clone(), epoch);
        let client = Client {
            config: None,
            tls: None,
            broken: false,
        };
        SmtpHarness::new(epoch, session, cfg, conn, client, log)
    }
}

impl<'log> SmtpHarness<'log, Secured<SmtpSession>> {
    fn secured(
        epoch: Instant,
        conn_byte: u8,
        tls: &FuzzTls,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let (cfg, conn) = smtp_setup(conn_byte, true);
        let session = SmtpSession::new(cfg.clone(), conn.clone(), epoch);
        let session = Secured::plain(session, Some(tls.server.clone()));
        let client = Client {
            config: Some(tls.client.clone()),
            tls: None,
            broken: false,
        };
        SmtpHarness::new(epoch, session, cfg, conn, client, log)
    }
}

impl<'log, S: SmtpDriven> SmtpHarness<'log, S> {
    fn new(
        epoch: Instant,
        session: S,
        cfg: Arc<SmtpConfig>,
        conn: SmtpConnInfo,
        client: Client,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let limits = &cfg.limits;
        let output_bound = limits.output_high_water
            + (limits.max_recipients + 2) * ADDRESS_LINE
            + SMTP_OUTPUT_SLACK;
        let mut harness = SmtpHarness {
            log,
            session,
            cfg,
            conn,
            client,
            epoch,
            now: epoch,
            socket: Vec::new(),
            closed: false,
            last_id: None,
            outstanding: None,
            unanswered: Vec::new(),
            answered: Vec::new(),
            deliveries: BTreeMap::new(),
            next_delivery: 1000,
            authenticated: false,
            logged_in: false,
            tls_started: false,
            sent_tail: Vec::new(),
            binary: false,
            orphan: None,
            replies: ReplyLines::default(),
            unflushed: 0,
            output_bound,
        };
        let greeting = harness.drain();
        assert!(greeting.starts_with(b"220 "), "greeting {greeting:?}");
        harness
    }

    fn trace(&mut self, event: impl FnOnce() -> String) {
        if let Some(log) = self.log.as_mut() {
            log(&event());
        }
    }

    /// The client sends `bytes` (plaintext; encrypted if its TLS is on).
    fn send(&mut self, bytes: &[u8]) {
        if self.client.tls.is_some() {
            self.trace(|| format!("c: {}", bytes.escape_ascii()));
        }
        // BINARYMIME may be split over several sends.
        self.sent_tail.extend_from_slice(bytes);
        self.binary |= self
            .sent_tail
            .windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"BINARYMIME"));
        let keep = self.sent_tail.len().saturating_sub(9);
        self.sent_tail.drain(..keep);
        self.client.send(bytes, &mut self.socket);
    }

    fn step(&mut self, tag: u8, script: &mut Script<'_>) {
        match tag {
            b'>' => {
                let line = script.line();
                self.send(line);
                self.read(MAX_READ);
            }
            b'+' => {
                let line = script.line();
                self.send(line);
            }
            b'-' => {
                let line = script.line();
                self.send(line.strip_suffix(b"\n").unwrap_or(line));
            }
            b'X' | b'Y' | b'M' => {
                let pattern: &[u8] = match tag {
                    b'X' => b"NOOP\r\n",
                    b'Y' => b"x",
                    _ => b"A line of message text.\r\n..a stuffed dot\r\n\r\n. \r\n-- \r\n",
                };
                let n = (usize::from(script.byte().unwrap_or(0)) + 1) * 128;
                let bytes: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
                self.send(&bytes);
            }
            b'G' if self.client.config.is_some() => {
                let line = script.line();
                self.trace(|| format!("* raw bytes {}", line.escape_ascii()));
                self.socket.extend_from_slice(line);
            }
            b'H' if self.client.start_tls(&mut self.socket) => {
                self.trace(|| "* client starts TLS".into());
            }
            b'R' => {
                let n = script.byte().unwrap_or(0);
                self.read(usize::from(n) + 1);
            }
            b'P' => while !self.socket.is_empty() && self.read(MAX_READ) {},
            b'F' => {
                self.trace(|| "* feed ignoring wants_read".into());
                let bytes = std::mem::take(&mut self.socket);
                self.session.handle_input(self.now, Peer::Client, &bytes);
                self.drain();
            }
            b'E' => {
                self.trace(|| "* EOF".into());
                self.session.handle_eof(self.now, Peer::Client);
                self.drain();
            }
            b'T' => {
                let ms = match script.byte().unwrap_or(0) {
                    d @ b'0'..=b'9' => 10u64.pow(u32::from(d - b'0')),
                    s => u64::from(s) * 1000,
                };
                self.now += Duration::from_millis(ms);
                let elapsed = self.now - self.epoch;
                self.trace(|| format!("* time {elapsed:?}"));
                if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.timeout();
                }
            }
            b't' => self.timeout(),
            b'D' => self.drained(),
            b'A' => {
                let kind = script.byte().unwrap_or(b'o');
                match self.outstanding.take() {
                    Some(pending) => self.answer(pending, kind, script),
                    None => self.late_reply(false, kind, script),
                }
            }
            b'L' | b'O' => {
                let kind = script.byte().unwrap_or(b'o');
                self.late_reply(tag == b'O', kind, script);
            }
            _ => {}
        }
    }

    fn drained(&mut self) {
        self.trace(|| "* drained".into());
        self.unflushed = 0;
        self.session.handle_drained(self.now, Peer::Client);
        self.drain();
    }

    /// One read of at most `max` bytes, if the session wants input. Returns whether it read.
    fn read(&mut self, max: usize) -> bool {
        if self.socket.is_empty() || !self.session.wants_read(Peer::Client) {
            return false;
        }
        let n = max.min(MAX_READ).min(self.socket.len());
        let bytes: Vec<u8> = self.socket.drain(..n).collect();
        let encrypted = self.client.tls.is_some();
        self.trace(|| match encrypted {
            false => format!("C: {}", bytes.escape_ascii()),
            true => format!("C: [{n} bytes]"),
        });
        let waiting = self.outstanding.is_some();
        self.session.handle_input(self.now, Peer::Client, &bytes);
        let (actions, plain) = self.drain_actions();
        assert!(
            !plain
                .as_ref()
                .is_some_and(|p| contains(p, b"Input buffer overflow")),
            "a shell that honours wants_read and MAX_READ got the overflow reply"
        );
        if waiting {
            // A TLS error may still end the connection (alert + close) at any time, but
            // the SMTP session must not act on the input: no request, no reply.
            assert!(
                !actions.iter().any(|a| matches!(a, Action::Request { .. })),
                "input was processed while a request was outstanding: {actions:?}"
            );
            assert!(
                plain.as_ref().is_none_or(|p| p.is_empty()),
                "input was answered while a request was outstanding: {plain:?}"
            );
        }
        true
    }

    fn timeout(&mut self) {
        self.trace(|| "* handle_timeout".into());
        if self
            .outstanding
            .as_ref()
            .is_some_and(|p| p.deadline.is_some_and(|d| self.now >= d))
            && let Some(pending) = self.outstanding.take()
        {
            // The session gives up on it now; the store may still answer later.
            self.unanswered.push(pending);
        }
        let login_timeouts = self.replies.login_timeouts;
        self.session.handle_timeout(self.now);
        self.drain();
        self.check_login_timeout(login_timeouts);
    }

    /// The login timeout (`SmtpConfig::login_timeout`): its `421` comes only before the
    /// login (AUTH accepted, or a MAIL accepted) and not before the deadline; once the
    /// deadline has passed without a login, a timeout round closes the session.
    fn check_login_timeout(&self, seen_before: usize) {
        if self.client.broken {
            return;
        }
        let logged_in = self.logged_in || self.replies.sender_ok;
        let deadline = self.epoch + self.cfg.login_timeout;
        if self.replies.login_timeouts > seen_before {
            assert!(!logged_in, "a login timeout after the login");
            assert!(self.now >= deadline, "a login timeout before its deadline");
        }
        if !logged_in && self.now >= deadline {
            assert!(self.closed, "open past the login timeout without a login");
        }
    }

    /// The store answers the request the session waits for.
    fn answer(&mut self, pending: Pending, kind: u8, script: &mut Script<'_>) {
        let (reply, started) = self.make_reply(&pending.asked, kind, script);
        self.answered.push((pending.id, pending.asked));
        if let Some(delivery) = started {
            self.deliveries.insert(delivery.0, Delivery::default());
        }
        if matches!(reply, Reply::Authenticated(_)) {
            self.authenticated = true;
            self.logged_in = true;
        }
        self.trace(|| format!("* reply {:?} {reply:?}", pending.id));
        self.session.handle_reply(self.now, pending.id, reply);
        self.drain();
    }

    /// A reply to a request the session no longer waits for (the oldest or the newest),
    /// or a duplicate reply to the newest answered one when there is none.
    fn late_reply(&mut self, oldest: bool, kind: u8, script: &mut Script<'_>) {
        if self.unanswered.is_empty() {
            let Some((id, asked)) = self.answered.last().cloned() else {
                return;
            };
            let (reply, _) = self.make_reply(&asked, kind, script);
            self.trace(|| format!("* duplicate reply {id:?} {reply:?}"));
            self.session.handle_reply(self.now, id, reply);
            let (actions, _) = self.drain_actions();
            assert!(
                actions.is_empty(),
                "a duplicate reply to {id:?} was not ignored: {actions:?}"
            );
            return;
        }
        let index = if oldest { 0 } else { self.unanswered.len() - 1 };
        let pending = self.unanswered.remove(index);
        let (reply, started) = self.make_reply(&pending.asked, kind, script);
        self.answered.push((pending.id, pending.asked));
        // A file opened after the session closed is the store's to clean up.
        let started = started.filter(|_| !self.closed);
        if let Some(delivery) = started {
            self.deliveries.insert(delivery.0, Delivery::default());
        }
        let id = pending.id;
        self.trace(|| format!("* late reply {id:?} {reply:?}"));
        self.orphan = started;
        self.session.handle_reply(self.now, id, reply);
        let (actions, _) = self.drain_actions();
        self.orphan = None;
        match started {
            None => assert!(
                actions.is_empty(),
                "a late reply to {id:?} was not ignored: {actions:?}"
            ),
            Some(delivery) => {
                let aborted = matches!(
                    actions.as_slice(),
                    [Action::Request { request: Request::AbortDelivery { delivery: d }, .. }]
                        if *d == delivery
                );
                assert!(
                    aborted,
                    "a late DeliveryStarted({delivery:?}) for {id:?} was not aborted at once: \
                     {actions:?}"
                );
            }
        }
    }

    /// The store's answer of kind `kind` to `asked` (see [`smtp_session`]), and the
    /// delivery it hands out, if any.
    fn make_reply(
        &mut self,
        asked: &Asked,
        kind: u8,
        script: &mut Script<'_>,
    ) -> (Reply, Option<DeliveryId>) {
        let temporary = || Reply::Failed(Failure::Temporary("store unavailable".into()));
        let permanent = || Reply::Failed(Failure::Permanent("store broken".into()));
        let choose = |kinds: &[u8]| {
            if kinds.contains(&kind) {
                kind
            } else if kind == b'o' {
                kinds[0]
            } else {
                kinds[usize::from(kind) % kinds.len()]
            }
        };
        let reply = match asked {
            Asked::Auth => match choose(b"adxtp") {
                b'a' => Reply::Authenticated(Account("alice@example.org".into())),
                b'd' => Reply::Failed(Failure::Denied),
                b'x' => Reply::Failed(Failure::Disabled),
                b't' => temporary(),
                _ => permanent(),
            },
            Asked::Recipient(address) => match choose(b"lmunqQtp") {
                b'l' => {
                    Reply::Recipient(RecipientCheck::Local(Account(address.to_ascii_lowercase())))
                }
                b'm' => {
                    Reply::Recipient(RecipientCheck::Local(Account("alice@example.org".into())))
                }
                b'u' => Reply::Recipient(RecipientCheck::Unknown),
                b'n' => Reply::Recipient(RecipientCheck::NotLocal),
                b'q' => Reply::Recipient(RecipientCheck::OverQuota),
                b'Q' => Reply::Failed(Failure::OverQuota),
                b't' => temporary(),
                _ => permanent(),
            },
            Asked::Begin => match choose(b"stpQ") {
                b's' => {
                    let delivery = DeliveryId(self.next_delivery);
                    self.next_delivery += 1;
                    return (Reply::DeliveryStarted(delivery), Some(delivery));
                }
                b't' => temporary(),
                b'p' => permanent(),
                _ => Reply::Failed(Failure::OverQuota),
            },
            Asked::Append => match choose(b"otQp") {
                b'o' => Reply::Done,
                b't' => temporary(),
                b'Q' => Reply::Failed(Failure::OverQuota),
                _ => permanent(),
            },
            Asked::Commit(n) => match choose(b"ovtQ") {
                b'o' => Reply::Delivered(vec![Ok(()); *n]),
                b'v' => {
                    let bits = script.byte().unwrap_or(0);
                    let results = (0..*n)
                        .map(|i| match bits & (1 << (i % 7)) {
                            0 => Ok(()),
                            _ if bits & 0x80 != 0 => Err(Failure::OverQuota),
                            _ => Err(Failure::Temporary("disk full".into())),
                        })
                        .collect();
                    Reply::Delivered(results)
                }
                b't' => temporary(),
                _ => Reply::Failed(Failure::OverQuota),
            },
            Asked::Abort => match choose(b"ot") {
                b'o' => Reply::Done,
                _ => temporary(),
            },
        };
        (reply, None)
    }

    /// Drains the session's actions, checking each; returns the plaintext the client got.
    fn drain(&mut self) -> Vec<u8> {
        self.drain_actions().1.unwrap_or_default()
    }

    /// Drains the session's actions, checking each; returns them and the plaintext the
    /// client got from them (`None` if it could not read some of it).
    fn drain_actions(&mut self) -> (Vec<Action>, Option<Vec<u8>>) {
        // Whether the server spoke TLS when it produced each action.
        let mut actions = Vec::new();
        while let Some(action) = self.session.poll_action() {
            actions.push((action, self.session.server_tls()));
        }
        let mut plain = Some(Vec::new());
        for (i, (action, server_tls)) in actions.iter().enumerate() {
            if *server_tls && !self.tls_started {
                // STARTTLS went through `Secured`: the session forgot the login.
                self.tls_started = true;
                self.authenticated = false;
            }
            let rest: Vec<&Action> = actions[i + 1..].iter().map(|(a, _)| a).collect();
            self.check(action, &rest);
            if let Action::Write { bytes, .. } = action {
                if *server_tls && self.client.tls.is_none() {
                    // TLS records for a client that has not started TLS: it cannot read
                    // them, and cannot catch up.
                    self.client.broken = true;
                }
                let received = self.client.receive(bytes, &mut self.socket);
                self.trace(|| match &received {
                    Some(p) if p.is_empty() => format!("S: [{} TLS bytes]", bytes.len()),
                    Some(p) => format!("S: {}", p.escape_ascii()),
                    None => format!("S: [{} bytes the client cannot read]", bytes.len()),
                });
                match (&mut plain, received) {
                    (Some(all), Some(p)) => {
                        self.unflushed += p.len();
                        assert!(
                            self.unflushed <= self.output_bound,
                            "{} bytes written without a drain (bound {})",
                            self.unflushed,
                            self.output_bound
                        );
                        self.replies.feed(&p);
                        all.extend_from_slice(&p);
                    }
                    _ => plain = None,
                }
            } else {
                self.trace(|| format!("> {action:?}"));
            }
        }
        if self.closed {
            assert!(self.session.is_closed());
            assert!(
                !self.session.wants_read(Peer::Client),
                "closed but wants input"
            );
            assert!(
                !S::DISARMS_ON_CLOSE || self.session.poll_timeout().is_none(),
                "closed but a timer is armed"
            );
        } else {
            assert!(
                self.session.poll_timeout().is_some(),
                "an open session has no deadline (idle timeout)"
            );
        }
        (actions.into_iter().map(|(a, _)| a).collect(), plain)
    }

    /// Checks one action; `rest` are the actions after it in the same round.
    fn check(&mut self, action: &Action, rest: &[&Action]) {
        assert!(!self.closed, "{action:?} after Close");
        match action {
            Action::Write { to, .. } => assert_eq!(*to, Peer::Client),
            Action::Request { id, request } => {
                let next = rest
                    .iter()
                    .find(|a| !matches!(a, Action::Write { .. }))
                    .copied();
                self.check_request(*id, request, next);
            }
            Action::StartTls { with } => {
                assert_eq!(*with, Peer::Client);
                assert!(S::SHOWS_START_TLS, "StartTls reached the shell");
                assert!(self.conn.starttls_available, "StartTls without STARTTLS");
                assert!(!self.tls_started, "a second StartTls");
                assert!(
                    matches!(rest, [] | [Action::Close { .. }]),
                    "{rest:?} after StartTls in the same round: pipelined input was not \
                     discarded"
                );
                self.tls_started = true;
                self.authenticated = false;
            }
            Action::Close { to } => {
                assert_eq!(*to, Peer::Client);
                self.closed = true;
                if let Some(pending) = self.outstanding.take() {
                    self.unanswered.push(pending);
                }
            }
            Action::Connect { .. } | Action::Splice { .. } => {
                panic!("an SMTP server session never connects anywhere: {action:?}")
            }
        }
    }

    fn check_request(&mut self, id: RequestId, request: &Request, next: Option<&Action>) {
        assert!(
            self.last_id.is_none_or(|last| id > last),
            "request id {id:?} after {:?}",
            self.last_id
        );
        self.last_id = Some(id);
        let limits = &self.cfg.limits;
        let submission = self.cfg.role == SmtpRole::Submission;
        let asked = match request {
            Request::Authenticate {
                user,
                password: _,
                client,
            } => {
                assert!(submission, "Authenticate on a {:?} port", self.cfg.role);
                assert!(
                    self.conn.plaintext_auth || self.tls_started,
                    "Authenticate before TLS although plaintext_auth is off"
                );
                assert_eq!(*client, self.conn.client.ip());
                assert!(
                    !user.is_empty() && !user.chars().any(|c| c.is_control() || c == ' '),
                    "user name {user:?}"
                );
                Asked::Auth
            }
            Request::CheckRecipient { address, size_hint } => {
                assert!(
                    !submission || self.authenticated,
                    "CheckRecipient on the submission port without AUTH"
                );
                assert!(
                    !address.is_empty()
                        && address.len() + 2 <= MAX_PATH
                        && !address.chars().any(|c| c.is_ascii_control()),
                    "CheckRecipient for {address:?}"
                );
                assert!(
                    size_hint.is_none_or(|s| s <= self.cfg.max_message_size),
                    "size hint {size_hint:?} over the limit"
                );
                Asked::Recipient(address.clone())
            }
            Request::BeginDelivery { header } => {
                assert!(
                    !submission || self.authenticated,
                    "BeginDelivery on the submission port without AUTH"
                );
                assert!(
                    header.starts_with(b"Return-Path: <")
                        && header.ends_with(b"\r\n")
                        && contains(header, b"\r\nReceived: ")
                        && crlf_only(header),
                    "BeginDelivery header {:?}",
                    header.escape_ascii().to_string()
                );
                Asked::Begin
            }
            Request::AppendDelivery { delivery, bytes } => {
                let append_chunk = limits.append_chunk;
                let max_line = limits.max_text_line.saturating_sub(2);
                let Some(open) = self.deliveries.get_mut(&delivery.0) else {
                    panic!("AppendDelivery to {delivery:?}, which is not open");
                };
                assert!(
                    !bytes.is_empty() && bytes.len() <= append_chunk,
                    "an append of {} bytes (append_chunk {append_chunk})",
                    bytes.len()
                );
                assert!(
                    !open.short_append,
                    "an append after a short one to {delivery:?}"
                );
                open.short_append = bytes.len() < append_chunk;
                open.append(bytes, max_line);
                Asked::Append
            }
            Request::CommitDelivery {
                delivery,
                recipients,
                all_or_nothing,
            } => {
                let Some(message) = self.deliveries.remove(&delivery.0) else {
                    panic!("CommitDelivery of {delivery:?}, which is not open");
                };
                assert!(!recipients.is_empty(), "a commit without recipients");
                assert!(
                    recipients.len() <= limits.max_recipients,
                    "{} accounts in a commit",
                    recipients.len()
                );
                for (i, account) in recipients.iter().enumerate() {
                    assert!(
                        !recipients[..i].contains(account),
                        "{account:?} twice in a commit"
                    );
                }
                assert_eq!(
                    *all_or_nothing,
                    self.cfg.role != SmtpRole::Lmtp,
                    "all_or_nothing for {:?}",
                    self.cfg.role
                );
                assert!(
                    message.size <= self.cfg.max_message_size,
                    "a {}-byte message committed (limit {})",
                    message.size,
                    self.cfg.max_message_size
                );
                if !self.binary {
                    assert!(
                        !message.bare_line_end && !message.prev_cr,
                        "a message with a bare CR or LF was committed"
                    );
                    assert!(
                        !message.long_line,
                        "a message with a line over max_text_line was committed"
                    );
                }
                Asked::Commit(recipients.len())
            }
            Request::CommitSubmission {
                delivery,
                local,
                relay,
            } => {
                assert!(
                    self.cfg.role == SmtpRole::Submission && self.cfg.relay,
                    "CommitSubmission from a {:?} session without relaying",
                    self.cfg.role
                );
                assert!(
                    self.deliveries.remove(&delivery.0).is_some(),
                    "CommitSubmission of {delivery:?}, which is not open"
                );
                assert!(!relay.recipients.is_empty() && !relay.sender.is_empty());
                assert!(
                    local.len() + relay.recipients.len() <= limits.max_recipients,
                    "{} recipients in a commit",
                    local.len() + relay.recipients.len()
                );
                Asked::Commit(local.len() + 1)
            }
            Request::AbortDelivery { delivery } => {
                assert!(
                    self.deliveries.remove(&delivery.0).is_some(),
                    "AbortDelivery of {delivery:?}, which is not open"
                );
                Asked::Abort
            }
            other => panic!("an SMTP session asked for {other:?}"),
        };
        let orphan = match request {
            Request::AbortDelivery { delivery } => self.orphan.take() == Some(*delivery),
            _ => false,
        };
        if orphan || (matches!(asked, Asked::Abort) && matches!(next, Some(Action::Close { .. }))) {
            // Fired on the way out, or for a file opened too late: the session does not
            // wait for it.
            self.unanswered.push(Pending {
                id,
                asked,
                deadline: None,
            });
            return;
        }
        if let Some(previous) = &self.outstanding {
            panic!("{id:?} issued while {:?} is outstanding", previous.id);
        }
        self.outstanding = Some(Pending {
            id,
            asked,
            deadline: Some(self.now + self.cfg.store_timeout),
        });
    }

    /// Ends the connection. The client sends nothing more (EOF); from then on the store
    /// answers every request (with a temporary failure; an abort with `Done`) and the
    /// client reads everything, and the session must close: it answers the commands it
    /// has buffered first, and only a timer (an AUTH delay, the idle timeout) may be
    /// needed on the way. Then the store answers whatever is left, and every message
    /// file it handed out must have been committed or aborted.
    fn finish(mut self) {
        if !self.closed {
            self.trace(|| "* EOF".into());
            self.session.handle_eof(self.now, Peer::Client);
            self.drain();
        }
        for _ in 0..WIND_DOWN_STEPS {
            if self.closed {
                break;
            }
            if let Some(pending) = self.outstanding.take() {
                let kind = match pending.asked {
                    Asked::Abort => b'o',
                    _ => b't',
                };
                self.answer(pending, kind, &mut Script { rest: b"" });
            } else if self.unflushed > 0 {
                self.drained();
            } else if let Some(deadline) = self.session.poll_timeout() {
                self.now = self.now.max(deadline);
                let elapsed = self.now - self.epoch;
                self.trace(|| format!("* time {elapsed:?}"));
                self.timeout();
            } else {
                break;
            }
        }
        assert!(self.closed, "the session did not close after EOF");
        while !self.unanswered.is_empty() {
            self.late_reply(true, b't', &mut Script { rest: b"" });
        }
        assert!(
            self.deliveries.is_empty(),
            "message files neither committed nor aborted: {:?}",
            self.deliveries.keys().collect::<Vec<_>>()
        );
        // Whatever comes now must be ignored.
        self.session
            .handle_input(self.now, Peer::Client, b"NOOP\r\n");
        self.session.handle_eof(self.now, Peer::Client);
        self.session
            .handle_timeout(self.now + Duration::from_secs(3600));
        self.session.handle_drained(self.now, Peer::Client);
        if let Some(id) = self.last_id {
            self.session.handle_reply(self.now, id, Reply::Done);
        }
        self.drain();
        assert!(
            self.client.broken || self.replies.partial.is_empty(),
            "the session closed in the middle of a reply line"
        );
    }
}

/// True when every CR in `bytes` is followed by LF and every LF preceded by CR.
fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert!(crlf_only(b"a\r\nb\r\n"));
        assert!(!crlf_only(b"a\nb"));
        assert!(!crlf_only(b"a\rb"));
        assert!(!crlf_only(b"a\r"));
        assert!(enhanced_code(b"2.0.0 Ok", 2));
        assert!(enhanced_code(b"5.7.11 Encryption", 5));
        assert!(enhanced_code(b"4.3.0", 4));
        assert!(!enhanced_code(b"2.0.0 Ok", 5));
        assert!(!enhanced_code(b"mx.example", 2));
        assert!(!enhanced_code(b"2.0 Ok", 2));
        assert!(!enhanced_code(b"2.0.0.0 Ok", 2));
        assert!(!enhanced_code(b"2.1234.0 Ok", 2));
        let (frames, tail) =
            reference_frames(b"EHLO x\r\nDATA\r\n..a\r\n.\r\nBDAT 2 LAST\r\nxyQUIT", 64);
        assert_eq!(
            frames,
            vec![
                Frame::Line(b"EHLO x".to_vec()),
                Frame::Line(b"DATA".to_vec()),
                Frame::Message {
                    data: b".a\r\n".to_vec(),
                    start: 14,
                    end: 22
                },
                Frame::Line(b"BDAT 2 LAST".to_vec()),
                Frame::Chunk {
                    data: b"xy".to_vec(),
                    last: true
                },
            ]
        );
        assert_eq!(tail, Tail::Lines);
    }
}
