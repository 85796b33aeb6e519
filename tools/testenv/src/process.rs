//! Child processes that cannot outlive the harness.
//!
//! Three layers, because no single one covers every way a test binary ends:
//! - `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills the child when its parent
//!   dies, even on `kill -9`. It fires when the *thread* that forked the child
//!   exits, so every child is spawned from one dedicated thread that lives as
//!   long as the process (a tokio worker or a test's thread would kill its
//!   children when it finishes).
//! - An `atexit` hook kills the children and removes the temporary
//!   directories still registered when the process exits normally, which
//!   matters for the shared control plane: it sits in a static and is never
//!   dropped.
//! - `Drop` of the owning [`ControlPlane`](crate::ControlPlane) stops them
//!   when a control plane goes out of scope.
//!
//! Each child also leads its own process group, so a Ctrl-C in the terminal
//! reaches only the harness, which then stops the children in order.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Error;

/// How many lines of a process's log go into an error.
pub const LOG_TAIL_LINES: usize = 40;

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

/// Live child pids and temporary directories, for the `atexit` hook.
#[derive(Default)]
struct Registry {
    pids: BTreeSet<u32>,
    dirs: BTreeSet<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pids: BTreeSet::new(),
    dirs: BTreeSet::new(),
});

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<SpawnRequest>();
        // The sender lives in this static, so the loop (and the thread) never
        // ends before the process does.
        let started = std::thread::Builder::new()
            .name("testenv-spawner".to_owned())
            .spawn(move || {
                for mut request in receiver {
                    let _ = request.reply.send(request.command.spawn());
                }
            });
        if let Err(err) = started {
            // Requests then fail with "spawner thread is gone" below.
            tracing::error!(%err, "cannot start the testenv spawner thread");
        }
        // SAFETY: `cleanup_at_exit` is a plain extern "C" fn that only takes
        // locks with try_lock and calls async-signal-tolerant libc functions.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        Mutex::new(sender)
    })
}

extern "C" fn cleanup_at_exit() {
    // try_lock: another thread may hold the lock while the process exits.
    let Ok(mut registry) = REGISTRY.try_lock() else {
        return;
    };
    for pid in std::mem::take(&mut registry.pids) {
        kill_group(pid, libc::SIGKILL);
        // Reap it, so the directory below is not being written to any more.
        let mut status = 0;
        // SAFETY: waiting on our own child; status is a valid out pointer.
        unsafe {
            libc::waitpid(pid as libc::pid_t, &mut status, 0);
        }
    }
    for dir in std::mem::take(&mut registry.dirs) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub(crate) fn register_dir(dir: &Path) {
    // Make sure the atexit hook is installed before anything needs it.
    let _ = spawner();
    if let Ok(mut registry) = REGISTRY.lock() {
        registry.dirs.insert(dir.to_path_buf());
    }
}

pub(crate) fn unregister_dir(dir: &Path) {
    if let Ok(mut registry) = REGISTRY.lock() {
        registry.dirs.remove(dir);
    }
}

fn kill_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions. The negative pid
    // addresses the child's own process group (it is the group leader).
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// One running component of the control plane, its output going to a log file.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Mutex<Child>,
}

impl ManagedProcess {
    /// Starts `binary` with `args`, stdout and stderr written to `log`.
    pub(crate) fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        envs: &[(&str, &Path)],
        log: PathBuf,
    ) -> Result<ManagedProcess, Error> {
        // Truncated: a kept directory (`up --dir`) is reused across runs, and
        // the tail in an error must be this run's.
        let log_file = std::fs::File::create(&log).map_err(Error::io("open log", &log))?;
        let stderr = log_file.try_clone().map_err(Error::io("open log", &log))?;

        let mut command = Command::new(binary);
        command
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .process_group(0);
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only calls
        // async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }

        let spawn_error = |source| Error::Spawn {
            name: name.to_owned(),
            binary: binary.to_path_buf(),
            source,
        };
        let gone = || spawn_error(std::io::Error::other("the testenv spawner thread is gone"));
        let (reply, response) = mpsc::channel();
        spawner()
            .lock()
            .map_err(|_| gone())?
            .send(SpawnRequest { command, reply })
            .map_err(|_| gone())?;
        let child = response.recv().map_err(|_| gone())?.map_err(spawn_error)?;

        let pid = child.id();
        if let Ok(mut registry) = REGISTRY.lock() {
            registry.pids.insert(pid);
        }
        tracing::debug!(name, pid, log = %log.display(), "started");
        Ok(ManagedProcess {
            name: name.to_owned(),
            pid,
            log,
            child: Mutex::new(child),
        })
    }

    /// The component's name, e.g. `kube-apiserver`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file holding its stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status, if it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().ok()?;
        child.try_wait().ok().flatten()
    }

    /// The last [`LOG_TAIL_LINES`] lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, LOG_TAIL_LINES)
    }

    /// Fails with the log's tail if the process has exited.
    pub(crate) fn check_running(&self) -> Result<(), Error> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(Error::ProcessExited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                log_tail: self.log_tail(),
            }),
        }
    }

    /// Freezes the process (SIGSTOP) until [`resume`](Self::resume): the
    /// kernel still accepts connections on its sockets, but nothing is
    /// answered, as with a hung server.
    pub fn pause(&self) {
        kill_group(self.pid, libc::SIGSTOP);
    }

    /// Lets a [`pause`](Self::pause)d process run again (SIGCONT).
    pub fn resume(&self) {
        kill_group(self.pid, libc::SIGCONT);
    }

    /// Sends SIGTERM, waits up to `grace` for the process to exit, then kills
    /// it. A zero `grace` kills at once.
    pub(crate) fn stop(&self, grace: Duration) {
        let Ok(mut child) = self.child.lock() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            if !grace.is_zero() {
                kill_group(self.pid, libc::SIGTERM);
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            kill_group(self.pid, libc::SIGKILL);
        }
        let _ = child.wait();
        if let Ok(mut registry) = REGISTRY.lock() {
            registry.pids.remove(&self.pid);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// The last `lines` lines of a log file (or why it could not be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_last_lines() {
        let path = std::env::temp_dir().join(format!("testenv-tail-{}", std::process::id()));
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write log");
        let tail = log_tail(&path, 3);
        std::fs::remove_file(&path).expect("remove log");
        assert_eq!(tail, "line 48\nline 49\nline 50");
    }

    #[test]
    fn child_spawned_from_short_lived_thread_survives_it() {
        let log = std::env::temp_dir().join(format!("testenv-sleep-{}.log", std::process::id()));
        let process = std::thread::spawn({
            let log = log.clone();
            move || ManagedProcess::spawn("sleep", Path::new("sleep"), &["30".to_owned()], &[], log)
        })
        .join()
        .expect("spawning thread did not panic")
        .expect("sleep starts");
        // The thread that asked for the spawn is gone; with PDEATHSIG bound to
        // it the child would have been killed.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            process.exit_status().is_none(),
            "child died with the requesting thread"
        );
        let pid = process.pid();
        drop(process);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "child still exists after drop"
        );
        let _ = std::fs::remove_file(&log);
    }
}
