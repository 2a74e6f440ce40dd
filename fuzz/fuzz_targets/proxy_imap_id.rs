//! The IMAP ID argument parser (RFC 2971) with the proxy fields.
//! The harness and its invariants: `tidegate_core::fuzzing::proxy_imap_id`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::proxy_imap_id(data));
