//! SIGINT/SIGTERM start a graceful shutdown; a second one exits at once. SIGHUP
//! reloads the config and the user database.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tidegate_store::Shutdown;

use crate::wiring::Reloader;

/// Starts a thread that triggers `shutdown` on the first SIGINT/SIGTERM.
pub fn install(shutdown: Shutdown) -> Result<(), String> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shutdown.is_triggered() {
                    log::warn!("second signal {signal}: exiting without waiting for sessions");
                    std::process::exit(130);
                }
                log::info!("signal {signal}: stopping; open sessions may finish");
                shutdown.trigger();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Starts a thread that reloads on every SIGHUP (`kill -HUP`, like `tidegate ctl reload`).
pub fn install_reload(reloader: Arc<Reloader>) -> Result<(), String> {
    let mut signals =
        Signals::new([SIGHUP]).map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                match reloader.reload() {
                    Ok(what) => log::info!("SIGHUP: {what}"),
                    Err(reason) => {
                        log::error!("SIGHUP: reload refused, the running config stays: {reason}")
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
