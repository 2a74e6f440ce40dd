//! NFS-safe dotlocks (`tidegate_store::lock`) on real files: mutual exclusion between
//! threads and between processes, stale locks broken by age and by a dead holder, a
//! live holder on another host respected, refresh and release.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime};

use tidegate_store::lock::{Dotlock, LockError, LockOptions, lock_path};

/// Set in a child process started by [`two_processes_exclude_each_other`]: the directory
/// it works in.
const CHILD_ENV: &str = "TIDEGATE_DOTLOCK_CHILD_DIR";
const ROUNDS: usize = 40;

fn options() -> LockOptions {
    LockOptions {
        timeout: Duration::from_secs(20),
        ..LockOptions::new("testhost")
    }
}

/// Read-modify-write of a counter file with a pause in the middle, under the lock: any
/// overlap between two holders loses an increment.
fn increment_under_lock(dir: &Path, options: &LockOptions) {
    let counter = dir.join("counter");
    let lock = Dotlock::acquire(&counter, options).expect("lock");
    let value: u64 = fs::read_to_string(&counter)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    thread::sleep(Duration::from_micros(300));
    fs::write(&counter, format!("{}\n", value + 1)).expect("write counter");
    lock.release().expect("release");
}

fn counter(dir: &Path) -> u64 {
    fs::read_to_string(dir.join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn threads_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..ROUNDS {
                    increment_under_lock(dir.path(), &options());
                }
            });
        }
    });
    assert_eq!(counter(dir.path()), 4 * ROUNDS as u64);
    assert!(!lock_path(&dir.path().join("counter")).exists());
    // No temporary link names are left behind.
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// The body of the child process: increments the shared counter.
#[test]
#[ignore = "run as a child process by two_processes_exclude_each_other"]
fn child_increments() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        for _ in 0..ROUNDS {
            increment_under_lock(Path::new(&dir), &options());
        }
    }
}

#[test]
fn two_processes_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_increments", "--ignored", "--quiet"])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..ROUNDS {
        increment_under_lock(dir.path(), &options());
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(counter(dir.path()), 2 * ROUNDS as u64);
}

/// The id of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_lock_of_a_dead_process_on_this_host_is_broken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("uidlist");
    fs::write(lock_path(&target), format!("{} testhost 1\n", dead_pid())).unwrap();
    let options = LockOptions {
        timeout: Duration::ZERO,
        ..options()
    };
    let lock = Dotlock::try_acquire(&target, &options)
        .unwrap()
        .expect("stale lock broken");
    let content = fs::read_to_string(lock.path()).unwrap();
    assert!(
        content.starts_with(&format!("{} testhost ", std::process::id())),
        "{content}"
    );
}

#[test]
fn a_live_lock_of_another_host_is_respected_until_it_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("uidlist");
    // A dead pid, but on another host: its liveness cannot be checked from here.
    fs::write(lock_path(&target), format!("{} otherhost 1\n", dead_pid())).unwrap();
    let options = LockOptions {
        timeout: Duration::from_millis(50),
        ..options()
    };
    assert!(matches!(
        Dotlock::acquire(&target, &options),
        Err(LockError::Timeout)
    ));
    // Once its file is older than stale_after, it is broken.
    let old = SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(lock_path(&target))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let lock = Dotlock::acquire(&target, &options).expect("old lock broken");
    drop(lock);
    assert!(!lock_path(&target).exists(), "drop releases");
}

#[test]
fn refresh_keeps_a_lock_fresh_and_a_broken_lock_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("uidlist");
    let lock = Dotlock::acquire(&target, &options()).unwrap();
    let file = fs::File::options().write(true).open(lock.path()).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    lock.refresh().unwrap();
    let age = SystemTime::now()
        .duration_since(fs::metadata(lock.path()).unwrap().modified().unwrap())
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "refreshed: {age:?}");
    // While held by a live process on this host, another attempt fails.
    assert!(Dotlock::try_acquire(&target, &options()).unwrap().is_none());
    // Someone breaks it and takes it: ours is lost, theirs stays.
    fs::remove_file(lock.path()).unwrap();
    let theirs = Dotlock::try_acquire(&target, &options()).unwrap().unwrap();
    assert!(matches!(lock.refresh(), Err(LockError::Lost)));
    assert!(matches!(lock.release(), Err(LockError::Lost)));
    assert!(theirs.path().exists());
    theirs.release().unwrap();
}
