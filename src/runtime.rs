//! The runtime shell chosen at build time: smol by default, mio with
//! `--no-default-features --features mio`.

use std::sync::Arc;

use tidegate_store::{ListenerChanges, ServerSpec, SessionRegistry, Shutdown};

#[cfg(not(any(feature = "smol", feature = "mio")))]
compile_error!("enable one runtime feature: `smol` (default) or `mio`");

/// The name of the runtime this binary was built with.
#[cfg(feature = "mio")]
pub const NAME: &str = "mio";
/// The name of the runtime this binary was built with.
#[cfg(all(feature = "smol", not(feature = "mio")))]
pub const NAME: &str = "smol";

/// Serves until `shutdown` fires, applying the listener changes reloads submit and
/// recording open connections in `sessions` (`ctl who`, `ctl kick`).
#[cfg(feature = "mio")]
pub fn serve(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
    sessions: Arc<SessionRegistry>,
) -> std::io::Result<()> {
    tidegate_shell_mio::serve_with_sessions(spec, shutdown, changes, sessions)
}

/// Serves until `shutdown` fires, applying the listener changes reloads submit and
/// recording open connections in `sessions` (`ctl who`, `ctl kick`).
#[cfg(all(feature = "smol", not(feature = "mio")))]
pub fn serve(
    spec: ServerSpec,
    shutdown: Shutdown,
    changes: ListenerChanges,
    sessions: Arc<SessionRegistry>,
) -> std::io::Result<()> {
    tidegate_shell_smol::serve_with_sessions(spec, shutdown, changes, sessions)
}
