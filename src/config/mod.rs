//! The config file (TOML, the contract in docs/config.md): parsing, defaults and
//! validation. Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tidegate_core::net::{Cidr, PlaintextAuth};

mod authd;
mod hidden;
mod metrics;
mod proxy;
mod relay;
mod users;

#[cfg(test)]
mod prop_tests;

pub use authd::Authd;
pub use hidden::Hidden;
pub use metrics::Metrics;
pub use proxy::Proxy;
pub use relay::{Relay, host_port};
pub use users::Users;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name in greetings and Received: headers.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Where mail and node-local files live.
    #[serde(default)]
    pub storage: Storage,
    /// Where users are looked up.
    #[serde(default)]
    pub users: Users,
    /// POP3 listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pop3: Option<Pop3>,
    /// IMAP listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imap: Option<Imap>,
    /// SMTP listeners: inbound (MX) and submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// LMTP listeners (delivery from trusted front-ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmtp: Option<Lmtp>,
    /// TLS certificate and the plaintext-login policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Networks trusted for plaintext login and client-address forwarding.
    #[serde(default)]
    pub trust: Trust,
    /// Serve this node's user database to other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authd: Option<Authd>,
    /// Front-end (proxy) mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Proxy>,
    /// Outbound delivery through the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<Relay>,
    /// The control socket and automatic reload.
    #[serde(default)]
    pub control: Control,
    /// Process settings.
    #[serde(default)]
    pub server: Server,
    /// The Prometheus text endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Maildir root, possibly shared by several hosts.
    #[serde(default = "default_mailbox_path")]
    pub mailbox_path: PathBuf,
    /// Node-local files: generated TLS certificate, control socket.
    #[serde(default = "default_workarea")]
    pub workarea: PathBuf,
    /// fsync message files and directories before acknowledging a delivery.
    #[serde(default = "yes")]
    pub fsync: bool,
}

/// `[pop3]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3 {
    /// Plain listeners (STLS offered when a certificate exists).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (port 995 style).
    #[serde(default)]
    pub listen_tls: Vec<SocketAddr>,
    /// Cluster-wide POP3 lock: one POP3 session per mailbox across every host sharing
    /// the maildir root (SurgeMail's `g_pop_lock`).
    #[serde(default)]
    pub lock: bool,
    /// Seconds after which the lock of a crashed host expires.
    #[serde(default = "default_lock_stale")]
    pub lock_stale_secs: u64,
    /// Autologout in seconds (RFC 1939 §3: at least 600).
    #[serde(default = "default_pop3_idle")]
    pub idle_timeout_secs: u64,
    /// Seconds a client may stay connected without logging in.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Delay before a failed login is answered, in milliseconds.
    #[serde(default = "default_auth_delay")]
    pub auth_failure_delay_ms: u64,
}

/// `[imap]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Imap {
    /// Plain listeners (STARTTLS offered).
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners (port 993 style).
    #[serde(default)]
    pub listen_tls: Vec<SocketAddr>,
    /// Autologout in seconds (RFC 3501 §5.4: at least 30 minutes).
    #[serde(default = "default_imap_idle")]
    pub idle_timeout_secs: u64,
    /// Seconds a client may stay connected without logging in.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Delay before a failed login is answered, in milliseconds.
    #[serde(default = "default_auth_delay")]
    pub auth_failure_delay_ms: u64,
    /// The largest APPEND accepted, in bytes.
    #[serde(default = "default_max_append")]
    pub max_append_size: u32,
    /// Seconds between rescans of the selected mailbox while a client IDLEs.
    #[serde(default = "default_idle_poll")]
    pub idle_poll_secs: u64,
    /// Folders whose snapshots are kept between sessions and reused while the folder
    /// is unchanged (0: none; needed for NFS mounts with `nocto`).
    #[serde(default = "default_folder_cache")]
    pub folder_cache: usize,
}

/// `[smtp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// Inbound listeners (port 25 style): mail for local recipients only, no AUTH.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Submission listeners (port 587 style): AUTH required before MAIL.
    #[serde(default)]
    pub submission: Vec<SocketAddr>,
    /// Largest message accepted, in bytes (advertised as SIZE, RFC 1870).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Delay before the first failed AUTH is answered (doubles per failure), in ms.
    #[serde(default = "default_smtp_auth_delay")]
    pub auth_failure_delay_ms: u64,
    /// Seconds a client may stay connected before it logs in (submission: AUTH) or
    /// starts its first mail transaction (inbound: MAIL).
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
}

/// `[lmtp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lmtp {
    /// LMTP listeners; only loopback and `[trust] networks` clients are served.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Seconds a client may stay connected before it starts its first mail transaction
    /// (MAIL).
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain; with `key`. Both omitted: a self-signed one is generated.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// `"never"`, `"trusted"` (default) or `"always"`.
    #[serde(default = "default_plaintext_auth")]
    pub plaintext_auth: String,
}

/// `[trust]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// CIDR networks.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Peers in `networks` start every connection with a PROXY v1/v2 header naming the
    /// real client (front-ends with `client_address = "proxy-v2"`, load balancers);
    /// other peers are served directly.
    #[serde(default)]
    pub proxy_protocol: bool,
}

/// `[control]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The control socket for `tidegate ctl`; default `<workarea>/control.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Reload when the config file or the users file changes.
    #[serde(default)]
    pub watch: bool,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Started as root: drop to this user after binding the ports and creating the
    /// control socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The group to drop to; default the primary group of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Started as root without `user`: serve as root anyway instead of refusing.
    #[serde(default)]
    pub allow_root: bool,
    /// Event loops / executor threads; 0 = one per core.
    #[serde(default)]
    pub threads: usize,
    /// Threads for blocking store work (mio shell); 0 = four per core.
    #[serde(default)]
    pub workers: usize,
    /// Open connections above which new clients are told to come back later.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections one client address (IPv6: one /64) may hold; more get the busy
    /// reply. Addresses in `[trust] networks` are exempt. 0 = no cap.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Seconds open sessions get to finish after SIGTERM/SIGINT.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_hostname() -> String {
    "localhost".into()
}
fn default_mailbox_path() -> PathBuf {
    "data/mail".into()
}
fn default_workarea() -> PathBuf {
    "data/work".into()
}
fn default_pop3_idle() -> u64 {
    600
}
fn default_login_timeout() -> u64 {
    60
}
fn default_auth_delay() -> u64 {
    2000
}
fn default_idle_poll() -> u64 {
    5
}
fn default_folder_cache() -> usize {
    tidegate_store::imap::DEFAULT_CACHED_FOLDERS
}
fn default_max_append() -> u32 {
    50 * 1024 * 1024
}
fn default_lock_stale() -> u64 {
    300
}
fn default_imap_idle() -> u64 {
    30 * 60
}
fn default_max_message_size() -> u64 {
    50 * 1024 * 1024
}
fn default_smtp_auth_delay() -> u64 {
    1000
}
fn default_plaintext_auth() -> String {
    "trusted".into()
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> u32 {
    100
}
fn default_grace() -> u64 {
    10
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            mailbox_path: default_mailbox_path(),
            workarea: default_workarea(),
            fsync: true,
        }
    }
}

impl Default for Server {
    fn default() -> Self {
        Server {
            user: None,
            group: None,
            allow_root: false,
            threads: 0,
            workers: 0,
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            shutdown_grace_secs: default_grace(),
        }
    }
}

/// Sections of the contract that later versions implement; naming one is an error
/// rather than a silently ignored listener.
const NOT_YET: &[&str] = &[];

impl Config {
    /// Parses and validates config text. Relative paths are resolved against `base`
    /// (the directory of the config file).
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        if let Some(section) = NOT_YET.iter().find(|s| table.contains_key(**s)) {
            return Err(format!(
                "[{section}] is part of the config contract but not implemented in this version of tidegate"
            ));
        }
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.storage.mailbox_path);
        fix(&mut self.storage.workarea);
        fix(&mut self.users.file);
        self.users.authd.resolve_paths(&fix);
        if let Some(file) = self.authd.as_mut().and_then(|a| a.secret_file.as_mut()) {
            fix(file);
        }
        if let Some(ca) = self.users.ldap.as_mut().and_then(|l| l.ca_file.as_mut()) {
            fix(ca);
        }
        if let Some(socket) = self.control.socket.as_mut() {
            fix(socket);
        }
        if let Some(ca) = self.proxy.as_mut().and_then(|p| p.backend_ca.as_mut()) {
            fix(ca);
        }
        if let Some(relay) = self.relay.as_mut() {
            relay.resolve_paths(&fix);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.cert.as_mut().map(fix);
            tls.key.as_mut().map(fix);
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.users.validate()?;
        if let Some(authd) = &self.authd {
            authd.secret()?;
        }
        if self
            .imap
            .as_ref()
            .is_some_and(|imap| imap.idle_timeout_secs < 30 * 60)
        {
            return Err(
                "imap.idle_timeout_secs must be at least 1800 (RFC 3501 section 5.4)".into(),
            );
        }
        let login_timeouts = [
            ("pop3", self.pop3.as_ref().map(|p| p.login_timeout_secs)),
            ("imap", self.imap.as_ref().map(|i| i.login_timeout_secs)),
            ("smtp", self.smtp.as_ref().map(|s| s.login_timeout_secs)),
            ("lmtp", self.lmtp.as_ref().map(|l| l.login_timeout_secs)),
        ];
        if let Some((section, _)) = login_timeouts.iter().find(|(_, t)| *t == Some(0)) {
            return Err(format!("{section}.login_timeout_secs must be at least 1"));
        }
        if let Some(pop3) = &self.pop3 {
            if pop3.lock && pop3.lock_stale_secs < 10 {
                return Err("pop3.lock_stale_secs must be at least 10".into());
            }
            if pop3.idle_timeout_secs < 600 {
                return Err(
                    "pop3.idle_timeout_secs must be at least 600 (RFC 1939 section 3)".into(),
                );
            }
        }
        if let Some(tls) = self
            .tls
            .as_ref()
            .filter(|t| t.cert.is_some() != t.key.is_some())
        {
            return Err(format!(
                "tls.cert and tls.key go together (only {} is set)",
                if tls.cert.is_some() { "cert" } else { "key" }
            ));
        }
        if self
            .smtp
            .as_ref()
            .is_some_and(|s| s.max_message_size < 1024)
        {
            return Err("smtp.max_message_size must be at least 1024 bytes".into());
        }
        self.plaintext_auth()?;
        if let Some(proxy) = &self.proxy {
            proxy.validate()?;
        }
        if let Some(relay) = &self.relay {
            relay.validate()?;
        }
        if self.server.group.is_some() && self.server.user.is_none() {
            return Err("server.group needs server.user (the account to drop root to)".into());
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
        }
        Ok(())
    }

    /// The control socket's path.
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.workarea.join("control.sock"))
    }

    /// The trusted networks, parsed.
    pub fn trusted_networks(&self) -> Result<Vec<Cidr>, String> {
        self.trust
            .networks
            .iter()
            .map(|n| {
                n.parse::<Cidr>()
                    .map_err(|e| format!("trust.networks: {e}"))
            })
            .collect()
    }

    /// The plaintext-login policy from `[tls] plaintext_auth` and `[trust] networks`.
    pub fn plaintext_auth(&self) -> Result<PlaintextAuth, String> {
        let policy = self
            .tls
            .as_ref()
            .map_or("trusted", |t| t.plaintext_auth.as_str());
        match policy {
            "never" => Ok(PlaintextAuth::Never),
            "always" => Ok(PlaintextAuth::Always),
            "trusted" => Ok(PlaintextAuth::Trusted(self.trusted_networks()?)),
            other => Err(format!(
                "tls.plaintext_auth = {other:?}: expected \"never\", \"trusted\" or \"always\""
            )),
        }
    }

    /// The effective config as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let config = Config::parse(
            "[pop3]\nlisten = [\"127.0.0.1:1110\"]\n",
            Path::new("/etc/tg"),
        )
        .unwrap();
        assert_eq!(
            config.storage.mailbox_path,
            PathBuf::from("/etc/tg/data/mail")
        );
        assert_eq!(config.users.file, PathBuf::from("/etc/tg/data/users"));
        assert_eq!(
            config.pop3.unwrap().listen,
            vec!["127.0.0.1:1110".parse().unwrap()]
        );
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.server.max_connections_per_ip, 100);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[pop3]\nlisten = []\nlistn = []\n", Path::new(".")).unwrap_err();
        assert!(err.contains("listn"), "{err}");
        let err = Config::parse("hostnme = \"x\"\n", Path::new(".")).unwrap_err();
        assert!(err.contains("hostnme"), "{err}");
    }

    #[test]
    fn unimplemented_sections_and_bad_values_are_refused() {
        let metrics = Config::parse("[metrics]\nlisten = \"127.0.0.1:9425\"\n", Path::new("."));
        assert_eq!(
            metrics.unwrap().metrics.map(|m| m.listen),
            Some("127.0.0.1:9425".parse().unwrap())
        );
        assert!(Config::parse("[metrics]\nlisten = \"nowhere\"\n", Path::new(".")).is_err());
        assert!(
            Config::parse(
                "[metrics]\nlisten = \"127.0.0.1:1\"\npath = \"/m\"\n",
                Path::new(".")
            )
            .is_err()
        );
        assert!(
            Config::parse("[pop3]\nlock = true\nlock_stale_secs = 1\n", Path::new("."))
                .unwrap_err()
                .contains("lock_stale_secs")
        );
        assert!(Config::parse("[tls]\nplaintext_auth = \"maybe\"\n", Path::new(".")).is_err());
        assert!(Config::parse("[trust]\nnetworks = [\"10.0.0.0/99\"]\n", Path::new(".")).is_err());
        assert!(Config::parse("[tls]\ncert = \"c.pem\"\n", Path::new(".")).is_err());
        assert!(Config::parse("[pop3]\nidle_timeout_secs = 5\n", Path::new(".")).is_err());
        for section in ["pop3", "imap", "smtp", "lmtp"] {
            let text = format!("[{section}]\nlogin_timeout_secs = 0\n");
            let err = Config::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                err.contains(&format!("{section}.login_timeout_secs")),
                "{err}"
            );
        }
    }

    #[test]
    fn smtp_and_lmtp_login_timeouts_default_to_60_seconds() {
        let config = Config::parse("[smtp]\n[lmtp]\n", Path::new(".")).unwrap();
        assert_eq!(config.smtp.unwrap().login_timeout_secs, 60);
        assert_eq!(config.lmtp.unwrap().login_timeout_secs, 60);
        let config = Config::parse("[smtp]\nlogin_timeout_secs = 7\n", Path::new(".")).unwrap();
        assert_eq!(config.smtp.unwrap().login_timeout_secs, 7);
    }

    #[test]
    fn proxy_section_gets_defaults_and_checks_its_values() {
        let config = Config::parse(
            "[proxy]\ndefault_host = \"127.0.0.2\"\nbackend_ports = { pop3 = 1110 }\n",
            Path::new("."),
        )
        .unwrap();
        let proxy = config.proxy.unwrap();
        assert!(proxy.enabled);
        assert_eq!(proxy.default_host.as_deref(), Some("127.0.0.2"));
        assert_eq!(proxy.backend_ports.pop3, 1110);
        assert_eq!(proxy.backend_ports.imap, 143);
        assert_eq!(proxy.client_address, "proxy-v2");
        for bad in [
            "backend_tls = \"maybe\"",
            "client_address = \"header\"",
            "max_hops = 0",
            "backend_port = {}",
        ] {
            let err = Config::parse(&format!("[proxy]\n{bad}\n"), Path::new(".")).unwrap_err();
            assert!(err.contains(bad.split(' ').next().unwrap()), "{bad}: {err}");
        }
    }

    #[test]
    fn ldap_users_are_a_sub_table_checked_at_load() {
        let config = Config::parse(
            "[users]\nbackend = \"ldap\"\n[users.ldap]\nurl = \"ldap://127.0.0.1:3389\"\nbase = \"dc=example,dc=com\"\ntohost_attribute = \"mailHost\"\nfields = { quota = \"mailQuota\" }\n",
            Path::new("/etc/tg"),
        )
        .unwrap();
        let ldap = config.users.ldap.unwrap().to_store().unwrap();
        assert_eq!(ldap.filter, "(mail=%u)");
        assert_eq!(ldap.tohost_attribute.as_deref(), Some("mailHost"));
        assert_eq!(ldap.fields, [("quota".to_owned(), "mailQuota".to_owned())]);
        for (bad, needle) in [
            ("[users]\nbackend = \"ldap\"\n", "[users.ldap]"),
            ("[users]\nbackend = \"nis\"\n", "nis"),
            (
                "[users]\nbackend = \"ldap\"\n[users.ldap]\nurl = \"http://x\"\nbase = \"dc=x\"\n",
                "url",
            ),
            (
                "[users]\nbackend = \"ldap\"\n[users.ldap]\nurl = \"ldap://x\"\nbase = \"dc=x\"\nauth = \"guess\"\n",
                "guess",
            ),
        ] {
            let err = Config::parse(bad, Path::new(".")).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_the_printed_config() {
        let config = Config::parse(
            "[authd]\nlisten = \"127.0.0.1:2400\"\nsecret = \"authd-s3cret-one\"\n\
             [users]\nbackend = \"ldap\"\nauthd_secret = \"authd-s3cret-two\"\n\
             [users.ldap]\nurl = \"ldap://127.0.0.1:3389\"\nbase = \"dc=x\"\n\
             bind_dn = \"cn=reader\"\nbind_password = \"ldap-bind-s3cret\"\n",
            Path::new("."),
        )
        .unwrap();
        let debug = format!("{config:?} {config:#?}");
        let printed = config.to_toml();
        for secret in ["authd-s3cret-one", "authd-s3cret-two", "ldap-bind-s3cret"] {
            assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
            assert!(!printed.contains(secret), "check-config shows {secret}");
        }
        assert!(debug.contains("<hidden>"));
        // The secrets still reach the code that needs them.
        assert_eq!(
            config.authd.unwrap().secret().unwrap().expose(),
            b"authd-s3cret-one"
        );
        let ldap = config.users.ldap.unwrap().to_store().unwrap();
        assert_eq!(ldap.bind_password, "ldap-bind-s3cret");
    }
}
