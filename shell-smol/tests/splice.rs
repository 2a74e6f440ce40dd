//! Back-end connections and splicing on the smol shell: the shared splice tests run
//! against `tidegate_shell_smol::serve`.

#[path = "../../shell-tests/splice.rs"]
mod shared;

use std::io;

use tidegate_store::{ServerSpec, Shutdown};

/// The shell under test, run by the shared harness.
fn serve(spec: ServerSpec, shutdown: Shutdown) -> io::Result<()> {
    tidegate_shell_smol::serve(spec, shutdown)
}
