//! SMTP/LMTP command parser: one line in, no panic, verb case irrelevant, accepted paths
//! within the RFC 5321 length limits, parse/encode round trip.
//! The harness and its input layout: `tidegate_core::fuzzing::smtp_command`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::smtp_command(data));
