//! IMAP server session driven by a script of shell events (input, EOF, time, drains,
//! store replies), checking the driving contract at every step.
//! The harness and its script format: `tidegate_core::fuzzing::imap_session`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// One clock reading for every run: the harness only uses time differences from it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::imap_session(*EPOCH, data));
