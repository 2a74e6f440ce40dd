//! Password schemes of the users file (design.md §4, "Users file"): a stored password is
//! `{SCHEME}DATA`, with the scheme names Dovecot uses, so hashes move between the two.
//!
//! | scheme | data | made by |
//! |---|---|---|
//! | `{ARGON2ID}` | PHC string (RFC 9106), the default for new passwords | `tidegate user`, `doveadm pw -s ARGON2ID` |
//! | `{BCRYPT}`, `{BLF-CRYPT}` | `$2y$COST$…` | `htpasswd -B`, `doveadm pw -s BLF-CRYPT` |
//! | `{SHA512-CRYPT}`, `{SHA256-CRYPT}` | `$6$…`, `$5$…` (glibc crypt) | `openssl passwd -6`/`-5`, `doveadm pw` |
//! | `{SSHA}`, `{SSHA256}`, `{SSHA512}` | base64(digest(password ‖ salt) ‖ salt) | `slappasswd`, `doveadm pw -s SSHA` |
//! | `{CRYPT}` | any of the crypt strings above, told apart by their `$id$` | Dovecot's default scheme |
//! | `{PLAIN}` | the password itself (warned about at load) | migrations and tests |
//!
//! Every comparison is constant-time. Every scheme has a cost ceiling
//! ([`MAX_M_COST_KIB`], [`MAX_BCRYPT_COST`], [`MAX_SHA_CRYPT_ROUNDS`]) so a bad line in
//! the users file cannot make every login slow. No cryptography is written here: the
//! `argon2`, `bcrypt` and `sha-crypt` crates and `ring` do it.

mod argon2id;
mod bcrypt;
mod sha_crypt;
mod ssha;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use subtle::ConstantTimeEq;

/// Argon2 cost parameters, re-exported so callers can pick cheap ones for tests and
/// benchmarks ([`hash_argon2id_with`]).
pub use argon2::Params;
pub use argon2id::{MAX_M_COST_KIB, MAX_P_COST, MAX_T_COST};
pub use bcrypt::MAX_BCRYPT_COST;
pub use sha_crypt::MAX_SHA_CRYPT_ROUNDS;
pub use ssha::MAX_SSHA_SALT;

use sha_crypt::Variant;
use ssha::Digest;

/// The outcome of checking a password against a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password is right.
    Match,
    /// The password is wrong.
    Mismatch,
    /// The stored password uses a scheme or parameters this build cannot check.
    Unsupported,
}

/// A password scheme named by the `{SCHEME}` prefix (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `{ARGON2ID}`: RFC 9106 Argon2id in a PHC string.
    Argon2id,
    /// `{BCRYPT}` / `{BLF-CRYPT}`: OpenBSD bcrypt, `$2y$…`.
    Bcrypt,
    /// `{SHA512-CRYPT}`: glibc SHA-512 crypt, `$6$…`.
    Sha512Crypt,
    /// `{SHA256-CRYPT}`: glibc SHA-256 crypt, `$5$…`.
    Sha256Crypt,
    /// `{SSHA}`: salted SHA-1 (OpenLDAP).
    Ssha,
    /// `{SSHA256}`: salted SHA-256.
    Ssha256,
    /// `{SSHA512}`: salted SHA-512.
    Ssha512,
    /// `{PLAIN}`: the password in clear.
    Plain,
}

/// The scheme names [`Scheme::split`] knows, for error messages.
pub const SCHEME_NAMES: &str = "ARGON2ID, BCRYPT (BLF-CRYPT), SHA512-CRYPT, SHA256-CRYPT, \
                                SSHA, SSHA256, SSHA512, CRYPT or PLAIN";

impl Scheme {
    /// Splits `{SCHEME}DATA` into the scheme and `DATA`; `None` when there is no
    /// `{...}` prefix or the scheme is unknown. `{CRYPT}` is resolved by the data's
    /// `$id$` (`$2…` bcrypt, `$5$`, `$6$`); other crypt flavours are unknown.
    pub fn split(stored: &str) -> Option<(Scheme, &str)> {
        let rest = stored.strip_prefix('{')?;
        let (name, data) = rest.split_once('}')?;
        let scheme = match name.to_ascii_uppercase().as_str() {
            "ARGON2ID" => Scheme::Argon2id,
            "BCRYPT" | "BLF-CRYPT" => Scheme::Bcrypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "SSHA" => Scheme::Ssha,
            "SSHA256" => Scheme::Ssha256,
            "SSHA512" => Scheme::Ssha512,
            "PLAIN" => Scheme::Plain,
            "CRYPT" => Scheme::of_crypt(data)?,
            _ => return None,
        };
        Some((scheme, data))
    }

    /// The scheme of a bare crypt(3) string by its `$id$`.
    pub fn of_crypt(data: &str) -> Option<Scheme> {
        if data.starts_with("$6$") {
            Some(Scheme::Sha512Crypt)
        } else if data.starts_with("$5$") {
            Some(Scheme::Sha256Crypt)
        } else if data.starts_with("$2") {
            Some(Scheme::Bcrypt)
        } else if data.starts_with("$argon2id$") {
            Some(Scheme::Argon2id)
        } else {
            None
        }
    }

    /// Whether checking a password costs real work (everything but `{PLAIN}`).
    pub fn is_hashed(self) -> bool {
        self != Scheme::Plain
    }
}

/// The OWASP-recommended Argon2id parameters used for new hashes: m = 19456 KiB, t = 2,
/// p = 1, 32-byte output.
pub fn owasp_params() -> Params {
    Params::DEFAULT
}

/// Hashes a password for the users file with the OWASP parameters:
/// `{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH` with a random 16-byte salt.
pub fn hash_argon2id(password: &[u8]) -> String {
    hash_argon2id_with(owasp_params(), password)
}

/// Like [`hash_argon2id`] with chosen parameters (cheap ones for tests and benchmarks).
///
/// Hashing only fails for a password longer than 4 GiB; the result is then
/// `{ARGON2ID}!`, which matches no password and which the users file rejects.
pub fn hash_argon2id_with(params: Params, password: &[u8]) -> String {
    match argon2id::hash(params, password) {
        Ok(phc) => format!("{{ARGON2ID}}{phc}"),
        Err(error) => {
            log::error!("argon2id hashing failed: {error}");
            "{ARGON2ID}!".to_owned()
        }
    }
}

/// Checks `password` against a stored `{SCHEME}DATA` password.
pub fn verify(stored: &str, password: &[u8]) -> Verification {
    let Some((scheme, data)) = Scheme::split(stored) else {
        return Verification::Unsupported;
    };
    match scheme {
        Scheme::Argon2id => argon2id::verify(data, password),
        Scheme::Bcrypt => bcrypt::verify(data, password),
        Scheme::Sha512Crypt => sha_crypt::verify(Variant::Sha512, data, password),
        Scheme::Sha256Crypt => sha_crypt::verify(Variant::Sha256, data, password),
        Scheme::Ssha => ssha::verify(Digest::Sha1, data, password),
        Scheme::Ssha256 => ssha::verify(Digest::Sha256, data, password),
        Scheme::Ssha512 => ssha::verify(Digest::Sha512, data, password),
        Scheme::Plain => {
            if bool::from(data.as_bytes().ct_eq(password)) {
                Verification::Match
            } else {
                Verification::Mismatch
            }
        }
    }
}

/// Checks that a stored password is one the users file accepts: a known scheme whose
/// data is well formed and within the cost limits. The error says what is wrong.
pub fn check_stored(stored: &str) -> Result<Scheme, String> {
    let Some((scheme, data)) = Scheme::split(stored) else {
        return Err(format!(
            "password must start with a known {{SCHEME}}: {SCHEME_NAMES}"
        ));
    };
    if data.is_empty() {
        return Err("empty password".into());
    }
    match scheme {
        Scheme::Argon2id => argon2id::params(data).map(|_| ()),
        Scheme::Bcrypt => bcrypt::check(data),
        Scheme::Sha512Crypt => sha_crypt::check(Variant::Sha512, data),
        Scheme::Sha256Crypt => sha_crypt::check(Variant::Sha256, data),
        Scheme::Ssha => ssha::check(Digest::Sha1, data),
        Scheme::Ssha256 => ssha::check(Digest::Sha256, data),
        Scheme::Ssha512 => ssha::check(Digest::Sha512, data),
        Scheme::Plain => Ok(()),
    }
    .map(|()| scheme)
}

/// The Argon2 parameters of a stored `{ARGON2ID}` password, if it is one and is valid.
pub fn argon2id_params(stored: &str) -> Option<Params> {
    match Scheme::split(stored) {
        Some((Scheme::Argon2id, phc)) => argon2id::params(phc).ok(),
        _ => None,
    }
}

/// Spends the time of one check against `stored` (a real user's hash, so the same
/// scheme and cost) and throws the answer away: an unknown user then costs what a wrong
/// password costs. With no stored hash, one OWASP-parameter Argon2id check.
pub fn verify_dummy(stored: Option<&str>, password: &[u8]) {
    match stored {
        Some(stored) => {
            std::hint::black_box(verify(stored, password));
        }
        None => argon2id::spend(&owasp_params(), password),
    }
}

/// Spends the time of one Argon2id check with these parameters on nothing.
pub fn verify_dummy_with(params: &Params, password: &[u8]) {
    argon2id::spend(params, password);
}

/// 16 random bytes from the OS. Should the OS refuse, a salt from the clock, pid and a
/// counter keeps salts unique, which is what a salt needs to be.
fn random_salt() -> [u8; 16] {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut salt = [0u8; 16];
    if let Err(error) = getrandom::getrandom(&mut salt) {
        log::error!("no OS randomness for a password salt ({error}); using a unique salt");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = FALLBACK.fetch_add(1, Ordering::Relaxed);
        salt[..8].copy_from_slice(&nanos.to_le_bytes());
        salt[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        salt[12..].copy_from_slice(&(count as u32).to_le_bytes());
    }
    salt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    #[test]
    fn argon2id_round_trip_with_cheap_params() {
        let stored = hash_argon2id_with(cheap(), b"hunter2");
        assert!(
            stored.starts_with("{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$"),
            "{stored}"
        );
        assert_eq!(verify(&stored, b"hunter2"), Verification::Match);
        assert_eq!(verify(&stored, b"hunter3"), Verification::Mismatch);
        assert_eq!(verify(&stored, b""), Verification::Mismatch);
        assert_eq!(check_stored(&stored), Ok(Scheme::Argon2id));
        assert_eq!(argon2id_params(&stored).map(|p| p.m_cost()), Some(8));
        assert_ne!(stored, hash_argon2id_with(cheap(), b"hunter2"), "salted");
    }

    #[test]
    fn default_hash_uses_owasp_params() {
        let stored = hash_argon2id(b"pw");
        assert!(
            stored.starts_with("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(verify(&stored, b"pw"), Verification::Match);
    }

    #[test]
    fn plain_and_unknown_schemes() {
        assert_eq!(verify("{PLAIN}secret", b"secret"), Verification::Match);
        assert_eq!(verify("{plain}secret", b"secret"), Verification::Match);
        assert_eq!(verify("{PLAIN}secret", b"secret!"), Verification::Mismatch);
        assert_eq!(verify("{PLAIN}secret", b"secreT"), Verification::Mismatch);
        assert_eq!(verify("{SSHA}abcd", b"x"), Verification::Unsupported);
        assert_eq!(verify("{NOPE}abcd", b"x"), Verification::Unsupported);
        assert_eq!(verify("secret", b"secret"), Verification::Unsupported);
        assert!(check_stored("{MD5}abc").is_err());
        assert!(check_stored("{PLAIN}").is_err());
        assert!(check_stored("{CRYPT}$1$md5$abc").is_err());
    }

    #[test]
    fn malformed_or_costly_hashes_are_refused() {
        assert!(check_stored("{ARGON2ID}garbage").is_err());
        assert!(
            check_stored("{ARGON2ID}$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
                .is_err()
        );
        let huge = "{ARGON2ID}$argon2id$v=19$m=4000000,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(check_stored(huge).is_err());
        assert_eq!(verify(huge, b"x"), Verification::Unsupported);
        assert_eq!(verify("{ARGON2ID}$$$", b"x"), Verification::Unsupported);
        // bcrypt cost 31 would take days per login.
        let costly = "{BCRYPT}$2y$31$/AlNH9Cq43mBUlpVOgZImu8cY.7rV3LPCIYAPumf4lYat7.MjEPQe";
        assert!(check_stored(costly).unwrap_err().contains("cost"));
        assert_eq!(verify(costly, b"x"), Verification::Unsupported);
        let slow = "{SHA512-CRYPT}$6$rounds=999999999$saltsalt$tz3hHRymbItMsq0KmSsjgFieQL4buJRG0tqdEQsvsX43gi5xzkz7NWDDgZzQFf/b3LE68uwETqaiTuSg0qOZP/";
        assert!(check_stored(slow).unwrap_err().contains("rounds"));
        assert_eq!(verify(slow, b"x"), Verification::Unsupported);
        assert!(check_stored("{SHA512-CRYPT}$5$abc$def").is_err());
        assert!(
            check_stored("{SSHA}c2hvcnQ=").is_err(),
            "shorter than a digest"
        );
        assert!(check_stored("{SSHA}not base64!").is_err());
        assert!(check_stored("{BCRYPT}$2y$05$short").is_err());
    }

    #[test]
    fn dummy_check_runs() {
        verify_dummy_with(&cheap(), b"anything");
        verify_dummy(Some("{PLAIN}x"), b"anything");
    }
}
