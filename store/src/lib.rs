//! # tidegate-store: the host services both shells share
//!
//! Blocking implementations of what core sessions ask for ([`tidegate_core::Request`]):
//! maildir access on a possibly shared filesystem, user directories (the users file, an
//! authentication cache), password schemes, the login penalty,
//! TLS material. No protocol knowledge lives here. [`service`] holds the small contract
//! between the `tidegate` binary and a shell: which listeners to serve, how to make a
//! session for an accepted connection, who runs requests, and how to stop.

// The library has no unsafe code (tests and benches make a few system calls).
#![forbid(unsafe_code)]

pub mod authd_server;
pub mod dkim;
pub mod dns;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod imap;
pub mod local;
pub mod lock;
pub mod maildir;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod password;
pub mod penalty;
pub mod queue;
pub mod router;
pub mod service;
pub mod sessions;
pub mod tls;
pub mod users;

pub use local::LocalStore;
pub use maildir::{MaildirStore, StoreError};
pub use penalty::{LoginPenalty, PenaltyConfig};
pub use service::{
    Accept, Executor, Listener, ListenerChange, ListenerChanges, Listeners, ServerSpec,
    SessionFactory, Shutdown,
};
pub use sessions::{Closer, Registration, SessionId, SessionInfo, SessionRegistry};
pub use users::{CacheConfig, CachedDirectory, UserDirectory, UserRecord, UserTable, UsersFile};
