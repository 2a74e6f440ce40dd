//! The SMTP client session, byte for byte: scripted server replies in, exact client
//! bytes out, and the final report. Every script runs with the server's bytes whole, one
//! byte at a time, and split at every position of every reply.

use std::time::{Duration, Instant};

use tidegate_core::proxy::xclient::Xclient;
use tidegate_core::secret::Secret;
use tidegate_core::smtp_client::{
    ClientConfig, ClientEvent, ClientSession, Envelope, Failure, RecipientResult, RecipientStatus,
    Report, SmtpReply, StartTls,
};

/// One step of a dialogue.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The server sends these bytes.
    S(&'static str),
    /// The client must have sent exactly these bytes since the last check.
    C(&'static str),
    /// The client must have asked for a TLS handshake; it succeeds.
    TlsUp,
    /// The client must have asked for a TLS handshake; it fails.
    TlsFails,
    /// Time passes.
    Wait(u64),
    /// The server closes the connection.
    Eof,
    /// The session must be idle ([`ClientConfig::reuse`]); the next message goes to
    /// these recipients (the same body).
    Next(&'static [&'static str]),
    /// Like `Next`, with the first envelope's XCLIENT client at this port instead.
    NextFrom(&'static [&'static str], u16),
    /// `start_next` with an envelope naming no client must be refused.
    RefusedAnonymous(&'static [&'static str]),
    /// The session must be idle; the driver ends the connection.
    End,
}
use Step::*;

/// How server bytes are cut before they reach the session.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Whole,
    Bytes,
    At(usize),
}

#[derive(Debug)]
struct Outcome {
    report: Option<Report>,
    reports: usize,
    /// Every report, in order (one per transaction).
    all: Vec<Report>,
    closed: bool,
    /// Idle at the end of the script.
    idle: bool,
}

struct Harness {
    session: ClientSession,
    now: Instant,
    body: Vec<u8>,
    body_pos: usize,
    sent: Vec<u8>,
    checked: usize,
    tls_asked: bool,
    report: Option<Report>,
    reports: usize,
    all: Vec<Report>,
    closed: bool,
}

impl Harness {
    fn drain(&mut self) {
        while let Some(event) = self.session.poll_event() {
            assert!(!self.closed, "event after Close: {event:?}");
            match event {
                ClientEvent::Send(bytes) => self.sent.extend_from_slice(&bytes),
                ClientEvent::StartTls => {
                    assert!(!self.tls_asked);
                    self.tls_asked = true;
                }
                ClientEvent::ReadBody { max } => {
                    let end = (self.body_pos + max).min(self.body.len());
                    let chunk = self.body[self.body_pos..end].to_vec();
                    self.body_pos = end;
                    let last = chunk.is_empty();
                    self.session.handle_body(self.now, &chunk, last);
                }
                ClientEvent::Finished(report) => {
                    self.reports += 1;
                    self.all.push(report.clone());
                    self.report = Some(report);
                }
                ClientEvent::Close => self.closed = true,
            }
        }
    }
}

fn run(
    config: &ClientConfig,
    envelope: &Envelope,
    body: &[u8],
    script: &[Step],
    cut: Cut,
) -> Outcome {
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut h = Harness {
        session: ClientSession::new(config.clone(), envelope.clone(), start),
        now: start,
        body: body.to_vec(),
        body_pos: 0,
        sent: Vec::new(),
        checked: 0,
        tls_asked: false,
        report: None,
        reports: 0,
        all: Vec::new(),
        closed: false,
    };
    h.drain();
    for (i, step) in script.iter().enumerate() {
        match *step {
            S(text) => {
                let bytes = text.as_bytes();
                let pieces: Vec<&[u8]> = match cut {
                    Cut::Whole => vec![bytes],
                    Cut::Bytes => bytes.chunks(1).collect(),
                    Cut::At(k) => {
                        let k = k.min(bytes.len());
                        vec![&bytes[..k], &bytes[k..]]
                    }
                };
                for piece in pieces {
                    h.session.handle_input(h.now, piece);
                    h.drain();
                }
            }
            C(expected) => {
                let got = String::from_utf8_lossy(&h.sent[h.checked..]).into_owned();
                assert_eq!(got, expected, "step {i} ({cut:?})");
                h.checked = h.sent.len();
            }
            TlsUp | TlsFails => {
                assert!(h.tls_asked, "step {i}: no StartTls ({cut:?})");
                h.tls_asked = false;
                if matches!(step, TlsUp) {
                    h.session.handle_tls_ready(h.now);
                } else {
                    h.session.handle_tls_failed(h.now, "bad certificate");
                }
                h.drain();
            }
            Wait(secs) => {
                h.now += Duration::from_secs(secs);
                if h.session.poll_timeout().is_some_and(|d| d <= h.now) {
                    h.session.handle_timeout(h.now);
                }
                h.drain();
            }
            Eof => {
                h.session.handle_eof(h.now);
                h.drain();
            }
            Next(recipients) => {
                assert!(h.session.is_idle(), "step {i}: not idle ({cut:?})");
                assert_eq!(
                    h.session.poll_timeout(),
                    None,
                    "an idle session has no deadline"
                );
                h.body_pos = 0;
                h.session
                    .start_next(h.now, self::envelope(recipients))
                    .expect("an idle session takes the next message");
                h.drain();
            }
            NextFrom(recipients, port) => {
                assert!(h.session.is_idle(), "step {i}: not idle ({cut:?})");
                h.body_pos = 0;
                let next = Envelope {
                    xclient: envelope.xclient.clone().map(|x| {
                        Box::new(Xclient {
                            port: Some(port),
                            ..*x
                        })
                    }),
                    ..self::envelope(recipients)
                };
                h.session
                    .start_next(h.now, next)
                    .expect("an idle session takes the next message");
                h.drain();
            }
            RefusedAnonymous(recipients) => {
                assert!(h.session.is_idle(), "step {i}: not idle ({cut:?})");
                assert!(
                    h.session
                        .start_next(h.now, self::envelope(recipients))
                        .is_err(),
                    "step {i}: a message without a client was taken after XCLIENT"
                );
                assert!(
                    h.session.is_idle(),
                    "step {i}: the refusal changed the session"
                );
                h.drain();
            }
            End => {
                assert!(h.session.is_idle(), "step {i}: not idle ({cut:?})");
                h.session.end(h.now);
                h.drain();
            }
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&h.sent[h.checked..]),
        "",
        "unchecked client bytes ({cut:?})"
    );
    Outcome {
        report: h.report,
        reports: h.reports,
        idle: h.session.is_idle(),
        all: h.all,
        closed: h.closed,
    }
}

/// Like [`dialogue`] for a reused connection: every cut agrees; returns every report.
fn dialogues(config: &ClientConfig, envelope: &Envelope, script: &[Step]) -> Vec<Report> {
    let whole = run(config, envelope, BODY, script, Cut::Whole);
    let longest = script
        .iter()
        .map(|s| if let S(t) = s { t.len() } else { 0 })
        .max()
        .unwrap_or(0);
    let mut cuts = vec![Cut::Bytes];
    cuts.extend((1..longest).map(Cut::At));
    for cut in cuts {
        let other = run(config, envelope, BODY, script, cut);
        assert_eq!(other.all, whole.all, "{cut:?}");
        assert_eq!(
            (other.closed, other.idle),
            (whole.closed, whole.idle),
            "{cut:?}"
        );
    }
    whole.all
}

/// Runs the script under every cut and checks they all agree; returns the report.
fn dialogue(config: &ClientConfig, envelope: &Envelope, body: &[u8], script: &[Step]) -> Report {
    let whole = run(config, envelope, body, script, Cut::Whole);
    assert_eq!(whole.reports, 1, "exactly one report");
    let longest = script
        .iter()
        .map(|s| if let S(t) = s { t.len() } else { 0 })
        .max()
        .unwrap_or(0);
    let mut cuts = vec![Cut::Bytes];
    cuts.extend((1..longest).map(Cut::At));
    for cut in cuts {
        let other = run(config, envelope, body, script, cut);
        assert_eq!(other.report, whole.report, "{cut:?}");
        assert_eq!(other.closed, whole.closed, "{cut:?}");
        assert_eq!(other.reports, 1, "{cut:?}");
    }
    whole.report.expect("a report")
}

fn config() -> ClientConfig {
    let mut config = ClientConfig::new("client.example");
    config.starttls = StartTls::Disabled;
    config
}

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        mail_from: "alice@example.com".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        size: 18,
        eight_bit: false,
        smtputf8: false,
        xclient: None,
    }
}

const BODY: &[u8] = b"Subject: hi\r\n\r\nyo\r\n";

fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> SmtpReply {
    SmtpReply {
        code,
        enhanced,
        lines: vec![text.to_string()],
    }
}

fn statuses(report: &Report) -> Vec<RecipientStatus> {
    report
        .as_ref()
        .expect("recipient results")
        .iter()
        .map(|r| r.status)
        .collect()
}

fn failure_of(report: Report) -> Failure {
    report.expect_err("a failure")
}

#[test]
fn one_command_at_a_time_with_data_and_a_refused_recipient() {
    let report = dialogue(
        &config(),
        &envelope(&["bob@example.net", "nobody@example.net"]),
        b"Subject: hi\r\n\r\n.dot\r\n",
        &[
            S("220 mx.example.net ESMTP\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx.example.net\r\n250 SIZE 1000\r\n"),
            C("MAIL FROM:<alice@example.com> SIZE=18\r\n"),
            S("250 2.1.0 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("250 2.1.5 ok\r\n"),
            C("RCPT TO:<nobody@example.net>\r\n"),
            S("550 5.1.1 no such user\r\n"),
            C("DATA\r\n"),
            S("354 go ahead\r\n"),
            C("Subject: hi\r\n\r\n..dot\r\n.\r\n"),
            S("250 2.0.0 queued as X\r\n"),
            C("QUIT\r\n"),
            S("221 2.0.0 bye\r\n"),
        ],
    );
    assert_eq!(
        report,
        Ok(vec![
            RecipientResult {
                status: RecipientStatus::Delivered,
                reply: reply(250, Some((2, 0, 0)), "2.0.0 queued as X"),
            },
            RecipientResult {
                status: RecipientStatus::Failed,
                reply: reply(550, Some((5, 1, 1)), "5.1.1 no such user"),
            },
        ])
    );
}

#[test]
fn pipelining_sends_mail_rcpts_and_data_as_one_group() {
    let report = dialogue(
        &config(),
        &envelope(&["a@example.net", "b@example.net", "c@example.net"]),
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
            C(
                "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
            ),
            S("250 ok\r\n250 ok\r\n451 4.2.1 try later\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 done\r\n"),
            C("QUIT\r\n"),
            Eof,
        ],
    );
    assert_eq!(
        statuses(&report),
        vec![
            RecipientStatus::Delivered,
            RecipientStatus::Deferred,
            RecipientStatus::Delivered
        ]
    );
    assert_eq!(report.unwrap()[1].reply.text(), "451 4.2.1 try later");
}

#[test]
fn helo_after_ehlo_is_not_implemented() {
    let report = dialogue(
        &config(),
        &envelope(&["bob@example.net"]),
        BODY,
        &[
            S("220 old\r\n"),
            C("EHLO client.example\r\n"),
            S("502 command not implemented\r\n"),
            C("HELO client.example\r\n"),
            S("250 old\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("250 ok\r\n"),
            C("DATA\r\n"),
            S("354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("451 4.3.0 disk full\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Deferred]);
}

#[test]
fn refused_greetings_fail_the_attempt() {
    for (greeting, permanent) in [
        ("554 5.7.1 go away\r\n", true),
        ("421 4.3.2 busy\r\n", false),
    ] {
        let report = dialogue(
            &config(),
            &envelope(&["bob@example.net"]),
            BODY,
            &[S(greeting), C("QUIT\r\n"), S("221 bye\r\n")],
        );
        let failure = failure_of(report);
        assert_eq!(failure.permanent, permanent);
        assert_eq!(
            failure.reply.unwrap().text(),
            greeting.trim_end().to_string()
        );
    }
}

#[test]
fn opportunistic_starttls_discards_plaintext_after_220_and_says_ehlo_again() {
    let mut config = config();
    config.starttls = StartTls::Opportunistic;
    let report = dialogue(
        &config,
        &envelope(&["bob@example.net"]),
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 STARTTLS\r\n"),
            C("STARTTLS\r\n"),
            // An injected reply in the same packet must not count (RFC 3207 §4.2).
            S("220 go ahead\r\n250 injected\r\n"),
            TlsUp,
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Delivered]);
}

#[test]
fn opportunistic_starttls_refused_goes_on_in_plaintext() {
    let mut config = config();
    config.starttls = StartTls::Opportunistic;
    let report = dialogue(
        &config,
        &envelope(&["bob@example.net"]),
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 STARTTLS\r\n"),
            C("STARTTLS\r\n"),
            S("454 4.7.0 TLS not available\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("550 no\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Failed]);
}

#[test]
fn required_starttls_missing_refused_or_failing_is_temporary() {
    let mut config = config();
    config.starttls = StartTls::Required;
    let env = envelope(&["bob@example.net"]);
    let missing = failure_of(dialogue(
        &config,
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ));
    assert!(!missing.permanent);
    assert!(
        missing.detail.contains("STARTTLS is required"),
        "{missing:?}"
    );
    let refused = failure_of(dialogue(
        &config,
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 STARTTLS\r\n"),
            C("STARTTLS\r\n"),
            S("554 5.7.3 no TLS for you\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ));
    assert!(!refused.permanent, "a TLS refusal never bounces");
    let broken = run(
        &config,
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 STARTTLS\r\n"),
            C("STARTTLS\r\n"),
            S("220 go\r\n"),
            TlsFails,
        ],
        Cut::Whole,
    );
    assert!(broken.closed);
    let failure = failure_of(broken.report.unwrap());
    assert!(!failure.permanent);
    assert!(failure.detail.contains("bad certificate"), "{failure:?}");
}

#[test]
fn auth_plain_over_tls_and_login_when_plain_is_missing() {
    let mut config = config();
    config.starttls = StartTls::Required;
    config.auth = Some(("user".into(), Secret::new(b"pass".to_vec())));
    let mut env = envelope(&["bob@example.net"]);
    env.size = 0;
    let prelude = [
        S("220 mx\r\n"),
        C("EHLO client.example\r\n"),
        S("250-mx\r\n250 STARTTLS\r\n"),
        C("STARTTLS\r\n"),
        S("220 go\r\n"),
        TlsUp,
        C("EHLO client.example\r\n"),
    ];
    let tail = [
        C("MAIL FROM:<alice@example.com>\r\n"),
        S("250 ok\r\n"),
        C("RCPT TO:<bob@example.net>\r\n"),
        S("250 ok\r\n"),
        C("DATA\r\n"),
        S("354 go\r\n"),
        C(".\r\n"),
        S("250 ok\r\n"),
        C("QUIT\r\n"),
        S("221 bye\r\n"),
    ];
    let plain: Vec<Step> = prelude
        .iter()
        .copied()
        .chain([
            S("250-mx\r\n250 AUTH LOGIN PLAIN\r\n"),
            // base64("\0user\0pass")
            C("AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
            S("235 2.7.0 ok\r\n"),
        ])
        .chain(tail.iter().copied())
        .collect();
    assert_eq!(
        statuses(&dialogue(&config, &env, b"", &plain)),
        vec![RecipientStatus::Delivered]
    );
    let login: Vec<Step> = prelude
        .iter()
        .copied()
        .chain([
            S("250-mx\r\n250 AUTH=LOGIN\r\n"),
            C("AUTH LOGIN\r\n"),
            S("334 VXNlcm5hbWU6\r\n"),
            C("dXNlcg==\r\n"),
            S("334 UGFzc3dvcmQ6\r\n"),
            C("cGFzcw==\r\n"),
            S("235 ok\r\n"),
        ])
        .chain(tail.iter().copied())
        .collect();
    assert_eq!(
        statuses(&dialogue(&config, &env, b"", &login)),
        vec![RecipientStatus::Delivered]
    );
    let refused: Vec<Step> = prelude
        .iter()
        .copied()
        .chain([
            S("250-mx\r\n250 AUTH PLAIN\r\n"),
            C("AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
            S("535 5.7.8 bad credentials\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ])
        .collect();
    let failure = failure_of(dialogue(&config, &env, b"", &refused));
    assert!(!failure.permanent, "bad smarthost credentials never bounce");
    assert_eq!(failure.reply.unwrap().code, 535);
}

#[test]
fn no_credentials_in_plaintext_unless_allowed() {
    let mut config = config();
    config.auth = Some(("user".into(), Secret::new(b"pass".to_vec())));
    let env = envelope(&["bob@example.net"]);
    let script = [
        S("220 mx\r\n"),
        C("EHLO client.example\r\n"),
        S("250-mx\r\n250 AUTH PLAIN\r\n"),
        C("QUIT\r\n"),
        S("221 bye\r\n"),
    ];
    let failure = failure_of(dialogue(&config, &env, BODY, &script));
    assert!(!failure.permanent && failure.detail.contains("not encrypted"));
    config.auth_plaintext = true;
    let report = dialogue(
        &config,
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 AUTH PLAIN\r\n"),
            C("AUTH PLAIN AHVzZXIAcGFzcw==\r\n"),
            S("235 ok\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("421 4.3.2 shutting down\r\n"),
            C("QUIT\r\n"),
            Eof,
        ],
    );
    let failure = failure_of(report);
    assert!(!failure.permanent);
    assert_eq!(failure.reply.unwrap().code, 421);
}

#[test]
fn eight_bit_smtputf8_and_size_are_negotiated_or_refused() {
    let mut env = envelope(&["bob@example.net"]);
    env.eight_bit = true;
    env.smtputf8 = true;
    let report = dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE\r\n"),
            C("MAIL FROM:<alice@example.com> SIZE=18 BODY=8BITMIME SMTPUTF8\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("250 ok\r\n"),
            C("DATA\r\n"),
            S("354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Delivered]);
    for (ehlo, what) in [
        ("250-mx\r\n250 SMTPUTF8\r\n", "8BITMIME"),
        ("250-mx\r\n250 8BITMIME\r\n", "SMTPUTF8"),
    ] {
        let failure = failure_of(dialogue(
            &config(),
            &env,
            BODY,
            &[
                S("220 mx\r\n"),
                C("EHLO client.example\r\n"),
                S(ehlo),
                C("QUIT\r\n"),
                S("221 bye\r\n"),
            ],
        ));
        assert!(
            failure.permanent && failure.detail.contains(what),
            "{failure:?}"
        );
    }
    // A non-ASCII address needs SMTPUTF8 even when the flag was not set.
    let utf8 = Envelope {
        recipients: vec!["jörg@example.net".into()],
        ..envelope(&[])
    };
    let failure = failure_of(dialogue(
        &config(),
        &utf8,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 8BITMIME\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ));
    assert!(failure.permanent);
    let failure = failure_of_size(17);
    assert!(failure.permanent && failure.detail.contains("limit of 17"));
}

fn failure_of_size(limit: u64) -> Failure {
    let ehlo: &'static str = Box::leak(format!("250-mx\r\n250 SIZE {limit}\r\n").into_boxed_str());
    failure_of(dialogue(
        &config(),
        &envelope(&["bob@example.net"]),
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S(ehlo),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ))
}

#[test]
fn bdat_chunks_when_chunking_is_offered() {
    let mut config = config();
    config.body_chunk = 8;
    let report = dialogue(
        &config,
        &envelope(&["bob@example.net"]),
        b"Subject: hi\r\n.x\r\n",
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 CHUNKING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("250 ok\r\n"),
            C("BDAT 8\r\nSubject:"),
            S("250 2.0.0 8 octets\r\n"),
            C("BDAT 8\r\n hi\r\n.x\r"),
            S("250 2.0.0 8 octets\r\n"),
            C("BDAT 1\r\n\n"),
            S("250 2.0.0 1 octet\r\n"),
            C("BDAT 0 LAST\r\n"),
            S("250 2.0.0 queued\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(report.unwrap()[0].reply.text(), "250 2.0.0 queued");
}

#[test]
fn pipelined_bdat_keeps_a_window_and_a_refusal_ends_the_message() {
    let mut config = config();
    config.body_chunk = 4;
    let report = dialogue(
        &config,
        &envelope(&["bob@example.net"]),
        b"aaaabbbbccccddddeeeeffff",
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.net>\r\n"),
            S("250 ok\r\n250 ok\r\n"),
            C("BDAT 4\r\naaaaBDAT 4\r\nbbbbBDAT 4\r\nccccBDAT 4\r\ndddd"),
            S("250 ok\r\n"),
            C("BDAT 4\r\neeee"),
            S("552 5.3.4 too big\r\n250 ok\r\n250 ok\r\n250 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Failed]);
    assert_eq!(report.unwrap()[0].reply.code, 552);
}

#[test]
fn every_recipient_refused_sends_no_data() {
    let env = envelope(&["a@example.net", "b@example.net"]);
    let one_by_one = dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250 mx\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<a@example.net>\r\n"),
            S("550 5.1.1 no\r\n"),
            C("RCPT TO:<b@example.net>\r\n"),
            S("450 4.2.0 later\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(
        statuses(&one_by_one),
        vec![RecipientStatus::Failed, RecipientStatus::Deferred]
    );
    let pipelined = dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C(
                "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
            ),
            S("250 ok\r\n550 5.1.1 no\r\n450 4.2.0 later\r\n554 5.5.1 no valid recipients\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(pipelined, one_by_one);
    // A server that says 354 anyway gets an empty message ended at once (RFC 2920 §3.1).
    let go_anyway = dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C(
                "MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
            ),
            S("250 ok\r\n550 5.1.1 no\r\n450 4.2.0 later\r\n354 go\r\n"),
            C(".\r\n"),
            S("554 no recipients\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(go_anyway, one_by_one);
}

#[test]
fn a_refused_sender_fails_the_attempt() {
    let env = envelope(&["a@example.net"]);
    let failure1 = failure_of(dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250 mx\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("553 5.7.1 sender rejected\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ));
    assert!(failure1.permanent);
    let failure2 = failure_of(dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"),
            S("553 5.7.1 sender rejected\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    ));
    assert_eq!(failure1, failure2);
    // The server hangs up after refusing a pipelined MAIL: the refusal is reported.
    let failure3 = failure_of(dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx\r\n250 PIPELINING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"),
            S("553 5.7.1 sender rejected\r\n"),
            Eof,
        ],
    ));
    assert_eq!(failure1, failure3);
    assert_eq!(failure1.reply.unwrap().text(), "553 5.7.1 sender rejected");
}

#[test]
fn timeouts_and_eof_break_off_the_attempt() {
    let env = envelope(&["a@example.net"]);
    // No greeting within the command timeout.
    let silent = run(&config(), &env, BODY, &[Wait(299), Wait(1)], Cut::Whole);
    assert!(silent.closed);
    let failure = failure_of(silent.report.unwrap());
    assert!(
        !failure.permanent && failure.detail.contains("greeting"),
        "{failure:?}"
    );
    // No reply to the end of data: after the 10-minute data timeout, not the 5-minute one.
    let script = [
        S("220 mx\r\n"),
        C("EHLO client.example\r\n"),
        S("250 mx\r\n"),
        C("MAIL FROM:<alice@example.com>\r\n"),
        S("250 ok\r\n"),
        C("RCPT TO:<a@example.net>\r\n"),
        S("250 ok\r\n"),
        C("DATA\r\n"),
        S("354 go\r\n"),
        C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
        Wait(300),
    ];
    let waiting = run(&config(), &env, BODY, &script, Cut::Whole);
    assert!(!waiting.closed && waiting.reports == 0);
    let mut longer = script.to_vec();
    longer.push(Wait(300));
    let timed_out = run(&config(), &env, BODY, &longer, Cut::Whole);
    assert!(timed_out.closed);
    let results = timed_out.report.unwrap().unwrap();
    assert_eq!(results[0].status, RecipientStatus::Deferred);
    assert_eq!(results[0].reply.code, 451);
    assert!(results[0].reply.text().contains("end of data"));
    // The connection drops after a RCPT was refused: that refusal stands.
    let dropped = dialogue(
        &config(),
        &envelope(&["a@example.net", "b@example.net"]),
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250 mx\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<a@example.net>\r\n"),
            S("550 no\r\n"),
            C("RCPT TO:<b@example.net>\r\n"),
            Eof,
        ],
    );
    assert_eq!(
        statuses(&dropped),
        vec![RecipientStatus::Failed, RecipientStatus::Deferred]
    );
}

#[test]
fn malformed_and_unexpected_replies_are_temporary_failures() {
    let env = envelope(&["a@example.net"]);
    let long: &'static str =
        Box::leak(format!("220 mx\r\n250 {}\r\n", "x".repeat(3000)).into_boxed_str());
    for (bytes, what) in [
        ("220 mx\r\nhello there\r\n", "malformed"),
        ("220 mx\r\n250-mx\r\n251 odd\r\n", "code changed"),
        (long, "longer than"),
    ] {
        let out = run(
            &config(),
            &env,
            BODY,
            &[S(bytes), C("EHLO client.example\r\n")],
            Cut::Whole,
        );
        let out_bytes = run(
            &config(),
            &env,
            BODY,
            &[S(bytes), C("EHLO client.example\r\n")],
            Cut::Bytes,
        );
        assert!(out.closed && out_bytes.closed);
        assert_eq!(out.report, out_bytes.report);
        let failure = failure_of(out.report.unwrap());
        assert!(
            !failure.permanent && failure.detail.contains(what),
            "{failure:?}"
        );
    }
}

#[test]
fn invalid_envelopes_fail_before_a_byte_is_sent() {
    for bad in ["a b@example.net", "x>@example.net", "a@example.net\r\nRSET"] {
        let out = run(&config(), &envelope(&[bad]), BODY, &[], Cut::Whole);
        assert!(out.closed);
        assert!(failure_of(out.report.unwrap()).permanent);
    }
    let none = run(&config(), &envelope(&[]), BODY, &[], Cut::Whole);
    assert_eq!(none.report, Some(Ok(vec![])));
}

#[test]
fn null_sender_is_sent_as_empty_path() {
    let env = Envelope {
        mail_from: String::new(),
        ..envelope(&["a@example.net"])
    };
    dialogue(
        &config(),
        &env,
        BODY,
        &[
            S("220 mx\r\n"),
            C("EHLO client.example\r\n"),
            S("250 mx\r\n"),
            C("MAIL FROM:<>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<a@example.net>\r\n"),
            S("250 ok\r\n"),
            C("DATA\r\n"),
            S("354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    )
    .unwrap();
}

#[test]
fn a_multi_line_greeting_and_enhanced_codes_on_every_line() {
    let report = dialogue(
        &config(),
        &envelope(&["bob@example.net"]),
        BODY,
        &[
            S("220-mx.example.net ESMTP\r\n220-no UCE\r\n220 welcome\r\n"),
            C("EHLO client.example\r\n"),
            S("250-mx.example.net\r\n250 ENHANCEDSTATUSCODES\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 2.1.0 ok\r\n"),
            C("RCPT TO:<bob@example.net>\r\n"),
            S("250 2.1.5 ok\r\n"),
            C("DATA\r\n"),
            S("354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("550-5.7.1 message refused\r\n550 5.7.1 see policy\r\n"),
            C("QUIT\r\n"),
            S("221 2.0.0 bye\r\n"),
        ],
    );
    let results = report.unwrap();
    assert_eq!(results[0].status, RecipientStatus::Failed);
    assert_eq!(
        results[0].reply.text(),
        "550 5.7.1 message refused see policy"
    );
}

#[test]
fn a_local_read_error_drops_the_connection_without_ending_the_data() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = ClientSession::new(config(), envelope(&["bob@example.net"]), now);
    let mut sent = Vec::new();
    let mut report = None;
    let mut closed = false;
    for input in [
        &b"220 mx\r\n"[..],
        b"250 mx\r\n",
        b"250 ok\r\n",
        b"250 ok\r\n",
        b"354 go\r\n",
    ] {
        session.handle_input(now, input);
        while let Some(event) = session.poll_event() {
            match event {
                ClientEvent::Send(bytes) => sent.extend_from_slice(&bytes),
                ClientEvent::ReadBody { .. } => session.handle_body_error(now, "disk gone"),
                ClientEvent::Finished(r) => report = Some(r),
                ClientEvent::Close => closed = true,
                ClientEvent::StartTls => unreachable!(),
            }
        }
    }
    assert!(closed);
    assert!(sent.ends_with(b"DATA\r\n"), "no '.' and no QUIT after DATA");
    let results = report.unwrap().unwrap();
    assert_eq!(results[0].status, RecipientStatus::Deferred);
    assert!(results[0].reply.text().starts_with("451 4.3.0 local error"));
}

#[test]
fn deadlines_follow_the_command_being_answered() {
    let mut config = config();
    config.command_timeout = Duration::from_secs(100);
    config.data_timeout = Duration::from_secs(1000);
    config.quit_timeout = Duration::from_secs(10);
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut session = ClientSession::new(config, envelope(&["bob@example.net"]), t0);
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    // Bytes that do not complete a reply do not push the deadline out.
    let t1 = t0 + Duration::from_secs(50);
    session.handle_input(t1, b"220 m");
    assert_eq!(session.poll_timeout(), Some(t0 + Duration::from_secs(100)));
    session.handle_input(t1, b"x\r\n");
    assert_eq!(session.poll_timeout(), Some(t1 + Duration::from_secs(100)));
    for reply in ["250 mx\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n"] {
        session.handle_input(t1, reply.as_bytes());
    }
    while let Some(event) = session.poll_event() {
        if let ClientEvent::ReadBody { .. } = event {
            session.handle_body(t1, b"", true);
        }
    }
    assert_eq!(session.poll_timeout(), Some(t1 + Duration::from_secs(1000)));
    session.handle_input(t1, b"250 ok\r\n");
    assert_eq!(session.poll_timeout(), Some(t1 + Duration::from_secs(10)));
    // A spurious early call changes nothing; the QUIT deadline closes quietly.
    session.handle_timeout(t1);
    assert!(!session.is_closed());
    session.handle_timeout(t1 + Duration::from_secs(10));
    assert!(session.is_closed());
    assert_eq!(session.poll_timeout(), None);
}

#[test]
fn only_a_completion_reply_delivers() {
    let env = envelope(&["bob@example.net"]);
    let start = [
        S("220 mx\r\n"),
        C("EHLO client.example\r\n"),
        S("250 mx\r\n"),
        C("MAIL FROM:<alice@example.com>\r\n"),
        S("250 ok\r\n"),
        C("RCPT TO:<bob@example.net>\r\n"),
        S("250 ok\r\n"),
        C("DATA\r\n"),
    ];
    // DATA answered as if the message were already taken: nothing was sent, so nothing
    // was delivered.
    let mut script = start.to_vec();
    script.extend([S("250 sure\r\n"), C("QUIT\r\n"), S("221 bye\r\n")]);
    let results = dialogue(&config(), &env, BODY, &script).unwrap();
    assert_eq!(results[0].status, RecipientStatus::Deferred);
    assert!(results[0].reply.text().contains("unexpected reply to DATA"));
    // The end of data answered with an intermediate reply.
    let mut script = start.to_vec();
    script.extend([
        S("354 go\r\n"),
        C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
        S("354 again?\r\n"),
        C("QUIT\r\n"),
        S("221 bye\r\n"),
    ]);
    let results = dialogue(&config(), &env, BODY, &script).unwrap();
    assert_eq!(results[0].status, RecipientStatus::Deferred);
    assert_eq!(results[0].reply.code, 354);
}

fn lmtp_config() -> ClientConfig {
    let mut config = config();
    config.lmtp = true;
    config
}

#[test]
fn lmtp_sends_lhlo_and_data_and_reads_one_reply_per_accepted_recipient() {
    // CHUNKING is offered but LMTP sends DATA: RFC 2033 §4.2 defines the replies after
    // the data, one per accepted recipient in RCPT order.
    let report = dialogue(
        &lmtp_config(),
        &envelope(&["a@back.test", "gone@back.test", "full@back.test"]),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("250-back.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n\
               RCPT TO:<a@back.test>\r\n\
               RCPT TO:<gone@back.test>\r\n\
               RCPT TO:<full@back.test>\r\n\
               DATA\r\n"),
            S("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n250 2.1.5 ok\r\n"),
            S("354 go ahead\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 <a@back.test> delivered\r\n"),
            S("452 4.2.2 <full@back.test> mailbox full\r\n"),
            C("QUIT\r\n"),
            S("221 2.0.0 bye\r\n"),
        ],
    );
    assert_eq!(
        report,
        Ok(vec![
            RecipientResult {
                status: RecipientStatus::Delivered,
                reply: reply(250, Some((2, 0, 0)), "2.0.0 <a@back.test> delivered"),
            },
            RecipientResult {
                status: RecipientStatus::Failed,
                reply: reply(550, Some((5, 1, 1)), "5.1.1 no such user"),
            },
            RecipientResult {
                status: RecipientStatus::Deferred,
                reply: reply(452, Some((4, 2, 2)), "4.2.2 <full@back.test> mailbox full"),
            },
        ])
    );
}

#[test]
fn lmtp_has_no_helo_fallback() {
    let report = dialogue(
        &lmtp_config(),
        &envelope(&["a@back.test"]),
        BODY,
        &[
            S("220 smtp.test ESMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("500 5.5.1 command not recognized\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    let failure = failure_of(report);
    assert!(failure.permanent, "{failure:?}");
    assert_eq!(failure.reply.map(|r| r.code), Some(500));
}

#[test]
fn lmtp_keeps_the_results_already_given_when_the_connection_breaks() {
    // The first recipient was delivered before the back-end went away: it must not be
    // sent again; the second one is retried.
    let report = dialogue(
        &lmtp_config(),
        &envelope(&["a@back.test", "b@back.test"]),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("250 back.test\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 2.1.0 ok\r\n"),
            C("RCPT TO:<a@back.test>\r\n"),
            S("250 2.1.5 ok\r\n"),
            C("RCPT TO:<b@back.test>\r\n"),
            S("250 2.1.5 ok\r\n"),
            C("DATA\r\n"),
            S("354 go ahead\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 <a@back.test> delivered\r\n"),
            Eof,
        ],
    );
    assert_eq!(
        statuses(&report),
        [RecipientStatus::Delivered, RecipientStatus::Deferred]
    );
}

#[test]
fn lmtp_starttls_greets_with_lhlo_again() {
    let mut config = lmtp_config();
    config.starttls = StartTls::Required;
    let report = dialogue(
        &config,
        &envelope(&["a@back.test"]),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("250-back.test\r\n250 STARTTLS\r\n"),
            C("STARTTLS\r\n"),
            S("220 2.0.0 go ahead\r\n"),
            TlsUp,
            C("LHLO client.example\r\n"),
            S("250 back.test\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 2.1.0 ok\r\n"),
            C("RCPT TO:<a@back.test>\r\n"),
            S("250 2.1.5 ok\r\n"),
            C("DATA\r\n"),
            S("354 go ahead\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), [RecipientStatus::Delivered]);
}

fn reuse_config() -> ClientConfig {
    let mut config = config();
    config.reuse = true;
    config
}

/// The first transaction of the reuse tests, up to the idle session.
const FIRST: [Step; 6] = [
    S("220 mx\r\n"),
    C("EHLO client.example\r\n"),
    S("250-mx\r\n250 PIPELINING\r\n"),
    C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\n"),
    S("250 ok\r\n250 ok\r\n354 go\r\n"),
    C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
];

fn script(parts: &[&[Step]]) -> Vec<Step> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

#[test]
fn two_messages_over_one_connection_and_quit_only_at_the_end() {
    let reports = dialogues(
        &reuse_config(),
        &envelope(&["a@example.net"]),
        &script(&[
            &FIRST,
            &[
                S("250 2.0.0 first\r\n"),
                // No QUIT and no RSET after a completed transaction (RFC 5321 §3.3).
                C(""),
                Next(&["b@example.net", "c@example.net"]),
                C(
                    "MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n",
                ),
                S("250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n"),
                C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
                S("250 2.0.0 second\r\n"),
                End,
                C("QUIT\r\n"),
                S("221 bye\r\n"),
            ],
        ]),
    );
    assert_eq!(reports.len(), 2);
    assert_eq!(statuses(&reports[0]), [RecipientStatus::Delivered]);
    assert_eq!(
        reports[0].as_ref().unwrap()[0].reply.text(),
        "250 2.0.0 first"
    );
    assert_eq!(
        statuses(&reports[1]),
        [RecipientStatus::Delivered, RecipientStatus::Delivered]
    );
    assert_eq!(
        reports[1].as_ref().unwrap()[1].reply.text(),
        "250 2.0.0 second"
    );
}

#[test]
fn a_421_between_messages_closes_the_idle_session_without_a_report() {
    let config = reuse_config();
    let env = envelope(&["a@example.net"]);
    let steps = script(&[
        &FIRST,
        &[S("250 ok\r\n"), S("421 4.4.2 idle too long\r\n"), C("")],
    ]);
    for cut in [Cut::Whole, Cut::Bytes] {
        let out = run(&config, &env, BODY, &steps, cut);
        assert!(out.closed && !out.idle, "{cut:?}");
        assert_eq!(out.all.len(), 1, "only the first transaction is reported");
        assert_eq!(statuses(&out.all[0]), [RecipientStatus::Delivered]);
    }
    // The server hangs up while idle: closed quietly too.
    let out = run(
        &config,
        &env,
        BODY,
        &script(&[&FIRST, &[S("250 ok\r\n"), Eof]]),
        Cut::Whole,
    );
    assert!(out.closed && out.all.len() == 1);
    // The 421 crosses the next MAIL: that message fails temporarily, nothing delivered.
    let reports = dialogues(
        &config,
        &env,
        &script(&[
            &FIRST,
            &[
                S("250 ok\r\n"),
                Next(&["b@example.net"]),
                C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
                S("421 4.4.2 closing\r\n"),
                Eof,
            ],
        ]),
    );
    assert_eq!(reports.len(), 2);
    let failure = reports[1].clone().expect_err("the second fails as a whole");
    assert!(!failure.permanent);
    assert_eq!(failure.reply.map(|r| r.code), Some(421));
}

#[test]
fn per_recipient_failures_in_the_second_message_and_rset_when_none_is_accepted() {
    let reports = dialogues(
        &reuse_config(),
        &envelope(&["a@example.net"]),
        &script(&[
            &FIRST,
            &[
                S("250 ok\r\n"),
                Next(&["b@example.net", "gone@example.net"]),
                C(
                    "MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<gone@example.net>\r\nDATA\r\n",
                ),
                S("250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n"),
                C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
                S("250 2.0.0 second\r\n"),
                Next(&["gone@example.net"]),
                C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<gone@example.net>\r\nDATA\r\n"),
                S("250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n"),
                // Nothing may follow: the empty data ends, then RSET before reuse.
                C(".\r\n"),
                S("554 5.5.1 no valid recipients\r\n"),
                C("RSET\r\n"),
                S("250 2.0.0 reset\r\n"),
                Next(&["d@example.net"]),
                C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n"),
                S("250 ok\r\n250 ok\r\n354 go\r\n"),
                C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
                S("452 4.3.1 full\r\n"),
                End,
                C("QUIT\r\n"),
                S("221 bye\r\n"),
            ],
        ]),
    );
    assert_eq!(reports.len(), 4);
    assert_eq!(
        statuses(&reports[1]),
        [RecipientStatus::Delivered, RecipientStatus::Failed]
    );
    assert_eq!(reports[1].as_ref().unwrap()[1].reply.code, 550);
    assert_eq!(statuses(&reports[2]), [RecipientStatus::Failed]);
    assert_eq!(statuses(&reports[3]), [RecipientStatus::Deferred]);
}

#[test]
fn a_reply_lost_on_a_reused_connection_is_never_a_delivery() {
    let reports = dialogues(
        &reuse_config(),
        &envelope(&["a@example.net"]),
        &script(&[
            &FIRST,
            &[
                S("250 ok\r\n"),
                Next(&["b@example.net"]),
                C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
                S("250 ok\r\n250 ok\r\n354 go\r\n"),
                C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
                Eof,
            ],
        ]),
    );
    assert_eq!(reports.len(), 2);
    let results = reports[1].as_ref().unwrap();
    assert_eq!(results[0].status, RecipientStatus::Deferred);
    assert_eq!(results[0].reply.code, 451);
}

#[test]
fn reuse_is_refused_when_busy_and_local_refusals_keep_the_connection() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut session = ClientSession::new(reuse_config(), envelope(&["a@example.net"]), now);
    // Not idle before the first transaction ended.
    assert!(
        session
            .start_next(now, envelope(&["b@example.net"]))
            .is_err()
    );
    session.end(now);
    assert!(!session.is_closed());
    let out = run(
        &reuse_config(),
        &envelope(&["a@example.net"]),
        BODY,
        &script(&[&FIRST, &[S("250 ok\r\n")]]),
        Cut::Whole,
    );
    assert!(out.idle);
    // A message the server cannot take (SMTPUTF8 not offered) fails permanently before
    // a byte is sent; the session stays idle for the next one.
    let steps = script(&[
        &FIRST,
        &[
            S("250 ok\r\n"),
            Next(&["jörg@example.net"]),
            C(""),
            Next(&["b@example.net"]),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"),
        ],
    ]);
    let out = run(
        &reuse_config(),
        &envelope(&["a@example.net"]),
        BODY,
        &steps,
        Cut::Whole,
    );
    assert_eq!(out.all.len(), 2);
    assert!(out.all[1].as_ref().unwrap_err().permanent);
    assert!(!out.idle && !out.closed);
}

// ---- XCLIENT on the LMTP leg (Postfix XCLIENT_README) -------------------------------

fn relayed(recipients: &[&str], port: u16) -> Envelope {
    Envelope {
        xclient: Some(Box::new(Xclient {
            addr: Some(std::net::IpAddr::from([192, 0, 2, 7])),
            port: Some(port),
            helo: Some("mail.sender.test".into()),
            proto: Some("ESMTP".into()),
            ..Xclient::default()
        })),
        ..envelope(recipients)
    }
}

const BACK_LHLO_XCLIENT: &str = "250-back.test\r\n250-PIPELINING\r\n250-XCLIENT ADDR PORT HELO NAME PROTO TTL\r\n250 8BITMIME\r\n";

#[test]
fn xclient_names_the_client_then_lhlo_again_before_mail() {
    let report = dialogue(
        &lmtp_config(),
        &relayed(&["a@back.test"], 40000),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("XCLIENT HELO=mail.sender.test PROTO=ESMTP ADDR=192.0.2.7 PORT=40000\r\n"),
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 <a@back.test> delivered\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Delivered]);
}

#[test]
fn xclient_sends_only_the_attributes_the_server_lists() {
    let report = dialogue(
        &lmtp_config(),
        &relayed(&["a@back.test"], 40000),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("250-back.test\r\n250 XCLIENT ADDR helo\r\n"),
            C("XCLIENT HELO=mail.sender.test ADDR=192.0.2.7\r\n"),
            S("220 back.test\r\n"),
            C("LHLO client.example\r\n"),
            S("250-back.test\r\n250 XCLIENT ADDR helo\r\n"),
            C("MAIL FROM:<alice@example.com>\r\n"),
            S("250 ok\r\n"),
            C("RCPT TO:<a@back.test>\r\n"),
            S("250 ok\r\n"),
            C("DATA\r\n"),
            S("354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 ok\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Delivered]);
}

#[test]
fn no_xclient_when_the_server_does_not_offer_it() {
    let report = dialogue(
        &lmtp_config(),
        &relayed(&["a@back.test"], 40000),
        BODY,
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S("250-back.test\r\n250 PIPELINING\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 delivered\r\n"),
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(statuses(&report), vec![RecipientStatus::Delivered]);
}

#[test]
fn a_refused_xclient_delivers_without_it_and_is_not_tried_again() {
    let mut config = lmtp_config();
    config.reuse = true;
    let reports = dialogues(
        &config,
        &relayed(&["a@back.test"], 40000),
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("XCLIENT HELO=mail.sender.test PROTO=ESMTP ADDR=192.0.2.7 PORT=40000\r\n"),
            S("550 5.7.0 Not authorized\r\n"),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 delivered\r\n"),
            C(""),
            NextFrom(&["b@back.test"], 40001),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 delivered\r\n"),
            End,
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(reports.len(), 2);
    for report in &reports {
        assert_eq!(statuses(report), vec![RecipientStatus::Delivered]);
    }
}

#[test]
fn a_reused_connection_sends_xclient_again_only_for_a_different_client() {
    let mut config = lmtp_config();
    config.reuse = true;
    let reports = dialogues(
        &config,
        &relayed(&["a@back.test"], 40000),
        &[
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("XCLIENT HELO=mail.sender.test PROTO=ESMTP ADDR=192.0.2.7 PORT=40000\r\n"),
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<a@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 first\r\n"),
            C(""),
            // The same client: the server still speaks for it.
            NextFrom(&["b@back.test"], 40000),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<b@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 second\r\n"),
            C(""),
            // No client at all (a report, an entry from before the client line): the
            // server would take it as the last client's, so it needs a new connection.
            RefusedAnonymous(&["d@back.test"]),
            // Another client: XCLIENT and LHLO again before MAIL.
            NextFrom(&["c@back.test"], 40001),
            C("XCLIENT HELO=mail.sender.test PROTO=ESMTP ADDR=192.0.2.7 PORT=40001\r\n"),
            S("220 back.test LMTP\r\n"),
            C("LHLO client.example\r\n"),
            S(BACK_LHLO_XCLIENT),
            C("MAIL FROM:<alice@example.com>\r\nRCPT TO:<c@back.test>\r\nDATA\r\n"),
            S("250 ok\r\n250 ok\r\n354 go\r\n"),
            C("Subject: hi\r\n\r\nyo\r\n.\r\n"),
            S("250 2.0.0 third\r\n"),
            End,
            C("QUIT\r\n"),
            S("221 bye\r\n"),
        ],
    );
    assert_eq!(reports.len(), 3);
    for report in &reports {
        assert_eq!(statuses(report), vec![RecipientStatus::Delivered]);
    }
}
