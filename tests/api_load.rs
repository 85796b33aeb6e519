//! The operator's client under an API server that pushes back: writes
//! refused with 429 and `Retry-After` (as API Priority and Fairness refuses
//! them) are sent again after the time asked, and the refusal never reaches
//! the reconcile as an error. The API server is the real one, behind a
//! loopback proxy that refuses the first writes (tests/support).

mod support;

use std::time::Duration;

use kube::Api;
use support::{
    CHART_NAMESPACE, CHART_RELEASE, Operator, apply_yaml, chart_identity, control_plane, describe,
    eventually, kubectl, throttling_proxy::ThrottlingProxy,
};
use weblab_operator::api::{WeblabDial, weblab_dial::DialPhase};

const REFUSED: usize = 3;
const RETRY_AFTER_SECS: u64 = 1;

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn writes_refused_with_429_are_retried_after_retry_after() {
    let plane = control_plane().await;
    // The operator runs as the chart's ServiceAccount, with a token of its
    // own for the proxy to pass on.
    chart_identity(plane).await;
    let token = kubectl(
        plane,
        &[
            "create",
            "token",
            CHART_RELEASE,
            "-n",
            CHART_NAMESPACE,
            "--duration=1h",
        ],
    )
    .await;
    assert!(token.status.success(), "TokenRequest: {}", describe(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let proxy = ThrottlingProxy::start(plane, REFUSED, RETRY_AFTER_SECS).await;
    let kubeconfig = proxy.kubeconfig(plane, "throttled", &token);
    let namespace = plane.namespace("throttled").await.expect("namespace");
    let operator =
        Operator::start_with_kubeconfig(plane, &kubeconfig, &["--namespace", namespace.name()])
            .await;

    apply_yaml(
        plane,
        namespace.name(),
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: CHECKOUT_1
  treatments: [C, T1]
  realms: [NA]
  allocation: {C: 50, T1: 50}
",
    )
    .await;
    let dials: Api<WeblabDial> =
        Api::namespaced(plane.client().await.expect("client"), namespace.name());
    let dialed = eventually(Duration::from_secs(60), || async {
        dials.get("checkout").await.is_ok_and(|dial| {
            dial.status.and_then(|status| status.phase) == Some(DialPhase::Dialed)
        })
    })
    .await;
    assert!(dialed, "the dial was never Dialed:\n{}", operator.logs());

    let seen = proxy.seen();
    let refused: Vec<_> = seen.iter().filter(|s| s.refused).collect();
    assert_eq!(refused.len(), REFUSED, "{seen:#?}");
    // Each refused write came again, and not before the server asked.
    for refusal in &refused {
        let again = seen
            .iter()
            .find(|s| s.method == refusal.method && s.path == refusal.path && s.at > refusal.at);
        let Some(again) = again else {
            panic!(
                "{} {} was never sent again: {seen:#?}",
                refusal.method, refusal.path
            );
        };
        let waited = again.at - refusal.at;
        println!(
            "{} {} sent again after {waited:?}",
            refusal.method, refusal.path
        );
        assert!(
            waited >= Duration::from_secs(RETRY_AFTER_SECS),
            "{} {} came back after {waited:?}, before Retry-After",
            refusal.method,
            refusal.path
        );
    }

    // Every 429 was retried: the proxy's, and any the API server gave
    // itself (APF on a busy machine).
    let answered_429 = seen.iter().filter(|s| s.status == 429).count();
    let (status, metrics) = operator.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "weblab_api_retries_total{code=\"429\"}"),
        answered_429 as f64,
        "{metrics}"
    );
    // The retries hid the refusals from the controllers: no failed status
    // write, no reconcile error from the API server.
    for line in metrics.lines() {
        let failed = line.starts_with("weblab_status_writes_total{")
            && line.contains("result=\"error\"")
            || line.starts_with("weblab_reconcile_errors_total{")
                && line.contains("reason=\"KubeApiError\"");
        assert!(
            !failed,
            "a refusal reached a controller: {line}\n{}",
            operator.logs()
        );
    }
}
