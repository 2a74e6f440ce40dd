//! The LDAP user directory against a real OpenLDAP `slapd` started by each test (an mdb
//! database in a temp dir loaded with `slapadd` from `tests/ldap/users.ldif`), plus
//! fake servers on 127.0.0.1 for timeouts and garbage answers. Without slapd installed
//! the slapd tests print "skipped: slapd not installed" and pass.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

#[path = "ldap/slapd.rs"]
mod slapd;

use slapd::{BASE, Slapd};
use tidegate_core::user::{AuthOutcome, Lookup};
use tidegate_store::password::{self, Verification};
use tidegate_store::users::{LdapAuth, LdapConfig, LdapDirectory, UserDirectory};

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What `verify` must answer for a right password stored as `stored`: `Accepted` once
/// `password::verify` knows the scheme, `Denied` (never accepted) before.
fn right_password_expected(stored: &str, password: &[u8]) -> bool {
    password::verify(stored, password) == Verification::Match
}

fn found(lookup: Lookup) -> tidegate_core::user::UserRecord {
    match lookup {
        Lookup::Found(record) => record,
        other => panic!("expected Found, got {other:?}"),
    }
}

#[test]
fn lookup_finds_users_with_tohost_and_fields() {
    let Some(slapd) = Slapd::start() else { return };
    let mut config = slapd.config();
    config.domains = vec!["example.com".into(), "Example.ORG".into()];
    let directory = LdapDirectory::new(config).unwrap();

    let alice = found(directory.lookup("  Alice@Example.COM "));
    assert_eq!(alice.address, "alice@example.com");
    assert_eq!(alice.tohost(), Some("10.0.0.2"));
    assert_eq!(alice.quota(), Some(1_000_000));
    assert!(!alice.nologin());
    assert_eq!(alice.password, "{SSHA}JS/NmYT8VBN8lcJkY8h/TY7hglJzUuyd");

    let bob = found(directory.lookup("bob@example.com"));
    assert_eq!(bob.tohost(), None);
    assert!(!bob.nologin(), "tidegateNologin: FALSE is no flag");
    assert!(bob.password.starts_with("{SHA512-CRYPT}$6$tidegatesalt$"));

    let carol = found(directory.lookup("carol@example.com"));
    assert!(carol.nologin());
    assert_eq!(carol.field("nologin"), Some(""));

    let diane = found(directory.lookup("diane@example.org"));
    assert_eq!(diane.tohost(), Some("backend-2.example.com"));
    assert!(diane.password.starts_with("{ARGON2ID}$argon2id$"));

    let erin = found(directory.lookup("erin@example.com"));
    assert_eq!(erin.password, "{PLAIN}erinpw");

    assert_eq!(directory.lookup("nobody@example.com"), Lookup::NotFound);
    assert_eq!(
        directory.lookup("alice@elsewhere.net"),
        Lookup::UnknownDomain
    );
    assert_eq!(directory.lookup("no-domain"), Lookup::UnknownDomain);

    // Without a domain list every miss is NotFound.
    let open = LdapDirectory::new(slapd.config()).unwrap();
    assert_eq!(open.lookup("alice@elsewhere.net"), Lookup::NotFound);
}

#[test]
fn filter_injection_finds_nothing() {
    let Some(slapd) = Slapd::start() else { return };
    let directory = LdapDirectory::new(slapd.config()).unwrap();
    for attempt in [
        "*)(uid=*",
        "*",
        "alice@example.com)(|(mail=*",
        "*@example.com",
        "alice@example.com\\",
        "alice@example.com\0",
        "a*",
    ] {
        assert_eq!(directory.lookup(attempt), Lookup::NotFound, "{attempt:?}");
        assert_eq!(
            directory.verify(attempt, b"alicepw", CLIENT),
            AuthOutcome::Denied,
            "{attempt:?}"
        );
    }

    // A template built on the uid with an objectClass guard behaves the same.
    let mut config = slapd.config();
    config.filter = "(&(objectClass=inetOrgPerson)(uid=%n))".into();
    let directory = LdapDirectory::new(config).unwrap();
    assert_eq!(
        found(directory.lookup("alice@anything")).address,
        "alice@anything"
    );
    assert_eq!(directory.lookup("*)(uid=*@x"), Lookup::NotFound);
}

#[test]
fn ambiguous_filters_are_a_temporary_failure() {
    let Some(slapd) = Slapd::start() else { return };
    let mut config = slapd.config();
    config.filter = "(|(mail=%u)(sn=Example))".into();
    let directory = LdapDirectory::new(config).unwrap();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));
    assert!(matches!(
        directory.verify("alice@example.com", b"alicepw", CLIENT),
        AuthOutcome::TempFail(_)
    ));
}

#[test]
fn compare_mode_verifies_locally() {
    let Some(slapd) = Slapd::start() else { return };
    let directory = LdapDirectory::new(slapd.config()).unwrap();

    match directory.verify("Diane@Example.org", b"dianepw", CLIENT) {
        AuthOutcome::Accepted(record) => {
            assert_eq!(record.address, "diane@example.org");
            assert_eq!(record.tohost(), Some("backend-2.example.com"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        directory.verify("diane@example.org", b"dianepW", CLIENT),
        AuthOutcome::Denied
    );
    assert!(matches!(
        directory.verify("erin@example.com", b"erinpw", CLIENT),
        AuthOutcome::Accepted(_)
    ));
    assert_eq!(
        directory.verify("erin@example.com", b"erinpw ", CLIENT),
        AuthOutcome::Denied
    );
    assert_eq!(
        directory.verify("ghost@example.com", b"dianepw", CLIENT),
        AuthOutcome::Denied
    );
    assert_eq!(
        directory.verify("erin@example.com", b"", CLIENT),
        AuthOutcome::Denied
    );

    // {SSHA} and {CRYPT} hashes: accepted once password::verify knows the scheme, and
    // never accepted with a wrong password.
    let alice = "{SSHA}JS/NmYT8VBN8lcJkY8h/TY7hglJzUuyd";
    let outcome = directory.verify("alice@example.com", b"alicepw", CLIENT);
    if right_password_expected(alice, b"alicepw") {
        assert!(matches!(outcome, AuthOutcome::Accepted(_)), "{outcome:?}");
    } else {
        assert_eq!(outcome, AuthOutcome::Denied);
    }
    assert_eq!(
        directory.verify("alice@example.com", b"wrong", CLIENT),
        AuthOutcome::Denied
    );
    let carol = "{SSHA}5JgiL3IfYZ2FUPne2Zxo3pzueqg5qZNQ";
    let outcome = directory.verify("carol@example.com", b"carolpw", CLIENT);
    if right_password_expected(carol, b"carolpw") {
        assert_eq!(outcome, AuthOutcome::Disabled);
    } else {
        assert_eq!(outcome, AuthOutcome::Denied);
    }
    assert_eq!(
        directory.verify("carol@example.com", b"wrong", CLIENT),
        AuthOutcome::Denied,
        "nologin is only revealed to someone who knows the password"
    );
    assert_eq!(
        directory.verify("bob@example.com", b"wrong", CLIENT),
        AuthOutcome::Denied
    );
}

#[test]
fn compare_mode_without_read_rights_denies() {
    let Some(slapd) = Slapd::start() else { return };
    // Anonymous searches may not read userPassword (the fixture's ACL).
    let mut config = slapd.config();
    config.bind_dn = String::new();
    config.bind_password = String::new();
    let directory = LdapDirectory::new(config).unwrap();
    assert_eq!(found(directory.lookup("erin@example.com")).password, "");
    assert_eq!(
        directory.verify("erin@example.com", b"erinpw", CLIENT),
        AuthOutcome::Denied
    );
}

#[test]
fn wrong_service_password_is_a_temporary_failure() {
    let Some(slapd) = Slapd::start() else { return };
    let mut config = slapd.config();
    config.bind_password = "not-the-reader-password".into();
    let directory = LdapDirectory::new(config).unwrap();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));
}

#[test]
fn bind_mode_lets_the_server_check() {
    let Some(slapd) = Slapd::start() else { return };
    let mut config = slapd.config();
    config.auth = LdapAuth::Bind;
    // Bind mode needs no read access to passwords: search anonymously.
    config.bind_dn = String::new();
    config.bind_password = String::new();
    let directory = LdapDirectory::new(config).unwrap();

    for _ in 0..2 {
        // Twice: the second round reuses pooled connections.
        match directory.verify("alice@example.com", b"alicepw", CLIENT) {
            AuthOutcome::Accepted(record) => {
                assert_eq!(record.tohost(), Some("10.0.0.2"));
                assert_eq!(record.password, "", "bind mode hands out no hash");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            directory.verify("bob@example.com", b"bobpw", CLIENT),
            AuthOutcome::Accepted(_)
        ));
        assert_eq!(
            directory.verify("bob@example.com", b"alicepw", CLIENT),
            AuthOutcome::Denied
        );
        assert_eq!(
            directory.verify("carol@example.com", b"carolpw", CLIENT),
            AuthOutcome::Disabled
        );
        assert_eq!(
            directory.verify("carol@example.com", b"nope", CLIENT),
            AuthOutcome::Denied
        );
        assert_eq!(
            directory.verify("ghost@example.com", b"alicepw", CLIENT),
            AuthOutcome::Denied
        );
        // An empty password would be an unauthenticated bind, which slapd accepts.
        assert_eq!(
            directory.verify("alice@example.com", b"", CLIENT),
            AuthOutcome::Denied
        );
    }
    assert_eq!(found(directory.lookup("alice@example.com")).password, "");
}

#[test]
fn server_restart_is_tempfail_then_recovers() {
    let Some(mut slapd) = Slapd::start() else {
        return;
    };
    let mut config = slapd.config();
    config.connect_timeout = Duration::from_secs(2);
    let directory = LdapDirectory::new(config).unwrap();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::Found(_)
    ));

    slapd.stop();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::TempFail(_)
    ));
    assert!(matches!(
        directory.verify("diane@example.org", b"dianepw", CLIENT),
        AuthOutcome::TempFail(_)
    ));

    slapd.run();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
    assert!(matches!(
        directory.verify("diane@example.org", b"dianepw", CLIENT),
        AuthOutcome::Accepted(_)
    ));

    // A pooled connection that died while idle is replaced transparently.
    slapd.stop();
    slapd.run();
    assert!(matches!(
        directory.lookup("alice@example.com"),
        Lookup::Found(_)
    ));
    assert_eq!(directory.reload(), Ok(()));
    assert!(matches!(
        directory.lookup("bob@example.com"),
        Lookup::Found(_)
    ));
}

/// A server that accepts connections and answers each with `answer` (or nothing),
/// then keeps the connection open for a while.
fn fake_server(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                if stream.read(&mut buf).is_ok() && !answer.is_empty() {
                    let _ = stream.write_all(answer);
                }
                thread::sleep(Duration::from_secs(3));
            });
        }
    });
    port
}

#[test]
fn silent_server_times_out_as_tempfail() {
    let port = fake_server(b"");
    let mut config = LdapConfig::new(format!("ldap://127.0.0.1:{port}"), BASE);
    config.timeout = Duration::from_millis(300);
    let directory = LdapDirectory::new(config).unwrap();
    let started = Instant::now();
    assert!(matches!(
        directory.lookup("a@example.com"),
        Lookup::TempFail(_)
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn garbage_answers_are_tempfail() {
    for answer in [
        &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..],
        &b"\x30\x84\xff\xff\xff\xff"[..],         // 4 GiB message
        &b"\x30\x03\x02\x01\x01"[..],             // truncated, then silence
        &b"\x30\x06\x02\x01\x01\x65\x01\x00"[..], // SearchResultDone with bad contents
        &b"\x30\x0c\x02\x01\x09\x65\x07\x0a\x01\x00\x04\x00\x04\x00"[..], // wrong id
        &b"\x30\x0c\x02\x01\x00\x78\x07\x0a\x01\x34\x04\x00\x04\x00"[..], // notice of disconnection
    ] {
        let port = fake_server(answer);
        let mut config = LdapConfig::new(format!("ldap://127.0.0.1:{port}"), BASE);
        config.timeout = Duration::from_millis(300);
        let directory = LdapDirectory::new(config).unwrap();
        assert!(
            matches!(directory.lookup("a@example.com"), Lookup::TempFail(_)),
            "{answer:?}"
        );
    }
}

/// A test CA and a server certificate for localhost/127.0.0.1 it signed, as PEM:
/// `(ca, cert, key)`.
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tidegate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn ldaps_and_starttls_verify_the_server() {
    let (ca, cert, key) = test_pki();
    let Some(slapd) = Slapd::start_with(Some((&cert, &key))) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    fs::write(&ca_file, ca).unwrap();
    let (other_ca, _, _) = test_pki();
    let other_ca_file = files.path().join("other-ca.pem");
    fs::write(&other_ca_file, other_ca).unwrap();
    let tls_port = slapd.tls_port.unwrap();

    let mut ldaps = slapd.config();
    ldaps.url = format!("ldaps://127.0.0.1:{tls_port}");
    ldaps.ca_file = Some(ca_file.clone());
    let directory = LdapDirectory::new(ldaps.clone()).unwrap();
    assert_eq!(
        found(directory.lookup("alice@example.com")).tohost(),
        Some("10.0.0.2")
    );
    assert!(matches!(
        directory.verify("diane@example.org", b"dianepw", CLIENT),
        AuthOutcome::Accepted(_)
    ));

    let mut starttls = slapd.config();
    starttls.starttls = true;
    starttls.auth = LdapAuth::Bind;
    starttls.ca_file = Some(ca_file);
    let directory = LdapDirectory::new(starttls.clone()).unwrap();
    assert!(matches!(
        directory.verify("bob@example.com", b"bobpw", CLIENT),
        AuthOutcome::Accepted(_)
    ));
    assert_eq!(
        directory.verify("bob@example.com", b"wrong", CLIENT),
        AuthOutcome::Denied
    );

    // A server whose certificate the configured CA did not sign is never talked to.
    for mut config in [ldaps, starttls] {
        config.ca_file = Some(other_ca_file.clone());
        let directory = LdapDirectory::new(config).unwrap();
        assert!(matches!(
            directory.lookup("alice@example.com"),
            Lookup::TempFail(_)
        ));
    }
}
