//! SMTP client session fed an arbitrary server: bytes, EOF, deadlines, TLS results.
//! Exactly one report, nothing after Close, bounded buffers, no credentials in clear.
//! The harness and its script format: `tidegate_core::fuzzing::smtp_client_session`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// One epoch for every run; only differences matter to the session.
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::smtp_client_session(*START, data));
