//! `[relay]`: outbound delivery through the queue (docs/outbound.md). Present: the
//! submission listeners accept mail for remote recipients and the queue runners send
//! it, to a smarthost or by MX lookup. Absent: nothing leaves the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidegate_store::outbound::ReuseLimits;
use tidegate_store::queue::RetryPolicy;

/// `[relay]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    /// Send everything to this `host:port` instead of looking up MX records.
    #[serde(default)]
    pub smarthost: Option<String>,
    /// The user name for AUTH at the smarthost (with `smarthost_password_file`).
    #[serde(default)]
    pub smarthost_user: Option<String>,
    /// A file holding the smarthost password (its first line).
    #[serde(default)]
    pub smarthost_password_file: Option<PathBuf>,
    /// Allow AUTH to the smarthost without TLS (a smarthost on loopback).
    #[serde(default)]
    pub smarthost_auth_plaintext: bool,
    /// Nameservers (`ip:port`) for MX lookups; default: those of /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// The SMTP port of MX hosts (25; tests point MX lookups at a sink elsewhere).
    #[serde(default = "default_mx_port")]
    pub mx_port: u16,
    /// The most messages queued; beyond it submission answers `451` until it drains.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Delivery threads.
    #[serde(default = "default_runners")]
    pub runners: usize,
    /// STARTTLS policy: `"opportunistic"` (default), `"required"` or `"none"`.
    #[serde(default = "default_tls")]
    pub tls: String,
    /// Destination domains that always require a verified STARTTLS.
    #[serde(default)]
    pub require_tls_domains: Vec<String>,
    /// A PEM file of CA certificates for verifying receiving servers (default: the
    /// built-in web PKI roots).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Seconds before the first retry (doubling per attempt).
    #[serde(default = "default_retry_min")]
    pub retry_min_secs: u64,
    /// The longest wait between retries, in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Seconds after which an undelivered message is bounced.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// Seconds after which the sender is told once that the message is late; 0: never.
    #[serde(default = "default_delay_warning")]
    pub delay_warning_secs: u64,
    /// Seconds to connect to a receiving server.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for each reply (RFC 5321 §4.5.3.2: 5 minutes).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
    /// The most messages sent over one connection to a destination (RFC 5321 §3.3);
    /// 1 opens a connection per message.
    #[serde(default = "default_reuse_messages")]
    pub reuse_messages: usize,
    /// Seconds an idle connection waits for the next message to its destination.
    #[serde(default = "default_reuse_idle")]
    pub reuse_idle_secs: u64,
    /// DKIM signing keys, one per sending domain.
    #[serde(default)]
    pub dkim: Vec<DkimKey>,
}

/// `[[relay.dkim]]`: sign mail from `domain` with `key` under `selector`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    /// The sender domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The PKCS#8 PEM private key (`tidegate dkim generate` writes one).
    pub key: PathBuf,
}

fn default_mx_port() -> u16 {
    25
}
fn default_max_queue() -> usize {
    tidegate_store::queue::DEFAULT_MAX_ENTRIES
}
fn default_runners() -> usize {
    2
}
fn default_tls() -> String {
    "opportunistic".into()
}
fn default_retry_min() -> u64 {
    300
}
fn default_retry_max() -> u64 {
    4 * 3600
}
fn default_max_age() -> u64 {
    5 * 24 * 3600
}
fn default_delay_warning() -> u64 {
    4 * 3600
}
fn default_connect_timeout() -> u64 {
    30
}
fn default_command_timeout() -> u64 {
    300
}
fn default_reuse_messages() -> usize {
    ReuseLimits::default().max_messages
}
fn default_reuse_idle() -> u64 {
    ReuseLimits::default().idle.as_secs()
}

impl Relay {
    /// Checks values serde cannot; each error names its key.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.tls.as_str(), "opportunistic" | "required" | "none") {
            return Err(format!(
                "relay.tls = {:?}: expected \"opportunistic\", \"required\" or \"none\"",
                self.tls
            ));
        }
        if self.runners == 0 || self.runners > 64 {
            return Err("relay.runners must be between 1 and 64".into());
        }
        if self.mx_port == 0 {
            return Err("relay.mx_port must not be 0".into());
        }
        if self.retry_min_secs == 0 {
            return Err("relay.retry_min_secs must be at least 1".into());
        }
        if self.retry_max_secs < self.retry_min_secs {
            return Err("relay.retry_max_secs must be at least relay.retry_min_secs".into());
        }
        if self.reuse_messages == 0 {
            return Err("relay.reuse_messages must be at least 1 (1: no reuse)".into());
        }
        if self.reuse_idle_secs > 300 {
            return Err("relay.reuse_idle_secs must be at most 300".into());
        }
        if self.max_age_secs == 0 {
            return Err("relay.max_age_secs must be at least 1".into());
        }
        if let Some(host) = &self.smarthost
            && host_port(host).is_none()
        {
            return Err(format!(
                "relay.smarthost = {host:?}: expected \"host:port\""
            ));
        }
        if self.smarthost_user.is_some() != self.smarthost_password_file.is_some() {
            return Err(
                "relay.smarthost_user and relay.smarthost_password_file go together".into(),
            );
        }
        if self.smarthost_user.is_some() && self.smarthost.is_none() {
            return Err("relay.smarthost_user needs relay.smarthost".into());
        }
        for key in &self.dkim {
            if key.domain.is_empty() || key.selector.is_empty() {
                return Err("relay.dkim: domain and selector must not be empty".into());
            }
        }
        Ok(())
    }

    /// The retry schedule.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            retry_min: Duration::from_secs(self.retry_min_secs),
            retry_max: Duration::from_secs(self.retry_max_secs),
            max_age: Duration::from_secs(self.max_age_secs),
            delay_warning: Duration::from_secs(self.delay_warning_secs),
        }
    }

    /// How far connections to one destination are reused; the pool holds at most two
    /// idle connections per runner.
    pub fn reuse(&self) -> ReuseLimits {
        ReuseLimits {
            max_messages: self.reuse_messages,
            idle: Duration::from_secs(self.reuse_idle_secs),
            max_idle: self.runners.saturating_mul(2).max(1),
        }
    }

    /// Resolves relative paths against the config file's directory.
    pub fn resolve_paths(&mut self, fix: &impl Fn(&mut PathBuf)) {
        if let Some(file) = self.smarthost_password_file.as_mut() {
            fix(file);
        }
        if let Some(file) = self.tls_ca.as_mut() {
            fix(file);
        }
        for key in &mut self.dkim {
            fix(&mut key.key);
        }
    }
}

/// Splits `host:port` (`[v6]:port` too); `None` without a valid port.
pub fn host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn relay_defaults_and_bad_values_name_their_key() {
        let config = Config::parse("[relay]\n", Path::new("/etc/tg")).unwrap();
        let relay = config.relay.unwrap();
        assert_eq!(relay.runners, 2);
        assert_eq!(relay.tls, "opportunistic");
        assert_eq!(relay.policy().retry_min.as_secs(), 300);
        assert_eq!(relay.policy().max_age.as_secs(), 432_000);
        assert_eq!(relay.reuse().max_messages, 100);
        assert_eq!(relay.reuse().idle.as_secs(), 5);
        let config = Config::parse(
            "[relay]\nsmarthost = \"127.0.0.1:2525\"\n[[relay.dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"dkim.pem\"\n",
            Path::new("/etc/tg"),
        )
        .unwrap();
        let relay = config.relay.unwrap();
        assert_eq!(relay.dkim[0].key, Path::new("/etc/tg/dkim.pem"));
        for (bad, needle) in [
            ("tls = \"maybe\"", "relay.tls"),
            ("runners = 0", "relay.runners"),
            ("reuse_messages = 0", "relay.reuse_messages"),
            ("reuse_idle_secs = 3600", "relay.reuse_idle_secs"),
            ("smarthost = \"nohost\"", "relay.smarthost"),
            ("retry_min_secs = 10\nretry_max_secs = 5", "retry_max_secs"),
            ("smarthost_user = \"u\"", "smarthost_password_file"),
            ("smarthos = \"x:1\"", "smarthos"),
        ] {
            let err = Config::parse(&format!("[relay]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn host_and_port() {
        use super::host_port;
        assert_eq!(host_port("mx.example:25"), Some(("mx.example".into(), 25)));
        assert_eq!(host_port("[::1]:2525"), Some(("::1".into(), 2525)));
        assert_eq!(host_port("x:0"), None);
        assert_eq!(host_port("x"), None);
    }
}
