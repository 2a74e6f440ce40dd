//! Replays the committed fuzz inputs through the harnesses of `tidegate_core::fuzzing`
//! on stable, so every `cargo test` checks them: the seeds `fuzz/corpus/<target>/seed-*`
//! and every file under `fuzz/regressions/<target>/` (inputs that once found a bug).
//!
//! To replay one input by hand:
//! `cargo test -p tidegate-core --test fuzz_corpus -- --nocapture`, or run the fuzz target
//! on it: `cd fuzz && cargo +nightly fuzz run <target> <file>`.

// Test code reads the corpus files and takes one clock reading as the sessions' epoch;
// the core itself never does either.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::fs;
use std::panic;
use std::sync::LazyLock;
use std::time::Instant;

use tidegate_core::fuzzing::{self, FuzzTls};

mod corpus_replay;
use corpus_replay::{files, fuzz_dir, replay_with};

/// The TLS configs of the `*_tls_session` targets, built once.
static TLS: LazyLock<FuzzTls> = LazyLock::new(FuzzTls::new);

/// A harness: runs one input, panics when an invariant breaks.
type Harness = fn(&[u8]);

/// Every fuzz target and the harness it runs; must match `fuzz/fuzz_targets/`.
const TARGETS: &[(&str, Harness)] = &[
    ("pop3_command", fuzzing::pop3_command),
    ("line_framer", fuzzing::line_framer),
    ("dot_stuffing", fuzzing::dot_stuffing),
    ("pop3_session", |data| {
        fuzzing::pop3_session(Instant::now(), data)
    }),
    ("pop3_tls_session", |data| {
        fuzzing::pop3_tls_session(Instant::now(), &TLS, data)
    }),
    ("smtp_command", fuzzing::smtp_command),
    ("smtp_data", fuzzing::smtp_data),
    ("smtp_session", |data| {
        fuzzing::smtp_session(Instant::now(), data)
    }),
    ("smtp_tls_session", |data| {
        fuzzing::smtp_tls_session(Instant::now(), &TLS, data)
    }),
    ("smtp_reply", fuzzing::smtp_reply),
    ("smtp_client_session", |data| {
        fuzzing::smtp_client_session(Instant::now(), data)
    }),
    ("proxy_header", fuzzing::proxy_header),
    ("proxy_xclient", fuzzing::proxy_xclient),
    ("proxy_pop3_session", |data| {
        fuzzing::proxy_pop3_session(Instant::now(), data)
    }),
    ("proxy_submission_session", |data| {
        fuzzing::proxy_submission_session(Instant::now(), data)
    }),
    ("proxy_imap_session", |data| {
        fuzzing::proxy_imap_session(Instant::now(), data)
    }),
    ("proxy_imap_id", fuzzing::proxy_imap_id),
    ("mime_structure", fuzzing::mime_structure),
    ("uidlist", fuzzing::uidlist),
    ("keywords", fuzzing::keywords),
    ("maildir_name", fuzzing::maildir_name),
    ("authd_wire", fuzzing::authd_wire),
    ("authd_client", fuzzing::authd_client),
    ("authd_session", |data| {
        fuzzing::authd_session(Instant::now(), data)
    }),
    ("imap_fragment", fuzzing::imap_fragment),
    ("imap_command", fuzzing::imap_command),
    ("imap_session", |data| {
        fuzzing::imap_session(Instant::now(), data)
    }),
    ("imap_tls_session", |data| {
        fuzzing::imap_tls_session(Instant::now(), &TLS, data)
    }),
];

/// Fuzz targets whose harnesses live in `tidegate_store::fuzzing` (the store's file
/// formats); `store/tests/fuzz_corpus.rs` replays them.
const STORE_TARGETS: &[&str] = &["users_file", "queue_entry"];

/// Whether `name` is a fuzz target replayed here or by the store.
fn is_replayed(name: &str) -> bool {
    TARGETS.iter().any(|(t, _)| *t == name) || STORE_TARGETS.contains(&name)
}

/// Runs `target`'s seeds and regressions through its harness (see
/// [`corpus_replay::replay_with`]).
fn replay(target: &str) {
    let harness = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, h)| *h)
        .expect("known target");
    replay_with(target, harness);
}

#[test]
fn pop3_command_corpus() {
    replay("pop3_command");
}

#[test]
fn line_framer_corpus() {
    replay("line_framer");
}

#[test]
fn dot_stuffing_corpus() {
    replay("dot_stuffing");
}

#[test]
fn pop3_session_corpus() {
    replay("pop3_session");
}

#[test]
fn pop3_tls_session_corpus() {
    replay("pop3_tls_session");
}

#[test]
fn smtp_command_corpus() {
    replay("smtp_command");
}

#[test]
fn smtp_data_corpus() {
    replay("smtp_data");
}

#[test]
fn smtp_session_corpus() {
    replay("smtp_session");
}

#[test]
fn smtp_tls_session_corpus() {
    replay("smtp_tls_session");
}

#[test]
fn mime_structure_corpus() {
    replay("mime_structure");
}

#[test]
fn uidlist_corpus() {
    replay("uidlist");
}

#[test]
fn keywords_corpus() {
    replay("keywords");
}

#[test]
fn maildir_name_corpus() {
    replay("maildir_name");
}

#[test]
fn authd_wire_corpus() {
    replay("authd_wire");
}

#[test]
fn authd_client_corpus() {
    replay("authd_client");
}

#[test]
fn authd_session_corpus() {
    replay("authd_session");
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header");
}

#[test]
fn proxy_xclient_corpus() {
    replay("proxy_xclient");
}

#[test]
fn proxy_pop3_session_corpus() {
    replay("proxy_pop3_session");
}

#[test]
fn proxy_submission_session_corpus() {
    replay("proxy_submission_session");
}

#[test]
fn proxy_imap_session_corpus() {
    replay("proxy_imap_session");
}

#[test]
fn proxy_imap_id_corpus() {
    replay("proxy_imap_id");
}

/// Every corpus or regression directory belongs to a target this file replays, so a new
/// fuzz target cannot be forgotten here.
#[test]
fn every_target_is_replayed() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory entry").path();
            if !path.is_dir() {
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            assert!(
                is_replayed(name),
                "fuzz/{kind}/{name} has no harness in tests/fuzz_corpus.rs"
            );
        }
    }
    for entry in fs::read_dir(fuzz_dir().join("fuzz_targets")).expect("fuzz/fuzz_targets") {
        let path = entry.expect("readable directory entry").path();
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            is_replayed(name),
            "fuzz target {name} is not replayed by tests/fuzz_corpus.rs"
        );
    }
}

/// Prints what each session seed does, event by event (`cargo test -p tidegate-core
/// --test fuzz_corpus -- --ignored --nocapture show_session_seeds`), for writing and
/// checking seeds. `FUZZ_SEED=substring` limits it to matching paths (a target name
/// works too, e.g. `FUZZ_SEED=smtp_tls`).
#[test]
#[ignore = "prints transcripts; run by hand"]
fn show_session_seeds() {
    type Trace = fn(Instant, Option<&FuzzTls>, &[u8], &mut dyn FnMut(&str));
    let only = std::env::var("FUZZ_SEED").unwrap_or_default();
    let sessions: [(&str, Option<&FuzzTls>, Trace); 4] = [
        ("pop3_session", None, fuzzing::pop3_session_trace),
        ("pop3_tls_session", Some(&*TLS), fuzzing::pop3_session_trace),
        ("smtp_session", None, fuzzing::smtp_session_trace),
        ("smtp_tls_session", Some(&*TLS), fuzzing::smtp_session_trace),
    ];
    for (target, tls, trace) in sessions {
        let dir = fuzz_dir().join("corpus").join(target);
        let mut inputs = files(&dir, |n| n.starts_with("seed-"));
        inputs.extend(files(&fuzz_dir().join("regressions").join(target), |_| {
            true
        }));
        for path in inputs {
            if !path.to_string_lossy().contains(&only) {
                continue;
            }
            println!("==== {}", path.display());
            let data = fs::read(&path).expect("readable corpus file");
            let run = panic::catch_unwind(panic::AssertUnwindSafe(|| {
                trace(Instant::now(), tls, &data, &mut |line| println!("{line}"))
            }));
            if run.is_err() {
                println!("==== FAILED");
            }
        }
    }
}

#[test]
fn imap_fragment_corpus() {
    replay("imap_fragment");
}

#[test]
fn imap_command_corpus() {
    replay("imap_command");
}

#[test]
fn imap_session_corpus() {
    replay("imap_session");
}

#[test]
fn imap_tls_session_corpus() {
    replay("imap_tls_session");
}

#[test]
fn smtp_reply_corpus() {
    replay("smtp_reply");
}

#[test]
fn smtp_client_session_corpus() {
    replay("smtp_client_session");
}
