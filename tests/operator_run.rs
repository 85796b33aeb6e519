//! `weblab-operator run` as a process: ready against a real control plane,
//! serving health and metrics, holding the leader lease, and exiting 0 on
//! SIGTERM after releasing it.

mod support;

use std::{net::TcpListener, process::Stdio, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::control_plane;
use tokio::time::{Instant, sleep, timeout};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

#[tokio::test]
async fn run_is_ready_serves_metrics_holds_the_lease_and_exits_zero_on_sigterm() {
    let plane = control_plane().await;
    let namespace = plane.namespace("run").await.expect("namespace");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = plane.dir().join(format!("operator-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_weblab-operator"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--leader-election", "--lease-namespace", namespace.name()])
        .args(["--identity", "replica-under-test"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the operator starts");
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = get(&format!("{base}/readyz")).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never became ready; logs:\n{}",
            logs()
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&format!("{base}/healthz")).await,
        Some((200, "ok".to_owned()))
    );

    // Leadership shows in the Lease and in the metrics.
    let leases: Api<Lease> =
        Api::namespaced(plane.client().await.expect("client"), namespace.name());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let holder = leases
            .get_opt("weblab-operator")
            .await
            .expect("lease readable")
            .and_then(|lease| lease.spec?.holder_identity);
        if holder.as_deref() == Some("replica-under-test") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never took the lease; logs:\n{}",
            logs()
        );
        sleep(Duration::from_millis(200)).await;
    }
    let (status, metrics) = get(&format!("{base}/metrics"))
        .await
        .expect("metrics answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("weblab_leader 1"), "metrics:\n{metrics}");

    let pid = operator.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(signalled.success());
    let exit = timeout(Duration::from_secs(20), operator.wait())
        .await
        .expect("exits within 20s of SIGTERM")
        .expect("exit status");
    assert!(exit.success(), "exit {exit}; logs:\n{}", logs());

    // The lease was handed back, so a successor need not wait for it to expire.
    let holder = leases
        .get("weblab-operator")
        .await
        .expect("lease readable")
        .spec
        .and_then(|spec| spec.holder_identity);
    assert_eq!(holder, None, "lease not released; logs:\n{}", logs());
}
