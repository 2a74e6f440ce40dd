//! Client-side TLS for authd connections: the server is checked against a CA file or
//! against one pinned (typically self-signed) certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How an [`super::AuthdDirectory`] secures its connections: a rustls client config and
/// the name the server's certificate must carry.
#[derive(Debug, Clone)]
pub struct AuthdClientTls {
    pub(super) config: Arc<ClientConfig>,
    pub(super) server_name: ServerName<'static>,
}

impl AuthdClientTls {
    /// Trusts the CA certificates in the PEM file `ca_file`; the server's certificate
    /// must name `server_name` (a DNS name or an IP address).
    pub fn with_ca_file(ca_file: &Path, server_name: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| format!("authd CA {}: {e}", ca_file.display()))?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("authd TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::from_config(Arc::new(config), server_name)
    }

    /// Accepts exactly the certificate in the PEM file `cert_file` (the first one in
    /// it), whatever its issuer and names: for a self-signed authd certificate copied to
    /// every client. The handshake signature is still checked against its key.
    pub fn pinned(cert_file: &Path) -> Result<Self, String> {
        let cert = read_certs(cert_file)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("authd certificate {}: no certificate", cert_file.display()))?;
        let provider = provider();
        let verifier = PinnedCert {
            cert,
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("authd TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // The name is not checked by the pinned verifier, only sent as SNI.
        Self::from_config(Arc::new(config), "authd")
    }

    /// Uses a prepared rustls config.
    pub fn from_config(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, String> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("authd TLS server name {server_name:?}: {e}"))?;
        Ok(AuthdClientTls {
            config,
            server_name,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate file {}: {e}", path.display()))
}

/// Accepts one exact end-entity certificate.
#[derive(Debug)]
struct PinnedCert {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
