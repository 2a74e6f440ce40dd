//! SMTP/LMTP requests: recipient checks and streaming delivery into the maildirs.

use tidegate_core::user::Lookup;
use tidegate_core::{
    Account, BackendRecipient, DeliveryId, Failure, RecipientCheck, RelayEnvelope, Reply,
};

use super::{DIRECTORY_TEXT, LocalStore, TEMPORARY_TEXT, failure, to_failure};
use crate::maildir::{PendingMessage, Recipient};
use crate::metrics::DeliveryResult;
use crate::queue::{NewEntry, unix_now};
use crate::router::{MailRoute, Router};
use crate::users::normalize_address;

impl LocalStore {
    /// `RCPT TO`: a local user (also a `nologin` one: it still receives mail), a local
    /// domain without such a user, a foreign domain, or a mailbox already full (usage
    /// plus the declared `SIZE=`, or plus one octet without it, above `quota=`). An
    /// unreachable user database is a temporary failure.
    pub(super) fn check_recipient(&self, address: &str, size_hint: Option<u64>) -> Reply {
        self.check_recipient_via(address, size_hint, None)
    }

    /// `RCPT TO` on a proxy front-end: like [`LocalStore::check_recipient`], except that
    /// a user whose mailbox is on a back-end ([`Router::mail_route`]) is
    /// [`RecipientCheck::Backend`] (no quota check: the back-end makes it at delivery),
    /// and a user no node is named for is a temporary failure (the sender retries while
    /// the operator fixes `tohost` or `default_host`).
    pub fn check_recipient_routed(
        &self,
        address: &str,
        size_hint: Option<u64>,
        router: &Router,
    ) -> Reply {
        self.check_recipient_via(address, size_hint, Some(router))
    }

    fn check_recipient_via(
        &self,
        address: &str,
        size_hint: Option<u64>,
        router: Option<&Router>,
    ) -> Reply {
        let address = normalize_address(address);
        let lookup = self.users.lookup(&address);
        match decide_recipient(&address, lookup, router) {
            Decision::Answer(reply) => reply,
            Decision::CheckQuota { account, quota } => {
                self.check_quota(&address, account, quota, size_hint)
            }
        }
    }

    /// `RCPT TO` answered from memory on the calling thread (an event loop), or `None`
    /// when that needs I/O: a user directory that is not in memory, or a recipient with
    /// a `quota=` (its usage is a scan of the maildir). Same answers as
    /// [`LocalStore::check_recipient`] (`router`: [`LocalStore::check_recipient_routed`]).
    pub(super) fn check_recipient_inline(
        &self,
        address: &str,
        router: Option<&Router>,
    ) -> Option<Reply> {
        let address = normalize_address(address);
        let lookup = self.users.lookup_in_memory(&address)?;
        match decide_recipient(&address, lookup, router) {
            Decision::Answer(reply) => Some(reply),
            Decision::CheckQuota { .. } => None,
        }
    }

    /// A local recipient with a quota: usage plus the declared `SIZE=` (or one octet
    /// without it) must fit.
    fn check_quota(
        &self,
        address: &str,
        account: Account,
        quota: u64,
        size_hint: Option<u64>,
    ) -> Reply {
        let size = size_hint.unwrap_or(0).max(1);
        match self.maildir.usage(&account) {
            Ok(usage) if usage.saturating_add(size) > quota => {
                log::info!("recipient {address}: over quota ({usage} of {quota} octets used)");
                Reply::Recipient(RecipientCheck::OverQuota)
            }
            Ok(_) => Reply::Recipient(RecipientCheck::Local(account)),
            Err(e) => failure(&account.0, "quota check", e),
        }
    }

    /// Opens a spool file and writes the trace header. Abandoned deliveries are swept
    /// first; beyond the pending bound the answer is a temporary failure.
    pub(super) fn begin_delivery(&self, header: &[u8]) -> Reply {
        for (id, message) in self.deliveries.expired() {
            log::warn!(
                "delivery {} abandoned ({} octets received); discarding it",
                id.0,
                message.size()
            );
            message.abort();
        }
        let Some(id) = self.deliveries.reserve() else {
            log::warn!("too many messages being received; refusing another for now");
            return Reply::Failed(Failure::Temporary("too many messages in progress".into()));
        };
        let opened = self.maildir.begin().and_then(|mut message| {
            message.append(header)?;
            Ok(message)
        });
        match opened {
            Ok(message) => {
                self.put_back(id, message);
                Reply::DeliveryStarted(id)
            }
            Err(e) => {
                let _ = self.deliveries.remove(id);
                failure("a new message", "begin delivery", e)
            }
        }
    }

    /// Appends to a message; the map lock is not held while writing.
    pub(super) fn append_delivery(&self, id: DeliveryId, bytes: &[u8]) -> Reply {
        let held = match self.deliveries.take(id) {
            Ok(held) => held,
            Err(missing) => {
                log::error!("append to {missing:?} delivery {}", id.0);
                return Reply::Failed(Failure::Permanent("no such message in progress".into()));
            }
        };
        let mut message = match held.into_file(&self.maildir, None) {
            Ok(message) => message,
            Err(e) => {
                // Nothing to keep: the session aborts the message after this failure.
                let _ = self.deliveries.remove(id);
                return failure(&format!("delivery {}", id.0), "begin delivery", e);
            }
        };
        let appended = message.append(bytes);
        self.put_back(id, message);
        match appended {
            Ok(()) => Reply::Done,
            Err(e) => failure(&format!("delivery {}", id.0), "append", e),
        }
    }

    /// Commits a message to its recipients, with their current quotas.
    pub(super) fn commit_delivery(
        &self,
        id: DeliveryId,
        recipients: Vec<Account>,
        all_or_nothing: bool,
    ) -> Reply {
        let held = match self.deliveries.remove(id) {
            Ok(held) => held,
            Err(missing) => {
                // Answered as temporary: the client keeps the message and retries.
                log::error!("commit of {missing:?} delivery {}", id.0);
                return Reply::Failed(Failure::Temporary(TEMPORARY_TEXT.into()));
            }
        };
        let message = match held.into_file(&self.maildir, recipients.first()) {
            Ok(message) => message,
            Err(e) => {
                let failure = to_failure(&format!("delivery {}", id.0), "begin delivery", e);
                return Reply::Delivered(recipients.iter().map(|_| Err(failure.clone())).collect());
            }
        };
        let recipients = self.with_quotas(recipients);
        Reply::Delivered(self.commit_to(message, &recipients, all_or_nothing))
    }

    /// The recipients of a commit with their current quotas.
    fn with_quotas(&self, recipients: Vec<Account>) -> Vec<Recipient> {
        recipients
            .into_iter()
            .map(|account| {
                let quota = match self.users.lookup(&account.0) {
                    Lookup::Found(record) => record.quota(),
                    Lookup::TempFail(reason) => {
                        // RCPT already checked the quota; deliver rather than bounce.
                        log::warn!("quota of {}: user database: {reason}", account.0);
                        None
                    }
                    Lookup::NotFound | Lookup::UnknownDomain => None,
                };
                Recipient { account, quota }
            })
            .collect()
    }

    /// Commits a message to local recipients; one result per recipient.
    fn commit_to(
        &self,
        message: PendingMessage,
        recipients: &[Recipient],
        all_or_nothing: bool,
    ) -> Vec<Result<(), Failure>> {
        let name = message.final_name();
        let size = message.size();
        let results = message.commit(recipients, all_or_nothing);
        let metrics = crate::metrics::global();
        let mut delivered = Vec::new();
        let replies = results
            .into_iter()
            .zip(recipients)
            .map(|(result, recipient)| match result {
                Ok(()) => {
                    metrics.delivery(DeliveryResult::Delivered);
                    metrics.delivered_bytes(size);
                    delivered.push(recipient.account.0.as_str());
                    Ok(())
                }
                Err(e) => {
                    metrics.delivery(DeliveryResult::Failed);
                    Err(to_failure(&recipient.account.0, "delivery", e))
                }
            })
            .collect();
        if !delivered.is_empty() {
            log::info!("delivered {name} to {}", delivered.join(", "));
        }
        replies
    }

    /// A submission with remote recipients, or inbound mail with recipients on back-ends
    /// (proxy mode): the queue copy is written and fsynced
    /// first, then the local recipients get theirs (all or nothing); only when both
    /// worked is the queue copy released to the runners. Otherwise the queue copy is
    /// removed and every result is a failure, so nothing is left visible.
    pub(super) fn commit_submission(
        &self,
        id: DeliveryId,
        local: Vec<Account>,
        relay: RelayEnvelope,
    ) -> Reply {
        let slots = local.len() + 1;
        let temporary = || Failure::Temporary(TEMPORARY_TEXT.into());
        let all_failed = || Reply::Delivered((0..slots).map(|_| Err(temporary())).collect());
        let held = match self.deliveries.remove(id) {
            Ok(held) => held,
            Err(missing) => {
                log::error!("commit of {missing:?} delivery {}", id.0);
                return Reply::Failed(temporary());
            }
        };
        let mut message = match held.into_file(&self.maildir, local.first()) {
            Ok(message) => message,
            Err(e) => {
                let _ = to_failure(&format!("delivery {}", id.0), "begin delivery", e);
                return all_failed();
            }
        };
        let Some(queue) = self.queue.clone() else {
            log::error!("a message for remote recipients or back-ends, but this node has no queue");
            message.abort();
            return Reply::Failed(Failure::Permanent("relaying is not configured".into()));
        };
        let queued = message
            .flush()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|()| std::fs::File::open(message.temp_path()))
            .and_then(|file| {
                let new = NewEntry {
                    client: relay.client.clone(),
                    sender: relay.sender.clone(),
                    recipients: relay.recipients.clone(),
                    eight_bit: relay.eight_bit,
                    smtputf8: relay.smtputf8,
                    backends: relay
                        .backends
                        .iter()
                        .map(|b| (b.account.0.clone(), b.host.clone()))
                        .collect(),
                };
                queue.enqueue(new, file, unix_now())
            });
        let queue_id = match queued {
            Ok(queue_id) => queue_id,
            Err(e) => {
                log::error!("queueing a message from {}: {e}", relay.sender);
                message.abort();
                return all_failed();
            }
        };
        let mut results = if local.is_empty() {
            message.abort();
            Vec::new()
        } else {
            let recipients = self.with_quotas(local);
            self.commit_to(message, &recipients, true)
        };
        if results.iter().all(Result::is_ok) {
            queue.release(&queue_id);
            let backends = relay
                .backends
                .iter()
                .map(|b| format!("{} (on {})", b.account.0, b.host));
            let all: Vec<String> = relay.recipients.iter().cloned().chain(backends).collect();
            log::info!(
                "queued {queue_id} from {} for {}",
                relay.sender,
                all.join(", ")
            );
            results.push(Ok(()));
        } else {
            queue.discard(&queue_id);
            results.push(Err(Failure::Temporary(
                "not queued: local delivery failed".into(),
            )));
        }
        Reply::Delivered(results)
    }

    /// Returns a message to its slot, or aborts it if the delivery was aborted meanwhile.
    fn put_back(&self, id: DeliveryId, message: PendingMessage) {
        if let Some(message) = self.deliveries.put_back(id, message) {
            message.abort();
        }
    }
}

/// What a recipient's directory entry decides, before any look at its mailbox.
enum Decision {
    /// The answer.
    Answer(Reply),
    /// A local user with `quota=`: the answer depends on the mailbox's usage.
    CheckQuota {
        /// The user's account.
        account: Account,
        /// The limit in octets.
        quota: u64,
    },
}

/// The answer to `RCPT TO` for what the directory said of `address` (normalised),
/// with `router` on a proxy front-end: unknown users, foreign domains, back-end users
/// and local users without a quota are decided here.
fn decide_recipient(address: &str, lookup: Lookup, router: Option<&Router>) -> Decision {
    let record = match lookup {
        Lookup::Found(record) => record,
        Lookup::NotFound if address == "postmaster" => {
            // RFC 5321 §4.1.1.3: `<Postmaster>` without a domain must be accepted;
            // the directory resolves it to a local domain's postmaster.
            log::warn!("mail for <Postmaster> refused: no postmaster@ user in any local domain");
            return Decision::Answer(Reply::Recipient(RecipientCheck::Unknown));
        }
        Lookup::NotFound => {
            log::info!("recipient {address:?}: no such user");
            return Decision::Answer(Reply::Recipient(RecipientCheck::Unknown));
        }
        Lookup::UnknownDomain => {
            return Decision::Answer(Reply::Recipient(RecipientCheck::NotLocal));
        }
        Lookup::TempFail(reason) => {
            log::warn!("recipient {address:?}: user database: {reason}");
            return Decision::Answer(Reply::Failed(Failure::Temporary(DIRECTORY_TEXT.into())));
        }
    };
    let account = Account(record.address.clone());
    match router.map(|router| router.mail_route(&record)) {
        None | Some(MailRoute::Local) => {}
        Some(MailRoute::Backend(host)) => {
            return Decision::Answer(Reply::Recipient(RecipientCheck::Backend(
                BackendRecipient { account, host },
            )));
        }
        Some(MailRoute::Unroutable) => {
            log::warn!("recipient {address}: no tohost and no [proxy] default_host");
            return Decision::Answer(Reply::Failed(Failure::Temporary(
                "no server for this account".into(),
            )));
        }
    }
    match record.quota() {
        Some(quota) => Decision::CheckQuota { account, quota },
        None => Decision::Answer(Reply::Recipient(RecipientCheck::Local(account))),
    }
}
