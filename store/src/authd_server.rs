//! Serving this node's user database to other nodes (`[authd]`): the session factory for
//! the authd listener, and an [`Executor`] that answers the authd requests from any
//! [`UserDirectory`].
//!
//! In `tidegate serve` the executor is the node's normal store, which answers
//! `LookupUser`/`VerifyUser` from its users file; [`DirectoryExecutor`] is for nodes
//! (and tests) that serve a directory on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;
use tidegate_core::authd::{AuthdConfig, AuthdListener};
use tidegate_core::{Failure, Reply, Request};

use crate::service::{BoxedSession, Executor, SessionFactory};
use crate::users::UserDirectory;

/// Makes authd server sessions for every listener of a [`crate::ServerSpec`] (an authd
/// spec has only authd listeners), plain or with implicit TLS.
#[derive(Debug, Clone)]
pub struct AuthdService {
    listener: AuthdListener,
}

impl AuthdService {
    /// Sessions with these settings; with `tls`, TLS starts with the first byte.
    pub fn new(config: AuthdConfig, tls: Option<Arc<ServerConfig>>) -> Self {
        AuthdService {
            listener: AuthdListener {
                config: Arc::new(config),
                tls,
            },
        }
    }

    /// The core listener, for a binary that mixes authd with other listeners.
    pub fn listener(&self) -> &AuthdListener {
        &self.listener
    }
}

impl crate::service::Accept for AuthdService {
    fn open(&self, peer: SocketAddr, now: Instant) -> BoxedSession {
        self.listener.open(peer, now)
    }

    fn busy(&self, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        self.listener.busy()
    }
}

impl SessionFactory for AuthdService {
    fn open(&self, _listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        self.listener.open(peer, now)
    }

    fn busy(&self, _listener: usize, _peer: SocketAddr, _now: Instant) -> BoxedSession {
        self.listener.busy()
    }
}

/// Answers [`Request::LookupUser`], [`Request::LookupUsers`] and [`Request::VerifyUser`]
/// from a directory; every
/// other request fails permanently (an authd server asks nothing else).
#[derive(Debug)]
pub struct DirectoryExecutor<D: UserDirectory> {
    directory: Arc<D>,
}

impl<D: UserDirectory> DirectoryExecutor<D> {
    /// An executor over `directory`.
    pub fn new(directory: Arc<D>) -> Self {
        DirectoryExecutor { directory }
    }
}

impl<D: UserDirectory> Executor for DirectoryExecutor<D> {
    fn execute(&self, request: Request) -> Reply {
        match request {
            Request::LookupUser { address } => Reply::User(self.directory.lookup(&address)),
            Request::LookupUsers { addresses } => Reply::Users(
                addresses
                    .iter()
                    .map(|address| self.directory.lookup(address))
                    .collect(),
            ),
            Request::VerifyUser {
                user,
                password,
                client,
            } => Reply::Verified(self.directory.verify(&user, password.expose(), client)),
            _ => Reply::Failed(Failure::Permanent(
                "an authd server only looks users up".into(),
            )),
        }
    }
}
