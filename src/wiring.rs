//! Turns a [`Config`] into a running server: binds the listeners, loads TLS material,
//! builds the store and hands everything to the runtime shell chosen at build time.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tidegate_core::pop3::{Pop3Config, Pop3Listener};
use tidegate_core::smtp::{SmtpConfig, SmtpListener, SmtpRole};
use tidegate_store::local::LocalStore;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::users::UsersFile;
use tidegate_store::{Listener, Listeners, ServerSpec, Shutdown};
use tidegate_store::{LoginPenalty, PenaltyConfig};

use crate::config::Config;

/// A bound listener, for the log and the demo's printout.
#[derive(Debug, Clone)]
pub struct Bound {
    /// `pop3`, `pop3s`, `smtp`, `submission` or `lmtp`.
    pub scheme: &'static str,
    /// The address clients connect to.
    pub addr: SocketAddr,
}

/// Everything `serve` needs, prepared while still able to report errors cleanly.
pub struct Prepared {
    /// The shell's input.
    pub spec: ServerSpec,
    /// What is listening where.
    pub bound: Vec<Bound>,
}

/// Backlog for listening sockets: std's default (128) drops SYNs under a burst of
/// thousands of connects; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: listen(2) on a socket we own; calling it again only changes the backlog.
        unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    }
    Ok(listener)
}

/// Bound sockets and their listeners, in the same order.
#[derive(Default)]
struct Listening {
    sockets: Vec<TcpListener>,
    listeners: Vec<Listener>,
    bound: Vec<Bound>,
}

impl Listening {
    fn add(
        &mut self,
        scheme: &'static str,
        addr: SocketAddr,
        listener: Listener,
    ) -> Result<(), String> {
        let socket = bind(addr)?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        self.bound.push(Bound {
            scheme,
            addr: local,
        });
        self.sockets.push(socket);
        self.listeners.push(listener);
        Ok(())
    }
}

/// Builds the listeners, TLS config and store from `config`.
pub fn prepare(config: &Config) -> Result<Prepared, String> {
    let tls_section = config.tls.clone().unwrap_or_default();
    let tls = tidegate_store::tls::server_config(
        tls_section.cert.as_deref(),
        tls_section.key.as_deref(),
        &config.storage.workarea,
        &config.hostname,
    )?;
    let plaintext_auth = config.plaintext_auth()?;
    let trusted = config.trusted_networks()?;
    let mut listeners = Listening::default();
    if let Some(pop3) = &config.pop3 {
        let pop3_config = Arc::new(Pop3Config {
            hostname: config.hostname.clone(),
            idle_timeout: Duration::from_secs(pop3.idle_timeout_secs),
            auth_failure_delay: Duration::from_millis(pop3.auth_failure_delay_ms),
            ..Pop3Config::default()
        });
        let plain = pop3.listen.iter().map(|a| (a, false));
        let implicit = pop3.listen_tls.iter().map(|a| (a, true));
        for (addr, implicit_tls) in plain.chain(implicit) {
            let listener = Listener::Pop3(Pop3Listener {
                config: pop3_config.clone(),
                tls: Some(tls.clone()),
                implicit_tls,
                plaintext_auth: plaintext_auth.clone(),
            });
            listeners.add(if implicit_tls { "pop3s" } else { "pop3" }, *addr, listener)?;
        }
    }
    let smtp_config = |role: SmtpRole, max_message_size: u64, auth_delay_ms: u64| {
        Arc::new(SmtpConfig {
            hostname: config.hostname.clone(),
            role,
            max_message_size,
            auth_failure_delay: Duration::from_millis(auth_delay_ms),
            ..SmtpConfig::default()
        })
    };
    let smtp_listener = |config: Arc<SmtpConfig>| {
        Listener::Smtp(SmtpListener {
            config,
            tls: Some(tls.clone()),
            plaintext_auth: plaintext_auth.clone(),
            trusted: trusted.clone(),
        })
    };
    if let Some(smtp) = &config.smtp {
        let (size, delay) = (smtp.max_message_size, smtp.auth_failure_delay_ms);
        let inbound = smtp_config(SmtpRole::Inbound, size, delay);
        let submission = smtp_config(SmtpRole::Submission, size, delay);
        for addr in &smtp.listen {
            listeners.add("smtp", *addr, smtp_listener(inbound.clone()))?;
        }
        for addr in &smtp.submission {
            listeners.add("submission", *addr, smtp_listener(submission.clone()))?;
        }
    }
    if let Some(lmtp) = &config.lmtp {
        let size = config
            .smtp
            .as_ref()
            .map_or(50 * 1024 * 1024, |s| s.max_message_size);
        let lmtp_config = smtp_config(SmtpRole::Lmtp, size, 1000);
        for addr in &lmtp.listen {
            listeners.add("lmtp", *addr, smtp_listener(lmtp_config.clone()))?;
        }
    }
    let Listening {
        sockets,
        listeners,
        bound,
    } = listeners;
    if sockets.is_empty() {
        return Err("the config names no listener: add [pop3], [smtp] or [lmtp] listeners".into());
    }
    let users = UsersFile::open(&config.users.file).map_err(|e| e.to_string())?;
    // Proxies and webmail in `[trust] networks` log in for many users: never penalised.
    let penalty = LoginPenalty::new(PenaltyConfig {
        exempt: trusted.clone(),
        ..PenaltyConfig::default()
    });
    let maildir = MaildirStore::new(
        &config.storage.mailbox_path,
        config.storage.fsync,
        &config.hostname,
    );
    let spec = ServerSpec {
        listeners: sockets,
        factory: Arc::new(Listeners(listeners)),
        executor: Arc::new(LocalStore::new(users, maildir).with_penalty(penalty)),
        max_connections: config.server.max_connections,
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
        threads: config.server.threads,
        workers: config.server.workers,
    };
    Ok(Prepared { spec, bound })
}

/// Runs the prepared server until `shutdown` fires and every session ended.
pub fn run(prepared: Prepared, shutdown: Shutdown) -> Result<(), String> {
    for b in &prepared.bound {
        log::info!(
            "listening: {}://{} ({} runtime)",
            b.scheme,
            b.addr,
            crate::runtime::NAME
        );
    }
    crate::runtime::serve(prepared.spec, shutdown).map_err(|e| e.to_string())
}

/// Drops root privileges to `user` after the ports are bound (`[server] user`).
pub fn drop_privileges(user: &str) -> Result<(), String> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other libc call.
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(());
        }
        let name =
            std::ffi::CString::new(user).map_err(|_| "server.user contains NUL".to_owned())?;
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(format!("server.user: no such user {user:?}"));
        }
        let (uid, gid) = ((*pw).pw_uid, (*pw).pw_gid);
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(format!(
                "cannot drop privileges to {user:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
