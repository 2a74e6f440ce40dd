//! Secrets written in the config file (the authd shared secret, the LDAP bind password):
//! read like any string, but never shown by `Debug` and never printed by `check-config`.

use std::fmt;

use serde::Deserialize;

/// A secret string from the config file; `Debug` prints `<hidden>` (docs/security.md,
/// "What is never logged").
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Hidden(String);

impl Hidden {
    /// The secret, for the one place that hands it on (a bind, a handshake).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl From<&str> for Hidden {
    fn from(text: &str) -> Hidden {
        Hidden(text.to_owned())
    }
}
