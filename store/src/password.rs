//! Password schemes of the users file (design.md §4, "Users file"): a stored password is
//! `{SCHEME}DATA`.
//!
//! * `{ARGON2ID}` + a PHC string (RFC 9106 Argon2id, PHC string format), e.g.
//!   `{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`. New hashes use the OWASP
//!   password storage parameters (m = 19456 KiB, t = 2, p = 1); verification honours
//!   whatever parameters the stored string names, within [`MAX_M_COST_KIB`],
//!   [`MAX_T_COST`] and [`MAX_P_COST`].
//! * `{PLAIN}` + the password itself (accepted for migrations and tests, compared in
//!   constant time, warned about when the users file is loaded).
//! * `{BCRYPT}`, `{SHA512-CRYPT}` and `{SSHA}` are names the contract reserves; they
//!   parse but do not verify yet ([`Verification::Unsupported`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Version};
use subtle::ConstantTimeEq;

/// Argon2 cost parameters, re-exported so callers can pick cheap ones for tests and
/// benchmarks ([`hash_argon2id_with`]).
pub use argon2::Params;

/// Stored hashes asking for more memory than this (KiB, here 1 GiB) are refused, so a
/// bad users file line cannot make every login allocate without bound.
pub const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest accepted Argon2 iteration count.
pub const MAX_T_COST: u32 = 64;
/// Largest accepted Argon2 parallelism.
pub const MAX_P_COST: u32 = 16;

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
    /// `{BCRYPT}`: reserved by the contract, not verified yet.
    Bcrypt,
    /// `{SHA512-CRYPT}`: reserved by the contract, not verified yet.
    Sha512Crypt,
    /// `{SSHA}`: reserved by the contract, not verified yet.
    Ssha,
    /// `{PLAIN}`: the password in clear.
    Plain,
}

impl Scheme {
    /// Splits `{SCHEME}DATA` into the scheme and `DATA`; `None` when there is no
    /// `{...}` prefix or the scheme is unknown.
    pub fn split(stored: &str) -> Option<(Scheme, &str)> {
        let rest = stored.strip_prefix('{')?;
        let (name, data) = rest.split_once('}')?;
        let scheme = match name.to_ascii_uppercase().as_str() {
            "ARGON2ID" => Scheme::Argon2id,
            "BCRYPT" => Scheme::Bcrypt,
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SSHA" => Scheme::Ssha,
            "PLAIN" => Scheme::Plain,
            _ => return None,
        };
        Some((scheme, data))
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
    let salt_bytes = random_salt();
    let hashed = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| e.to_string())
        .and_then(|salt| {
            argon2id(params)
                .hash_password(password, &salt)
                .map(|hash| format!("{{ARGON2ID}}{hash}"))
                .map_err(|e| e.to_string())
        });
    hashed.unwrap_or_else(|error| {
        log::error!("argon2id hashing failed: {error}");
        "{ARGON2ID}!".to_owned()
    })
}

/// Checks `password` against a stored `{SCHEME}DATA` password.
pub fn verify(stored: &str, password: &[u8]) -> Verification {
    match Scheme::split(stored) {
        Some((Scheme::Argon2id, phc)) => verify_argon2id(phc, password),
        Some((Scheme::Plain, clear)) => {
            if bool::from(clear.as_bytes().ct_eq(password)) {
                Verification::Match
            } else {
                Verification::Mismatch
            }
        }
        _ => Verification::Unsupported,
    }
}

/// Checks that a stored password is one the users file accepts: a known scheme and, for
/// `{ARGON2ID}`, a well-formed Argon2id PHC string within the cost limits.
pub fn check_stored(stored: &str) -> Result<Scheme, String> {
    let Some((scheme, data)) = Scheme::split(stored) else {
        return Err(
            "password must start with a known {SCHEME}: ARGON2ID, BCRYPT, \
                    SHA512-CRYPT, SSHA or PLAIN"
                .into(),
        );
    };
    match scheme {
        Scheme::Argon2id => argon2id_hash_params(data).map(|_| scheme),
        _ if data.is_empty() => Err("empty password".into()),
        _ => Ok(scheme),
    }
}

/// The Argon2 parameters of a stored `{ARGON2ID}` password, if it is one and is valid.
pub fn argon2id_params(stored: &str) -> Option<Params> {
    match Scheme::split(stored) {
        Some((Scheme::Argon2id, phc)) => argon2id_hash_params(phc).ok(),
        _ => None,
    }
}

/// Spends the time of one OWASP-parameter Argon2id check on nothing, so an unknown user
/// costs the same as a wrong password.
pub fn verify_dummy(password: &[u8]) {
    verify_dummy_with(&owasp_params(), password);
}

/// Like [`verify_dummy`] with the parameters the real hashes use (see
/// [`crate::users::UserTable::dummy_params`]).
pub fn verify_dummy_with(params: &Params, password: &[u8]) {
    const DUMMY_SALT: &[u8; 16] = b"tidegate-dummy!!";
    let mut out = [0u8; 32];
    let result = argon2id(params.clone()).hash_password_into(password, DUMMY_SALT, &mut out);
    std::hint::black_box((result.is_ok(), out));
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn verify_argon2id(phc: &str, password: &[u8]) -> Verification {
    let (hash, params) = match parse_argon2id(phc) {
        Ok(parsed) => parsed,
        Err(reason) => {
            log::warn!("stored argon2id password not usable: {reason}");
            return Verification::Unsupported;
        }
    };
    match argon2id(params).verify_password(password, &hash) {
        Ok(()) => Verification::Match,
        Err(argon2::password_hash::Error::Password) => Verification::Mismatch,
        Err(error) => {
            log::warn!("stored argon2id password not usable: {error}");
            Verification::Unsupported
        }
    }
}

fn argon2id_hash_params(phc: &str) -> Result<Params, String> {
    parse_argon2id(phc).map(|(_, params)| params)
}

fn parse_argon2id(phc: &str) -> Result<(PasswordHash<'_>, Params), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("bad PHC string: {e}"))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!("algorithm {} is not argon2id", hash.algorithm));
    }
    if hash.version.is_some_and(|v| v != 0x13) {
        return Err("only argon2 version 19 is supported".into());
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("PHC string lacks a salt or hash".into());
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > MAX_M_COST_KIB || params.t_cost() > MAX_T_COST {
        return Err("argon2 cost above the accepted maximum".into());
    }
    if params.p_cost() > MAX_P_COST {
        return Err("argon2 parallelism above the accepted maximum".into());
    }
    Ok((hash, params))
}

/// 16 random bytes from the OS. Should the OS refuse, a salt from the clock, pid and a
/// counter keeps salts unique, which is what Argon2 needs from them.
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
    fn plain_and_reserved_schemes() {
        assert_eq!(verify("{PLAIN}secret", b"secret"), Verification::Match);
        assert_eq!(verify("{plain}secret", b"secret"), Verification::Match);
        assert_eq!(verify("{PLAIN}secret", b"secret!"), Verification::Mismatch);
        assert_eq!(verify("{PLAIN}secret", b"secreT"), Verification::Mismatch);
        assert_eq!(verify("{SSHA}abcd", b"x"), Verification::Unsupported);
        assert_eq!(verify("{NOPE}abcd", b"x"), Verification::Unsupported);
        assert_eq!(verify("secret", b"secret"), Verification::Unsupported);
        assert_eq!(check_stored("{BCRYPT}$2y$10$abc"), Ok(Scheme::Bcrypt));
        assert!(check_stored("{MD5}abc").is_err());
        assert!(check_stored("{PLAIN}").is_err());
    }

    #[test]
    fn malformed_or_costly_argon2_strings_are_refused() {
        assert!(check_stored("{ARGON2ID}garbage").is_err());
        assert!(
            check_stored("{ARGON2ID}$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
                .is_err()
        );
        let huge = "{ARGON2ID}$argon2id$v=19$m=4000000,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(check_stored(huge).is_err());
        assert_eq!(verify(huge, b"x"), Verification::Unsupported);
        assert_eq!(verify("{ARGON2ID}$$$", b"x"), Verification::Unsupported);
    }

    #[test]
    fn dummy_check_runs() {
        verify_dummy_with(&cheap(), b"anything");
    }
}
