//! authd client codec fed arbitrary server bytes between requests: every request
//! answered exactly once, of its kind, nothing after Closed.
//! The harness and its script format: `tidegate_core::fuzzing::authd_client`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::authd_client(data));
