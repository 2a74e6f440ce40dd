//! Trace fields prepended to every received message: `Return-Path:` and `Received:`
//! (RFC 5321 §4.4), with an RFC 5322 §3.3 date computed without reading a clock.

use std::fmt::Write as _;
use std::net::IpAddr;

/// What the `Received:` field says about one message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Trace<'a> {
    /// The reverse-path (empty for `<>`).
    pub sender: &'a str,
    /// The name the client gave in HELO/EHLO/LHLO.
    pub helo: &'a str,
    /// The client's IP address.
    pub client: IpAddr,
    /// Our host name.
    pub host: &'a str,
    /// The RFC 3848 protocol name (`ESMTPSA`, `LMTP`, …).
    pub protocol: &'static str,
    /// The id the session gave the message (also in the final `250`).
    pub id: &'a str,
    /// The recipient, named only when there is exactly one (RFC 5321 §4.4 warns that
    /// `for` with several recipients discloses the others).
    pub recipient: Option<&'a str>,
    /// Seconds since the Unix epoch, UTC.
    pub unix_time: u64,
}

/// Lines are folded before this many characters where the parts allow (RFC 5322 §2.1.1).
const FOLD_AT: usize = 78;

/// `Return-Path: <sender>` and the `Received:` field, each ending in CRLF.
pub(super) fn header(t: &Trace<'_>) -> String {
    let mut clauses = vec![
        format!("from {} ({})", t.helo, address_literal(t.client)),
        format!("by {} (tidegate)", t.host),
        format!("with {}", t.protocol),
        format!("id {}", t.id),
    ];
    if let Some(rcpt) = t.recipient {
        clauses.push(format!("for <{rcpt}>"));
    }
    if let Some(last) = clauses.last_mut() {
        last.push(';');
    }
    clauses.push(rfc5322_date(t.unix_time));

    let mut out = format!("Return-Path: <{}>\r\nReceived:", t.sender);
    let mut line_len = "Received:".len();
    for (i, clause) in clauses.iter().enumerate() {
        if i > 0 && line_len + 1 + clause.len() > FOLD_AT {
            out.push_str("\r\n\t");
            line_len = 1;
        } else {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(clause);
        line_len += clause.len();
    }
    out.push_str("\r\n");
    out
}

/// The RFC 5321 §4.1.3 address literal of an IP address: `[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`. IPv4-mapped IPv6 addresses are shown as IPv4.
pub(super) fn address_literal(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    }
}

/// The `with` keyword of the `Received:` field: RFC 3848 (ESMTP, ESMTPS, ESMTPA,
/// ESMTPSA, LMTP…) and, when the client gave `SMTPUTF8` on MAIL, RFC 6531 §4.3
/// (UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA, UTF8LMTP…).
pub(super) fn protocol(
    lmtp: bool,
    extended: bool,
    tls: bool,
    authenticated: bool,
    utf8: bool,
) -> &'static str {
    let suffix = match (tls, authenticated) {
        (false, false) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (true, true) => 3,
    };
    let names: [&str; 4] = match (lmtp, utf8, extended || tls || authenticated) {
        (true, false, _) => ["LMTP", "LMTPS", "LMTPA", "LMTPSA"],
        (true, true, _) => ["UTF8LMTP", "UTF8LMTPS", "UTF8LMTPA", "UTF8LMTPSA"],
        (false, true, _) => ["UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"],
        (false, false, true) => ["ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"],
        (false, false, false) => ["SMTP", "SMTP", "SMTP", "SMTP"],
    };
    names[suffix]
}

/// Formats a Unix time as an RFC 5322 §3.3 date-time in UTC:
/// `Thu, 1 Jan 1970 00:00:00 +0000`.
pub(crate) fn rfc5322_date(unix_time: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_time / 86_400;
    let secs = unix_time % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month_name = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    let mut out = String::with_capacity(32);
    let _ = write!(
        out,
        "{weekday}, {day} {month_name} {year} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    out
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01: Howard Hinnant's
/// `civil_from_days` (proleptic Gregorian calendar, 400-year eras of 146097 days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days end each cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_against_known_values() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_000_000_000),
            "Sun, 9 Sep 2001 01:46:40 +0000"
        );
        assert_eq!(
            rfc5322_date(1_234_567_890),
            "Fri, 13 Feb 2009 23:31:30 +0000"
        );
        assert_eq!(
            rfc5322_date(1_709_251_199),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(1_709_251_200),
            "Fri, 1 Mar 2024 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(4_102_444_800),
            "Fri, 1 Jan 2100 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(4_107_542_400),
            "Mon, 1 Mar 2100 00:00:00 +0000"
        );
        // The largest time a u64 day count allows still formats (no overflow).
        assert!(rfc5322_date(u64::MAX).ends_with(" +0000"));
    }

    #[test]
    fn civil_dates_round_trip_day_by_day() {
        // Every day of 1969-2401 follows its predecessor by exactly one calendar day.
        let mut prev = civil_from_days(0);
        assert_eq!(prev, (1970, 1, 1));
        for days in 1..157_000 {
            let cur = civil_from_days(days);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                cur == next_day || cur == next_month || cur == next_year,
                "{prev:?} -> {cur:?}"
            );
            prev = cur;
        }
    }

    fn trace<'a>(recipient: Option<&'a str>, helo: &'a str) -> Trace<'a> {
        Trace {
            sender: "alice@example.org",
            helo,
            client: "192.0.2.7".parse().unwrap(),
            host: "mx.example.com",
            protocol: "ESMTPS",
            id: "18F0A1B2C3D4E5",
            recipient,
            unix_time: 1_234_567_890,
        }
    }

    #[test]
    fn received_header_shape() {
        assert_eq!(
            header(&trace(Some("bob@example.com"), "client.example.org")),
            "Return-Path: <alice@example.org>\r\n\
             Received: from client.example.org ([192.0.2.7]) by mx.example.com (tidegate)\r\n\
             \twith ESMTPS id 18F0A1B2C3D4E5 for <bob@example.com>;\r\n\
             \tFri, 13 Feb 2009 23:31:30 +0000\r\n"
        );
        assert_eq!(
            header(&trace(None, "c")),
            "Return-Path: <alice@example.org>\r\n\
             Received: from c ([192.0.2.7]) by mx.example.com (tidegate) with ESMTPS\r\n\
             \tid 18F0A1B2C3D4E5; Fri, 13 Feb 2009 23:31:30 +0000\r\n"
        );
        for line in header(&trace(Some("bob@example.com"), "client.example.org")).split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line}");
        }
    }

    #[test]
    fn address_literals_and_protocols() {
        assert_eq!(
            address_literal("::ffff:192.0.2.1".parse().unwrap()),
            "[192.0.2.1]"
        );
        assert_eq!(
            address_literal("2001:db8::1".parse().unwrap()),
            "[IPv6:2001:db8::1]"
        );
        assert_eq!(protocol(false, false, false, false, false), "SMTP");
        assert_eq!(protocol(false, true, false, false, false), "ESMTP");
        assert_eq!(protocol(false, true, true, true, false), "ESMTPSA");
        assert_eq!(protocol(false, true, false, true, false), "ESMTPA");
        assert_eq!(protocol(true, true, true, false, false), "LMTPS");
        assert_eq!(protocol(true, true, false, false, false), "LMTP");
        assert_eq!(protocol(false, true, false, false, true), "UTF8SMTP");
        assert_eq!(protocol(false, true, true, true, true), "UTF8SMTPSA");
        assert_eq!(protocol(true, true, true, false, true), "UTF8LMTPS");
    }
}
