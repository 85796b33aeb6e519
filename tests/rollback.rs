//! Rollbacks end to end on a control plane where workloads really run
//! (kube-controller-manager, kube-scheduler, kwok with fake Nodes): the real
//! operator process, manifests applied with real kubectl, alarms fired by
//! Alertmanager webhook notifications posted to the operator (as
//! `tests/alarms.rs` does), outcomes read from status, ReplicaSets and
//! `kubectl rollout history`.
//!
//! A region that never becomes ready is simulated with a pod template whose
//! `nodeSelector` matches none of kwok's fake Nodes: its Pods stay Pending,
//! so its rollout misses `verification.rolloutDeadline`. (kwok's stages make
//! every scheduled Pod ready; an unschedulable one is the honest way to get
//! a rollout that never finishes.)

mod support;

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Secret,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{
    Operator, apply_yaml, describe, eventually, kubectl, push_alert_with_token, request_action,
    workloads::{IMAGE, WAIT, authorize_rollbacks, deployment, image, plane, release, rolled_out},
};
use testenv::ControlPlane;
use weblab_operator::api::{
    Rollback,
    rollback::{RollbackPhase, WavePhase, WorkloadResult},
};

const TOKEN: &str = "alertmanager-to-weblab-rbk";

/// The Deployment's ReplicaSets by image tag: (revision, annotations).
async fn replica_sets(
    plane: &ControlPlane,
    namespace: &str,
    app: &str,
) -> Vec<(String, ReplicaSet)> {
    let api: Api<ReplicaSet> = Api::namespaced(plane.client().await.expect("client"), namespace);
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("lists ReplicaSets")
        .items
        .into_iter()
        .map(|rs| {
            let image = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let tag = image.rsplit(':').next().unwrap_or_default().to_owned();
            (tag, rs)
        })
        .collect()
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.annotations().get(key).cloned()
}

async fn rollback_status(
    api: &Api<Rollback>,
    name: &str,
) -> weblab_operator::api::rollback::RollbackStatus {
    api.get(name)
        .await
        .ok()
        .and_then(|r| r.status)
        .unwrap_or_default()
}

/// Waits until the rollback reaches `want`, and returns it.
async fn wait_phase(
    api: &Api<Rollback>,
    name: &str,
    want: RollbackPhase,
    operator: &Operator,
    within: Duration,
) -> weblab_operator::api::rollback::RollbackStatus {
    let reached = eventually(within, || async {
        rollback_status(api, name).await.phase == Some(want)
    })
    .await;
    let status = rollback_status(api, name).await;
    assert!(
        reached,
        "rollback {name} never reached {want:?}; status {status:#?}\nlog:\n{}",
        operator.logs()
    );
    status
}

/// An operator watching `namespace`, reading the webhook token from there.
async fn operator(plane: &ControlPlane, namespace: &str) -> Operator {
    apply_yaml(
        plane,
        namespace,
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: weblab-webhook
stringData:
  token: {TOKEN}
"
        ),
    )
    .await;
    let secret = format!("{namespace}/weblab-webhook");
    Operator::start(
        plane,
        &["--namespace", namespace, "--webhook-token-secret", &secret],
    )
    .await
}

/// 3.240.0 is confirmed stable by the armed rollback, 3.241.0 never is
/// (3.242.1 follows it at once), 3.242.1 is bad: a Sev2 alarm fired through
/// the webhook restores 3.240.0, and `kubectl rollout history` shows it as
/// the newest revision.
#[tokio::test]
async fn an_armed_rollback_fires_from_the_webhook_and_restores_the_previous_stable_release() {
    let plane = plane().await;
    let namespace = plane.namespace("rbk-stable").await.expect("namespace");
    let ns = namespace.name();
    let operator = operator(plane, ns).await;
    apply_yaml(
        plane,
        ns,
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: graphql-errors
spec:
  severity: Sev2
  alertmanager:
    matchers:
      - name: alertname
        value: GraphQLErrors
",
    )
    .await;
    release(plane, ns, "graphql-api", "3.240.0").await;
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql-sev2
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: PreviousStable}}
  trigger: {{type: Alarm, alarms: {{names: [graphql-errors]}}, severities: [Sev2]}}
  verification: {{rolloutDeadline: 90s, bake: 3s, alarms: {{names: [graphql-errors]}}}}
  stableAfter: 8s
"
        ),
    )
    .await;
    let rollbacks: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), ns);
    wait_phase(
        &rollbacks,
        "graphql-sev2",
        RollbackPhase::Armed,
        &operator,
        WAIT,
    )
    .await;

    let stable = eventually(WAIT, || async {
        replica_sets(plane, ns, "graphql-api")
            .await
            .iter()
            .any(|(tag, rs)| {
                tag == "3.240.0" && annotation(rs, "weblab.dev/stable-since").is_some()
            })
    })
    .await;
    assert!(
        stable,
        "3.240.0 never recorded stable\nlog:\n{}",
        operator.logs()
    );

    // 3.241.0 runs for about a second, far less than stableAfter.
    release(plane, ns, "graphql-api", "3.241.0").await;
    release(plane, ns, "graphql-api", "3.242.1").await;

    push_alert_with_token(&operator, TOKEN, "GraphQLErrors", "firing").await;
    wait_phase(
        &rollbacks,
        "graphql-sev2",
        RollbackPhase::Progressing,
        &operator,
        WAIT,
    )
    .await;
    // The rollback helps: the alarm clears during the bake.
    push_alert_with_token(&operator, TOKEN, "GraphQLErrors", "resolved").await;
    let status = wait_phase(
        &rollbacks,
        "graphql-sev2",
        RollbackPhase::Succeeded,
        &operator,
        WAIT,
    )
    .await;

    assert_eq!(
        status.fired_by.as_ref().map(|f| f.alarm.as_str()),
        Some("graphql-errors")
    );
    let workload = &status.waves[0].workloads[0];
    assert_eq!(workload.result, WorkloadResult::Succeeded);
    assert_eq!(
        (workload.from_revision, workload.to_revision),
        (Some(3), Some(1))
    );
    assert_eq!(
        image(plane, ns, "graphql-api").await,
        format!("{IMAGE}:3.240.0")
    );

    let sets = replica_sets(plane, ns, "graphql-api").await;
    let revision_of = |wanted: &str| {
        sets.iter()
            .find(|(tag, _)| tag == wanted)
            .and_then(|(_, rs)| annotation(rs, "deployment.kubernetes.io/revision"))
            .unwrap_or_default()
    };
    assert_eq!(
        revision_of("3.240.0"),
        "4",
        "the restored revision is the newest"
    );
    assert_eq!(revision_of("3.241.0"), "2");
    assert_eq!(revision_of("3.242.1"), "3");
    let never_stable = sets
        .iter()
        .filter(|(_, rs)| annotation(rs, "weblab.dev/stable-since").is_some())
        .map(|(tag, _)| tag.as_str())
        .collect::<Vec<_>>();
    assert_eq!(never_stable, vec!["3.240.0"]);
    assert_eq!(
        workload.to_hash.as_deref(),
        sets.iter()
            .find(|(tag, _)| tag == "3.240.0")
            .and_then(|(_, rs)| rs.labels().get("pod-template-hash").map(String::as_str))
    );

    // kubectl agrees: revisions 2, 3, 4, and 4 runs 3.240.0.
    let history = kubectl(
        plane,
        &["rollout", "history", "-n", ns, "deployment/graphql-api"],
    )
    .await;
    assert!(history.status.success(), "{}", describe(&history));
    let text = String::from_utf8_lossy(&history.stdout);
    let revisions: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(revisions, vec!["2", "3", "4"], "{text}");
    let newest = kubectl(
        plane,
        &[
            "rollout",
            "history",
            "-n",
            ns,
            "deployment/graphql-api",
            "--revision=4",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&newest.stdout);
    assert!(text.contains(&format!("{IMAGE}:3.240.0")), "{text}");

    // Fires once: a new alarm does not roll back again until re-armed.
    push_alert_with_token(&operator, TOKEN, "GraphQLErrors", "firing").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rollback_status(&rollbacks, "graphql-sev2").await.phase,
        Some(RollbackPhase::Succeeded)
    );
    // Re-armed once the alarm is clear again (re-arming while it fires
    // would fire at once, which is what re-arming means).
    push_alert_with_token(&operator, TOKEN, "GraphQLErrors", "resolved").await;
    let alarms: Api<weblab_operator::api::Alarm> =
        Api::namespaced(plane.client().await.expect("client"), ns);
    let clear = eventually(WAIT, || async {
        alarms
            .get("graphql-errors")
            .await
            .ok()
            .and_then(|a| a.status?.state)
            == Some(weblab_operator::api::alarm::AlarmState::Ok)
    })
    .await;
    assert!(clear, "the alarm never cleared");
    request_action(plane, ns, "rollback/graphql-sev2", "rearm after INC-1").await;
    let status = wait_phase(
        &rollbacks,
        "graphql-sev2",
        RollbackPhase::Armed,
        &operator,
        WAIT,
    )
    .await;
    assert_eq!(status.last_action.as_deref(), Some("rearm after INC-1"));
    assert!(status.waves.is_empty() && status.fired_by.is_none());
}

/// Four regions as four namespaces, one after another, each after the
/// previous one's bake; the third never becomes ready, which stops the
/// rollback before the fourth is touched.
#[tokio::test]
async fn four_regions_roll_back_in_order_and_a_failing_region_stops_the_rest() {
    let plane = plane().await;
    let home = plane.namespace("rbk-waves").await.expect("namespace");
    let regions = ["prodna", "prodfe", "prodeu", "prodzaz"];
    let mut namespaces = Vec::new();
    for region in regions {
        namespaces.push(plane.namespace(region).await.expect("namespace"));
    }
    for (index, namespace) in namespaces.iter().enumerate() {
        // The third region's old release cannot be scheduled anywhere.
        let broken = index == 2;
        apply_yaml(
            plane,
            namespace.name(),
            &deployment("graphql-api", "v1", broken),
        )
        .await;
        if !broken {
            rolled_out(plane, namespace.name(), "graphql-api").await;
        }
        release(plane, namespace.name(), "graphql-api", "v2").await;
    }
    // Each region's namespace lets the home namespace's Rollbacks in.
    for namespace in &namespaces {
        authorize_rollbacks(plane, namespace.name(), &format!("{}/*", home.name())).await;
    }
    let operator = Operator::start(plane, &["--namespace", home.name()]).await;
    let waves: String = regions
        .iter()
        .zip(&namespaces)
        .map(|(region, ns)| format!("    - {{region: {region}, namespace: {}}}\n", ns.name()))
        .collect();
    apply_yaml(
        plane,
        home.name(),
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql-v1
spec:
  targets: [{{kind: Deployment, selector: {{matchLabels: {{app.kubernetes.io/part-of: graphql}}}}}}]
  waves:
{waves}  target: {{type: ImageTag, imageTag: v1}}
  verification: {{rolloutDeadline: 15s, bake: 2s}}
"
        ),
    )
    .await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), home.name());
    let status = wait_phase(&api, "graphql-v1", RollbackPhase::Failed, &operator, WAIT).await;

    let phases: Vec<WavePhase> = status.waves.iter().map(|w| w.phase).collect();
    assert_eq!(
        phases,
        vec![
            WavePhase::Succeeded,
            WavePhase::Succeeded,
            WavePhase::Failed,
            WavePhase::Pending
        ]
    );
    let start = |i: usize| status.waves[i].started_at.clone().expect("started").0;
    let end = |i: usize| status.waves[i].finished_at.clone().expect("finished").0;
    assert!(
        start(1) >= end(0),
        "prodFE started before prodNA was verified"
    );
    assert!(
        start(2) >= end(1),
        "prodEU started before prodFE was verified"
    );
    let failed = &status.waves[2];
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains("Deployment graphql-api did not roll out within 15s"),
        "{message}"
    );
    assert_eq!(failed.workloads[0].result, WorkloadResult::Failed);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(ready.message.contains("region prodeu"), "{}", ready.message);

    for (index, namespace) in namespaces.iter().enumerate() {
        let want = if index == 3 { "v2" } else { "v1" };
        assert_eq!(
            image(plane, namespace.name(), "graphql-api").await,
            format!("{IMAGE}:{want}"),
            "region {}",
            regions[index]
        );
    }
}

/// "Undo every change made in the last 24 hours", with the age of each
/// revision set through the `weblab.dev/deployed-at` annotation a pipeline
/// would write; a revision older than anything kept is refused before
/// anything changes.
#[tokio::test]
async fn undo_the_last_24_hours_restores_the_newest_older_revision() {
    let plane = plane().await;
    let namespace = plane.namespace("rbk-undo").await.expect("namespace");
    let ns = namespace.name();
    let operator = Operator::start(plane, &["--namespace", ns]).await;
    for tag in ["v1", "v2", "v3"] {
        release(plane, ns, "graphql-api", tag).await;
    }
    let now = jiff::Timestamp::now();
    let hours_ago = |h: i64| (now - jiff::SignedDuration::from_hours(h)).to_string();
    let api: Api<ReplicaSet> = Api::namespaced(plane.client().await.expect("client"), ns);
    for (tag, rs) in replica_sets(plane, ns, "graphql-api").await {
        let age = match tag.as_str() {
            "v1" => hours_ago(50),
            "v2" => hours_ago(30),
            _ => hours_ago(2),
        };
        let patch = json!({"metadata": {"annotations": {"weblab.dev/deployed-at": age}}});
        api.patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("annotates");
    }
    let rollback = |name: &str, since: &str| {
        format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: {name}
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: UndoSince, since: {since}}}
  verification: {{rolloutDeadline: 60s, bake: 1s}}
"
        )
    };
    let rollbacks: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), ns);

    apply_yaml(plane, ns, &rollback("undo-week", "168h")).await;
    let refused = wait_phase(
        &rollbacks,
        "undo-week",
        RollbackPhase::Refused,
        &operator,
        WAIT,
    )
    .await;
    let ready = refused
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "Refused");
    assert!(ready.message.contains("pruned"), "{}", ready.message);
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v3"));

    apply_yaml(plane, ns, &rollback("undo-day", "24h")).await;
    let status = wait_phase(
        &rollbacks,
        "undo-day",
        RollbackPhase::Succeeded,
        &operator,
        WAIT,
    )
    .await;
    let workload = &status.waves[0].workloads[0];
    assert_eq!(
        (workload.from_revision, workload.to_revision),
        (Some(3), Some(2))
    );
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v2"));
}

/// A revision pruned by `revisionHistoryLimit` cannot be restored: the
/// rollback is refused before anything changes, in any region.
#[tokio::test]
async fn a_pruned_revision_is_refused_before_anything_changes() {
    let plane = plane().await;
    let first = plane.namespace("rbk-pruned-a").await.expect("namespace");
    let second = plane.namespace("rbk-pruned-b").await.expect("namespace");
    // The first region keeps every revision, the second only the last one.
    for tag in ["v1", "v2", "v3"] {
        release(plane, first.name(), "graphql-api", tag).await;
        let short = deployment("graphql-api", tag, false)
            .replace("revisionHistoryLimit: 10", "revisionHistoryLimit: 1");
        apply_yaml(plane, second.name(), &short).await;
        rolled_out(plane, second.name(), "graphql-api").await;
    }
    let pruned = eventually(WAIT, || async {
        replica_sets(plane, second.name(), "graphql-api")
            .await
            .len()
            == 2
    })
    .await;
    assert!(
        pruned,
        "the controller-manager never pruned old ReplicaSets"
    );
    authorize_rollbacks(plane, second.name(), &format!("{}/to-v1", first.name())).await;
    let operator = Operator::start(plane, &["--namespace", first.name()]).await;
    apply_yaml(
        plane,
        first.name(),
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: to-v1
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves:
    - {{region: prodNA, namespace: {}}}
    - {{region: prodEU, namespace: {}}}
  target: {{type: Revision, revision: 1}}
",
            first.name(),
            second.name()
        ),
    )
    .await;
    let rollbacks: Api<Rollback> =
        Api::namespaced(plane.client().await.expect("client"), first.name());
    let status = wait_phase(&rollbacks, "to-v1", RollbackPhase::Refused, &operator, WAIT).await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Refused")
    );
    assert!(
        ready.message.contains("region prodEU") && ready.message.contains("revision 1 is not kept"),
        "{}",
        ready.message
    );
    assert!(status.waves.is_empty());
    for namespace in [&first, &second] {
        assert_eq!(
            image(plane, namespace.name(), "graphql-api").await,
            format!("{IMAGE}:v3"),
            "nothing changed in {}",
            namespace.name()
        );
    }
}

/// Two regions in two control planes: the second is reached through a
/// kubeconfig stored in a Secret.
#[tokio::test]
async fn a_region_in_another_cluster_is_reached_through_a_kubeconfig_secret() {
    let plane = plane().await;
    // Generous: a second control plane with workloads, on two shared cores.
    let options = testenv::Options::default()
        .workloads(true)
        .startup_timeout(Duration::from_secs(180));
    let remote = ControlPlane::start(options)
        .await
        .unwrap_or_else(|error| panic!("cannot start the second control plane: {error}"));
    let here = plane.namespace("rbk-here").await.expect("namespace");
    let there = remote.namespace("rbk-there").await.expect("namespace");
    release(plane, here.name(), "graphql-api", "v1").await;
    release(plane, here.name(), "graphql-api", "v2").await;
    release(&remote, there.name(), "graphql-api", "v1").await;
    release(&remote, there.name(), "graphql-api", "v2").await;

    let kubeconfig =
        std::fs::read_to_string(remote.kubeconfig_path()).expect("reads the kubeconfig");
    let secrets: Api<Secret> = Api::namespaced(plane.client().await.expect("client"), here.name());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cluster-eu".to_owned()),
            ..Default::default()
        },
        string_data: Some([("kubeconfig".to_owned(), kubeconfig)].into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("creates the Secret");

    let operator = Operator::start(plane, &["--namespace", here.name()]).await;
    apply_yaml(
        plane,
        here.name(),
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: two-clusters
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves:
    - {{region: prodNA, namespace: {}}}
    - region: prodEU
      namespace: {}
      kubeconfigSecretRef: {{name: cluster-eu, key: kubeconfig}}
  target: {{type: Revision, revision: 1}}
  verification: {{rolloutDeadline: 60s, bake: 1s}}
",
            here.name(),
            there.name()
        ),
    )
    .await;
    let rollbacks: Api<Rollback> =
        Api::namespaced(plane.client().await.expect("client"), here.name());
    let status = wait_phase(
        &rollbacks,
        "two-clusters",
        RollbackPhase::Succeeded,
        &operator,
        WAIT,
    )
    .await;
    assert_eq!(status.waves.len(), 2);
    assert_eq!(
        image(plane, here.name(), "graphql-api").await,
        format!("{IMAGE}:v1")
    );
    assert_eq!(
        image(&remote, there.name(), "graphql-api").await,
        format!("{IMAGE}:v1")
    );
    drop(there);
    remote.stop();
}

/// After a rollback, something (here kubectl, as a GitOps auto-sync would)
/// re-applies the bad release: the rollback reports it and leaves it be.
/// The merge-train pause it owns exists while it runs and is lifted after.
#[tokio::test]
async fn a_re_applied_bad_release_is_reported_not_fought() {
    let plane = plane().await;
    let namespace = plane.namespace("rbk-gitops").await.expect("namespace");
    let ns = namespace.name();
    let operator = Operator::start(plane, &["--namespace", ns]).await;
    release(plane, ns, "graphql-api", "v1").await;
    release(plane, ns, "graphql-api", "v2").await;
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: back-to-v1
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: Revision, revision: 1}}
  verification: {{rolloutDeadline: 60s, bake: 4s}}
  pauseMergeTrains: [{{train: graphql-main}}]
"
        ),
    )
    .await;
    let client = plane.client().await.expect("client");
    let pauses: Api<weblab_operator::api::MergeTrainPause> = Api::namespaced(client.clone(), ns);
    let paused = eventually(WAIT, || async {
        pauses
            .get_opt("back-to-v1-graphql-main")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    assert!(paused, "no owned pause\nlog:\n{}", operator.logs());
    let pause = pauses
        .get("back-to-v1-graphql-main")
        .await
        .expect("the pause exists");
    let owner = pause.owner_references().first().cloned().expect("owned");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Rollback", "back-to-v1", Some(true))
    );

    let rollbacks: Api<Rollback> = Api::namespaced(client.clone(), ns);
    wait_phase(
        &rollbacks,
        "back-to-v1",
        RollbackPhase::Succeeded,
        &operator,
        WAIT,
    )
    .await;
    let lifted = eventually(WAIT, || async {
        pauses
            .get_opt("back-to-v1-graphql-main")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    assert!(lifted, "the pause was not lifted");
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v1"));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let restored = deployments.get("graphql-api").await.expect("exists");
    let template = restored.spec.expect("spec").template;
    assert_eq!(
        template.spec.expect("pod spec").containers[0].env,
        None,
        "v2's env var survived the rollback"
    );
    assert!(
        !template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default()
            .contains_key("pod-template-hash")
    );

    release(plane, ns, "graphql-api", "v2").await;
    let reported = eventually(WAIT, || async {
        let status = rollback_status(&rollbacks, "back-to-v1").await;
        status
            .waves
            .first()
            .and_then(|w| w.workloads.first())
            .is_some_and(|w| w.result == WorkloadResult::Overwritten)
    })
    .await;
    let status = rollback_status(&rollbacks, "back-to-v1").await;
    assert!(
        reported,
        "never reported: {status:#?}\nlog:\n{}",
        operator.logs()
    );
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Overwritten")
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let warned = eventually(WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .map(|list| {
                list.items.iter().any(|e| {
                    e.reason.as_deref() == Some("Overwritten")
                        && e.type_.as_deref() == Some("Warning")
                })
            })
            .unwrap_or(false)
    })
    .await;
    assert!(warned, "no Warning event");
    // Not fought: the re-applied release stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v2"));
    assert_eq!(
        rollback_status(&rollbacks, "back-to-v1").await.phase,
        Some(RollbackPhase::Succeeded)
    );
}

/// A StatefulSet returns to an earlier ControllerRevision.
#[tokio::test]
async fn a_stateful_set_returns_to_an_earlier_controller_revision() {
    let plane = plane().await;
    let namespace = plane.namespace("rbk-sts").await.expect("namespace");
    let ns = namespace.name();
    let operator = Operator::start(plane, &["--namespace", ns]).await;
    let ledger = |tag: &str| {
        format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ledger
spec:
  replicas: 1
  serviceName: ledger
  selector:
    matchLabels: {{app: ledger}}
  template:
    metadata:
      labels: {{app: ledger}}
    spec:
      containers:
        - name: app
          image: {IMAGE}-ledger:{tag}
"
        )
    };
    let client = plane.client().await.expect("client");
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(client.clone(), ns);
    for tag in ["v1", "v2"] {
        apply_yaml(plane, ns, &ledger(tag)).await;
        let done = eventually(WAIT, || async {
            sets.get("ledger")
                .await
                .ok()
                .and_then(|s| s.status)
                .is_some_and(|s| {
                    s.ready_replicas == Some(1)
                        && s.updated_replicas == Some(1)
                        && s.current_revision.is_some()
                        && s.current_revision == s.update_revision
                })
        })
        .await;
        assert!(done, "ledger {tag} never rolled out");
    }
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: ledger-v1
spec:
  targets: [{{kind: StatefulSet, name: ledger}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: ImageTag, imageTag: v1}}
  verification: {{rolloutDeadline: 60s, bake: 1s}}
"
        ),
    )
    .await;
    let rollbacks: Api<Rollback> = Api::namespaced(client.clone(), ns);
    let status = wait_phase(
        &rollbacks,
        "ledger-v1",
        RollbackPhase::Succeeded,
        &operator,
        WAIT,
    )
    .await;
    assert_eq!(status.waves[0].workloads[0].to_revision, Some(1));
    let image = sets
        .get("ledger")
        .await
        .ok()
        .and_then(|s| s.spec?.template.spec?.containers.first()?.image.clone());
    assert_eq!(image, Some(format!("{IMAGE}-ledger:v1")));
}
