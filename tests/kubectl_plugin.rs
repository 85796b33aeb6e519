//! The `kubectl-weblab` plugin run as `kubectl weblab ...` by the real
//! kubectl (found on the PATH, as users install it) against the real operator
//! on a real control plane.

mod support;

use std::{path::Path, process::Output};

use support::{apply_yaml, control_plane, describe, kubectl, operator_for_new_namespace};
use testenv::ControlPlane;

const DIAL: &str = "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: CHECKOUT_PLUGIN
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {T1: 100}
  steps:
    - allocation: {C: 90, T1: 10}
      bake: 1h
  waves:
    - realms: [NA]
    - realms: [EU]
  overrides:
    - treatment: T1
      units: [qa-0001]
  rollback:
    alarms:
      names: [checkout-errors]
    severities: [Sev2]
---
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: checkout-errors
spec:
  severity: Sev2
  alertmanager:
    matchers:
      - name: alertname
        value: CheckoutErrors
";

/// `kubectl weblab <args>` with the plugin's directory first on the PATH.
async fn weblab(plane: &ControlPlane, namespace: &str, args: &[&str]) -> Output {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-weblab"));
    let dir = plugin.parent().expect("the plugin's directory");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubeconfig = plane.kubeconfig_path().to_string_lossy().into_owned();
    let mut command = tokio::process::Command::new(plane.tools().path("kubectl"));
    command
        .arg("weblab")
        .args(["--kubeconfig", &kubeconfig, "-n", namespace])
        .args(args)
        .env("PATH", path)
        .kill_on_drop(true);
    command.output().await.expect("kubectl runs")
}

async fn ok(plane: &ControlPlane, namespace: &str, args: &[&str]) -> String {
    let output = weblab(plane, namespace, args).await;
    assert!(
        output.status.success(),
        "kubectl weblab {args:?}: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The row of `checkout` in `kubectl weblab status`.
async fn status_row(plane: &ControlPlane, namespace: &str) -> String {
    let table = ok(plane, namespace, &["status"]).await;
    table
        .lines()
        .find(|line| line.starts_with("checkout "))
        .unwrap_or_else(|| panic!("no checkout row:\n{table}"))
        .to_owned()
}

/// Marks the alarm `OK`, as the alarm controller would.
async fn alarm_ok(plane: &ControlPlane, namespace: &str) {
    let patched = kubectl(
        plane,
        &[
            "patch",
            "-n",
            namespace,
            "alarm/checkout-errors",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"state":"OK","reason":"no alert","observedGeneration":1}}"#,
        ],
    )
    .await;
    assert!(patched.status.success(), "{}", describe(&patched));
}

#[tokio::test]
async fn status_history_and_every_action_through_kubectl() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "plugin").await;
    let ns = ns.name();
    apply_yaml(plane, ns, DIAL).await;
    alarm_ok(plane, ns).await;

    let baking = support::eventually(std::time::Duration::from_secs(60), || async {
        status_row(plane, ns).await.contains("Baking")
    })
    .await;
    assert!(baking, "never Baking; operator log:\n{}", operator.logs());
    let row = status_row(plane, ns).await;
    for expected in [
        "CHECKOUT_PLUGIN",
        "NA=C:90 T1:10",
        "EU=-",
        "checkout-errors=OK",
    ] {
        assert!(row.contains(expected), "{expected:?} not in {row:?}");
    }
    let all = ok(plane, ns, &["status", "-A"]).await;
    assert!(all.starts_with("NAMESPACE") && all.contains(ns), "{all}");

    let promoted = ok(plane, ns, &["promote", "checkout", "--wait"]).await;
    assert!(promoted.contains("carried it out"), "{promoted}");
    let moved = support::eventually(std::time::Duration::from_secs(30), || async {
        status_row(plane, ns).await.contains("EU=C:90 T1:10")
    })
    .await;
    assert!(moved, "promote did not skip NA's hour-long bake");

    let paused = ok(plane, ns, &["pause", "checkout", "--wait"]).await;
    assert!(paused.contains("carried it out"), "{paused}");
    assert!(status_row(plane, ns).await.contains("(paused)"));
    ok(plane, ns, &["resume", "checkout", "--wait"]).await;
    assert!(!status_row(plane, ns).await.contains("(paused)"));

    let aborted = ok(plane, ns, &["abort", "checkout", "--wait"]).await;
    assert!(aborted.contains("phase Aborted"), "{aborted}");
    let row = status_row(plane, ns).await;
    assert!(
        row.contains("NA=C:100 (rollback)") && row.contains("EU=C:100 (rollback)"),
        "{row}"
    );
    let retried = ok(plane, ns, &["retry", "checkout", "--wait"]).await;
    assert!(retried.contains("carried it out"), "{retried}");

    let history = ok(plane, ns, &["history", "checkout"]).await;
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines[0].starts_with("AT") && lines[0].contains("REASON"),
        "{history}"
    );
    for (realm, reason) in [
        ("NA", "Step"),
        ("EU", "Step"),
        ("NA", "Abort"),
        ("EU", "Abort"),
    ] {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&format!(" {realm} ")) && line.contains(reason)),
            "no {realm} {reason} row:\n{history}"
        );
    }
}

#[tokio::test]
async fn assign_agrees_with_the_operators_assignment_api_and_explains_itself() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "plugin-assign").await;
    let ns = ns.name();
    apply_yaml(plane, ns, DIAL).await;
    alarm_ok(plane, ns).await;
    let baking = support::eventually(std::time::Duration::from_secs(60), || async {
        status_row(plane, ns).await.contains("Baking")
    })
    .await;
    assert!(baking, "never Baking; operator log:\n{}", operator.logs());

    // NA serves C:90 T1:10 (allocation), EU nothing yet (default), and the
    // QA unit is pinned (override): the plugin answers as the server does.
    let mut reasons = std::collections::BTreeSet::new();
    for realm in ["NA", "EU"] {
        for unit in (0..40)
            .map(|i| format!("customer-{i}"))
            .chain(["qa-0001".to_owned()])
        {
            let local = ok(
                plane,
                ns,
                &["assign", "checkout", &unit, "--realm", realm, "-o", "json"],
            )
            .await;
            let local: serde_json::Value = serde_json::from_str(&local).expect("JSON");
            let (code, served) = operator
                .get(&format!(
                    "/v1/weblabs/{ns}/checkout/treatment?unit={unit}&realm={realm}"
                ))
                .await
                .expect("the operator answers");
            assert_eq!(code, 200, "{served}");
            let served: serde_json::Value = serde_json::from_str(&served).expect("JSON");
            for field in [
                "treatment",
                "reason",
                "unit",
                "realm",
                "weblab",
                "generation",
            ] {
                assert_eq!(local[field], served[field], "{field} of {unit} in {realm}");
            }
            reasons.insert(local["reason"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        ["allocation", "default", "override"]
    );

    let text = ok(
        plane,
        ns,
        &["assign", "checkout", "customer-1", "--realm", "NA"],
    )
    .await;
    assert!(
        text.starts_with("customer-1 gets ")
            && text.contains("bucket")
            && text.contains("C:90 T1:10"),
        "{text}"
    );
    let pinned = ok(
        plane,
        ns,
        &["assign", "checkout", "qa-0001", "--realm", "EU"],
    )
    .await;
    assert!(
        pinned.contains("gets T1") && pinned.contains("override"),
        "{pinned}"
    );

    // Mistakes get messages that say what to do.
    let no_realm = weblab(plane, ns, &["assign", "checkout", "customer-1"]).await;
    assert!(!no_realm.status.success());
    assert!(
        String::from_utf8_lossy(&no_realm.stderr).contains("--realm (NA, EU)"),
        "{}",
        describe(&no_realm)
    );
    let missing = weblab(plane, ns, &["promote", "nope"]).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("\"nope\" not found"),
        "{}",
        describe(&missing)
    );
}

#[tokio::test]
async fn kubectl_finds_the_plugin_and_its_help() {
    let plane = control_plane().await;
    let help = ok(plane, "default", &["--help"]).await;
    for command in [
        "status", "history", "pause", "resume", "promote", "abort", "retry", "assign",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} missing:\n{help}"
        );
    }
    assert!(help.contains("Examples:"), "{help}");
    let empty = plane.namespace("plugin-empty").await.expect("namespace");
    let none = ok(plane, empty.name(), &["status"]).await;
    assert_eq!(
        none,
        format!("No WeblabDials in namespace {}.\n", empty.name())
    );
}
