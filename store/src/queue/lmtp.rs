//! Proxy mode's transport: a front-end relays inbound mail for users who live on a
//! back-end to that back-end over LMTP (RFC 2033), so the cluster needs no shared disk
//! for inbound mail. [`Dispatch`] sends each attempt either there or, for ordinary
//! remote recipients (and bounces), through the `[relay]` transport.
//!
//! Each recipient's own LMTP reply after the data decides its state (RFC 2033 §4.2):
//! `2xx` delivered, `4xx` retried on the queue's schedule, `5xx` bounced. A back-end
//! that is down fails the attempt temporarily and the recipients wait for the next
//! retry: the queue's backoff spaces the attempts, so the router's circuit breaker is
//! not consulted.

use std::sync::Arc;
use std::time::Instant;

use super::relay::{attempt_failure, verdicts};
use super::runner::{Attempt, AttemptFailure, Transport, Verdict};
use crate::outbound::{self, ConnectionPool, Destination, OutboundMessage, SendOptions};

/// Sends back-end attempts over LMTP to `host:port`.
#[derive(Debug)]
pub struct LmtpTransport {
    /// The back-ends' LMTP port (`[proxy] backend_ports.lmtp`).
    pub port: u16,
    /// How to connect: [`SendOptions::lmtp`] set, STARTTLS per `[proxy] backend_tls`.
    pub options: SendOptions,
    /// Idle connections to the back-ends, for the next message to the same one.
    pub pool: ConnectionPool,
    /// `[proxy] client_address = "xclient"`: name each message's original SMTP client
    /// to the back-end with XCLIENT (Postfix `XCLIENT_README`) when it offers it, so
    /// its `Received:` field shows that client rather than this front-end.
    pub xclient: bool,
}

impl Transport for LmtpTransport {
    fn send(&self, attempt: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure> {
        let Some(host) = attempt.backend else {
            return Err(AttemptFailure {
                permanent: false,
                text: "internal error: an LMTP attempt without a back-end".into(),
            });
        };
        let addrs = crate::router::resolve(host, self.port)
            .ok()
            .filter(|addrs| !addrs.is_empty())
            .ok_or_else(|| AttemptFailure {
                permanent: false,
                text: format!("cannot resolve back-end {host:?}"),
            })?;
        let destination = Destination {
            addrs,
            tls_name: host.to_owned(),
        };
        let message = OutboundMessage {
            mail_from: attempt.sender,
            recipients: attempt.recipients,
            prefix: &[],
            path: attempt.message,
            eight_bit: attempt.eight_bit,
            smtputf8: attempt.smtputf8,
            xclient: attempt.client.filter(|_| self.xclient),
        };
        match outbound::send_pooled(&self.pool, &destination, &self.options, &message) {
            Ok(outcomes) => Ok(verdicts(attempt.recipients, outcomes)),
            Err(failure) => {
                log::info!("queue: {} via back-end {host}: {failure}", attempt.id);
                Err(attempt_failure(failure))
            }
        }
    }

    fn close_idle(&self) -> Option<Instant> {
        self.pool.close_expired()
    }

    fn close_all(&self) {
        self.pool.close_all();
    }
}

/// The transport of a node's queue: back-end attempts over LMTP, the rest through the
/// `[relay]` transport.
pub struct Dispatch {
    /// Proxy mode's LMTP transport; `None` when `[proxy]` is off.
    pub backends: Option<LmtpTransport>,
    /// The outbound transport; `None` without `[relay]` (nothing leaves the cluster).
    pub relay: Option<Arc<dyn Transport>>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("backends", &self.backends)
            .field("relay", &self.relay.is_some())
            .finish()
    }
}

impl Transport for Dispatch {
    fn send(&self, attempt: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure> {
        match (attempt.backend, &self.backends, &self.relay) {
            (Some(_), Some(lmtp), _) => lmtp.send(attempt),
            // `[proxy]` was turned off with mail still queued for back-ends: keep it
            // until it comes back or the entry expires.
            (Some(host), None, _) => Err(AttemptFailure {
                permanent: false,
                text: format!("451 4.3.5 no [proxy] configured to reach back-end {host}"),
            }),
            (None, _, Some(relay)) => relay.send(attempt),
            (None, _, None) => Err(AttemptFailure {
                permanent: true,
                text: "550 5.7.1 outbound delivery is not configured on this node".into(),
            }),
        }
    }

    fn close_idle(&self) -> Option<Instant> {
        let backends = self.backends.as_ref().and_then(LmtpTransport::close_idle);
        let relay = self.relay.as_ref().and_then(|r| r.close_idle());
        backends.into_iter().chain(relay).min()
    }

    fn close_all(&self) {
        if let Some(backends) = &self.backends {
            backends.close_all();
        }
        if let Some(relay) = &self.relay {
            relay.close_all();
        }
    }
}
