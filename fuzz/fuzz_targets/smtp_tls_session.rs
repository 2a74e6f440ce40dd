//! SMTP behind the core's TLS layer, with a real in-memory rustls client: STARTTLS,
//! garbage instead of a handshake, and session scripts inside TLS records.
//! The harness and its script format: `tidegate_core::fuzzing::smtp_tls_session`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tidegate_core::fuzzing::FuzzTls;

/// One clock reading for every run: the harness only uses time differences from it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Certificates and configs, built once.
static TLS: LazyLock<FuzzTls> = LazyLock::new(FuzzTls::new);

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::smtp_tls_session(*EPOCH, &TLS, data));
