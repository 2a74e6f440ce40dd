//! Crash test: a process delivering messages in a loop is killed with SIGKILL at a random
//! moment, several times. Every message whose commit returned must be in every
//! recipient's `new/`, whole; no file in `new/` or `cur/` may be partial.
//!
//! The delivering process is this test binary run again with `CHILD_ENV` set, running only
//! `crash_child`, which prints `COMMITTED <name>` after each commit returns.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidegate_core::Account;
use tidegate_core::maildir::parse_name;
use tidegate_store::maildir::{MaildirStore, Recipient};

const CHILD_ENV: &str = "TIDEGATE_CRASH_TEST_ROOT";
const RECIPIENTS: [&str; 2] = ["a@x.org", "b@y.org"];
const MAILDIRS: [&str; 2] = ["x.org/a", "y.org/b"];
const ROUNDS: usize = 6;

/// A small xorshift generator: no dependency, and the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

/// The body byte at `i` of message `seq`: every byte of a message is checkable.
fn pattern(seq: u64, i: usize) -> u8 {
    b'a' + ((seq as usize + i) % 26) as u8
}

fn header(seq: u64) -> String {
    format!("X-Seq: {seq}\r\n\r\n")
}

const TRAILER: &[u8] = b"\r\nEND\r\n";

/// Runs only as the child: delivers until killed.
#[test]
fn crash_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = MaildirStore::new(&root, true, "crash.test");
    let recipients: Vec<Recipient> = RECIPIENTS
        .iter()
        .map(|a| Account((*a).to_owned()).into())
        .collect();
    let mut rng = Rng(seed());
    let mut out = std::io::stdout().lock();
    let start = rng.next() >> 20;
    for seq in start.. {
        let mut pending = store.begin().unwrap();
        pending.append(header(seq).as_bytes()).unwrap();
        let len = rng.below(100_000) as usize;
        let body: Vec<u8> = (0..len).map(|i| pattern(seq, i)).collect();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(64 * 1024) as usize).min(rest.len());
            pending.append(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        pending.append(TRAILER).unwrap();
        let name = pending.final_name();
        let results = pending.commit(&recipients, true);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // One write(2) of a short line: the pipe delivers it whole or not at all.
        out.write_all(format!("COMMITTED {name}\n").as_bytes())
            .unwrap();
        out.flush().unwrap();
    }
}

/// Checks a message file: its size is the `S=` of its name and its bytes are intact.
fn check_whole(path: &Path) -> Result<(), String> {
    let name = path.file_name().unwrap().to_str().unwrap();
    let parsed = parse_name(name).ok_or_else(|| format!("{name}: not a message name"))?;
    let bytes = fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    if parsed.size != Some(bytes.len() as u64) {
        return Err(format!("{name}: {} bytes on disk", bytes.len()));
    }
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{name}: no header"))?;
    let seq: u64 = std::str::from_utf8(&bytes[..text_end])
        .ok()
        .and_then(|h| h.strip_prefix("X-Seq: "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{name}: bad header"))?;
    let body = bytes[text_end + 4..]
        .strip_suffix(TRAILER)
        .ok_or_else(|| format!("{name}: truncated"))?;
    match body
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(seq, i))
    {
        Some((i, _)) => Err(format!("{name}: corrupt at body offset {i}")),
        None => Ok(()),
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs the child until a random moment after its first commit; returns the names it
/// reported committed.
fn run_and_kill(root: &Path, rng: &mut Rng) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut names = Vec::new();
        let mut lines = BufReader::new(stdout);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            // A line cut short by the kill is not an acknowledgement. The first line
            // may follow the harness's `test crash_child ... ` without a line break.
            let marker = b"COMMITTED ";
            let found = line.windows(marker.len()).position(|w| w == marker);
            if let (Some(at), Some(b'\n')) = (found, line.last()) {
                let name = &line[at + marker.len()..line.len() - 1];
                names.push(String::from_utf8(name.to_vec()).unwrap());
                let _ = tx.send(());
            }
            line.clear();
        }
        names
    });
    let first = rx.recv_timeout(Duration::from_secs(60));
    assert!(first.is_ok(), "the child committed nothing");
    std::thread::sleep(Duration::from_millis(rng.below(250)));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn sigkill_during_deliveries_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed());
    let seed_used = rng.0;
    let mut acked: Vec<String> = Vec::new();
    // Files already found whole (they never change afterwards).
    let mut checked = HashSet::new();
    for round in 0..ROUNDS {
        acked.extend(run_and_kill(dir.path(), &mut rng));
        for maildir in MAILDIRS {
            let maildir = dir.path().join(maildir);
            let new = names_in(&maildir.join("new"));
            for name in &acked {
                assert!(
                    new.contains(name),
                    "round {round} (seed {seed_used}): acknowledged {name} missing from {}",
                    maildir.display()
                );
            }
            // The child is sequential: at most the message it was committing when
            // killed is visible without an acknowledgement, once per round.
            let unacked: Vec<&String> = new.iter().filter(|n| !acked.contains(n)).collect();
            assert!(
                unacked.len() <= round + 1,
                "round {round}: {} acknowledged, not acknowledged: {unacked:?}",
                acked.len()
            );
            for sub in ["new", "cur"] {
                for name in names_in(&maildir.join(sub)) {
                    let path = maildir.join(sub).join(&name);
                    if checked.contains(&path) {
                        continue;
                    }
                    let whole = check_whole(&path);
                    assert!(whole.is_ok(), "round {round} (seed {seed_used}): {whole:?}");
                    checked.insert(path);
                }
            }
            assert!(names_in(&maildir.join("tmp")).is_empty());
        }
    }
    assert!(acked.len() >= ROUNDS, "{} acknowledged", acked.len());
    // Left-over temp files are never visible in a maildir; the startup cleanup removes
    // them (here with no age limit).
    let store = MaildirStore::new(dir.path(), true, "crash.test");
    let leftovers = names_in(&store.spool_dir()).len();
    assert!(leftovers <= ROUNDS, "{leftovers} left in the spool");
    assert_eq!(store.clean_spool(Duration::ZERO).unwrap(), leftovers);
    eprintln!(
        "crash test: {} acknowledged deliveries over {ROUNDS} kills, {leftovers} temp files left",
        acked.len()
    );
}
