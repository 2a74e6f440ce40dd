//! `{ARGON2ID}`: RFC 9106 Argon2id in a PHC string, e.g.
//! `$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH` (the `argon2` crate does the work).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::{Verification, random_salt};

/// Stored hashes asking for more memory than this (KiB, here 1 GiB) are refused, so a
/// bad users file line cannot make every login allocate without bound.
pub const MAX_M_COST_KIB: u32 = 1 << 20;
/// Largest accepted Argon2 iteration count.
pub const MAX_T_COST: u32 = 64;
/// Largest accepted Argon2 parallelism.
pub const MAX_P_COST: u32 = 16;

/// Hashes `password` with `params` and a random salt into a PHC string.
pub(super) fn hash(params: Params, password: &[u8]) -> Result<String, String> {
    let salt = SaltString::encode_b64(&random_salt()).map_err(|e| e.to_string())?;
    argon2id(params)
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against a PHC string.
pub(super) fn verify(phc: &str, password: &[u8]) -> Verification {
    let (hash, params) = match parse(phc) {
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

/// The parameters of a well-formed PHC string within the cost limits.
pub(super) fn params(phc: &str) -> Result<Params, String> {
    parse(phc).map(|(_, params)| params)
}

/// Runs one Argon2id computation with `params` and throws the result away.
pub(super) fn spend(params: &Params, password: &[u8]) {
    const DUMMY_SALT: &[u8; 16] = b"tidegate-dummy!!";
    let mut out = [0u8; 32];
    let result = argon2id(params.clone()).hash_password_into(password, DUMMY_SALT, &mut out);
    std::hint::black_box((result.is_ok(), out));
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn parse(phc: &str) -> Result<(PasswordHash<'_>, Params), String> {
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
    // The bounds are checked on the raw values first: the argon2 crate's own checks
    // multiply them and overflow on absurd ones (`p=1111111111`).
    let raw = |name: &str| hash.params.get_decimal(name);
    if raw("m").is_some_and(|m| m > MAX_M_COST_KIB) || raw("t").is_some_and(|t| t > MAX_T_COST) {
        return Err("argon2 cost above the accepted maximum".into());
    }
    if raw("p").is_some_and(|p| p > MAX_P_COST) {
        return Err("argon2 parallelism above the accepted maximum".into());
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok((hash, params))
}
