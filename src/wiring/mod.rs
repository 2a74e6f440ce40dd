//! Turns a [`Config`] into a running server: binds the listeners, loads TLS material,
//! builds the store and hands everything to the runtime shell chosen at build time.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tidegate_core::authd::AuthdConfig;
use tidegate_core::imap::{ImapConfig, ImapLimits, ImapListener};
use tidegate_core::pop3::{Pop3Config, Pop3Listener};
use tidegate_core::smtp::{SmtpConfig, SmtpListener, SmtpRole};
use tidegate_store::Accept;
use tidegate_store::authd_server::AuthdService;
use tidegate_store::imap::{ImapExecutor, ImapMailboxes};
use tidegate_store::local::{LocalStore, Pop3Locks};
use tidegate_store::lock::LockOptions;
use tidegate_store::maildir::MaildirStore;
use tidegate_store::metrics::DirectoryKind;
use tidegate_store::node::Node;
use tidegate_store::router::{BackendPorts, Router, RouterConfig};
use tidegate_store::service::{AddressLimit, BoxedSession, CappedFactory};
use tidegate_store::users::{
    AuthdDirectory, CacheConfig, CachedDirectory, LdapDirectory, TimedDirectory, UserDirectory,
    UsersFile,
};
use tidegate_store::{
    Listener, ListenerChange, ListenerChanges, ServerSpec, SessionFactory, Shutdown,
};
use tidegate_store::{LoginPenalty, PenaltyConfig, SessionRegistry};

use crate::config::Config;

mod outbound;
mod proxy;

use proxy::{FrontKind, FrontListener, Gatable};

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
    /// Applies a changed config to the running server.
    pub reloader: Arc<Reloader>,
    /// The queue and its runners, with `[relay]` or on a proxy front-end receiving mail.
    pub outbound: Option<outbound::Outbound>,
    /// Where the reloader sends listeners it adds or removes, for the shell.
    pub listener_changes: ListenerChanges,
    /// Every open connection, filled by the shell (`ctl who`, `ctl kick`, `ctl status`).
    pub sessions: Arc<SessionRegistry>,
}

impl Prepared {
    /// The queue, when there is one (for `ctl queue` and `ctl status`).
    pub fn queue(&self) -> Option<Arc<tidegate_store::queue::Queue>> {
        self.outbound.as_ref().map(|o| o.queue.clone())
    }
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

/// A listener the config asks for, not yet bound.
struct Planned {
    scheme: &'static str,
    addr: SocketAddr,
    listener: Listener,
}

/// The listeners `config` names, in a fixed order, with their TLS and limits.
fn plan_listeners(config: &Config) -> Result<Vec<Planned>, String> {
    let tls_section = config.tls.clone().unwrap_or_default();
    let tls = tidegate_store::tls::server_config(
        tls_section.cert.as_deref(),
        tls_section.key.as_deref(),
        &config.storage.workarea,
        &config.hostname,
    )?;
    let plaintext_auth = config.plaintext_auth()?;
    let trusted = config.trusted_networks()?;
    let front = proxy::proxy_config(config)?;
    let front_listener = |kind, addr: &SocketAddr, implicit_tls| {
        front.as_ref().map(|cfg| {
            Gatable::Front(Arc::new(FrontListener {
                kind,
                config: cfg.clone(),
                tls: Some(tls.clone()),
                implicit_tls,
                plaintext_auth: plaintext_auth.clone(),
                local: *addr,
            }))
        })
    };
    let mut planned = Vec::new();
    let mut add = |scheme, addr: &SocketAddr, listener| {
        planned.push(Planned {
            scheme,
            addr: *addr,
            listener: proxy::gate(config, &trusted, listener, *addr),
        })
    };
    if let Some(pop3) = &config.pop3 {
        let pop3_config = Arc::new(Pop3Config {
            hostname: config.hostname.clone(),
            idle_timeout: Duration::from_secs(pop3.idle_timeout_secs),
            login_timeout: Duration::from_secs(pop3.login_timeout_secs),
            auth_failure_delay: Duration::from_millis(pop3.auth_failure_delay_ms),
            mailbox_lock: pop3.lock,
            ..Pop3Config::default()
        });
        let plain = pop3.listen.iter().map(|a| (a, false));
        let implicit = pop3.listen_tls.iter().map(|a| (a, true));
        for (addr, implicit_tls) in plain.chain(implicit) {
            let server = || {
                Gatable::Server(Listener::Pop3(Pop3Listener {
                    config: pop3_config.clone(),
                    tls: Some(tls.clone()),
                    implicit_tls,
                    plaintext_auth: plaintext_auth.clone(),
                    trusted: trusted.clone(),
                }))
            };
            let listener =
                front_listener(FrontKind::Pop3, addr, implicit_tls).unwrap_or_else(server);
            add(if implicit_tls { "pop3s" } else { "pop3" }, addr, listener);
        }
    }
    if let Some(imap) = &config.imap {
        let imap_config = Arc::new(ImapConfig {
            hostname: config.hostname.clone(),
            idle_timeout: Duration::from_secs(imap.idle_timeout_secs),
            login_timeout: Duration::from_secs(imap.login_timeout_secs),
            auth_failure_delay: Duration::from_millis(imap.auth_failure_delay_ms),
            idle_poll_interval: Duration::from_secs(imap.idle_poll_secs.max(1)),
            limits: ImapLimits {
                max_append: imap.max_append_size,
                ..ImapLimits::default()
            },
            ..ImapConfig::default()
        });
        let plain = imap.listen.iter().map(|a| (a, false));
        let implicit = imap.listen_tls.iter().map(|a| (a, true));
        for (addr, implicit_tls) in plain.chain(implicit) {
            let server = || {
                Gatable::Server(Listener::Imap(ImapListener {
                    config: imap_config.clone(),
                    tls: Some(tls.clone()),
                    implicit_tls,
                    plaintext_auth: plaintext_auth.clone(),
                    trusted: trusted.clone(),
                }))
            };
            let listener =
                front_listener(FrontKind::Imap, addr, implicit_tls).unwrap_or_else(server);
            add(if implicit_tls { "imaps" } else { "imap" }, addr, listener);
        }
    }
    let smtp_config = |role: SmtpRole, max_message_size: u64, auth_delay_ms: u64, login_secs| {
        Arc::new(SmtpConfig {
            hostname: config.hostname.clone(),
            role,
            max_message_size,
            auth_failure_delay: Duration::from_millis(auth_delay_ms),
            login_timeout: Duration::from_secs(login_secs),
            // Only submission relays; the session ignores the flag for other roles.
            relay: role == SmtpRole::Submission && config.relay.is_some(),
            ..SmtpConfig::default()
        })
    };
    let smtp_listener = |config: Arc<SmtpConfig>| {
        Gatable::Server(Listener::Smtp(SmtpListener {
            config,
            tls: Some(tls.clone()),
            plaintext_auth: plaintext_auth.clone(),
            trusted: trusted.clone(),
        }))
    };
    if let Some(smtp) = &config.smtp {
        let (size, delay) = (smtp.max_message_size, smtp.auth_failure_delay_ms);
        let login = smtp.login_timeout_secs;
        let inbound = smtp_config(SmtpRole::Inbound, size, delay, login);
        let submission = smtp_config(SmtpRole::Submission, size, delay, login);
        for addr in &smtp.listen {
            add("smtp", addr, smtp_listener(inbound.clone()));
        }
        for addr in &smtp.submission {
            let listener = front_listener(FrontKind::Submission, addr, false)
                .unwrap_or_else(|| smtp_listener(submission.clone()));
            add("submission", addr, listener);
        }
    }
    if let Some(lmtp) = &config.lmtp {
        let size = config
            .smtp
            .as_ref()
            .map_or(50 * 1024 * 1024, |s| s.max_message_size);
        let lmtp_config = smtp_config(SmtpRole::Lmtp, size, 1000, lmtp.login_timeout_secs);
        for addr in &lmtp.listen {
            add("lmtp", addr, smtp_listener(lmtp_config.clone()));
        }
    }
    // Not behind the PROXY-header gate: authd clients are tidegate nodes, never
    // proxied mail clients.
    if let Some(authd) = &config.authd {
        let service = AuthdService::new(
            AuthdConfig::new(authd.secret()?),
            authd.tls.then(|| tls.clone()),
        );
        let service: Arc<dyn Accept> = Arc::new(service);
        for addr in authd.listen.to_vec() {
            planned.push(Planned {
                scheme: "authd",
                addr,
                listener: Listener::Custom(service.clone()),
            });
        }
    }
    if planned.is_empty() {
        return Err(
            "the config names no listener: add [pop3], [imap], [smtp], [lmtp] or [authd] listeners"
                .into(),
        );
    }
    Ok(planned)
}

/// The proxy router of a front-end config; `None` when `[proxy]` is off.
fn router(config: &Config) -> Option<Arc<Router>> {
    let proxy = config.proxy.as_ref().filter(|p| p.enabled)?;
    let ports = &proxy.backend_ports;
    Some(Arc::new(Router::new(RouterConfig {
        default_host: proxy.default_host.clone(),
        ports: BackendPorts {
            pop3: ports.pop3,
            imap: ports.imap,
            submission: ports.submission,
            lmtp: ports.lmtp,
        },
        down_for: Duration::from_secs(proxy.backend_down_secs),
        local_names: vec![config.hostname.clone()],
    })))
}

/// The user database `[users]` names, behind the authentication cache when
/// `cache_ttl_secs` is set.
fn user_directory(config: &Config) -> Result<Arc<dyn UserDirectory>, String> {
    let users = &config.users;
    let (directory, kind): (Arc<dyn UserDirectory>, _) = match (users.backend.as_str(), &users.ldap)
    {
        ("authd", _) => (
            Arc::new(AuthdDirectory::new(users.authd.to_store()?)?),
            DirectoryKind::Authd,
        ),
        ("ldap", Some(ldap)) => (
            Arc::new(LdapDirectory::new(ldap.to_store()?).map_err(|e| format!("users.ldap: {e}"))?),
            DirectoryKind::Ldap,
        ),
        _ => (
            Arc::new(UsersFile::open(&users.file).map_err(|e| e.to_string())?),
            DirectoryKind::File,
        ),
    };
    // Timed under the cache: the histogram is the database's own latency.
    let directory: Arc<dyn UserDirectory> = Arc::new(TimedDirectory::new(directory, kind));
    if users.cache_ttl_secs == 0 {
        return Ok(directory);
    }
    Ok(Arc::new(CachedDirectory::new(
        directory,
        CacheConfig {
            ttl: Duration::from_secs(users.cache_ttl_secs),
            capacity: users.cache_size,
        },
    )))
}

/// Builds the listeners, TLS config and store from `config`, and binds the ports.
pub fn prepare(config: &Config, config_path: Option<&Path>) -> Result<Prepared, String> {
    let planned = plan_listeners(config)?;
    reject_duplicates(&planned)?;
    let mut sockets = Vec::new();
    let mut live = Vec::new();
    for (id, planned) in planned.into_iter().enumerate() {
        let socket = bind(planned.addr)?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        sockets.push(socket);
        live.push(LiveListener {
            id,
            configured: planned.addr,
            slot: ListenerSlot {
                scheme: planned.scheme,
                listener: planned.listener,
                local,
            },
        });
    }
    let bound = live.iter().map(LiveListener::bound).collect();
    let directory = user_directory(config)?;
    // Proxies and webmail in `[trust] networks` log in for many users: never penalised.
    let penalty = LoginPenalty::new(PenaltyConfig {
        exempt: config.trusted_networks()?,
        ..PenaltyConfig::default()
    });
    let maildir = MaildirStore::new(
        &config.storage.mailbox_path,
        config.storage.fsync,
        &config.hostname,
    );
    let router = router(config);
    let outbound =
        outbound::Outbound::prepare(config, router.clone(), directory.clone(), maildir.clone())?;
    let mut local = LocalStore::new(directory.clone(), maildir).with_penalty(penalty);
    if let Some(outbound) = &outbound {
        local = local.with_queue(outbound.queue.clone());
    }
    if let Some(imap) = &config.imap {
        let mailboxes = ImapMailboxes::new(
            &config.storage.mailbox_path,
            config.storage.fsync,
            &config.hostname,
        )
        .with_folder_cache(imap.folder_cache);
        local = local.with_imap(ImapExecutor::new(mailboxes));
    }
    if let Some(pop3) = config.pop3.as_ref().filter(|pop3| pop3.lock) {
        let options = LockOptions {
            stale_after: Duration::from_secs(pop3.lock_stale_secs),
            ..LockOptions::new(&config.hostname)
        };
        local = local.with_pop3_lock(Pop3Locks::new(options));
    }
    let node = Arc::new(Node::new(router, local));
    let factory = Arc::new(SwappableFactory::new(live.iter().map(|l| l.slot.clone())));
    let listener_changes = ListenerChanges::new();
    let reloader = Reloader {
        relay: relay_text(config),
        config_path: config_path.map(Path::to_path_buf),
        state: Mutex::new(ReloadState {
            next_id: live.len(),
            live,
        }),
        factory: factory.clone(),
        node: node.clone(),
        changes: listener_changes.clone(),
        generation: AtomicU64::new(1),
    };
    // Front-ends and webmail in `[trust] networks` bring many users from one address.
    let exempt = config.trusted_networks()?;
    let per_address = (config.server.max_connections_per_ip > 0)
        .then(|| AddressLimit::new(config.server.max_connections_per_ip, exempt));
    // authd and LMTP clients are tidegate nodes with connection pools: not capped.
    let rule = factory.clone();
    let factory = CappedFactory::new(factory, per_address).uncapped_if(move |id| rule.uncapped(id));
    let spec = ServerSpec {
        listeners: sockets,
        factory: Arc::new(factory),
        executor: node,
        max_connections: config.server.max_connections,
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
        threads: config.server.threads,
        workers: config.server.workers,
    };
    Ok(Prepared {
        spec,
        bound,
        reloader: Arc::new(reloader),
        outbound,
        listener_changes,
        sessions: Arc::new(SessionRegistry::new()),
    })
}

/// Two listeners on one address cannot both be bound; said before binding either.
fn reject_duplicates(planned: &[Planned]) -> Result<(), String> {
    for (i, p) in planned.iter().enumerate() {
        if let Some(other) = planned[..i].iter().find(|o| o.addr == p.addr) {
            return Err(format!(
                "{} is listed twice (as {} and as {})",
                p.addr, other.scheme, p.scheme
            ));
        }
    }
    Ok(())
}

/// What a listener id serves: its protocol and settings, and the address it is bound
/// to (for the log and `ctl status`).
#[derive(Clone)]
struct ListenerSlot {
    scheme: &'static str,
    listener: Listener,
    local: SocketAddr,
}

/// A listener of the running server: its id (the shell's listener index, never
/// reused), the address the config names (the key a reload compares) and its slot.
struct LiveListener {
    id: usize,
    configured: SocketAddr,
    slot: ListenerSlot,
}

impl LiveListener {
    fn bound(&self) -> Bound {
        Bound {
            scheme: self.slot.scheme,
            addr: self.slot.local,
        }
    }
}

/// A [`SessionFactory`] whose listeners a reload replaces, adds and removes: new
/// connections get the new settings, open sessions keep theirs. Indexed by listener id;
/// an id a reload removed keeps its slot until the next reload, for connections the
/// shell accepted on it just before it stopped accepting there.
pub struct SwappableFactory {
    current: RwLock<Arc<Vec<Option<ListenerSlot>>>>,
}

impl SwappableFactory {
    fn new(slots: impl Iterator<Item = ListenerSlot>) -> SwappableFactory {
        SwappableFactory {
            current: RwLock::new(Arc::new(slots.map(Some).collect())),
        }
    }

    fn current(&self) -> Arc<Vec<Option<ListenerSlot>>> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, slots: Vec<Option<ListenerSlot>>) {
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(slots),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(slots),
        }
    }

    /// Whether listener `id` is left out of the per-address cap: authd and LMTP
    /// clients are tidegate nodes with connection pools.
    fn uncapped(&self, id: usize) -> bool {
        self.current()
            .get(id)
            .and_then(Option::as_ref)
            .is_some_and(|slot| matches!(slot.scheme, "authd" | "lmtp"))
    }
}

impl SessionFactory for SwappableFactory {
    fn open(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.current().get(listener).and_then(Option::as_ref) {
            Some(slot) => crate::metrics::observe::open(&slot.listener, slot.local, peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }

    fn busy(&self, listener: usize, peer: SocketAddr, now: Instant) -> BoxedSession {
        match self.current().get(listener).and_then(Option::as_ref) {
            Some(slot) => slot.listener.busy(peer, now),
            None => Box::new(tidegate_core::refusal::Refusal::new(b"")),
        }
    }
}

/// The listeners of the running server, changed under the reloader's lock.
struct ReloadState {
    live: Vec<LiveListener>,
    /// The id the next added listener gets.
    next_id: usize,
}

/// Re-reads the config file and the user database of a running server
/// (`tidegate ctl reload`, SIGHUP, `[control] watch`).
pub struct Reloader {
    /// `[relay]` as it was at start (the queue and its runners take it then).
    relay: String,
    config_path: Option<PathBuf>,
    /// Held for a whole reload, so that two at once (SIGHUP and `ctl reload`) apply
    /// one after the other.
    state: Mutex<ReloadState>,
    factory: Arc<SwappableFactory>,
    node: Arc<Node>,
    /// Tells the shell which listeners to start and stop.
    changes: ListenerChanges,
    /// The config generation: 1 at start, one more for each successful reload.
    generation: AtomicU64,
}

impl Reloader {
    /// Applies the config file as it is now. A config that fails validation, or whose
    /// new listeners cannot be bound, is refused with the reason and the running
    /// settings stay; otherwise new connections get the new TLS certificate, limits,
    /// policies and proxy routes, the user database is re-read, listeners the config
    /// adds start accepting and listeners it drops stop (their open sessions go on).
    /// A listener is known by the address the config names: a changed address is a
    /// removal and an addition, a changed protocol on the same address keeps the socket.
    pub fn reload(&self) -> Result<String, String> {
        let applied = self.apply()?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(applied)
    }

    /// The config generation `ctl status` reports: 1 for the config the server started
    /// with, one more for each successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Each listener id the shell may report a connection on, with its scheme and
    /// bound address (listeners a reload removed stay known until the next reload).
    pub fn listener_names(&self) -> Vec<(usize, Bound)> {
        self.factory
            .current()
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| {
                let slot = slot.as_ref()?;
                Some((
                    id,
                    Bound {
                        scheme: slot.scheme,
                        addr: slot.local,
                    },
                ))
            })
            .collect()
    }

    /// The body of [`Reloader::reload`].
    fn apply(&self) -> Result<String, String> {
        let reload_users = || {
            self.node
                .local()
                .users()
                .reload()
                .map_err(|e| e.to_string())
        };
        let Some(path) = &self.config_path else {
            reload_users()?;
            return Ok("users reloaded".into());
        };
        let config = Config::load(path)?;
        if relay_text(&config) != self.relay {
            return Err(
                "[relay] changed; this version applies relay settings on restart only".into(),
            );
        }
        let planned = plan_listeners(&config)?;
        reject_duplicates(&planned)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Bind every new address before changing anything: one that fails refuses the
        // whole reload, and the sockets bound so far close as they are dropped.
        let mut next_id = state.next_id;
        let mut live = Vec::with_capacity(planned.len());
        let mut added = Vec::new();
        for p in planned {
            let kept = state.live.iter().find(|l| l.configured == p.addr);
            let (id, local) = match kept {
                Some(old) => (old.id, old.slot.local),
                None => {
                    let socket = bind(p.addr).map_err(|e| {
                        format!("cannot add listener +{}://{}: {e}", p.scheme, p.addr)
                    })?;
                    let local = socket.local_addr().map_err(|e| e.to_string())?;
                    let id = next_id;
                    next_id += 1;
                    added.push(ListenerChange::Add { index: id, socket });
                    (id, local)
                }
            };
            live.push(LiveListener {
                id,
                configured: p.addr,
                slot: ListenerSlot {
                    scheme: p.scheme,
                    listener: p.listener,
                    local,
                },
            });
        }
        reload_users()?;
        let removed: Vec<&LiveListener> = state
            .live
            .iter()
            .filter(|old| !live.iter().any(|l| l.id == old.id))
            .collect();
        let mut slots: Vec<Option<ListenerSlot>> = vec![None; next_id];
        for l in removed.iter().copied().chain(&live) {
            if let Some(slot) = slots.get_mut(l.id) {
                *slot = Some(l.slot.clone());
            }
        }
        let describe =
            |sign: char, l: &LiveListener| format!("{sign}{}://{}", l.slot.scheme, l.slot.local);
        let mut change: Vec<String> = live
            .iter()
            .filter(|l| !state.live.iter().any(|old| old.id == l.id))
            .map(|l| describe('+', l))
            .collect();
        change.extend(removed.iter().map(|l| describe('-', l)));
        let removals: Vec<ListenerChange> = removed
            .iter()
            .map(|l| ListenerChange::Remove { index: l.id })
            .collect();
        self.factory.replace(slots);
        self.changes.submit(removals.into_iter().chain(added));
        state.live = live;
        state.next_id = next_id;
        drop(state);
        self.node.set_router(router(&config));
        tidegate_store::metrics::global().config_reloaded();
        if change.is_empty() {
            Ok(format!("reloaded {}", path.display()))
        } else {
            let change = change.join(" ");
            log::info!("reload: listeners {change}");
            Ok(format!("reloaded {} (listeners {change})", path.display()))
        }
    }

    /// What is listening where now (after the reloads so far).
    pub fn bound(&self) -> Vec<Bound> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.live.iter().map(LiveListener::bound).collect()
    }

    /// The config file this server was started from, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }
}

/// `[relay]` as text, to tell whether a reload changes it.
fn relay_text(config: &Config) -> String {
    format!("{:?}", config.relay)
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
    let runner = match prepared.outbound {
        Some(outbound) => Some(outbound.start()?),
        None => None,
    };
    let served = crate::runtime::serve(
        prepared.spec,
        shutdown,
        prepared.listener_changes,
        prepared.sessions,
    )
    .map_err(|e| e.to_string());
    if let Some(runner) = runner {
        runner.stop();
    }
    served
}
