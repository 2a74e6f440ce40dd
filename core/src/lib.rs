//! # tidegate-core: the sans-IO heart of tidegate
//!
//! Every protocol tidegate speaks is a plain state machine in this crate. It never
//! touches sockets, files, clocks, threads or the environment (`clippy.toml` forbids
//! them): bytes and time come in as values, and everything the session wants done comes
//! out as an [`Action`]. The shells (`shell-mio`, `shell-smol`) carry the actions out.
//!
//! ## The driving contract
//!
//! A session implements [`Session`]:
//!
//! * **Inputs are values.** [`Session::handle_input`] (bytes read from a peer),
//!   [`Session::handle_eof`], [`Session::handle_reply`] (the answer to a request),
//!   [`Session::handle_timeout`] (a deadline may have passed; spurious calls are no-ops)
//!   and [`Session::handle_drained`] (everything written so far reached the kernel).
//!   Each takes `now` from the shell's monotonic clock.
//! * **Outputs are polled.** After *every* input the shell drains
//!   [`Session::poll_action`] until it returns `None` (the single-mutation rule), then
//!   re-arms its timer from [`Session::poll_timeout`] and its read interest from
//!   [`Session::wants_read`].
//! * **Requests are data.** [`Action::Request`] carries a [`Request`] and a
//!   [`RequestId`]; the shell runs it off the event loop and answers with exactly one
//!   [`Reply`] for that id. While a request is outstanding the session parses no further
//!   pipelined input. The session owns the reply deadline and answers a temporary
//!   failure itself if the store is too slow; a late reply is ignored.
//! * **Limits on everything.** Input is framed by bounded framers ([`wire`]) before any
//!   grammar runs; output waits for [`Session::handle_drained`] once a high-water mark
//!   is reached. A fatal error queues its last reply and then [`Action::Close`]; nothing
//!   else follows.
//! * **TLS inside the core.** [`tls::Secured`] wraps any session, so shells move only
//!   ciphertext.
//!
//! ## A run loop
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use tidegate_core::{Action, Peer, Reply, Request, Session};
//! use tidegate_core::pop3::{ConnInfo, Pop3Config, Pop3Session};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the shell's clock, never the core's
//! let conn = ConnInfo {
//!     client: "127.0.0.1:40000".parse().unwrap(),
//!     implicit_tls: false,
//!     starttls_available: false,
//!     plaintext_auth: true,
//!     may_override_client: false,
//! };
//! let mut session = Pop3Session::new(Arc::new(Pop3Config::default()), conn, now);
//! let mut sent = Vec::new();
//! session.handle_input(now, Peer::Client, b"CAPA\r\nQUIT\r\n");
//! while let Some(action) = session.poll_action() {
//!     match action {
//!         Action::Write { bytes, .. } => sent.extend_from_slice(&bytes), // socket write
//!         Action::Request { id, request } => {
//!             // run `request` on a worker, then: session.handle_reply(now, id, reply)
//!             # let _ = (id, request);
//!         }
//!         Action::Close { .. } => break, // flush, then close the socket
//!         Action::StartTls { .. } => unreachable!("consumed by tls::Secured"),
//!         // Only proxy front-ends open back-end connections.
//!         Action::Connect { .. } | Action::Splice { .. } => unreachable!(),
//!     }
//! }
//! assert!(sent.starts_with(b"+OK"));
//! assert!(sent.ends_with(b"POP3 closing\r\n"));
//! // session.poll_timeout() gives the next deadline for session.handle_timeout(now).
//! ```

pub mod authd;
pub mod dsn;
#[cfg(any(fuzzing, test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod imap;
pub mod io;
pub mod keywords;
pub mod listener;
pub mod maildir;
pub mod mime;
pub mod net;
mod outbox;
pub mod pop3;
pub mod proxy;
pub mod refusal;
pub mod request;
pub mod secret;
pub mod smtp;
pub mod smtp_client;
pub mod timer;
pub mod tls;
pub mod uidlist;
pub mod user;
pub mod wire;

pub use io::{Action, MAX_READ, Peer, RequestId, Session};
pub use request::{
    Account, Backend, BackendRecipient, DeliveryId, Failure, MessageInfo, MessageRef,
    RecipientCheck, RelayEnvelope, Reply, Request, Route, Service,
};
pub use secret::Secret;
