//! The control socket (`tidegate ctl`): a Unix socket in the workarea, readable only by
//! the server's user, taking one command a connection.
//!
//! Protocol: the client sends one line (`reload`, `status`, `who`, `who ACCOUNT`,
//! `kick ACCOUNT`, `queue list`, `queue flush` or `queue delete ID`); the server answers
//! lines and closes. The first answer line is `ok` or `error: REASON`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tidegate_store::SessionRegistry;
use tidegate_store::queue::{Queue, RecipientState, unix_now};

use crate::wiring::{Bound, Reloader};

/// The longest command line accepted.
const MAX_COMMAND: u64 = 256;

/// The most bytes of entries `queue list` prints, so the answer stays under
/// [`MAX_ANSWER`]; a longer queue ends the listing with a count of the rest.
const MAX_LISTING: usize = 4 * 1024 * 1024;

/// The longest answer `tidegate ctl` reads.
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

/// What `status` reports besides the listeners (which the reloader knows).
pub struct StatusInfo {
    /// When the server started.
    pub started: Instant,
    /// The queue, with `[relay]` or on a proxy front-end receiving mail.
    pub queue: Option<Arc<Queue>>,
    /// Every open connection, as the shell records them.
    pub sessions: Arc<SessionRegistry>,
}

/// Serves the control socket at `path` on a thread of its own. A stale socket file
/// (left by a crash) is replaced; a socket another running server answers on is not.
pub fn serve(path: &Path, reloader: Arc<Reloader>, status: StatusInfo) -> Result<(), String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "control socket {} is in use: is another tidegate running with this workarea?",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &reloader, &status) {
                    log::warn!("control socket: {e}");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn answer(stream: UnixStream, reloader: &Reloader, status: &StatusInfo) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_COMMAND)).read_line(&mut line)?;
    let reply = match line.trim() {
        "reload" => match reloader.reload() {
            Ok(what) => {
                log::info!("control: {what}");
                format!("ok\n{what}\n")
            }
            Err(reason) => {
                log::error!("control: reload refused, the running config stays: {reason}");
                format!("error: {reason}\n")
            }
        },
        "status" => status_text(status, reloader),
        command if command == "who" || command.starts_with("who ") => {
            match command.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["who"] => who_text(status, reloader, None),
                ["who", account] => who_text(status, reloader, Some(account)),
                _ => "error: try who or who ACCOUNT\n".into(),
            }
        }
        command if command == "kick" || command.starts_with("kick ") => {
            match command.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["kick", account] => {
                    let closed = status.sessions.kick(account);
                    log::info!("control: kick {account}: closing {closed} sessions");
                    format!("ok\nclosed {closed} sessions of {account}\n")
                }
                _ => "error: try kick ACCOUNT\n".into(),
            }
        }
        command if command == "queue" || command.starts_with("queue ") => match &status.queue {
            Some(queue) => queue_command(queue, command),
            None => {
                "error: no queue: neither [relay] nor a proxy front-end with [smtp] is configured\n"
                    .into()
            }
        },
        other => {
            format!("error: unknown command {other:?} (try reload, status, who, kick or queue)\n")
        }
    };
    (&stream).write_all(reply.as_bytes())
}

fn status_text(status: &StatusInfo, reloader: &Reloader) -> String {
    let mut text = format!(
        "ok\nversion {}\nruntime {}\nuptime_seconds {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::runtime::NAME,
        status.started.elapsed().as_secs()
    );
    if let Some(path) = reloader.config_path() {
        text.push_str(&format!("config {}\n", path.display()));
    }
    // The listeners as the last reload left them.
    for b in reloader.bound() {
        text.push_str(&format!("listener {}://{}\n", b.scheme, b.addr));
    }
    if let Some(queue) = &status.queue {
        text.push_str(&format!("queue_size {}\n", queue.len()));
    }
    text.push_str(&format!("config_generation {}\n", reloader.generation()));
    // Counts per listener and per protocol, every live listener listed (0 included).
    let names = reloader.listener_names();
    let bound = reloader.bound();
    let mut per_listener: BTreeMap<String, usize> = bound
        .iter()
        .map(|b| (format!("{}://{}", b.scheme, b.addr), 0))
        .collect();
    let mut per_protocol: BTreeMap<&str, usize> = bound.iter().map(|b| (b.scheme, 0)).collect();
    let sessions = status.sessions.snapshot();
    for s in &sessions {
        let (scheme, addr) = describe(&names, s.listener);
        *per_listener
            .entry(format!("{scheme}://{addr}"))
            .or_default() += 1;
        *per_protocol.entry(scheme).or_default() += 1;
    }
    text.push_str(&format!("sessions {}\n", sessions.len()));
    for (protocol, n) in per_protocol {
        text.push_str(&format!("protocol_sessions {protocol} {n}\n"));
    }
    for (listener, n) in per_listener {
        text.push_str(&format!("listener_sessions {listener} {n}\n"));
    }
    text
}

/// The scheme and bound address of listener `id`; `?` for both when a reload has
/// forgotten it (a listener removed two reloads ago that still has sessions).
fn describe(names: &[(usize, Bound)], id: usize) -> (&'static str, String) {
    match names.iter().find(|(i, _)| *i == id) {
        Some((_, b)) => (b.scheme, b.addr.to_string()),
        None => ("?", "?".to_owned()),
    }
}

/// `who [ACCOUNT]`: one line per connection, `ACCOUNT PROTOCOL LISTENER PEER SECONDS`,
/// sorted by account (connections not logged in last, shown as `-`), where SECONDS
/// count from the login, or from the connect before one.
fn who_text(status: &StatusInfo, reloader: &Reloader, account: Option<&str>) -> String {
    let names = reloader.listener_names();
    let now = Instant::now();
    let mut text = String::from("ok\n");
    let sessions = status.sessions.snapshot();
    let total = sessions.len();
    for (n, s) in sessions.into_iter().enumerate() {
        let who = s.account.as_ref().map(|(a, _)| a.as_str());
        if let Some(wanted) = account
            && !who.is_some_and(|w| w.eq_ignore_ascii_case(wanted))
        {
            continue;
        }
        if text.len() > MAX_LISTING {
            text.push_str(&format!("... and at most {} more\n", total - n));
            break;
        }
        let since = s.account.as_ref().map_or(s.started, |(_, at)| *at);
        let (scheme, listener) = describe(&names, s.listener);
        text.push_str(&format!(
            "{} {scheme} {listener} {} {}s\n",
            who.unwrap_or("-"),
            s.peer,
            now.saturating_duration_since(since).as_secs()
        ));
    }
    text
}

/// `queue list`, `queue flush`, `queue delete ID`.
fn queue_command(queue: &Queue, command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.as_slice() {
        ["queue", "list"] => {
            let now = unix_now();
            let mut text = String::from("ok\n");
            let entries = queue.list();
            let total = entries.len();
            let mut more = 0;
            for (n, entry) in entries.into_iter().enumerate() {
                if text.len() > MAX_LISTING {
                    more = total - n;
                    break;
                }
                let sender = if entry.sender.is_empty() {
                    "<>".to_owned()
                } else {
                    entry.sender.clone()
                };
                let next = entry
                    .next_attempt()
                    .map_or("-".to_owned(), |t| format!("{}s", t.saturating_sub(now)));
                text.push_str(&format!(
                    "{} age={}s from={sender} next={next}\n",
                    entry.id,
                    now.saturating_sub(entry.arrived)
                ));
                for r in &entry.recipients {
                    let state = match r.state {
                        RecipientState::Pending => "pending",
                        RecipientState::Delivered => "delivered",
                        RecipientState::Failed => "failed",
                    };
                    text.push_str(&format!(
                        "  {} {state} attempts={}{}{}\n",
                        r.address,
                        r.attempts,
                        r.backend
                            .as_ref()
                            .map_or(String::new(), |host| format!(" backend={host}")),
                        if r.last_reply.is_empty() {
                            String::new()
                        } else {
                            format!(" last={}", r.last_reply.replace(['\r', '\n'], " "))
                        }
                    ));
                }
            }
            if more > 0 {
                text.push_str(&format!("... and {more} more\n"));
            }
            text
        }
        ["queue", "flush"] => {
            let n = queue.flush();
            log::info!("control: queue flushed ({n} messages due now)");
            format!("ok\n{n} messages due now\n")
        }
        ["queue", "delete", id] => match queue.delete(id) {
            Ok(true) => format!("ok\ndeleted {id}\n"),
            Ok(false) => format!("error: no queued message {id}\n"),
            Err(e) => format!("error: deleting {id}: {e}\n"),
        },
        _ => "error: try queue list, queue flush or queue delete ID\n".into(),
    }
}

/// `tidegate ctl COMMAND`: sends the command and prints the answer. Fails when the
/// answer starts with `error:`.
pub fn send(path: &Path, command: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the server's control socket {}: {e} (is tidegate serve running with this config?)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    match answer.strip_prefix("ok\n") {
        Some(rest) => Ok(rest.to_owned()),
        None => Err(answer
            .trim_end()
            .strip_prefix("error: ")
            .unwrap_or(answer.trim_end())
            .to_owned()),
    }
}

/// `[control] watch`: reloads when the config file or the users file changes, looking
/// every `interval`. A change that fails to apply is logged once per change.
pub fn watch(files: Vec<PathBuf>, reloader: Arc<Reloader>, interval: Duration) {
    let stamp = move || -> Vec<Option<SystemTime>> {
        files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
    let spawned = std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            let mut last = stamp();
            loop {
                std::thread::sleep(interval);
                let now = stamp();
                if now == last {
                    continue;
                }
                last = now;
                match reloader.reload() {
                    Ok(what) => log::info!("config watch: {what}"),
                    Err(reason) => log::error!(
                        "config watch: reload refused, the running config stays: {reason}"
                    ),
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the config watcher: {e}");
    }
}
