//! `[users]`: where this node looks users up (design.md §4): the users file, a
//! tidegate authd, or LDAP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidegate_store::users::{LdapAuth, LdapConfig};

use super::Hidden;
use super::authd::AuthdClient;

/// `[users]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// `"file"` (default), `"authd"` or `"ldap"`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The users file for `backend = "file"` (and what `[authd]` serves).
    #[serde(default = "default_users_file")]
    pub file: PathBuf,
    /// Seconds a successful login is remembered (the authentication cache; 0 = off).
    /// A changed password takes effect at once only after `tidegate ctl reload`.
    #[serde(default)]
    pub cache_ttl_secs: u64,
    /// The most logins the cache remembers.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// `backend = "ldap"`: `[users.ldap]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<Ldap>,
    /// `backend = "authd"`: the `authd*` keys.
    #[serde(flatten)]
    pub authd: AuthdClient,
}

impl Default for Users {
    fn default() -> Self {
        Users {
            backend: default_backend(),
            file: default_users_file(),
            cache_ttl_secs: 0,
            cache_size: default_cache_size(),
            ldap: None,
            authd: AuthdClient::default(),
        }
    }
}

/// `[users.ldap]`: see docs/ldap.md.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ldap {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// The search base.
    pub base: String,
    /// The DN to bind as for searches; empty: anonymous.
    #[serde(default)]
    pub bind_dn: String,
    /// Its password (never printed: `check-config` leaves it out).
    #[serde(default, skip_serializing)]
    pub bind_password: Hidden,
    /// The search filter; `%u` is the address, `%n` the local part, `%d` the domain.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// The attribute holding the password hash (`auth = "compare"`).
    #[serde(default = "default_password_attribute")]
    pub password_attribute: String,
    /// The attribute holding the user's back-end (`tohost`).
    #[serde(default)]
    pub tohost_attribute: Option<String>,
    /// Other fields: field name = LDAP attribute.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// The domains this directory serves; empty: every unknown address is "no such user".
    #[serde(default)]
    pub domains: Vec<String>,
    /// `"compare"` (read the hash, check it here) or `"bind"` (bind as the user).
    #[serde(default = "default_auth")]
    pub auth: String,
    /// StartTLS on an `ldap://` URL.
    #[serde(default)]
    pub starttls: bool,
    /// PEM CA certificate(s) to verify the server with (required for TLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds for one operation.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Connections kept open.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

impl Ldap {
    /// The store's LDAP settings.
    pub fn to_store(&self) -> Result<LdapConfig, String> {
        let mut config = LdapConfig::new(&self.url, &self.base);
        config.bind_dn = self.bind_dn.clone();
        config.bind_password = self.bind_password.expose().to_owned();
        config.filter = self.filter.clone();
        config.password_attribute = self.password_attribute.clone();
        config.tohost_attribute = self.tohost_attribute.clone();
        config.fields = self
            .fields
            .iter()
            .map(|(field, attribute)| (field.clone(), attribute.clone()))
            .collect();
        config.domains = self.domains.clone();
        config.auth = match self.auth.as_str() {
            "compare" => LdapAuth::Compare,
            "bind" => LdapAuth::Bind,
            other => {
                return Err(format!(
                    "users.ldap.auth = {other:?}: expected \"compare\" or \"bind\""
                ));
            }
        };
        config.starttls = self.starttls;
        config.ca_file = self.ca_file.clone();
        config.connect_timeout = Duration::from_secs(self.connect_timeout);
        config.timeout = Duration::from_secs(self.timeout);
        config.pool_size = self.pool_size;
        Ok(config)
    }
}

impl Users {
    /// Checks the backend choice and its settings.
    pub fn validate(&self) -> Result<(), String> {
        match (self.backend.as_str(), &self.ldap) {
            ("file", _) => Ok(()),
            ("ldap", Some(ldap)) => {
                let config = ldap.to_store()?;
                tidegate_store::users::LdapDirectory::new(config)
                    .map(|_| ())
                    .map_err(|e| format!("users.ldap: {e}"))
            }
            ("ldap", None) => Err("users.backend = \"ldap\" needs a [users.ldap] section".into()),
            ("authd", _) => self.authd.to_store().map(|_| ()),
            (other, _) => Err(format!(
                "users.backend = {other:?}: expected \"file\", \"authd\" or \"ldap\""
            )),
        }
    }
}

fn default_backend() -> String {
    "file".into()
}
fn default_users_file() -> PathBuf {
    "data/users".into()
}
fn default_cache_size() -> usize {
    100_000
}
fn default_filter() -> String {
    "(mail=%u)".into()
}
fn default_password_attribute() -> String {
    "userPassword".into()
}
fn default_auth() -> String {
    "compare".into()
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_timeout() -> u64 {
    10
}
fn default_pool_size() -> usize {
    4
}
