//! uidlist file parser and merge rule: round trip, UIDs never reused or renumbered.
//! The harness and its input layout: `tidegate_core::fuzzing::uidlist`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::uidlist(data));
