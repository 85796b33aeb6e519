//! `weblab-operator run` as a process: ready against a real control plane,
//! serving health and metrics, holding the leader lease, and exiting 0 on
//! SIGTERM after releasing it.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{Operator, control_plane, eventually};

#[tokio::test]
async fn run_is_ready_serves_metrics_holds_the_lease_and_exits_zero_on_sigterm() {
    let plane = control_plane().await;
    let namespace = plane.namespace("run").await.expect("namespace");
    let operator = Operator::start(
        plane,
        &[
            "--leader-election",
            "--lease-namespace",
            namespace.name(),
            "--identity",
            "replica-under-test",
        ],
    )
    .await;
    assert_eq!(operator.get("/healthz").await, Some((200, "ok".to_owned())));

    // Leadership shows in the Lease and in the metrics.
    let leases: Api<Lease> =
        Api::namespaced(plane.client().await.expect("client"), namespace.name());
    let holder = || async {
        leases
            .get_opt("weblab-operator")
            .await
            .expect("lease readable")
            .and_then(|lease| lease.spec?.holder_identity)
    };
    let led = eventually(Duration::from_secs(30), || async {
        holder().await.as_deref() == Some("replica-under-test")
    })
    .await;
    assert!(led, "never took the lease; logs:\n{}", operator.logs());
    let (status, metrics) = operator.get("/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("weblab_leader 1"), "metrics:\n{metrics}");
    assert!(
        metrics.contains("weblab_dials{phase=\"Dialed\"}"),
        "metrics:\n{metrics}"
    );

    let log = operator.log.clone();
    let exit = operator.terminate().await;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "exit {exit}; logs:\n{logs}");

    // The lease was handed back, so a successor need not wait for it to expire.
    assert_eq!(holder().await, None, "lease not released; logs:\n{logs}");
}
