//! A minimal stderr logger: `LEVEL target: message`, level from `TIDEGATE_LOG`
//! (`error`, `warn`, `info` (default), `debug`, `trace`).

use std::io::Write as _;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// A buffer larger than this after a long line is freed rather than kept per thread.
const KEEP_CAPACITY: usize = 4096;

thread_local! {
    /// The line being formatted, reused by the thread's next line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        write_line(format_args!(
            "tidegate {level} {}: {}\n",
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Writes one log line with a single call: stderr is unbuffered, and writing the
/// pieces one by one would cost a system call each. The line is formatted into a
/// per-thread buffer; a nested or late call (during thread exit) writes directly.
fn write_line(args: std::fmt::Arguments<'_>) {
    let buffered = LINE.try_with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return false;
        };
        line.clear();
        let _ = line.write_fmt(args);
        let _ = std::io::stderr().lock().write_all(&line);
        if line.capacity() > KEEP_CAPACITY {
            *line = Vec::new();
        }
        true
    });
    if buffered != Ok(true) {
        let _ = std::io::stderr().lock().write_fmt(args);
    }
}

/// Installs the logger once; later calls do nothing.
pub fn init() {
    let level = std::env::var("TIDEGATE_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}
