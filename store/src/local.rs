//! The store of a back-end that owns its users: a user directory (the users file, or
//! any other [`UserDirectory`]) for authentication and recipients, and the maildirs for
//! mail. Carries out core [`Request`]s as an [`Executor`]: logins (with the
//! [`LoginPenalty`]), user lookups for authd, POP3 access, and SMTP/LMTP recipient
//! checks and streaming delivery (`receive`, with the messages being received kept by
//! `deliveries`).

mod deliveries;
mod inline;
mod pop3_lock;
mod receive;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate_core::user::AuthOutcome;
use tidegate_core::{Account, Failure, Reply, Request};

pub use deliveries::{
    BUFFERED_MESSAGE_MAX, BUFFERED_TOTAL_MAX, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PENDING,
};
pub use pop3_lock::Pop3Locks;

use crate::imap::ImapExecutor;
use crate::maildir::{MaildirStore, STALE_AFTER, StoreError};
use crate::penalty::{Admission, LoginPenalty};
use crate::queue::Queue;
use crate::service::Executor;
use crate::users::{UserDirectory, normalize_address};

/// The text clients may see for a storage problem; the real error goes to the log only.
const TEMPORARY_TEXT: &str = "mailbox temporarily unavailable";

/// The text clients may see when the user database cannot be asked.
const DIRECTORY_TEXT: &str = "user database temporarily unavailable";

/// The text clients see when the login penalty refuses an attempt.
const PENALTY_TEXT: &str = "too many failed logins";

/// User directory + maildirs: the request executor of a standalone server or back-end.
#[derive(Debug)]
pub struct LocalStore {
    users: Arc<dyn UserDirectory>,
    penalty: LoginPenalty,
    maildir: MaildirStore,
    deliveries: deliveries::Deliveries,
    pop3_locks: Option<Arc<Pop3Locks>>,
    imap: Option<ImapExecutor>,
    queue: Option<Arc<Queue>>,
}

impl LocalStore {
    /// A store over these users (a [`crate::UsersFile`] or any `Arc<dyn
    /// UserDirectory>`) and maildirs, with the default [`LoginPenalty`]. Spool files
    /// older than [`STALE_AFTER`] (left by a crash) are removed now.
    pub fn new(users: impl Into<Arc<dyn UserDirectory>>, maildir: MaildirStore) -> LocalStore {
        match maildir.clean_spool(STALE_AFTER) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} stale temporary files from the spool"),
            Err(e) => log::warn!("cleaning the spool {}: {e}", maildir.spool_dir().display()),
        }
        LocalStore {
            users: users.into(),
            penalty: LoginPenalty::default(),
            maildir,
            pop3_locks: None,
            imap: None,
            queue: None,
            deliveries: deliveries::Deliveries::new(DEFAULT_MAX_PENDING, DEFAULT_IDLE_TIMEOUT),
        }
    }

    /// Replaces the login penalty (its rules come from the config).
    pub fn with_penalty(mut self, penalty: LoginPenalty) -> Self {
        self.penalty = penalty;
        self
    }

    /// Serves IMAP mailbox requests ([`Request::Imap`]) with `imap`.
    pub fn with_imap(mut self, imap: ImapExecutor) -> Self {
        self.imap = Some(imap);
        self
    }

    /// Accepts submissions with remote recipients ([`Request::CommitSubmission`]) into
    /// this outbound queue.
    pub fn with_queue(mut self, queue: Arc<Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The outbound queue, when relaying is configured.
    pub fn queue(&self) -> Option<&Arc<Queue>> {
        self.queue.as_ref()
    }

    /// Turns on the cluster-wide POP3 lock: listing a mailbox for a POP3 session takes
    /// its lock (answering [`Failure::InUse`] when another session holds it) and
    /// [`Request::ReleaseMailbox`] drops it.
    pub fn with_pop3_lock(mut self, locks: Arc<Pop3Locks>) -> Self {
        self.pop3_locks = Some(locks);
        self
    }

    /// Lists an inbox for a POP3 session, under the POP3 lock when it is on.
    fn list_for_pop3(&self, account: &Account) -> Reply {
        if let Some(locks) = &self.pop3_locks {
            let dir = match self.maildir.mailbox_dir(account) {
                Ok(dir) => dir,
                Err(e) => return failure(&account.0, "lock", e),
            };
            // A user without mail yet has no maildir; the lock file needs one.
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return failure(&account.0, "lock", StoreError::Io(e));
            }
            match locks.take(&account.0, &dir) {
                Ok(true) => {}
                Ok(false) => {
                    log::info!("POP3 login of {} refused: mailbox in use", account.0);
                    return Reply::Failed(Failure::InUse);
                }
                Err(e) => {
                    log::error!("POP3 lock of {}: {e}", account.0);
                    return Reply::Failed(Failure::Temporary(TEMPORARY_TEXT.into()));
                }
            }
        }
        match self.maildir.list(account) {
            Ok(listing) => Reply::Listing(listing),
            Err(e) => {
                if let Some(locks) = &self.pop3_locks {
                    locks.release(&account.0);
                }
                failure(&account.0, "list", e)
            }
        }
    }

    /// Sets the most messages received at once (default [`DEFAULT_MAX_PENDING`]) and
    /// the time after which a message nobody appended to or committed is discarded
    /// (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn with_delivery_limits(mut self, max_pending: usize, idle_timeout: Duration) -> Self {
        self.deliveries = deliveries::Deliveries::new(max_pending, idle_timeout);
        self
    }

    /// The number of messages being received now.
    pub fn pending_deliveries(&self) -> usize {
        self.deliveries.len()
    }

    /// The user directory (for `reload`).
    pub fn users(&self) -> &Arc<dyn UserDirectory> {
        &self.users
    }

    /// The login penalty.
    pub fn penalty(&self) -> &LoginPenalty {
        &self.penalty
    }

    /// The maildirs.
    pub fn maildir(&self) -> &MaildirStore {
        &self.maildir
    }

    /// Checks a password through the directory and the login penalty: an address with
    /// too many recent failures is refused without a check; a wrong password from an
    /// address that failed before is [`Failure::Throttled`] by the penalty's delay.
    fn authenticate(&self, user: &str, password: &[u8], client: IpAddr) -> Reply {
        match self.check_login(user, password, client, Instant::now()) {
            Ok(record) => Reply::Authenticated(Account(record.address)),
            Err(failure) => Reply::Failed(failure),
        }
    }

    /// `VerifyUser` (authd): the same checks, answered as an [`AuthOutcome`].
    fn verify_user(&self, user: &str, password: &[u8], client: IpAddr) -> Reply {
        let outcome = match self.check_login(user, password, client, Instant::now()) {
            Ok(record) => AuthOutcome::Accepted(record),
            Err(Failure::Disabled) => AuthOutcome::Disabled,
            Err(Failure::Temporary(reason)) => AuthOutcome::TempFail(reason),
            Err(_) => AuthOutcome::Denied,
        };
        let result = match &outcome {
            AuthOutcome::Accepted(_) => "success",
            AuthOutcome::TempFail(_) => "tempfail",
            AuthOutcome::Disabled | AuthOutcome::Denied => "failure",
        };
        log::info!("authd login check {user:?} for {client}: {result}");
        Reply::Verified(outcome)
    }

    /// Checks a login with the login penalty applied: the record on success, else the
    /// failure to answer with.
    pub(crate) fn check_login(
        &self,
        user: &str,
        password: &[u8],
        client: IpAddr,
        now: Instant,
    ) -> Result<tidegate_core::user::UserRecord, Failure> {
        let address = normalize_address(user);
        if self.penalty.admit(client, now) == Admission::Refuse {
            log::warn!(
                "login refused from {client} for {address:?}: too many failed logins \
                 from this address; the password was not checked"
            );
            return Err(Failure::Temporary(PENALTY_TEXT.into()));
        }
        match self.users.verify(&address, password, client) {
            AuthOutcome::Accepted(record) => {
                self.penalty.success(client);
                // The login line itself (method, addresses, TLS, session) is written by
                // the session's observer in the binary, once per attempt.
                log::debug!("password accepted for {} from {client}", record.address);
                Ok(record)
            }
            AuthOutcome::Disabled => Err(Failure::Disabled),
            AuthOutcome::Denied => {
                let delay = self.penalty.failure(client, now);
                if delay.is_zero() {
                    Err(Failure::Denied)
                } else {
                    log::info!(
                        "login failed from {client} for {address:?}: answered after {} s \
                         (login penalty)",
                        delay.as_secs()
                    );
                    Err(Failure::Throttled(delay))
                }
            }
            AuthOutcome::TempFail(reason) => {
                log::warn!("login from {client} for {address:?}: user database: {reason}");
                Err(Failure::Temporary(DIRECTORY_TEXT.into()))
            }
        }
    }
}

impl Executor for LocalStore {
    fn execute(&self, request: Request) -> Reply {
        match request {
            Request::Authenticate {
                user,
                password,
                client,
            } => self.authenticate(&user, password.expose(), client),
            Request::ListMailbox { account } => self.list_for_pop3(&account),
            Request::Imap(request) => match &self.imap {
                Some(imap) => imap.execute(request),
                None => Reply::Failed(Failure::Permanent("IMAP is not served here".into())),
            },
            Request::ReleaseMailbox { account } => {
                if let Some(locks) = &self.pop3_locks {
                    locks.release(&account.0);
                }
                Reply::Done
            }
            Request::ReadMessage {
                account,
                file,
                offset,
                max_len,
            } => match self.maildir.read_chunk(&account, &file, offset, max_len) {
                Ok((bytes, end)) => Reply::Chunk { bytes, end },
                Err(e) => failure(&account.0, "read", e),
            },
            Request::CommitPop3 {
                account,
                delete,
                seen,
            } => match self.maildir.commit_pop3(&account, &delete, &seen) {
                Ok(()) => Reply::Done,
                Err(e) => failure(&account.0, "commit", e),
            },
            Request::CheckRecipient { address, size_hint } => {
                self.check_recipient(&address, size_hint)
            }
            Request::BeginDelivery { header } => self.begin_delivery(&header),
            Request::AppendDelivery { delivery, bytes } => self.append_delivery(delivery, &bytes),
            Request::CommitDelivery {
                delivery,
                recipients,
                all_or_nothing,
            } => self.commit_delivery(delivery, recipients, all_or_nothing),
            Request::CommitSubmission {
                delivery,
                local,
                relay,
            } => self.commit_submission(delivery, local, relay),
            Request::AbortDelivery { delivery } => {
                // A busy message is aborted by the request working on it when that
                // finds the slot gone; an unknown one is already gone.
                if let Ok(message) = self.deliveries.remove(delivery) {
                    message.abort();
                }
                Reply::Done
            }
            Request::LookupUser { address } => Reply::User(self.users.lookup(&address)),
            Request::LookupUsers { addresses } => Reply::Users(
                addresses
                    .iter()
                    .map(|address| self.users.lookup(address))
                    .collect(),
            ),
            Request::VerifyUser {
                user,
                password,
                client,
            } => self.verify_user(&user, password.expose(), client),
            other => {
                log::error!("local store cannot carry out {other:?}");
                Reply::Failed(Failure::Permanent("unsupported request".into()))
            }
        }
    }
    /// Recipient checks against a user directory in memory, and the start, appends and
    /// abort of a small message (kept in memory until its commit), are answered here.
    fn execute_inline(&self, request: &Request) -> Option<Reply> {
        self.answer_inline(request, None)
    }
}

/// Maps a store error to a reply, logging the details the client must not see.
fn failure(subject: &str, action: &str, error: StoreError) -> Reply {
    Reply::Failed(to_failure(subject, action, error))
}

/// Maps a store error to what a client may learn; the details go to the log.
fn to_failure(subject: &str, action: &str, error: StoreError) -> Failure {
    match error {
        StoreError::Gone => Failure::Gone,
        StoreError::InvalidAccount => {
            log::error!("{action} for {subject:?}: not a valid mailbox name");
            Failure::Permanent("invalid mailbox".into())
        }
        StoreError::OverQuota => {
            log::info!("{action} for {subject}: mailbox over quota");
            Failure::OverQuota
        }
        StoreError::NotDelivered => {
            Failure::Temporary("not delivered: delivery to another recipient failed".into())
        }
        StoreError::Io(e) => {
            log::error!("{action} for {subject}: {e}");
            Failure::Temporary(TEMPORARY_TEXT.into())
        }
    }
}
