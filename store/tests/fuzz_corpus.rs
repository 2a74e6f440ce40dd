//! Replays the committed fuzz inputs of the store's targets (`users_file`,
//! `queue_entry`) through `tidegate_store::fuzzing` on stable, as
//! `core/tests/fuzz_corpus.rs` does for the core's: the seeds
//! `fuzz/corpus/<target>/seed-*` and every file under `fuzz/regressions/<target>/`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

use tidegate_store::fuzzing;

/// A harness: runs one input, panics when an invariant breaks.
type Harness = fn(&[u8]);

/// The store's fuzz targets and their harnesses; must match the store targets in
/// `fuzz/fuzz_targets/` (and `STORE_TARGETS` in `core/tests/fuzz_corpus.rs`).
const TARGETS: &[(&str, Harness)] = &[
    ("users_file", fuzzing::users_file),
    ("queue_entry", fuzzing::queue_entry),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files in `dir` whose names pass `keep`, sorted; none if `dir` does not exist.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    files
}

/// Runs `target`'s seeds and regressions; fails listing every input that panicked.
/// `open-*` regressions (known, unfixed bugs) must fail, as in the core's replay.
fn replay(target: &str) {
    let (_, harness) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("known target");
    let seeds = files(&fuzz_dir().join("corpus").join(target), |n| {
        n.starts_with("seed-")
    });
    assert!(!seeds.is_empty(), "no seeds in fuzz/corpus/{target}/");
    let regressions = files(&fuzz_dir().join("regressions").join(target), |n| {
        !n.starts_with('.')
    });
    let mut failures = Vec::new();
    let mut fixed = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).expect("readable corpus file");
        let failed = panic::catch_unwind(|| harness(&data)).is_err();
        let open = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("open-"));
        match (open, failed) {
            (false, true) => failures.push(path.display().to_string()),
            (true, false) => fixed.push(path.display().to_string()),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{target}: failed: {failures:#?}");
    assert!(fixed.is_empty(), "{target}: drop `open-` from {fixed:#?}");
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
