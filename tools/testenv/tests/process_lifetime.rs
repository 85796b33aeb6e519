//! No component outlives its harness: not after drop, not after SIGTERM, and
//! not when the harness is killed with SIGKILL and runs no code at all.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestResult, children_of, scratch_dir, start_harness, wait_dead, wait_for_file};
use testenv::{ControlPlane, Options, Tools};

fn names(pids: &[common::ProcInfo]) -> BTreeSet<String> {
    pids.iter().map(|p| p.comm.clone()).collect()
}

#[test]
fn sigkill_of_the_harness_takes_every_component_down() -> TestResult {
    let dir = scratch_dir("sigkill");
    let (mut harness, kubeconfig) = start_harness(
        &dir,
        &[
            "--workloads",
            "--monitoring",
            "--alertmanager-webhook",
            "http://127.0.0.1:9/webhook",
        ],
    )?;
    assert_eq!(Path::new(&kubeconfig), dir.join("kubeconfig"));
    assert!(wait_for_file(&dir.join("pid"), Duration::from_secs(5)));

    let children = children_of(harness.0.id());
    // /proc truncates command names to 15 bytes.
    let expected: BTreeSet<String> = [
        "etcd",
        "kube-apiserver",
        "kube-controller",
        "kube-scheduler",
        "kwok",
        "prometheus",
        "prometheus-aler",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(&children), expected, "{children:?}");

    harness.0.kill()?; // SIGKILL: the harness runs no cleanup of its own.
    harness.0.wait()?;
    let pids: Vec<u32> = children.iter().map(|p| p.pid).collect();
    let alive = wait_dead(&pids, Duration::from_secs(10));
    assert!(
        alive.is_empty(),
        "still running after SIGKILL of the harness: {alive:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn sigterm_stops_the_harness_cleanly() -> TestResult {
    let dir = scratch_dir("sigterm");
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let (mut harness, kubeconfig) = start_harness(&dir, &["--crds", crds])?;

    // By the time the kubeconfig is announced it works for a real kubectl and
    // the CRDs are established: scripts may use it at once.
    let tools = Tools::locate(None, false)?;
    let output = Command::new(tools.path("kubectl"))
        .args([
            "--kubeconfig",
            &kubeconfig,
            "get",
            "crd",
            "widgets.testenv.weblab.dev",
        ])
        .args([
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ])
        .output()?;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8(output.stdout)?, "True");
    let pid: u32 = std::fs::read_to_string(dir.join("pid"))?.trim().parse()?;
    assert_eq!(pid, harness.0.id());

    let children = children_of(pid);
    assert_eq!(
        names(&children),
        ["etcd", "kube-apiserver"].map(String::from).into()
    );

    // SAFETY: kill has no memory-safety preconditions; pid is our child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = harness.0.try_wait()? {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "harness ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "harness exited with {status}");
    let pids: Vec<u32> = children.iter().map(|p| p.pid).collect();
    assert!(wait_dead(&pids, Duration::from_secs(1)).is_empty());
    assert!(!dir.join("pid").exists(), "pid file left behind");
    assert!(
        dir.join("logs/kube-apiserver.log").exists(),
        "logs are kept in --dir"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn drop_stops_processes_and_removes_the_directory() -> TestResult {
    let control_plane = ControlPlane::start(Options::default()).await?;
    let pids: Vec<u32> = control_plane.processes().iter().map(|p| p.pid()).collect();
    assert_eq!(pids.len(), 2);
    let dir = control_plane.dir().to_path_buf();
    assert!(dir.join("kubeconfig").exists());

    drop(control_plane);

    assert!(wait_dead(&pids, Duration::from_secs(1)).is_empty());
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}
