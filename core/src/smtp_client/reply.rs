//! Server replies as the client reads them (RFC 5321 §4.2): one or more lines of a
//! three-digit code, `-` on every line but the last, and text; the RFC 3463 enhanced
//! status code at the start of the text when the server uses ENHANCEDSTATUSCODES
//! (RFC 2034).
//!
//! [`ReplyReader`] frames lines with the bounded [`LineBuffer`] and assembles them into
//! replies, so a server can make it hold at most one line ([`MAX_REPLY_LINE`]) and the
//! lines of one reply ([`MAX_REPLY_LINES`]) besides the bytes of one read.

use std::fmt;

use crate::wire::{LineBuffer, LineEvent};

/// The longest reply line accepted, CRLF excluded. RFC 5321 §4.5.3.1.5 allows 512
/// octets; real servers send longer banners and EHLO lines, so twice the 1000-octet text
/// line limit (§4.5.3.1.6) leaves ample slack without letting a server grow the buffer.
pub const MAX_REPLY_LINE: usize = 2000;

/// The most lines in one reply. An EHLO reply lists one extension a line, a few dozen
/// at most; anything near a hundred is not a reply worth reading.
pub const MAX_REPLY_LINES: usize = 100;

/// One SMTP reply as the client parsed it (RFC 5321 §4.2; enhanced code RFC 3463 when
/// present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit reply code (RFC 5321 §4.2.1), 200..=599 for a parsed reply.
    pub code: u16,
    /// The enhanced status code `class.subject.detail` at the start of the first line's
    /// text (RFC 3463 §2), when its class matches the code's first digit.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text of each line after the code and separator, as sent (enhanced code
    /// included). Control characters are replaced by `?`, so the text is safe to log and
    /// to quote in a delivery status notification.
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// A reply the client makes up itself (a timeout, a lost connection), so a recipient
    /// outcome always carries a reply; `text` must not contain control characters.
    pub fn synthetic(code: u16, enhanced: (u8, u16, u16), text: &str) -> Self {
        let (class, subject, detail) = enhanced;
        SmtpReply {
            code,
            enhanced: Some(enhanced),
            lines: vec![format!("{class}.{subject}.{detail} {}", sanitize(text))],
        }
    }

    /// A 2xx (completion) or 3xx (intermediate) reply (RFC 5321 §4.2.1).
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// A 2xx reply: the command completed (RFC 5321 §4.2.1). Only this accepts a
    /// sender, a recipient or a message; a 3xx where a completion is due is a protocol
    /// error.
    pub fn is_completion(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// A 4xx reply: transient negative completion, try again later (RFC 5321 §4.2.1).
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// A 5xx reply: permanent negative completion (RFC 5321 §4.2.1).
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The whole reply on one line, `550 5.1.1 no such user`, for logs and DSNs. Lines
    /// of a multi-line reply are joined with a space; an enhanced code that later lines
    /// repeat is shown once.
    pub fn text(&self) -> String {
        let mut text = self.code.to_string();
        let prefix = self.enhanced.map(|(c, s, d)| format!("{c}.{s}.{d}"));
        for (i, line) in self.lines.iter().enumerate() {
            let mut line = line.as_str();
            if i > 0
                && let Some(prefix) = &prefix
                && let Some(rest) = line.strip_prefix(prefix.as_str())
            {
                line = rest.trim_start();
            }
            if !line.is_empty() {
                text.push(' ');
                text.push_str(line);
            }
        }
        text
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Why the bytes from the server are not a reply. The client treats each as a
/// temporary failure of the attempt (the server, not the message, is at fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line longer than [`MAX_REPLY_LINE`].
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    TooManyLines,
    /// A line that does not start with a code from 200 to 599 followed by a space, a
    /// dash or the line end (RFC 5321 §4.2).
    Malformed(String),
    /// A continuation line with a different code than the reply's first line
    /// (RFC 5321 §4.2.1: every line of a reply carries the same code).
    CodeChanged {
        /// The code of the reply's first line.
        first: u16,
        /// The code of the offending line.
        then: u16,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => {
                write!(f, "reply line longer than {MAX_REPLY_LINE} octets")
            }
            ReplyError::TooManyLines => write!(f, "reply of more than {MAX_REPLY_LINES} lines"),
            ReplyError::Malformed(line) => write!(f, "malformed reply line {line:?}"),
            ReplyError::CodeChanged { first, then } => {
                write!(
                    f,
                    "reply code changed from {first} to {then} within one reply"
                )
            }
        }
    }
}

/// Splits the server's bytes into replies, one line at a time, with bounded buffers.
#[derive(Debug)]
pub struct ReplyReader {
    input: LineBuffer,
    /// The reply being assembled: its code and its lines so far.
    partial: Option<(u16, Vec<String>)>,
}

impl Default for ReplyReader {
    fn default() -> Self {
        ReplyReader::new()
    }
}

impl ReplyReader {
    /// An empty reader.
    pub fn new() -> Self {
        ReplyReader {
            input: LineBuffer::new(MAX_REPLY_LINE),
            partial: None,
        }
    }

    /// Appends bytes read from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.push(bytes);
    }

    /// The next complete reply, an error (after which the connection should be given
    /// up: the reader has lost track of reply boundaries), or `None` until more bytes come.
    pub fn next_reply(&mut self) -> Option<Result<SmtpReply, ReplyError>> {
        loop {
            let line = match self.input.next_line()? {
                LineEvent::TooLong => return Some(Err(self.fail(ReplyError::LineTooLong))),
                LineEvent::Line(line) => line,
            };
            let (code, last, text) = match parse_line(&line) {
                Ok(parts) => parts,
                Err(e) => return Some(Err(self.fail(e))),
            };
            let (first, lines) = self.partial.get_or_insert_with(|| (code, Vec::new()));
            let first = *first;
            if first != code {
                return Some(Err(self.fail(ReplyError::CodeChanged { first, then: code })));
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Some(Err(self.fail(ReplyError::TooManyLines)));
            }
            lines.push(text);
            if last {
                let lines = self.partial.take().map(|(_, l)| l).unwrap_or_default();
                let enhanced = lines.first().and_then(|l| enhanced_code(code, l));
                return Some(Ok(SmtpReply {
                    code,
                    enhanced,
                    lines,
                }));
            }
        }
    }

    /// Bytes held: the unfinished line plus complete lines not yet taken.
    pub fn buffered(&self) -> usize {
        self.input.buffered()
    }

    /// Lines held in the reply being assembled.
    pub fn partial_lines(&self) -> usize {
        self.partial.as_ref().map_or(0, |(_, lines)| lines.len())
    }

    /// Forgets everything buffered: after STARTTLS's `220` (RFC 3207 §4.2, anything the
    /// server sent before the handshake is not trusted) or after an error.
    pub fn clear(&mut self) {
        self.input.clear();
        self.partial = None;
    }

    fn fail(&mut self, error: ReplyError) -> ReplyError {
        self.clear();
        error
    }
}

/// Parses one line: its code, whether it is the reply's last line, and its text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || ReplyError::Malformed(sanitize(&String::from_utf8_lossy(line)));
    let digits = line.get(..3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(200..600).contains(&code) {
        return Err(malformed());
    }
    let (last, text) = match line.get(3) {
        None => (true, &b""[..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(malformed()),
    };
    Ok((code, last, sanitize(&String::from_utf8_lossy(text))))
}

/// Replaces control characters (a stray CR, NUL, escape sequences) with `?`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The RFC 3463 code at the start of `text`: `class.subject.detail` (class one digit
/// matching the reply code's, subject and detail 1–3 digits each) followed by a space or
/// the end of the text.
fn enhanced_code(code: u16, text: &str) -> Option<(u8, u16, u16)> {
    let token = text.split(' ').next()?;
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str, max_len: usize| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let class = number(class, 1)?;
    let (subject, detail) = (number(subject, 3)?, number(detail, 3)?);
    if !matches!(class, 2 | 4 | 5) || class != code / 100 {
        return None;
    }
    Some((class as u8, subject, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(input: &[u8]) -> Vec<Result<SmtpReply, ReplyError>> {
        let mut reader = ReplyReader::new();
        reader.push(input);
        std::iter::from_fn(|| reader.next_reply()).collect()
    }

    #[test]
    fn single_and_multi_line_replies() {
        let got = replies(b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
        assert_eq!(
            got,
            vec![
                Ok(SmtpReply {
                    code: 220,
                    enhanced: None,
                    lines: vec!["mx ESMTP".into()]
                }),
                Ok(SmtpReply {
                    code: 250,
                    enhanced: None,
                    lines: vec!["mx".into(), "PIPELINING".into(), "SIZE 100".into()]
                }),
            ]
        );
    }

    #[test]
    fn enhanced_codes_and_text() {
        let reply = replies(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n")
            .remove(0)
            .unwrap();
        assert_eq!(reply.enhanced, Some((5, 1, 1)));
        assert_eq!(reply.text(), "550 5.1.1 no such user");
        assert!(reply.is_permanent() && !reply.is_transient() && !reply.is_positive());
        // A class that does not match the code is not an enhanced code.
        let reply = replies(b"451 5.1.1 odd\r\n").remove(0).unwrap();
        assert_eq!(reply.enhanced, None);
        assert_eq!(replies(b"250\r\n").remove(0).unwrap().text(), "250");
        let reply = replies(b"421 4.4.2 bye\r\n").remove(0).unwrap();
        assert_eq!(reply.enhanced, Some((4, 4, 2)));
        assert!(reply.is_transient());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"25\r\n"[..],
            b"abc ok\r\n",
            b"199 x\r\n",
            b"600 x\r\n",
            b"250x\r\n",
        ] {
            assert!(
                matches!(replies(bad).remove(0), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            replies(b"250-a\r\n251 b\r\n").remove(0),
            Err(ReplyError::CodeChanged {
                first: 250,
                then: 251
            })
        );
    }

    #[test]
    fn limits_hold() {
        let mut long = vec![b'2', b'5', b'0', b' '];
        long.extend(std::iter::repeat_n(b'x', MAX_REPLY_LINE));
        long.extend_from_slice(b"\r\n");
        assert_eq!(replies(&long).remove(0), Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(
            replies(many.as_bytes()).remove(0),
            Err(ReplyError::TooManyLines)
        );
    }

    #[test]
    fn control_characters_are_masked() {
        let reply = replies(b"550 bad\x1b[31m\rx\r\n").remove(0).unwrap();
        assert_eq!(reply.lines, vec!["bad?[31m?x".to_string()]);
    }
}
