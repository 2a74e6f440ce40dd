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
