//! Proxy mode (design.md §1): front-end sessions that speak each protocol up to the
//! login, ask the host where the user lives ([`crate::Request::Route`]), log in on the
//! back-end on the user's behalf, tell it the real client address, and hand both
//! connections over ([`crate::Action::Splice`], or a relay when a leg uses TLS).
//!
//! | module | concept |
//! | --- | --- |
//! | [`route`] | settings, the client facts, the hop-count rule |
//! | [`haproxy`] | PROXY protocol v1 parsing, v2 encoding and parsing |
//! | [`xclient`] | Postfix XCLIENT with xtext |
//! | [`imap_id`] | IMAP ID with the x-originating fields |
//! | [`backend_tls`] | rustls client for the back-end leg |
//! | [`sasl`] | PLAIN/LOGIN credentials in, PLAIN out |
//! | `front` | the client leg, route lookup, back-end connect and hand-over the front-ends share |
//! | [`pop3`] | [`Pop3FrontSession`] |
//! | [`submission`] | [`SubmissionFrontSession`] |
//! | [`imap`] | [`ImapFrontSession`] |
//! | [`gate`] | [`ProxyHeaderGate`]: the back-end side, reading PROXY headers from trusted peers |
//!
//! `docs/proxy.md` shows the bytes each front-end sends to the back-end.

mod backend;
pub mod backend_tls;
mod front;
pub mod gate;
pub mod haproxy;
pub mod imap;
pub mod imap_id;
pub mod pop3;
mod relay;
pub mod route;
pub mod sasl;
pub mod submission;
pub mod xclient;

pub use gate::{ProxiedClient, ProxyHeaderGate};
pub use haproxy::{ProxiedAddresses, ProxiedTls, ProxyHeader};
pub use imap::ImapFrontSession;
pub use pop3::Pop3FrontSession;
pub use route::{BackendTlsMode, ClientAddressMode, FrontConn, ProxyConfig, ProxyLimits};
pub use submission::SubmissionFrontSession;
