//! Calendar dates for SEARCH, APPEND and INTERNALDATE (RFC 3501 §9 `date`,
//! `date-time`; RFC 5322 §3.3 for the `Date:` header SENTBEFORE/SENTON/SENTSINCE read).
//!
//! Proleptic Gregorian arithmetic on days since 1970-01-01; no clock is read.

/// Month names as IMAP and RFC 5322 write them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A calendar day, ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01.
    pub days: i64,
}

impl Date {
    /// The date of a year, month (1-12) and day (1-31), if it exists.
    pub fn from_ymd(year: i64, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date {
            days: days_from_civil(year, month, day),
        })
    }

    /// The UTC day of a Unix time.
    pub fn from_unix(unix: i64) -> Date {
        Date {
            days: unix.div_euclid(86_400),
        }
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u8) -> u8 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The month number (1-12) of a three-letter name, any case.
pub fn month(name: &[u8]) -> Option<u8> {
    MONTHS
        .iter()
        .position(|m| m.as_bytes().eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i + 1).ok())
}

fn number(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
    )
}

/// Parses an RFC 3501 `date-text`: `1-Feb-1994` or `01-Feb-1994`.
pub fn parse_date(text: &[u8]) -> Option<Date> {
    let mut parts = text.split(|&b| b == b'-');
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || d.len() > 2 || y.len() != 4 {
        return None;
    }
    Date::from_ymd(number(y)?, month(m)?, u8::try_from(number(d)?).ok()?)
}

/// Parses an RFC 3501 `date-time` without its quotes, `17-Jul-1996 02:44:25 -0700`
/// (the day may be space-padded): Unix seconds and the zone offset in minutes.
pub fn parse_date_time(text: &[u8]) -> Option<(i64, i32)> {
    let text = text.strip_prefix(b" ").unwrap_or(text);
    let mut parts = text.split(|&b| b == b' ');
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let date = parse_date(date)?;
    let secs = parse_time(time)?;
    let offset = parse_zone(zone)?;
    Some((date.days * 86_400 + secs - i64::from(offset) * 60, offset))
}

fn parse_time(time: &[u8]) -> Option<i64> {
    let mut t = time.split(|&b| b == b':');
    let (h, m, s) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return None;
    }
    let (h, m, s) = (number(h)?, number(m)?, number(s)?);
    (h < 24 && m < 60 && s < 61).then_some(h * 3600 + m * 60 + s)
}

fn parse_zone(zone: &[u8]) -> Option<i32> {
    let (sign, digits) = zone.split_first()?;
    if digits.len() != 4 {
        return None;
    }
    let hhmm = i32::try_from(number(digits)?).ok()?;
    let minutes = hhmm / 100 * 60 + hhmm % 100;
    match sign {
        b'+' => Some(minutes),
        b'-' => Some(-minutes),
        _ => None,
    }
}

/// The calendar day of an RFC 5322 `Date:` header value, in its own time zone
/// (RFC 3501 §6.4.4: SENTBEFORE and friends disregard time and zone). Accepts the
/// optional day of week, comments after the zone and two-digit years (RFC 5322 §4.3).
pub fn parse_header_date(value: &[u8]) -> Option<Date> {
    let value = match value.iter().position(|&b| b == b',') {
        Some(comma) => &value[comma + 1..],
        None => value,
    };
    let mut words = value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let day = number(words.next()?)?;
    let month = month(words.next()?)?;
    let mut year = number(words.next()?)?;
    if year < 50 {
        year += 2000;
    } else if year < 1000 {
        year += 1900;
    }
    Date::from_ymd(year, month, u8::try_from(day).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_parsing() {
        for days in [-800_000, -1, 0, 59, 10_957, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_date(b"1-Feb-1994"), Date::from_ymd(1994, 2, 1));
        assert_eq!(parse_date(b"29-feb-2023"), None);
        assert_eq!(parse_date(b"1-Feb-94"), None);
        assert_eq!(
            parse_date_time(b"17-Jul-1996 02:44:25 -0700"),
            Some((837_596_665, -420))
        );
        assert_eq!(
            parse_date_time(b" 7-Jul-1996 02:44:25 +0000").map(|t| t.1),
            Some(0)
        );
        assert_eq!(parse_date_time(b"17-Jul-1996 24:00:00 +0000"), None);
        assert_eq!(
            parse_header_date(b"Tue, 1 Jul 2003 10:52:37 +0200 (CEST)"),
            Date::from_ymd(2003, 7, 1)
        );
        assert_eq!(
            parse_header_date(b"1 Jul 03 10:52 GMT"),
            Date::from_ymd(2003, 7, 1)
        );
        assert_eq!(parse_header_date(b"garbage"), None);
    }
}
