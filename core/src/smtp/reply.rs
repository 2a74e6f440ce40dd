//! Every reply of the SMTP/LMTP session in one place: the RFC 5321 §4.2 code and the
//! RFC 3463 enhanced status code (RFC 2034 §3: on every reply except the greeting and the
//! answers to HELO, EHLO and LHLO).
//!
//! Texts are without CRLF; [`super::session::SmtpSession::reply`] adds it.

use super::config::SmtpRole;

// ---- 2xx and 3xx -------------------------------------------------------------------

/// RSET, NOOP.
pub(super) const OK: &str = "250 2.0.0 Ok";
/// MAIL accepted.
pub(super) const SENDER_OK: &str = "250 2.1.0 Sender ok";
/// RCPT accepted.
pub(super) const RECIPIENT_OK: &str = "250 2.1.5 Recipient ok";
/// VRFY never discloses whether a user exists (RFC 5321 §3.5.3, §7.3).
pub(super) const VRFY: &str =
    "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery";
/// STARTTLS go-ahead (RFC 3207 §4).
pub(super) const STARTTLS_GO: &str = "220 2.0.0 Ready to start TLS";
/// DATA go-ahead (RFC 5321 §4.1.1.4); RFC 2034 gives 3xx replies no enhanced code.
pub(super) const DATA_GO: &str = "354 Start mail input; end with <CRLF>.<CRLF>";
/// AUTH success (RFC 4954 §6).
pub(super) const AUTH_OK: &str = "235 2.7.0 Authentication successful";
/// AUTH PLAIN without initial response: an empty challenge (RFC 4954 §4).
pub(super) const AUTH_CONTINUE: &str = "334 ";
/// AUTH LOGIN's first challenge, base64 of `Username:`.
pub(super) const AUTH_USERNAME: &str = "334 VXNlcm5hbWU6";
/// AUTH LOGIN's second challenge, base64 of `Password:`.
pub(super) const AUTH_PASSWORD: &str = "334 UGFzc3dvcmQ6";

// ---- 4xx ---------------------------------------------------------------------------

/// The store failed or did not answer in time (RFC 3463 4.3.0: other mail system problem).
pub(super) const TEMPORARY: &str = "451 4.3.0 Temporary failure, try again later";
/// RFC 5321 §4.5.3.1.10.
pub(super) const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients";
/// The user database is unavailable (RFC 4954 §6).
pub(super) const AUTH_TEMPORARY: &str =
    "454 4.7.0 Temporary authentication failure, try again later";

// ---- 5xx ---------------------------------------------------------------------------

/// RFC 5321 §4.2.4.
pub(super) const UNKNOWN_COMMAND: &str = "500 5.5.2 Command not recognized";
/// RFC 5321 §4.5.3.1.4 (command line over 512 octets).
pub(super) const LINE_TOO_LONG: &str = "500 5.5.6 Line too long";
/// RFC 4954 §4 (SASL response over 12288 octets).
pub(super) const AUTH_LINE_TOO_LONG: &str = "500 5.5.6 Authentication exchange line is too long";
/// RFC 5321 §4.5.3.1.6 (text line over 1000 octets).
pub(super) const TEXT_LINE_TOO_LONG: &str = "500 5.5.6 Message line too long";
/// LHLO on an SMTP port.
pub(super) const LHLO_ON_SMTP: &str = "500 5.5.1 LHLO is for LMTP; use EHLO";
/// HELO or EHLO on an LMTP port (RFC 2033 §4.1).
pub(super) const HELO_ON_LMTP: &str = "500 5.5.1 This is LMTP; use LHLO";
/// RFC 5321 §4.1.2 path syntax.
pub(super) const BAD_ADDRESS: &str = "501 5.1.3 Bad address syntax";
/// RFC 5321 §4.5.3.1 path limits.
pub(super) const ADDRESS_TOO_LONG: &str = "501 5.1.3 Address too long";
/// The client sent `*` (RFC 4954 §4).
pub(super) const AUTH_CANCELLED: &str = "501 5.0.0 Authentication cancelled";
/// RFC 4954 §4.
pub(super) const AUTH_BAD_BASE64: &str = "501 5.5.2 Invalid base64 data";
/// A decoded response that is not a PLAIN message (RFC 4616 §2) or a valid user name.
pub(super) const AUTH_MALFORMED: &str = "501 5.5.2 Malformed authentication response";
/// RFC 5321 §3.5.2: EXPN is optional.
pub(super) const EXPN: &str = "502 5.5.1 EXPN is not supported";
/// AUTH on the inbound or LMTP port.
pub(super) const AUTH_NOT_AVAILABLE: &str = "502 5.5.1 Authentication is not available here";
/// STARTTLS without a certificate.
pub(super) const STARTTLS_NOT_AVAILABLE: &str = "502 5.5.1 STARTTLS is not available";
/// MAIL before the greeting command (RFC 5321 §4.1.4).
pub(super) const SEND_HELLO: &str = "503 5.5.1 Send EHLO or HELO first";
/// MAIL before LHLO (RFC 2033 §4.1).
pub(super) const SEND_LHLO: &str = "503 5.5.1 Send LHLO first";
/// AUTH after HELO or before any greeting (RFC 4954 §4).
pub(super) const SEND_EHLO: &str = "503 5.5.1 Send EHLO first";
/// A second MAIL in one transaction.
pub(super) const NESTED_MAIL: &str = "503 5.5.1 Sender already given";
/// RCPT, DATA or BDAT before MAIL.
pub(super) const NEED_MAIL: &str = "503 5.5.1 Need MAIL command first";
/// BDAT before an accepted RCPT.
pub(super) const NEED_RCPT: &str = "503 5.5.1 Need RCPT command first";
/// RCPT after the first BDAT chunk.
pub(super) const RCPT_AFTER_BDAT: &str = "503 5.5.1 RCPT is not allowed after BDAT";
/// RFC 3030 §2: DATA and BDAT do not mix in one transaction.
pub(super) const DATA_AFTER_BDAT: &str = "503 5.5.1 DATA is not allowed after BDAT";
/// RFC 3030 §3: a BINARYMIME body is sent with BDAT only.
pub(super) const BINARY_NEEDS_BDAT: &str = "503 5.5.1 BODY=BINARYMIME requires BDAT";
/// RFC 4954 §4.
pub(super) const ALREADY_AUTHENTICATED: &str = "503 5.5.1 Already authenticated";
/// RFC 4954 §4.
pub(super) const AUTH_IN_TRANSACTION: &str =
    "503 5.5.1 AUTH is not allowed during a mail transaction";
/// RFC 3207 §4.
pub(super) const TLS_ACTIVE: &str = "503 5.5.1 TLS is already active";
/// STARTTLS resets the session (RFC 3207 §4.2), so not in the middle of a transaction.
pub(super) const STARTTLS_IN_TRANSACTION: &str =
    "503 5.5.1 STARTTLS is not allowed during a mail transaction";
/// RFC 4954 §4.
pub(super) const AUTH_MECHANISM: &str = "504 5.5.4 Unrecognized authentication mechanism";
/// RFC 4954 §6; submission requires AUTH (RFC 6409 §4.3).
pub(super) const AUTH_REQUIRED: &str = "530 5.7.0 Authentication required";
/// RFC 4954 §6.
pub(super) const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid";
/// RFC 4954 §6: no password before TLS unless the configuration allows it.
pub(super) const AUTH_NEEDS_TLS: &str =
    "538 5.7.11 Encryption required for requested authentication mechanism";
/// Bare CR or LF in the message (see the module documentation's policy).
pub(super) const BARE_LINE_END: &str =
    "550 5.6.0 Message contains a bare CR or LF; lines must end with CRLF";
/// RFC 1870 §6.
pub(super) const MESSAGE_TOO_BIG: &str =
    "552 5.3.4 Message size exceeds fixed maximum message size";
/// A recipient's quota (RFC 3463 5.2.2).
pub(super) const MAILBOX_FULL: &str = "552 5.2.2 Mailbox full";
/// RFC 6531 §3.7.4.1.
pub(super) const UTF8_NEEDS_SMTPUTF8: &str =
    "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter";
/// DATA when every RCPT was refused (RFC 5321 §3.3).
pub(super) const NO_VALID_RECIPIENTS: &str = "554 5.5.1 No valid recipients";
/// RFC 5321 §4.1.1.11: parameters we do not implement.
pub(super) const UNKNOWN_PARAMETER: &str = "555 5.5.4 Unsupported parameter";

// ---- Formatted replies ---------------------------------------------------------------

/// The greeting (RFC 5321 §4.3.1, RFC 2033 §4.1): no enhanced code (RFC 2034 §3).
pub(super) fn greeting(host: &str, lmtp: bool) -> String {
    let protocol = if lmtp { "LMTP" } else { "ESMTP" };
    format!("220 {host} {protocol} tidegate")
}

/// QUIT (RFC 5321 §4.1.1.10).
pub(super) fn closing(host: &str) -> String {
    format!("221 2.0.0 {host} closing connection")
}

/// HELP (RFC 5321 §4.1.1.8): the commands of this listener role.
pub(super) fn help(role: SmtpRole) -> &'static str {
    match role {
        SmtpRole::Inbound => {
            "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"
        }
        SmtpRole::Submission => {
            "214 2.0.0 Commands: HELO EHLO AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"
        }
        SmtpRole::Lmtp => {
            "214 2.0.0 Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS"
        }
    }
}

/// A `501 5.5.4` with the parser's explanation.
pub(super) fn syntax(text: &str) -> String {
    format!("501 5.5.4 {text}")
}

/// RCPT of a local domain without such a user (RFC 3463 5.1.1).
pub(super) fn unknown_user(address: &str) -> String {
    format!("550 5.1.1 <{address}>: Recipient address rejected: User unknown")
}

/// RCPT of a foreign domain on the inbound and LMTP ports (RFC 5321 §3.6.2, §7.1).
pub(super) fn relay_denied(address: &str) -> String {
    format!("550 5.7.1 <{address}>: Relaying denied")
}

/// RCPT of a foreign domain on the submission port when outbound delivery (`[relay]`)
/// is not configured.
pub(super) fn no_outbound(address: &str) -> String {
    format!("554 5.7.1 <{address}>: outbound delivery is not configured")
}

/// MAIL FROM on submission with relaying, when the reverse-path is not the
/// authenticated account's address (RFC 6409 §6.1; RFC 3463 5.7.1).
pub(super) const SENDER_NOT_OWNED: &str =
    "553 5.7.1 Sender address not owned by the authenticated user";

/// MAIL FROM:<> on submission with relaying: users do not send bounces (RFC 6409 §6.1).
pub(super) const NULL_SENDER_ON_SUBMISSION: &str =
    "553 5.7.1 The null sender is not allowed on submission";

/// RCPT of a user over quota.
pub(super) fn recipient_over_quota(address: &str) -> String {
    format!("552 5.2.2 <{address}>: Mailbox full")
}

/// RCPT whose lookup failed or timed out.
pub(super) fn recipient_temporary(address: &str) -> String {
    format!("451 4.3.0 <{address}>: Temporary failure, try again later")
}

/// A delivered SMTP message; `id` is the `Received:` id.
pub(super) fn queued(id: &str) -> String {
    format!("250 2.0.0 Ok: queued as {id}")
}

/// A non-LAST BDAT chunk (RFC 3030 §2).
pub(super) fn chunk_received(size: u64) -> String {
    format!("250 2.0.0 {size} octets received")
}

/// One LMTP recipient delivered (RFC 2033 §4.2).
pub(super) fn delivered(address: &str) -> String {
    format!("250 2.0.0 <{address}> delivered")
}

/// An LMTP per-recipient form of a failure reply: `<address>` after the enhanced code.
pub(super) fn for_recipient(line: &str, address: &str) -> String {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(code), Some(enhanced), Some(text)) => format!("{code} {enhanced} <{address}> {text}"),
        _ => line.to_owned(),
    }
}

/// The idle timeout (RFC 5321 §4.5.3.2.7).
pub(super) fn idle_timeout(host: &str) -> String {
    format!("421 4.4.2 {host} Error: timeout exceeded")
}

/// The login timeout passed (`SmtpConfig::login_timeout`): worded like the idle timeout
/// (RFC 5321 §4.5.3.2 timeouts, `421` and RFC 3463 `4.4.2`), naming what did not happen.
pub(super) fn login_timeout(host: &str, role: SmtpRole) -> String {
    let missing = match role {
        SmtpRole::Submission => "authentication",
        SmtpRole::Inbound | SmtpRole::Lmtp => "a mail transaction",
    };
    format!("421 4.4.2 {host} Error: timeout exceeded before {missing}")
}

/// Too many bad commands.
pub(super) fn too_many_errors(host: &str) -> String {
    format!("421 4.7.0 {host} Too many errors, closing connection")
}

/// Too many failed AUTH attempts.
pub(super) fn too_many_auth_failures(host: &str) -> String {
    format!("421 4.7.0 {host} Too many failed authentications, closing connection")
}

/// Only a shell that ignores `wants_read` overflows the input buffer.
pub(super) fn input_overflow(host: &str) -> String {
    format!("421 4.7.0 {host} Input buffer overflow, closing connection")
}

/// The store missed too many deadlines in one session (RFC 3463 X.3.0: mail system).
pub(super) fn store_unresponsive(host: &str) -> String {
    format!("421 4.3.0 {host} Storage is not responding, closing connection")
}

/// An LMTP listener refuses clients outside the trusted networks (RFC 2033 §5).
pub(super) fn lmtp_untrusted(host: &str) -> String {
    format!("554 5.7.1 {host} LMTP is only for trusted networks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_recipient_form() {
        assert_eq!(
            for_recipient(MAILBOX_FULL, "a@b"),
            "552 5.2.2 <a@b> Mailbox full"
        );
        assert_eq!(
            for_recipient(TEMPORARY, "a@b"),
            "451 4.3.0 <a@b> Temporary failure, try again later"
        );
    }
}
