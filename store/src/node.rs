//! The executor of a node that may be a front-end, a back-end or both: proxy routing
//! requests go to the [`Router`], everything else to the node's own store.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use tidegate_core::{Reply, Request};

use crate::local::LocalStore;
use crate::penalty::Admission;
use crate::router::Router;
use crate::service::Executor;

/// Routes [`Request::Route`] to the router (when this node is a front-end) after the
/// store checked the password (with its login penalty), answers recipient checks with
/// the user's back-end (inbound mail is queued for it and relayed over LMTP; only when
/// the store has a queue, which a node turned into a front-end by a reload lacks until
/// its restart), and sends every other request to the node's own store.
#[derive(Debug)]
pub struct Node {
    router: RwLock<Option<Arc<Router>>>,
    local: LocalStore,
}

impl Node {
    /// A node with an optional front-end router over its own store.
    pub fn new(router: Option<Arc<Router>>, local: LocalStore) -> Node {
        Node {
            router: RwLock::new(router),
            local,
        }
    }

    /// Replaces the routing rules (a reload); requests already routing finish with
    /// the old ones.
    pub fn set_router(&self, router: Option<Arc<Router>>) {
        if let Ok(mut current) = self.router.write() {
            *current = router;
        }
    }

    fn router(&self) -> Option<Arc<Router>> {
        self.router.read().ok().and_then(|r| r.clone())
    }

    /// The node's own store.
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// [`Request::Route`] answered on the event loop when every step is cheap and
    /// cannot block: the login penalty lets the client try, the user directory
    /// confirms the password at once ([`crate::UserDirectory::verify_fast`]: a cache
    /// hit, a cheap scheme in a table in memory) and the back-end is an IP address.
    /// Anything else (a refusal, a wrong password, a slow hash, a name to resolve, no
    /// router) is `None` and goes to the worker pool, which runs the full path with its
    /// penalty delays and logging.
    fn route_inline(&self, request: &Request) -> Option<Reply> {
        let Request::Route {
            user,
            password,
            client,
            service,
        } = request
        else {
            return None;
        };
        let router = self.router()?;
        let penalty = self.local.penalty();
        if penalty.admit(*client, Instant::now()) != Admission::Check {
            return None;
        }
        let record = self.local.users().verify_fast(user, password.expose())?;
        let reply = router.route_without_dns(&record, *client, *service)?;
        penalty.success(*client);
        Some(reply)
    }
}

impl Executor for Node {
    fn execute_inline(&self, request: &Request) -> Option<Reply> {
        match request {
            Request::Route { .. } => self.route_inline(request),
            // Recipient checks route back-end users as in `execute`.
            Request::CheckRecipient { .. } if self.local.queue().is_some() => {
                self.local.answer_inline(request, self.router().as_deref())
            }
            _ => self.local.execute_inline(request),
        }
    }

    fn execute(&self, request: Request) -> Reply {
        match (request, self.router()) {
            (
                Request::Route {
                    user,
                    password,
                    client,
                    service,
                },
                Some(router),
            ) => match self
                .local
                .check_login(&user, password.expose(), client, Instant::now())
            {
                Ok(record) => router.route(&record, client, service),
                Err(failure) => Reply::Failed(failure),
            },
            (Request::CheckRecipient { address, size_hint }, Some(router))
                if self.local.queue().is_some() =>
            {
                self.local
                    .check_recipient_routed(&address, size_hint, &router)
            }
            (Request::BackendFailed { host, addr, reason }, router) => {
                log::warn!("back-end {host} ({addr}) failed: {reason}");
                crate::metrics::global().backend_up(&host, false);
                if let Some(router) = router {
                    router.mark_down(addr, Instant::now());
                }
                Reply::Done
            }
            (request, _) => self.local.execute(request),
        }
    }
}
