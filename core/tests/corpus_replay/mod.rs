//! The stable replay of committed fuzz inputs, shared by `core/tests/fuzz_corpus.rs` and
//! `store/tests/fuzz_corpus.rs` (included there by path): the seeds
//! `fuzz/corpus/<target>/seed-*` and every file under `fuzz/regressions/<target>/`, run
//! through the target's harness on stable Rust.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// The fuzz crate's directory (a sibling of the core and store crates).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files in `dir` whose names pass `keep`, sorted; none if `dir` does not exist.
pub fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
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
///
/// A regression named `open-*` reproduces a bug that is not fixed yet (see
/// `fuzz/regressions/README.md`): it is expected to fail, is reported on stderr, and
/// fails the test once it passes, so that the fix renames it into a plain regression.
pub fn replay_with(target: &str, harness: fn(&[u8])) {
    let seeds = files(&fuzz_dir().join("corpus").join(target), |n| {
        n.starts_with("seed-")
    });
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/corpus/{target}/ (committed seeds are named seed-*)"
    );
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
            (true, true) => eprintln!("known open bug still reproduces: {}", path.display()),
            (true, false) => fixed.push(path.display().to_string()),
            (false, false) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed: {failures:#?}",
        failures.len(),
        seeds.len() + regressions.len()
    );
    assert!(
        fixed.is_empty(),
        "{target}: these known-bug inputs pass now; drop their `open-` prefix so they \
         guard the fix: {fixed:#?}"
    );
}
