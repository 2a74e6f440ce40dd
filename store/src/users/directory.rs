//! The interface every user database backend implements: the users file, the authd
//! client, LDAP. The executors (local store, proxy router, authd server) only see this.

use std::fmt;
use std::net::IpAddr;

use tidegate_core::user::{AuthOutcome, Lookup, UserRecord};

/// A user database. Calls block (disk, network) and run on worker threads; every call
/// answers, mapping an unreachable database to `TempFail`.
pub trait UserDirectory: Send + Sync + fmt::Debug + 'static {
    /// Who is `address` (normalised by the directory)?
    fn lookup(&self, address: &str) -> Lookup;

    /// [`UserDirectory::lookup`] answered from memory, for callers on an event loop
    /// (`Executor::execute_inline`): `Some` only when the answer needs no disk or
    /// network I/O and no wait on a lock held across I/O; `None` sends the caller to
    /// `lookup` on a worker thread. The default (network directories) is always `None`.
    fn lookup_in_memory(&self, address: &str) -> Option<Lookup> {
        let _ = address;
        None
    }

    /// Is `password` the password of `user`? An unknown user and a wrong password give
    /// [`AuthOutcome::Denied`] after the same work; `nologin` is only revealed to someone
    /// who knows the password. `client` is for logging.
    fn verify(&self, user: &str, password: &[u8], client: IpAddr) -> AuthOutcome;

    /// The user's record when `password` is right and that can be told at once, without
    /// blocking and without a costly hash: a remembered successful check, or a
    /// `{PLAIN}`/salted-SHA password in a table already in memory. `None` whenever the
    /// answer needs [`UserDirectory::verify`]: a wrong password, an unknown user,
    /// `nologin`, a slow hash, a database to ask. Lets an event loop answer a login
    /// itself (`Executor::execute_inline`); failures always take the full path, with
    /// its logging and equal-work rules. The default answers nothing.
    fn verify_fast(&self, user: &str, password: &[u8]) -> Option<UserRecord> {
        let _ = (user, password);
        None
    }

    /// Re-reads the database's source now (`tidegate ctl reload`, SIGHUP). Backends
    /// without local state return `Ok`. On error the old state stays in use.
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}
