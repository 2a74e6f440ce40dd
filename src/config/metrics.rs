//! `[metrics]`: the Prometheus text endpoint (docs/config.md).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `GET /metrics` is served. No authentication: a private address only.
    pub listen: SocketAddr,
}
