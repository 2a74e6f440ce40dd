//! The store of a back-end that owns its users: the users file for authentication and
//! the maildirs for mail. Carries out core [`Request`]s as an [`Executor`].

use std::net::IpAddr;

use tidegate_core::{Account, Failure, Reply, Request};

use crate::maildir::{MaildirStore, StoreError};
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
}

impl LocalStore {
    /// A store over these users and maildirs.
    pub fn new(users: UsersFile, maildir: MaildirStore) -> LocalStore {
        LocalStore { users, maildir }
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
                Err(e) => failure(&account, "list", e),
            },
            Request::ReadMessage {
                account,
                file,
                offset,
                max_len,
            } => match self.maildir.read_chunk(&account, &file, offset, max_len) {
                Ok((bytes, end)) => Reply::Chunk { bytes, end },
                Err(e) => failure(&account, "read", e),
            },
            Request::CommitPop3 {
                account,
                delete,
                seen,
            } => match self.maildir.commit_pop3(&account, &delete, &seen) {
                Ok(()) => Reply::Done,
                Err(e) => failure(&account, "commit", e),
            },
            other => {
                log::error!("local store cannot carry out {other:?}");
                Reply::Failed(Failure::Permanent("unsupported request".into()))
            }
        }
    }
}

/// Maps a store error to a reply, logging the details the client must not see.
fn failure(account: &Account, action: &str, error: StoreError) -> Reply {
    match error {
        StoreError::Gone => Reply::Failed(Failure::Gone),
        StoreError::InvalidAccount => {
            log::error!("{action} for {:?}: not a valid mailbox name", account.0);
            Reply::Failed(Failure::Permanent("invalid mailbox".into()))
        }
        StoreError::Io(e) => {
            log::error!("{action} for {}: {e}", account.0);
            Reply::Failed(Failure::Temporary(TEMPORARY_TEXT.into()))
        }
    }
}
