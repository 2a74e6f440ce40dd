//! SMTP reply reader (the outbound client's parser) fed arbitrary server bytes, whole and
//! chunked: same replies, bounded lines and buffers, re-encoding round trip.
//! The harness: `tidegate_core::fuzzing::smtp_reply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::smtp_reply(data));
