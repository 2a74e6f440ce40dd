//! `{BCRYPT}` (Dovecot also says `{BLF-CRYPT}`): the OpenBSD bcrypt hash in Modular
//! Crypt Format, `$2y$COST$SALTHASH` (also `$2a$`, `$2b$`, `$2x$`), as `htpasswd -B` and
//! `doveadm pw -s BLF-CRYPT` write it. The `bcrypt` crate does the work; like every
//! bcrypt, only the first 72 bytes of a password count.

use super::Verification;

/// Largest accepted cost (2^15 rounds, about two seconds a check on a 2020s server
/// core), so a bad users file line cannot make every login take minutes.
pub const MAX_BCRYPT_COST: u32 = 15;

/// Checks that `data` is a bcrypt hash within [`MAX_BCRYPT_COST`].
pub(super) fn check(data: &str) -> Result<(), String> {
    let hash_ok = data.len() == 60
        && data.is_ascii()
        && matches!(data.get(..4), Some("$2a$" | "$2b$" | "$2x$" | "$2y$"))
        && data.get(6..7) == Some("$");
    if !hash_ok {
        return Err("not a bcrypt hash ($2y$COST$ and 53 characters)".into());
    }
    match data.get(4..6).and_then(|cost| cost.parse::<u32>().ok()) {
        Some(cost) if (4..=MAX_BCRYPT_COST).contains(&cost) => Ok(()),
        Some(cost) => Err(format!(
            "bcrypt cost {cost} is outside 4..={MAX_BCRYPT_COST}"
        )),
        None => Err("bcrypt cost is not a number".into()),
    }
}

/// Checks `password` against a bcrypt hash (the crate compares in constant time).
pub(super) fn verify(data: &str, password: &[u8]) -> Verification {
    if let Err(reason) = check(data) {
        log::warn!("stored bcrypt password not usable: {reason}");
        return Verification::Unsupported;
    }
    match ::bcrypt::verify(password, data) {
        Ok(true) => Verification::Match,
        Ok(false) => Verification::Mismatch,
        Err(error) => {
            log::warn!("stored bcrypt password not usable: {error}");
            Verification::Unsupported
        }
    }
}
