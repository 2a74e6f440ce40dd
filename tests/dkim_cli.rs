//! `tidegate dkim generate` as a user runs it: the key file it writes, the record it
//! prints, and a signature made with that key checked by dkimpy against that record.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::tidegate;
use tidegate_store::dkim::DkimSigner;

fn generate(dir: &Path, args: &[&str]) -> Output {
    tidegate()
        .current_dir(dir)
        .args(["dkim", "generate"])
        .args(args)
        .output()
        .unwrap()
}

/// The `name:` and `value:` lines of the command's output.
fn record(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout}"))
            .trim()
            .to_string()
    };
    (field("name:"), field("value:"))
}

fn python_with_dkim() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import dkim, nacl"])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

const MESSAGE: &str = "From: ops@example.com\r\nTo: someone@example.net\r\nSubject: key check\r\n\
Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n\r\nSigned with a key from the command line.\r\n";

#[test]
fn generate_writes_a_private_key_and_prints_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), &["Example.com", "--selector", "mail1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, value) = record(&out);
    assert_eq!(name, "mail1._domainkey.example.com");
    assert!(value.starts_with("v=DKIM1; k=rsa; p=MII"), "{value}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("mail1._domainkey.example.com. 3600 IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{stdout}"
    );
    let key = dir.path().join("dkim-example.com-mail1.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A second run with the same key file refuses and leaves the key alone.
    let before = std::fs::read(&key).unwrap();
    let again = generate(dir.path(), &["example.com", "--selector", "mail1"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // Bad names are refused before any key is written.
    let bad = generate(dir.path(), &["not a domain"]);
    assert!(!bad.status.success());
}

#[test]
fn default_selector_and_ed25519_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ed.pem");
    let out = generate(
        dir.path(),
        &["example.org", "--ed25519", "--key", key.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, value) = record(&out);
    let selector = name.strip_suffix("._domainkey.example.org").unwrap();
    assert!(
        selector.len() == 7
            && selector.starts_with('s')
            && selector[1..].bytes().all(|b| b.is_ascii_digit()),
        "{selector}"
    );
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    assert!(DkimSigner::load("example.org", selector, &key).is_ok());
}

#[test]
fn printed_record_verifies_signatures_made_with_the_key() {
    let Some(python) = python_with_dkim() else {
        eprintln!("SKIPPED: python3-dkim not installed; apt-get install python3-dkim");
        return;
    };
    for extra in [&[][..], &["--ed25519"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["example.com", "--selector", "cli", "--key", "k.pem"];
        args.extend_from_slice(extra);
        let out = generate(dir.path(), &args);
        assert!(out.status.success());
        let (name, value) = record(&out);

        let signer = DkimSigner::load("example.com", "cli", &dir.path().join("k.pem")).unwrap();
        let message = dir.path().join("message.eml");
        std::fs::write(&message, MESSAGE).unwrap();
        let signed = dir.path().join("signed.eml");
        std::fs::write(
            &signed,
            format!("{}{MESSAGE}", signer.sign_file(&message).unwrap()),
        )
        .unwrap();
        let verdict = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("store/tests/dkim/verify.py"))
            .arg(&signed)
            .arg(&name)
            .arg(&value)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&verdict.stdout).trim(),
            "pass",
            "{extra:?}: {}",
            String::from_utf8_lossy(&verdict.stderr)
        );
    }
}
