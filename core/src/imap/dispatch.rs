//! Command dispatch: which command runs in which state (RFC 3501 §3, §6), and the
//! handful of commands answered without the store (CAPABILITY, NOOP outside a mailbox,
//! LOGOUT, ID, ENABLE, NAMESPACE, STARTTLS, IDLE).

use std::time::Instant;

use super::command::{self, Command, CommandBody};
use super::response::{self, Condition};
use super::session::{ImapSession, State};
use crate::io::{Action, Peer};

impl ImapSession {
    pub(super) fn execute(&mut self, now: Instant, input: &[u8]) {
        match command::parse(input) {
            Ok(Command { tag, body }) => self.dispatch(now, tag, body),
            Err(e) => self.bad(e.tag.as_deref(), e.reason),
        }
    }

    fn dispatch(&mut self, now: Instant, tag: String, body: CommandBody) {
        use CommandBody as C;
        let authenticated = self.account().is_some();
        let selected = matches!(self.state, State::Selected(..));
        match body {
            C::Capability => {
                let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                self.raw(line.as_bytes());
                self.tagged(&tag, Condition::Ok, None, "CAPABILITY completed");
            }
            C::Noop if selected => self.poll(now, &tag, "NOOP completed"),
            C::Check if selected => self.poll(now, &tag, "CHECK completed"),
            C::Noop => self.tagged(&tag, Condition::Ok, None, "NOOP completed"),
            C::Logout => {
                self.untagged(Condition::Bye, None, "Logging out");
                self.tagged(&tag, Condition::Ok, None, "LOGOUT completed");
                self.close();
            }
            C::Id(pairs) => {
                self.learn_client(&pairs);
                self.raw(b"* ID (\"name\" \"tidegate\")\r\n");
                self.tagged(&tag, Condition::Ok, None, "ID completed");
            }
            C::StartTls if !authenticated => self.starttls(&tag),
            C::Login { user, password } if !authenticated => self.login(now, tag, user, password),
            C::Authenticate { mechanism, initial } if !authenticated => {
                self.authenticate(now, tag, &mechanism, initial)
            }
            C::Enable(_) if authenticated => {
                // None of the capabilities tidegate offers needs enabling (RFC 5161 §3.1).
                self.raw(b"* ENABLED\r\n");
                self.tagged(&tag, Condition::Ok, None, "ENABLE completed");
            }
            C::Namespace if authenticated => {
                self.raw(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                self.tagged(&tag, Condition::Ok, None, "NAMESPACE completed");
            }
            C::List {
                reference,
                pattern,
                subscribed,
            } if authenticated => self.list(now, &tag, reference, pattern, subscribed),
            C::Status(name, items) if authenticated => self.status(now, &tag, name, items),
            C::Create(name) if authenticated => self.create(now, &tag, name),
            C::Delete(name) if authenticated => self.delete(now, &tag, name),
            C::Rename(from, to) if authenticated => self.rename(now, &tag, from, to),
            C::Subscribe(name) if authenticated => self.subscribe(now, &tag, name, true),
            C::Unsubscribe(name) if authenticated => self.subscribe(now, &tag, name, false),
            C::Select(name) if authenticated => self.select(now, &tag, name, false),
            C::Examine(name) if authenticated => self.select(now, &tag, name, true),
            C::Idle if authenticated => self.idle(now, tag),
            C::Close if selected => self.close_mailbox(now, &tag),
            C::Unselect if selected => self.unselect(&tag),
            C::Expunge(uids) if selected => self.expunge(now, &tag, uids),
            C::Search { uid, charset, key } if selected => {
                self.search(now, &tag, uid, charset, key)
            }
            C::Fetch { uid, set, items } if selected => self.fetch(now, tag, uid, set, items),
            C::Store {
                uid,
                set,
                mode,
                silent,
                flags,
            } if selected => self.store(now, &tag, uid, set, mode, silent, flags),
            C::Copy {
                uid,
                set,
                mailbox,
                remove,
            } if selected => self.copy(now, &tag, uid, set, mailbox, remove),
            C::StartTls | C::Login { .. } | C::Authenticate { .. } => {
                self.bad(Some(&tag), "Already authenticated")
            }
            _ if !authenticated => self.bad(Some(&tag), "Log in first"),
            _ => self.bad(Some(&tag), "No mailbox selected"),
        }
    }

    fn starttls(&mut self, tag: &str) {
        if !self.conn.starttls_available || self.secure {
            return self.bad(Some(tag), "STARTTLS is not available");
        }
        self.tagged(tag, Condition::Ok, None, "Begin TLS negotiation now");
        self.io.push(Action::StartTls { with: Peer::Client });
        // RFC 3501 §6.2.1 and CVE-2011-0411: nothing pipelined before TLS is used.
        self.input.clear();
        self.command = bytes::BytesMut::new();
        self.secure = true;
    }

    fn idle(&mut self, now: Instant, tag: String) {
        response::continuation(&mut self.io.out, "idling");
        self.idle_tag = Some(tag);
        if matches!(self.state, State::Selected(..)) {
            self.poll_at = Some(now + self.cfg.idle_poll_interval);
        }
    }
}
