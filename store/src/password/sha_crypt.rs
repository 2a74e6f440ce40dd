//! `{SHA512-CRYPT}` and `{SHA256-CRYPT}`: Ulrich Drepper's SHA-crypt as glibc
//! `crypt(3)` implements it, `$6$[rounds=N$]SALT$HASH` and `$5$…`, as `openssl passwd
//! -6`/`-5`, `mkpasswd` and `doveadm pw -s SHA512-CRYPT` write it. RustCrypto's
//! `sha-crypt` does the work and compares in constant time.

use sha_crypt::{PasswordHashRef, PasswordVerifier, ShaCrypt};

use super::Verification;

/// Largest accepted `rounds=` (glibc allows 999,999,999: minutes per check), so a bad
/// users file line cannot make every login take that long. The default is 5,000.
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;

/// Which SHA-crypt: `$5$` (SHA-256) or `$6$` (SHA-512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    Sha256,
    Sha512,
}

impl Variant {
    fn prefix(self) -> &'static str {
        match self {
            Variant::Sha256 => "$5$",
            Variant::Sha512 => "$6$",
        }
    }
}

/// Checks that `data` is a SHA-crypt string of this variant with an accepted round count.
pub(super) fn check(variant: Variant, data: &str) -> Result<(), String> {
    let Some(rest) = data.strip_prefix(variant.prefix()) else {
        return Err(format!(
            "not a SHA-crypt hash (expected {}…)",
            variant.prefix()
        ));
    };
    let mut parts = rest.split('$');
    let mut salt = parts.next().unwrap_or_default();
    if let Some(rounds) = salt.strip_prefix("rounds=") {
        match rounds.parse::<u32>() {
            Ok(n) if (1_000..=MAX_SHA_CRYPT_ROUNDS).contains(&n) => {}
            _ => {
                return Err(format!(
                    "rounds={rounds} is outside 1000..={MAX_SHA_CRYPT_ROUNDS}"
                ));
            }
        }
        salt = parts.next().unwrap_or_default();
    }
    let hash = parts.next().unwrap_or_default();
    let hash_len = match variant {
        Variant::Sha256 => 43,
        Variant::Sha512 => 86,
    };
    if salt.is_empty() || salt.len() > 16 || hash.len() != hash_len || parts.next().is_some() {
        return Err("malformed SHA-crypt hash".into());
    }
    PasswordHashRef::new(data).map_err(|e| format!("malformed SHA-crypt hash: {e}"))?;
    Ok(())
}

/// Checks `password` against a SHA-crypt string of this variant.
pub(super) fn verify(variant: Variant, data: &str, password: &[u8]) -> Verification {
    let parsed =
        check(variant, data).and_then(|()| PasswordHashRef::new(data).map_err(|e| e.to_string()));
    let hash = match parsed {
        Ok(hash) => hash,
        Err(reason) => {
            log::warn!("stored SHA-crypt password not usable: {reason}");
            return Verification::Unsupported;
        }
    };
    let verifier = match variant {
        Variant::Sha256 => ShaCrypt::SHA256,
        Variant::Sha512 => ShaCrypt::SHA512,
    };
    match verifier.verify_password(password, hash) {
        Ok(()) => Verification::Match,
        Err(sha_crypt::password_hash::Error::PasswordInvalid) => Verification::Mismatch,
        Err(error) => {
            log::warn!("stored SHA-crypt password not usable: {error}");
            Verification::Unsupported
        }
    }
}
