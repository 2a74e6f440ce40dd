//! Least privilege for `tidegate serve`: a server started as root binds its ports and
//! creates its control socket, then gives root up for good and runs as the account
//! `[server] user` names (docs/security.md, "Privilege model").
//!
//! The few system calls this needs (`getpwnam_r`, `getgrnam_r`, `initgroups`, `setgid`,
//! `setuid`, `umask`) are made through `libc`, already a dependency of the binary, in
//! this one module; each `unsafe` block says why it is sound. glibc and musl apply
//! `setgid`/`setuid` to every thread of the process, so threads started before the drop
//! (the control socket's) lose root too; [`Identity::drop_to`] checks the result.

use std::ffi::CString;
use std::path::Path;

/// The account a root-started server drops to: resolved before anything is bound, so
/// a misspelt name fails before the ports are taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name, for messages and `initgroups`.
    pub user: String,
    /// Its numeric user id.
    pub uid: libc::uid_t,
    /// The group to run as: `[server] group`, or the user's primary group.
    pub gid: libc::gid_t,
}

/// What `serve` does about root, decided from the effective uid and `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not root: run as we are.
    Unprivileged,
    /// Root with `[server] allow_root = true` and no user: stay root (warned about).
    StayRoot,
    /// Root: bind, then become this account.
    DropTo(Identity),
}

/// The effective user id of this process.
pub fn effective_uid() -> libc::uid_t {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Sets the process umask to 077, so every file and directory the server creates
/// (messages, uidlists, locks, generated TLS keys, the control socket) is readable by
/// its own user only, whatever mode the code asks for.
pub fn restrict_umask() {
    // SAFETY: umask(2) only replaces the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Decides what to do about root from `[server] user`, `group` and `allow_root`, for a
/// process whose effective uid is `euid`.
pub fn plan(
    euid: libc::uid_t,
    user: Option<&str>,
    group: Option<&str>,
    allow_root: bool,
) -> Result<Plan, String> {
    if euid != 0 {
        if let Some(user) = user {
            log::warn!(
                "server.user = {user:?} is ignored: tidegate was not started as root (uid {euid})"
            );
        }
        return Ok(Plan::Unprivileged);
    }
    match user {
        Some(user) => Identity::resolve(user, group).map(Plan::DropTo),
        None if allow_root => Ok(Plan::StayRoot),
        None => Err(
            "refusing to run as root: set [server] user to the account the server \
                     should run as after binding its ports (for example user = \"tidegate\"), \
                     or set [server] allow_root = true to really serve as root"
                .into(),
        ),
    }
}

impl Identity {
    /// Looks `user` (and `group`, default the user's primary group) up in the system's
    /// account database.
    pub fn resolve(user: &str, group: Option<&str>) -> Result<Identity, String> {
        let (uid, primary_gid) = lookup_user(user)?;
        let gid = match group {
            Some(group) => lookup_group(group)?,
            None => primary_gid,
        };
        if uid == 0 {
            return Err(format!(
                "server.user = {user:?} is root: name an unprivileged account"
            ));
        }
        Ok(Identity {
            user: user.to_owned(),
            uid,
            gid,
        })
    }

    /// Hands `path` (a file or directory the server created while still root, such as
    /// the control socket) to this account, so the server can still remove or use it.
    pub fn give(&self, path: &Path) -> Result<(), String> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|e| {
            format!(
                "cannot hand {} to user {:?}: {e}",
                path.display(),
                self.user
            )
        })
    }

    /// Becomes this account for good: supplementary groups from the group database,
    /// then the group, then the user; and checks that root cannot be taken back.
    pub fn drop_to(&self) -> Result<(), String> {
        let name = CString::new(self.user.as_str())
            .map_err(|_| "server.user contains a NUL byte".to_owned())?;
        let fail = |what: &str| {
            format!(
                "cannot drop privileges to user {:?}: {what}: {}",
                self.user,
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: `name` is a NUL-terminated string that outlives the call; initgroups(3)
        // only reads it and the group database.
        if unsafe { libc::initgroups(name.as_ptr(), self.gid) } != 0 {
            return Err(fail("initgroups"));
        }
        // SAFETY: setgid(2) takes a plain integer and touches no memory of ours.
        if unsafe { libc::setgid(self.gid) } != 0 {
            return Err(fail("setgid"));
        }
        // SAFETY: as above; after this call the process can no longer change its ids.
        if unsafe { libc::setuid(self.uid) } != 0 {
            return Err(fail("setuid"));
        }
        // SAFETY: the getters take no arguments and cannot fail; setuid(0) is a probe
        // that must fail now that root is gone.
        let (uid, euid, gid, egid, regained) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
                libc::setuid(0) == 0,
            )
        };
        if (uid, euid) != (self.uid, self.uid) || (gid, egid) != (self.gid, self.gid) || regained {
            return Err(format!(
                "dropping privileges to user {:?} did not hold (uid {uid}/{euid}, gid {gid}/{egid})",
                self.user
            ));
        }
        Ok(())
    }
}

/// Checks, after the drop, that the server can create files in `dir` (the mailbox root
/// or the workarea), so a wrong owner is reported at start rather than as failed
/// deliveries later.
pub fn check_writable(dir: &Path, what: &str, user: &str) -> Result<(), String> {
    let probe = dir.join(format!(".tidegate-probe.{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map(drop);
    let _ = std::fs::remove_file(&probe);
    created.map_err(|e| {
        format!(
            "{what} {} is not usable by user {user:?} (the server dropped root to it): {e}; \
             give it to that user (chown -R {user} {})",
            dir.display(),
            dir.display()
        )
    })
}

/// Size of the buffer for one passwd/group entry: the usual sysconf hint is 1024 and
/// entries with many members can be larger; past this the lookup is refused.
const ENTRY_BUFFER_LIMIT: usize = 1 << 20;

/// `(uid, primary gid)` of `user`.
fn lookup_user(user: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let name = CString::new(user).map_err(|_| "server.user contains a NUL byte".to_owned())?;
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed passwd (integers and null pointers) is a valid value to be
        // overwritten by getpwnam_r.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `buf`
        // has `size` bytes, `entry` and `found` are live locals. The strings the result
        // points into live in `buf`, which we do not read.
        let code = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match code {
            0 if found.is_null() => return Err(format!("server.user: no such user {user:?}")),
            0 => return Ok((entry.pw_uid, entry.pw_gid)),
            libc::ERANGE if size < ENTRY_BUFFER_LIMIT => size *= 4,
            _ => {
                return Err(format!(
                    "server.user: cannot look {user:?} up: {}",
                    std::io::Error::from_raw_os_error(code)
                ));
            }
        }
    }
}

/// The gid of `group`.
fn lookup_group(group: &str) -> Result<libc::gid_t, String> {
    let name = CString::new(group).map_err(|_| "server.group contains a NUL byte".to_owned())?;
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed group (integers and null pointers) is a valid value to be
        // overwritten by getgrnam_r.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in `lookup_user`.
        let code = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match code {
            0 if found.is_null() => return Err(format!("server.group: no such group {group:?}")),
            0 => return Ok(entry.gr_gid),
            libc::ERANGE if size < ENTRY_BUFFER_LIMIT => size *= 4,
            _ => {
                return Err(format!(
                    "server.group: cannot look {group:?} up: {}",
                    std::io::Error::from_raw_os_error(code)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_without_a_user_is_refused_unless_allowed() {
        let err = plan(0, None, None, false).unwrap_err();
        assert!(
            err.contains("[server] user") && err.contains("allow_root"),
            "{err}"
        );
        assert_eq!(plan(0, None, None, true).unwrap(), Plan::StayRoot);
        assert_eq!(plan(1000, None, None, false).unwrap(), Plan::Unprivileged);
        assert_eq!(
            plan(1000, Some("nobody"), None, false).unwrap(),
            Plan::Unprivileged
        );
    }

    #[test]
    fn users_and_groups_resolve_from_the_account_database() {
        let Plan::DropTo(nobody) = plan(0, Some("nobody"), None, false).unwrap() else {
            panic!("root with a user must drop");
        };
        assert_eq!(nobody.user, "nobody");
        assert_ne!(nobody.uid, 0);
        let root_group = Identity::resolve("nobody", Some("root")).unwrap();
        assert_eq!(root_group.gid, 0);
        let err = Identity::resolve("no-such-user-here", None).unwrap_err();
        assert!(err.contains("no such user"), "{err}");
        let err = Identity::resolve("nobody", Some("no-such-group-here")).unwrap_err();
        assert!(err.contains("no such group"), "{err}");
        assert!(
            Identity::resolve("root", None)
                .unwrap_err()
                .contains("is root")
        );
        assert!(Identity::resolve("no\0body", None).is_err());
    }
}
