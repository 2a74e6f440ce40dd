//! Listener settings a script chooses with `@config key=value`, and the protocol it
//! speaks (its directory, or `@protocol`).

use std::fmt;

use tidegate_core::net::Cidr;

/// Which listener a connection goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// POP3 (`scripts/pop3/`).
    Pop3,
    /// SMTP on the inbound (MX) listener (`scripts/smtp/`).
    Smtp,
    /// SMTP on the submission listener (`scripts/submission/`).
    Submission,
    /// LMTP (`scripts/lmtp/`).
    Lmtp,
    /// IMAP4rev1 (`scripts/imap/`).
    Imap,
}

impl Protocol {
    /// Every protocol, in the order the drivers open their listeners.
    pub const ALL: [Protocol; 5] = [
        Protocol::Pop3,
        Protocol::Smtp,
        Protocol::Submission,
        Protocol::Lmtp,
        Protocol::Imap,
    ];

    /// The protocol a script directory or `@protocol` word names.
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "pop3" => Some(Protocol::Pop3),
            "smtp" => Some(Protocol::Smtp),
            "submission" => Some(Protocol::Submission),
            "lmtp" => Some(Protocol::Lmtp),
            "imap" => Some(Protocol::Imap),
            _ => None,
        }
    }

    /// The directory and directive name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Lmtp => "lmtp",
            Protocol::Imap => "imap",
        }
    }

    /// The host name a script gets unless it sets `hostname=`.
    pub fn default_hostname(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop.test",
            Protocol::Imap => "imap.test",
            _ => "mx.test",
        }
    }

    /// Whether `implicit_tls=true` puts this listener behind TLS from the first byte
    /// (POP3S, IMAPS; SMTP uses STARTTLS only).
    pub fn has_implicit_tls(self) -> bool {
        matches!(self, Protocol::Pop3 | Protocol::Imap)
    }

    /// Index into [`Protocol::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a password may be sent without TLS on the scripted listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaintextSetting {
    /// Never before TLS.
    Never,
    /// From loopback and trusted networks (the server default).
    Trusted,
    /// From anyone.
    Always,
}

/// Listener settings a script chooses with `@config key=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptConfig {
    /// The protocol of connections that do not name one: the script's directory
    /// (`scripts/<protocol>/`), or `@protocol`.
    pub protocol: Protocol,
    /// `plaintext_auth=never|trusted|always` (default `trusted`).
    pub plaintext_auth: PlaintextSetting,
    /// `starttls=true`: a certificate is configured, so STLS/STARTTLS is offered.
    pub starttls: bool,
    /// `implicit_tls=true`: the POP3 listener is an implicit-TLS port (995).
    pub implicit_tls: bool,
    /// `hostname=NAME` for greetings (default `pop.test` for POP3, `mx.test` for the
    /// SMTP family).
    pub hostname: String,
    /// `max_bad_commands=N` (default: the server's).
    pub max_bad_commands: Option<u32>,
    /// `max_auth_failures=N` (default: the server's).
    pub max_auth_failures: Option<u32>,
    /// `client=ADDRESS`: the client's address as the core sees it (core driver only).
    pub client: Option<std::net::IpAddr>,
    /// `max_message_size=N`: SMTP `SIZE` (default: the server's, 50 MiB).
    pub max_message_size: Option<u64>,
    /// `max_recipients=N`: SMTP recipients per transaction (default 100).
    pub max_recipients: Option<usize>,
    /// `append_chunk=N`: message bytes per store append (default 64 KiB); small values
    /// make short messages cross append boundaries.
    pub append_chunk: Option<usize>,
    /// `trusted=CIDR`: a trusted network (LMTP serves loopback and these), repeatable.
    pub trusted: Vec<Cidr>,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig::for_protocol(Protocol::Pop3)
    }
}

impl ScriptConfig {
    /// The defaults of a script in `scripts/<protocol>/`.
    pub fn for_protocol(protocol: Protocol) -> Self {
        ScriptConfig {
            protocol,
            plaintext_auth: PlaintextSetting::Trusted,
            starttls: false,
            implicit_tls: false,
            hostname: protocol.default_hostname().into(),
            max_bad_commands: None,
            max_auth_failures: None,
            client: None,
            max_message_size: None,
            max_recipients: None,
            append_chunk: None,
            trusted: Vec::new(),
        }
    }

    /// `@protocol NAME`: switches the default protocol (and the default host name, if
    /// the script did not set one).
    pub(crate) fn set_protocol(&mut self, protocol: Protocol) {
        if self.hostname == self.protocol.default_hostname() {
            self.hostname = protocol.default_hostname().into();
        }
        self.protocol = protocol;
    }
}

/// Applies one `key=value` setting.
pub(crate) fn parse_config(config: &mut ScriptConfig, setting: &str) -> Result<(), String> {
    let (key, value) = setting
        .split_once('=')
        .ok_or_else(|| format!("@config needs key=value, got {setting:?}"))?;
    let flag = || match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} is true or false, not {value:?}")),
    };
    let number = || {
        value
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{key} needs a positive number, not {value:?}"))
    };
    let small = || number().and_then(|n| u32::try_from(n).map_err(|e| e.to_string()));
    match key {
        "plaintext_auth" => {
            config.plaintext_auth = match value {
                "never" => PlaintextSetting::Never,
                "trusted" => PlaintextSetting::Trusted,
                "always" => PlaintextSetting::Always,
                _ => {
                    return Err(format!(
                        "plaintext_auth is never|trusted|always, not {value:?}"
                    ));
                }
            }
        }
        "starttls" => config.starttls = flag()?,
        "implicit_tls" => config.implicit_tls = flag()?,
        "hostname" => config.hostname = value.to_owned(),
        "max_bad_commands" => config.max_bad_commands = Some(small()?),
        "max_auth_failures" => config.max_auth_failures = Some(small()?),
        "max_message_size" => config.max_message_size = Some(number()?),
        "max_recipients" => config.max_recipients = Some(small()? as usize),
        "append_chunk" => config.append_chunk = Some(small()? as usize),
        "client" => {
            config.client = Some(
                value
                    .parse()
                    .map_err(|_| format!("client needs an IP address, not {value:?}"))?,
            )
        }
        "trusted" => config.trusted.push(
            value
                .parse()
                .map_err(|_| format!("trusted needs a network like 10.0.0.0/8, not {value:?}"))?,
        ),
        _ => return Err(format!("unknown @config key {key:?}")),
    }
    Ok(())
}
