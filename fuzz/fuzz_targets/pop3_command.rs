//! POP3 command parser: one line in, no panic, keyword case irrelevant, parse/encode round trip.
//! The harness and its input layout: `tidegate_core::fuzzing::pop3_command`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::pop3_command(data));
