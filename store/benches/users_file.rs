//! Loads a generated users file of a million users and reports the load time and the
//! process's memory (`VmRSS`, `VmHWM` from `/proc/self/status`), then times lookups.
//! Targets (docs/users.md): under 2 s and under 300 MB.
//!
//! `cargo bench -p tidegate-store --bench users_file [-- USERS]`

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use tidegate_core::user::Lookup;
use tidegate_store::UserDirectory;
use tidegate_store::users::UsersFile;

/// A real `{SHA512-CRYPT}` hash (`openssl passwd -6`), repeated: generating a million
/// distinct hashes would take minutes and changes nothing the load does.
const HASH: &str = "{SHA512-CRYPT}$6$8DqW2pXv$QDPMcKF3oa8VMMncr3qPUyjLB2i6FLoSPunQIlwb9GZRSFFCYfK.XDv/uB/y4PJfLBWvzV.tsn10hDo936f0C1";

fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// CPU time (user + system) of this process so far: on a shared machine the wall clock
/// also counts other processes' turns.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn main() {
    let users: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("users");
    let mut out = BufWriter::new(File::create(&path).expect("create users file"));
    writeln!(out, "# {users} generated users").expect("write");
    for i in 0..users {
        write!(
            out,
            "user{i}@domain{}.example {HASH} quota=1073741824",
            i % 100
        )
        .expect("write");
        if i % 10 == 0 {
            write!(out, " tohost=10.0.{}.{}", (i / 256) % 256, i % 256).expect("write");
        }
        writeln!(out).expect("write");
    }
    out.into_inner().expect("flush").sync_all().expect("sync");
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());

    let rss_before = status("VmRSS");
    let started = Instant::now();
    let cpu_started = cpu_time();
    let file = UsersFile::open(&path).expect("the generated file loads");
    let load = started.elapsed();
    let load_cpu = cpu_time().saturating_sub(cpu_started);
    let rss_after = status("VmRSS");
    let hwm = status("VmHWM");
    let table = file.current();
    assert_eq!(table.len() as u64, users);

    let probes = 200_000u64.min(users.max(1));
    let started = Instant::now();
    for n in 0..probes {
        let i = n.wrapping_mul(7_919) % users.max(1);
        let found = file.lookup(&format!("user{i}@domain{}.example", i % 100));
        assert!(matches!(found, Lookup::Found(_)));
        black_box(found);
    }
    let per_lookup = started.elapsed() / probes as u32;

    println!(
        "users file: {users} users, {:.1} MiB on disk",
        size as f64 / 1048576.0
    );
    println!(
        "load: {:.3} s wall clock, {:.3} s CPU",
        load.as_secs_f64(),
        load_cpu.as_secs_f64()
    );
    println!(
        "memory: VmRSS {:.1} MiB before, {:.1} MiB after (+{:.1} MiB for the table), VmHWM {:.1} MiB",
        mib(rss_before),
        mib(rss_after),
        mib(rss_after.saturating_sub(rss_before)),
        mib(hwm)
    );
    println!(
        "table arena: {:.1} MiB",
        table.arena_bytes() as f64 / 1048576.0
    );
    println!("lookup (UserDirectory::lookup, record built): {per_lookup:?} each over {probes}");
}
