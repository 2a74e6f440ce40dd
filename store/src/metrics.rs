//! Process-wide counters, gauges and histograms for the `[metrics]` endpoint, rendered
//! in the Prometheus text exposition format 0.0.4.
//!
//! Every event is one or two relaxed atomic operations on a fixed slot: no lock, no
//! allocation on the hot path. Label sets are fixed and small: protocols and results are
//! enums; back-end names take one of [`MAX_BACKENDS`] slots the first time they are
//! seen and every later name is counted under `other`, so a misconfiguration naming
//! thousands of hosts cannot grow the exposition without bound.
//!
//! The registry is one `static` ([`global`]) because its events come from every layer
//! (sessions in the binary, the store's deliveries and user lookups, the router); tests
//! that need a quiet registry build their own with [`Metrics::new`].

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI8, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The protocol of a session or login (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// POP3 (RFC 1939), plain or implicit TLS, served or proxied.
    Pop3,
    /// IMAP (RFC 3501), plain or implicit TLS, served or proxied.
    Imap,
    /// Inbound SMTP (RFC 5321).
    Smtp,
    /// Submission (RFC 6409), served or proxied.
    Submission,
    /// LMTP (RFC 2033).
    Lmtp,
}

impl Protocol {
    /// Every protocol, in exposition order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Pop3,
        Protocol::Imap,
        Protocol::Smtp,
        Protocol::Submission,
        Protocol::Lmtp,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pop3 => "pop3",
            Protocol::Imap => "imap",
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Lmtp => "lmtp",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a login attempt ended (the `result` label of `tidegate_logins_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    /// The password was right (and, on a front-end, a back-end was chosen).
    Success,
    /// Wrong password, unknown user, disabled account or throttled address.
    Failure,
    /// The user database or the back-end could not answer; the client may retry.
    TempFail,
}

impl LoginResult {
    const ALL: [LoginResult; 3] = [
        LoginResult::Success,
        LoginResult::Failure,
        LoginResult::TempFail,
    ];

    /// The label value (also used by the login log line).
    pub fn name(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::Failure => "failure",
            LoginResult::TempFail => "tempfail",
        }
    }
}

/// How the delivery of a message to one recipient ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Stored in the recipient's maildir.
    Delivered,
    /// Not stored (storage error, over quota, recipient gone).
    Failed,
}

impl DeliveryResult {
    const ALL: [DeliveryResult; 2] = [DeliveryResult::Delivered, DeliveryResult::Failed];

    fn name(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Failed => "failed",
        }
    }
}

/// Which kind of user database answered a lookup (the `backend` label of
/// `tidegate_user_lookup_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryKind {
    /// The users file.
    File,
    /// A `tidegate authd` over the network.
    Authd,
    /// An LDAP server.
    Ldap,
}

impl DirectoryKind {
    const ALL: [DirectoryKind; 3] = [
        DirectoryKind::File,
        DirectoryKind::Authd,
        DirectoryKind::Ldap,
    ];

    fn name(self) -> &'static str {
        match self {
            DirectoryKind::File => "file",
            DirectoryKind::Authd => "authd",
            DirectoryKind::Ldap => "ldap",
        }
    }
}

/// The most back-end names with a label of their own; the rest count as `other`.
pub const MAX_BACKENDS: usize = 32;

/// Upper bounds of the lookup-latency buckets, in seconds: from a cached or in-memory
/// lookup (well under a millisecond) to a slow network database.
pub const LOOKUP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; LOOKUP_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LOOKUP_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = LOOKUP_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LOOKUP_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// Per-back-end counters: a name claimed once per slot, then plain atomics.
#[derive(Debug)]
struct Backends {
    names: [OnceLock<Box<str>>; MAX_BACKENDS],
    /// One more slot than names: the last is `other`.
    handovers: [AtomicU64; MAX_BACKENDS + 1],
    /// -1 unknown (not exposed), 0 down, 1 up.
    up: [AtomicI8; MAX_BACKENDS],
}

impl Backends {
    const fn new() -> Backends {
        Backends {
            names: [const { OnceLock::new() }; MAX_BACKENDS],
            handovers: [const { AtomicU64::new(0) }; MAX_BACKENDS + 1],
            up: [const { AtomicI8::new(-1) }; MAX_BACKENDS],
        }
    }

    /// The slot of `name`, claiming a free one the first time; `None` when all are
    /// taken by other names. Lock-free: a slot's name never changes once set.
    fn slot(&self, name: &str) -> Option<usize> {
        for (i, cell) in self.names.iter().enumerate() {
            match cell.get() {
                Some(existing) if &**existing == name => return Some(i),
                Some(_) => continue,
                None => {
                    // Another thread may claim this slot first, with this or another name.
                    let _ = cell.set(name.into());
                    if cell.get().is_some_and(|claimed| &**claimed == name) {
                        return Some(i);
                    }
                }
            }
        }
        None
    }
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    sessions_open: [AtomicI64; Protocol::ALL.len()],
    sessions_total: [AtomicU64; Protocol::ALL.len()],
    logins: [[AtomicU64; LoginResult::ALL.len()]; Protocol::ALL.len()],
    deliveries: [AtomicU64; DeliveryResult::ALL.len()],
    delivered_bytes: AtomicU64,
    backends: Backends,
    lookups: [Histogram; DirectoryKind::ALL.len()],
    config_generation: AtomicU64,
    queue_messages: AtomicU64,
    started: OnceLock<Instant>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

static GLOBAL: Metrics = Metrics::new();

/// The registry of this process, which the `[metrics]` endpoint exposes.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Sets `tidegate_queue_messages`, the number of messages waiting in the outbound
/// queue. The queue calls it whenever its size changes (or periodically); the gauge
/// shows the last value set, 0 until the first call.
pub fn queue_size(n: usize) {
    GLOBAL.set_queue_size(n);
}

impl Metrics {
    /// An empty registry.
    pub const fn new() -> Metrics {
        Metrics {
            sessions_open: [const { AtomicI64::new(0) }; Protocol::ALL.len()],
            sessions_total: [const { AtomicU64::new(0) }; Protocol::ALL.len()],
            logins: [const { [const { AtomicU64::new(0) }; LoginResult::ALL.len()] };
                Protocol::ALL.len()],
            deliveries: [const { AtomicU64::new(0) }; DeliveryResult::ALL.len()],
            delivered_bytes: AtomicU64::new(0),
            backends: Backends::new(),
            lookups: [const { Histogram::new() }; DirectoryKind::ALL.len()],
            config_generation: AtomicU64::new(0),
            queue_messages: AtomicU64::new(0),
            started: OnceLock::new(),
        }
    }

    /// Marks the start of the process for `tidegate_uptime_seconds` (the first call
    /// wins) and sets the config generation to 1.
    pub fn start(&self, now: Instant) {
        let _ = self.started.set(now);
        let _ = self
            .config_generation
            .compare_exchange(0, 1, Relaxed, Relaxed);
    }

    /// A session of `protocol` started.
    pub fn session_opened(&self, protocol: Protocol) {
        self.sessions_open[protocol.index()].fetch_add(1, Relaxed);
        self.sessions_total[protocol.index()].fetch_add(1, Relaxed);
    }

    /// A session of `protocol` ended.
    pub fn session_closed(&self, protocol: Protocol) {
        self.sessions_open[protocol.index()].fetch_sub(1, Relaxed);
    }

    /// Sessions of `protocol` open now.
    pub fn sessions_open(&self, protocol: Protocol) -> i64 {
        self.sessions_open[protocol.index()].load(Relaxed)
    }

    /// A login attempt over `protocol` ended with `result`.
    pub fn login(&self, protocol: Protocol, result: LoginResult) {
        self.logins[protocol.index()][result as usize].fetch_add(1, Relaxed);
    }

    /// One recipient's delivery ended with `result`.
    pub fn delivery(&self, result: DeliveryResult) {
        self.deliveries[result as usize].fetch_add(1, Relaxed);
    }

    /// `bytes` of message data were stored (once per recipient's copy).
    pub fn delivered_bytes(&self, bytes: u64) {
        self.delivered_bytes.fetch_add(bytes, Relaxed);
    }

    /// A front-end handed a logged-in user to `backend` (a `tohost` or `default_host`).
    pub fn handover(&self, backend: &str) {
        let slot = self.backends.slot(backend).unwrap_or(MAX_BACKENDS);
        self.backends.handovers[slot].fetch_add(1, Relaxed);
    }

    /// Whether `backend` answers, as the front-end's circuit breaker last saw it.
    pub fn backend_up(&self, backend: &str, up: bool) {
        if let Some(slot) = self.backends.slot(backend) {
            self.backends.up[slot].store(i8::from(up), Relaxed);
        }
    }

    /// A user-database lookup or password check of `kind` took `took`.
    pub fn user_lookup(&self, kind: DirectoryKind, took: Duration) {
        self.lookups[kind as usize].observe(took);
    }

    /// A reload applied a new config.
    pub fn config_reloaded(&self) {
        self.config_generation.fetch_add(1, Relaxed);
    }

    /// Sets the outbound queue's size (see [`queue_size`]).
    pub fn set_queue_size(&self, n: usize) {
        self.queue_messages
            .store(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
    }

    /// The whole registry in the Prometheus text format 0.0.4, as of `now`.
    pub fn render(&self, now: Instant) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = self.write_to(&mut out, now);
        out
    }

    fn write_to(&self, out: &mut String, now: Instant) -> std::fmt::Result {
        header(
            out,
            "tidegate_sessions",
            "gauge",
            "Sessions open now, by protocol.",
        )?;
        for p in Protocol::ALL {
            let open = self.sessions_open[p.index()].load(Relaxed).max(0);
            writeln!(out, "tidegate_sessions{{protocol=\"{}\"}} {open}", p.name())?;
        }
        header(
            out,
            "tidegate_sessions_total",
            "counter",
            "Sessions started, by protocol.",
        )?;
        for p in Protocol::ALL {
            let total = self.sessions_total[p.index()].load(Relaxed);
            writeln!(
                out,
                "tidegate_sessions_total{{protocol=\"{}\"}} {total}",
                p.name()
            )?;
        }
        header(
            out,
            "tidegate_logins_total",
            "counter",
            "Login attempts, by protocol and result.",
        )?;
        for p in Protocol::ALL {
            for r in LoginResult::ALL {
                let n = self.logins[p.index()][r as usize].load(Relaxed);
                writeln!(
                    out,
                    "tidegate_logins_total{{protocol=\"{}\",result=\"{}\"}} {n}",
                    p.name(),
                    r.name()
                )?;
            }
        }
        header(
            out,
            "tidegate_deliveries_total",
            "counter",
            "Deliveries to local mailboxes, one per recipient, by result.",
        )?;
        for r in DeliveryResult::ALL {
            let n = self.deliveries[r as usize].load(Relaxed);
            writeln!(
                out,
                "tidegate_deliveries_total{{result=\"{}\"}} {n}",
                r.name()
            )?;
        }
        header(
            out,
            "tidegate_delivered_bytes_total",
            "counter",
            "Message bytes stored in local mailboxes, counted once per recipient.",
        )?;
        writeln!(
            out,
            "tidegate_delivered_bytes_total {}",
            self.delivered_bytes.load(Relaxed)
        )?;
        self.write_backends(out)?;
        header(
            out,
            "tidegate_user_lookup_seconds",
            "histogram",
            "Time the user database took to look a user up or check a password, by backend kind.",
        )?;
        for kind in DirectoryKind::ALL {
            write_histogram(
                out,
                "tidegate_user_lookup_seconds",
                kind.name(),
                &self.lookups[kind as usize],
            )?;
        }
        header(
            out,
            "tidegate_config_generation",
            "gauge",
            "Configs applied since the start: 1 at start, plus one per successful reload.",
        )?;
        writeln!(
            out,
            "tidegate_config_generation {}",
            self.config_generation.load(Relaxed)
        )?;
        header(
            out,
            "tidegate_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
        )?;
        let uptime = self.started.get().map_or(0.0, |started| {
            now.saturating_duration_since(*started).as_secs_f64()
        });
        writeln!(out, "tidegate_uptime_seconds {uptime:.3}")?;
        header(
            out,
            "tidegate_queue_messages",
            "gauge",
            "Messages waiting in the outbound queue.",
        )?;
        writeln!(
            out,
            "tidegate_queue_messages {}",
            self.queue_messages.load(Relaxed)
        )
    }

    fn write_backends(&self, out: &mut String) -> std::fmt::Result {
        let backends = &self.backends;
        let named = || {
            backends
                .names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| name.get().map(|n| (i, n)))
        };
        header(
            out,
            "tidegate_proxy_handovers_total",
            "counter",
            "Logins a front-end handed to a back-end, by back-end (names past the first 32 count as other).",
        )?;
        for (i, name) in named() {
            let n = backends.handovers[i].load(Relaxed);
            writeln!(
                out,
                "tidegate_proxy_handovers_total{{backend=\"{}\"}} {n}",
                escape(name)
            )?;
        }
        let other = backends.handovers[MAX_BACKENDS].load(Relaxed);
        if other > 0 {
            writeln!(
                out,
                "tidegate_proxy_handovers_total{{backend=\"other\"}} {other}"
            )?;
        }
        header(
            out,
            "tidegate_backend_up",
            "gauge",
            "1 if the back-end answered at the front-end's last attempt, 0 while its circuit breaker skips it.",
        )?;
        for (i, name) in named() {
            let up = backends.up[i].load(Relaxed);
            if up >= 0 {
                writeln!(
                    out,
                    "tidegate_backend_up{{backend=\"{}\"}} {up}",
                    escape(name)
                )?;
            }
        }
        Ok(())
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

fn write_histogram(
    out: &mut String,
    name: &str,
    backend: &str,
    histogram: &Histogram,
) -> std::fmt::Result {
    let mut cumulative = 0u64;
    for (i, bound) in LOOKUP_BUCKETS.iter().enumerate() {
        cumulative += histogram.buckets[i].load(Relaxed);
        writeln!(
            out,
            "{name}_bucket{{backend=\"{backend}\",le=\"{bound}\"}} {cumulative}"
        )?;
    }
    cumulative += histogram.buckets[LOOKUP_BUCKETS.len()].load(Relaxed);
    // Concurrent observers may have bumped the buckets after `count`: the exposition
    // keeps `+Inf == count` by deriving both from the buckets.
    writeln!(
        out,
        "{name}_bucket{{backend=\"{backend}\",le=\"+Inf\"}} {cumulative}"
    )?;
    let sum = histogram.sum_nanos.load(Relaxed) as f64 / 1e9;
    writeln!(out, "{name}_sum{{backend=\"{backend}\"}} {sum:.9}")?;
    writeln!(out, "{name}_count{{backend=\"{backend}\"}} {cumulative}")
}

/// A label value as the text format wants it: backslash, double quote and newline
/// escaped.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .render(Instant::now())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn has(metrics: &Metrics, line: &str) -> bool {
        lines(metrics).iter().any(|l| l == line)
    }

    #[test]
    fn counters_and_gauges_render_with_their_labels() {
        let m = Metrics::new();
        m.start(Instant::now());
        m.session_opened(Protocol::Pop3);
        m.session_opened(Protocol::Pop3);
        m.session_closed(Protocol::Pop3);
        m.login(Protocol::Imap, LoginResult::Failure);
        m.login(Protocol::Imap, LoginResult::Failure);
        m.delivery(DeliveryResult::Delivered);
        m.delivered_bytes(1234);
        m.set_queue_size(7);
        m.config_reloaded();
        assert!(has(&m, "tidegate_sessions{protocol=\"pop3\"} 1"));
        assert!(has(&m, "tidegate_sessions_total{protocol=\"pop3\"} 2"));
        assert!(has(
            &m,
            "tidegate_logins_total{protocol=\"imap\",result=\"failure\"} 2"
        ));
        assert!(has(
            &m,
            "tidegate_logins_total{protocol=\"imap\",result=\"success\"} 0"
        ));
        assert!(has(&m, "tidegate_deliveries_total{result=\"delivered\"} 1"));
        assert!(has(&m, "tidegate_delivered_bytes_total 1234"));
        assert!(has(&m, "tidegate_queue_messages 7"));
        assert!(has(&m, "tidegate_config_generation 2"));
        assert!(has(&m, "# TYPE tidegate_logins_total counter"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let m = Metrics::new();
        m.user_lookup(DirectoryKind::File, Duration::from_micros(50));
        m.user_lookup(DirectoryKind::File, Duration::from_millis(3));
        m.user_lookup(DirectoryKind::File, Duration::from_secs(10));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_bucket{backend=\"file\",le=\"0.0001\"} 1"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_bucket{backend=\"file\",le=\"0.005\"} 2"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_bucket{backend=\"file\",le=\"2.5\"} 2"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_bucket{backend=\"file\",le=\"+Inf\"} 3"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_count{backend=\"file\"} 3"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_sum{backend=\"file\"} 10.003050000"
        ));
        assert!(has(
            &m,
            "tidegate_user_lookup_seconds_count{backend=\"ldap\"} 0"
        ));
    }

    #[test]
    fn backend_labels_are_bounded_and_escaped() {
        let m = Metrics::new();
        for i in 0..MAX_BACKENDS + 5 {
            m.handover(&format!("10.0.0.{i}"));
        }
        m.handover("10.0.0.0");
        m.handover("b\"ad\\host");
        m.backend_up("10.0.0.1", false);
        assert!(has(
            &m,
            "tidegate_proxy_handovers_total{backend=\"10.0.0.0\"} 2"
        ));
        assert!(has(
            &m,
            "tidegate_proxy_handovers_total{backend=\"other\"} 6"
        ));
        assert!(has(&m, "tidegate_backend_up{backend=\"10.0.0.1\"} 0"));
        let handover_lines = lines(&m)
            .iter()
            .filter(|l| l.starts_with("tidegate_proxy_handovers_total{"))
            .count();
        assert_eq!(handover_lines, MAX_BACKENDS + 1);
        let fresh = Metrics::new();
        fresh.handover("b\"ad\\host\nx");
        assert!(has(
            &fresh,
            "tidegate_proxy_handovers_total{backend=\"b\\\"ad\\\\host\\nx\"} 1"
        ));
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family() {
        let m = Metrics::new();
        m.handover("127.0.0.2");
        let text = m.render(Instant::now());
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or("").to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| declared.iter().any(|d| d == f))
                .unwrap_or(name);
            assert_eq!(declared.last().map(String::as_str), Some(family), "{line}");
        }
        assert!(text.ends_with('\n'));
    }
}
