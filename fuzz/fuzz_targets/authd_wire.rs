//! authd line grammar: one client or server line in, no panic, parse/encode round trip.
//! The harness and its input layout: `tidegate_core::fuzzing::authd_wire`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::authd_wire(data));
