//! The control plane's working directory (certificates, kubeconfig, etcd data,
//! logs).
//!
//! Temporary directories live under `$TMPDIR/weblab-testenv/<pid>-<random>/`
//! with an `owner` file naming the process that made them. A shared control
//! plane sits in a static and is never dropped, and a killed test binary runs
//! no cleanup at all, so every start removes the directories whose owner is
//! gone; etcd preallocates 64 MiB of WAL, which would otherwise pile up.

use std::path::{Path, PathBuf};

use rand::RngExt;

use crate::Error;

/// A working directory, removed on drop when it is temporary.
#[derive(Debug)]
pub(crate) struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    /// Creates a fresh temporary directory, after removing stale ones.
    pub(crate) fn temporary() -> Result<WorkDir, Error> {
        let base = std::env::temp_dir().join("weblab-testenv");
        std::fs::create_dir_all(&base).map_err(Error::io("create directory", &base))?;
        sweep_stale(&base);
        let suffix: u32 = rand::rng().random();
        let path = base.join(format!("{}-{suffix:08x}", std::process::id()));
        std::fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
        let owner = path.join("owner");
        std::fs::write(&owner, owner_token(std::process::id()).unwrap_or_default())
            .map_err(Error::io("write", &owner))?;
        crate::process::register_dir(&path);
        Ok(WorkDir {
            path,
            temporary: true,
        })
    }

    /// Uses a directory chosen by the caller, which is kept afterwards. Files
    /// of an earlier run that would confuse this one are removed: etcd data
    /// (it belongs to another CA), and the kubeconfig and pid file, whose
    /// appearance tells scripts that the new run is ready.
    pub(crate) fn kept(path: &Path) -> Result<WorkDir, Error> {
        std::fs::create_dir_all(path).map_err(Error::io("create directory", path))?;
        let etcd = path.join("etcd");
        if etcd.exists() {
            std::fs::remove_dir_all(&etcd).map_err(Error::io("remove old etcd data", &etcd))?;
        }
        for name in ["kubeconfig", "pid"] {
            let stale = path.join(name);
            match std::fs::remove_file(&stale) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", &stale)(err));
                }
                _ => {}
            }
        }
        let path = std::path::absolute(path).map_err(Error::io("resolve", path))?;
        Ok(WorkDir {
            path,
            temporary: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns a subdirectory.
    pub(crate) fn subdir(&self, name: &str) -> Result<PathBuf, Error> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        Ok(dir)
    }

    /// Writes a file in the directory with owner-only permissions (it may be a key).
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf, Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io("write", &path))?;
        file.write_all(contents.as_ref())
            .map_err(Error::io("write", &path))?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            crate::process::unregister_dir(&self.path);
            // Best effort: a leftover is swept by the next start.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A fresh temporary directory under `$TMPDIR/weblab-testenv/`, removed on
/// drop, at exit, or by a later run if this process is killed; for
/// components started without a control plane (e.g. [`crate::Prometheus`]).
#[derive(Debug)]
pub struct TempDir {
    work: WorkDir,
}

impl TempDir {
    /// Creates the directory, after removing those of dead processes.
    pub fn new() -> Result<TempDir, Error> {
        Ok(TempDir {
            work: WorkDir::temporary()?,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.work.path()
    }
}

/// `<pid> <start time>`: the start time tells a live owner from a reused pid.
fn owner_token(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields
    // after its closing parenthesis start at field 3, and start time is field 22.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let start_time = after_comm.split_whitespace().nth(19)?;
    Some(format!("{pid} {start_time}"))
}

fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join("owner")) else {
            // Being created right now by someone else, or not ours.
            continue;
        };
        let alive = owner
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .and_then(owner_token)
            .is_some_and(|token| token == owner.trim());
        if !alive {
            tracing::debug!(dir = %dir.display(), "removing stale control plane directory");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_token_of_self_is_stable_and_of_dead_pid_is_none() {
        let me = std::process::id();
        let token = owner_token(me).expect("own /proc entry is readable");
        assert!(token.starts_with(&format!("{me} ")), "{token}");
        assert_eq!(owner_token(me), Some(token));
        // pid_max is at most 2^22 on Linux.
        assert_eq!(owner_token(u32::MAX - 1), None);
    }

    #[test]
    fn sweep_removes_dirs_of_dead_owners_only() {
        let base = std::env::temp_dir().join(format!("testenv-sweep-{}", std::process::id()));
        let live = base.join("live");
        let dead = base.join("dead");
        let unowned = base.join("unowned");
        for dir in [&live, &dead, &unowned] {
            std::fs::create_dir_all(dir).expect("create test dir");
        }
        let token = owner_token(std::process::id()).expect("own token");
        std::fs::write(live.join("owner"), &token).expect("write owner");
        // Same pid, another start time: the pid was reused.
        std::fs::write(dead.join("owner"), format!("{} 1", std::process::id())).expect("write");

        sweep_stale(&base);

        assert!(live.exists());
        assert!(!dead.exists());
        assert!(unowned.exists());
        std::fs::remove_dir_all(&base).expect("clean up");
    }
}
