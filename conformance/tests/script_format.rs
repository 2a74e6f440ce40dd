//! The script parser: every directive, and errors that name file and line.

use std::path::Path;
use std::time::Duration;

use tidegate_conformance::load_scripts;
use tidegate_conformance::pattern::Pattern;
use tidegate_conformance::script::{
    FailKind, PlaintextSetting, Protocol, Script, StepKind, dot_stuff, parse_duration, parse_size,
};

fn parse(text: &str) -> Result<Script, String> {
    Script::parse(Path::new("t.txt"), text).map_err(|e| e.to_string())
}

#[test]
fn every_directive_parses() {
    let script = parse(
        "# comment\n\
         @config plaintext_auth=never\n@config starttls=true\n@skip-shell\n@no-split\n\
         @user alice pw\n@user bob pw nologin\n@message alice Subject: x\\r\\n\\r\\nbody\n\
         @big-message alice 10KiB\n\n\
         S: +OK *\nC: USER alice\nC<: PART\\s\n@send-bytes 3000 \\x00\n@starttls\n@eof\n\
         @expect close any\n@connect raw\n@tick 601s\n@vanish 2\n@vanish bob 1\n\
         @expect-message alice 1\n@expect close\n",
    )
    .unwrap();
    assert!(script.skip_shell && script.no_split);
    assert_eq!(script.config.plaintext_auth, PlaintextSetting::Never);
    assert!(script.config.starttls);
    let kinds: Vec<&StepKind> = script.steps.iter().map(|s| &s.kind).collect();
    assert_eq!(kinds.len(), 17);
    assert_eq!(
        kinds[2],
        &StepKind::AddMessage {
            user: "alice".into(),
            bytes: b"Subject: x\r\n\r\nbody".to_vec()
        }
    );
    assert_eq!(kinds[5], &StepKind::Send(b"USER alice\r\n".to_vec()));
    assert_eq!(kinds[6], &StepKind::Send(b"PART ".to_vec()));
    assert_eq!(kinds[7], &StepKind::SendBulk { len: 3000, byte: 0 });
    assert_eq!(kinds[10], &StepKind::ExpectClose { any: true });
    assert_eq!(kinds[12], &StepKind::Tick(Duration::from_secs(601)));
    assert_eq!(
        script.steps[4].line, 11,
        "line numbers count comments and blanks"
    );
}

#[test]
fn smtp_directives_parse() {
    let script = Script::parse(
        Path::new("scripts/lmtp/t.txt"),
        "@config max_message_size=1024\n@config append_chunk=7\n@config max_recipients=2\n\
         @config trusted=10.0.0.0/8\n@user bob@example.test pw\n@quota bob@example.test 1KiB\n\
         @protocol submission\n\
         @send-data 2000\n@expect quiet\n@expect-stored bob@example.test 1 Return-Path: *\\r\\n\n\
         @expect-stored-big bob@example.test 2 300KiB\n@expect-retr bob@example.test 1\n\
         @expect-mailbox bob@example.test 0\n@expect-aborted 2\n@store-fail commit\n\
         @connect raw pop3\n@connect lmtp\n",
    )
    .unwrap();
    let config = &script.config;
    assert_eq!(config.protocol, Protocol::Submission);
    assert_eq!(config.hostname, "mx.test");
    assert_eq!(config.max_message_size, Some(1024));
    assert_eq!(
        (config.append_chunk, config.max_recipients),
        (Some(7), Some(2))
    );
    assert_eq!(config.trusted.len(), 1);
    let kinds: Vec<&StepKind> = script.steps.iter().map(|s| &s.kind).collect();
    assert_eq!(
        kinds[1],
        &StepKind::Quota {
            user: "bob@example.test".into(),
            bytes: 1024
        }
    );
    assert_eq!(kinds[2], &StepKind::SendData(2000));
    assert_eq!(kinds[3], &StepKind::ExpectQuiet);
    match kinds[4] {
        StepKind::ExpectStored {
            number: 1, pattern, ..
        } => {
            assert!(pattern.matches(b"Return-Path: <>\r\n"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(kinds[8], &StepKind::ExpectAborted(2));
    assert_eq!(kinds[9], &StepKind::StoreFail(FailKind::Commit));
    assert_eq!(
        kinds[10],
        &StepKind::Connect {
            raw: true,
            protocol: Some(Protocol::Pop3)
        }
    );
    // The directory chooses the protocol and its default host name.
    let smtp = Script::parse(Path::new("scripts/smtp/t.txt"), "S: 220 *\n").unwrap();
    assert_eq!(
        (smtp.config.protocol, smtp.config.hostname.as_str()),
        (Protocol::Smtp, "mx.test")
    );
    let other = Script::parse(Path::new("t.txt"), "S: +OK\n").unwrap();
    assert_eq!(other.config.protocol, Protocol::Pop3);
    assert_eq!(
        dot_stuff(b".a\r\nb.\r\n..\r\n\n.x"),
        b"..a\r\nb.\r\n...\r\n\n.x".to_vec(),
        "only a dot after CRLF is stuffed"
    );
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        ("S: ok\nX: what\n", "t.txt:2: unknown line"),
        ("@config colour=blue\n", "t.txt:1: unknown @config key"),
        (
            "S: x\n@config starttls=true\n",
            "t.txt:2: @config must come before",
        ),
        ("C: bad\\q\n", "t.txt:1: unknown escape \\q"),
        ("@send-bytes 10 ab\n", "t.txt:1: BYTE must be one character"),
        ("@tick 5s\n", "t.txt:1: @tick and @config client= need"),
        ("@vanish 0\n", "t.txt:1: expected a positive number"),
        ("@expect nothing\n", "t.txt:1: usage: @expect close [any]"),
        (
            "S: x\n@protocol smtp\n",
            "t.txt:2: @protocol must come before",
        ),
        ("@protocol nntp\n", "t.txt:1: usage: @protocol"),
        ("@connect pop3 smtp\n", "t.txt:1: usage: @connect"),
        ("@store-fail disk\n", "t.txt:1: usage: @store-fail"),
        ("@expect-stored bob 1\n", "t.txt:1: usage: @expect-stored"),
        (
            "@config max_recipients=0\n",
            "t.txt:1: max_recipients needs a positive",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).unwrap_err();
        assert!(
            err.starts_with(want),
            "{text:?}: got {err:?}, want {want:?}"
        );
    }
}

#[test]
fn sizes_durations_and_patterns() {
    assert_eq!(parse_size("100KiB"), Ok(102_400));
    assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
    assert!(parse_size("1GB").is_err());
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert!(parse_duration("soon").is_err());
    let p = Pattern::parse("+OK * octets").unwrap();
    assert!(p.matches(b"+OK 28 octets"));
    assert!(!p.matches(b"+OK 28 octets\r"));
}

#[test]
fn every_shipped_script_parses() {
    for (protocol, at_least) in [
        ("pop3", 30),
        ("smtp", 25),
        ("submission", 8),
        ("lmtp", 5),
        ("imap", 13),
    ] {
        let scripts = load_scripts(protocol).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        assert!(
            scripts.len() >= at_least,
            "only {} {protocol} scripts",
            scripts.len()
        );
        let expected = Protocol::from_name(protocol);
        assert!(scripts.iter().all(|s| Some(s.config.protocol) == expected));
    }
}
