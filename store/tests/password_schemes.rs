//! Hashes made by other tools verify here: the fixtures below were generated once with
//! the named tool (password `Tr0ub4dor&3` unless noted), and the `live_*` tests run the
//! tools again when they are installed, so a change in their output is noticed.

use std::process::Command;

use tidegate_store::password::{Scheme, Verification, check_stored, verify};

const PASSWORD: &str = "Tr0ub4dor&3";

/// (tool that made it, stored form, scheme).
const FIXTURES: &[(&str, &str, Scheme)] = &[
    (
        "openssl passwd -6 -salt 8DqW2pXv",
        "{SHA512-CRYPT}$6$8DqW2pXv$QDPMcKF3oa8VMMncr3qPUyjLB2i6FLoSPunQIlwb9GZRSFFCYfK.XDv/uB/y4PJfLBWvzV.tsn10hDo936f0C1",
        Scheme::Sha512Crypt,
    ),
    (
        "openssl passwd -6 -salt 'rounds=10000$saltsalt'",
        "{SHA512-CRYPT}$6$rounds=10000$saltsalt$tz3hHRymbItMsq0KmSsjgFieQL4buJRG0tqdEQsvsX43gi5xzkz7NWDDgZzQFf/b3LE68uwETqaiTuSg0qOZP/",
        Scheme::Sha512Crypt,
    ),
    (
        "openssl passwd -5 -salt Hk3Lm9Qa",
        "{SHA256-CRYPT}$5$Hk3Lm9Qa$AoPRv3DV2wxDSZnS5zwXgi/DmtYh.S552qRCFGlTRC0",
        Scheme::Sha256Crypt,
    ),
    (
        "htpasswd -nbB -C 5",
        "{BCRYPT}$2y$05$/AlNH9Cq43mBUlpVOgZImu8cY.7rV3LPCIYAPumf4lYat7.MjEPQe",
        Scheme::Bcrypt,
    ),
    (
        "doveadm pw -s SHA512-CRYPT",
        "{SHA512-CRYPT}$6$CcQf.8l/6DPKv2xE$CYe2GIkXQXQFCVAO3C8/xCq3pd7yjcaynbTa25qCXiyF0xCzCSqd.g2nwcd3s13jjx8WIs.2kQTAhmUURh3fS/",
        Scheme::Sha512Crypt,
    ),
    (
        "doveadm pw -s SHA512-CRYPT -r 20000",
        "{SHA512-CRYPT}$6$rounds=20000$Zr5qvzzhtKfx3L1B$kc3gtopwjHFNtr9AfzINAEQ3/g/IteJMDBPP9g0PLR5a8GuEk0AutgR74b83dbeyhBhNSpJWqwBrwjS7NQeu21",
        Scheme::Sha512Crypt,
    ),
    (
        "doveadm pw -s SHA256-CRYPT",
        "{SHA256-CRYPT}$5$hXjhYps5ik186bRK$Crkmh3DlmLH1Qct6vlLDlvOv1JvwHrfAKVxP4FoCji7",
        Scheme::Sha256Crypt,
    ),
    (
        "doveadm pw -s SSHA",
        "{SSHA}plmn6UMApu7E0Wve+5OLm6r2GXfyHERm",
        Scheme::Ssha,
    ),
    (
        "doveadm pw -s SSHA256",
        "{SSHA256}nFr10COsp8uZIJvXn+wsqErBbCU+sbNJj2w444m3uX3pnldv",
        Scheme::Ssha256,
    ),
    (
        "doveadm pw -s SSHA512",
        "{SSHA512}kctavwXzSiXSSUQP6i2LvkgvKo3CqNnC9VXHjjc3YmNsTHyDsnBfQnkCDckgPkBhJ9JGaZua++fzqU25Wqa4J8kM5q0=",
        Scheme::Ssha512,
    ),
    (
        "doveadm pw -s BLF-CRYPT",
        "{BLF-CRYPT}$2y$05$mdiAxPgJRQXZPgDcwSqYY.AhVmfIUaHscAXEfICsWEu7VipSgrKLu",
        Scheme::Bcrypt,
    ),
    (
        "doveadm pw -s CRYPT",
        "{CRYPT}$2y$05$A8qJwc9LC3H9OPUZJ.eH4uJ2HozocZykdv1Tg9QB/63x0tzxmIgYi",
        Scheme::Bcrypt,
    ),
    (
        "slappasswd -h {SSHA}",
        "{SSHA}YcNFnpXK0YTISgaASoBhS8Xxb/UnNAPt",
        Scheme::Ssha,
    ),
];

#[test]
fn hashes_made_by_other_tools_verify() {
    for (tool, stored, scheme) in FIXTURES {
        assert_eq!(check_stored(stored), Ok(*scheme), "{tool}: {stored}");
        assert_eq!(
            verify(stored, PASSWORD.as_bytes()),
            Verification::Match,
            "{tool}"
        );
        assert_eq!(
            verify(stored, b"Tr0ub4dor&4"),
            Verification::Mismatch,
            "{tool}"
        );
        assert_eq!(verify(stored, b""), Verification::Mismatch, "{tool}");
    }
}

#[test]
fn non_ascii_passwords_from_dovecot() {
    // `doveadm pw -s BLF-CRYPT -r 6 -p pässwörd` and `doveadm pw -s SSHA -p pässwörd`.
    let bcrypt = "{BLF-CRYPT}$2y$06$JIV0XgoxbMVomKynJYeJ..Z2dCoNaJB/jEIGVFIbm7sUFxzkojOGm";
    let ssha = "{SSHA}Rjb6Z37GJo5eGvw8zwDy4IQaB0xbF19t";
    for stored in [bcrypt, ssha] {
        assert_eq!(verify(stored, "pässwörd".as_bytes()), Verification::Match);
        assert_eq!(verify(stored, b"passwoerd"), Verification::Mismatch);
    }
}

#[test]
fn a_tampered_hash_does_not_verify() {
    for (tool, stored, _) in FIXTURES {
        // Change one character of the hash part (the last one; keep it in the alphabet).
        let mut bytes = stored.as_bytes().to_vec();
        let at = bytes.len() - 2;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_ne!(
            verify(&tampered, PASSWORD.as_bytes()),
            Verification::Match,
            "{tool}: {tampered}"
        );
    }
}

/// Runs `program args…` and returns its stdout, or `None` (with a note) when the tool is
/// not installed.
fn run(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap()),
        Ok(out) => panic!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            println!("skipped: {program} is not available ({e})");
            None
        }
    }
}

#[test]
fn live_openssl_passwd() {
    for (flag, prefix) in [("-6", "{SHA512-CRYPT}"), ("-5", "{SHA256-CRYPT}")] {
        let Some(out) = run("openssl", &["passwd", flag, PASSWORD]) else {
            return;
        };
        let stored = format!("{prefix}{}", out.trim());
        assert_eq!(
            verify(&stored, PASSWORD.as_bytes()),
            Verification::Match,
            "{stored}"
        );
        assert_eq!(verify(&stored, b"nope"), Verification::Mismatch);
    }
}

#[test]
fn live_htpasswd_bcrypt() {
    let Some(out) = run("htpasswd", &["-nbB", "-C", "5", "someone", PASSWORD]) else {
        return;
    };
    let hash = out.trim().strip_prefix("someone:").expect("user:hash");
    let stored = format!("{{BCRYPT}}{hash}");
    assert_eq!(
        verify(&stored, PASSWORD.as_bytes()),
        Verification::Match,
        "{stored}"
    );
    assert_eq!(verify(&stored, b"nope"), Verification::Mismatch);
}

#[test]
fn live_doveadm_pw() {
    for scheme in [
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "SSHA",
        "SSHA256",
        "SSHA512",
        "BLF-CRYPT",
        "ARGON2ID",
    ] {
        let Some(out) = run("doveadm", &["pw", "-s", scheme, "-p", PASSWORD]) else {
            return;
        };
        let stored = out.trim();
        assert!(stored.starts_with(&format!("{{{scheme}}}")), "{stored}");
        assert!(check_stored(stored).is_ok(), "{stored}");
        assert_eq!(
            verify(stored, PASSWORD.as_bytes()),
            Verification::Match,
            "{stored}"
        );
        assert_eq!(verify(stored, b"nope"), Verification::Mismatch, "{stored}");
    }
}

#[test]
fn live_slappasswd() {
    let Some(out) = run("slappasswd", &["-h", "{SSHA}", "-s", PASSWORD]) else {
        return;
    };
    let stored = out.trim();
    assert_eq!(
        verify(stored, PASSWORD.as_bytes()),
        Verification::Match,
        "{stored}"
    );
    assert_eq!(verify(stored, b"nope"), Verification::Mismatch);
}
