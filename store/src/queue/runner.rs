//! The delivery threads: each takes the earliest due entry, tries its due recipients
//! one destination (a domain, or in proxy mode a back-end) at a time through a [`Transport`], records every
//! recipient's outcome, and sends the reports the [`super::schedule`] calls for.
//!
//! The runners use blocking sockets on threads of their own (`[relay] runners`), away
//! from the event loops, so outbound delivery behaves the same under either shell.
//! [`Runner::stop`] lets each runner finish the attempt it is in (bounded by the
//! transport's timeouts) and joins them for at most a grace period; whatever is still
//! in flight then is retried after the restart (at-least-once, see [`super`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidegate_core::dsn::{DsnKind, DsnRecipient};

use super::bounce::{Bouncer, ReportRoute};
use super::entry::{Destination, QueuedRecipient};
use super::{Queue, QueueEntry, RecipientState, RetryPolicy, unix_now};

/// One delivery attempt: one transaction to one destination domain, or to one
/// back-end.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The queue id (for logs).
    pub id: &'a str,
    /// The destination domain (lowercased) of every recipient; for a back-end attempt,
    /// the back-end's name.
    pub domain: &'a str,
    /// Proxy mode: the back-end (`tohost`) every recipient lives on; the attempt goes
    /// there over LMTP (RFC 2033) instead of to the domain's mail servers.
    pub backend: Option<&'a str>,
    /// The reverse-path; empty for a bounce.
    pub sender: &'a str,
    /// The recipients, in RCPT order.
    pub recipients: &'a [String],
    /// The message file (CRLF line ends, not dot-stuffed).
    pub message: &'a Path,
    /// The body needs 8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// The envelope or headers need SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// The SMTP client the message came from, when the entry recorded it.
    pub client: Option<&'a tidegate_core::proxy::xclient::Xclient>,
}

/// What happened to one recipient; the text is the reply, one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the receiving server.
    Delivered(String),
    /// A temporary failure: try again later.
    Deferred(String),
    /// A permanent failure: give up and bounce.
    Failed(String),
}

/// The whole attempt failed before any recipient result (no route, connection refused,
/// greeting or MAIL refused, TLS required and missing, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    /// Retrying cannot help (null MX, NXDOMAIN, a `5xx` greeting or MAIL reply).
    pub permanent: bool,
    /// Why, one line (a reply, or the error).
    pub text: String,
}

/// Sends one attempt. The real one resolves the route (smarthost or MX), signs and
/// speaks SMTP; tests use doubles.
pub trait Transport: Send + Sync + 'static {
    /// Delivers to every recipient of `attempt`, returning one verdict per recipient
    /// in order, or the failure of the whole attempt.
    fn send(&self, attempt: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure>;

    /// Closes connections kept idle past their time (connection reuse); returns when
    /// the next idle one expires. The runners call it while they wait.
    fn close_idle(&self) -> Option<Instant> {
        None
    }

    /// Closes every idle connection (the runners stop).
    fn close_all(&self) {}
}

/// The runner settings (`[relay] runners` and the retry keys).
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Delivery threads.
    pub runners: usize,
    /// When to retry, warn and give up.
    pub policy: RetryPolicy,
    /// The longest an idle runner sleeps before looking at the queue again (entries
    /// become due while it sleeps; enqueue and flush wake it early).
    pub idle_poll: Duration,
    /// How long [`Runner::stop`] waits for runners in the middle of an attempt.
    pub stop_grace: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            runners: 2,
            policy: RetryPolicy::default(),
            idle_poll: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// The running delivery threads.
pub struct Runner {
    queue: Arc<Queue>,
    transport: Arc<dyn Transport>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// What one runner thread needs.
struct Worker {
    queue: Arc<Queue>,
    transport: Arc<dyn Transport>,
    bouncer: Bouncer,
    config: RunnerConfig,
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// Starts `config.runners` threads (at least one) delivering from `queue`.
    pub fn start(
        queue: Arc<Queue>,
        transport: Arc<dyn Transport>,
        bouncer: Bouncer,
        config: RunnerConfig,
    ) -> std::io::Result<Runner> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let grace = config.stop_grace;
        for n in 0..config.runners.max(1) {
            let worker = Worker {
                queue: queue.clone(),
                transport: transport.clone(),
                bouncer: bouncer.clone(),
                config: config.clone(),
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("queue-runner-{n}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Runner {
            queue,
            transport,
            stop,
            threads,
            grace,
        })
    }

    /// Stops the runners: each finishes its current attempt; waits up to the grace
    /// period for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queue.wake_all();
        let deadline = Instant::now() + self.grace;
        for thread in self.threads {
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                log::warn!("queue: a runner is still in an attempt; it is retried after restart");
            }
        }
        self.transport.close_all();
    }
}

impl Worker {
    fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            let now = unix_now();
            match self.queue.take_due(now) {
                Some(entry) => {
                    let entry = process(
                        &self.queue,
                        self.transport.as_ref(),
                        &self.bouncer,
                        &self.config.policy,
                        entry,
                        now,
                    );
                    if let Err(e) = self.queue.put_back(entry) {
                        log::error!("queue: cannot record an attempt: {e}");
                    }
                }
                None => {
                    // Idle connections past their time get their QUIT now; wake up
                    // again when the next one is due for it.
                    let idle_expiry = self
                        .transport
                        .close_idle()
                        .map(|at| at.saturating_duration_since(Instant::now()));
                    let wait = self
                        .queue
                        .next_due()
                        .map_or(self.config.idle_poll, |due| {
                            Duration::from_secs(due.saturating_sub(now))
                        })
                        .min(idle_expiry.unwrap_or(Duration::MAX))
                        .clamp(Duration::from_millis(50), self.config.idle_poll);
                    self.queue.wait(wait);
                }
            }
        }
    }
}

/// A random value for the jitter.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// One pass over an entry at `now`: expire it, or try each due destination once and
/// record the outcomes (written after each destination), then send the reports due.
/// Returns the entry's new state for [`Queue::put_back`].
pub fn process(
    queue: &Queue,
    transport: &dyn Transport,
    bouncer: &Bouncer,
    policy: &RetryPolicy,
    mut entry: QueueEntry,
    now: u64,
) -> QueueEntry {
    let mut failed: Vec<DsnRecipient> = Vec::new();
    if policy.expired(entry.arrived, now) {
        for r in &mut entry.recipients {
            if r.state == RecipientState::Pending {
                r.state = RecipientState::Failed;
                let why = if r.last_reply.is_empty() {
                    "no attempt succeeded".to_owned()
                } else {
                    r.last_reply.clone()
                };
                r.last_reply = format!("message expired after {} attempts: {why}", r.attempts);
                log::info!("queue: {} to <{}> expired: {why}", entry.id, r.address);
                failed.push(DsnRecipient {
                    address: r.address.clone(),
                    diagnostic: r.last_reply.clone(),
                });
            }
        }
        bouncer.send(queue, &entry, DsnKind::Failure, &failed, now, None);
        return entry;
    }
    if entry.sender.is_empty() {
        route_reports(queue, bouncer, policy, &mut entry, now, &mut failed);
    }
    let mut destinations: Vec<Destination> = Vec::new();
    for r in &entry.recipients {
        let destination = r.destination();
        if r.state == RecipientState::Pending
            && r.next_attempt <= now
            && !destinations.contains(&destination)
        {
            destinations.push(destination);
        }
    }
    let message = queue.message_path(&entry.id);
    let last = destinations.len().saturating_sub(1);
    for (n, destination) in destinations.into_iter().enumerate() {
        let indexes: Vec<usize> = entry
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.state == RecipientState::Pending
                    && r.next_attempt <= now
                    && r.destination() == destination
            })
            .map(|(i, _)| i)
            .collect();
        let (domain, backend) = match &destination {
            Destination::Domain(domain) => (domain.as_str(), None),
            Destination::Backend(host) => (host.as_str(), Some(host.as_str())),
        };
        let addresses: Vec<String> = indexes
            .iter()
            .filter_map(|&i| entry.recipients.get(i).map(|r| r.address.clone()))
            .collect();
        let attempt = Attempt {
            id: &entry.id,
            domain,
            backend,
            sender: &entry.sender,
            recipients: &addresses,
            message: &message,
            eight_bit: entry.eight_bit,
            smtputf8: entry.smtputf8,
            client: entry.client.as_ref(),
        };
        let verdicts: Vec<Verdict> = match transport.send(&attempt) {
            Ok(verdicts) if verdicts.len() == addresses.len() => verdicts,
            Ok(_) => addresses
                .iter()
                .map(|_| Verdict::Deferred("internal error: wrong number of results".into()))
                .collect(),
            Err(failure) if failure.permanent => addresses
                .iter()
                .map(|_| Verdict::Failed(failure.text.clone()))
                .collect(),
            Err(failure) => addresses
                .iter()
                .map(|_| Verdict::Deferred(failure.text.clone()))
                .collect(),
        };
        let jitter = random();
        for (&i, verdict) in indexes.iter().zip(verdicts) {
            if let Some(r) = entry.recipients.get_mut(i) {
                record(&entry.id, r, verdict, policy, now, jitter, &mut failed);
            }
        }
        // After the last destination, Queue::put_back records the outcome (or removes
        // a finished entry): one write instead of two.
        if n < last
            && let Err(e) = queue.save(&entry)
        {
            log::error!("queue: cannot record the attempt for {}: {e}", entry.id);
        }
    }
    bouncer.send(queue, &entry, DsnKind::Failure, &failed, now, None);
    if policy.warning_due(entry.arrived, entry.warned, now) {
        let late: Vec<DsnRecipient> = entry
            .recipients
            .iter()
            .filter(|r| r.state == RecipientState::Pending)
            .map(|r| DsnRecipient {
                address: r.address.clone(),
                diagnostic: r.last_reply.clone(),
            })
            .collect();
        let until = entry.arrived.saturating_add(policy.max_age.as_secs());
        bouncer.send(queue, &entry, DsnKind::Delay, &late, now, Some(until));
        entry.warned = true;
    }
    entry
}

/// Records one attempt's verdict for a recipient; a failure joins `failed` (the report).
fn record(
    id: &str,
    r: &mut QueuedRecipient,
    verdict: Verdict,
    policy: &RetryPolicy,
    now: u64,
    jitter: u64,
    failed: &mut Vec<DsnRecipient>,
) {
    r.attempts = r.attempts.saturating_add(1);
    match verdict {
        Verdict::Delivered(text) => {
            log::info!("queue: {id} delivered to <{}>: {text}", r.address);
            r.state = RecipientState::Delivered;
            r.last_reply = text;
        }
        Verdict::Deferred(text) => {
            r.next_attempt = policy.next_attempt(now, r.attempts, jitter);
            log::info!(
                "queue: {id} to <{}> deferred (attempt {}, next in {} s): {text}",
                r.address,
                r.attempts,
                r.next_attempt.saturating_sub(now)
            );
            r.last_reply = text;
        }
        Verdict::Failed(text) => {
            log::info!("queue: {id} to <{}> failed: {text}", r.address);
            r.state = RecipientState::Failed;
            failed.push(DsnRecipient {
                address: r.address.clone(),
                diagnostic: text.clone(),
            });
            r.last_reply = text;
        }
    }
}

/// A queued report (null sender): recipients that are local users get it in their
/// maildir here, those on a back-end are routed there; the rest go out through the
/// transport ([`Bouncer::deliver_report`]).
fn route_reports(
    queue: &Queue,
    bouncer: &Bouncer,
    policy: &RetryPolicy,
    entry: &mut QueueEntry,
    now: u64,
    failed: &mut Vec<DsnRecipient>,
) {
    let jitter = random();
    for r in &mut entry.recipients {
        if r.state != RecipientState::Pending || r.next_attempt > now || r.backend.is_some() {
            continue;
        }
        match bouncer.deliver_report(queue, &entry.id, &r.address) {
            ReportRoute::Remote => {}
            ReportRoute::Backend(host) => r.backend = Some(host),
            ReportRoute::Local(verdict) => {
                record(&entry.id, r, verdict, policy, now, jitter, failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::queue::NewEntry;

    type Answer = Result<Vec<Verdict>, AttemptFailure>;
    /// Domain, recipients and message bytes of one attempt.
    type Seen = (String, Vec<String>, Vec<u8>);

    /// Answers each attempt from a script and records what it was asked.
    #[derive(Default)]
    struct Script {
        answers: Mutex<Vec<Answer>>,
        seen: Mutex<Vec<Seen>>,
    }

    impl Transport for Script {
        fn send(&self, a: &Attempt<'_>) -> Result<Vec<Verdict>, AttemptFailure> {
            let body = std::fs::read(a.message).unwrap();
            self.seen.lock().unwrap().push((
                a.backend
                    .map_or_else(|| a.domain.to_owned(), |b| format!("lmtp:{b}")),
                a.recipients.to_vec(),
                body,
            ));
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn setup(recipients: &[&str], sender: &str) -> (tempfile::TempDir, Queue, QueueEntry) {
        setup_with(recipients, &[], sender)
    }

    fn setup_with(
        recipients: &[&str],
        backends: &[(&str, &str)],
        sender: &str,
    ) -> (tempfile::TempDir, Queue, QueueEntry) {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&dir.path().join("q"), false, "h").unwrap();
        let id = queue
            .enqueue(
                NewEntry {
                    sender: sender.into(),
                    recipients: recipients.iter().map(|r| r.to_string()).collect(),
                    eight_bit: false,
                    smtputf8: false,
                    client: None,
                    backends: backends
                        .iter()
                        .map(|(a, h)| (a.to_string(), h.to_string()))
                        .collect(),
                },
                &b"Subject: hello\r\n\r\nbody\r\n"[..],
                1000,
            )
            .unwrap();
        queue.release(&id);
        let entry = queue.take_due(1000).unwrap();
        (dir, queue, entry)
    }

    fn bouncer() -> Bouncer {
        Bouncer {
            hostname: "mx.test".into(),
            local: None,
            router: None,
        }
    }

    #[test]
    fn one_transaction_per_domain_and_outcomes_recorded() {
        let (_dir, queue, entry) = setup(&["a@one.test", "b@two.test", "c@ONE.test"], "s@src.test");
        let script = Script::default();
        *script.answers.lock().unwrap() = vec![
            Ok(vec![
                Verdict::Delivered("250 ok".into()),
                Verdict::Deferred("451 later".into()),
            ]),
            Err(AttemptFailure {
                permanent: true,
                text: "no such domain".into(),
            }),
        ];
        let policy = RetryPolicy::default();
        let entry = process(&queue, &script, &bouncer(), &policy, entry, 1000);
        let seen = script.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, "one.test");
        assert_eq!(seen[0].1, vec!["a@one.test", "c@ONE.test"]);
        assert_eq!(seen[0].2, b"Subject: hello\r\n\r\nbody\r\n");
        assert_eq!(seen[1].1, vec!["b@two.test"]);
        let states: Vec<_> = entry.recipients.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            vec![
                RecipientState::Delivered,
                RecipientState::Failed,
                RecipientState::Pending
            ]
        );
        let c = &entry.recipients[2];
        assert_eq!(c.attempts, 1);
        assert!(
            (1225..=1300).contains(&c.next_attempt),
            "{}",
            c.next_attempt
        );
        assert_eq!(c.last_reply, "451 later");
        // The failure report to the (remote) sender was queued with a null sender.
        queue.put_back(entry).unwrap();
        let bounces: Vec<_> = queue
            .list()
            .into_iter()
            .filter(|e| e.sender.is_empty())
            .collect();
        assert_eq!(bounces.len(), 1);
        assert_eq!(bounces[0].recipients[0].address, "s@src.test");
        let report = std::fs::read_to_string(queue.message_path(&bounces[0].id)).unwrap();
        assert!(report.contains("Final-Recipient: rfc822; b@two.test\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; no such domain\r\n"), "{report}");
        assert!(report.contains("Subject: hello\r\n"));
        assert!(!report.contains("\r\nbody\r\n"));
    }

    #[test]
    fn backend_recipients_go_in_one_transaction_per_backend() {
        let (_dir, queue, entry) = setup_with(
            &["x@remote.test"],
            &[
                ("a@one.test", "b1"),
                ("b@two.test", "b2"),
                ("c@two.test", "b1"),
            ],
            "s@src.test",
        );
        let script = Script::default();
        let ok = || Verdict::Delivered("250 ok".into());
        *script.answers.lock().unwrap() = vec![
            Ok(vec![ok()]),
            Ok(vec![ok(), Verdict::Deferred("452 4.2.2 full".into())]),
            Ok(vec![Verdict::Failed("550 5.1.1 gone".into())]),
        ];
        let policy = RetryPolicy::default();
        let entry = process(&queue, &script, &bouncer(), &policy, entry, 1000);
        let seen = script.seen.lock().unwrap();
        let attempts: Vec<(&str, Vec<String>)> =
            seen.iter().map(|s| (s.0.as_str(), s.1.clone())).collect();
        assert_eq!(
            attempts,
            vec![
                ("remote.test", vec!["x@remote.test".to_owned()]),
                (
                    "lmtp:b1",
                    vec!["a@one.test".to_owned(), "c@two.test".to_owned()]
                ),
                ("lmtp:b2", vec!["b@two.test".to_owned()]),
            ]
        );
        let states: Vec<_> = entry.recipients.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            vec![
                RecipientState::Delivered,
                RecipientState::Delivered,
                RecipientState::Failed,
                RecipientState::Pending
            ]
        );
        assert_eq!(entry.recipients[3].backend.as_deref(), Some("b1"));
    }

    #[test]
    fn null_sender_never_bounces_and_expiry_fails_everything() {
        let (_dir, queue, entry) = setup(&["a@one.test"], "");
        let script = Script::default();
        let policy = RetryPolicy::default();
        let late = 1000 + policy.max_age.as_secs();
        let entry = process(&queue, &script, &bouncer(), &policy, entry, late);
        assert!(script.seen.lock().unwrap().is_empty());
        assert_eq!(entry.recipients[0].state, RecipientState::Failed);
        assert!(entry.is_finished());
        queue.put_back(entry).unwrap();
        assert!(queue.is_empty(), "no bounce for a null sender");
    }

    #[test]
    fn one_delay_warning() {
        let (_dir, queue, entry) = setup(&["a@one.test"], "s@src.test");
        let script = Script::default();
        let deferred = || {
            Err(AttemptFailure {
                permanent: false,
                text: "connection refused".into(),
            })
        };
        *script.answers.lock().unwrap() = vec![deferred(), deferred()];
        let policy = RetryPolicy::default();
        let at = 1000 + policy.delay_warning.as_secs();
        let entry = process(&queue, &script, &bouncer(), &policy, entry, at);
        assert!(entry.warned);
        assert_eq!(entry.recipients[0].state, RecipientState::Pending);
        let due = entry.recipients[0].next_attempt;
        let entry = process(&queue, &script, &bouncer(), &policy, entry, due);
        assert_eq!(entry.recipients[0].attempts, 2);
        queue.put_back(entry).unwrap();
        let reports: Vec<_> = queue
            .list()
            .into_iter()
            .filter(|e| e.sender.is_empty())
            .collect();
        assert_eq!(reports.len(), 1, "exactly one warning");
        let text = std::fs::read_to_string(queue.message_path(&reports[0].id)).unwrap();
        assert!(text.contains(
            "Action: delayed\r\nStatus: 4.0.0\r\nDiagnostic-Code: smtp; connection refused\r\n"
        ));
    }

    /// A user database that can be switched off: `s@local.test` is its one user.
    #[derive(Debug, Default)]
    struct FlakyUsers {
        down: std::sync::atomic::AtomicBool,
    }

    impl crate::users::UserDirectory for FlakyUsers {
        fn lookup(&self, address: &str) -> tidegate_core::user::Lookup {
            use tidegate_core::user::{Lookup, UserRecord};
            if self.down.load(Ordering::SeqCst) {
                Lookup::TempFail("the user database is unreachable".into())
            } else if address == "s@local.test" {
                Lookup::Found(UserRecord {
                    address: address.into(),
                    password: String::new(),
                    fields: Default::default(),
                })
            } else if address.ends_with("@local.test") {
                Lookup::NotFound
            } else {
                Lookup::UnknownDomain
            }
        }

        fn verify(
            &self,
            _: &str,
            _: &[u8],
            _: std::net::IpAddr,
        ) -> tidegate_core::user::AuthOutcome {
            tidegate_core::user::AuthOutcome::Denied
        }
    }

    #[test]
    fn a_report_to_a_local_sender_waits_out_a_user_database_outage() {
        let (dir, queue, entry) = setup(&["a@one.test"], "s@local.test");
        let users = Arc::new(FlakyUsers::default());
        users.down.store(true, Ordering::SeqCst);
        let bouncer = Bouncer {
            hostname: "mx.test".into(),
            local: Some(crate::queue::bounce::LocalMail {
                users: users.clone(),
                maildir: crate::maildir::MaildirStore::new(dir.path().join("mail"), false, "h"),
            }),
            router: None,
        };
        let script = Script::default();
        *script.answers.lock().unwrap() = vec![Err(AttemptFailure {
            permanent: true,
            text: "550 5.1.1 no such user".into(),
        })];
        let policy = RetryPolicy::default();
        let entry = process(&queue, &script, &bouncer, &policy, entry, 1000);
        queue.put_back(entry).unwrap();
        // The database is down: the report is queued, not dropped.
        let reports = queue.list();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].sender.is_empty());
        assert_eq!(reports[0].recipients[0].address, "s@local.test");
        // Still down at the first attempt: deferred, and never sent out by the transport.
        let report = queue.take_due(1000).unwrap();
        let report = process(&queue, &script, &bouncer, &policy, report, 1000);
        let r = &report.recipients[0];
        assert_eq!((r.state, r.attempts), (RecipientState::Pending, 1));
        assert!(r.last_reply.starts_with("451 4.3.0 user database"), "{r:?}");
        let due = r.next_attempt;
        queue.put_back(report).unwrap();
        assert_eq!(script.seen.lock().unwrap().len(), 1);
        // Back up: the retry lands in the sender's maildir with the null reverse-path.
        users.down.store(false, Ordering::SeqCst);
        assert_eq!(queue.take_due(due - 1), None);
        let report = queue.take_due(due).unwrap();
        let report = process(&queue, &script, &bouncer, &policy, report, due);
        assert_eq!(report.recipients[0].state, RecipientState::Delivered);
        queue.put_back(report).unwrap();
        assert!(queue.is_empty());
        assert_eq!(script.seen.lock().unwrap().len(), 1);
        let new = dir.path().join("mail/local.test/s/new");
        let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        assert!(text.starts_with("Return-Path: <>\r\n"), "{text}");
        assert!(
            text.contains("Final-Recipient: rfc822; a@one.test\r\nAction: failed\r\n"),
            "{text}"
        );
    }
}
