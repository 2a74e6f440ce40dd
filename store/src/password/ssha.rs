//! `{SSHA}`, `{SSHA256}`, `{SSHA512}`: a salted digest as OpenLDAP (`slappasswd`) and
//! Dovecot store it, `base64(digest(password ‖ salt) ‖ salt)` (RFC 3112 describes the
//! unsalted family; the salted form is the OpenLDAP convention). The digests come from
//! `ring`, which the TLS stack already links; the comparison is constant-time.
//!
//! These are fast digests: an attacker with the file tries billions a second. They are
//! accepted so existing databases can be imported; `tidegate user passwd` rehashes to
//! Argon2id.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest::{self, Algorithm};
use subtle::ConstantTimeEq;

use super::Verification;

/// Longest accepted salt in bytes (Dovecot writes 4, OpenLDAP 4 or 8).
pub const MAX_SSHA_SALT: usize = 64;

/// Which digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    fn algorithm(self) -> &'static Algorithm {
        match self {
            Digest::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &digest::SHA256,
            Digest::Sha512 => &digest::SHA512,
        }
    }
}

/// The digest and salt of a stored value.
fn split(kind: Digest, data: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let raw = STANDARD
        .decode(data)
        .map_err(|_| "salted digest is not valid base64".to_owned())?;
    let len = kind.algorithm().output_len();
    if raw.len() <= len || raw.len() > len + MAX_SSHA_SALT {
        return Err(format!(
            "salted digest must be {len} bytes plus a 1 to {MAX_SSHA_SALT} byte salt"
        ));
    }
    let mut digest = raw;
    let salt = digest.split_off(len);
    Ok((digest, salt))
}

/// Checks that `data` is a salted digest of this kind.
pub(super) fn check(kind: Digest, data: &str) -> Result<(), String> {
    split(kind, data).map(|_| ())
}

/// Checks `password` against a stored salted digest.
pub(super) fn verify(kind: Digest, data: &str, password: &[u8]) -> Verification {
    let (expected, salt) = match split(kind, data) {
        Ok(parts) => parts,
        Err(reason) => {
            log::warn!("stored salted digest not usable: {reason}");
            return Verification::Unsupported;
        }
    };
    let mut context = digest::Context::new(kind.algorithm());
    context.update(password);
    context.update(&salt);
    if bool::from(context.finish().as_ref().ct_eq(&expected)) {
        Verification::Match
    } else {
        Verification::Mismatch
    }
}
