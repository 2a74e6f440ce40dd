//! Requests a [`LocalStore`] answers on the calling thread, an event loop
//! ([`Executor::execute_inline`]), because they need no disk or network I/O: recipient
//! checks against a user directory held in memory (without `quota=`, whose check scans
//! the maildir), and the start, appends and abort of a message small enough to stay in
//! memory until its commit (see `deliveries`). Everything else, and every case here
//! that would need I/O, goes to a worker as before.
//!
//! [`Executor::execute_inline`]: crate::service::Executor::execute_inline

use tidegate_core::{Reply, Request};

use super::LocalStore;
use super::deliveries::InlineAbort;
use crate::router::Router;

impl LocalStore {
    /// The inline answer to `request`, or `None` when a worker must carry it out.
    /// `router` is the front-end's, when recipient checks route back-end users
    /// ([`LocalStore::check_recipient_routed`]).
    pub(crate) fn answer_inline(
        &self,
        request: &Request,
        router: Option<&Router>,
    ) -> Option<Reply> {
        match request {
            Request::CheckRecipient { address, .. } => self.check_recipient_inline(address, router),
            Request::BeginDelivery { header } => self
                .deliveries
                .begin_buffered(header)
                .map(Reply::DeliveryStarted),
            Request::AppendDelivery { delivery, bytes } => self
                .deliveries
                .append_buffered(*delivery, bytes)
                .then_some(Reply::Done),
            Request::AbortDelivery { delivery } => (self.deliveries.abort_buffered(*delivery)
                == InlineAbort::Done)
                .then_some(Reply::Done),
            _ => None,
        }
    }
}
