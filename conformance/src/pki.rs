//! A throwaway certificate for `localhost` and the matching rustls configs.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate for `localhost`, with a server config that presents it and
/// a client config that trusts only it.
#[derive(Debug)]
pub struct TestPki {
    /// For the listener (STLS and implicit TLS).
    pub server: Arc<ServerConfig>,
    /// For the scripted client; it verifies the server name `localhost`.
    pub client: Arc<ClientConfig>,
}

impl TestPki {
    /// One certificate per process: generating keys is the slow part.
    pub fn shared() -> Arc<TestPki> {
        static PKI: OnceLock<Arc<TestPki>> = OnceLock::new();
        PKI.get_or_init(|| Arc::new(TestPki::generate())).clone()
    }

    /// A fresh certificate and configs.
    pub fn generate() -> TestPki {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("rcgen makes a self-signed certificate");
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("the generated key fits the certificate");
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("the generated certificate parses");
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestPki {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// A client connection to `localhost`, ready to handshake.
    pub fn client_connection(&self) -> rustls::ClientConnection {
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("valid name");
        rustls::ClientConnection::new(self.client.clone(), name).expect("client config is valid")
    }
}
