//! The mio shell's pipe pool for `splice(2)`: idle spliced connections hold no pipes.
//! A test binary of its own, so that no other test opens or closes descriptors in this
//! process while it counts them.

#[allow(dead_code)] // the harness also serves the shared splice tests
#[path = "../../shell-tests/proxy.rs"]
mod proxy;

use std::io;

use tidegate_store::{ServerSpec, Shutdown};

use proxy::{Server, idle_spliced};

/// The shell under test, run by the shared harness.
fn serve(spec: ServerSpec, shutdown: Shutdown) -> io::Result<()> {
    tidegate_shell_mio::serve(spec, shutdown)
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

#[test]
fn idle_spliced_connections_hold_no_pipes() {
    // Each spliced connection is four descriptors in this process: the client and the
    // back-end's socket (test side) and the shell's two. A pipe kept per direction would
    // add four more each; the pool holds only the few pipes in use at one time.
    const CONNECTIONS: usize = 40;
    let server = Server::default();
    let before = open_fds();
    let (clients, backends) = idle_spliced(&server, CONNECTIONS);
    let held = open_fds() - before;
    assert!(
        held <= 4 * CONNECTIONS + 8,
        "{held} descriptors for {CONNECTIONS} idle spliced connections"
    );
    drop((clients, backends));
}
