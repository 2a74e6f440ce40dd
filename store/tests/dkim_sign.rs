//! DKIM signing: RFC 6376's canonicalisation example byte for byte, the shape of the
//! signature header, and signatures checked by a real third-party verifier (Debian's
//! python3-dkim, dkimpy) with keys made by `generate_key` and by openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidegate_store::dkim::canon::{relaxed_body, relaxed_header};
use tidegate_store::dkim::{DkimSigner, KeyKind, generate_key};

/// RFC 6376 §3.4.5, the example message (header and body, separated by the empty line).
const RFC_EXAMPLE: &[u8] = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";

#[test]
fn rfc6376_relaxed_example_byte_for_byte() {
    // §3.4.5: "A: X" and "B : Y<HTAB><CRLF><HTAB>Z<SP><SP>" become "a:X" and "b:Y Z".
    assert_eq!(relaxed_header(b"A: X\r\n"), b"a:X\r\n");
    assert_eq!(relaxed_header(b"B : Y\t\r\n\tZ  \r\n"), b"b:Y Z\r\n");
    // The body " C <CRLF>D <HTAB> E<CRLF><CRLF><CRLF>" becomes " C<CRLF>D E<CRLF>".
    let body = &RFC_EXAMPLE[RFC_EXAMPLE
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4..];
    assert_eq!(relaxed_body(body), b" C\r\nD E\r\n");
}

const MESSAGE: &str = concat!(
    "From: Alice Example <alice@example.com>\r\n",
    "To: bob@example.net\r\n",
    "Received: from somewhere by relay\r\n",
    "Subject: A test of signing,\r\n",
    "  with a folded subject\r\n",
    "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n",
    "Message-ID: <1234@example.com>\r\n",
    "MIME-Version: 1.0\r\n",
    "Content-Type: text/plain; charset=utf-8\r\n",
    "\r\n",
    "Hello Bob,  \r\n",
    "\r\n",
    "this line has  two  spaces and a trailing tab\t\r\n",
    ".leading dot, not stuffed\r\n",
    "\r\n",
    "\r\n",
);

fn signer(dir: &Path, kind: KeyKind) -> (DkimSigner, String) {
    let key = dir.join(format!("{kind:?}.pem"));
    let record = generate_key(&key, kind).unwrap();
    (
        DkimSigner::load("Example.COM", "sel2026", &key).unwrap(),
        record,
    )
}

#[test]
fn signature_header_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, _) = signer(dir.path(), KeyKind::Rsa2048);
    assert_eq!(signer.domain(), "example.com");
    let header = signer
        .sign_reader_at(MESSAGE.as_bytes(), 1_796_040_000)
        .unwrap();
    assert!(header.ends_with("\r\n") && !header.ends_with("\r\n\r\n"));
    for line in header.trim_end_matches("\r\n").split("\r\n") {
        assert!(line.len() <= 78, "line too long: {line:?}");
    }
    let squeezed = header.replace("\r\n ", "").replace(' ', "");
    assert!(
        squeezed.starts_with(
            "DKIM-Signature:v=1;a=rsa-sha256;c=relaxed/relaxed;d=example.com;s=sel2026;\
             t=1796040000;h=from:to:subject:date:message-id:mime-version:content-type:from;bh="
        ),
        "{header}"
    );
    // RSA PKCS#1 v1.5 is deterministic: the same input gives the same field.
    assert_eq!(
        signer
            .sign_reader_at(MESSAGE.as_bytes(), 1_796_040_000)
            .unwrap(),
        header
    );
    // A message without From is refused.
    let err = signer
        .sign_reader_at(&b"To: x@example.net\r\n\r\nbody\r\n"[..], 1)
        .unwrap_err();
    assert!(err.0.contains("From"), "{err}");
}

#[test]
fn generated_key_file_is_private_and_not_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let record = generate_key(&key, KeyKind::Ed25519).unwrap();
    assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(generate_key(&key, KeyKind::Ed25519).is_err());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem);
}

#[test]
fn bad_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    assert!(DkimSigner::load("example.com", "s", &key).is_err());
    assert!(DkimSigner::load("example.com", "s", &dir.path().join("absent")).is_err());
    let good = dir.path().join("good.pem");
    generate_key(&good, KeyKind::Ed25519).unwrap();
    assert!(DkimSigner::load("bad domain", "s", &good).is_err());
}

/// A python3 that has dkimpy, or None (the caller then skips, saying so).
fn python_with_dkim() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import dkim, nacl"])
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

fn verify_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dkim/verify.py")
}

/// Runs dkimpy on `signed` and returns its verdict ("pass" or "fail").
fn dkimpy_verdict(python: &str, dir: &Path, signed: &[u8], record: &str) -> String {
    let path = dir.join("signed.eml");
    std::fs::write(&path, signed).unwrap();
    let out = Command::new(python)
        .arg(verify_script())
        .arg(&path)
        .arg("sel2026._domainkey.example.com")
        .arg(record)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sign_and_verify(python: &str, dir: &Path, signer: &DkimSigner, record: &str) {
    let file = dir.join("message.eml");
    std::fs::write(&file, MESSAGE).unwrap();
    let header = signer.sign_file(&file).unwrap();
    let signed = format!("{header}{MESSAGE}");
    assert_eq!(
        dkimpy_verdict(python, dir, signed.as_bytes(), record),
        "pass"
    );

    // Relaxed canonicalisation tolerates refolding and whitespace changes in transit...
    let relayed = signed
        .replace("Subject: A test", "subject:   A  test")
        .replace("Hello Bob,  \r\n", "Hello  Bob,\r\n");
    assert_eq!(
        dkimpy_verdict(python, dir, relayed.as_bytes(), record),
        "pass"
    );
    // ...but not a changed word in the body, a changed signed header, or an added From.
    for tampered in [
        signed.replace("Hello Bob", "Hello Eve"),
        signed.replace("To: bob@", "To: eve@"),
        signed.replace("Received:", "From: mallory@example.org\r\nReceived:"),
    ] {
        assert_eq!(
            dkimpy_verdict(python, dir, tampered.as_bytes(), record),
            "fail"
        );
    }
}

#[test]
fn dkimpy_verifies_rsa_and_ed25519_signatures() {
    let Some(python) = python_with_dkim() else {
        eprintln!(
            "SKIPPED: python3-dkim (and python3-nacl) not installed; apt-get install python3-dkim"
        );
        return;
    };
    for kind in [KeyKind::Rsa2048, KeyKind::Ed25519] {
        let dir = tempfile::tempdir().unwrap();
        let (signer, record) = signer(dir.path(), kind);
        sign_and_verify(python, dir.path(), &signer, &record);
    }
}

#[test]
fn dkimpy_verifies_edge_case_messages() {
    let Some(python) = python_with_dkim() else {
        eprintln!("SKIPPED: python3-dkim not installed; apt-get install python3-dkim");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (signer, record) = signer(dir.path(), KeyKind::Ed25519);
    for message in [
        // Empty body, header only without the empty line, blank-only body, no final CRLF,
        // duplicate To (the bottom one is signed), a long folded header, 8-bit text.
        "From: a@example.com\r\nSubject: empty\r\n\r\n",
        "From: a@example.com\r\nSubject: no separator\r\n",
        "From: a@example.com\r\n\r\n\r\n \t\r\n\r\n",
        "From: a@example.com\r\n\r\nlast line without CRLF",
        "To: first@example.net\r\nFrom: a@example.com\r\nTo: second@example.net\r\n\r\nx\r\n",
        "From: a@example.com\r\nSubject: one two three four five six seven eight nine ten\r\n \televen twelve\r\n\r\nx\r\n",
        "From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\nSubject: Grüße\r\n\r\nHällo wörld\r\n",
    ] {
        let file = dir.path().join("edge.eml");
        std::fs::write(&file, message).unwrap();
        let header = signer.sign_file(&file).unwrap();
        let signed = format!("{header}{message}");
        assert_eq!(
            dkimpy_verdict(python, dir.path(), signed.as_bytes(), &record),
            "pass",
            "{message:?}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn any_message_signs_or_refuses_without_panicking(
        extra in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        with_from in proptest::prelude::any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        generate_key(&key, KeyKind::Ed25519).unwrap();
        let signer = DkimSigner::load("example.com", "s", &key).unwrap();
        let mut message = if with_from { b"From: a@example.com\r\n".to_vec() } else { Vec::new() };
        message.extend_from_slice(&extra);
        match signer.sign_reader_at(&message[..], 1) {
            Ok(header) => {
                proptest::prop_assert!(header.ends_with("\r\n"));
                for line in header.trim_end_matches("\r\n").split("\r\n") {
                    proptest::prop_assert!(line.len() <= 78);
                }
            }
            Err(error) => proptest::prop_assert!(error.0.contains("From"), "{}", error),
        }
    }
}

#[test]
fn dkimpy_verifies_signatures_made_with_an_openssl_key() {
    let Some(python) = python_with_dkim() else {
        eprintln!("SKIPPED: python3-dkim not installed; apt-get install python3-dkim");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("openssl.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output();
    let Ok(made) = made else {
        eprintln!("SKIPPED: openssl not installed");
        return;
    };
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    use base64::Engine;
    let record = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(&public.stdout)
    );
    let signer = DkimSigner::load("example.com", "sel2026", &key).unwrap();
    sign_and_verify(python, dir.path(), &signer, &record);
}
