//! GitOps never sees drift: every example is applied with the real kubectl
//! (server-side apply, as Argo CD and Flux do), the operator reconciles them
//! an alert pushed to the operator's webhook rolls one dial back by itself,
//! and a person aborts another through its annotation; re-applying the same
//! manifests changes nothing and `kubectl diff` finds no difference, because
//! the operator writes only status. `kubectl wait --for=condition=Ready`
//! understands a dial's kstatus conditions.

mod support;

use std::{collections::BTreeMap, time::Duration};

use support::{
    apply_yaml, control_plane, describe, eventually, kubectl, operator_for_new_namespace,
};
use testenv::ControlPlane;

const KINDS: &str =
    "weblabdials,alarms,rollbacks,mergetrainpauses,changewindows,mergetrainexceptions";

/// `name -> resourceVersion` of every weblab.dev object in `namespace`.
async fn versions(plane: &ControlPlane, namespace: &str) -> BTreeMap<String, String> {
    let output = kubectl(
        plane,
        &[
            "get",
            KINDS,
            "-n",
            namespace,
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect()
}

/// `name -> time` of the `kubectl` field manager's last change to every
/// weblab.dev object in `namespace`.
async fn applied_at(plane: &ControlPlane, namespace: &str) -> BTreeMap<String, String> {
    let output = kubectl(
        plane,
        &[
            "get",
            KINDS,
            "-n",
            namespace,
            "--show-managed-fields",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.managedFields[?(@.manager==\"kubectl\")].time}{\"\\n\"}{end}",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, at)| (name.to_owned(), at.to_owned()))
        .collect()
}

/// Waits (up to 90 s) until nothing in `namespace` has changed for two
/// seconds, and returns the versions then.
async fn settle(plane: &ControlPlane, namespace: &str) -> BTreeMap<String, String> {
    let mut last = versions(plane, namespace).await;
    for _ in 0..45 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = versions(plane, namespace).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the objects in {namespace} never settled: {last:?}");
}

#[tokio::test]
async fn reapplying_the_examples_after_the_operator_acted_shows_no_drift() {
    let plane = control_plane().await;
    let namespace = plane.namespace("gitops").await.expect("namespace");
    let ns = namespace.name();
    apply_yaml(
        plane,
        ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook\nstringData:\n  token: gitops-token\n",
    )
    .await;
    let secret = format!("{ns}/webhook");
    let operator = support::Operator::start(
        plane,
        &["--namespace", ns, "--webhook-token-secret", &secret],
    )
    .await;
    let examples = support::repo_root().join("examples");
    let examples = examples.to_string_lossy();
    let apply = ["apply", "--server-side", "-n", ns, "-f", &*examples];
    let applied = kubectl(plane, &apply).await;
    assert!(applied.status.success(), "{}", describe(&applied));

    // Let the operator write its status on every dial it reconciles.
    let reconciled = eventually(Duration::from_secs(60), || async {
        let output = kubectl(
            plane,
            &[
                "get",
                "weblabdials",
                "-n",
                ns,
                "-o",
                "jsonpath={.items[*].status.phase}",
            ],
        )
        .await;
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .count()
            >= 3
    })
    .await;
    assert!(reconciled, "the dials got no status:\n{}", operator.logs());

    // An alarm attached to the holiday dial fires (Alertmanager's
    // notification, as it would push it): an automatic rollback in status.
    let notification = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "weblab", "groupKey": "{}",
        "alerts": [{"status": "firing", "fingerprint": "9a1c0ffee",
                    "labels": {"alertname": "DeviceSyncCapacity", "severity": "page"}}]
    });
    let rolled_back = eventually(Duration::from_secs(60), || async {
        let _ = support::http()
            .post(format!("{}/v1/webhooks/alertmanager", operator.base))
            .bearer_auth("gitops-token")
            .json(&notification)
            .send()
            .await;
        let output = kubectl(
            plane,
            &[
                "get",
                "-n",
                ns,
                "weblabdial/holiday-device-sync",
                "-o",
                "jsonpath={.status.phase}",
            ],
        )
        .await;
        output.stdout == b"RolledBack"
    })
    .await;
    assert!(rolled_back, "no automatic rollback:\n{}", operator.logs());

    // A person aborts one dial: an annotation outside the manifests, and a
    // rolled-back allocation in status.
    let annotated = kubectl(
        plane,
        &[
            "annotate",
            "-n",
            ns,
            "weblabdial/checkout-redesign",
            "weblab.dev/action=abort incident-4711",
        ],
    )
    .await;
    assert!(annotated.status.success(), "{}", describe(&annotated));
    let aborted = eventually(Duration::from_secs(30), || async {
        let output = kubectl(
            plane,
            &[
                "get",
                "-n",
                ns,
                "weblabdial/checkout-redesign",
                "-o",
                "jsonpath={.status.phase}",
            ],
        )
        .await;
        output.stdout == b"Aborted"
    })
    .await;
    assert!(
        aborted,
        "the abort was not carried out:\n{}",
        operator.logs()
    );

    // Diff while nothing moves (the quickstart dial bakes 30 s between
    // writes); a status write during the diff is seen and the diff retried.
    let diff = ["diff", "--server-side", "-n", ns, "-f", &*examples];
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = settle(plane, ns).await;
        let output = kubectl(plane, &diff).await;
        if versions(plane, ns).await != before && attempts < 3 {
            continue;
        }
        assert_eq!(
            output.status.code(),
            Some(0),
            "kubectl diff found drift: {}",
            describe(&output)
        );
        break;
    }

    // Re-applying is a no-op: it updates nothing kubectl manages, so no
    // object's `kubectl` field-manager entry moves. (Compared through that
    // entry, not the resourceVersion: a controller's status write at the
    // same moment is not drift.)
    settle(plane, ns).await;
    let before = applied_at(plane, ns).await;
    let reapplied = kubectl(plane, &apply).await;
    assert!(reapplied.status.success(), "{}", describe(&reapplied));
    let after = applied_at(plane, ns).await;
    assert!(
        !before.is_empty() && before.values().all(|at| !at.is_empty()),
        "every example has a kubectl field manager entry: {before:?}"
    );
    assert_eq!(before.len(), after.len());
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, at)| after.get(*name) != Some(*at))
        .map(|(name, _)| name)
        .collect();
    assert!(changed.is_empty(), "re-applying changed {changed:?}");
    let unchanged = String::from_utf8_lossy(&reapplied.stdout);
    assert!(
        unchanged
            .lines()
            .all(|line| line.ends_with("serverside-applied")),
        "{unchanged}"
    );
}

#[tokio::test]
async fn kubectl_wait_for_ready_returns_once_a_dial_is_dialed() {
    let plane = control_plane().await;
    let (ns, _operator) = operator_for_new_namespace(plane, "gitops-wait").await;
    apply_yaml(
        plane,
        ns.name(),
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: banner
spec:
  weblab: BANNER_1
  treatments: [C, T1]
  realms: [NA]
  allocation: {C: 80, T1: 20}
",
    )
    .await;
    let waited = kubectl(
        plane,
        &[
            "wait",
            "-n",
            ns.name(),
            "--for=condition=Ready",
            "--timeout=60s",
            "weblabdial/banner",
        ],
    )
    .await;
    assert!(waited.status.success(), "{}", describe(&waited));
    let generation = kubectl(
        plane,
        &[
            "get",
            "-n",
            ns.name(),
            "weblabdial/banner",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].observedGeneration} {.status.phase}",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&generation.stdout), "1 Dialed");
}
