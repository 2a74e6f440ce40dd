//! The users file: parse vs line-by-line read, lookups, render → parse round trip.
//! The harness and its input layout: `tidegate_store::fuzzing::users_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_store::fuzzing::users_file(data));
