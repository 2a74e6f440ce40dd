//! The executor of a node that may be a front-end, a back-end or both: proxy routing
//! requests go to the [`Router`], everything else to the node's own store.

use std::sync::{Arc, RwLock};

use tidegate_core::{Reply, Request};

use crate::router::Router;
use crate::service::Executor;

/// Routes [`Request::Route`] to the router (when this node is a front-end) and every
/// other request to `local`.
#[derive(Debug)]
pub struct Node<E> {
    router: RwLock<Option<Arc<Router>>>,
    local: E,
}

impl<E: Executor> Node<E> {
    /// A node with an optional front-end router over its own store.
    pub fn new(router: Option<Arc<Router>>, local: E) -> Node<E> {
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
    pub fn local(&self) -> &E {
        &self.local
    }
}

impl<E: Executor> Executor for Node<E> {
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
            ) => router.route(&user, password.expose(), client, service),
            (request, _) => self.local.execute(request),
        }
    }
}
