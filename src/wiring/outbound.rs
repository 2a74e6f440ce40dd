//! Outbound delivery (`[relay]`): the queue in the workarea, the runner threads, and
//! the transport they send through.

use std::sync::Arc;
use std::time::Duration;

use tidegate_core::Secret;
use tidegate_store::dkim::DkimSigner;
use tidegate_store::dns::Resolver;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::outbound::{SendOptions, TlsPolicy};
use tidegate_store::queue::bounce::{Bouncer, LocalMail};
use tidegate_store::queue::relay::{RelayTransport, Route, load_roots};
use tidegate_store::queue::{Queue, Runner, RunnerConfig, Transport};
use tidegate_store::users::UserDirectory;

use crate::config::{Config, Relay, host_port};

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
    /// prepares the transport `[relay]` describes.
    pub fn prepare(
        config: &Config,
        relay: &Relay,
        users: Arc<dyn UserDirectory>,
        maildir: MaildirStore,
    ) -> Result<Outbound, String> {
        let dir = config.storage.workarea.join("queue");
        let queue = Queue::open(&dir, config.storage.fsync, &config.hostname)
            .map_err(|e| format!("queue {}: {e}", dir.display()))?
            .with_max_entries(relay.max_queue);
        Ok(Outbound {
            queue: Arc::new(queue),
            transport: transport(config, relay)?,
            bouncer: Bouncer {
                hostname: config.hostname.clone(),
                local: Some(LocalMail { users, maildir }),
            },
            config: RunnerConfig {
                runners: relay.runners,
                policy: relay.policy(),
                idle_poll: Duration::from_secs(30),
                stop_grace: Duration::from_secs(10),
            },
        })
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
    }))
}
