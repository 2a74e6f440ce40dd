//! `[proxy]`: front-end mode (design.md §1). The node's POP3, IMAP and submission
//! listeners become front-ends that route each user to a back-end.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Front-end mode on (SurgeMail's `g_proxy`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The back-end of users without `tohost` (SurgeMail's `g_proxy_default`).
    #[serde(default)]
    pub default_host: Option<String>,
    /// Back-end ports per protocol.
    #[serde(default)]
    pub backend_ports: BackendPorts,
    /// TLS towards the back-ends: `"none"`, `"starttls"` or `"tls"`.
    #[serde(default = "default_backend_tls")]
    pub backend_tls: String,
    /// PEM file of the CA that signed the back-ends' certificates (`backend_tls` other
    /// than `"none"`); omitted: the front-end's own certificate is the only trusted one,
    /// which fits a cluster sharing one self-signed certificate.
    #[serde(default)]
    pub backend_ca: Option<std::path::PathBuf>,
    /// How the back-end learns the client address: `"proxy-v2"`, `"xclient"`,
    /// `"imap-id"` or `"none"`.
    #[serde(default = "default_client_address")]
    pub client_address: String,
    /// Local addresses to connect to back-ends from, used in turn (more than 64k
    /// connections to one back-end need several).
    #[serde(default)]
    pub source_addresses: Vec<IpAddr>,
    /// Seconds a back-end that failed is skipped (the circuit breaker).
    #[serde(default = "default_down_secs")]
    pub backend_down_secs: u64,
    /// Seconds to wait for a back-end connection and login.
    #[serde(default = "default_connect_secs")]
    pub connect_timeout_secs: u64,
    /// Proxy hops allowed before a connection is refused as a loop.
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// Sends the POP3/IMAP login to the back-end right behind the PROXY header, before
    /// its greeting, saving a round trip per session; `false` for a back-end that
    /// discards what a client sends before the greeting.
    #[serde(default = "yes")]
    pub pipelined_login: bool,
}

/// `[proxy] backend_ports`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPorts {
    /// Default 110.
    #[serde(default = "pop3_port")]
    pub pop3: u16,
    /// Default 143.
    #[serde(default = "imap_port")]
    pub imap: u16,
    /// Default 587.
    #[serde(default = "submission_port")]
    pub submission: u16,
    /// Default 24.
    #[serde(default = "lmtp_port")]
    pub lmtp: u16,
}

impl Default for BackendPorts {
    fn default() -> Self {
        BackendPorts {
            pop3: pop3_port(),
            imap: imap_port(),
            submission: submission_port(),
            lmtp: lmtp_port(),
        }
    }
}

impl Proxy {
    /// Checks the enumerated values.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.backend_tls.as_str(), "none" | "starttls" | "tls") {
            return Err(format!(
                "proxy.backend_tls = {:?}: expected \"none\", \"starttls\" or \"tls\"",
                self.backend_tls
            ));
        }
        if !matches!(
            self.client_address.as_str(),
            "proxy-v2" | "xclient" | "imap-id" | "none"
        ) {
            return Err(format!(
                "proxy.client_address = {:?}: expected \"proxy-v2\", \"xclient\", \"imap-id\" or \"none\"",
                self.client_address
            ));
        }
        if self.max_hops == 0 {
            return Err("proxy.max_hops must be at least 1".into());
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn default_backend_tls() -> String {
    "none".into()
}
fn default_client_address() -> String {
    "proxy-v2".into()
}
fn default_down_secs() -> u64 {
    30
}
fn default_connect_secs() -> u64 {
    10
}
fn default_max_hops() -> u8 {
    3
}
fn pop3_port() -> u16 {
    110
}
fn imap_port() -> u16 {
    143
}
fn submission_port() -> u16 {
    587
}
fn lmtp_port() -> u16 {
    24
}
