//! `wait` (until a server greets) and `procstat` (CPU and memory of a process tree).

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::net::{self, Conn};

/// Waits until the server greets: a POP3 `+OK`, an IMAP `* OK` or an SMTP/LMTP `220`
/// greeting, which is answered with QUIT or LOGOUT.
pub fn wait(target: &str, timeout: f64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    loop {
        let attempt = net::resolve(target).and_then(|addr| {
            let mut c = Conn::open(addr, None, Duration::from_secs(2), 512)?;
            c.read_line("greeting")?;
            if c.line.starts_with(b"+OK") {
                let _ = c.send("QUIT", b"QUIT\r\n").and_then(|()| c.ok("QUIT"));
                Ok(())
            } else if c.line.starts_with(b"* OK") {
                let _ = c
                    .send("LOGOUT", b"w LOGOUT\r\n")
                    .and_then(|()| c.imap_until("LOGOUT", "w").map(drop));
                Ok(())
            } else if c.line.starts_with(b"220") {
                while c.line.get(3) == Some(&b'-') {
                    c.read_line("greeting")?;
                }
                let _ = c
                    .send("QUIT", b"QUIT\r\n")
                    .and_then(|()| c.reply("QUIT").map(drop));
                Ok(())
            } else {
                Err(format!("greeting: {}", c.line_text()))
            }
        });
        let Err(last) = attempt else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(format!("{target} did not greet within {timeout} s: {last}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state); keep numeric fields, state becomes 0.
    Some(
        rest.split_ascii_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

pub fn procstat(root: u32) -> Result<(), String> {
    if stat_fields(root).is_none() {
        return Err(format!("no process {root}"));
    }
    // Parent links of every process, then the descendants of root.
    let mut parent = Vec::new();
    for entry in fs::read_dir("/proc")
        .map_err(|e| format!("/proc: {e}"))?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            parent.push((pid, f.get(1).copied().unwrap_or(0) as u32));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    let (mut ticks, mut rss, mut hwm) = (0u64, 0u64, 0u64);
    for &pid in &tree {
        // Fields 14..=17 (utime stime cutime cstime) are at 11..=14 counting from field 3.
        if let Some(f) = stat_fields(pid) {
            ticks += f.get(11..15).map(|s| s.iter().sum()).unwrap_or(0);
        }
        rss += status_kb(pid, "VmRSS:");
        hwm += status_kb(pid, "VmHWM:");
    }
    // SAFETY: sysconf has no preconditions.
    let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    println!(
        "ticks={ticks} clk_tck={clk} rss_kb={rss} hwm_kb={hwm} procs={}",
        tree.len()
    );
    Ok(())
}
