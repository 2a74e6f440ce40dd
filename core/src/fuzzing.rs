//! Fuzz harnesses shared by the cargo-fuzz targets in `fuzz/` and the stable corpus
//! replay in `tests/fuzz_corpus.rs`.
//!
//! Each harness takes arbitrary bytes, never fails on bad input, and panics (through
//! `assert!`) only when an invariant of the code under test is broken. The same
//! functions run under libFuzzer (`cfg(fuzzing)`) and under `cargo test` (the `fuzzing`
//! feature), so every committed seed and regression input is checked on stable too.
//!
//! | harness | input layout | invariants |
//! | --- | --- | --- |
//! | [`pop3_command`] | one command line | no panic; keyword case is irrelevant; parse → encode → parse round trip |
//! | [`line_framer`] | `max_line`, two chunking bytes, data | whole, chunked and lazily drained input give identical [`LineEvent`]s, equal to a reference splitter; buffered bytes bounded |
//! | [`dot_stuffing`] | mode, chunking byte, data | stuff → unstuff gives the CRLF-normalised input (or its TOP prefix); chunking-invariant; the unstuffer matches a reference and never emits more than it consumed |
//! | [`pop3_session`] | config byte, then a script of operations | see [`pop3_session`] |
//! | [`pop3_tls_session`] | the same, with TLS operations | see [`pop3_tls_session`] |
//!
//! The core never reads a clock, so [`pop3_session`] takes its starting [`Instant`] from
//! the caller; only time differences matter, so a run is deterministic.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use crate::io::{Action, MAX_READ, Peer, RequestId, Session};
use crate::pop3::command::{self, Command};
use crate::pop3::{ConnInfo, Pop3Config, Pop3Limits, Pop3Session};
use crate::request::{Account, Failure, MessageInfo, MessageRef, Reply, Request};
use crate::tls::Secured;
use crate::wire::{DotStuffer, DotUnstuffer, LineBuffer, LineEvent};

// ---------------------------------------------------------------------------------------
// POP3 command parser
// ---------------------------------------------------------------------------------------

/// Fuzzes [`command::parse`] with `line` (one command line, CRLF already removed).
///
/// Invariants: parsing never panics; upper-, lower- and alternating-case copies of the
/// keyword (the bytes before the first space) parse to the same result; a successfully
/// parsed command, written back in canonical form, parses to the same command again.
pub fn pop3_command(line: &[u8]) {
    let parsed = command::parse(line);
    let keyword_len = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let recased: [fn(usize, &mut u8); 3] = [
        |_, b| b.make_ascii_uppercase(),
        |_, b| b.make_ascii_lowercase(),
        |i, b| {
            if i % 2 == 0 {
                b.make_ascii_lowercase()
            } else {
                b.make_ascii_uppercase()
            }
        },
    ];
    for recase in recased {
        let mut copy = line.to_vec();
        for (i, b) in copy[..keyword_len].iter_mut().enumerate() {
            recase(i, b);
        }
        assert_eq!(
            command::parse(&copy),
            parsed,
            "keyword case changed the parse of {line:?} (copy {copy:?})"
        );
    }
    if let Ok(command) = &parsed {
        let canonical = encode_command(command);
        assert_eq!(
            command::parse(&canonical).as_ref(),
            Ok(command),
            "{line:?} parsed to {command:?}, whose canonical form {canonical:?} parses differently"
        );
    }
}

/// The canonical command line for `command` (upper-case keyword, single spaces).
fn encode_command(command: &Command) -> Vec<u8> {
    fn with_number(keyword: &str, n: Option<u64>) -> Vec<u8> {
        match n {
            Some(n) => format!("{keyword} {n}").into_bytes(),
            None => keyword.as_bytes().to_vec(),
        }
    }
    match command {
        Command::User(name) => format!("USER {name}").into_bytes(),
        Command::Pass(secret) => [b"PASS ".as_slice(), secret.expose()].concat(),
        Command::Auth {
            mechanism,
            initial_response,
        } => {
            let mut line = b"AUTH".to_vec();
            if let Some(mechanism) = mechanism {
                line.push(b' ');
                line.extend_from_slice(mechanism.as_bytes());
            }
            if let Some(response) = initial_response {
                line.push(b' ');
                line.extend_from_slice(response);
            }
            line
        }
        Command::Capa => b"CAPA".to_vec(),
        Command::Stls => b"STLS".to_vec(),
        Command::Stat => b"STAT".to_vec(),
        Command::List(n) => with_number("LIST", *n),
        Command::Uidl(n) => with_number("UIDL", *n),
        Command::Retr(n) => with_number("RETR", Some(*n)),
        Command::Top(n, lines) => format!("TOP {n} {lines}").into_bytes(),
        Command::Dele(n) => with_number("DELE", Some(*n)),
        Command::Rset => b"RSET".to_vec(),
        Command::Noop => b"NOOP".to_vec(),
        Command::Quit => b"QUIT".to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Chunking helper
// ---------------------------------------------------------------------------------------

/// A small deterministic generator of chunk sizes and coin flips, seeded from the input.
struct Chunker {
    state: u32,
    max_chunk: usize,
}

impl Chunker {
    fn new(seed: u16, max_chunk: usize) -> Self {
        Chunker {
            // Never zero: xorshift would stay at zero.
            state: (u32::from(seed) << 8) | 0x5a,
            max_chunk: max_chunk.max(1),
        }
    }

    fn next(&mut self) -> u32 {
        // xorshift32
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    fn chunk_len(&mut self) -> usize {
        1 + self.next() as usize % self.max_chunk
    }

    fn coin(&mut self) -> bool {
        self.next() & 0x100 != 0
    }

    /// Splits `data` into chunks of 1..=max_chunk bytes.
    fn split<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let (head, tail) = data.split_at(self.chunk_len().min(data.len()));
            chunks.push(head);
            data = tail;
        }
        chunks
    }
}

// ---------------------------------------------------------------------------------------
// Line framer
// ---------------------------------------------------------------------------------------

/// Fuzzes [`LineBuffer`].
///
/// Layout: `data[0] % 64` is `max_line`; `data[1]` sets the largest chunk (1 to 64 bytes)
/// and, with `data[2]`, seeds the chunk sizes; the rest is the input.
///
/// Invariants, all four ways of feeding the input giving the same [`LineEvent`]s:
/// 1. a reference splitter: lines end at LF, one CR before the LF is removed, a line
///    longer than `max_line` is [`LineEvent::TooLong`], a last line without LF is not
///    reported;
/// 2. one `push` of everything, then draining;
/// 3. random chunks, draining after every push: `buffered()` is at most
///    `max_line + 1 + chunk` after a push and at most `max_line + 1` after draining;
/// 4. random chunks, draining only sometimes.
///
/// Every reported line is at most `max_line` bytes and contains no LF.
pub fn line_framer(data: &[u8]) {
    let [max_line, chunking, seed, input @ ..] = data else {
        return;
    };
    let (max_line, chunking, seed) = (*max_line, *chunking, *seed);
    let max_line = usize::from(max_line % 64);
    let max_chunk = 1 + usize::from(chunking % 64);
    let mut chunker = Chunker::new(u16::from_le_bytes([chunking, seed]), max_chunk);

    let expected = reference_lines(input, max_line);
    for event in &expected {
        if let LineEvent::Line(line) = event {
            assert!(line.len() <= max_line && !line.contains(&b'\n'));
        }
    }

    let mut whole = LineBuffer::new(max_line);
    whole.push(input);
    let got = drain_lines(&mut whole);
    assert_eq!(got, expected, "one push of {input:?}, max_line {max_line}");

    let mut chunked = LineBuffer::new(max_line);
    let mut got = Vec::new();
    for chunk in chunker.split(input) {
        chunked.push(chunk);
        assert!(
            chunked.buffered() <= max_line + 1 + chunk.len(),
            "{} bytes buffered after a push of {} (max_line {max_line})",
            chunked.buffered(),
            chunk.len()
        );
        got.extend(drain_lines(&mut chunked));
        assert!(
            chunked.buffered() <= max_line + 1,
            "{} bytes of an unfinished line buffered (max_line {max_line})",
            chunked.buffered()
        );
    }
    assert_eq!(
        got, expected,
        "chunked push of {input:?}, max_line {max_line}"
    );

    let mut lazy = LineBuffer::new(max_line);
    let mut got = Vec::new();
    for chunk in chunker.split(input) {
        lazy.push(chunk);
        if chunker.coin() {
            got.extend(drain_lines(&mut lazy));
        }
    }
    got.extend(drain_lines(&mut lazy));
    assert_eq!(got, expected, "lazily drained push of {input:?}");
}

fn drain_lines(buffer: &mut LineBuffer) -> Vec<LineEvent> {
    std::iter::from_fn(|| buffer.next_line()).collect()
}

/// The obvious line splitter over a whole input, as the oracle for [`LineBuffer`].
fn reference_lines(input: &[u8], max_line: usize) -> Vec<LineEvent> {
    let mut events = Vec::new();
    let mut rest = input;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..lf];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        events.push(if line.len() > max_line {
            LineEvent::TooLong
        } else {
            LineEvent::Line(Bytes::copy_from_slice(line))
        });
        rest = &rest[lf + 1..];
    }
    events
}

// ---------------------------------------------------------------------------------------
// Dot-stuffing
// ---------------------------------------------------------------------------------------

/// Fuzzes [`DotStuffer`] and [`DotUnstuffer`].
///
/// Layout: `data[0]` picks the mode: below 128 a whole message ([`DotStuffer::new`]),
/// otherwise [`DotStuffer::top`] with `data[0] % 8` body lines. `data[1]` seeds the
/// chunking; the rest is the message.
///
/// Invariants:
/// * Stuffing in random chunks gives the same bytes as stuffing the whole message.
/// * Unstuffing the stuffed bytes, followed by arbitrary trailing bytes, stops exactly at
///   the end of the `.` line and yields `normalise(message)` (whole mode) or
///   `normalise(top_prefix(message))` (TOP mode), where `normalise` turns every LF not
///   preceded by CR into CRLF and ends a non-empty last line without LF with CRLF (just
///   LF if it already ends with CR), and `top_prefix` is the header up to and including
///   the first blank line plus at most `n` body lines (the stuffer counts a line as blank
///   when it has no bytes other than CR before its LF).
/// * The unstuffer, fed the raw input as if it were received data, gives the same output
///   and stop position in one piece and in random chunks, matches a reference decoder
///   (lines end only at CRLF, a leading dot is dropped, `.` CRLF ends the data), and has
///   never emitted more bytes than it consumed.
pub fn dot_stuffing(data: &[u8]) {
    let [mode, seed, message @ ..] = data else {
        return;
    };
    let (mode, seed) = (*mode, *seed);
    let top = (mode >= 128).then_some(u64::from(mode % 8));
    let mut chunker = Chunker::new(u16::from_le_bytes([mode, seed]), 1 + usize::from(seed % 32));
    let new_stuffer = || top.map_or_else(DotStuffer::new, DotStuffer::top);

    // Stuffing is chunking-invariant.
    let mut whole = BytesMut::new();
    let mut stuffer = new_stuffer();
    stuffer.stuff(message, &mut whole);
    stuffer.finish(&mut whole);
    let mut chunked = BytesMut::new();
    let mut stuffer = new_stuffer();
    for chunk in chunker.split(message) {
        stuffer.stuff(chunk, &mut chunked);
    }
    stuffer.finish(&mut chunked);
    assert_eq!(whole, chunked, "stuffing {message:?} in chunks differs");

    // Stuff → unstuff round trip, with the next command's bytes behind the `.` line.
    let source = match top {
        Some(n) => top_prefix(message, n),
        None => message,
    };
    let expected = normalise(source);
    let mut wire = whole.to_vec();
    wire.extend_from_slice(message);
    let whole_run = unstuff_in(&[&wire]);
    assert_eq!(
        whole_run,
        (expected.clone(), Some(whole.len())),
        "round trip of {message:?} (top {top:?}) through {whole:?}"
    );
    let chunked_run = unstuff_in(&chunker.split(&wire));
    assert_eq!(chunked_run, whole_run, "chunked unstuffing of {wire:?}");

    // The unstuffer on arbitrary received bytes.
    let reference = reference_unstuff(message);
    let whole_run = unstuff_in(&[message]);
    assert_eq!(whole_run, reference, "unstuffing {message:?}");
    let chunked_run = unstuff_in(&chunker.split(message));
    assert_eq!(chunked_run, reference, "chunked unstuffing of {message:?}");
}

/// Unstuffs `chunks` until the end marker; returns the data and where it ended.
/// Checks on the way that the output never outgrows the input consumed.
fn unstuff_in(chunks: &[&[u8]]) -> (Vec<u8>, Option<usize>) {
    let mut unstuffer = DotUnstuffer::new();
    let mut out = BytesMut::new();
    let mut consumed = 0;
    for chunk in chunks {
        let progress = unstuffer.unstuff(chunk, &mut out);
        assert!(progress.consumed <= chunk.len());
        assert!(
            progress.done || progress.consumed == chunk.len(),
            "the unstuffer stopped early without the end marker"
        );
        consumed += progress.consumed;
        assert!(
            out.len() <= consumed,
            "unstuffer emitted {} bytes after consuming {consumed}",
            out.len()
        );
        if progress.done {
            return (out.to_vec(), Some(consumed));
        }
    }
    (out.to_vec(), None)
}

/// Bare LF → CRLF, and a non-empty last line without LF completed with CRLF (LF alone
/// after a trailing CR): what [`DotStuffer`] sends, before stuffing.
fn normalise(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 8 + 2);
    let mut prev = None;
    for &b in message {
        if b == b'\n' && prev != Some(b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        prev = Some(b);
    }
    match prev {
        None | Some(b'\n') => {}
        Some(b'\r') => out.push(b'\n'),
        Some(_) => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// The part of `message` a TOP with `n` body lines sends: every line up to and including
/// the first blank one, then `n` more. Lines end at LF; a line is blank when it has no
/// bytes other than CR before its LF (the stuffer's definition).
fn top_prefix(message: &[u8], n: u64) -> &[u8] {
    let mut end = 0;
    let mut in_header = true;
    let mut body_lines = 0;
    while let Some(lf) = message[end..].iter().position(|&b| b == b'\n') {
        let line = &message[end..end + lf];
        end += lf + 1;
        if in_header {
            in_header = !line.iter().all(|&b| b == b'\r');
        } else {
            body_lines += 1;
        }
        if !in_header && body_lines == n {
            return &message[..end];
        }
    }
    message
}

/// The obvious decoder of received dot-stuffed data: lines end only at CRLF, a line that
/// is exactly `.` CRLF ends the data, any other line loses one leading dot. An unfinished
/// last line `.` CR is held back (its CR may yet start the end marker).
fn reference_unstuff(input: &[u8]) -> (Vec<u8>, Option<usize>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        let line_len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = &rest[..line_len];
        if line == b".\r\n" {
            return (out, Some(pos + 3));
        }
        if line == b".\r" {
            break;
        }
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        pos += line_len;
    }
    (out, None)
}

// ---------------------------------------------------------------------------------------
// POP3 session
// ---------------------------------------------------------------------------------------

/// Slack in the output bound of [`pop3_session`], above `output_high_water` and the two
/// stuffed chunks. Below the high-water mark the session may start one more step; the
/// largest step that is not a message chunk writes about 130 bytes (CAPA; LIST/UIDL of
/// the at most three messages of a fuzzed listing is less; the longest single line, the
/// plaintext refusal, about 95). After that, timers still add a line each without
/// looking at the mark: a store timeout (about 70 bytes) or a failed-login reply (about
/// 85), then the autologout line (37) before the close. 256 covers the worst sum.
pub const SESSION_OUTPUT_SLACK: usize = 256;

/// Fuzzes [`Pop3Session`] (RFC 1939 server) driven by a script of shell events.
///
/// `epoch` is the time the connection was accepted (the caller's clock: the core reads
/// none); the script only advances virtual time from it.
///
/// # Input
///
/// `data[0]` chooses the connection: bit 0 small limits (64-byte lines, 256 bytes of
/// buffered input, 512 bytes of output high water, 32-byte reads) instead of the
/// defaults, bit 1 STLS available, bit 2 plaintext login refused (it is allowed
/// otherwise); [`pop3_tls_session`] adds bit 3. The rest is a script; each operation is
/// one tag byte, and bytes that are no tag are skipped, so a script can be written by
/// hand with spaces and newlines:
///
/// | op | meaning |
/// | --- | --- |
/// | `>` *line* | the client sends *line* (up to and including the next LF); the shell reads once |
/// | `+` *line* | the client sends *line*; the shell does not read yet (pipelining) |
/// | `-` *line* | the client sends *line* without its LF (a partial line) |
/// | `X` *n* | the client sends (*n* + 1) × 128 bytes of pipelined `CAPA` CRLF |
/// | `Y` *n* | the client sends (*n* + 1) × 128 bytes of `x` (an overlong line) |
/// | `R` *n* | the shell reads once, at most *n* + 1 bytes |
/// | `P` | the shell reads until the socket is empty or `wants_read` is false |
/// | `F` | the shell feeds all sent bytes at once, ignoring `wants_read` and [`MAX_READ`] |
/// | `E` | the client shut its sending side (`handle_eof`); it may still read |
/// | `T` *b* | time passes (digits `0`-`9`: 10^d ms; any other byte: *b* seconds), then `handle_timeout` if a deadline passed |
/// | `t` | a spurious `handle_timeout` |
/// | `D` | `handle_drained`: the client read everything |
/// | `A` *k* | the store answers the outstanding request (a late reply to an old id if none) |
/// | `L` *k* | a late reply to the newest id that is not outstanding |
///
/// Reply kinds *k*: `a` Authenticated, `d` Denied, `x` Disabled, `i` InUse, `g` Gone,
/// `t` Temporary, `p` Permanent, `o` Done, `0`-`3` a listing of that many messages,
/// `c` *line* / `e` *line* a chunk of message bytes (up to and including the next LF)
/// that does not end / ends the message, `w` *n* / `W` *n* a chunk of *n* + 1 bytes of
/// `.` LF repeated (the most expensive bytes to stuff) not ending / ending it, `z`/`Z` an
/// empty chunk (not) ending it, `m` a whole small message in one ending chunk; chunks
/// are cut to the request's `max_len`. Any other byte picks one of these by its value.
///
/// # Invariants
///
/// * No panic, whatever the script.
/// * After [`Action::Close`] the session emits no action at all, `wants_read` is false
///   and no deadline is armed; while it is open a deadline (autologout) always is.
/// * Request ids are strictly increasing; a new request is only issued when no earlier
///   one is outstanding, or the earlier one's store deadline (`store_timeout`) has passed
///   and `handle_timeout` told the session so.
/// * While a request is outstanding, input produces no action (pipelined commands wait).
/// * A `ReadMessage` asks for `read_chunk` bytes, at offset 0 or where the previous chunk
///   ended.
/// * A shell that honours `wants_read` and [`MAX_READ`] never gets the input-overflow
///   reply.
/// * Bytes written since the last `handle_drained` never exceed
///   `output_high_water + 2 * read_chunk + SESSION_OUTPUT_SLACK`: the session only starts
///   a command or asks for the next chunk below the high-water mark, and one chunk at
///   most doubles when stuffed (every `.` at a line start and every bare LF become two
///   bytes).
/// * `StartTls` only when STLS is available; every `Write` and `Close` is for the client.
/// * A late reply (to an id answered or given up on) produces nothing.
/// * After EOF the session answers what it has buffered and closes, given store replies
///   and drains (and timers only for a login delay or the autologout).
pub fn pop3_session(epoch: Instant, data: &[u8]) {
    run_session(epoch, None, data, None);
}

/// Runs [`pop3_session`] (or, given `tls`, [`pop3_tls_session`]) and reports every event
/// to `out` as it happens (`C:` bytes the session read, `c:` plaintext the client sent
/// through TLS, `S:` plaintext the session wrote, `>` other actions, `*` other shell
/// events), for looking at a seed or a crashing input with `--nocapture`.
pub fn pop3_session_trace(
    epoch: Instant,
    tls: Option<&FuzzTls>,
    data: &[u8],
    out: &mut dyn FnMut(&str),
) {
    run_session(epoch, tls, data, Some(out));
}

/// The TLS side of [`pop3_tls_session`]: a server certificate and a client that trusts
/// it. [`FuzzTls::new`] builds them from a fixed test PKI; callers build them once.
#[derive(Debug, Clone)]
pub struct FuzzTls {
    /// The server's config, with a certificate for `localhost`.
    pub server: Arc<ServerConfig>,
    /// A client config that trusts that certificate.
    pub client: Arc<ClientConfig>,
}

impl FuzzTls {
    /// Configs from a fixed test CA and certificate compiled into this module, with the
    /// `ring` provider and no session resumption. Build once and reuse: it parses keys.
    pub fn new() -> Self {
        let der = |parts: &[&str]| {
            BASE64
                .decode(parts.concat())
                .expect("valid base64 in the fuzzing PKI")
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(der(FUZZ_LEAF_DER_BASE64))],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(FUZZ_LEAF_KEY_BASE64))),
            )
            .expect("the fuzzing certificate and key match");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(der(FUZZ_CA_DER_BASE64)))
            .expect("the fuzzing CA parses");
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // No session resumption: every run starts from a full handshake, so a run does
        // not depend on the runs before it.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        client.resumption = rustls::client::Resumption::disabled();
        FuzzTls {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }
}

impl Default for FuzzTls {
    fn default() -> Self {
        FuzzTls::new()
    }
}

/// Test-only PKI for [`FuzzTls::new`] (ECDSA P-256, valid until 2126, made with
/// `openssl`): a CA and a `localhost` certificate it signed. The key protects nothing.
/// The CA certificate the fuzzing client trusts (DER, base64).
const FUZZ_CA_DER_BASE64: &[&str] = &[
    "MIIBgjCCASigAwIBAgIUQqSZeTOATN7HSkMHuo/jq7Z7efkwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwT",
    "dGlkZWdhdGUgZnV6emluZyBDQTAgFw0yNjExMjkwNjA3NDdaGA8yMTI2MTEwNTA2MDc0N1owHjEcMBoG",
    "A1UEAwwTdGlkZWdhdGUgZnV6emluZyBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLyueQwkRpm/",
    "XnTC9nzVDnjUT9zEGLPegzV+ZplA56eqIqw4mTdglxp/t4m0d05zvYQ2eIKfzCNTAL8ZSVzpZjOjQjBA",
    "MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQqIYWbtZj6uQm6N8hr5l0E",
    "F8FD6DAKBggqhkjOPQQDAgNIADBFAiEA7tp6BzPVURU5RsxAaJy/HqCGbd0NugIrUYW9MC2dI7cCIEOi",
    "TI8uBY4qMVPS8R2mKQHQdz55vQ6xymX/RiQf6zE2",
];
/// The server's certificate for `localhost` (DER, base64).
const FUZZ_LEAF_DER_BASE64: &[&str] = &[
    "MIIBxDCCAWmgAwIBAgIUZxR0f0rcO/V1/o/0uz5CXN3ae34wCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwT",
    "dGlkZWdhdGUgZnV6emluZyBDQTAgFw0yNjExMjkwNjA3NDdaGA8yMTI2MTEwNTA2MDc0N1owFDESMBAG",
    "A1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpWkAf4TP1dzDYJ5jkv1faGIe",
    "2/GAQnVWcRKxosyXHILHFqNv8fAVmb3MQAIrbQxnb+0+ouw6149KlivczXVmrqOBjDCBiTAMBgNVHRMB",
    "Af8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAUBgNVHREEDTALgglsb2Nh",
    "bGhvc3QwHwYDVR0jBBgwFoAUKiGFm7WY+rkJujfIa+ZdBBfBQ+gwHQYDVR0OBBYEFLNYGP/3G7O3DlS3",
    "+Ai2hbBph2QxMAoGCCqGSM49BAMCA0kAMEYCIQD4Yng02K9ZT7h/9Hbryex4LxZTFUvVmaHlmzkMxDqk",
    "kAIhAJA5D6ktZE0YXHSPqLBp53ZnsT7WoRY0DoLb7p2Ib3Xb",
];
/// The server's private key (PKCS#8 DER, base64).
const FUZZ_LEAF_KEY_BASE64: &[&str] = &[
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkGjoNcvWGDnvBEZICdbJDjiK8p/Er4/t",
    "aAUfn81yq56hRANCAASlaQB/hM/V3MNgnmOS/V9oYh7b8YBCdVZxErGizJccgscWo2/x8BWZvcxAAitt",
    "DGdv7T6i7DrXj0qWK9zNdWau",
];

/// Fuzzes [`Secured`]`<`[`Pop3Session`]`>` with a real rustls client (all in memory):
/// garbage instead of a handshake, STLS, implicit TLS, and the [`pop3_session`] script
/// carried inside TLS records.
///
/// Input as in [`pop3_session`], with `data[0]` bit 3 for an implicit-TLS connection
/// (the client starts with a ClientHello; otherwise STLS is always available) and two
/// more operations:
///
/// | op | meaning |
/// | --- | --- |
/// | `H` | the client starts TLS now (after STLS, or at any other time) |
/// | `G` *line* | raw bytes on the wire, behind the client's back (up to and including the next LF) |
///
/// Invariants as in [`pop3_session`], checked on the plaintext the client decrypts; in
/// addition `StartTls` never reaches the shell ([`Secured`] consumes it). After a TLS
/// failure the wrapped session may keep a deadline, so a closed connection is only
/// required to emit nothing more and to refuse input. Every plaintext chunk the layer
/// hands to the session counts as input, so a shell that honours `wants_read` must
/// never see the input-overflow reply here either.
pub fn pop3_tls_session(epoch: Instant, tls: &FuzzTls, data: &[u8]) {
    run_session(epoch, Some(tls), data, None);
}

fn run_session(
    epoch: Instant,
    tls: Option<&FuzzTls>,
    data: &[u8],
    log: Option<&mut dyn FnMut(&str)>,
) {
    let Some((&conn_byte, script)) = data.split_first() else {
        return;
    };
    let mut script = Script { rest: script };
    match tls {
        None => {
            let mut harness = SessionHarness::plain(epoch, conn_byte, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
        Some(tls) => {
            let mut harness = SessionHarness::secured(epoch, conn_byte, tls, log);
            while let Some(tag) = script.byte() {
                harness.step(tag, &mut script);
            }
            harness.finish();
        }
    }
}

/// The unread part of a [`pop3_session`] script.
struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// Bytes up to and including the next LF, or all that is left.
    fn line(&mut self) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |lf| lf + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        line
    }
}

/// What the harness needs to know about the session under test beyond [`Session`].
trait Driven: Session {
    /// The session's own view that it has closed.
    fn is_closed(&self) -> bool;
    /// Whether a closed session must have disarmed every deadline.
    const DISARMS_ON_CLOSE: bool;
    /// Whether [`Action::StartTls`] may reach the shell.
    const SHOWS_START_TLS: bool;
}

impl Driven for Pop3Session {
    fn is_closed(&self) -> bool {
        Pop3Session::is_closed(self)
    }
    const DISARMS_ON_CLOSE: bool = true;
    const SHOWS_START_TLS: bool = true;
}

impl Driven for Secured<Pop3Session> {
    fn is_closed(&self) -> bool {
        // A TLS failure closes the connection while the POP3 session stays open inside.
        !self.wants_read(Peer::Client)
    }
    const DISARMS_ON_CLOSE: bool = false;
    const SHOWS_START_TLS: bool = false;
}

/// The client's end of the connection: plain, or a rustls client once TLS started.
struct Client {
    config: Option<Arc<ClientConfig>>,
    tls: Option<Box<ClientConnection>>,
    /// The client's TLS failed (it got bytes it cannot decrypt): it can no longer tell
    /// what the session wrote.
    broken: bool,
}

impl Client {
    /// The client sends `plain`; its bytes on the wire go to `socket`.
    fn send(&mut self, plain: &[u8], socket: &mut Vec<u8>) {
        match self.tls.as_mut() {
            None => socket.extend_from_slice(plain),
            Some(tls) => {
                // Past rustls' buffer limit the rest is dropped, as a blocked client would.
                let _ = tls.writer().write(plain);
                Self::flush(tls, socket);
            }
        }
    }

    fn flush(tls: &mut ClientConnection, socket: &mut Vec<u8>) {
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The client starts TLS (sends its ClientHello). False if it cannot.
    fn start_tls(&mut self, socket: &mut Vec<u8>) -> bool {
        let Some(config) = self.config.clone().filter(|_| self.tls.is_none()) else {
            return false;
        };
        let name = ServerName::try_from("localhost").expect("a valid DNS name");
        let mut tls = Box::new(ClientConnection::new(config, name).expect("client config"));
        Self::flush(&mut tls, socket);
        self.tls = Some(tls);
        true
    }

    /// The client receives `bytes` from the session; returns the plaintext, or `None`
    /// once it cannot tell (its TLS failed). Handshake replies go to `socket`.
    fn receive(&mut self, bytes: &[u8], socket: &mut Vec<u8>) -> Option<Vec<u8>> {
        if self.broken {
            return None;
        }
        let Some(tls) = self.tls.as_mut() else {
            return Some(bytes.to_vec());
        };
        let mut rest = bytes;
        let mut plain = Vec::new();
        while !rest.is_empty() {
            let ok = tls.read_tls(&mut rest).is_ok() && tls.process_new_packets().is_ok();
            if !ok {
                self.broken = true;
                return None;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&buf[..n]);
            }
        }
        Self::flush(tls, socket);
        Some(plain)
    }
}

/// A request the harness (the store) has not answered yet.
#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    /// When the session will give up on it.
    deadline: Instant,
    /// `handle_timeout` ran at or after the deadline: the session no longer waits.
    abandoned: bool,
    /// For a `ReadMessage`: its offset and `max_len`.
    read: Option<(u64, usize)>,
}

/// A shell, a store and a client around one session, checking the driving contract at
/// every step.
struct SessionHarness<'log, S> {
    log: Option<&'log mut dyn FnMut(&str)>,
    session: S,
    cfg: Arc<Pop3Config>,
    client: Client,
    starttls_available: bool,
    epoch: Instant,
    now: Instant,
    /// Bytes on the wire towards the session that the shell has not read.
    socket: Vec<u8>,
    closed: bool,
    last_id: Option<RequestId>,
    outstanding: Option<Outstanding>,
    /// Ids answered or given up on, newest last (for late replies).
    old_ids: Vec<RequestId>,
    /// Where the next chunk of the message being read starts.
    next_offset: Option<u64>,
    /// Plaintext the client received since the last `handle_drained`.
    unflushed: usize,
    output_bound: usize,
}

/// The session settings and connection facts chosen by `conn_byte` (see [`pop3_session`]).
fn session_setup(conn_byte: u8) -> (Arc<Pop3Config>, ConnInfo) {
    let mut cfg = Pop3Config::default();
    if conn_byte & 1 != 0 {
        cfg.limits = Pop3Limits {
            max_line: 64,
            max_buffered_input: 256,
            output_high_water: 512,
            read_chunk: 32,
            ..Pop3Limits::default()
        };
    }
    let conn = ConnInfo {
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 50_000),
        implicit_tls: false,
        starttls_available: conn_byte & 2 != 0,
        plaintext_auth: conn_byte & 4 == 0,
    };
    (Arc::new(cfg), conn)
}

impl<'log> SessionHarness<'log, Pop3Session> {
    fn plain(epoch: Instant, conn_byte: u8, log: Option<&'log mut dyn FnMut(&str)>) -> Self {
        let (cfg, conn) = session_setup(conn_byte);
        let session = Pop3Session::new(cfg.clone(), conn.clone(), epoch);
        let client = Client {
            config: None,
            tls: None,
            broken: false,
        };
        SessionHarness::new(epoch, session, cfg, &conn, client, log)
    }
}

impl<'log> SessionHarness<'log, Secured<Pop3Session>> {
    fn secured(
        epoch: Instant,
        conn_byte: u8,
        tls: &FuzzTls,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let (cfg, mut conn) = session_setup(conn_byte);
        conn.implicit_tls = conn_byte & 8 != 0;
        conn.starttls_available = !conn.implicit_tls;
        let session = Pop3Session::new(cfg.clone(), conn.clone(), epoch);
        let session = if conn.implicit_tls {
            Secured::implicit(session, tls.server.clone()).expect("server config")
        } else {
            Secured::plain(session, Some(tls.server.clone()))
        };
        let client = Client {
            config: Some(tls.client.clone()),
            tls: None,
            broken: false,
        };
        let mut harness = SessionHarness::new(epoch, session, cfg, &conn, client, log);
        if conn.implicit_tls {
            harness.client.start_tls(&mut harness.socket);
        }
        harness
    }
}

impl<'log, S: Driven> SessionHarness<'log, S> {
    fn new(
        epoch: Instant,
        session: S,
        cfg: Arc<Pop3Config>,
        conn: &ConnInfo,
        client: Client,
        log: Option<&'log mut dyn FnMut(&str)>,
    ) -> Self {
        let output_bound =
            cfg.limits.output_high_water + 2 * cfg.limits.read_chunk + SESSION_OUTPUT_SLACK;
        let mut harness = SessionHarness {
            log,
            session,
            cfg,
            client,
            starttls_available: conn.starttls_available,
            epoch,
            now: epoch,
            socket: Vec::new(),
            closed: false,
            last_id: None,
            outstanding: None,
            old_ids: Vec::new(),
            next_offset: None,
            unflushed: 0,
            output_bound,
        };
        let greeting = harness.drain();
        assert!(
            conn.implicit_tls || greeting.starts_with(b"+OK"),
            "greeting {greeting:?}"
        );
        harness
    }

    fn trace(&mut self, event: impl FnOnce() -> String) {
        if let Some(log) = self.log.as_mut() {
            log(&event());
        }
    }

    /// True while the session waits for the store (it must not parse pipelined input).
    fn waiting_for_store(&self) -> bool {
        self.outstanding.as_ref().is_some_and(|o| !o.abandoned)
    }

    /// The client sends `bytes` (plaintext; encrypted if its TLS is on).
    fn send(&mut self, bytes: &[u8]) {
        if self.client.tls.is_some() {
            self.trace(|| format!("c: {}", bytes.escape_ascii()));
        }
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
            b'X' | b'Y' => {
                let pattern: &[u8] = if tag == b'X' { b"CAPA\r\n" } else { b"x" };
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
            b'D' => {
                self.trace(|| "* drained".into());
                self.unflushed = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.drain();
            }
            b'A' => {
                let kind = script.byte().unwrap_or(b'o');
                match self.outstanding.take() {
                    Some(outstanding) => self.answer(outstanding, kind, script),
                    None => self.late_reply(kind, script),
                }
            }
            b'L' => {
                let kind = script.byte().unwrap_or(b'o');
                self.late_reply(kind, script);
            }
            _ => {}
        }
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
        let waiting = self.waiting_for_store();
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
            // the protocol session must not act on the input: no new request, no reply.
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
        if let Some(outstanding) = self.outstanding.as_mut()
            && self.now >= outstanding.deadline
        {
            outstanding.abandoned = true;
        }
        self.session.handle_timeout(self.now);
        self.drain();
    }

    fn answer(&mut self, outstanding: Outstanding, kind: u8, script: &mut Script<'_>) {
        let max_len = outstanding.read.map_or(self.cfg.limits.read_chunk, |r| r.1);
        let reply = make_reply(kind, script, max_len);
        self.answer_with(outstanding, reply);
    }

    fn answer_with(&mut self, outstanding: Outstanding, reply: Reply) {
        self.old_ids.push(outstanding.id);
        if outstanding.abandoned {
            // The session gave up on it: this is a late reply.
            return self.late_reply_to(outstanding.id, reply);
        }
        self.next_offset = match (&reply, outstanding.read) {
            (Reply::Chunk { bytes, end: false }, Some((offset, _))) => {
                Some(offset + bytes.len() as u64)
            }
            _ => None,
        };
        self.trace(|| format!("* reply {:?} {reply:?}", outstanding.id));
        self.session.handle_reply(self.now, outstanding.id, reply);
        self.drain();
    }

    fn late_reply(&mut self, kind: u8, script: &mut Script<'_>) {
        let id = self.old_ids.last().copied().unwrap_or(RequestId(0));
        let reply = make_reply(kind, script, self.cfg.limits.read_chunk);
        self.late_reply_to(id, reply);
    }

    fn late_reply_to(&mut self, id: RequestId, reply: Reply) {
        self.trace(|| format!("* late reply {id:?} {reply:?}"));
        self.session.handle_reply(self.now, id, reply);
        let (actions, _) = self.drain_actions();
        assert!(
            actions.is_empty(),
            "a late reply to {id:?} was not ignored: {actions:?}"
        );
    }

    /// Drains the session's actions, checking each; returns the plaintext the client got.
    fn drain(&mut self) -> Vec<u8> {
        self.drain_actions().1.unwrap_or_default()
    }

    /// Drains the session's actions, checking each; returns them and the plaintext the
    /// client got from them (`None` if its TLS failed).
    fn drain_actions(&mut self) -> (Vec<Action>, Option<Vec<u8>>) {
        let mut actions = Vec::new();
        let mut plain = Some(Vec::new());
        while let Some(action) = self.session.poll_action() {
            self.check(&action);
            if let Action::Write { bytes, .. } = &action {
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
                        all.extend_from_slice(&p);
                    }
                    _ => plain = None,
                }
            } else {
                self.trace(|| format!("> {action:?}"));
            }
            actions.push(action);
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
                "an open session has no deadline (autologout)"
            );
        }
        (actions, plain)
    }

    fn check(&mut self, action: &Action) {
        assert!(!self.closed, "{action:?} after Close");
        match action {
            Action::Write { to, .. } => assert_eq!(*to, Peer::Client),
            Action::Request { id, request } => {
                assert!(
                    self.last_id.is_none_or(|last| *id > last),
                    "request id {id:?} after {:?}",
                    self.last_id
                );
                self.last_id = Some(*id);
                if let Some(previous) = self.outstanding.take() {
                    assert!(
                        previous.abandoned,
                        "{id:?} issued while {:?} is outstanding",
                        previous.id
                    );
                    self.old_ids.push(previous.id);
                }
                let read = match request {
                    Request::ReadMessage {
                        offset, max_len, ..
                    } => {
                        assert_eq!(*max_len, self.cfg.limits.read_chunk);
                        assert!(
                            *offset == 0 || Some(*offset) == self.next_offset,
                            "read at offset {offset}, the previous chunk ended at {:?}",
                            self.next_offset
                        );
                        Some((*offset, *max_len))
                    }
                    _ => None,
                };
                self.outstanding = Some(Outstanding {
                    id: *id,
                    deadline: self.now + self.cfg.store_timeout,
                    abandoned: false,
                    read,
                });
            }
            Action::StartTls { with } => {
                assert_eq!(*with, Peer::Client);
                assert!(S::SHOWS_START_TLS, "StartTls reached the shell");
                assert!(self.starttls_available, "StartTls without STLS available");
            }
            Action::Close { to } => {
                assert_eq!(*to, Peer::Client);
                self.closed = true;
            }
        }
    }

    /// Ends the connection. The client sends nothing more (EOF); from then on the store
    /// answers every request (with a temporary failure) and the client reads everything,
    /// and the session must close: it answers the commands it has buffered first, and
    /// only a timer (a failed login's delay, the autologout) may be needed on the way.
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
            if let Some(outstanding) = self.outstanding.take() {
                let reply = Reply::Failed(Failure::Temporary("shutting down".into()));
                self.answer_with(outstanding, reply);
            } else if self.unflushed > 0 {
                self.trace(|| "* drained".into());
                self.unflushed = 0;
                self.session.handle_drained(self.now, Peer::Client);
                self.drain();
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
        // Whatever comes now must be ignored.
        self.session
            .handle_input(self.now, Peer::Client, b"NOOP\r\n");
        self.session
            .handle_timeout(self.now + Duration::from_secs(3600));
        self.session.handle_drained(self.now, Peer::Client);
        if let Some(id) = self.last_id {
            self.session.handle_reply(self.now, id, Reply::Done);
        }
        self.drain();
    }
}

/// Steps [`SessionHarness::finish`] allows from EOF to the close: far more than the
/// commands that fit in the buffered input need.
const WIND_DOWN_STEPS: usize = 100_000;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The store's answer of kind `kind` (see [`pop3_session`]); chunk bytes are cut to
/// `max_len`.
fn make_reply(kind: u8, script: &mut Script<'_>, max_len: usize) -> Reply {
    const KINDS: &[u8] = b"adxigtpo0123cezZmwW";
    let kind = if KINDS.contains(&kind) {
        kind
    } else {
        KINDS[usize::from(kind) % KINDS.len()]
    };
    let chunk = |bytes: &[u8], end: bool| {
        let cut = bytes.len() > max_len;
        Reply::Chunk {
            bytes: Bytes::copy_from_slice(&bytes[..bytes.len().min(max_len)]),
            end: end && !cut,
        }
    };
    match kind {
        b'a' => Reply::Authenticated(Account("alice@example.org".into())),
        b'd' => Reply::Failed(Failure::Denied),
        b'x' => Reply::Failed(Failure::Disabled),
        b'i' => Reply::Failed(Failure::InUse),
        b'g' => Reply::Failed(Failure::Gone),
        b't' => Reply::Failed(Failure::Temporary("store unreachable".into())),
        b'p' => Reply::Failed(Failure::Permanent("mailbox broken".into())),
        b'0'..=b'3' => Reply::Listing(listing(usize::from(kind - b'0'))),
        b'c' => chunk(script.line(), false),
        b'e' => chunk(script.line(), true),
        b'w' | b'W' => {
            let n = usize::from(script.byte().unwrap_or(0)) + 1;
            let bytes: Vec<u8> = b".\n".iter().copied().cycle().take(n).collect();
            chunk(&bytes, kind == b'W')
        }
        b'z' => chunk(b"", false),
        b'Z' => chunk(b"", true),
        b'm' => chunk(
            b"From: bob@example.org\r\nSubject: hi\r\n\r\nline one\r\n.hidden dot\r\nbare lf\n.\r\n",
            true,
        ),
        _ => Reply::Done,
    }
}

/// A listing of `n` messages, alternately in new/ and cur/.
fn listing(n: usize) -> Vec<MessageInfo> {
    const SIZES: [u64; 3] = [120, 0, 4096];
    (0..n)
        .map(|i| {
            let unique = format!("17000000{i}.M{i}P4242.mail");
            let dir = if i % 2 == 0 { "new" } else { "cur" };
            MessageInfo {
                file: MessageRef(format!("{dir}/{unique}")),
                uid: unique,
                size: SIZES[i % SIZES.len()],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_helpers() {
        assert_eq!(normalise(b"a\nb\r\nc\r"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalise(b"x"), b"x\r\n");
        assert_eq!(normalise(b""), b"");
        assert_eq!(
            top_prefix(b"H: 1\r\n\r\nb1\r\nb2\r\n", 1),
            b"H: 1\r\n\r\nb1\r\n"
        );
        assert_eq!(top_prefix(b"H: 1\r\n\r\nb1\r\n", 0), b"H: 1\r\n\r\n");
        assert_eq!(top_prefix(b"H: 1\r\n", 0), b"H: 1\r\n");
        assert_eq!(
            reference_unstuff(b"..a\r\n.\r\nrest"),
            (b".a\r\n".to_vec(), Some(8))
        );
    }

    #[test]
    fn harnesses_accept_small_inputs() {
        for data in [&b""[..], b"\0", b"\0\0\0", b"\xff\xff\xffabc\r\n"] {
            pop3_command(data);
            line_framer(data);
            dot_stuffing(data);
        }
    }
}
