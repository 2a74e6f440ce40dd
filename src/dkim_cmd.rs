//! `tidegate dkim generate`: make a DKIM signing key and print the DNS TXT record that
//! publishes its public half (RFC 6376 §3.6.1, §3.6.2.1).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use tidegate_store::dkim::{KeyKind, generate_key};

/// `tidegate dkim` sub-commands.
#[derive(Subcommand)]
pub enum DkimAction {
    /// Write a new private key (mode 0600, never over an existing file) and print the
    /// TXT record to publish at SELECTOR._domainkey.DOMAIN.
    Generate {
        /// The signing domain (`d=`), e.g. example.com.
        domain: String,
        /// The selector (`s=`); default `sYYYYMM` from today's date, so a later key for
        /// the same domain gets a new name and both records can coexist while rotating.
        #[arg(long)]
        selector: Option<String>,
        /// Where to write the key; default `dkim-DOMAIN-SELECTOR.pem` in the current
        /// directory.
        #[arg(long)]
        key: Option<PathBuf>,
        /// An Ed25519 key (RFC 8463) instead of RSA-2048. Not every receiver verifies
        /// Ed25519 yet, which is why RSA is the default.
        #[arg(long)]
        ed25519: bool,
    },
}

/// Runs a `tidegate dkim` command.
pub fn run(action: DkimAction) -> Result<(), String> {
    match action {
        DkimAction::Generate {
            domain,
            selector,
            key,
            ed25519,
        } => generate(&domain, selector, key, ed25519),
    }
}

fn generate(
    domain: &str,
    selector: Option<String>,
    key: Option<PathBuf>,
    ed25519: bool,
) -> Result<(), String> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if !is_label_list(&domain) || !domain.contains('.') {
        return Err(format!("{domain:?} is not a domain name"));
    }
    let selector = match selector {
        Some(selector) => selector.trim().to_ascii_lowercase(),
        None => default_selector(),
    };
    if !is_label_list(&selector) {
        return Err(format!("{selector:?} is not a valid selector"));
    }
    let key = key.unwrap_or_else(|| PathBuf::from(format!("dkim-{domain}-{selector}.pem")));
    let kind = if ed25519 {
        KeyKind::Ed25519
    } else {
        KeyKind::Rsa2048
    };
    let record = generate_key(&key, kind).map_err(|e| e.to_string())?;
    let name = format!("{selector}._domainkey.{domain}");
    println!("Private key written to {} (mode 0600).", key.display());
    println!("Publish this DNS TXT record:");
    println!();
    println!("name:  {name}");
    println!("value: {record}");
    println!();
    println!("As a zone file line (long values are split into strings of at most 255 characters):");
    println!("{name}. 3600 IN TXT ( {} )", quoted_strings(&record));
    Ok(())
}

/// A TXT value as zone-file character-strings, each at most 255 octets (RFC 1035 §3.3.14).
fn quoted_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Dot-separated labels of letters, digits, `-` and `_`, as DKIM domains and selectors are.
fn is_label_list(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `sYYYYMM` for the current UTC month.
fn default_selector() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() / 86_400);
    let (year, month) = year_month(days);
    format!("s{year:04}{month:02}")
}

/// The civil (proleptic Gregorian) year and month of a day count since 1970-01-01.
fn year_month(days: u64) -> (u64, u64) {
    // Days since 0000-03-01, in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_of_known_days() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(59), (1970, 3)); // 1970-03-01
        assert_eq!(year_month(11_016), (2000, 2)); // 2000-02-29
        assert_eq!(year_month(20_786), (2026, 11)); // 2026-11-29
        assert_eq!(year_month(20_818), (2026, 12)); // 2026-12-31
        assert_eq!(year_month(20_819), (2027, 1)); // 2027-01-01
    }

    #[test]
    fn long_values_are_split_for_zone_files() {
        let value = "x".repeat(300);
        assert_eq!(
            quoted_strings(&value),
            format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))
        );
    }
}
