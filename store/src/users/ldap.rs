//! The LDAP user database (design.md §4 `[users] backend = "ldap"`, docs/ldap.md): a
//! small blocking LDAPv3 client (RFC 4511) that finds a user's entry with a search
//! filter (RFC 4515) and checks passwords either by reading the stored hash (`compare`)
//! or by binding as the user (`bind`, RFC 4513 §5.1.3).
//!
//! Every failure to reach or understand the server is a `TempFail`; nothing a server
//! sends can panic the client.

mod ber;
mod conn;
mod filter;
mod pool;
mod proto;
mod scheme;

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tidegate_core::user::{AuthOutcome, Lookup, UserRecord, normalize_address};

use self::conn::{Connection, Endpoint, LdapError, Settings};
use self::filter::Filter;
use self::pool::Pool;
use self::proto::Entry;
use super::UserDirectory;
use crate::password::{self, Verification};

pub use self::filter::{escape_value as escape_filter_value, expand_template as expand_filter};
pub use self::scheme::map_user_password;

/// Most `userPassword` values of one entry checked in compare mode.
const MAX_PASSWORD_VALUES: usize = 4;

/// How `verify` checks a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapAuth {
    /// Read the entry's password attribute (the bind DN needs read access to it) and
    /// verify the hash locally with [`crate::password::verify`].
    Compare,
    /// Bind as the entry's DN with the presented password on a separate connection
    /// (RFC 4513 §5.1.3); the server checks the password and its own policies.
    Bind,
}

/// Settings of an LDAP user database, one field per `[users]` key (docs/ldap.md).
#[derive(Clone, PartialEq, Eq)]
pub struct LdapConfig {
    /// `url`: `ldap://HOST[:PORT]` or `ldaps://HOST[:PORT]`.
    pub url: String,
    /// `base`: the DN under which users are searched (whole subtree).
    pub base: String,
    /// `bind_dn`: the DN to search as; empty for an anonymous search.
    pub bind_dn: String,
    /// `bind_password`: the password of `bind_dn`.
    pub bind_password: String,
    /// `filter`: the search filter with `%u` (address), `%n` (local part), `%d`
    /// (domain), each RFC 4515-escaped. Default `(mail=%u)`.
    pub filter: String,
    /// `password_attribute`: where the password hash is (compare mode). Default
    /// `userPassword`.
    pub password_attribute: String,
    /// `tohost_attribute`: the attribute holding the user's back-end host (proxy mode);
    /// `None` for no routing field.
    pub tohost_attribute: Option<String>,
    /// `fields`: `(field, attribute)` pairs copying an attribute into a user field
    /// (`quota`, `nologin`, ...). An LDAP Boolean `TRUE` gives a bare flag, `FALSE`
    /// leaves the field out.
    pub fields: Vec<(String, String)>,
    /// `domains`: the domains this database serves; an address outside them is
    /// [`Lookup::UnknownDomain`]. Empty: every miss is [`Lookup::NotFound`].
    pub domains: Vec<String>,
    /// `auth`: how passwords are checked. Default [`LdapAuth::Compare`].
    pub auth: LdapAuth,
    /// `starttls`: upgrade an `ldap://` connection with StartTLS before anything else.
    pub starttls: bool,
    /// `ca_file`: PEM file of the certificate authorities to trust for TLS (required
    /// with `ldaps://` or `starttls`).
    pub ca_file: Option<PathBuf>,
    /// `connect_timeout`: deadline for TCP connect plus TLS handshake. Default 5 s.
    pub connect_timeout: Duration,
    /// `timeout`: deadline for one search or bind. Default 10 s.
    pub timeout: Duration,
    /// `pool_size`: idle connections kept per kind (search, user bind). Default 4.
    pub pool_size: usize,
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("url", &self.url)
            .field("base", &self.base)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"..")
            .field("filter", &self.filter)
            .field("password_attribute", &self.password_attribute)
            .field("tohost_attribute", &self.tohost_attribute)
            .field("fields", &self.fields)
            .field("domains", &self.domains)
            .field("auth", &self.auth)
            .field("starttls", &self.starttls)
            .field("ca_file", &self.ca_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl LdapConfig {
    /// The defaults for a server at `url` with users under `base`: anonymous search,
    /// `(mail=%u)`, `userPassword`, compare mode, no TLS beyond the url's.
    pub fn new(url: impl Into<String>, base: impl Into<String>) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            base: base.into(),
            bind_dn: String::new(),
            bind_password: String::new(),
            filter: "(mail=%u)".into(),
            password_attribute: "userPassword".into(),
            tohost_attribute: None,
            fields: Vec::new(),
            domains: Vec::new(),
            auth: LdapAuth::Compare,
            starttls: false,
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            pool_size: 4,
        }
    }
}

/// What a search for one address found.
enum Found {
    /// The address's domain is not served.
    OutsideDomains,
    /// No entry.
    Nothing,
    /// Exactly one entry.
    One(Entry),
}

/// A user database in an LDAP directory. Connections are opened on first use (a server
/// that is down at start gives `TempFail` until it is back), kept in small pools and
/// reopened once when a pooled one turns out to be dead.
pub struct LdapDirectory {
    config: LdapConfig,
    settings: Settings,
    domains: Vec<String>,
    /// Search connections, bound as `bind_dn`.
    searchers: Pool,
    /// Connections used for user binds (bind mode).
    binders: Pool,
    /// The last stored hash seen in compare mode: an unknown user is "checked" against
    /// it, so a miss costs what a wrong password costs whatever the scheme.
    last_hash: Mutex<Option<String>>,
}

impl fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// Checks the settings (url, filter template, TLS material) without connecting.
    pub fn new(config: LdapConfig) -> Result<LdapDirectory, String> {
        let endpoint = Endpoint::parse(&config.url)?;
        if endpoint.implicit_tls && config.starttls {
            return Err("LDAP: starttls makes no sense with ldaps://".into());
        }
        let probe = expand_filter(&config.filter, "user@example.com")
            .map_err(|e| format!("LDAP filter {:?}: {e}", config.filter))?;
        filter::parse(&probe).map_err(|e| format!("LDAP filter {:?}: {e}", config.filter))?;
        if !config.filter.contains('%') {
            return Err(format!(
                "LDAP filter {:?} does not use %u, %n or %d",
                config.filter
            ));
        }
        let tls = if endpoint.implicit_tls || config.starttls {
            Some(tls_config(config.ca_file.as_ref())?)
        } else {
            None
        };
        let settings = Settings {
            endpoint,
            starttls: config.starttls,
            tls,
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
        };
        let domains = config
            .domains
            .iter()
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        Ok(LdapDirectory {
            searchers: Pool::new(config.pool_size),
            binders: Pool::new(config.pool_size),
            settings,
            domains,
            last_hash: Mutex::new(None),
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &LdapConfig {
        &self.config
    }

    fn open_searcher(&self) -> Result<Connection, LdapError> {
        let mut connection = Connection::open(&self.settings)?;
        if !self.config.bind_dn.is_empty() {
            let accepted =
                connection.bind(&self.config.bind_dn, self.config.bind_password.as_bytes())?;
            if !accepted {
                return Err(LdapError::Protocol(format!(
                    "the server refused bind_dn {:?} with its password",
                    self.config.bind_dn
                )));
            }
        }
        Ok(connection)
    }

    fn attributes(&self) -> Vec<&str> {
        let mut attributes = Vec::new();
        if self.config.auth == LdapAuth::Compare {
            attributes.push(self.config.password_attribute.as_str());
        }
        if let Some(tohost) = &self.config.tohost_attribute {
            attributes.push(tohost.as_str());
        }
        attributes.extend(self.config.fields.iter().map(|(_, attr)| attr.as_str()));
        attributes
    }

    /// Searches the entry of a normalised address.
    fn find(&self, address: &str) -> Result<Found, String> {
        if address.is_empty() || address.chars().any(char::is_control) {
            // No address has them, and servers may match a value cut at a NUL
            // (slapd finds "a@b" for "a@b\0"): never send them.
            return Ok(Found::Nothing);
        }
        if !self.domains.is_empty() {
            let domain = address.rsplit_once('@').map(|(_, d)| d);
            if !domain.is_some_and(|d| self.domains.iter().any(|ours| ours == d)) {
                return Ok(Found::OutsideDomains);
            }
        }
        let text = expand_filter(&self.config.filter, address)?;
        let filter: Filter = filter::parse(&text)?;
        let attributes = self.attributes();
        let entries = self
            .searchers
            .run(
                || self.open_searcher(),
                |connection| connection.search(&self.config.base, &filter, &attributes),
            )
            .map_err(|e| {
                log::warn!("LDAP search for {address}: {e}");
                e.to_string()
            })?;
        let mut entries = entries.into_iter();
        match (entries.next(), entries.next()) {
            (None, _) => Ok(Found::Nothing),
            (Some(entry), None) => Ok(Found::One(entry)),
            (Some(first), Some(second)) => {
                log::error!(
                    "LDAP filter matches several entries for {address} ({}, {}, ...): fix the filter or the data",
                    first.dn,
                    second.dn
                );
                Err(format!("several LDAP entries match {address}"))
            }
        }
    }

    /// The user record of an entry: tohost and mapped fields, and in compare mode the
    /// first usable password value.
    fn record(&self, address: &str, entry: &Entry) -> UserRecord {
        let mut record = UserRecord::new(address);
        if self.config.auth == LdapAuth::Compare {
            record.password = self
                .stored_passwords(entry)
                .into_iter()
                .next()
                .unwrap_or_default();
        }
        if let Some(attribute) = &self.config.tohost_attribute
            && let Some(host) = first_text(entry, attribute)
        {
            record.fields.insert("tohost".into(), host);
        }
        for (field, attribute) in &self.config.fields {
            let Some(value) = first_text(entry, attribute) else {
                continue;
            };
            let key = field.to_ascii_lowercase();
            if value.eq_ignore_ascii_case("FALSE") {
                continue;
            }
            let value = if value.eq_ignore_ascii_case("TRUE") {
                String::new()
            } else {
                value
            };
            record.fields.insert(key, value);
        }
        record
    }

    fn stored_passwords(&self, entry: &Entry) -> Vec<String> {
        entry
            .values(&self.config.password_attribute)
            .iter()
            .take(MAX_PASSWORD_VALUES)
            .filter_map(|value| map_user_password(value))
            .collect()
    }

    fn verify_compare(
        &self,
        address: &str,
        entry: Option<&Entry>,
        presented: &[u8],
    ) -> AuthOutcome {
        let Some(entry) = entry else {
            self.dummy_check(presented);
            return AuthOutcome::Denied;
        };
        let hashes = self.stored_passwords(entry);
        if hashes.is_empty() {
            log::warn!(
                "LDAP entry {} has no readable {} (may bind_dn read it?)",
                entry.dn,
                self.config.password_attribute
            );
            self.dummy_check(presented);
            return AuthOutcome::Denied;
        }
        let mut matched = false;
        for hash in &hashes {
            match password::verify(hash, presented) {
                Verification::Match => matched = true,
                Verification::Mismatch => {}
                Verification::Unsupported => log::warn!(
                    "LDAP entry {}: password scheme {} cannot be checked",
                    entry.dn,
                    hash.split('}')
                        .next()
                        .unwrap_or("?")
                        .trim_start_matches('{')
                ),
            }
        }
        if let Some(first) = hashes.into_iter().next() {
            *self.last_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
        }
        if !matched {
            return AuthOutcome::Denied;
        }
        let record = self.record(address, entry);
        if record.nologin() {
            AuthOutcome::Disabled
        } else {
            AuthOutcome::Accepted(record)
        }
    }

    fn verify_bind(&self, address: &str, entry: Option<&Entry>, presented: &[u8]) -> AuthOutcome {
        let Some(entry) = entry else {
            return AuthOutcome::Denied;
        };
        let bound = self.binders.run(
            || Connection::open(&self.settings),
            |connection| connection.bind(&entry.dn, presented),
        );
        match bound {
            Ok(true) => {
                let record = self.record(address, entry);
                if record.nologin() {
                    AuthOutcome::Disabled
                } else {
                    AuthOutcome::Accepted(record)
                }
            }
            Ok(false) => AuthOutcome::Denied,
            // busy, unavailable, unwillingToPerform (RFC 4511 Appendix A): the server
            // may say yes later; every other refusal is a no.
            Err(LdapError::Result(result)) if ![51, 52, 53, 80].contains(&result.code) => {
                log::info!(
                    "LDAP bind as {} refused: {} {}",
                    entry.dn,
                    result.code,
                    result.message
                );
                AuthOutcome::Denied
            }
            Err(error) => {
                log::warn!("LDAP bind as {}: {error}", entry.dn);
                AuthOutcome::TempFail(error.to_string())
            }
        }
    }

    /// Spends the time of one password check on nothing (unknown user).
    fn dummy_check(&self, presented: &[u8]) {
        let last = self
            .last_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        password::verify_dummy(last.as_deref(), presented);
    }
}

impl UserDirectory for LdapDirectory {
    fn lookup(&self, address: &str) -> Lookup {
        let address = normalize_address(address);
        match self.find(&address) {
            Ok(Found::OutsideDomains) => Lookup::UnknownDomain,
            Ok(Found::Nothing) => Lookup::NotFound,
            Ok(Found::One(entry)) => Lookup::Found(self.record(&address, &entry)),
            Err(reason) => Lookup::TempFail(reason),
        }
    }

    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome {
        let address = normalize_address(user);
        if self.config.auth == LdapAuth::Bind && password.is_empty() {
            // RFC 4513 §5.1.2: a simple bind with an empty password is an
            // unauthenticated bind that servers answer with success.
            log::info!("LDAP login of {address} from {client} with an empty password refused");
            return AuthOutcome::Denied;
        }
        let entry = match self.find(&address) {
            Ok(Found::One(entry)) => Some(entry),
            Ok(Found::OutsideDomains | Found::Nothing) => None,
            Err(reason) => return AuthOutcome::TempFail(reason),
        };
        let outcome = match self.config.auth {
            LdapAuth::Compare => self.verify_compare(&address, entry.as_ref(), password),
            LdapAuth::Bind => self.verify_bind(&address, entry.as_ref(), password),
        };
        if matches!(outcome, AuthOutcome::Denied) {
            log::info!("LDAP login of {address} from {client} denied");
        }
        outcome
    }

    /// Closes the idle connections, so the next call reconnects (and re-resolves the
    /// server's name). The settings themselves change by building a new directory.
    fn reload(&self) -> Result<(), String> {
        self.searchers.clear();
        self.binders.clear();
        Ok(())
    }
}

/// The first value of `attribute` as trimmed text without control characters.
fn first_text(entry: &Entry, attribute: &str) -> Option<String> {
    let value = entry.values(attribute).first()?;
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_control) {
        return None;
    }
    Some(text.to_owned())
}

/// rustls client settings trusting the CAs in `ca_file` (ring provider, safe defaults).
fn tls_config(ca_file: Option<&PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.ok_or("LDAP over TLS needs ca_file (the CA certificates to trust)")?;
    let shown = path.display();
    let pem = fs::read(path).map_err(|e| format!("LDAP ca_file {shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("LDAP ca_file {shown}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("LDAP ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("LDAP ca_file {shown}: no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("LDAP TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_up_front() {
        let ok = LdapConfig::new("ldap://127.0.0.1:1", "dc=example,dc=com");
        assert!(LdapDirectory::new(ok.clone()).is_ok());
        let mut bad = ok.clone();
        bad.filter = "(mail=%u".into();
        assert!(LdapDirectory::new(bad).is_err());
        let mut bad = ok.clone();
        bad.filter = "(mail=fixed)".into();
        assert!(LdapDirectory::new(bad).is_err());
        let mut bad = ok.clone();
        bad.url = "ldaps://127.0.0.1".into();
        assert!(LdapDirectory::new(bad).unwrap_err().contains("ca_file"));
        let mut bad = ok;
        bad.starttls = true;
        assert!(LdapDirectory::new(bad).is_err());
    }

    #[test]
    fn password_is_not_shown() {
        let mut config = LdapConfig::new("ldap://x", "dc=x");
        config.bind_password = "sesame".into();
        assert!(!format!("{config:?}").contains("sesame"));
    }

    #[test]
    fn server_down_is_tempfail() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let directory =
            LdapDirectory::new(LdapConfig::new(format!("ldap://127.0.0.1:{port}"), "dc=x"))
                .unwrap();
        assert!(matches!(directory.lookup("a@x"), Lookup::TempFail(_)));
        assert!(matches!(
            directory.verify("a@x", b"pw", IpAddr::from([127, 0, 0, 1])),
            AuthOutcome::TempFail(_)
        ));
    }
}
