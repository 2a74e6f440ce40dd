//! Replays the committed fuzz inputs of the store's targets (`users_file`,
//! `queue_entry`) through `tidegate_store::fuzzing` on stable, as
//! `core/tests/fuzz_corpus.rs` does for the core's: the seeds
//! `fuzz/corpus/<target>/seed-*` and every file under `fuzz/regressions/<target>/`.

use std::fs;

use tidegate_store::fuzzing;

#[path = "../../core/tests/corpus_replay/mod.rs"]
mod corpus_replay;
use corpus_replay::{fuzz_dir, replay_with};

/// A harness: runs one input, panics when an invariant breaks.
type Harness = fn(&[u8]);

/// The store's fuzz targets and their harnesses; must match the store targets in
/// `fuzz/fuzz_targets/` (and `STORE_TARGETS` in `core/tests/fuzz_corpus.rs`).
const TARGETS: &[(&str, Harness)] = &[
    ("users_file", fuzzing::users_file),
    ("queue_entry", fuzzing::queue_entry),
];

/// Runs `target`'s seeds and regressions through its harness, as the core's replay
/// does (`open-*` regressions, known unfixed bugs, must fail).
fn replay(target: &str) {
    let (_, harness) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("known target");
    replay_with(target, *harness);
}

#[test]
fn users_file_corpus() {
    replay("users_file");
}

#[test]
fn queue_entry_corpus() {
    replay("queue_entry");
}

/// The fuzz crate has a target file for every harness here.
#[test]
fn every_store_target_has_a_fuzz_target() {
    for (name, _) in TARGETS {
        let path = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(path.is_file(), "{} is missing", path.display());
    }
}

/// The main seeds are valid files, so the fuzzer starts from inputs that reach the
/// round trips and not only the error paths.
#[test]
fn the_example_seeds_are_valid_files() {
    let users = fs::read_to_string(fuzz_dir().join("corpus/users_file/seed-docs-example"))
        .expect("users seed");
    let table = tidegate_store::UserTable::parse(&users).expect("the users seed parses");
    assert_eq!(table.len(), 3);
    let queue = fs::read_to_string(fuzz_dir().join("corpus/queue_entry/seed-mixed-states"))
        .expect("queue seed");
    let entry = tidegate_store::queue::QueueEntry::from_text("x", &queue).expect("parses");
    assert_eq!(entry.recipients.len(), 3);
}
