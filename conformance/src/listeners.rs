//! The listeners a script describes: one per [`Protocol`], all built from the same
//! [`ScriptConfig`], so a script can deliver over SMTP and read back over POP3.

use std::sync::Arc;
use std::time::Duration;

use tidegate_core::imap::{ImapConfig, ImapListener};
use tidegate_core::net::PlaintextAuth;
use tidegate_core::pop3::{Pop3Config, Pop3Limits, Pop3Listener};
use tidegate_core::smtp::{SmtpConfig, SmtpLimits, SmtpListener, SmtpRole};
use tidegate_store::Listener;

use crate::config::{PlaintextSetting, Protocol, ScriptConfig};
use crate::pki::TestPki;

fn plaintext_auth(config: &ScriptConfig) -> PlaintextAuth {
    match config.plaintext_auth {
        PlaintextSetting::Never => PlaintextAuth::Never,
        PlaintextSetting::Trusted => PlaintextAuth::Trusted(config.trusted.clone()),
        PlaintextSetting::Always => PlaintextAuth::Always,
    }
}

/// The POP3 listener a script describes; `auth_failure_delay` is short for real-time
/// drivers so failed logins do not slow the suite.
pub fn listener_for(
    config: &ScriptConfig,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> Pop3Listener {
    let mut limits = Pop3Limits::default();
    if let Some(n) = config.max_bad_commands {
        limits.max_bad_commands = n;
    }
    if let Some(n) = config.max_auth_failures {
        limits.max_auth_failures = n;
    }
    let hostname = if config.protocol == Protocol::Pop3 {
        config.hostname.clone()
    } else {
        Protocol::Pop3.default_hostname().into()
    };
    let pop3 = Pop3Config {
        hostname,
        limits,
        auth_failure_delay,
        ..Pop3Config::default()
    };
    Pop3Listener {
        config: Arc::new(pop3),
        tls: (config.starttls || config.implicit_tls).then(|| pki.server.clone()),
        implicit_tls: config.implicit_tls,
        plaintext_auth: plaintext_auth(config),
        trusted: Vec::new(),
    }
}

/// The SMTP-family listener of `role` a script describes (`auth_failure_delay`: the
/// first failed AUTH's delay, doubling per failure).
pub fn smtp_listener_for(
    config: &ScriptConfig,
    role: SmtpRole,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> SmtpListener {
    let mut limits = SmtpLimits::default();
    if let Some(n) = config.max_bad_commands {
        limits.max_bad_commands = n;
    }
    if let Some(n) = config.max_auth_failures {
        limits.max_auth_failures = n;
    }
    if let Some(n) = config.max_recipients {
        limits.max_recipients = n;
    }
    if let Some(n) = config.append_chunk {
        limits.append_chunk = n;
    }
    let defaults = SmtpConfig::default();
    let hostname = if config.protocol == Protocol::Pop3 {
        Protocol::Smtp.default_hostname().into()
    } else {
        config.hostname.clone()
    };
    let smtp = SmtpConfig {
        hostname,
        role,
        max_message_size: config.max_message_size.unwrap_or(defaults.max_message_size),
        limits,
        auth_failure_delay,
        ..defaults
    };
    SmtpListener {
        config: Arc::new(smtp),
        tls: config.starttls.then(|| pki.server.clone()),
        plaintext_auth: plaintext_auth(config),
        trusted: config.trusted.clone(),
    }
}

/// The IMAP listener a script describes (`max_message_size` bounds APPEND literals).
pub fn imap_listener_for(
    config: &ScriptConfig,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> ImapListener {
    let mut imap = ImapConfig {
        hostname: if config.protocol == Protocol::Imap {
            config.hostname.clone()
        } else {
            Protocol::Imap.default_hostname().into()
        },
        auth_failure_delay,
        ..ImapConfig::default()
    };
    if let Some(n) = config.max_bad_commands {
        imap.limits.max_bad_commands = n;
    }
    if let Some(n) = config.max_auth_failures {
        imap.limits.max_auth_failures = n;
    }
    if let Some(n) = config.max_message_size {
        imap.limits.max_append = u32::try_from(n).unwrap_or(u32::MAX);
    }
    ImapListener {
        config: Arc::new(imap),
        tls: (config.starttls || config.implicit_tls).then(|| pki.server.clone()),
        implicit_tls: config.implicit_tls,
        plaintext_auth: plaintext_auth(config),
        trusted: config.trusted.clone(),
    }
}

/// The listener for `protocol`.
pub fn listener(
    config: &ScriptConfig,
    protocol: Protocol,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> Listener {
    let role = match protocol {
        Protocol::Pop3 => {
            return Listener::Pop3(listener_for(config, pki, auth_failure_delay));
        }
        Protocol::Smtp => SmtpRole::Inbound,
        Protocol::Submission => SmtpRole::Submission,
        Protocol::Lmtp => SmtpRole::Lmtp,
        Protocol::Imap => {
            return Listener::Imap(imap_listener_for(config, pki, auth_failure_delay));
        }
    };
    Listener::Smtp(smtp_listener_for(config, role, pki, auth_failure_delay))
}

/// One listener per protocol, in [`Protocol::ALL`] order.
pub fn all_listeners(
    config: &ScriptConfig,
    pki: &TestPki,
    auth_failure_delay: Duration,
) -> Vec<Listener> {
    Protocol::ALL
        .iter()
        .map(|&p| listener(config, p, pki, auth_failure_delay))
        .collect()
}
