//! keywords file parser and growth rule: round trip, letters never renamed, 26 at most.
//! The harness and its input layout: `tidegate_core::fuzzing::keywords`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::keywords(data));
