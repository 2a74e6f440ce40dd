//! authd: the networked user-lookup service that lets many front-ends share one user
//! database (design.md §1). The protocol reference is docs/authd.md.
//!
//! * [`wire`]: the line grammar both sides speak.
//! * [`AuthdServerSession`]: the server, a [`crate::Session`] that turns requests into
//!   [`crate::Request::LookupUser`] and [`crate::Request::VerifyUser`];
//!   [`AuthdListener`] makes one per accepted connection (plain or implicit TLS).
//! * [`AuthdClient`]: the client as a codec, driven by the store's blocking
//!   connection pool.

mod client;
mod config;
mod listener;
mod server;
pub mod wire;

pub use client::{AuthdClient, AuthdClientLimits, ClientEvent, SubmitError};
pub use config::{AuthdConfig, AuthdLimits};
pub use listener::{AuthdListener, BUSY_REPLY};
pub use server::AuthdServerSession;

#[cfg(test)]
mod tests;
