//! The XCLIENT parser and encoder with xtext.
//! The harness and its invariants: `tidegate_core::fuzzing::proxy_xclient`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::proxy_xclient(data));
