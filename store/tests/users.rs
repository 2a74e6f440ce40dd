//! The users file on disk: reloading and atomic edits.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tidegate_store::users::{
    UsersError, UsersFile, add_user, delete_user, list_users, normalize_address, set_password,
};

const HEADER: &str = "# tidegate users\n\n";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn normalization_trims_and_lowercases() {
    assert_eq!(
        normalize_address("  Alice@Example.COM\t"),
        "alice@example.com"
    );
}

#[test]
fn reload_keeps_the_old_table_on_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(&path, "a@x.org {PLAIN}one\n").unwrap();
    let users = UsersFile::open(&path)
        .unwrap()
        .with_check_interval(Duration::ZERO);
    assert!(users.current().lookup("a@x.org").is_some());
    assert!(!users.reload_if_changed(), "unchanged file is not reloaded");

    fs::write(
        &path,
        "a@x.org {PLAIN}one\nb@x.org {PLAIN}two\nbroken-line\n",
    )
    .unwrap();
    assert!(!users.reload_if_changed());
    let table = users.current();
    assert!(table.lookup("a@x.org").is_some(), "old table kept");
    assert!(table.lookup("b@x.org").is_none());
    match users.reload() {
        Err(UsersError::Syntax(e)) => assert_eq!(e.line, 3),
        other => panic!("{other:?}"),
    }

    fs::write(&path, "b@x.org {PLAIN}two\n").unwrap();
    assert!(users.reload_if_changed());
    assert!(users.current().lookup("a@x.org").is_none());
    assert!(users.current().lookup("B@X.ORG").is_some());

    fs::remove_file(&path).unwrap();
    assert!(!users.reload_if_changed());
    assert!(
        users.current().lookup("b@x.org").is_some(),
        "vanished file: old table kept"
    );
}

#[test]
fn reload_checks_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    fs::write(&path, "a@x.org {PLAIN}one\n").unwrap();
    let users = UsersFile::open(&path).unwrap(); // default: once a second
    add_user(&path, "b@x.org", "{PLAIN}two", &BTreeMap::new()).unwrap();
    assert!(!users.reload_if_changed(), "checked too recently");
    users.reload().unwrap();
    assert!(users.current().lookup("b@x.org").is_some());
    assert!(UsersFile::open(dir.path().join("missing")).is_err());
}

#[test]
fn add_creates_the_file_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let mut fields = BTreeMap::new();
    fields.insert("tohost".to_owned(), "10.0.0.2".to_owned());
    fields.insert("nologin".to_owned(), String::new());
    add_user(&path, " Carol@X.org", "{PLAIN}pw", &fields).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "carol@x.org {PLAIN}pw nologin tohost=10.0.0.2\n"
    );
    assert_eq!(mode(&path), 0o600);
    assert!(matches!(
        add_user(&path, "CAROL@x.org", "{PLAIN}x", &BTreeMap::new()),
        Err(UsersError::Exists(a)) if a == "carol@x.org"
    ));
    let mut bad = BTreeMap::new();
    bad.insert("tohost".to_owned(), "two words".to_owned());
    for (address, password, fields) in [
        ("d@x.org", "{PLAIN}pw", &bad),
        ("d@x.org", "nonsense", &BTreeMap::new()),
        ("d@x.org", "{PLAIN}has space", &BTreeMap::new()),
        ("no-domain", "{PLAIN}pw", &BTreeMap::new()),
    ] {
        let result = add_user(&path, address, password, fields);
        assert!(
            matches!(result, Err(UsersError::Invalid(_))),
            "{password}: {result:?}"
        );
    }
    assert_eq!(list_users(&path).unwrap().len(), 1);
    assert!(!dir.path().join(".users.tmp").exists());
}

#[test]
fn edits_keep_every_other_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let original = format!(
        "{HEADER}a@x.org   {{PLAIN}}one tohost=h1   # the first\n\
         # between\r\nb@x.org {{PLAIN}}two\n\nc@y.org {{PLAIN}}three quota=5"
    );
    fs::write(&path, &original).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

    set_password(&path, "A@x.org", "{PLAIN}uno").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        original.replace(
            "a@x.org   {PLAIN}one tohost=h1   # the first",
            "a@x.org {PLAIN}uno tohost=h1 # the first"
        )
    );
    assert_eq!(mode(&path), 0o640, "mode kept");

    delete_user(&path, "b@x.org").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("b@x.org"));
    assert!(text.starts_with(HEADER) && text.contains("# between\r\n"));

    add_user(&path, "d@y.org", "{PLAIN}four", &BTreeMap::new()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with("c@y.org {PLAIN}three quota=5\nd@y.org {PLAIN}four\n"));

    let listed: Vec<String> = list_users(&path)
        .unwrap()
        .into_iter()
        .map(|u| u.address)
        .collect();
    assert_eq!(listed, ["a@x.org", "c@y.org", "d@y.org"]);
    assert!(matches!(
        delete_user(&path, "b@x.org"),
        Err(UsersError::NotFound(_))
    ));
    assert!(matches!(
        set_password(&path, "zz@x.org", "{PLAIN}x"),
        Err(UsersError::NotFound(_))
    ));
    assert!(matches!(
        set_password(&path, "a@x.org", "{BOGUS}x"),
        Err(UsersError::Invalid(_))
    ));
}

#[test]
fn edits_refuse_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    let broken = "a@x.org {PLAIN}one\na@x.org {PLAIN}again\n";
    fs::write(&path, broken).unwrap();
    let result = add_user(&path, "b@x.org", "{PLAIN}x", &BTreeMap::new());
    match result {
        Err(UsersError::Syntax(e)) => {
            assert_eq!(e.line, 2);
            assert!(e.reason.contains("line 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), broken, "untouched");
}

mod directory {
    use std::fs;
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tidegate_core::user::{AuthOutcome, Lookup};
    use tidegate_core::{Account, Failure, RecipientCheck, Reply, Request, Secret};
    use tidegate_store::Executor;
    use tidegate_store::local::LocalStore;
    use tidegate_store::maildir::MaildirStore;
    use tidegate_store::users::{CacheConfig, CachedDirectory, UserDirectory, UsersFile};

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    /// `openssl passwd -6 -salt 8DqW2pXv 'Tr0ub4dor&3'`.
    const SHA512: &str = "{SHA512-CRYPT}$6$8DqW2pXv$QDPMcKF3oa8VMMncr3qPUyjLB2i6FLoSPunQIlwb9GZRSFFCYfK.XDv/uB/y4PJfLBWvzV.tsn10hDo936f0C1";
    const PASSWORD: &[u8] = b"Tr0ub4dor&3";

    fn users_file(dir: &std::path::Path) -> (std::path::PathBuf, UsersFile) {
        let path = dir.join("users");
        fs::write(
            &path,
            format!(
                "ann@a.example {SHA512} quota=100 tohost=10.0.0.1\n\
                 off@a.example {SHA512} nologin\n\
                 postmaster@b.example {{PLAIN}}pm\n"
            ),
        )
        .unwrap();
        let file = UsersFile::open(&path)
            .unwrap()
            .with_check_interval(Duration::ZERO);
        (path, file)
    }

    #[test]
    fn lookup_answers_found_not_found_and_unknown_domain() {
        let dir = tempfile::tempdir().unwrap();
        let (_, users) = users_file(dir.path());
        match users.lookup(" ANN@a.example") {
            Lookup::Found(record) => {
                assert_eq!(record.address, "ann@a.example");
                assert_eq!(record.quota(), Some(100));
                assert_eq!(record.tohost(), Some("10.0.0.1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(users.lookup("bob@a.example"), Lookup::NotFound);
        assert_eq!(users.lookup("bob@elsewhere.example"), Lookup::UnknownDomain);
        assert_eq!(users.lookup("no-at-sign"), Lookup::UnknownDomain);
        match users.lookup("Postmaster") {
            Lookup::Found(record) => assert_eq!(record.address, "postmaster@b.example"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verify_reveals_nologin_only_with_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let (_, users) = users_file(dir.path());
        assert!(matches!(
            users.verify("ann@a.example", PASSWORD, CLIENT),
            AuthOutcome::Accepted(ref r) if r.address == "ann@a.example"
        ));
        assert_eq!(
            users.verify("ann@a.example", b"wrong", CLIENT),
            AuthOutcome::Denied
        );
        assert_eq!(
            users.verify("nobody@a.example", PASSWORD, CLIENT),
            AuthOutcome::Denied
        );
        assert_eq!(
            users.verify("off@a.example", b"wrong", CLIENT),
            AuthOutcome::Denied
        );
        assert_eq!(
            users.verify("off@a.example", PASSWORD, CLIENT),
            AuthOutcome::Disabled
        );
    }

    #[test]
    fn reload_now_and_keep_the_old_table_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, users) = users_file(dir.path());
        let users = users.with_check_interval(Duration::from_secs(3600));
        fs::write(&path, "new@a.example {PLAIN}n\nbroken\n").unwrap();
        let error = UserDirectory::reload(&users).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(matches!(users.lookup("ann@a.example"), Lookup::Found(_)));
        fs::write(&path, "new@a.example {PLAIN}n\n").unwrap();
        UserDirectory::reload(&users).unwrap();
        assert_eq!(users.lookup("ann@a.example"), Lookup::NotFound);
        assert!(matches!(users.lookup("new@a.example"), Lookup::Found(_)));
    }

    fn login(store: &LocalStore, user: &str, password: &[u8], client: IpAddr) -> Reply {
        store.execute(Request::Authenticate {
            user: user.into(),
            password: Secret::new(password.to_vec()),
            client,
        })
    }

    #[test]
    fn local_store_applies_the_login_penalty() {
        let dir = tempfile::tempdir().unwrap();
        let (_, users) = users_file(dir.path());
        let maildir = MaildirStore::new(dir.path().join("mail"), false, "h.test");
        let store = LocalStore::new(users, maildir);
        let attacker: IpAddr = "203.0.113.9".parse().unwrap();
        let mut delays = Vec::new();
        for _ in 0..10 {
            match login(&store, "ann@a.example", b"guess", attacker) {
                Reply::Failed(Failure::Denied) => delays.push(0),
                Reply::Failed(Failure::Throttled(d)) => delays.push(d.as_secs()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [0, 1, 2, 4, 8, 15, 15, 15, 15, 15]);
        // Refused now, even with the right password, which is not even checked.
        assert!(matches!(
            login(&store, "ann@a.example", PASSWORD, attacker),
            Reply::Failed(Failure::Temporary(ref t)) if t == "too many failed logins"
        ));
        // Another client is unaffected, and its success clears only itself.
        assert!(matches!(
            login(&store, "ann@a.example", PASSWORD, CLIENT),
            Reply::Authenticated(Account(ref a)) if a == "ann@a.example"
        ));
        assert!(matches!(
            login(&store, "ann@a.example", b"guess", CLIENT),
            Reply::Failed(Failure::Denied)
        ));
    }

    #[test]
    fn local_store_answers_lookups_verifications_and_recipients_from_any_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_, users) = users_file(dir.path());
        let cached: Arc<dyn UserDirectory> = Arc::new(CachedDirectory::new(
            Arc::new(users),
            CacheConfig::default(),
        ));
        let maildir = MaildirStore::new(dir.path().join("mail"), false, "h.test");
        let store = LocalStore::new(cached, maildir);
        match store.execute(Request::LookupUser {
            address: "Ann@A.example".into(),
        }) {
            Reply::User(Lookup::Found(record)) => assert_eq!(record.tohost(), Some("10.0.0.1")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.execute(Request::LookupUser {
                address: "x@a.example".into()
            }),
            Reply::User(Lookup::NotFound)
        ));
        let verify = |user: &str, password: &[u8]| {
            store.execute(Request::VerifyUser {
                user: user.into(),
                password: Secret::new(password.to_vec()),
                client: CLIENT,
            })
        };
        for _ in 0..2 {
            assert!(matches!(
                verify("ann@a.example", PASSWORD),
                Reply::Verified(AuthOutcome::Accepted(_))
            ));
        }
        assert!(matches!(
            verify("ann@a.example", b"wrong"),
            Reply::Verified(AuthOutcome::Denied)
        ));
        assert!(matches!(
            verify("off@a.example", PASSWORD),
            Reply::Verified(AuthOutcome::Disabled)
        ));
        let rcpt = |address: &str| match store.execute(Request::CheckRecipient {
            address: address.into(),
            size_hint: None,
        }) {
            Reply::Recipient(check) => check,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            rcpt("ann@a.example"),
            RecipientCheck::Local(Account("ann@a.example".into()))
        );
        assert_eq!(rcpt("zed@a.example"), RecipientCheck::Unknown);
        assert_eq!(rcpt("zed@other.example"), RecipientCheck::NotLocal);
        assert_eq!(
            rcpt("postmaster"),
            RecipientCheck::Local(Account("postmaster@b.example".into()))
        );
    }

    /// A directory that cannot be reached.
    #[derive(Debug)]
    struct Down;

    impl UserDirectory for Down {
        fn lookup(&self, _: &str) -> Lookup {
            Lookup::TempFail("connection refused".into())
        }
        fn verify(&self, _: &str, _: &[u8], _: IpAddr) -> AuthOutcome {
            AuthOutcome::TempFail("connection refused".into())
        }
    }

    #[test]
    fn an_unreachable_directory_is_a_temporary_failure() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = MaildirStore::new(dir.path().join("mail"), false, "h.test");
        let down: Arc<dyn UserDirectory> = Arc::new(Down);
        let store = LocalStore::new(down, maildir);
        assert!(matches!(
            login(&store, "ann@a.example", PASSWORD, CLIENT),
            Reply::Failed(Failure::Temporary(_))
        ));
        assert!(matches!(
            store.execute(Request::CheckRecipient {
                address: "ann@a.example".into(),
                size_hint: None
            }),
            Reply::Failed(Failure::Temporary(_))
        ));
        assert!(
            store.penalty().is_empty(),
            "a database outage is not the client's failure"
        );
    }
}
