//! DKIM signing of outbound mail (RFC 6376): the queue runner asks a [`DkimSigner`] for a
//! `DKIM-Signature` header field and sends it before the message's bytes.
//!
//! Signatures are `c=relaxed/relaxed` ([`canon`]), with `a=rsa-sha256` or
//! `a=ed25519-sha256` (RFC 8463) depending on the key. The body is hashed as it streams
//! from the file, so memory use does not grow with the message; only the header block is
//! held, up to [`MAX_HEADER_BYTES`].

pub mod canon;
pub mod fold;
mod key;

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub use key::{KeyKind, generate_key};

use key::SigningKey;

/// The header fields we sign when present (RFC 6376 §5.4.1's recommended set, less the
/// fields relays add or rewrite), each once, bottom-most instance (§5.4.2).
pub const SIGNED_HEADERS: [&str; 9] = [
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
];

/// The largest header block we read (all fields before the empty line): a message whose
/// header is larger is not signed. Real headers are a few KiB even after many relays.
pub const MAX_HEADER_BYTES: usize = 1024 * 1024;

/// Why signing failed (the message then goes out unsigned or waits, as the queue decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimError(pub String);

impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DkimError {}

/// A DKIM (RFC 6376) signer for one domain: rsa-sha256 (and ed25519-sha256, RFC 8463, if cheap), relaxed/relaxed.
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: SigningKey,
}

impl fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.key.algorithm())
            .finish()
    }
}

impl DkimSigner {
    /// Loads a PKCS#8 PEM private key written by `generate_key` (or openssl).
    ///
    /// PKCS#1 RSA keys (`BEGIN RSA PRIVATE KEY`) are accepted too. `domain` is the `d=`
    /// and `selector` the `s=` of the signatures (RFC 6376 §3.5).
    pub fn load(domain: &str, selector: &str, key_file: &Path) -> Result<Self, DkimError> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let selector = selector.trim().to_ascii_lowercase();
        if !is_dns_name(&domain) || !is_dns_name(&selector) {
            return Err(DkimError(format!(
                "DKIM domain {domain:?} or selector {selector:?} is not a DNS name"
            )));
        }
        let key = SigningKey::load(key_file)?;
        Ok(DkimSigner {
            domain,
            selector,
            key,
        })
    }

    /// The whole `DKIM-Signature: …\r\n` header field (folded, CRLF-terminated) for the message in the file
    /// (CRLF line ends); signs From, To, Cc, Subject, Date, Message-ID, Reply-To, MIME-Version, Content-Type when present.
    ///
    /// `t=` is the current time. A message without a From field is refused (RFC 6376
    /// §5.4: From must be signed).
    pub fn sign_file(&self, message: &Path) -> Result<String, DkimError> {
        let file = std::fs::File::open(message)
            .map_err(|e| DkimError(format!("{}: {e}", message.display())))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        self.sign_reader_at(BufReader::new(file), now)
    }

    /// Like [`Self::sign_file`], for a message read from `reader`, with `unix_time` as the
    /// `t=` tag: the whole signing path with the clock as a parameter, for tests.
    pub fn sign_reader_at(
        &self,
        mut reader: impl BufRead,
        unix_time: u64,
    ) -> Result<String, DkimError> {
        let fields = read_header(&mut reader)?;
        let body_hash = hash_body(reader)?;

        let mut names: Vec<&str> = Vec::new();
        let mut hashed: Vec<u8> = Vec::new();
        for wanted in SIGNED_HEADERS {
            if let Some(field) = fields.iter().rev().find(|f| field_name_is(f, wanted)) {
                names.push(wanted);
                hashed.extend_from_slice(&canon::relaxed_header(field));
            }
        }
        if !names.contains(&"from") {
            return Err(DkimError("the message has no From header field".into()));
        }
        // Over-signing From (RFC 6376 §8.15): naming it once more than it occurs means a
        // From added in transit breaks the signature.
        names.push("from");

        let mut folder = fold::Folder::new("DKIM-Signature");
        folder.tag(&["v=1"]);
        folder.tag(&[&format!("a={}", self.key.algorithm())]);
        folder.tag(&["c=relaxed/relaxed"]);
        folder.tag(&[&format!("d={}", self.domain)]);
        folder.tag(&[&format!("s={}", self.selector)]);
        folder.tag(&[&format!("t={unix_time}")]);
        let h_pieces: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if i == 0 {
                    format!("h={name}")
                } else {
                    format!(":{name}")
                }
            })
            .collect();
        folder.tag(&h_pieces.iter().map(String::as_str).collect::<Vec<_>>());
        let bh = STANDARD.encode(body_hash);
        folder.tag(&fold::base64_pieces("bh=", &bh));
        folder.tag(&["b="]);

        // RFC 6376 §3.7: the signed data is the selected fields, then this field with an
        // empty b= and without its final CRLF, all canonicalised.
        let mut own = canon::relaxed_header(folder.as_str().as_bytes());
        own.truncate(own.len().saturating_sub(2));
        hashed.extend_from_slice(&own);
        let signature = self.key.sign(&hashed)?;
        folder.base64(&STANDARD.encode(signature));
        Ok(format!("{}\r\n", folder.as_str()))
    }

    /// The signing domain (`d=`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The selector (`s=`): the key's record is `<selector>._domainkey.<domain>`.
    pub fn selector(&self) -> &str {
        &self.selector
    }
}

/// Letters, digits, hyphens and dots, 1–253 octets, no empty label.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn field_name_is(field: &[u8], wanted: &str) -> bool {
    let name_end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let name = field.get(..name_end).unwrap_or_default();
    let trimmed = name
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(&[][..], |last| &name[..=last]);
    trimmed.eq_ignore_ascii_case(wanted.as_bytes())
}

/// Reads the header block up to and including the empty line that ends it (or to the end
/// of the message if there is none) and splits it into fields, each with its continuation
/// lines and CRLFs. Lines before the first field that start with whitespace are ignored.
fn read_header(reader: &mut impl BufRead) -> Result<Vec<Vec<u8>>, DkimError> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_HEADER_BYTES - total) as u64 + 1;
        let read = reader
            .by_ref()
            .take(limit)
            .read_until(b'\n', &mut line)
            .map_err(|e| DkimError(format!("reading the message: {e}")))?;
        if read == 0 {
            break;
        }
        total += read;
        if total > MAX_HEADER_BYTES {
            return Err(DkimError(format!(
                "the header is larger than {MAX_HEADER_BYTES} bytes"
            )));
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(field)) => field.extend_from_slice(&line),
            (Some(b' ' | b'\t'), None) => {}
            _ => fields.push(line.clone()),
        }
    }
    Ok(fields)
}

/// SHA-256 of the relaxed body (RFC 6376 §3.7 body hash), streamed.
fn hash_body(mut reader: impl Read) -> Result<Vec<u8>, DkimError> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut body = canon::RelaxedBody::new();
    let mut buffer = vec![0u8; 64 * 1024];
    // Canonical bytes are hashed in batches of up to FLUSH_AT bytes (deferred empty lines
    // can make one chunk's canonical form longer than the chunk).
    const FLUSH_AT: usize = 64 * 1024;
    let mut canonical = Vec::with_capacity(FLUSH_AT + 2);
    let mut sink = |bytes: &[u8]| {
        canonical.extend_from_slice(bytes);
        if canonical.len() >= FLUSH_AT {
            context.update(&canonical);
            canonical.clear();
        }
    };
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DkimError(format!("reading the message: {e}"))),
        };
        body.push(buffer.get(..read).unwrap_or_default(), &mut sink);
    }
    body.finish(&mut sink);
    context.update(&canonical);
    Ok(context.finish().as_ref().to_vec())
}
