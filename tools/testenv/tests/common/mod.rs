//! Helpers shared by testenv's integration tests.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The Kubernetes version pinned in tools/versions.env.
pub fn pinned_kubernetes_version() -> &'static str {
    include_str!("../../../versions.env")
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .expect("tools/versions.env pins KUBERNETES_VERSION")
        .trim()
}

/// Polls `check` until it returns `Some`, failing with `what` and the last
/// observation after `timeout`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, kube::Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(observed)) => observed,
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{what}: not reached after {timeout:?}; last seen: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub parent: u32,
    /// The command name, at most 15 bytes.
    pub comm: String,
    pub state: char,
}

/// Reads /proc/<pid>/stat; None if the process is gone.
pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let parent = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        parent,
        comm,
        state,
    })
}

/// The live children of `parent`.
pub fn children_of(parent: u32) -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(proc_info)
        .filter(|p| p.parent == parent && p.state != 'Z')
        .collect()
}

/// Whether the process is gone (or a zombie nobody has reaped yet: in a
/// container, pid 1 may not reap orphans).
pub fn is_dead(pid: u32) -> bool {
    proc_info(pid).is_none_or(|p| p.state == 'Z' || p.state == 'X')
}

/// Waits up to `timeout` for every pid to be dead; returns those still alive.
pub fn wait_dead(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| !is_dead(p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("testenv-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Whether `path` exists, polling for up to `timeout`.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    path.exists()
}

/// The `weblab-testenv` binary of this build.
pub const HARNESS: &str = env!("CARGO_BIN_EXE_weblab-testenv");
/// How long `weblab-testenv up` may take to announce its kubeconfig.
pub const STARTUP: Duration = Duration::from_secs(180);

/// Kills the harness if a test fails before it does.
pub struct Harness(pub Child);

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `weblab-testenv up --dir DIR EXTRA_ARGS` and waits until it prints
/// the kubeconfig path (everything is ready then).
pub fn start_harness(dir: &Path, extra_args: &[&str]) -> Result<(Harness, String), String> {
    let mut command = Command::new(HARNESS);
    command
        .args(["up", "--dir"])
        .arg(dir)
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut harness = Harness(command.spawn().map_err(|e| e.to_string())?);
    let stdout = harness.0.stdout.take().ok_or("no stdout")?;
    // The harness prints the kubeconfig path once everything is ready.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver
        .recv_timeout(STARTUP)
        .map_err(|_| format!("harness printed nothing within {STARTUP:?}"))?;
    if line.trim().is_empty() {
        let status = harness.0.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "harness exited ({status}); see {}/logs",
            dir.display()
        ));
    }
    Ok((harness, line.trim().to_owned()))
}
