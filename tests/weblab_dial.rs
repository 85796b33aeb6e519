//! The WeblabDial controller end to end: manifests applied with real
//! `kubectl`, the real operator process reconciling them against a real
//! kube-apiserver, the outcome read back from status and events.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use support::{
    Operator, annotate, apply_yaml, control_plane, eventually, operator_for_new_namespace,
};
use weblab_operator::api::{
    WeblabDial,
    weblab_dial::{ChangeReason, DialPhase},
};

const WAIT: Duration = Duration::from_secs(60);

fn progressive(name: &str, bake: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
spec:
  weblab: {name}
  treatments: [C, T1]
  realms: [NA, EU, FE]
  allocation: {{T1: 100}}
  steps:
    - allocation: {{C: 95, T1: 5}}
      bake: {bake}
    - allocation: {{C: 50, T1: 50}}
      bake: {bake}
      pause: true
  waves:
    - realms: [NA]
    - realms: [EU, FE]
"
    )
}

async fn dial(api: &Api<WeblabDial>, name: &str) -> WeblabDial {
    api.get(name).await.expect("the dial exists")
}

fn phase(dial: &WeblabDial) -> Option<DialPhase> {
    dial.status.as_ref().and_then(|s| s.phase)
}

fn served(dial: &WeblabDial, realm: &str) -> Option<String> {
    dial.status
        .as_ref()?
        .realms
        .iter()
        .find(|r| r.realm == realm)
        .map(|r| r.allocation.to_string())
}

async fn wait_for_phase(
    api: &Api<WeblabDial>,
    name: &str,
    want: DialPhase,
    operator: &Operator,
) -> WeblabDial {
    let reached = eventually(WAIT, || async {
        phase(&dial(api, name).await) == Some(want)
    })
    .await;
    let current = dial(api, name).await;
    assert!(
        reached,
        "{name} never reached {want:?}; status: {:#?}\noperator log:\n{}",
        current.status,
        operator.logs()
    );
    current
}

/// A namespace of its own, an operator watching it, and the dials' API.
async fn setup(prefix: &str) -> (testenv::TestNamespace, Operator, Api<WeblabDial>) {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, prefix).await;
    let api = Api::namespaced(plane.client().await.expect("client"), ns.name());
    (ns, operator, api)
}

#[tokio::test]
async fn a_dial_progresses_through_its_bakes_and_waves_and_waits_for_a_person() {
    let plane = control_plane().await;
    let (ns, operator, api) = setup("dial-steps").await;

    apply_yaml(plane, ns.name(), &progressive("checkout", "2s")).await;
    let paused = wait_for_phase(&api, "checkout", DialPhase::Paused, &operator).await;
    for realm in ["NA", "EU", "FE"] {
        assert_eq!(
            served(&paused, realm).as_deref(),
            Some("C:50 T1:50"),
            "{realm}"
        );
    }

    annotate(plane, ns.name(), "checkout", "resume 1").await;
    let dialed = wait_for_phase(&api, "checkout", DialPhase::Dialed, &operator).await;
    let status = dialed.status.clone().expect("status");
    for realm in ["NA", "EU", "FE"] {
        assert_eq!(served(&dialed, realm).as_deref(), Some("T1:100"));
    }
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.last_action.map(|a| a.request).as_deref(),
        Some("resume 1")
    );

    // Every step exactly once per realm, NA ahead of EU and FE at each step.
    let steps: Vec<(String, String)> = status
        .history
        .iter()
        .map(|change| (change.realm.clone(), change.to.to_string()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("NA", "C:95 T1:5"),
        ("EU", "C:95 T1:5"),
        ("FE", "C:95 T1:5"),
        ("NA", "C:50 T1:50"),
        ("EU", "C:50 T1:50"),
        ("FE", "C:50 T1:50"),
        ("NA", "T1:100"),
        ("EU", "T1:100"),
        ("FE", "T1:100"),
    ]
    .iter()
    .map(|(r, a)| ((*r).to_owned(), (*a).to_owned()))
    .collect();
    assert_eq!(steps, expected);
    assert!(
        status
            .history
            .last()
            .is_some_and(|c| c.reason == ChangeReason::Target)
    );

    // The bakes were honoured: EU got each step at least one bake after NA.
    let when = |realm: &str, to: &str| {
        status
            .history
            .iter()
            .find(|c| c.realm == realm && c.to.to_string() == to)
            .map(|c| c.at.0)
            .expect("recorded")
    };
    // History times keep microseconds, so a bake cut short by a fraction
    // of a second shows.
    for (before, after) in [
        (("NA", "C:95 T1:5"), ("EU", "C:95 T1:5")),
        (("EU", "C:95 T1:5"), ("NA", "C:50 T1:50")),
        (("NA", "C:50 T1:50"), ("EU", "C:50 T1:50")),
    ] {
        let gap = when(after.0, after.1).duration_since(when(before.0, before.1));
        eprintln!("bake of 2s: {after:?} followed {before:?} after {gap:#}");
        assert!(
            gap >= jiff::SignedDuration::from_secs(2),
            "{after:?} followed {before:?} after {gap:#}, before the 2s bake ended"
        );
    }

    // Events on the transitions, from this controller.
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("checkout"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "StepApplied",
        "TargetApplied",
        "Paused",
        "Resumed",
        "Dialed",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} event in {reasons:?}"
        );
    }
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains("weblab_transitions_total{kind=\"WeblabDial\",reason=\"StepApplied\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn manual_abort_holds_the_rollback_allocation_until_retried_and_promote_skips_bakes() {
    let plane = control_plane().await;
    let (ns, operator, api) = setup("dial-actions").await;

    apply_yaml(plane, ns.name(), &progressive("search", "1h")).await;
    let baking = wait_for_phase(&api, "search", DialPhase::Baking, &operator).await;
    assert_eq!(served(&baking, "NA").as_deref(), Some("C:95 T1:5"));
    assert_eq!(
        served(&baking, "EU"),
        None,
        "EU waits for NA's hour-long bake"
    );

    annotate(plane, ns.name(), "search", "promote 1").await;
    let promoted = eventually(WAIT, || async {
        served(&dial(&api, "search").await, "EU").is_some()
    })
    .await;
    assert!(
        promoted,
        "promote did not skip the bake; log:\n{}",
        operator.logs()
    );

    annotate(plane, ns.name(), "search", "abort 1").await;
    let aborted = wait_for_phase(&api, "search", DialPhase::Aborted, &operator).await;
    for realm in ["NA", "EU", "FE"] {
        assert_eq!(served(&aborted, realm).as_deref(), Some("C:100"), "{realm}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        phase(&dial(&api, "search").await),
        Some(DialPhase::Aborted),
        "aborted dials stay aborted"
    );

    annotate(plane, ns.name(), "search", "retry 1").await;
    let retried = wait_for_phase(&api, "search", DialPhase::Baking, &operator).await;
    assert_eq!(served(&retried, "NA").as_deref(), Some("C:95 T1:5"));
    assert!(retried.status.and_then(|s| s.rollback).is_none());
}

#[tokio::test]
async fn a_spec_change_mid_way_starts_from_the_effective_allocation() {
    let plane = control_plane().await;
    let (ns, operator, api) = setup("dial-respec").await;

    apply_yaml(plane, ns.name(), &progressive("feed", "2s")).await;
    wait_for_phase(&api, "feed", DialPhase::Paused, &operator).await;
    // Lower the target below the current 50%: a dial-down, straight there.
    let lowered =
        progressive("feed", "2s").replace("allocation: {T1: 100}", "allocation: {C: 80, T1: 20}");
    apply_yaml(plane, ns.name(), &lowered).await;
    let dialed = wait_for_phase(&api, "feed", DialPhase::Dialed, &operator).await;
    let history = dialed.status.expect("status").history;
    let na: Vec<String> = history
        .iter()
        .filter(|c| c.realm == "NA")
        .map(|c| c.to.to_string())
        .collect();
    assert_eq!(
        na,
        ["C:95 T1:5", "C:50 T1:50", "C:80 T1:20"],
        "never back to 5% first"
    );
}

#[tokio::test]
async fn a_settled_dial_causes_no_write_over_a_full_resync() {
    let plane = control_plane().await;
    let ns = plane.namespace("dial-idle").await.expect("namespace");
    let api: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let first = Operator::start(plane, &["--namespace", ns.name()]).await;
    apply_yaml(
        plane,
        ns.name(),
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: settled
spec:
  weblab: SETTLED
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {C: 90, T1: 10}
",
    )
    .await;
    let settled = wait_for_phase(&api, "settled", DialPhase::Dialed, &first).await;
    let version = settled.metadata.resource_version.clone();
    drop(first);

    // A new process lists everything and reconciles every dial: a full resync.
    let second = Operator::start(plane, &["--namespace", ns.name()]).await;
    let reconciled = eventually(WAIT, || async {
        second.get("/metrics").await.is_some_and(|(_, m)| {
            m.lines().any(|l| {
                l.starts_with("weblab_reconciliations_total{controller=\"weblabdial\"}")
                    && !l.ends_with(" 0")
            })
        })
    })
    .await;
    assert!(
        reconciled,
        "the new process never reconciled; log:\n{}",
        second.logs()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, metrics) = second.get("/metrics").await.expect("metrics");
    assert!(
        !metrics.contains("weblab_status_writes_total{controller=\"weblab-operator/weblabdial\""),
        "wrote:\n{metrics}"
    );
    assert_eq!(
        dial(&api, "settled").await.metadata.resource_version,
        version,
        "the dial was written"
    );
}
