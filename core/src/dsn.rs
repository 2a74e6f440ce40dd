//! Delivery status notifications (bounces and delay warnings): RFC 3464
//! `multipart/report; report-type=delivery-status` messages (RFC 6522), built from
//! values. Pure: the caller passes the time, the ids and the original header.
//!
//! The report has three parts: a human-readable explanation, the
//! `message/delivery-status` fields (RFC 3464 §2.2 per message, §2.3 per recipient),
//! and the original message's header section as `text/rfc822-headers` (RFC 6522 §4),
//! never its body. It is marked `Auto-Submitted: auto-replied` (RFC 3834 §5) and must be
//! sent with the null reverse-path (RFC 5321 §4.5.5), so it can never cause another.

use std::fmt::Write as _;

use crate::smtp::rfc5322_date;

/// The most octets of the original header section quoted in a report; the rest is cut
/// at a line end (a header this large is unusual; the report stays small).
pub const MAX_QUOTED_HEADER: usize = 64 * 1024;

/// What the report says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// Delivery failed for good (RFC 3464 §2.3.3 `Action: failed`).
    Failure,
    /// Delivery is late and still being retried (`Action: delayed`).
    Delay,
}

/// One recipient the report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient address (the RCPT forward-path, without angle brackets).
    pub address: String,
    /// The last reply or error text (`550 5.1.1 no such user`), one line.
    pub diagnostic: String,
}

/// Everything a report is built from.
#[derive(Debug, Clone)]
pub struct DsnReport<'a> {
    /// Failure or delay.
    pub kind: DsnKind,
    /// Our host name: `Reporting-MTA` and the `From:` domain.
    pub reporting_mta: &'a str,
    /// The original sender, who receives the report.
    pub to: &'a str,
    /// The queue id of the original message (for the text and the Message-ID).
    pub queue_id: &'a str,
    /// Unix time the original message arrived (`Arrival-Date`).
    pub arrived: u64,
    /// Unix time now (`Date:`, `Last-Attempt-Date`).
    pub now: u64,
    /// For a delay warning: Unix time after which the message is given up.
    pub retry_until: Option<u64>,
    /// The recipients the report is about.
    pub recipients: &'a [DsnRecipient],
    /// The start of the original message; its header section is quoted.
    pub original: &'a [u8],
    /// A MIME boundary not found in the original header (a random token).
    pub boundary: &'a str,
}

/// The RFC 3463 status code in a reply text (`550 5.1.1 …` → `5.1.1`), or the generic
/// code of its class (`5.0.0` for a permanent, `4.0.0` for a temporary problem).
pub fn status_of(diagnostic: &str, permanent: bool) -> String {
    let mut words = diagnostic.split_whitespace();
    let code = words.next().unwrap_or_default();
    let enhanced = words.next().unwrap_or_default();
    let class = if permanent { '5' } else { '4' };
    let valid = |s: &str| {
        let parts: Vec<&str> = s.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            && s.starts_with(class)
    };
    if code.len() == 3 && code.starts_with(class) && valid(enhanced) {
        enhanced.to_owned()
    } else {
        format!("{class}.0.0")
    }
}

/// The header section of a message (up to and including the empty line), at most
/// [`MAX_QUOTED_HEADER`] octets, cut at a line end.
pub fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 4);
    let head = message.get(..end.min(MAX_QUOTED_HEADER)).unwrap_or(message);
    if head.len() < end {
        let cut = head
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(0, |p| p + 2);
        return head.get(..cut).unwrap_or_default();
    }
    head
}

/// One line safe to put in a header field or report field: control characters become
/// spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Builds the whole report message (CRLF line ends, header and body).
pub fn build(report: &DsnReport<'_>) -> Vec<u8> {
    let host = one_line(report.reporting_mta);
    let to = one_line(report.to);
    let boundary = report.boundary;
    let (subject, action) = match report.kind {
        DsnKind::Failure => ("Undelivered Mail Returned to Sender", "failed"),
        DsnKind::Delay => ("Delayed Mail (still being retried)", "delayed"),
    };
    let permanent = report.kind == DsnKind::Failure;
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>"
    ));
    line(&format!("To: <{to}>"));
    line(&format!("Subject: {subject}"));
    line(&format!("Date: {}", rfc5322_date(report.now)));
    line(&format!(
        "Message-ID: <{}.{}.dsn@{host}>",
        one_line(report.queue_id),
        report.now
    ));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a MIME-encapsulated message.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 8bit");
    line("");
    line(&format!("This is the mail system at {host}."));
    line("");
    match report.kind {
        DsnKind::Failure => {
            line("Your message could not be delivered to one or more recipients.");
            line("It has been returned without its body; the errors were:");
        }
        DsnKind::Delay => {
            line("Your message has not been delivered yet to one or more recipients.");
            if let Some(until) = report.retry_until {
                line(&format!(
                    "It is still being retried until {}; you need not send it again.",
                    rfc5322_date(until)
                ));
            }
        }
    }
    line("");
    for r in report.recipients {
        line(&format!(
            "<{}>: {}",
            one_line(&r.address),
            one_line(&r.diagnostic)
        ));
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns; {host}"));
    line(&format!(
        "X-Tidegate-Queue-ID: {}",
        one_line(report.queue_id)
    ));
    line(&format!("Arrival-Date: {}", rfc5322_date(report.arrived)));
    for r in report.recipients {
        line("");
        line(&format!(
            "Final-Recipient: rfc822; {}",
            one_line(&r.address)
        ));
        line(&format!("Action: {action}"));
        line(&format!("Status: {}", status_of(&r.diagnostic, permanent)));
        if !r.diagnostic.is_empty() {
            line(&format!(
                "Diagnostic-Code: smtp; {}",
                one_line(&r.diagnostic)
            ));
        }
        line(&format!("Last-Attempt-Date: {}", rfc5322_date(report.now)));
        if let (DsnKind::Delay, Some(until)) = (report.kind, report.retry_until) {
            line(&format!("Will-Retry-Until: {}", rfc5322_date(until)));
        }
    }
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    let mut bytes = out.into_bytes();
    let header = header_section(report.original);
    bytes.extend_from_slice(header);
    if !header.ends_with(b"\r\n") && !header.is_empty() {
        bytes.extend_from_slice(b"\r\n");
    }
    let _ = write!(&mut Tail(&mut bytes), "--{boundary}--\r\n");
    bytes
}

/// Lets `write!` append to a byte vector.
struct Tail<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Tail<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn failure_report_has_the_rfc3464_parts() {
        let recipients = [DsnRecipient {
            address: "bob@example.net".into(),
            diagnostic: "550 5.1.1 <bob@example.net>: no such user".into(),
        }];
        let original = b"From: a@example.com\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let report = DsnReport {
            kind: DsnKind::Failure,
            reporting_mta: "mx.example.com",
            to: "a@example.com",
            queue_id: "Q1",
            arrived: 0,
            now: 86_400,
            retry_until: None,
            recipients: &recipients,
            original,
            boundary: "b0und",
        };
        let out = text(&build(&report));
        assert!(out.starts_with("From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\nTo: <a@example.com>\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: Fri, 2 Jan 1970 00:00:00 +0000\r\n"), "{out}");
        assert!(out.contains("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"b0und\"\r\n"));
        assert!(out.contains("\r\n--b0und\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n"));
        assert!(out.contains("Arrival-Date: Thu, 1 Jan 1970 00:00:00 +0000\r\n"));
        assert!(out.contains("\r\n\r\nFinal-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such user\r\n"));
        assert!(out.ends_with("Content-Type: text/rfc822-headers\r\n\r\nFrom: a@example.com\r\nSubject: hi\r\n\r\n--b0und--\r\n"));
        assert!(!out.contains("secret body"));
        assert!(out.contains("Auto-Submitted: auto-replied\r\n"));
        // Every line ends with CRLF.
        assert!(!out.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn delay_report_names_the_retry_limit() {
        let recipients = [DsnRecipient {
            address: "c@example.org".into(),
            diagnostic: "451 try later\r\nInjected: x".into(),
        }];
        let report = DsnReport {
            kind: DsnKind::Delay,
            reporting_mta: "mx",
            to: "a@b",
            queue_id: "Q",
            arrived: 0,
            now: 10,
            retry_until: Some(432_000),
            recipients: &recipients,
            original: b"Subject: x\r\n",
            boundary: "B",
        };
        let out = text(&build(&report));
        assert!(out.contains("Action: delayed\r\nStatus: 4.0.0\r\n"));
        assert!(out.contains("Will-Retry-Until: Tue, 6 Jan 1970 00:00:00 +0000\r\n"));
        assert!(out.contains("Diagnostic-Code: smtp; 451 try later  Injected: x\r\n"));
        assert!(!out.contains("\r\nInjected"));
    }

    #[test]
    fn status_codes_and_header_cut() {
        assert_eq!(status_of("550 5.7.1 no", true), "5.7.1");
        assert_eq!(status_of("550 no such user", true), "5.0.0");
        assert_eq!(status_of("451 4.4.1 later", false), "4.4.1");
        assert_eq!(status_of("451 5.1.1 mixed", false), "4.0.0");
        assert_eq!(status_of("connection refused", false), "4.0.0");
        assert_eq!(status_of("", true), "5.0.0");
        let long: Vec<u8> = b"X: y\r\n".repeat(MAX_QUOTED_HEADER);
        let head = header_section(&long);
        assert!(head.len() <= MAX_QUOTED_HEADER);
        assert!(head.ends_with(b"\r\n"));
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"no header end"), b"no header end");
    }
}
