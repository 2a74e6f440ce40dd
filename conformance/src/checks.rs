//! Bad-input checks that do not fit a line script: a client that never reads, a client
//! that disconnects in the middle of RETR, a 10 MiB line, the connection cap.
//!
//! Each returns `Err` with what went wrong. The `core_*` checks use [`CoreConn`]
//! directly; the `shell_*` checks take a [`ShellDriver`].

use std::cell::Cell;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate_core::pop3::{BUSY_REPLY, Pop3Limits};
use tidegate_store::Listener;

use crate::core_conn::CoreConn;
use crate::core_driver::Chunking;
use crate::interp::{Conn, Received, stuffed_lines};
use crate::memstore::MemStore;
use crate::pki::TestPki;
use crate::script::{ScriptConfig, big_message};
use crate::shell_driver::{ShellDriver, TcpConn};
use crate::{Driver, listener_for};

/// Reads one line and checks it starts with `prefix`.
fn expect(conn: &mut dyn Conn, prefix: &str) -> Result<Vec<u8>, String> {
    match conn.read_line()? {
        Received::Line(l) if l.starts_with(prefix.as_bytes()) => Ok(l),
        other => Err(format!(
            "expected a line starting {prefix:?}, got {other:?}"
        )),
    }
}

/// Logs `alice` in and reads the replies.
fn login(conn: &mut dyn Conn) -> Result<(), String> {
    expect(conn, "+OK")?;
    conn.send(b"USER alice\r\nPASS secret\r\n")?;
    expect(conn, "+OK")?;
    expect(conn, "+OK Logged in")?;
    Ok(())
}

fn store_with(message: Vec<u8>) -> Arc<MemStore> {
    let store = Arc::new(MemStore::new());
    store.add_user("alice", "secret", false);
    store.add_message("alice", message);
    store
}

fn core_conn(store: &Arc<MemStore>, clock: &Rc<Cell<Instant>>) -> CoreConn {
    let pki = TestPki::shared();
    let listener = listener_for(&ScriptConfig::default(), &pki, Duration::from_secs(2));
    let session = listener.open("127.0.0.1:40000".parse().expect("address"), clock.get());
    CoreConn::new(session, store.clone(), clock.clone(), Chunking::Whole, pki)
}

/// Output a session may hold for a client that does not read: the high-water mark plus
/// one stuffed read chunk (stuffing at most doubles it) and a reply line.
fn output_bound() -> usize {
    let limits = Pop3Limits::default();
    limits.output_high_water + 2 * limits.read_chunk + 1024
}

/// A client that sends RETR for an 8 MiB message and stops reading: the session must
/// stop asking the store for more once its output is unread, and deliver the exact
/// message once the client reads again.
pub fn core_never_reading_client() -> Result<(), String> {
    let message = big_message(8 * 1024 * 1024);
    let store = store_with(message.clone());
    let clock = Rc::new(Cell::new(Instant::now()));
    let mut conn = core_conn(&store, &clock);
    login(&mut conn)?;
    conn.pause_reading();
    conn.send(b"RETR 1\r\n")?;
    let (held, served) = (conn.pending(), store.bytes_served() as usize);
    if held > output_bound() || served > output_bound() {
        return Err(format!(
            "a client that reads nothing made the session produce {held} bytes and read \
             {served} from the store (bound {})",
            output_bound()
        ));
    }
    conn.resume_reading();
    expect(&mut conn, &format!("+OK {} octets", message.len()))?;
    for (i, want) in stuffed_lines(&message).iter().enumerate() {
        match conn.read_line()? {
            Received::Line(l) if &l == want => {}
            other => return Err(format!("message line {} differs: got {other:?}", i + 1)),
        }
    }
    conn.check_violation()
}

/// The client closes its sending side in the middle of RETR: the session never enters
/// UPDATE and nothing follows its `Close`. It may close at once, or (half-close) finish
/// the RETR for a client that still reads and then close; either way what was sent is
/// correct and the message is still in the store.
pub fn core_disconnect_mid_retr() -> Result<(), String> {
    let message = big_message(2 * 1024 * 1024);
    let store = store_with(message.clone());
    let clock = Rc::new(Cell::new(Instant::now()));
    let mut conn = core_conn(&store, &clock);
    login(&mut conn)?;
    conn.pause_reading();
    conn.send(b"RETR 1\r\n")?;
    conn.shutdown_write()?;
    if !conn.is_closed() {
        if store.bytes_served() as usize > output_bound() {
            return Err("after EOF the session read on without the client reading".into());
        }
        conn.resume_reading();
        expect(&mut conn, "+OK")?;
        for (i, want) in stuffed_lines(&message).iter().enumerate() {
            match conn.read_line()? {
                Received::Line(l) if &l == want => {}
                other => return Err(format!("message line {} after EOF: got {other:?}", i + 1)),
            }
        }
        if !conn.is_closed() {
            return Err("the session did not close after answering everything before EOF".into());
        }
    }
    conn.check_violation()?;
    if store.commits() != 0 || store.inbox("alice").len() != 1 {
        return Err("EOF without QUIT must not enter the UPDATE state".into());
    }
    Ok(())
}

/// Autologout while a RETR waits for a client that stopped reading: the session may
/// close, but it must not write an error line into the middle of the message (a client
/// would take it as message text; `on_chunk` applies the same rule to store errors).
pub fn core_autologout_mid_retr() -> Result<(), String> {
    let store = store_with(big_message(2 * 1024 * 1024));
    let clock = Rc::new(Cell::new(Instant::now()));
    let mut conn = core_conn(&store, &clock);
    login(&mut conn)?;
    conn.pause_reading();
    conn.send(b"RETR 1\r\n")?;
    conn.advance(Duration::from_secs(601))?;
    if !conn.is_closed() {
        return Err("601 s without the client reading: expected autologout".into());
    }
    let mut after_ok = Vec::new();
    while let Received::Line(l) = conn.read_line()? {
        after_ok.extend_from_slice(&l);
    }
    // The generated message never contains "-ERR"; any occurrence was injected.
    if let Some(at) = after_ok.windows(4).position(|w| w == b"-ERR") {
        let end = (at + 60).min(after_ok.len());
        return Err(format!(
            "the session wrote {:?} into the middle of a RETR response",
            String::from_utf8_lossy(&after_ok[at..end])
        ));
    }
    Ok(())
}

fn start(
    driver: &ShellDriver,
    store: &Arc<MemStore>,
) -> Result<crate::shell_driver::Running, String> {
    let pki = TestPki::shared();
    let listener = listener_for(&ScriptConfig::default(), &pki, Duration::from_millis(50));
    driver
        .start(vec![Listener::Pop3(listener)], store.clone())
        .map_err(|e| format!("cannot start the shell: {e}"))
}

fn tcp(driver: &ShellDriver, running: &crate::shell_driver::Running) -> Result<TcpConn, String> {
    TcpConn::connect(running.addrs[0], TestPki::shared(), driver.timeout).map_err(|e| e.to_string())
}

/// A 64 MiB RETR to a client that reads nothing: the shell must stop reading the
/// message (backpressure), keep serving others, and survive the client vanishing.
pub fn shell_never_reading_client(driver: &ShellDriver) -> Result<(), String> {
    let total = 64 * 1024 * 1024;
    let message =
        b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop\r\n".repeat(total / 64);
    let store = store_with(message);
    let running = start(driver, &store)?;
    let mut stalled = tcp(driver, &running)?;
    login(&mut stalled)?;
    stalled.send(b"RETR 1\r\n")?;
    // Wait until the amount read from the store stops growing.
    let mut last = u64::MAX;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let served = store.bytes_served();
        if served == last || Instant::now() > deadline {
            break;
        }
        last = served;
    }
    let served = store.bytes_served();
    eprintln!(
        "[{}] a client that reads nothing: {served} of {total} message bytes read from the store",
        driver.name()
    );
    if served as usize > total / 2 || served != last {
        return Err(format!(
            "the shell read {served} of {total} bytes for a client that reads nothing"
        ));
    }
    let mut other = tcp(driver, &running)?;
    login(&mut other)?;
    other.send(b"QUIT\r\n")?;
    expect(&mut other, "+OK")?;
    drop(stalled);
    drop(other);
    running.stop(Duration::from_secs(10))
}

/// The client reads 100 KiB of a 2 MiB RETR and disconnects: the shell keeps serving,
/// nothing was committed, and it still shuts down cleanly.
pub fn shell_disconnect_mid_retr(driver: &ShellDriver) -> Result<(), String> {
    let store = store_with(big_message(2 * 1024 * 1024));
    let running = start(driver, &store)?;
    let mut first = tcp(driver, &running)?;
    login(&mut first)?;
    first.send(b"RETR 1\r\n")?;
    let mut read = 0;
    while read < 100 * 1024 {
        match first.read_line()? {
            Received::Line(l) => read += l.len(),
            Received::Closed { .. } => return Err("closed before the message was sent".into()),
        }
    }
    drop(first);
    let mut second = tcp(driver, &running)?;
    expect(&mut second, "+OK")?;
    second.send(b"USER alice\r\nPASS secret\r\nQUIT\r\n")?;
    expect(&mut second, "+OK")?;
    expect(&mut second, "+OK Logged in, 1 messages")?;
    expect(&mut second, "+OK")?;
    drop(second);
    if !running.is_serving() {
        return Err("serve returned after a client disconnected mid-RETR".into());
    }
    running.stop(Duration::from_secs(10))
}

/// A 10 MiB line written in one go while the client reads concurrently: the shell reads
/// and discards it (no send-before-receive deadlock, no unbounded buffer) and answers the
/// next command.
pub fn shell_ten_mib_line(driver: &ShellDriver) -> Result<(), String> {
    let store = store_with(b"Subject: x\r\n\r\nx\r\n".to_vec());
    let running = start(driver, &store)?;
    let mut sock = TcpStream::connect(running.addrs[0]).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut writer = sock.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(b"CAPA\r\n")?;
        writer.write_all(&vec![b'a'; 10 * 1024 * 1024])?;
        writer.write_all(b"\r\nSTAT\r\nQUIT\r\n")
    });
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(b"POP3 closing\r\n") {
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(format!(
                    "reading replies: {e} (got {:?})",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    sender
        .join()
        .map_err(|_| "sender panicked".to_string())?
        .map_err(|e| format!("sending the 10 MiB line: {e}"))?;
    let text = String::from_utf8_lossy(&got);
    let want = [
        "+OK Capability list follows",
        "-ERR Command line too long",
        "-ERR Command not valid in this state",
        "+OK pop.test POP3 closing",
    ];
    let mut at = 0;
    for w in want {
        match text[at..].find(w) {
            Some(i) => at += i + w.len(),
            None => return Err(format!("missing {w:?} in order in {text:?}")),
        }
    }
    running.stop(Duration::from_secs(10))
}

/// With `max_connections = 1`, a second client gets `-ERR [SYS/TEMP]` and a close; once
/// the first leaves, a new client is served again.
pub fn shell_connection_cap(driver: &ShellDriver) -> Result<(), String> {
    let mut capped = driver.clone();
    capped.max_connections = 1;
    let store = store_with(b"x\r\n".to_vec());
    let running = start(&capped, &store)?;
    let mut first = tcp(driver, &running)?;
    expect(&mut first, "+OK")?;
    let mut second = tcp(driver, &running)?;
    let busy = String::from_utf8_lossy(BUSY_REPLY).into_owned();
    expect(&mut second, busy.trim_end())?;
    match second.read_line()? {
        Received::Closed { leftover } if leftover.is_empty() => {}
        other => {
            return Err(format!(
                "the busy reply must be followed by a close, got {other:?}"
            ));
        }
    }
    first.send(b"QUIT\r\n")?;
    expect(&mut first, "+OK")?;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut third = tcp(driver, &running)?;
        match third.read_line()? {
            Received::Line(l) if l.starts_with(b"+OK") => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => return Err(format!("a slot never freed up: {other:?}")),
        }
    }
    running.stop(Duration::from_secs(10))
}
