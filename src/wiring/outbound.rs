//! Outbound delivery (`[relay]`): the queue in the workarea, the runner threads, and
//! the transport they send through.

use std::sync::Arc;
use std::time::Duration;

use tidegate_store::maildir::MaildirStore;
use tidegate_store::queue::bounce::{Bouncer, LocalMail};
use tidegate_store::queue::{
    Attempt, AttemptFailure, Queue, Runner, RunnerConfig, Transport, Verdict,
};
use tidegate_store::users::UserDirectory;

use crate::config::{Config, Relay};

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

/// The transport for `[relay]`.
fn transport(_config: &Config, _relay: &Relay) -> Result<Arc<dyn Transport>, String> {
    Ok(Arc::new(Unavailable))
}

/// Placeholder until the SMTP client lands: every attempt is deferred.
struct Unavailable;

impl Transport for Unavailable {
    fn send(&self, _attempt: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure> {
        Err(AttemptFailure {
            permanent: false,
            text: "outbound transport not available in this build".into(),
        })
    }
}
