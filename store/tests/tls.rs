//! TLS material: generated on first start, reused, loaded from PEM, usable for a handshake.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tidegate_store::tls::{generate_self_signed, server_config};

/// Runs a full in-memory handshake against `server` with `root` trusted, for `name`.
fn handshake(server: Arc<ServerConfig>, root: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = ClientConnection::new(Arc::new(client_config), server_name).unwrap();
    let mut server = ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut &buf[..]).unwrap();
        server.process_new_packets()?;
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut &buf[..]).unwrap();
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn self_signed_pair_is_generated_once_and_reused() {
    let work = tempfile::tempdir().unwrap();
    let config = server_config(None, None, work.path(), "mx1.example.com").unwrap();
    let cert = work.path().join("tls/cert.pem");
    let key = work.path().join("tls/key.pem");
    let first = fs::read_to_string(&cert).unwrap();
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server_config(None, None, work.path(), "mx1.example.com").unwrap();
    assert_eq!(fs::read_to_string(&cert).unwrap(), first, "reused");
    for name in ["mx1.example.com", "localhost", "127.0.0.1"] {
        handshake(config.clone(), &first, name).unwrap();
    }
    assert!(handshake(config, &first, "other.example.com").is_err());
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["tls"]);
}

#[test]
fn configured_pem_files_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) = generate_self_signed("pop.example.net").unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    fs::write(&cert, &cert_pem).unwrap();
    fs::write(&key, &key_pem).unwrap();
    let config = server_config(Some(&cert), Some(&key), dir.path(), "ignored").unwrap();
    handshake(config, &cert_pem, "pop.example.net").unwrap();
    assert!(!dir.path().join("tls").exists(), "nothing generated");

    assert!(server_config(Some(&cert), None, dir.path(), "h").is_err());
    let missing = dir.path().join("missing.pem");
    let err = server_config(Some(&missing), Some(&key), dir.path(), "h").unwrap_err();
    assert!(err.contains("missing.pem"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "not pem at all").unwrap();
    assert!(server_config(Some(&garbage), Some(&key), dir.path(), "h").is_err());
    assert!(server_config(Some(&cert), Some(&garbage), dir.path(), "h").is_err());
    let (_, other_key) = generate_self_signed("pop.example.net").unwrap();
    fs::write(&key, other_key).unwrap();
    assert!(
        server_config(Some(&cert), Some(&key), dir.path(), "h").is_err(),
        "a key that does not match the certificate is refused"
    );
}
