//! `registry`: the cost the session registry (`ctl who`, `ctl kick`) adds to every
//! connection: one registration, one account noted and one removal, from several
//! threads at once while `--open` other entries are held (the connections already open),
//! then the time of one `ctl who` snapshot and one kick scan over them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tidegate_store::{Closer, SessionId, SessionRegistry};

/// Arguments of `registry`.
#[derive(Args)]
pub struct RegistryArgs {
    /// Threads registering at once (the shell's event loops or executor threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Register, note and drop cycles per thread.
    #[arg(long, default_value_t = 1_000_000)]
    cycles: usize,
    /// Entries held for the whole run.
    #[arg(long, default_value_t = 10_000)]
    open: usize,
}

/// Closes nothing: the bench measures the registry, not a shell.
struct Nobody;

impl Closer for Nobody {
    fn close(&self, _id: SessionId) {}
}

/// Runs the measurement and prints a `RESULT` line and one for people.
pub fn registry(args: RegistryArgs) -> Result<(), String> {
    let registry = Arc::new(SessionRegistry::new());
    let closer: Arc<dyn Closer> = Arc::new(Nobody);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let now = Instant::now();
    let held: Vec<_> = (0..args.open)
        .map(|i| {
            let mut r = registry.register(0, peer, now, closer.clone());
            r.note_account(Some(&format!("user{i}@bench.test")), now);
            r
        })
        .collect();
    let started = Instant::now();
    let threads: Vec<_> = (0..args.threads.max(1))
        .map(|t| {
            let registry = registry.clone();
            let closer = closer.clone();
            let cycles = args.cycles;
            std::thread::spawn(move || {
                for _ in 0..cycles {
                    let now = Instant::now();
                    let mut r = registry.register(t, peer, now, closer.clone());
                    r.note_account(Some("cycle@bench.test"), now);
                    drop(r);
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a bench thread panicked".to_owned())?;
    }
    let elapsed = started.elapsed();
    let total = args.cycles * args.threads.max(1);
    let per_cycle = elapsed.as_nanos() as f64 / args.cycles.max(1) as f64;
    let snapshot_started = Instant::now();
    let listed = registry.snapshot().len();
    let snapshot = snapshot_started.elapsed();
    let kick_started = Instant::now();
    let kicked = registry.kick("nobody@bench.test");
    let kick = kick_started.elapsed();
    drop(held);
    println!(
        "RESULT threads={} cycles={total} open={} ns_per_cycle_per_thread={per_cycle:.0} \
         cycles_per_s={:.0} snapshot_ms={:.2} kick_scan_ms={:.2} listed={listed} kicked={kicked}",
        args.threads,
        args.open,
        total as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        ms(snapshot),
        ms(kick),
    );
    println!(
        "{total} register+note+drop cycles on {} threads in {elapsed:.2?} \
         ({per_cycle:.0} ns each per thread) with {} entries held; \
         snapshot of {listed} in {snapshot:.2?}, kick scan in {kick:.2?}",
        args.threads, args.open
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
