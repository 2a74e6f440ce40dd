//! IMAP command grammar on one complete command: no panic, name case irrelevant.
//! The harness and its input layout: `tidegate_core::fuzzing::imap_command`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::imap_command(data));
