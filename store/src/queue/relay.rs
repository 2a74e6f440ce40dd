//! The real [`Transport`]: routes an attempt (a smarthost, or the recipient domain's
//! MX hosts through [`crate::dns::Resolver`]), signs it with DKIM when the sender's
//! domain has a key, and sends it with [`crate::outbound::send`].
//!
//! MX hosts are tried in preference order (RFC 5321 §5.1): an attempt that fails as a
//! whole with a temporary failure (no connection, a `4xx` greeting, TLS required and
//! missing) moves on to the next host; a permanent failure or any recipient result
//! ends the attempt.
//!
//! Connections are reused: after a message the connection waits idle in the
//! transport's [`ConnectionPool`] and the next message to the same smarthost, or the
//! same MX host with the same TLS policy, goes over it ([`crate::outbound::send_pooled`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::entry::domain_of;
use super::runner::{Attempt, AttemptFailure, Transport, Verdict};
use crate::dkim::DkimSigner;
use crate::dns::Resolver;
use crate::outbound::{
    self, ConnectionPool, Destination, OutboundMessage, Outcome, RecipientOutcome, SendFailure,
    SendOptions, TlsPolicy,
};

/// Where attempts go.
pub enum Route {
    /// Everything to one host (`[relay] smarthost = "host:port"`).
    Smarthost {
        /// The host name or address (also the certificate name).
        host: String,
        /// Its port.
        port: u16,
    },
    /// The recipient domain's MX hosts, on `port` (25; tests use another).
    Mx {
        /// Asks the nameservers.
        resolver: Resolver,
        /// The SMTP port of MX hosts.
        port: u16,
    },
}

/// Sends through a smarthost or by MX, with DKIM signing per sender domain.
pub struct RelayTransport {
    /// Where attempts go.
    pub route: Route,
    /// Send options; `tls` is the default policy.
    pub options: SendOptions,
    /// Domains (lowercase) whose servers must offer STARTTLS with a valid certificate.
    pub require_tls_domains: Vec<String>,
    /// DKIM signers, one per sending domain.
    pub signers: Vec<DkimSigner>,
    /// Idle connections for the next message to the same destination.
    pub pool: ConnectionPool,
}

impl RelayTransport {
    /// The DKIM-Signature field for a message from `sender`, when its domain has a key
    /// (empty otherwise, or when signing fails: the message goes unsigned, with a log).
    fn signature(&self, sender: &str, message: &Path) -> Vec<u8> {
        let domain = domain_of(sender);
        let Some(signer) = self
            .signers
            .iter()
            .find(|s| s.domain().eq_ignore_ascii_case(&domain))
        else {
            return Vec::new();
        };
        match signer.sign_file(message) {
            Ok(field) => field.into_bytes(),
            Err(e) => {
                log::error!("DKIM signing for {domain} failed, sending unsigned: {e}");
                Vec::new()
            }
        }
    }

    fn options_for(&self, domain: &str) -> SendOptions {
        let mut options = self.options.clone();
        if self.require_tls_domains.iter().any(|d| d == domain) {
            options.tls = TlsPolicy::Required;
        }
        options
    }

    /// The destinations to try, in order.
    fn destinations(&self, domain: &str) -> Result<Vec<Destination>, AttemptFailure> {
        match &self.route {
            Route::Smarthost { host, port } => {
                let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| AttemptFailure {
                        permanent: false,
                        text: format!("smarthost {host}: {e}"),
                    })?
                    .collect();
                Ok(vec![Destination {
                    addrs,
                    tls_name: host.clone(),
                }])
            }
            Route::Mx { resolver, port } => {
                let hosts = resolver
                    .mail_exchangers(domain)
                    .map_err(|e| AttemptFailure {
                        permanent: e.is_permanent(),
                        text: format!("MX lookup for {domain}: {e}"),
                    })?;
                Ok(hosts
                    .into_iter()
                    .map(|mx| Destination {
                        addrs: mx
                            .addrs
                            .iter()
                            .map(|ip| SocketAddr::new(*ip, *port))
                            .collect(),
                        tls_name: mx.host,
                    })
                    .collect())
            }
        }
    }
}

impl Transport for RelayTransport {
    fn send(&self, attempt: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure> {
        let destinations = self.destinations(attempt.domain)?;
        let options = self.options_for(attempt.domain);
        let prefix = self.signature(attempt.sender, attempt.message);
        let message = OutboundMessage {
            mail_from: attempt.sender,
            recipients: attempt.recipients,
            prefix: &prefix,
            path: attempt.message,
            eight_bit: attempt.eight_bit,
            smtputf8: attempt.smtputf8,
            xclient: None,
        };
        let mut last = AttemptFailure {
            permanent: false,
            text: format!("no mail server found for {}", attempt.domain),
        };
        for destination in destinations {
            match outbound::send_pooled(&self.pool, &destination, &options, &message) {
                Ok(outcomes) => return Ok(verdicts(attempt.recipients, outcomes)),
                Err(failure) => {
                    log::info!(
                        "queue: {} via {}: {}",
                        attempt.id,
                        destination.tls_name,
                        failure
                    );
                    let permanent = failure.permanent;
                    last = attempt_failure(failure);
                    if permanent {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn close_idle(&self) -> Option<Instant> {
        self.pool.close_expired()
    }

    fn close_all(&self) {
        self.pool.close_all();
    }
}

/// One verdict per recipient, in the attempt's order.
pub(super) fn verdicts(recipients: &[String], outcomes: Vec<RecipientOutcome>) -> Vec<Verdict> {
    let mut outcomes: Vec<Option<RecipientOutcome>> = outcomes.into_iter().map(Some).collect();
    recipients
        .iter()
        .map(|recipient| {
            let found = outcomes
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| &o.recipient == recipient))
                .and_then(Option::take);
            match found.map(|o| o.outcome) {
                Some(Outcome::Delivered(reply)) => Verdict::Delivered(reply.text()),
                Some(Outcome::Deferred(reply)) => Verdict::Deferred(reply.text()),
                Some(Outcome::Failed(reply)) => Verdict::Failed(reply.text()),
                None => Verdict::Deferred("451 4.4.0 no result for this recipient".into()),
            }
        })
        .collect()
}

pub(super) fn attempt_failure(failure: SendFailure) -> AttemptFailure {
    let text = match &failure.reply {
        Some(reply) => format!("{} ({})", reply.text(), failure.detail),
        None => failure.detail.clone(),
    };
    AttemptFailure {
        permanent: failure.permanent,
        text,
    }
}

/// Roots for verifying receiving servers: the PEM file given, else the system bundle
/// when there is one (empty otherwise: required TLS then always defers).
pub fn load_roots(ca_file: Option<&Path>) -> Result<Arc<rustls::RootCertStore>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let path = match ca_file {
        Some(path) => path,
        None => {
            let system = Path::new(SYSTEM_BUNDLE);
            if !system.exists() {
                return Ok(Arc::new(roots));
            }
            system
        }
    };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        // A bundle may hold certificates rustls cannot use; the rest still count.
        let _ = roots.add(cert);
    }
    Ok(Arc::new(roots))
}

/// The CA bundle of Debian-like systems.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
