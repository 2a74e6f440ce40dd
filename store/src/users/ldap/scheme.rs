//! How LDAP `userPassword` values (RFC 4519 §2.41, RFC 3112 scheme prefixes as OpenLDAP
//! and 389-DS write them) map to the `{SCHEME}DATA` form of [`crate::password`].

/// The stored password in our notation for one `userPassword` value, or `None` when the
/// value is not text.
///
/// * `{SSHA}…`, `{SHA512-CRYPT}…`, `{BCRYPT}…`, `{ARGON2ID}…`, `{PLAIN}…` are kept.
/// * `{CRYPT}$6$…` becomes `{SHA512-CRYPT}$6$…`; `{CRYPT}$2a$`/`$2b$`/`$2y$…` becomes
///   `{BCRYPT}…`. Other crypt(3) methods keep `{CRYPT}` and do not verify.
/// * `{ARGON2}$argon2id$…` (OpenLDAP's argon2 module) becomes `{ARGON2ID}$argon2id$…`.
/// * `{CLEARTEXT}x` and a value with no `{…}` prefix are the password in clear
///   (RFC 4519 stores it so): `{PLAIN}x`.
/// * Any other scheme is kept as it is and does not verify.
pub fn map_user_password(value: &[u8]) -> Option<String> {
    let value = std::str::from_utf8(value).ok()?;
    let Some((scheme, data)) = value
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
    else {
        return Some(format!("{{PLAIN}}{value}"));
    };
    let mapped = match scheme.to_ascii_uppercase().as_str() {
        "CRYPT" if data.starts_with("$6$") => format!("{{SHA512-CRYPT}}{data}"),
        "CRYPT" if ["$2a$", "$2b$", "$2y$"].iter().any(|p| data.starts_with(p)) => {
            format!("{{BCRYPT}}{data}")
        }
        "ARGON2" if data.starts_with("$argon2id$") => format!("{{ARGON2ID}}{data}"),
        "CLEARTEXT" => format!("{{PLAIN}}{data}"),
        _ => value.to_owned(),
    };
    Some(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldap_schemes_map_to_ours() {
        let map = |v: &str| map_user_password(v.as_bytes()).unwrap();
        assert_eq!(map("{SSHA}abc="), "{SSHA}abc=");
        assert_eq!(map("{crypt}$6$salt$hash"), "{SHA512-CRYPT}$6$salt$hash");
        assert_eq!(map("{CRYPT}$2y$10$abc"), "{BCRYPT}$2y$10$abc");
        assert_eq!(map("{CRYPT}$1$md5$x"), "{CRYPT}$1$md5$x");
        assert_eq!(
            map("{ARGON2}$argon2id$v=19$m=8,t=1,p=1$s$h"),
            "{ARGON2ID}$argon2id$v=19$m=8,t=1,p=1$s$h"
        );
        assert_eq!(map("{ARGON2}$argon2i$x"), "{ARGON2}$argon2i$x");
        assert_eq!(map("{CLEARTEXT}pw"), "{PLAIN}pw");
        assert_eq!(map("secret"), "{PLAIN}secret");
        assert_eq!(map("{MD5}xyz"), "{MD5}xyz");
        assert_eq!(map_user_password(b"\xff\xfe"), None);
    }
}
