//! Server session and client codec, alone and talking to each other in memory.

#![allow(clippy::disallowed_methods)] // tests need a base instant

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::io::{Action, Peer, RequestId, Session};
use crate::request::{Failure, Reply, Request};
use crate::secret::Secret;
use crate::user::{AuthOutcome, Lookup, UserRecord};

fn config() -> Arc<AuthdConfig> {
    Arc::new(AuthdConfig::new(Secret::new(b"s3cret".to_vec())))
}

/// Drains the session: written bytes, requests, and whether it closed.
fn drain(session: &mut AuthdServerSession) -> (String, Vec<(RequestId, Request)>, bool) {
    let (mut text, mut requests, mut closed) = (String::new(), Vec::new(), false);
    while let Some(action) = session.poll_action() {
        match action {
            Action::Write { bytes, .. } => text.push_str(&String::from_utf8_lossy(&bytes)),
            Action::Request { id, request } => requests.push((id, request)),
            Action::Close { .. } => closed = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    (text, requests, closed)
}

/// The test database: alice exists (with a password), example.com is served.
fn database(request: Request) -> Reply {
    let alice = || {
        let mut record = UserRecord::new("alice@example.com");
        record.password = "{PLAIN}pw".into();
        record.fields.insert("tohost".into(), "b1".into());
        record
    };
    match request {
        Request::LookupUser { address } if address == "alice@example.com" => {
            Reply::User(Lookup::Found(alice()))
        }
        Request::LookupUser { address } if address.ends_with("@example.com") => {
            Reply::User(Lookup::NotFound)
        }
        Request::LookupUser { .. } => Reply::User(Lookup::UnknownDomain),
        Request::VerifyUser { user, password, .. }
            if user == "alice@example.com" && password.expose() == b"pw" =>
        {
            Reply::Verified(AuthOutcome::Accepted(alice()))
        }
        Request::VerifyUser { .. } => Reply::Verified(AuthOutcome::Denied),
        Request::LookupUsers { addresses } => Reply::Users(
            addresses
                .into_iter()
                .map(|address| match database(Request::LookupUser { address }) {
                    Reply::User(lookup) => lookup,
                    _ => Lookup::TempFail("test database".into()),
                })
                .collect(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn serves_pipelined_requests_in_order_without_passwords() {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    let (greeting, _, _) = drain(&mut s);
    assert_eq!(greeting, "* TIDEGATE-AUTHD 1\r\n");
    s.handle_input(
        t0,
        Peer::Client,
        b"HELLO 1 s3cret\r\n9 LOOKUP alice@example.com\r\n3 VERIFY alice@example.com cHc= 192.0.2.1\r\n4 LOOKUP x@other.org\r\nbo-gus\r\n",
    );
    let mut transcript = String::new();
    loop {
        let (text, requests, closed) = drain(&mut s);
        transcript.push_str(&text);
        assert!(!closed);
        assert!(requests.len() <= 1, "one request at a time");
        let Some((id, request)) = requests.into_iter().next() else {
            break;
        };
        s.handle_reply(t0, id, database(request));
    }
    assert_eq!(
        transcript,
        "* OK 1\r\n9 FOUND alice@example.com tohost=b1\r\n3 OK alice@example.com tohost=b1\r\n\
         4 NODOMAIN\r\n* BAD a%20request%20starts%20with%20a%20tag%20or%20HELLO/QUIT\r\n"
    );
    s.handle_input(t0, Peer::Client, b"QUIT\r\n");
    let (text, _, closed) = drain(&mut s);
    assert_eq!(text, "* BYE closing\r\n");
    assert!(closed);
}

#[test]
fn pipelined_lookups_are_batched() {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    s.handle_input(
        t0,
        Peer::Client,
        b"HELLO 1 s3cret\r\na LOOKUP alice@example.com\r\nb LOOKUP x@example.com\r\n\
          c LOOKUP y@other.org\r\nd VERIFY alice@example.com cHc= 192.0.2.1\r\ne LOOKUP z@z\r\n",
    );
    let (_, requests, _) = drain(&mut s);
    let [(id, Request::LookupUsers { addresses })] = &requests[..] else {
        panic!("expected one batch, got {requests:?}");
    };
    assert_eq!(
        addresses,
        &["alice@example.com", "x@example.com", "y@other.org"]
    );
    let lookups = addresses
        .iter()
        .map(
            |a| match database(Request::LookupUser { address: a.clone() }) {
                Reply::User(lookup) => lookup,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    s.handle_reply(t0, *id, Reply::Users(lookups));
    let (text, requests, _) = drain(&mut s);
    assert_eq!(
        text,
        "a FOUND alice@example.com tohost=b1\r\nb NOTFOUND\r\nc NODOMAIN\r\n"
    );
    // The VERIFY that ended the batch comes next, on its own; then the last LOOKUP.
    let [(id, Request::VerifyUser { .. })] = &requests[..] else {
        panic!("expected the VERIFY, got {requests:?}");
    };
    s.handle_reply(t0, *id, Reply::Verified(AuthOutcome::Denied));
    let (text, requests, _) = drain(&mut s);
    assert_eq!(text, "d DENIED\r\n");
    let [(id, Request::LookupUser { .. })] = &requests[..] else {
        panic!("expected a single LOOKUP, got {requests:?}");
    };
    // A batch answered with the wrong number of lookups is a TEMPFAIL for each.
    s.handle_reply(t0, *id, Reply::User(Lookup::UnknownDomain));
    s.handle_input(t0, Peer::Client, b"f LOOKUP a@b\r\ng LOOKUP c@d\r\n");
    let (text, requests, _) = drain(&mut s);
    assert_eq!(text, "e NODOMAIN\r\n");
    s.handle_reply(t0, requests[0].0, Reply::Users(vec![Lookup::NotFound]));
    let (text, _, _) = drain(&mut s);
    assert_eq!(
        text,
        "f TEMPFAIL unexpected%20user%20database%20reply\r\ng TEMPFAIL unexpected%20user%20database%20reply\r\n"
    );
}

#[test]
fn a_batch_turned_down_is_asked_one_by_one() {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    s.handle_input(
        t0,
        Peer::Client,
        b"HELLO 1 s3cret\r\na LOOKUP alice@example.com\r\nb LOOKUP x@example.com\r\n",
    );
    let (_, requests, _) = drain(&mut s);
    let (id, _) = requests.into_iter().next().unwrap();
    s.handle_reply(
        t0,
        id,
        Reply::Failed(Failure::Permanent("unsupported request".into())),
    );
    let mut text = String::new();
    let mut singles = Vec::new();
    loop {
        let (out, requests, _) = drain(&mut s);
        text.push_str(&out);
        let Some((id, request)) = requests.into_iter().next() else {
            break;
        };
        if let Request::LookupUser { address } = &request {
            singles.push(address.clone());
        }
        s.handle_reply(t0, id, database(request));
        // Later pipelined LOOKUPs are not batched either.
        if singles.len() == 1 {
            s.handle_input(t0, Peer::Client, b"c LOOKUP y@z\r\nd LOOKUP y@z\r\n");
        }
    }
    assert_eq!(
        singles,
        ["alice@example.com", "x@example.com", "y@z", "y@z"]
    );
    assert_eq!(
        text,
        "a FOUND alice@example.com tohost=b1\r\nb NOTFOUND\r\nc NODOMAIN\r\nd NODOMAIN\r\n"
    );
}

#[test]
fn wrong_secret_or_missing_hello_closes() {
    for input in [
        &b"HELLO 1 guess\r\n"[..],
        b"1 LOOKUP a@b\r\n",
        b"HELLO 2 s3cret\r\n",
    ] {
        let t0 = Instant::now();
        let mut s = AuthdServerSession::new(config(), t0);
        drain(&mut s);
        s.handle_input(t0, Peer::Client, input);
        let (text, requests, closed) = drain(&mut s);
        assert!(text.starts_with("* BAD "), "{text}");
        assert!(requests.is_empty() && closed, "{input:?}");
    }
    // An empty configured secret refuses even an empty HELLO secret.
    let t0 = Instant::now();
    let cfg = Arc::new(AuthdConfig::new(Secret::new(Vec::new())));
    let mut s = AuthdServerSession::new(cfg, t0);
    s.handle_input(t0, Peer::Client, b"HELLO 1 \r\n");
    let (text, _, closed) = drain(&mut s);
    assert!(
        text.ends_with("* BAD authentication%20failed\r\n") && closed,
        "{text}"
    );
}

#[test]
fn slow_database_gets_tempfail_and_late_reply_is_ignored() {
    let t0 = Instant::now();
    let cfg = config();
    let mut s = AuthdServerSession::new(cfg.clone(), t0);
    s.handle_input(
        t0,
        Peer::Client,
        b"HELLO 1 s3cret\r\n1 LOOKUP alice@example.com\r\n",
    );
    let (_, requests, _) = drain(&mut s);
    let (slow_id, _) = requests.into_iter().next().unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + cfg.store_timeout));
    let t1 = t0 + cfg.store_timeout;
    s.handle_timeout(t1);
    let (text, requests, _) = drain(&mut s);
    assert_eq!(text, "1 TEMPFAIL user%20database%20timeout\r\n");
    assert!(requests.is_empty());
    s.handle_input(t1, Peer::Client, b"2 LOOKUP bob@example.com\r\n");
    let (_, requests, _) = drain(&mut s);
    let (id, request) = requests.into_iter().next().unwrap();
    s.handle_reply(t1, slow_id, Reply::User(Lookup::NotFound));
    s.handle_reply(t1, id, database(request));
    let (text, _, _) = drain(&mut s);
    assert_eq!(text, "2 NOTFOUND\r\n");
    // Idle: no line for idle_timeout closes the connection.
    s.handle_timeout(t1 + cfg.idle_timeout);
    let (text, _, closed) = drain(&mut s);
    assert_eq!(text, "* BYE idle%20timeout\r\n");
    assert!(closed);
}

#[test]
fn eof_answers_what_was_sent_then_closes() {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    s.handle_input(
        t0,
        Peer::Client,
        b"HELLO 1 s3cret\r\n1 LOOKUP a@example.com\r\n",
    );
    s.handle_eof(t0, Peer::Client);
    let (_, requests, closed) = drain(&mut s);
    assert!(!closed);
    let (id, request) = requests.into_iter().next().unwrap();
    s.handle_reply(t0, id, database(request));
    let (text, _, closed) = drain(&mut s);
    assert_eq!(text, "1 NOTFOUND\r\n");
    assert!(closed);
}

#[test]
fn overlong_and_malformed_lines_get_bad() {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    s.handle_input(t0, Peer::Client, b"HELLO 1 s3cret\r\n");
    drain(&mut s);
    let mut long = vec![b'x'; 5000];
    long.extend_from_slice(b"\r\n7 VERIFY a@b notbase64! 1.2.3.4\r\n");
    s.handle_input(t0, Peer::Client, &long);
    let (text, requests, closed) = drain(&mut s);
    assert_eq!(
        text,
        "* BAD line%20too%20long\r\n7 BAD the%20password%20must%20be%20base64\r\n"
    );
    assert!(requests.is_empty() && !closed);
}

/// Runs a client codec against a server session until neither has anything to do.
fn pump(client: &mut AuthdClient, server: &mut AuthdServerSession, now: Instant) {
    loop {
        let mut progressed = false;
        let to_server = client.take_output();
        if !to_server.is_empty() {
            server.handle_input(now, Peer::Client, &to_server);
            progressed = true;
        }
        while let Some(action) = server.poll_action() {
            progressed = true;
            match action {
                Action::Write { bytes, .. } => client.handle_input(&bytes),
                Action::Request { id, request } => server.handle_reply(now, id, database(request)),
                Action::Close { .. } => client.handle_eof(),
                other => panic!("unexpected {other:?}"),
            }
        }
        if !progressed {
            break;
        }
    }
}

#[test]
fn client_and_server_agree() {
    let t0 = Instant::now();
    let mut server = AuthdServerSession::new(config(), t0);
    let mut client = AuthdClient::new(
        Secret::new(b"s3cret".to_vec()),
        AuthdClientLimits::default(),
    );
    // Requests made before the greeting are held until HELLO is sent.
    let a = client.lookup("alice@example.com").unwrap();
    let b = client
        .verify("alice@example.com", b"pw", "192.0.2.1".parse().unwrap())
        .unwrap();
    let c = client
        .verify("alice@example.com", b"wrong", "192.0.2.1".parse().unwrap())
        .unwrap();
    let d = client.lookup("nobody@example.com").unwrap();
    assert!(client.take_output().is_empty());
    pump(&mut client, &mut server, t0);
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    let mut alice = UserRecord::new("alice@example.com");
    alice.fields.insert("tohost".into(), "b1".into());
    assert_eq!(
        events,
        [
            ClientEvent::Ready,
            ClientEvent::Lookup {
                id: a,
                lookup: Lookup::Found(alice.clone())
            },
            ClientEvent::Verify {
                id: b,
                outcome: AuthOutcome::Accepted(alice)
            },
            ClientEvent::Verify {
                id: c,
                outcome: AuthOutcome::Denied
            },
            ClientEvent::Lookup {
                id: d,
                lookup: Lookup::NotFound
            },
        ]
    );
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn client_turns_failures_into_tempfail_for_in_flight_requests() {
    let mut client = AuthdClient::new(Secret::new(b"x".to_vec()), AuthdClientLimits::default());
    client.handle_input(b"* TIDEGATE-AUTHD 1\r\n");
    assert_eq!(&client.take_output()[..], b"HELLO 1 x\r\n");
    let a = client.lookup("a@b").unwrap();
    let b = client.lookup("c@d").unwrap();
    // An answer to an id never sent is a protocol error: nothing is trusted after it.
    client.handle_input(b"2 NOTFOUND\r\n99 NOTFOUND\r\n");
    let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events[0],
        ClientEvent::Lookup {
            id: b,
            lookup: Lookup::NotFound
        }
    );
    assert!(
        matches!(&events[1], ClientEvent::Lookup { id, lookup: Lookup::TempFail(_) } if *id == a)
    );
    assert!(matches!(&events[2], ClientEvent::Closed { .. }));
    assert_eq!(client.lookup("x@y"), Err(SubmitError::Closed));

    // A kind mismatch (OK to a LOOKUP) is a protocol error too.
    let mut client = AuthdClient::new(Secret::new(b"x".to_vec()), AuthdClientLimits::default());
    client.handle_input(b"* TIDEGATE-AUTHD 1 7\r\n");
    let a = client.lookup("a@b").unwrap();
    client.handle_input(b"1 OK a@b\r\n");
    assert!(
        matches!(client.poll_event(), Some(ClientEvent::Lookup { id, lookup: Lookup::TempFail(_) }) if id == a)
    );
    assert!(matches!(
        client.poll_event(),
        Some(ClientEvent::Closed { .. })
    ));

    // The in-flight limit.
    let limits = AuthdClientLimits {
        max_in_flight: 1,
        ..AuthdClientLimits::default()
    };
    let mut client = AuthdClient::new(Secret::new(b"x".to_vec()), limits);
    client.lookup("a@b").unwrap();
    assert_eq!(client.lookup("a@b"), Err(SubmitError::Full));
}

/// Feeds `input` in chunks of `chunk` bytes, answering every request from the test
/// database, and returns everything written.
fn transcript(input: &[u8], chunk: usize) -> String {
    let t0 = Instant::now();
    let mut s = AuthdServerSession::new(config(), t0);
    let mut text = String::new();
    let run = |s: &mut AuthdServerSession, text: &mut String| loop {
        let (out, requests, _) = drain(s);
        text.push_str(&out);
        let Some((id, request)) = requests.into_iter().next() else {
            break;
        };
        s.handle_reply(t0, id, database(request));
    };
    for piece in input.chunks(chunk) {
        s.handle_input(t0, Peer::Client, piece);
        run(&mut s, &mut text);
    }
    s.handle_eof(t0, Peer::Client);
    run(&mut s, &mut text);
    text
}

#[test]
fn chunking_does_not_change_the_answers() {
    let input: &[u8] =
        b"HELLO 1 s3cret\r\n1 LOOKUP alice@example.com\r\n2 LOOKUP b@example.com\r\n\
        3 VERIFY alice@example.com cHc= 192.0.2.1\r\n4 LOOKUP c@d\r\nbad-line\r\n\
        5 LOOKUP ALICE@example.com\r\n6 LOOKUP x@example.com\r\n7 LOOKUP\r\nQUIT\r\n";
    let whole = transcript(input, input.len());
    assert!(
        whole.ends_with("7 BAD LOOKUP%20needs%20one%20address\r\n* BYE closing\r\n"),
        "{whole}"
    );
    for chunk in [1, 2, 3, 7, 16, 40] {
        assert_eq!(transcript(input, chunk), whole, "chunks of {chunk}");
    }
}
