//! IMAP server session under TLS (STARTTLS or implicit) with a real rustls client, driven
//! by the same script as `imap_session` plus TLS operations.
//! The harness and its script format: `tidegate_core::fuzzing::imap_tls_session`.
#![no_main]

use std::sync::LazyLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tidegate_core::fuzzing::FuzzTls;

/// One clock reading for every run: the harness only uses time differences from it.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// The fixed test PKI, parsed once.
static TLS: LazyLock<FuzzTls> = LazyLock::new(FuzzTls::new);

fuzz_target!(|data: &[u8]| tidegate_core::fuzzing::imap_tls_session(*EPOCH, &TLS, data));
