//! IMAP fragmentizer: lines and literals found the same however the input is cut.
//! The harness and its input layout: `tidegate_core::fuzzing::imap_fragment`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::imap_fragment(data));
