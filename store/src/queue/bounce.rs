//! Sending delivery status notifications back to the sender: a failure report when
//! recipients failed for good (or the message expired), one delay warning when it is
//! late. Reports are built by [`tidegate_core::dsn`], sent with the null reverse-path
//! and never about a message that had one (RFC 5321 §4.5.5, RFC 3464 §1): bounces
//! cannot loop.
//!
//! A sender in a local domain gets the report in its maildir at once; any other sender
//! gets it through the queue like any outgoing message. A local domain without such a
//! user drops the report with a log line (nobody is there to read it). When the user
//! database cannot be asked, or the maildir refuses the report, the report is queued
//! instead and retried on the queue's schedule: each retry of a queued report to a
//! local address is delivered to the maildir ([`Bouncer::deliver_report`]), so a
//! report is never lost to a passing failure (and bounces after the maximum age, which
//! for a null sender means it is dropped then, RFC 3464 §1).

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use tidegate_core::Account;
use tidegate_core::dsn::{self, DsnKind, DsnRecipient, DsnReport, MAX_QUOTED_HEADER};
use tidegate_core::user::Lookup;

use super::runner::Verdict;
use super::{NewEntry, Queue, QueueEntry};
use crate::maildir::MaildirStore;
use crate::router::{MailRoute, Router};
use crate::users::UserDirectory;

/// Where reports to local senders go.
#[derive(Clone)]
pub struct LocalMail {
    /// Who is local.
    pub users: Arc<dyn UserDirectory>,
    /// Their maildirs.
    pub maildir: MaildirStore,
}

impl std::fmt::Debug for LocalMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMail").finish_non_exhaustive()
    }
}

/// Builds and sends reports.
#[derive(Debug, Clone)]
pub struct Bouncer {
    /// Our name (`Reporting-MTA`, `MAILER-DAEMON@…`).
    pub hostname: String,
    /// Local delivery of reports, when this node has mailboxes.
    pub local: Option<LocalMail>,
    /// Proxy mode: a report for a user whose mailbox is on a back-end is queued for
    /// that back-end (LMTP) instead of being delivered here.
    pub router: Option<Arc<Router>>,
}

impl Bouncer {
    /// Sends a report of `kind` about `recipients` of `entry` to its sender; nothing for
    /// a null sender. `retry_until` is the give-up time named in a delay warning.
    pub fn send(
        &self,
        queue: &Queue,
        entry: &QueueEntry,
        kind: DsnKind,
        recipients: &[DsnRecipient],
        now: u64,
        retry_until: Option<u64>,
    ) {
        if entry.sender.is_empty() || recipients.is_empty() {
            return;
        }
        let original = read_head(queue, &entry.id);
        let boundary = format!("{}/{}", entry.id, random_token());
        let report = dsn::build(&DsnReport {
            kind,
            reporting_mta: &self.hostname,
            to: &entry.sender,
            queue_id: &entry.id,
            arrived: entry.arrived,
            now,
            retry_until,
            recipients,
            original: &original,
            boundary: &boundary,
        });
        let what = match kind {
            DsnKind::Failure => "failure report",
            DsnKind::Delay => "delay warning",
        };
        let mut backends = Vec::new();
        if let Some(local) = &self.local {
            match local.users.lookup(&entry.sender) {
                Lookup::Found(record)
                    if let Some(MailRoute::Backend(host)) =
                        self.router.as_ref().map(|r| r.mail_route(&record)) =>
                {
                    backends.push((record.address, host));
                }
                Lookup::Found(record) => {
                    let account = Account(record.address);
                    // The final delivery adds the (null) reverse-path, RFC 5321 §4.4.
                    let with_path = Read::chain(&b"Return-Path: <>\r\n"[..], &report[..]);
                    match local
                        .maildir
                        .deliver(std::slice::from_ref(&account), with_path)
                    {
                        Ok(name) => {
                            log::info!(
                                "queue: {what} for {} delivered to {} as {name}",
                                entry.id,
                                account.0
                            );
                            return;
                        }
                        // Queued below and retried into the maildir later.
                        Err(e) => log::warn!(
                            "queue: {what} for {} to {}: {e}; queued for a retry",
                            entry.id,
                            account.0
                        ),
                    }
                }
                Lookup::NotFound => {
                    log::warn!(
                        "queue: {what} for {}: sender {} is not a local user; report dropped",
                        entry.id,
                        entry.sender
                    );
                    return;
                }
                // Queued below; each retry asks the database again.
                Lookup::TempFail(reason) => log::warn!(
                    "queue: {what} for {}: user database: {reason}; queued for a retry",
                    entry.id
                ),
                Lookup::UnknownDomain => {}
            }
        }
        let recipients = if backends.is_empty() {
            vec![entry.sender.clone()]
        } else {
            Vec::new()
        };
        let new = NewEntry {
            client: None,
            sender: String::new(),
            recipients,
            // Plain ASCII unless an address in it is not.
            eight_bit: !report.is_ascii(),
            smtputf8: entry.smtputf8,
            backends,
        };
        match queue.enqueue(new, &report[..], now) {
            Ok(id) => {
                queue.release(&id);
                log::info!("queue: {what} for {} queued as {id}", entry.id);
            }
            Err(e) => log::error!("queue: {what} for {}: {e}; report dropped", entry.id),
        }
    }
}

/// Where a queued report's recipient goes on an attempt ([`Bouncer::deliver_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRoute {
    /// Handled here: delivered to the local maildir, or why not (retried or failed).
    Local(Verdict),
    /// Proxy mode: the user's mailbox is on this back-end; relay there over LMTP.
    Backend(String),
    /// Not a local address: send it like any outgoing message.
    Remote,
}

impl Bouncer {
    /// One attempt for `address`, a recipient of the queued report `id` (an entry with
    /// the null sender): a local user gets it in the maildir with `Return-Path: <>`
    /// (RFC 5321 §4.4); a user database that cannot be asked, or a maildir error,
    /// defers it (`451`); an address of a local domain with no such user fails it.
    pub fn deliver_report(&self, queue: &Queue, id: &str, address: &str) -> ReportRoute {
        let Some(local) = &self.local else {
            return ReportRoute::Remote;
        };
        let record = match local.users.lookup(address) {
            Lookup::UnknownDomain => return ReportRoute::Remote,
            Lookup::NotFound => {
                return ReportRoute::Local(Verdict::Failed("550 5.1.1 no such local user".into()));
            }
            Lookup::TempFail(reason) => {
                return ReportRoute::Local(Verdict::Deferred(format!(
                    "451 4.3.0 user database: {reason}"
                )));
            }
            Lookup::Found(record) => record,
        };
        if let Some(MailRoute::Backend(host)) = self.router.as_ref().map(|r| r.mail_route(&record))
        {
            return ReportRoute::Backend(host);
        }
        let account = Account(record.address);
        let delivered = File::open(queue.message_path(id)).and_then(|file| {
            let with_path = Read::chain(&b"Return-Path: <>\r\n"[..], file);
            local
                .maildir
                .deliver(std::slice::from_ref(&account), with_path)
                .map_err(std::io::Error::other)
        });
        ReportRoute::Local(match delivered {
            Ok(name) => Verdict::Delivered(format!("250 2.0.0 delivered to the mailbox as {name}")),
            Err(e) => Verdict::Deferred(format!("451 4.3.0 local delivery: {e}")),
        })
    }
}

/// The first [`MAX_QUOTED_HEADER`] octets of an entry's message (enough for its header).
fn read_head(queue: &Queue, id: &str) -> Vec<u8> {
    let mut head = Vec::new();
    if let Ok(file) = File::open(queue.message_path(id)) {
        let _ = file.take(MAX_QUOTED_HEADER as u64).read_to_end(&mut head);
    }
    head
}

/// A random hex token (MIME boundaries, jitter).
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
