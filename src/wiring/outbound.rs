//! The node's queue: outbound delivery (`[relay]`) and, on a proxy front-end with an
//! inbound SMTP listener, relaying to the back-ends over LMTP. The queue in the
//! workarea, the runner threads, and the transport they send through.

use std::sync::Arc;
use std::time::Duration;

use tidegate_core::Secret;
use tidegate_core::proxy::haproxy;
use tidegate_store::dkim::DkimSigner;
use tidegate_store::dns::Resolver;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::outbound::{ConnectionPool, SendOptions, TlsPolicy};
use tidegate_store::queue::bounce::{Bouncer, LocalMail};
use tidegate_store::queue::lmtp::{Dispatch, LmtpTransport};
use tidegate_store::queue::relay::{RelayTransport, Route, load_roots};
use tidegate_store::queue::{Queue, Runner, RunnerConfig, Transport};
use tidegate_store::router::Router;
use tidegate_store::users::UserDirectory;

use crate::config::{Config, Proxy, Relay, host_port};

/// The queue and everything needed to start its runners.
pub struct Outbound {
    /// The queue (shared with the store and `ctl queue`).
    pub queue: Arc<Queue>,
    transport: Arc<dyn Transport>,
    bouncer: Bouncer,
    config: RunnerConfig,
}

impl Outbound {
    /// Opens the queue (`<workarea>/queue`, loading what a previous run left) and
    /// prepares the transport: `[relay]` for remote recipients, LMTP to the back-ends
    /// when `router` is set (proxy mode). `None` when the node needs no queue (neither
    /// `[relay]` nor a proxy front-end receiving inbound SMTP).
    pub fn prepare(
        config: &Config,
        router: Option<Arc<Router>>,
        users: Arc<dyn UserDirectory>,
        maildir: MaildirStore,
    ) -> Result<Option<Outbound>, String> {
        let proxy = config
            .proxy
            .as_ref()
            .filter(|p| p.enabled && router.is_some())
            .filter(|_| config.smtp.as_ref().is_some_and(|s| !s.listen.is_empty()));
        if config.relay.is_none() && proxy.is_none() {
            return Ok(None);
        }
        // Without `[relay]` the queue keeps its defaults (retry, expiry, runners).
        let defaults;
        let settings = match &config.relay {
            Some(relay) => relay,
            None => {
                defaults = toml::from_str::<Relay>("").map_err(|e| e.to_string())?;
                &defaults
            }
        };
        let dir = config.storage.workarea.join("queue");
        let queue = Queue::open(&dir, config.storage.fsync, &config.hostname)
            .map_err(|e| format!("queue {}: {e}", dir.display()))?
            .with_max_entries(settings.max_queue);
        let relay = match &config.relay {
            Some(relay) => Some(transport(config, relay)?),
            None => None,
        };
        let backends = match (proxy, &router) {
            (Some(proxy), Some(router)) => Some(lmtp_transport(config, proxy, router, settings)?),
            _ => None,
        };
        Ok(Some(Outbound {
            queue: Arc::new(queue),
            transport: Arc::new(Dispatch { backends, relay }),
            bouncer: Bouncer {
                hostname: config.hostname.clone(),
                local: Some(LocalMail { users, maildir }),
                router: proxy.and(router),
            },
            config: RunnerConfig {
                runners: settings.runners,
                policy: settings.policy(),
                idle_poll: Duration::from_secs(30),
                stop_grace: Duration::from_secs(10),
            },
        }))
    }

    /// Starts the runner threads.
    pub fn start(self) -> Result<Runner, String> {
        log::info!(
            "outbound queue {}: {} messages, {} runners",
            self.queue.dir().display(),
            self.queue.len(),
            self.config.runners
        );
        Runner::start(self.queue, self.transport, self.bouncer, self.config)
            .map_err(|e| format!("cannot start the queue runners: {e}"))
    }
}

/// Proxy mode: LMTP to `host:backend_ports.lmtp` with `[proxy] backend_tls` (required
/// STARTTLS verified against the back-end CA), from `source_addresses`, with a
/// PROXY v2 header under `client_address = "proxy-v2"`, XCLIENT naming each message's
/// original SMTP client under `client_address = "xclient"`, and the queue's timeouts.
fn lmtp_transport(
    config: &Config,
    proxy: &Proxy,
    router: &Router,
    settings: &Relay,
) -> Result<LmtpTransport, String> {
    let mut options = SendOptions::new(config.hostname.clone());
    options.lmtp = true;
    options.connect_timeout = Duration::from_secs(proxy.connect_timeout_secs);
    options.command_timeout = Duration::from_secs(settings.command_timeout_secs);
    options.data_timeout = Duration::from_secs(settings.command_timeout_secs.saturating_mul(2));
    // From the addresses the back-ends trust (their LMTP listener serves only trusted
    // peers), and with the PROXY header they then expect from this node: a LOCAL one,
    // since the connection is the front-end's own (the client that sent the message is
    // in the front-end's Received field).
    options.source_addrs = proxy.source_addresses.clone();
    if proxy.client_address == "proxy-v2" {
        options.preamble = haproxy::encode_v2(&haproxy::ProxyHeader::default());
    }
    match proxy.backend_tls.as_str() {
        // LMTP has no implicit-TLS port (tidegate's `[lmtp]` listener offers STARTTLS):
        // under "tls" the LMTP leg is STARTTLS, required and verified the same way.
        "starttls" | "tls" => {
            options.tls = TlsPolicy::Required;
            options.tls_config = Some(super::proxy::backend_client_tls(config, proxy)?);
        }
        _ => options.tls = TlsPolicy::Disabled,
    }
    Ok(LmtpTransport {
        port: router.lmtp_port(),
        options,
        pool: ConnectionPool::new(settings.reuse()),
        xclient: proxy.client_address == "xclient",
    })
}

/// The transport for `[relay]`: smarthost or MX, TLS policy, AUTH, DKIM keys.
fn transport(config: &Config, relay: &Relay) -> Result<Arc<dyn Transport>, String> {
    let mut options = SendOptions::new(config.hostname.clone());
    options.tls = match relay.tls.as_str() {
        "required" => TlsPolicy::Required,
        "none" => TlsPolicy::Disabled,
        _ => TlsPolicy::Opportunistic,
    };
    options.roots =
        load_roots(relay.tls_ca.as_deref()).map_err(|e| format!("relay.tls_ca: {e}"))?;
    options.connect_timeout = Duration::from_secs(relay.connect_timeout_secs);
    options.command_timeout = Duration::from_secs(relay.command_timeout_secs);
    options.data_timeout = Duration::from_secs(relay.command_timeout_secs.saturating_mul(2));
    if let (Some(user), Some(file)) = (&relay.smarthost_user, &relay.smarthost_password_file) {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("relay.smarthost_password_file {}: {e}", file.display()))?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        options.auth = Some((user.clone(), Secret::new(password.into_bytes())));
        options.auth_plaintext = relay.smarthost_auth_plaintext;
    }
    let route = match &relay.smarthost {
        Some(text) => {
            let (host, port) = host_port(text)
                .ok_or_else(|| format!("relay.smarthost = {text:?}: expected \"host:port\""))?;
            Route::Smarthost { host, port }
        }
        None => {
            let timeout = Duration::from_secs(5);
            let resolver = if relay.nameservers.is_empty() {
                Resolver::from_system(timeout)
                    .map_err(|e| format!("the system's nameservers: {e}"))?
            } else {
                Resolver::new(relay.nameservers.clone(), timeout)
            };
            Route::Mx {
                resolver,
                port: relay.mx_port,
            }
        }
    };
    let signers = relay
        .dkim
        .iter()
        .map(|key| {
            DkimSigner::load(&key.domain, &key.selector, &key.key)
                .map_err(|e| format!("relay.dkim {}: {e}", key.domain))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(RelayTransport {
        route,
        options,
        require_tls_domains: relay
            .require_tls_domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        signers,
        pool: ConnectionPool::new(relay.reuse()),
    }))
}
