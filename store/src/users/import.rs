//! Reading a Dovecot passwd-file for `tidegate user import`: one user a line,
//! `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra fields` (trailing fields may be
//! left out), extra fields space-separated `key=value` words.
//!
//! What carries over: the address (a bare name takes `--domain`), the hash (a hash
//! without `{SCHEME}` is Dovecot's default `CRYPT`), `userdb_quota_rule=*:bytes=N` or
//! `*:storage=N[k|M|G|T]` as `quota=` (Dovecot's `storage` counts KiB without a suffix),
//! `host=` with `proxy`/`proxy_maybe` as `tohost=`, `nologin` as `nologin`. Other extra
//! fields are kept as `key=value` when they fit a users file field; uid, gid, gecos,
//! home and shell have no meaning here and are dropped. Lines that cannot be imported
//! are reported with their line number, never guessed at.

use std::collections::BTreeMap;

use tidegate_core::user::UserRecord;

use super::normalize_address;
use super::table::parse_line;
use crate::password;

/// The outcome of reading a passwd-file.
#[derive(Debug, Default)]
pub struct Imported {
    /// The users to add, in file order.
    pub users: Vec<UserRecord>,
    /// What was skipped or dropped, one message each, naming the line.
    pub report: Vec<String>,
}

/// Parses passwd-file text; `domain` completes names without `@`.
pub fn parse_passwd_file(text: &str, domain: Option<&str>) -> Imported {
    let mut imported = Imported::default();
    let mut seen = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_entry(trimmed, domain, number, &mut imported.report) {
            Ok(record) => {
                if let Some(first) = seen.insert(record.address.clone(), number) {
                    imported.report.push(format!(
                        "line {number}: {} skipped: already on line {first}",
                        record.address
                    ));
                    seen.insert(record.address.clone(), first);
                    continue;
                }
                imported.users.push(record);
            }
            Err(reason) => imported
                .report
                .push(format!("line {number}: skipped: {reason}")),
        }
    }
    imported
}

fn parse_entry(
    line: &str,
    domain: Option<&str>,
    number: usize,
    report: &mut Vec<String>,
) -> Result<UserRecord, String> {
    let mut parts = line.splitn(8, ':');
    let user = parts.next().unwrap_or_default().trim();
    let hash = parts.next().unwrap_or_default().trim();
    let extra = parts.nth(5).unwrap_or_default();
    let address = match (user.contains('@'), domain) {
        (true, _) => normalize_address(user),
        (false, Some(domain)) => normalize_address(&format!("{user}@{domain}")),
        (false, None) => return Err(format!("{user:?} has no @domain (give --domain)")),
    };
    if hash.is_empty() {
        return Err(format!("{address} has no password"));
    }
    let stored = if hash.starts_with('{') {
        hash.to_owned()
    } else {
        format!("{{CRYPT}}{hash}")
    };
    password::check_stored(&stored).map_err(|reason| format!("{address}: {reason}"))?;
    let mut record = UserRecord::new(address);
    record.password = stored;
    let words: Vec<&str> = extra.split_whitespace().collect();
    let proxied = words.iter().any(|w| {
        matches!(
            *w,
            "proxy" | "proxy=y" | "proxy=yes" | "proxy_maybe" | "proxy_maybe=y" | "proxy_maybe=yes"
        )
    });
    for word in &words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let key = key.to_ascii_lowercase();
        let plain_key = key.strip_prefix("userdb_").unwrap_or(&key);
        let mapped: Option<(String, String)> = match plain_key {
            "quota_rule" => match quota_bytes(value) {
                Some(bytes) => Some(("quota".into(), bytes.to_string())),
                None => {
                    report.push(format!(
                        "line {number}: {}: quota rule {value:?} not imported (only *:bytes= and *:storage=)",
                        record.address
                    ));
                    None
                }
            },
            "host" if proxied => Some(("tohost".into(), value.to_owned())),
            "proxy" | "proxy_maybe" => None,
            "nologin" => Some(("nologin".into(), String::new())),
            _ => Some((key.clone(), value.to_owned())),
        };
        let Some((key, value)) = mapped else {
            continue;
        };
        let mut candidate = record.clone();
        candidate.fields.insert(key.clone(), value);
        if matches!(parse_line(&candidate.to_line()), Ok(Some(ref parsed)) if *parsed == candidate)
        {
            record = candidate;
        } else {
            report.push(format!(
                "line {number}: {}: field {word:?} dropped (not a users file field)",
                record.address
            ));
        }
    }
    Ok(record)
}

/// `*:bytes=N` or `*:storage=N[k|M|G|T]` (KiB without a suffix) in bytes.
fn quota_bytes(rule: &str) -> Option<u64> {
    let limit = rule.strip_prefix("*:")?;
    if let Some(bytes) = limit.strip_prefix("bytes=") {
        return bytes.parse().ok();
    }
    let storage = limit.strip_prefix("storage=")?;
    let split = storage
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(storage.len());
    let (digits, suffix) = storage.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let unit: u64 = match suffix.to_ascii_uppercase().as_str() {
        "" | "K" | "KB" => 1 << 10,
        "B" => 1,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        "T" | "TB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_lines_map_to_users() {
        let text = "# dovecot users\n\
            alice@example.com:{SHA512-CRYPT}$6$CcQf.8l/6DPKv2xE$CYe2GIkXQXQFCVAO3C8/xCq3pd7yjcaynbTa25qCXiyF0xCzCSqd.g2nwcd3s13jjx8WIs.2kQTAhmUURh3fS/:1000:1000::/home/alice::userdb_quota_rule=*:bytes=1000000 proxy host=10.0.0.5\n\
            bob:{PLAIN}pw::::::nologin userdb_quota_rule=*:storage=2M plan=gold\n\
            carol@example.com:$2y$05$A8qJwc9LC3H9OPUZJ.eH4uJ2HozocZykdv1Tg9QB/63x0tzxmIgYi\n\
            dave@example.com:{MD5-CRYPT}$1$abc$def\n\
            Alice@Example.com:{PLAIN}again\n\
            erin@example.com:{PLAIN}x::::::host=10.9.9.9 bad.key=1\n";
        let imported = parse_passwd_file(text, Some("example.org"));
        let lines: Vec<String> = imported.users.iter().map(|u| u.to_line()).collect();
        assert_eq!(lines.len(), 4, "{lines:?} {:?}", imported.report);
        assert!(lines[0].starts_with("alice@example.com {SHA512-CRYPT}$6$"));
        assert!(
            lines[0].ends_with(" quota=1000000 tohost=10.0.0.5"),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1],
            "bob@example.org {PLAIN}pw nologin plan=gold quota=2097152"
        );
        assert!(lines[2].starts_with("carol@example.com {CRYPT}$2y$05$"));
        // host= without proxy is kept as a plain field, not routing.
        assert_eq!(lines[3], "erin@example.com {PLAIN}x host=10.9.9.9");
        let report = imported.report.join("\n");
        assert!(
            report.contains("line 5: skipped: dave@example.com"),
            "{report}"
        );
        assert!(
            report.contains("line 6: alice@example.com skipped: already on line 2"),
            "{report}"
        );
        assert!(
            report.contains("line 7: erin@example.com: field \"bad.key=1\" dropped"),
            "{report}"
        );
        let no_domain = parse_passwd_file("bob:{PLAIN}x\n", None);
        assert!(no_domain.users.is_empty());
        assert!(no_domain.report[0].contains("--domain"));
    }

    #[test]
    fn quota_rules() {
        assert_eq!(quota_bytes("*:bytes=123"), Some(123));
        assert_eq!(quota_bytes("*:storage=10"), Some(10 * 1024));
        assert_eq!(quota_bytes("*:storage=1G"), Some(1 << 30));
        assert_eq!(quota_bytes("*:storage=5x"), None);
        assert_eq!(quota_bytes("Trash:storage=+10%"), None);
        assert_eq!(quota_bytes("*:storage=99999999999999999T"), None);
    }
}
