//! Queue state files: parse → render → parse, and entries built from arbitrary text.
//! The harness and its input layout: `tidegate_store::fuzzing::queue_entry`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_store::fuzzing::queue_entry(data));
