//! The PROXY protocol v1/v2 parser and v2 encoder.
//! The harness and its invariants: `tidegate_core::fuzzing::proxy_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::proxy_header(data));
