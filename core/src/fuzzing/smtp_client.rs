//! Harnesses for the SMTP client: the reply reader and the client session fed arbitrary
//! server bytes, EOF, deadlines and TLS results.

use std::time::{Duration, Instant};

use super::{Chunker, Script};
use crate::secret::Secret;
use crate::smtp_client::reply::{MAX_REPLY_LINE, MAX_REPLY_LINES};
use crate::smtp_client::{
    ClientConfig, ClientEvent, ClientSession, Envelope, ReplyReader, SmtpReply, StartTls,
};

/// The most bytes one harness feed hands the reply reader at once.
const MAX_FEED: usize = 64;

/// Fuzzes [`ReplyReader`]: `data[0..2]` seed the chunking, the rest is server bytes.
///
/// Invariants: no panic; the same replies whether the bytes come whole or chunked (up to
/// and including the first error, after which the reader drops what it holds); every
/// reply has a code from 200 to 599, 1 to [`MAX_REPLY_LINES`] lines of at most
/// [`MAX_REPLY_LINE`] bytes without control characters, an enhanced code whose class
/// matches the code, and survives re-encoding (when the text, with invalid UTF-8 made
/// U+FFFD, still fits a line); bytes held stay under one line plus one feed.
pub fn smtp_reply(data: &[u8]) {
    let Some((seed, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let whole = read_replies(&[bytes], usize::MAX);
    let mut chunker = Chunker::new(u16::from_le_bytes(*seed), MAX_FEED);
    let chunked = read_replies(&chunker.split(bytes), MAX_REPLY_LINE + 2 + MAX_FEED);
    let upto_error = |r: &[Result<SmtpReply, String>]| match r.iter().position(Result::is_err) {
        Some(i) => r[..=i].to_vec(),
        None => r.to_vec(),
    };
    let (whole, chunked) = (upto_error(&whole), upto_error(&chunked));
    assert_eq!(whole, chunked, "chunking changed the replies");
    for reply in whole.iter().flatten() {
        check_reply(reply);
        // Invalid UTF-8 became U+FFFD (three octets each): such a line may no longer
        // fit the limit, so only lines that still fit are re-encoded.
        if reply.lines.iter().any(|l| l.len() + 4 > MAX_REPLY_LINE) {
            continue;
        }
        let mut wire = Vec::new();
        for (i, line) in reply.lines.iter().enumerate() {
            let sep = if i + 1 == reply.lines.len() { ' ' } else { '-' };
            wire.extend_from_slice(format!("{}{sep}{line}\r\n", reply.code).as_bytes());
        }
        let again = read_replies(&[&wire], usize::MAX);
        assert_eq!(again, vec![Ok(reply.clone())], "re-encoded reply differs");
    }
}

fn read_replies(chunks: &[&[u8]], max_buffered: usize) -> Vec<Result<SmtpReply, String>> {
    let mut reader = ReplyReader::new();
    let mut out = Vec::new();
    for chunk in chunks {
        reader.push(chunk);
        while let Some(next) = reader.next_reply() {
            out.push(next.map_err(|e| e.to_string()));
        }
        assert!(reader.buffered() <= max_buffered, "reader holds too much");
        assert!(reader.partial_lines() <= MAX_REPLY_LINES);
    }
    out
}

fn check_reply(reply: &SmtpReply) {
    assert!((200..600).contains(&reply.code));
    assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
    for line in &reply.lines {
        assert!(line.len() <= 3 * MAX_REPLY_LINE, "line too long");
        assert!(
            !line.chars().any(char::is_control),
            "control character kept"
        );
    }
    assert!(!reply.text().chars().any(char::is_control));
    if let Some((class, _, _)) = reply.enhanced {
        assert_eq!(u16::from(class), reply.code / 100);
    }
}

/// Fuzzes [`ClientSession`] against an arbitrary server.
///
/// `data[0]` is the configuration: bits 0–1 the STARTTLS policy (0 disabled, 1
/// opportunistic, 2 and 3 required), bit 2 AUTH credentials, bit 3 AUTH in plaintext
/// allowed, bit 4 an 8-bit body, bit 5 SMTPUTF8, bit 6 reading the body fails at its
/// second chunk, bit 7 a body chunk of 7 bytes (else 64 KiB). `data[1]`: the number of
/// recipients (low two bits, plus one), LMTP mode (bit 2, RFC 2033), connection reuse
/// (bit 3, [`ClientConfig::reuse`]), an XCLIENT client in the envelope (bit 4,
/// Postfix `XCLIENT_README`) and the chunking seed. Then a script: `#` *n*
/// feeds the next *n* bytes (chunked); `E` EOF; `I` an I/O error; `T` 61 seconds pass;
/// `D` time jumps to the deadline; `S` / `F` the TLS handshake succeeds / fails; with
/// reuse, `N` starts the next message when the session is idle and `Q` ends an idle
/// session; any other byte starts a line (up to LF) fed as server bytes.
///
/// Invariants: no panic; exactly one `Finished` per transaction, all before `Close`,
/// nothing after `Close`, and the session ends when the server hangs up; an idle
/// session has reported every transaction and has no deadline; recipient results match
/// the recipients; credentials only inside TLS unless plaintext AUTH is allowed; no MAIL
/// before TLS under the required policy; no bytes sent between `StartTls` and the
/// handshake's end; in LMTP mode never HELO or BDAT; the reader holds at most one line; while the session waits for the
/// server it always has a deadline; every write is bounded.
pub fn smtp_client_session(start: Instant, data: &[u8]) {
    let Some(([flags, shape], script)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (flags, shape) = (*flags, *shape);
    let mut config = ClientConfig::new("client.example");
    config.starttls = match flags & 3 {
        0 => StartTls::Disabled,
        1 => StartTls::Opportunistic,
        _ => StartTls::Required,
    };
    if flags & 4 != 0 {
        config.auth = Some(("user".into(), Secret::new(b"pass".to_vec())));
    }
    config.auth_plaintext = flags & 8 != 0;
    config.body_chunk = if flags & 128 != 0 { 7 } else { 64 * 1024 };
    config.lmtp = shape & 4 != 0;
    config.reuse = shape & 8 != 0;
    let recipients = usize::from(shape & 3) + 1;
    let envelope = Envelope {
        mail_from: "alice@example.com".into(),
        recipients: (0..recipients)
            .map(|i| format!("r{i}@example.net"))
            .collect(),
        size: 40,
        eight_bit: flags & 16 != 0,
        smtputf8: flags & 32 != 0,
        xclient: (shape & 16 != 0).then(|| {
            Box::new(crate::proxy::xclient::Xclient {
                addr: Some(std::net::IpAddr::from([192, 0, 2, 7])),
                port: Some(40_000),
                helo: Some("client.example".into()),
                proto: Some("ESMTP".into()),
                ..Default::default()
            })
        }),
    };
    let mut run = Run {
        session: ClientSession::new(config.clone(), envelope.clone(), start),
        envelope,
        transactions: 1,
        now: start,
        config,
        recipients,
        body_fails: flags & 64 != 0,
        body: b"Subject: fuzz\r\n\r\n.dot line\r\nbody\r\n".as_slice(),
        body_reads: 0,
        tls_asked: false,
        tls_up: false,
        reports: 0,
        closed: false,
    };
    let body = run.body;
    run.drain();
    let mut chunker = Chunker::new((u16::from(shape) << 2) | 1, MAX_FEED);
    let mut script = Script { rest: script };
    while let Some(op) = script.byte() {
        match op {
            b'#' => {
                let n = usize::from(script.byte().unwrap_or(0));
                let (bytes, rest) = script.rest.split_at(n.min(script.rest.len()));
                script.rest = rest;
                for chunk in chunker.split(bytes) {
                    run.input(chunk);
                }
            }
            b'E' => run.session.handle_eof(run.now),
            b'I' => run.session.handle_io_error(run.now, "fuzz"),
            b'T' => {
                run.now += Duration::from_secs(61);
                run.session.handle_timeout(run.now);
            }
            b'D' => {
                if let Some(deadline) = run.session.poll_timeout() {
                    run.now = run.now.max(deadline);
                }
                run.session.handle_timeout(run.now);
            }
            b'N' if run.config.reuse && run.session.is_idle() => {
                assert_eq!(run.reports, run.transactions, "idle with a report missing");
                // The next message, with a different recipient count now and then.
                let mut next = run.envelope.clone();
                if run.transactions % 2 == 1 {
                    next.recipients.truncate(1);
                }
                run.recipients = next.recipients.len();
                run.body = body;
                run.body_reads = 0;
                run.transactions += 1;
                assert!(run.session.start_next(run.now, next).is_ok());
            }
            b'Q' if run.config.reuse => run.session.end(run.now),
            b'S' | b'F' if run.tls_asked => {
                run.tls_asked = false;
                if op == b'S' {
                    run.tls_up = true;
                    run.session.handle_tls_ready(run.now);
                } else {
                    run.session.handle_tls_failed(run.now, "fuzz");
                }
            }
            _ => {
                let rest = script.line();
                let mut line = vec![op];
                line.extend_from_slice(rest);
                run.input(&line);
            }
        }
        run.drain();
        run.check_waiting();
    }
    // The server hangs up: whatever the state, the session ends with one report.
    if run.tls_asked {
        run.session.handle_tls_failed(run.now, "fuzz: gone");
        run.drain();
    }
    run.session.handle_eof(run.now);
    run.drain();
    assert!(run.closed, "the session outlived the connection");
    assert_eq!(run.reports, run.transactions, "one report per transaction");
}

/// One harness run's state.
struct Run<'a> {
    session: ClientSession,
    /// The first message's envelope (later ones are made from it).
    envelope: Envelope,
    /// Transactions started.
    transactions: usize,
    now: Instant,
    config: ClientConfig,
    recipients: usize,
    body_fails: bool,
    body: &'a [u8],
    body_reads: usize,
    tls_asked: bool,
    tls_up: bool,
    reports: usize,
    closed: bool,
}

impl Run<'_> {
    fn input(&mut self, bytes: &[u8]) {
        self.session.handle_input(self.now, bytes);
        assert!(
            self.session.buffered() <= MAX_REPLY_LINE + 1,
            "the session holds more than one line"
        );
        self.drain();
    }

    fn drain(&mut self) {
        let mut events = 0;
        while let Some(event) = self.session.poll_event() {
            events += 1;
            assert!(events <= 64, "an input produced too many events");
            assert!(!self.closed, "{event:?} after Close");
            match event {
                ClientEvent::Send(bytes) => self.sent(&bytes),
                ClientEvent::StartTls => {
                    assert!(!self.tls_asked && !self.tls_up, "STARTTLS twice");
                    assert!(self.config.starttls != StartTls::Disabled);
                    self.tls_asked = true;
                }
                ClientEvent::ReadBody { max } => {
                    assert!(max > 0 && max <= self.config.body_chunk);
                    self.body_reads += 1;
                    if self.body_fails && self.body_reads == 2 {
                        self.session.handle_body_error(self.now, "fuzz");
                    } else {
                        let n = max.min(self.body.len());
                        let (chunk, rest) = self.body.split_at(n);
                        self.body = rest;
                        self.session.handle_body(self.now, chunk, chunk.is_empty());
                    }
                }
                ClientEvent::Finished(report) => {
                    self.reports += 1;
                    assert!(self.reports <= self.transactions, "a second report");
                    if let Ok(results) = report {
                        assert_eq!(results.len(), self.recipients);
                    }
                }
                ClientEvent::Close => {
                    assert_eq!(self.reports, self.transactions, "Close before the report");
                    self.closed = true;
                }
            }
        }
    }

    fn sent(&mut self, bytes: &[u8]) {
        assert!(!self.tls_asked, "bytes sent during the TLS handshake");
        assert!(
            bytes.len() <= 2 * self.config.body_chunk + 1024,
            "an unbounded write"
        );
        if bytes.starts_with(b"AUTH") {
            assert!(
                self.tls_up || self.config.auth_plaintext,
                "credentials in clear"
            );
        }
        if self.config.lmtp {
            assert!(
                !bytes.starts_with(b"HELO") && !bytes.starts_with(b"BDAT"),
                "an SMTP command in LMTP mode"
            );
        }
        if bytes.starts_with(b"MAIL") && self.config.starttls == StartTls::Required {
            assert!(self.tls_up, "MAIL before TLS although TLS is required");
        }
    }

    /// A session that waits for the server must have a deadline, or a blocking driver
    /// would wait for ever.
    fn check_waiting(&self) {
        if self.session.is_idle() {
            assert_eq!(
                self.session.poll_timeout(),
                None,
                "an idle session has a deadline"
            );
            assert_eq!(self.reports, self.transactions, "idle before the report");
        } else if !self.closed && !self.tls_asked {
            assert!(
                self.session.poll_timeout().is_some(),
                "waiting without a deadline"
            );
        }
    }
}
