//! SIGINT/SIGTERM start a graceful shutdown; a second one exits at once.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tidegate_store::Shutdown;

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
