//! Deadlines: the idle timeout (RFC 5321 §4.5.3.2.7), the login timeout (a bound on
//! the time before AUTH or the first MAIL, counted from the connect), the store's reply
//! deadline, which the session answers itself, and replies that arrive after it.

use std::time::Instant;

use super::reply;
use super::session::{SmtpSession, Waiting};
use crate::io::RequestId;
use crate::request::{Failure, Reply, Request};
use crate::timer::Timer;

/// Abandoned BeginDelivery ids remembered per session; at this many the session closes.
const MAX_ORPHANS: usize = 8;

impl SmtpSession {
    /// `timer`'s deadline passed.
    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Idle => {
                let before_login = self.login_deadline.is_some_and(|at| at <= now);
                let line = if before_login {
                    reply::login_timeout(&self.cfg.hostname, self.cfg.role)
                } else {
                    reply::idle_timeout(&self.cfg.hostname)
                };
                self.reply(&line);
                self.close();
            }
            Timer::StoreReply => self.store_timed_out(now),
            Timer::AuthDelay => self.auth_delay_over(now),
        }
    }

    /// The store did not answer in time: the session answers for it (a late reply is
    /// then ignored by id).
    fn store_timed_out(&mut self, now: Instant) {
        let failure = Failure::Temporary("store timeout".into());
        match self.waiting.take() {
            Some(Waiting::Authenticate { .. }) => self.reply(reply::AUTH_TEMPORARY),
            Some(Waiting::Recipient { address, .. }) => {
                self.reply(&reply::recipient_temporary(&address))
            }
            Some(Waiting::Begin { id, for_data }) => {
                self.orphans.push(id);
                self.begin_failed(for_data, failure);
                if self.orphans.len() >= MAX_ORPHANS {
                    // Forgetting an id would leave its file to the store's sweep; a store
                    // this slow serves no one, so the session ends instead.
                    let line = reply::store_unresponsive(&self.cfg.hostname);
                    self.reply(&line);
                    self.close();
                }
            }
            Some(Waiting::Append { .. }) => self.append_failed(now, failure),
            Some(Waiting::Commit { plan, .. }) => self.on_committed(plan, Reply::Failed(failure)),
            Some(Waiting::Abort { reply, .. }) => self.reply_raw(&reply),
            other @ (Some(Waiting::AuthDelay { .. }) | None) => self.waiting = other,
        }
        self.resume(now);
    }

    /// A reply for a request the session no longer waits for. A message file opened
    /// after its BeginDelivery timed out is aborted, so the store removes it.
    pub(super) fn stray_reply(&mut self, id: RequestId, reply: Reply) {
        let Some(at) = self.orphans.iter().position(|&o| o == id) else {
            return;
        };
        self.orphans.remove(at);
        if let Reply::DeliveryStarted(delivery) = reply {
            self.fire(Request::AbortDelivery { delivery });
        }
    }
}
