//! `[authd]` (serve this node's user database to other nodes) and the `authd_*` keys
//! of `[users]` (look users up in an authd). docs/authd.md is the reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidegate_core::Secret;

use super::Hidden;
use tidegate_store::users::{AuthdClientConfig, AuthdClientTls};

/// One value or a list (`listen = "a"` or `listen = ["a", "b"]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values, in order.
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(value) => vec![value.clone()],
            OneOrMany::Many(values) => values.clone(),
        }
    }
}

/// `[authd]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authd {
    /// Where to answer lookups.
    pub listen: OneOrMany<SocketAddr>,
    /// The shared secret clients must present (prefer `secret_file`).
    #[serde(default, skip_serializing)]
    pub secret: Option<Hidden>,
    /// A file holding the shared secret (its first line).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Implicit TLS with the `[tls]` certificate.
    #[serde(default)]
    pub tls: bool,
}

impl Authd {
    /// The shared secret, from `secret` or `secret_file`.
    pub fn secret(&self) -> Result<Secret, String> {
        read_secret(
            "authd",
            self.secret.as_ref().map(Hidden::expose),
            self.secret_file.as_deref(),
        )
    }
}

/// The `authd_*` keys of `[users]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthdClient {
    /// Where the authd listens: one `"host:port"` or a list, tried in order.
    #[serde(default)]
    pub authd: Option<OneOrMany<String>>,
    /// The shared secret (prefer `authd_secret_file`).
    #[serde(default, skip_serializing)]
    pub authd_secret: Option<Hidden>,
    /// A file holding the shared secret.
    #[serde(default)]
    pub authd_secret_file: Option<PathBuf>,
    /// Verify the authd's certificate against this CA (with `authd_tls_name`).
    #[serde(default)]
    pub authd_tls_ca: Option<PathBuf>,
    /// The name the certificate must carry (default: the host of the address).
    #[serde(default)]
    pub authd_tls_name: Option<String>,
    /// Accept exactly this (self-signed) certificate.
    #[serde(default)]
    pub authd_tls_pin: Option<PathBuf>,
    /// Seconds per request.
    #[serde(default)]
    pub authd_timeout: Option<u64>,
    /// Seconds to connect.
    #[serde(default)]
    pub authd_connect_timeout: Option<u64>,
    /// Seconds a lookup answer is reused (0: off).
    #[serde(default)]
    pub authd_cache_ttl: Option<u64>,
    /// Idle connections kept.
    #[serde(default)]
    pub authd_pool: Option<usize>,
}

impl AuthdClient {
    /// The store's authd client settings.
    pub fn to_store(&self) -> Result<AuthdClientConfig, String> {
        let addrs = self
            .authd
            .as_ref()
            .map(OneOrMany::to_vec)
            .filter(|a| !a.is_empty())
            .ok_or("users.backend = \"authd\" needs users.authd = \"host:port\"")?;
        let secret = read_secret(
            "users.authd",
            self.authd_secret.as_ref().map(Hidden::expose),
            self.authd_secret_file.as_deref(),
        )?;
        let mut config = AuthdClientConfig::new(addrs.clone(), secret);
        config.tls = match (&self.authd_tls_ca, &self.authd_tls_pin) {
            (Some(_), Some(_)) => {
                return Err("users.authd_tls_ca and users.authd_tls_pin exclude each other".into());
            }
            (Some(ca), None) => {
                let name = match &self.authd_tls_name {
                    Some(name) => name.clone(),
                    None => host_of(&addrs[0]),
                };
                Some(AuthdClientTls::with_ca_file(ca, &name)?)
            }
            (None, Some(pin)) => Some(AuthdClientTls::pinned(pin)?),
            (None, None) => None,
        };
        if let Some(secs) = self.authd_timeout {
            config.timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.authd_connect_timeout {
            config.connect_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = self.authd_cache_ttl {
            config.cache_ttl = Duration::from_secs(secs);
        }
        if let Some(pool) = self.authd_pool {
            config.pool_size = pool;
        }
        Ok(config)
    }

    /// Resolves relative paths against the config file's directory.
    pub fn resolve_paths(&mut self, fix: &dyn Fn(&mut PathBuf)) {
        for path in [
            &mut self.authd_secret_file,
            &mut self.authd_tls_ca,
            &mut self.authd_tls_pin,
        ]
        .into_iter()
        .flatten()
        {
            fix(path);
        }
    }
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// A secret given inline or in a file (first line, surrounding whitespace removed).
fn read_secret(section: &str, inline: Option<&str>, file: Option<&Path>) -> Result<Secret, String> {
    let text = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(format!("{section}: give secret or secret_file, not both"));
        }
        (Some(secret), None) => secret.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("{section} secret file {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        (None, None) => return Err(format!("{section}: a shared secret is required")),
    };
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{section}: the shared secret is empty"));
    }
    Ok(Secret::new(secret.as_bytes().to_vec()))
}
