//! Dot-stuffing: stuff/unstuff round trip, chunking invariance, unstuffer vs a reference.
//! The harness and its input layout: `tidegate_core::fuzzing::dot_stuffing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::dot_stuffing(data));
