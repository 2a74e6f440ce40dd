//! Fuzz harnesses shared by the cargo-fuzz targets in `fuzz/` and the stable corpus
//! replay in `tests/fuzz_corpus.rs`.
//!
//! Each harness takes arbitrary bytes, never fails on bad input, and panics (through
//! `assert!`) only when an invariant of the code under test is broken. The same
//! functions run under libFuzzer (`cfg(fuzzing)`) and under `cargo test` (the `fuzzing`
//! feature), so every committed seed and regression input is checked on stable too.
//!
//! | harness | input layout | invariants |
//! | --- | --- | --- |
//! | [`pop3_command`] | one command line | no panic; keyword case is irrelevant; parse → encode → parse round trip |
//! | [`line_framer`] | `max_line`, two chunking bytes, data | whole, chunked and lazily drained input give identical [`LineEvent`](crate::wire::LineEvent)s, equal to a reference splitter; buffered bytes bounded |
//! | [`dot_stuffing`] | mode, chunking byte, data | stuff → unstuff gives the CRLF-normalised input (or its TOP prefix); chunking-invariant; the unstuffer matches a reference and never emits more than it consumed |
//! | [`pop3_session`] | config byte, then a script of operations | see [`pop3_session`] |
//! | [`pop3_tls_session`] | the same, with TLS operations | see [`pop3_tls_session`] |
//! | [`smtp_command`] | one command line | no panic; verb case is irrelevant; parse → encode → parse round trip; accepted paths within RFC 5321 limits |
//! | [`smtp_data`] | `max_line`, two chunking bytes, a client byte stream | DATA/BDAT framing on [`LineBuffer`](crate::wire::LineBuffer) raw bytes as the SMTP session does it: chunking-invariant, equal to a reference, DATA ends only at CRLF `.` CRLF, output never longer than input |
//! | [`smtp_session`] | config byte, then a script of operations | see [`smtp_session`] |
//! | [`smtp_tls_session`] | the same, with TLS operations | see [`smtp_tls_session`] |
//! | [`smtp_reply`] | two chunking bytes, server bytes | whole and chunked input give the same replies; codes, line counts and lengths within limits; no control characters; re-encoding round trip |
//! | [`smtp_client_session`] | config byte, shape byte, then a script of operations | see [`smtp_client_session`] |
//! | [`proxy_header`] | PROXY v1/v2 bytes | no panic; exact length; prefixes incomplete; v2 re-encodes; built headers round-trip |
//! | [`proxy_xclient`] | one XCLIENT line | no panic; xtext round trip; parse → encode → parse |
//! | [`proxy_pop3_session`] | flags byte, then a script with a scripted back-end | see [`proxy_pop3_session`] |
//! | [`proxy_submission_session`] | the same | see [`proxy_submission_session`] |
//! | [`proxy_imap_session`] | the same | see [`proxy_imap_session`] |
//! | [`proxy_imap_id`] | ID command arguments | no panic; RFC 2971 limits; parse → encode → parse |
//! | [`mime_structure`] | a stored message | no panic; part offsets inside the input and inside their parent; renderings parenthesised; sections inside the input |
//! | [`uidlist`] | a uidlist file | no panic; parse → render → parse round trip; merge keeps UIDs increasing and never renumbers a listed name |
//! | [`keywords`] | a keywords file | no panic; parse → render → parse; adding names never renames a letter and refuses only non-atoms or a 27th name; translation keeps names |
//! | [`maildir_name`] | two flag bytes, a file name (and the parts of a delivered name) | no panic; the unique part survives adding flags; flags sorted, unique, order-independent; built names parse back to their parts; UIDLs fit RFC 1939 |
//! | `users_file` (in `tidegate_store::fuzzing`) | a users file | no panic; line-by-line reading agrees with parsing the text; every user found by its address; render → parse gives the same users |
//! | `queue_entry` (in `tidegate_store::fuzzing`) | a queue state file, or an entry's fields | no panic; parse → render → parse; entries built from arbitrary text round-trip |
//! | [`authd_wire`] | parser choice, one line | parse → encode → parse round trip; percent coding round trip |
//! | [`authd_client`] | chunking seed, a script of submits and server bytes | every request answered exactly once, of its kind; nothing after `Closed` |
//! | [`authd_session`] | config byte, then a script of operations | see [`authd_session`] |
//! | [`imap_fragment`] | `max_line`, two chunking bytes, a client byte stream | IMAP lines and literals: the same fragments however the input is cut; bounded buffering |
//! | [`imap_command`] | one complete command | no panic; command name case is irrelevant; bounded tags |
//! | [`imap_session`] | connection byte, then a script of operations | see [`imap_session`] |
//! | [`imap_tls_session`] | the same, with TLS operations | see [`imap_tls_session`] |
//!
//! `users_file` and `queue_entry` fuzz the store's own file formats; their harnesses
//! live in the store crate (`store/src/fuzzing.rs`, replayed by
//! `store/tests/fuzz_corpus.rs`) because the parsers need the store's password scheme
//! checks.
//!
//! The core never reads a clock, so the session harnesses take their starting
//! [`Instant`](std::time::Instant) from the caller; only time differences matter, so a
//! run is deterministic.
//!
//! The harnesses live in submodules by protocol (`wire`, `pop3`, `smtp`, and `mime` for
//! the IMAP storage formats); this module
//! holds what they share: the chunking generator, the script reader, the fixed test PKI
//! ([`FuzzTls`]) and the in-memory TLS client.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

mod authd;
mod imap;
mod keywords;
mod maildir;
mod mime;
mod pop3;
mod proxy;
mod smtp;
mod smtp_client;
mod wire;

pub use authd::{authd_client, authd_session, authd_wire};
pub use imap::{IMAP_OUTPUT_SLACK, imap_command, imap_fragment, imap_session, imap_tls_session};
pub use keywords::keywords;
pub use maildir::maildir_name;
pub use mime::{mime_structure, uidlist};
pub use pop3::{
    SESSION_OUTPUT_SLACK, pop3_command, pop3_session, pop3_session_trace, pop3_tls_session,
};
pub use proxy::{
    proxy_header, proxy_imap_id, proxy_imap_session, proxy_pop3_session, proxy_submission_session,
    proxy_xclient,
};
pub use smtp::{
    SMTP_OUTPUT_SLACK, smtp_command, smtp_data, smtp_session, smtp_session_trace, smtp_tls_session,
};
pub use smtp_client::{smtp_client_session, smtp_reply};
pub use wire::{dot_stuffing, line_framer};

// ---------------------------------------------------------------------------------------
// Chunking helper
// ---------------------------------------------------------------------------------------

/// A small deterministic generator of chunk sizes and coin flips, seeded from the input.
struct Chunker {
    state: u32,
    max_chunk: usize,
}

impl Chunker {
    fn new(seed: u16, max_chunk: usize) -> Self {
        Chunker {
            // Never zero: xorshift would stay at zero.
            state: (u32::from(seed) << 8) | 0x5a,
            max_chunk: max_chunk.max(1),
        }
    }

    fn next(&mut self) -> u32 {
        // xorshift32
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    fn chunk_len(&mut self) -> usize {
        1 + self.next() as usize % self.max_chunk
    }

    fn coin(&mut self) -> bool {
        self.next() & 0x100 != 0
    }

    /// Splits `data` into chunks of 1..=max_chunk bytes.
    fn split<'a>(&mut self, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let (head, tail) = data.split_at(self.chunk_len().min(data.len()));
            chunks.push(head);
            data = tail;
        }
        chunks
    }
}

// ---------------------------------------------------------------------------------------
// Session scripts and the TLS client
// ---------------------------------------------------------------------------------------

/// The unread part of a session script ([`pop3_session`], [`smtp_session`]).
struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// Bytes up to and including the next LF, or all that is left.
    fn line(&mut self) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.rest.len(), |lf| lf + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        line
    }
}

/// The TLS side of [`pop3_tls_session`] and [`smtp_tls_session`]: a server certificate
/// and a client that trusts it. [`FuzzTls::new`] builds them from a fixed test PKI; callers build them once.
#[derive(Debug, Clone)]
pub struct FuzzTls {
    /// The server's config, with a certificate for `localhost`.
    pub server: Arc<ServerConfig>,
    /// A client config that trusts that certificate.
    pub client: Arc<ClientConfig>,
}

impl FuzzTls {
    /// Configs from a fixed test CA and certificate compiled into this module, with the
    /// `ring` provider and no session resumption. Build once and reuse: it parses keys.
    pub fn new() -> Self {
        let der = |parts: &[&str]| {
            BASE64
                .decode(parts.concat())
                .expect("valid base64 in the fuzzing PKI")
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(der(FUZZ_LEAF_DER_BASE64))],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der(FUZZ_LEAF_KEY_BASE64))),
            )
            .expect("the fuzzing certificate and key match");
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(der(FUZZ_CA_DER_BASE64)))
            .expect("the fuzzing CA parses");
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // No session resumption: every run starts from a full handshake, so a run does
        // not depend on the runs before it.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        client.resumption = rustls::client::Resumption::disabled();
        FuzzTls {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }
}

impl Default for FuzzTls {
    fn default() -> Self {
        FuzzTls::new()
    }
}

/// Test-only PKI for [`FuzzTls::new`] (ECDSA P-256, valid until 2126, made with
/// `openssl`): a CA and a `localhost` certificate it signed. The key protects nothing.
/// The CA certificate the fuzzing client trusts (DER, base64).
const FUZZ_CA_DER_BASE64: &[&str] = &[
    "MIIBgjCCASigAwIBAgIUQqSZeTOATN7HSkMHuo/jq7Z7efkwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwT",
    "dGlkZWdhdGUgZnV6emluZyBDQTAgFw0yNjExMjkwNjA3NDdaGA8yMTI2MTEwNTA2MDc0N1owHjEcMBoG",
    "A1UEAwwTdGlkZWdhdGUgZnV6emluZyBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLyueQwkRpm/",
    "XnTC9nzVDnjUT9zEGLPegzV+ZplA56eqIqw4mTdglxp/t4m0d05zvYQ2eIKfzCNTAL8ZSVzpZjOjQjBA",
    "MA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBQqIYWbtZj6uQm6N8hr5l0E",
    "F8FD6DAKBggqhkjOPQQDAgNIADBFAiEA7tp6BzPVURU5RsxAaJy/HqCGbd0NugIrUYW9MC2dI7cCIEOi",
    "TI8uBY4qMVPS8R2mKQHQdz55vQ6xymX/RiQf6zE2",
];
/// The server's certificate for `localhost` (DER, base64).
const FUZZ_LEAF_DER_BASE64: &[&str] = &[
    "MIIBxDCCAWmgAwIBAgIUZxR0f0rcO/V1/o/0uz5CXN3ae34wCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwT",
    "dGlkZWdhdGUgZnV6emluZyBDQTAgFw0yNjExMjkwNjA3NDdaGA8yMTI2MTEwNTA2MDc0N1owFDESMBAG",
    "A1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpWkAf4TP1dzDYJ5jkv1faGIe",
    "2/GAQnVWcRKxosyXHILHFqNv8fAVmb3MQAIrbQxnb+0+ouw6149KlivczXVmrqOBjDCBiTAMBgNVHRMB",
    "Af8EAjAAMA4GA1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDATAUBgNVHREEDTALgglsb2Nh",
    "bGhvc3QwHwYDVR0jBBgwFoAUKiGFm7WY+rkJujfIa+ZdBBfBQ+gwHQYDVR0OBBYEFLNYGP/3G7O3DlS3",
    "+Ai2hbBph2QxMAoGCCqGSM49BAMCA0kAMEYCIQD4Yng02K9ZT7h/9Hbryex4LxZTFUvVmaHlmzkMxDqk",
    "kAIhAJA5D6ktZE0YXHSPqLBp53ZnsT7WoRY0DoLb7p2Ib3Xb",
];
/// The server's private key (PKCS#8 DER, base64).
const FUZZ_LEAF_KEY_BASE64: &[&str] = &[
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkGjoNcvWGDnvBEZICdbJDjiK8p/Er4/t",
    "aAUfn81yq56hRANCAASlaQB/hM/V3MNgnmOS/V9oYh7b8YBCdVZxErGizJccgscWo2/x8BWZvcxAAitt",
    "DGdv7T6i7DrXj0qWK9zNdWau",
];

/// The client's end of the connection: plain, or a rustls client once TLS started.
struct Client {
    config: Option<Arc<ClientConfig>>,
    tls: Option<Box<ClientConnection>>,
    /// The client's TLS failed (it got bytes it cannot decrypt): it can no longer tell
    /// what the session wrote.
    broken: bool,
}

impl Client {
    /// The client sends `plain`; its bytes on the wire go to `socket`.
    fn send(&mut self, plain: &[u8], socket: &mut Vec<u8>) {
        match self.tls.as_mut() {
            None => socket.extend_from_slice(plain),
            Some(tls) => {
                // Past rustls' buffer limit the rest is dropped, as a blocked client would.
                let _ = tls.writer().write(plain);
                Self::flush(tls, socket);
            }
        }
    }

    fn flush(tls: &mut ClientConnection, socket: &mut Vec<u8>) {
        while tls.wants_write() {
            match tls.write_tls(socket) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The client starts TLS (sends its ClientHello). False if it cannot.
    fn start_tls(&mut self, socket: &mut Vec<u8>) -> bool {
        let Some(config) = self.config.clone().filter(|_| self.tls.is_none()) else {
            return false;
        };
        let name = ServerName::try_from("localhost").expect("a valid DNS name");
        let mut tls = Box::new(ClientConnection::new(config, name).expect("client config"));
        Self::flush(&mut tls, socket);
        self.tls = Some(tls);
        true
    }

    /// The client receives `bytes` from the session; returns the plaintext, or `None`
    /// once it cannot tell (its TLS failed). Handshake replies go to `socket`.
    fn receive(&mut self, bytes: &[u8], socket: &mut Vec<u8>) -> Option<Vec<u8>> {
        if self.broken {
            return None;
        }
        let Some(tls) = self.tls.as_mut() else {
            return Some(bytes.to_vec());
        };
        let mut rest = bytes;
        let mut plain = Vec::new();
        while !rest.is_empty() {
            let ok = tls.read_tls(&mut rest).is_ok() && tls.process_new_packets().is_ok();
            if !ok {
                self.broken = true;
                return None;
            }
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.reader().read(&mut buf) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&buf[..n]);
            }
        }
        Self::flush(tls, socket);
        Some(plain)
    }
}

/// Steps a session harness allows from EOF to the close (answering requests, draining,
/// firing timers): far more than the commands that fit in the buffered input need.
const WIND_DOWN_STEPS: usize = 100_000;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harnesses_accept_small_inputs() {
        for data in [&b""[..], b"\0", b"\0\0\0", b"\xff\xff\xffabc\r\n"] {
            pop3_command(data);
            line_framer(data);
            dot_stuffing(data);
            smtp_command(data);
            smtp_data(data);
            proxy_header(data);
            proxy_xclient(data);
            proxy_imap_id(data);
            mime_structure(data);
            uidlist(data);
            keywords(data);
            maildir_name(data);
        }
    }
}
