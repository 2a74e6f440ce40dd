//! CRLF line framer: whole vs chunked input give identical lines; buffered bytes bounded.
//! The harness and its input layout: `tidegate_core::fuzzing::line_framer`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::line_framer(data));
