//! DKIM signing keys: loading a PEM private key, signing with it (RFC 6376 §3.3 rsa-sha256,
//! RFC 8463 ed25519-sha256), and making a new key with its DNS TXT record (RFC 6376 §3.6.1).
//!
//! `ring` signs; it cannot generate RSA keys, so new RSA keys come from the RustCrypto
//! `rsa` crate, which only runs for `tidegate dkim generate`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use super::DkimError;

/// Which kind of key `tidegate dkim generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with a 2048-bit modulus: what every verifier understands (RFC 8301 §3.2).
    Rsa2048,
    /// Ed25519 (RFC 8463): short keys and signatures; not all verifiers know it yet.
    Ed25519,
}

/// A loaded private key, ready to sign.
pub(crate) enum SigningKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// Reads a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`). ring accepts RSA moduli of 2048 bits and more.
    pub(crate) fn load(path: &Path) -> Result<Self, DkimError> {
        let shown = path.display();
        let der = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| DkimError(format!("DKIM key {shown}: {e}")))?;
        let rejected = |e: ring::error::KeyRejected| DkimError(format!("DKIM key {shown}: {e}"));
        match der {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let bytes = pkcs8.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(rsa) => Ok(SigningKey::Rsa(rsa)),
                    Err(rsa_error) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
                        .map(SigningKey::Ed25519)
                        .map_err(|_| rejected(rsa_error)),
                }
            }
            PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
                .map(SigningKey::Rsa)
                .map_err(rejected),
            _ => Err(DkimError(format!(
                "DKIM key {shown}: not an RSA or Ed25519 key"
            ))),
        }
    }

    /// The `a=` tag value (RFC 6376 §3.5).
    pub(crate) fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "rsa-sha256",
            SigningKey::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// Signs the hash input (canonical headers, RFC 6376 §3.7). RSA signs it with
    /// PKCS#1 v1.5 over SHA-256; Ed25519 signs its SHA-256 digest (RFC 8463 §3).
    pub(crate) fn sign(&self, data: &[u8]) -> Result<Vec<u8>, DkimError> {
        match self {
            SigningKey::Rsa(rsa) => {
                let mut signature = vec![0u8; rsa.public().modulus_len()];
                rsa.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    data,
                    &mut signature,
                )
                .map_err(|_| DkimError("RSA signing failed".into()))?;
                Ok(signature)
            }
            SigningKey::Ed25519(ed) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                Ok(ed.sign(digest.as_ref()).as_ref().to_vec())
            }
        }
    }
}

/// Writes a new private key (mode 0600) and returns the DNS TXT record text ("v=DKIM1; k=rsa; p=…").
///
/// The file is PKCS#8 PEM, the format [`super::DkimSigner::load`] and openssl read. An
/// existing file is never overwritten: replacing a key whose public half is still in DNS
/// would make every signature fail until the record changes.
pub fn generate_key(key_file: &Path, kind: KeyKind) -> Result<String, DkimError> {
    let (pkcs8, public, k) = match kind {
        KeyKind::Rsa2048 => generate_rsa()?,
        KeyKind::Ed25519 => {
            let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| DkimError("cannot generate an Ed25519 key".into()))?;
            let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
                .map_err(|e| DkimError(format!("generated Ed25519 key: {e}")))?;
            // RFC 8463 §4: p= is the bare 32-byte public key.
            let public = pair.public_key().as_ref().to_vec();
            (document.as_ref().to_vec(), public, "ed25519")
        }
    };
    let pem = pem_encode("PRIVATE KEY", &pkcs8);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_file)
        .map_err(|e| DkimError(format!("{}: {e}", key_file.display())))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| DkimError(format!("{}: {e}", key_file.display())))?;
    Ok(format!("v=DKIM1; k={k}; p={}", STANDARD.encode(public)))
}

/// A new RSA-2048 key: (PKCS#8 DER, SubjectPublicKeyInfo DER for p=, "rsa").
fn generate_rsa() -> Result<(Vec<u8>, Vec<u8>, &'static str), DkimError> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let key = rsa::PrivateKey::new(&mut OsRandom, 2048)
        .map_err(|e| DkimError(format!("cannot generate an RSA key: {e}")))?;
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| DkimError(format!("cannot encode the RSA key: {e}")))?;
    // RFC 6376 §3.6.1: p= for k=rsa is the DER SubjectPublicKeyInfo, base64.
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| DkimError(format!("cannot encode the RSA public key: {e}")))?;
    Ok((pkcs8.as_bytes().to_vec(), public.as_bytes().to_vec(), "rsa"))
}

/// PEM (RFC 7468): base64 in 64-character lines between BEGIN/END lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The operating system's random source, in the shape the `rsa` crate asks for.
struct OsRandom;

/// The random source failed.
#[derive(Debug)]
struct RandomError(getrandom::Error);

impl std::fmt::Display for RandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "random source: {}", self.0)
    }
}

impl std::error::Error for RandomError {}

impl rsa::rand_core::TryRng for OsRandom {
    type Error = RandomError;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        getrandom::getrandom(dst).map_err(RandomError)
    }
}

impl rsa::rand_core::TryCryptoRng for OsRandom {}
