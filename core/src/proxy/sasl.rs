//! The SASL pieces a front-end needs: reading the credentials of PLAIN (RFC 4616) and
//! LOGIN (draft-murchison-sasl-login) and writing a PLAIN response for the back-end.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::secret::Secret;

/// The longest user name accepted; longer ones cannot be addresses (RFC 5321 §4.5.3.1).
pub const MAX_USER_LEN: usize = 320;

/// Why a SASL response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` (RFC 4422 §3.5).
    Cancelled,
    /// Not base64.
    BadBase64,
    /// Not `[authzid] NUL authcid NUL passwd` with a usable name, or an authzid that
    /// differs from the authcid (no proxy authorisation through the front-end).
    Malformed,
}

/// Decodes one base64 SASL response line; `=` is an empty response (RFC 4954 §4).
pub fn decode_response(line: &[u8]) -> Result<Secret, SaslError> {
    match line {
        b"*" => Err(SaslError::Cancelled),
        b"=" => Ok(Secret::new(Vec::new())),
        _ => BASE64
            .decode(line)
            .map(Secret::new)
            .map_err(|_| SaslError::BadBase64),
    }
}

/// Splits a decoded PLAIN message into user name and password.
pub fn parse_plain(message: &[u8]) -> Result<(String, Secret), SaslError> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if (!authzid.is_empty() && authzid != authcid) || password.contains(&0) {
        return Err(SaslError::Malformed);
    }
    Ok((user_name(authcid)?, Secret::new(password)))
}

/// A user name from a SASL message: UTF-8, not empty, no controls, at most
/// [`MAX_USER_LEN`] bytes.
pub fn user_name(bytes: &[u8]) -> Result<String, SaslError> {
    let name = std::str::from_utf8(bytes).map_err(|_| SaslError::Malformed)?;
    if name.is_empty() || name.len() > MAX_USER_LEN || name.chars().any(char::is_control) {
        return Err(SaslError::Malformed);
    }
    Ok(name.to_owned())
}

/// The base64 PLAIN response that logs `account` in with `password` (empty authzid).
pub fn encode_plain(account: &str, password: &Secret) -> Secret {
    let mut message = Vec::with_capacity(account.len() + password.expose().len() + 2);
    message.push(0);
    message.extend_from_slice(account.as_bytes());
    message.push(0);
    message.extend_from_slice(password.expose());
    let encoded = Secret::new(BASE64.encode(&message).into_bytes());
    drop(Secret::new(message));
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms() {
        let (user, pw) = parse_plain(b"\0alice\0pw").unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("alice", &b"pw"[..]));
        assert!(parse_plain(b"alice\0alice\0pw").is_ok());
        assert_eq!(
            parse_plain(b"admin\0alice\0pw").err(),
            Some(SaslError::Malformed)
        );
        assert_eq!(parse_plain(b"\0\0pw").err(), Some(SaslError::Malformed));
        assert_eq!(parse_plain(b"alice\0pw").err(), Some(SaslError::Malformed));
        assert_eq!(decode_response(b"*").err(), Some(SaslError::Cancelled));
        assert_eq!(decode_response(b"!!").err(), Some(SaslError::BadBase64));
        assert_eq!(
            encode_plain("alice@example.com", &Secret::new("pw")).expose(),
            b"AGFsaWNlQGV4YW1wbGUuY29tAHB3"
        );
    }
}
