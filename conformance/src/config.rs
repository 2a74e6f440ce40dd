//! Listener settings a script chooses with `@config key=value`.

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
    /// `plaintext_auth=never|trusted|always` (default `trusted`).
    pub plaintext_auth: PlaintextSetting,
    /// `starttls=true`: a certificate is configured, so STLS is offered.
    pub starttls: bool,
    /// `implicit_tls=true`: the listener is an implicit-TLS port (995).
    pub implicit_tls: bool,
    /// `hostname=NAME` for the greeting (default `pop.test`).
    pub hostname: String,
    /// `max_bad_commands=N` (default: the server's).
    pub max_bad_commands: Option<u32>,
    /// `max_auth_failures=N` (default: the server's).
    pub max_auth_failures: Option<u32>,
    /// `client=ADDRESS`: the client's address as the core sees it (core driver only).
    pub client: Option<std::net::IpAddr>,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig {
            plaintext_auth: PlaintextSetting::Trusted,
            starttls: false,
            implicit_tls: false,
            hostname: "pop.test".into(),
            max_bad_commands: None,
            max_auth_failures: None,
            client: None,
        }
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
            .parse::<u32>()
            .map_err(|_| format!("{key} needs a number, not {value:?}"))
    };
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
        "max_bad_commands" => config.max_bad_commands = Some(number()?),
        "max_auth_failures" => config.max_auth_failures = Some(number()?),
        "client" => {
            config.client = Some(
                value
                    .parse()
                    .map_err(|_| format!("client needs an IP address, not {value:?}"))?,
            )
        }
        _ => return Err(format!("unknown @config key {key:?}")),
    }
    Ok(())
}
