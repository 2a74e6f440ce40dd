//! Back-end connections and splicing on the mio shell: the shared splice tests run
//! against `tidegate_shell_mio::serve`. The checks of this shell's pipe pool are in
//! `splice_pipes.rs`, a test binary of their own.

#[path = "../../shell-tests/splice.rs"]
mod shared;

use std::io;

use tidegate_store::{ServerSpec, Shutdown};

/// The shell under test, run by the shared harness.
fn serve(spec: ServerSpec, shutdown: Shutdown) -> io::Result<()> {
    tidegate_shell_mio::serve(spec, shutdown)
}
