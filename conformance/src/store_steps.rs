//! Script steps that look into the [`MemStore`]: stored messages, mailbox sizes and
//! aborted deliveries.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::memstore::MemStore;
use crate::pattern::{Pattern, escape};
use crate::script::big_message;

/// `user`'s `number`-th message as stored now.
pub fn stored(store: &MemStore, user: &str, number: usize) -> Result<Bytes, String> {
    let messages = store.messages(user);
    messages.get(number - 1).cloned().ok_or_else(|| {
        format!(
            "{user} has {} stored messages, not {number}",
            messages.len()
        )
    })
}

/// Shows at most the first 600 bytes of a message.
fn show(bytes: &[u8]) -> String {
    let cut = bytes.len().min(600);
    let more = if cut < bytes.len() { "..." } else { "" };
    format!("{}{more} ({} bytes)", escape(&bytes[..cut]), bytes.len())
}

/// `@expect-stored`.
pub fn expect_stored(
    store: &MemStore,
    user: &str,
    number: usize,
    pattern: &Pattern,
) -> Result<(), String> {
    let message = stored(store, user, number)?;
    if pattern.matches(&message) {
        Ok(())
    } else {
        Err(format!(
            "{user}'s stored message {number} does not match `{pattern}`: it is {}",
            show(&message)
        ))
    }
}

/// `@expect-stored-big`: trace fields (`Return-Path:` first, a `Received:` field, the
/// last line ending in a `+0000` date), then exactly `big_message(size)`.
pub fn expect_stored_big(
    store: &MemStore,
    user: &str,
    number: usize,
    size: usize,
) -> Result<(), String> {
    let message = stored(store, user, number)?;
    let body = big_message(size);
    let Some(trace) = message.strip_suffix(body.as_slice()) else {
        return Err(format!(
            "{user}'s stored message {number} does not end with the {size}-byte message \
             that was sent: it is {}",
            show(&message)
        ));
    };
    let trace_ok = Pattern::parse("Return-Path: <*>\\r\\nReceived: from *; * +0000\\r\\n")
        .expect("valid pattern")
        .matches(trace);
    if !trace_ok {
        return Err(format!(
            "the trace fields before the message are wrong: {}",
            show(trace)
        ));
    }
    Ok(())
}

/// `@expect-mailbox`.
pub fn expect_mailbox(store: &MemStore, user: &str, count: usize) -> Result<(), String> {
    let messages = store.messages(user);
    if messages.len() == count {
        return Ok(());
    }
    let shown: Vec<String> = messages.iter().map(|m| show(m)).collect();
    Err(format!(
        "{user} has {} stored messages, expected {count}: {}",
        messages.len(),
        shown.join("; ")
    ))
}

/// Waits up to `patience` for `done`, checking every few milliseconds.
fn eventually(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `@expect-aborted`: exactly `count` aborts and nothing open.
pub fn expect_aborted(store: &MemStore, count: u64, patience: Duration) -> Result<(), String> {
    let state = || (store.deliveries_aborted(), store.pending_deliveries());
    if eventually(patience, || state() == (count, 0)) {
        return Ok(());
    }
    let (aborted, pending) = state();
    Err(format!(
        "expected {count} aborted deliveries and none open; the store saw {aborted} aborted \
         and has {pending} open ({} begun)",
        store.deliveries_begun()
    ))
}

/// After a script: every delivery begun was committed or aborted.
pub fn settled(store: &MemStore, patience: Duration) -> Result<(), String> {
    if eventually(patience, || store.pending_deliveries() == 0) {
        return Ok(());
    }
    Err(format!(
        "the connection is closed but {} deliveries are still open in the store \
         (neither committed nor aborted)",
        store.pending_deliveries()
    ))
}
