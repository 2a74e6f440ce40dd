//! MIME part tree, ENVELOPE, BODYSTRUCTURE and sections of arbitrary bytes: offsets stay inside the input.
//! The harness and its input layout: `tidegate_core::fuzzing::mime_structure`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::mime_structure(data));
