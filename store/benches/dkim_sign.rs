//! DKIM signing speed: signatures per second for a small message (the per-message cost:
//! key operation and header work) and body hashing throughput for a large one (the
//! relaxed canonicalisation plus SHA-256), for an RSA-2048 and an Ed25519 key. Reports
//! CPU time, since on a shared machine the wall clock also counts other processes.
//!
//! `cargo bench -p tidegate-store --bench dkim_sign`

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use tidegate_store::dkim::{DkimSigner, KeyKind, generate_key};

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn message(body_bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: benchmark\r\n\
Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@example.com>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
    );
    let line = b"The quick brown fox  jumps over the lazy dog,\tagain and again.  \r\n";
    while out.len() < body_bytes {
        out.extend_from_slice(line);
    }
    out
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let small = dir.path().join("small.eml");
    let large = dir.path().join("large.eml");
    std::fs::File::create(&small)
        .and_then(|mut f| f.write_all(&message(4 * 1024)))
        .expect("write small message");
    std::fs::File::create(&large)
        .and_then(|mut f| f.write_all(&message(20 * 1024 * 1024)))
        .expect("write large message");

    for (kind, name) in [
        (KeyKind::Rsa2048, "rsa-2048"),
        (KeyKind::Ed25519, "ed25519"),
    ] {
        let key = dir.path().join(format!("{name}.pem"));
        generate_key(&key, kind).expect("generate key");
        let signer = DkimSigner::load("example.com", "bench", &key).expect("load key");

        let rounds = 2000;
        let start = cpu_time();
        for _ in 0..rounds {
            black_box(signer.sign_file(&small).expect("sign"));
        }
        let per_second = f64::from(rounds) / (cpu_time() - start).as_secs_f64();
        println!("{name}: 4 KiB message: {per_second:.0} signatures/s (CPU time)");

        let rounds = 5;
        let start = cpu_time();
        for _ in 0..rounds {
            black_box(signer.sign_file(&large).expect("sign"));
        }
        let seconds = (cpu_time() - start).as_secs_f64();
        let mib = 20.0 * f64::from(rounds);
        println!(
            "{name}: 20 MiB message: {:.0} MiB/s hashed (CPU time)",
            mib / seconds
        );
    }
}
