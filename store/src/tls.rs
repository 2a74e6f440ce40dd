//! TLS material for the listeners (design.md §4 `[tls]`): the configured PEM certificate
//! chain and key, or, with no `[tls]` section, a self-signed certificate generated into
//! `<workarea>/tls/` on first start and reused afterwards. Always the `ring` provider
//! (RFC 8446 TLS 1.3 and RFC 5246 TLS 1.2, rustls' safe defaults).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The rustls server config for the listeners. `cert` and `key` are PEM files (the chain,
/// leaf first, and its private key); both absent means the generated self-signed pair in
/// `<workarea>/tls/cert.pem` and `key.pem` (made on first use, key mode 0600).
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    workarea: &Path,
    hostname: &str,
) -> Result<Arc<ServerConfig>, String> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf()),
        (None, None) => ensure_self_signed(workarea, hostname)?,
        _ => return Err("[tls] needs both cert and key, or neither".into()),
    };
    let shown = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", shown(&cert_path)))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in it",
            shown(&cert_path)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| format!("TLS key {}: {e}", shown(&key_path)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "TLS certificate {} with key {}: {e}",
                shown(&cert_path),
                shown(&key_path)
            )
        })?;
    Ok(Arc::new(config))
}

/// The rustls client config a front-end uses towards its back-ends: only certificates
/// that chain to the PEM certificate(s) in `ca_file` are trusted (a private CA, or the
/// one self-signed certificate a cluster shares).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let shown = ca_file.display();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("CA file {shown}: {e}"))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("CA file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {shown}: no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The path of the certificate [`server_config`] uses when none is configured.
pub fn self_signed_cert_path(workarea: &Path) -> PathBuf {
    workarea.join("tls").join("cert.pem")
}

/// A self-signed certificate (ECDSA P-256) for `hostname`, `localhost` and 127.0.0.1,
/// as PEM `(certificate, private key)`. For first starts, demos and tests.
pub fn generate_self_signed(hostname: &str) -> Result<(String, String), String> {
    let hostname = hostname.trim();
    let mut names = Vec::new();
    if !hostname.is_empty() && hostname != "localhost" && hostname != "127.0.0.1" {
        names.push(hostname.to_owned());
    }
    names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| format!("hostname {hostname:?} cannot go in a certificate: {e}"))?;
    let common_name = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("TLS key generation: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("TLS certificate generation: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The paths of the generated pair, generating it when missing. The pair is written
/// into a private temporary directory renamed to `<workarea>/tls`, so two servers
/// starting together agree on one pair.
fn ensure_self_signed(workarea: &Path, hostname: &str) -> Result<(PathBuf, PathBuf), String> {
    let dir = workarea.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let (cert_pem, key_pem) = generate_self_signed(hostname)?;
    let io_error = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder
        .create(workarea)
        .map_err(|e| io_error(workarea, e))?;
    let staging = workarea.join(format!(".tls.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let staged = builder
        .create(&staging)
        .and_then(|()| write_new(&staging.join("key.pem"), &key_pem, 0o600))
        .and_then(|()| write_new(&staging.join("cert.pem"), &cert_pem, 0o644));
    if let Err(e) = staged {
        let _ = fs::remove_dir_all(&staging);
        return Err(io_error(&staging, e));
    }
    let placed = if dir.exists() {
        // A tls/ left incomplete: replace the files one by one.
        fs::rename(staging.join("key.pem"), &key)
            .and_then(|()| fs::rename(staging.join("cert.pem"), &cert))
    } else {
        // Losing the race to another server is fine: its pair is used.
        fs::rename(&staging, &dir).or_else(|e| if cert.is_file() { Ok(()) } else { Err(e) })
    };
    let _ = fs::remove_dir_all(&staging);
    placed.map_err(|e| io_error(&dir, e))?;
    log::info!(
        "generated a self-signed TLS certificate in {}",
        dir.display()
    );
    Ok((cert, key))
}

fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
