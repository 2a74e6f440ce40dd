//! The store of a back-end that owns its users: the users file for authentication and
//! the maildirs for mail. Carries out core [`Request`]s as an [`Executor`]: POP3 access,
//! and SMTP/LMTP recipient checks and streaming delivery (`receive`, with the messages
//! being received kept by `deliveries`).

mod deliveries;
mod receive;

use std::net::IpAddr;
use std::time::Duration;

use tidegate_core::{Account, Failure, Reply, Request};

pub use deliveries::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PENDING};

use crate::maildir::{MaildirStore, STALE_AFTER, StoreError};
use crate::password::{self, Verification};
use crate::service::Executor;
use crate::users::{UsersFile, normalize_address};

/// The text clients may see for a storage problem; the real error goes to the log only.
const TEMPORARY_TEXT: &str = "mailbox temporarily unavailable";

/// Users file + maildirs: the request executor of a standalone server or back-end.
#[derive(Debug)]
pub struct LocalStore {
    users: UsersFile,
    maildir: MaildirStore,
    deliveries: deliveries::Deliveries,
}

impl LocalStore {
    /// A store over these users and maildirs. Spool files older than
    /// [`STALE_AFTER`] (left by a crash) are removed now.
    pub fn new(users: UsersFile, maildir: MaildirStore) -> LocalStore {
        match maildir.clean_spool(STALE_AFTER) {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} stale temporary files from the spool"),
            Err(e) => log::warn!("cleaning the spool {}: {e}", maildir.spool_dir().display()),
        }
        LocalStore {
            users,
            maildir,
            deliveries: deliveries::Deliveries::new(DEFAULT_MAX_PENDING, DEFAULT_IDLE_TIMEOUT),
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

    /// The users file (for `reload`).
    pub fn users(&self) -> &UsersFile {
        &self.users
    }

    /// The maildirs.
    pub fn maildir(&self) -> &MaildirStore {
        &self.maildir
    }

    /// Checks a password. Unknown user and wrong password get the same answer after the
    /// same work (a dummy Argon2id check with the file's parameters); `nologin` is only
    /// revealed to someone who knows the password.
    fn authenticate(&self, user: &str, password: &[u8], client: IpAddr) -> Reply {
        self.users.reload_if_changed();
        let table = self.users.current();
        let address = normalize_address(user);
        let Some(record) = table.lookup(&address) else {
            match table.dummy_params() {
                Some(params) => password::verify_dummy_with(params, password),
                None => password::verify_dummy(password),
            }
            log::info!("authentication failed from {client}: unknown user {address:?}");
            return Reply::Failed(Failure::Denied);
        };
        match password::verify(&record.password, password) {
            Verification::Match if record.nologin() => {
                log::info!("authentication refused from {client}: {address} has nologin");
                Reply::Failed(Failure::Disabled)
            }
            Verification::Match => Reply::Authenticated(Account(record.address.clone())),
            Verification::Mismatch => {
                log::info!("authentication failed from {client}: wrong password for {address}");
                Reply::Failed(Failure::Denied)
            }
            Verification::Unsupported => {
                log::warn!(
                    "authentication failed from {client}: the password of {address} uses \
                     a scheme this build cannot check"
                );
                Reply::Failed(Failure::Denied)
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
            Request::ListMailbox { account } => match self.maildir.list(&account) {
                Ok(listing) => Reply::Listing(listing),
                Err(e) => failure(&account.0, "list", e),
            },
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
            Request::AbortDelivery { delivery } => {
                // A busy message is aborted by the request working on it when that
                // finds the slot gone; an unknown one is already gone.
                if let Ok(message) = self.deliveries.remove(delivery) {
                    message.abort();
                }
                Reply::Done
            }
            other => {
                log::error!("local store cannot carry out {other:?}");
                Reply::Failed(Failure::Permanent("unsupported request".into()))
            }
        }
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
