//! GitOps-aware rollbacks on a control plane where workloads really run,
//! with the real Argo CD `Application` and Flux `Kustomization` and
//! `HelmRelease` CRDs (pinned in tools/crds.env, fetched from their Go modules
//! by `hack/tools.sh crds`) installed in the API server. No Argo CD or Flux
//! controller runs: what is checked is what the operator writes on their
//! objects, read back through `metadata.managedFields`.
//!
//! The operator runs as the Helm chart's ServiceAccount: with
//! `rbac.gitops.enabled=true` it suspends and gives back automatic sync;
//! with the chart's defaults it is refused, and no workload moves.

mod support;

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};
use support::{
    ChartIdentity, Operator, apply_yaml, describe, eventually, kubectl, push_alert_with_token,
    request_action,
    workloads::{IMAGE, WAIT, authorize_rollbacks, image, plane, release},
};
use testenv::ControlPlane;
use tokio::sync::OnceCell;
use weblab_operator::{
    api::{
        Rollback,
        rollback::{GitOpsKind, GitOpsState, RollbackPhase, RollbackStatus},
    },
    controllers::rollback::gitops::{FINALIZER, MANAGER},
};

/// The pinned GitOps CRDs, installed once on this binary's control plane.
async fn gitops_plane() -> &'static ControlPlane {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let plane = plane().await;
    CRDS.get_or_init(|| async {
        let output = std::process::Command::new("bash")
            .arg(support::repo_root().join("hack/tools.sh"))
            .arg("crds")
            .output()
            .expect("hack/tools.sh runs");
        assert!(
            output.status.success(),
            "hack/tools.sh crds: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        plane
            .install_crds(&dir)
            .await
            .unwrap_or_else(|error| panic!("cannot install the CRDs of {dir}: {error}"));
    })
    .await;
    plane
}

/// The chart's ServiceAccount of a release named `release`, rendered by the
/// real `helm template` with `settings` and applied, as a kubeconfig.
async fn chart_identity_with(plane: &ControlPlane, release: &str, settings: &str) -> ChartIdentity {
    let home = plane.namespace("gitops-home").await.expect("namespace");
    let chart = support::repo_root().join("charts/weblab-operator");
    let rendered = support::helm(
        plane,
        &[
            "template",
            release,
            &chart.to_string_lossy(),
            "--namespace",
            home.name(),
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            "--set",
            settings,
        ],
    )
    .await;
    assert!(rendered.status.success(), "{}", describe(&rendered));
    let path = plane.dir().join(format!("{}.yaml", home.name()));
    std::fs::write(&path, &rendered.stdout).expect("write");
    let applied = kubectl(plane, &["apply", "-f", &path.to_string_lossy()]).await;
    assert!(applied.status.success(), "{}", describe(&applied));
    let account = format!("{release}-weblab-operator");
    let token = kubectl(
        plane,
        &[
            "create",
            "token",
            &account,
            "-n",
            home.name(),
            "--duration=2h",
        ],
    )
    .await;
    assert!(token.status.success(), "{}", describe(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let kubeconfig = support::token_kubeconfig(plane, &format!("{release}-identity"), &token);
    let namespace = home.name().to_owned();
    // The namespace outlives the test's handle: the identity's Lease is there.
    std::mem::forget(home);
    ChartIdentity {
        kubeconfig,
        user: format!("system:serviceaccount:{namespace}:{account}"),
        namespace,
    }
}

fn resource(kind: GitOpsKind) -> ApiResource {
    let (group, version, plural) = match kind {
        GitOpsKind::Application => ("argoproj.io", "v1alpha1", "applications"),
        GitOpsKind::Kustomization => ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
        GitOpsKind::HelmRelease => ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &format!("{kind:?}")),
        plural,
    )
}

/// The object as JSON, managed fields included.
async fn object(plane: &ControlPlane, kind: GitOpsKind, namespace: &str, name: &str) -> Value {
    let client = plane.client().await.expect("client");
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource(kind));
    let object = api.get(name).await.expect("the GitOps object exists");
    serde_json::to_value(object).expect("JSON")
}

/// The fields the operator's manager holds on the object (`None`: no entry).
fn held_by_operator(object: &Value) -> Option<Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|entry| entry["manager"] == MANAGER)
        .map(|entry| {
            assert_eq!(entry["operation"], "Apply", "{entry}");
            entry["fieldsV1"].clone()
        })
}

fn application(namespace: &str, target_namespace: &str) -> String {
    format!(
        "apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: graphql-api
  namespace: {namespace}
spec:
  project: default
  destination:
    server: https://kubernetes.default.svc
    namespace: {target_namespace}
  source:
    repoURL: https://git.example/graphql/deploy.git
    path: overlays/prod
    targetRevision: main
  syncPolicy:
    automated:
      prune: true
      selfHeal: true
"
    )
}

const KUSTOMIZATION: &str = "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: graphql-api
spec:
  interval: 5m
  path: ./deploy/prod
  prune: true
  suspend: false
  sourceRef:
    kind: GitRepository
    name: graphql
";

const HELM_RELEASE: &str = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: graphql-api
spec:
  interval: 10m
  chart:
    spec:
      chart: graphql-api
      version: 3.x
      sourceRef:
        kind: HelmRepository
        name: charts
";

async fn rollback_status(api: &Api<Rollback>, name: &str) -> RollbackStatus {
    api.get(name)
        .await
        .ok()
        .and_then(|r| r.status)
        .unwrap_or_default()
}

async fn wait_for(
    api: &Api<Rollback>,
    name: &str,
    operator: &Operator,
    what: &str,
    check: impl Fn(&RollbackStatus) -> bool,
) -> RollbackStatus {
    let reached = eventually(WAIT, || async { check(&rollback_status(api, name).await) }).await;
    let status = rollback_status(api, name).await;
    assert!(
        reached,
        "rollback {name} never {what}; status {status:#?}\nlog:\n{}",
        operator.logs()
    );
    status
}

fn condition(status: &RollbackStatus, type_: &str) -> (String, String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| panic!("no condition {type_} in {status:#?}"))
}

/// Argo CD's Application in another (authorizing) namespace, Flux's
/// Kustomization (with an explicit `suspend: false`) and HelmRelease in the
/// rollback's own: each has automatic sync turned off before the workload
/// moves, by the operator's manager holding exactly that field, and given
/// back on request, after which the manager holds nothing and the owner
/// re-applies its manifest without a conflict.
#[tokio::test]
async fn argo_cd_and_flux_auto_sync_is_suspended_before_the_rollback_and_given_back_on_request() {
    let plane = gitops_plane().await;
    let team = plane.namespace("gitops-team").await.expect("namespace");
    let argocd = plane.namespace("gitops-argocd").await.expect("namespace");
    let (ns, argo_ns) = (team.name(), argocd.name());
    let identity = chart_identity_with(
        plane,
        "gitops-on",
        &format!("watchNamespaces={{{ns}}},rbac.gitops.enabled=true,rbac.gitops.namespaces={{{ns},{argo_ns}}}"),
    )
    .await;
    // Least privilege: get and patch in the listed namespaces, nothing else.
    let other = plane.namespace("gitops-other").await.expect("namespace");
    for (verb, resource, namespace, want) in [
        ("patch", "applications.argoproj.io", argo_ns, true),
        (
            "get",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            ns,
            true,
        ),
        ("patch", "helmreleases.helm.toolkit.fluxcd.io", ns, true),
        ("list", "applications.argoproj.io", argo_ns, false),
        (
            "watch",
            "kustomizations.kustomize.toolkit.fluxcd.io",
            ns,
            false,
        ),
        ("delete", "applications.argoproj.io", argo_ns, false),
        ("create", "helmreleases.helm.toolkit.fluxcd.io", ns, false),
        ("update", "applications.argoproj.io", argo_ns, false),
        ("patch", "applications.argoproj.io", other.name(), false),
        ("patch", "rollbacks.weblab.dev", ns, true),
        ("update", "rollbacks.weblab.dev", ns, false),
    ] {
        let user = format!("--as={}", identity.user);
        let output = kubectl(
            plane,
            &["auth", "can-i", verb, resource, "-n", namespace, &user],
        )
        .await;
        let yes = String::from_utf8_lossy(&output.stdout).trim() == "yes";
        assert_eq!(yes, want, "{verb} {resource} in {namespace}");
    }
    let operator = Operator::start_as(plane, &identity, &["--namespace", ns]).await;
    authorize_rollbacks(plane, argo_ns, &format!("{ns}/graphql-gitops")).await;
    apply_yaml(plane, argo_ns, &application(argo_ns, ns)).await;
    apply_yaml(plane, ns, KUSTOMIZATION).await;
    apply_yaml(plane, ns, HELM_RELEASE).await;
    release(plane, ns, "graphql-api", "v1").await;
    release(plane, ns, "graphql-api", "v2").await;

    let started = Instant::now();
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql-gitops
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: ImageTag, imageTag: v1}}
  verification: {{rolloutDeadline: 90s, bake: 2s}}
  gitops:
    suspendAutoSync:
      - {{kind: Application, name: graphql-api, namespace: {argo_ns}}}
      - {{kind: Kustomization, name: graphql-api}}
      - {{kind: HelmRelease, name: graphql-api}}
"
        ),
    )
    .await;
    let client = plane.client().await.expect("client");
    let api: Api<Rollback> = Api::namespaced(client.clone(), ns);
    let status = wait_for(&api, "graphql-gitops", &operator, "succeeded", |s| {
        s.phase == Some(RollbackPhase::Succeeded)
    })
    .await;
    println!(
        "figure: rollback with 3 GitOps suspensions succeeded {:.1}s after it was applied",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v1"));
    if let (Some(first), Some(wave)) = (
        status
            .gitops
            .iter()
            .filter_map(|e| e.suspended_at.as_ref())
            .min_by_key(|t| t.0),
        status.waves[0].started_at.as_ref(),
    ) {
        println!(
            "figure: first wave started {} ms after the suspensions were recorded",
            wave.0.duration_since(first.0).as_millis()
        );
    }

    // What it changed, and what was there before.
    assert_eq!(status.gitops.len(), 3, "{status:#?}");
    for entry in &status.gitops {
        assert_eq!(entry.state, GitOpsState::Suspended, "{entry:?}");
        let wave_started = status.waves[0].started_at.as_ref().expect("wave started");
        let suspended = entry.suspended_at.as_ref().expect("suspendedAt");
        assert!(
            suspended.0 < wave_started.0,
            "{entry:?} after the wave started"
        );
        let prior = match entry.kind {
            GitOpsKind::Kustomization => Some("false"),
            GitOpsKind::Application | GitOpsKind::HelmRelease => None,
        };
        assert_eq!(entry.prior_value.as_deref(), prior, "{entry:?}");
    }
    let (suspended, _, message) = condition(&status, "AutoSyncSuspended");
    assert_eq!(suspended, "True");
    for name in [
        format!("Application {argo_ns}/graphql-api"),
        format!("Kustomization {ns}/graphql-api"),
        format!("HelmRelease {ns}/graphql-api"),
    ] {
        assert!(message.contains(&name), "{name} not in {message}");
    }
    assert_eq!(condition(&status, "GitOpsReady").0, "True");
    let events = kubectl(
        plane,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "reason=AutoSyncSuspended,type=Normal",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    )
    .await;
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    assert!(
        events.contains(&format!("Application {argo_ns}/graphql-api")),
        "no AutoSyncSuspended event naming the Application: {events:?}"
    );
    let rollback = api.get("graphql-gitops").await.expect("rollback");
    assert!(
        rollback
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_owned()),
        "no finalizer while auto-sync is held"
    );

    // The operator's manager holds the auto-sync field, nothing else; the
    // rest of each spec is as its owner wrote it.
    let app = object(plane, GitOpsKind::Application, argo_ns, "graphql-api").await;
    assert_eq!(
        held_by_operator(&app),
        Some(json!({"f:spec": {"f:syncPolicy": {"f:automated": {"f:enabled": {}}}}}))
    );
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"],
        json!({"enabled": false, "prune": true, "selfHeal": true})
    );
    for kind in [GitOpsKind::Kustomization, GitOpsKind::HelmRelease] {
        let flux = object(plane, kind, ns, "graphql-api").await;
        assert_eq!(
            held_by_operator(&flux),
            Some(json!({"f:spec": {"f:suspend": {}}})),
            "{kind:?}"
        );
        assert_eq!(flux["spec"]["suspend"], json!(true), "{kind:?}");
        assert!(flux["spec"]["interval"].is_string(), "{kind:?}");
    }

    // A person gives it back.
    request_action(
        plane,
        ns,
        "rollback/graphql-gitops",
        "restore-gitops fix merged, INC-4711",
    )
    .await;
    let status = wait_for(&api, "graphql-gitops", &operator, "restored", |s| {
        !s.gitops.is_empty() && s.gitops.iter().all(|e| e.state == GitOpsState::Restored)
    })
    .await;
    assert_eq!(condition(&status, "AutoSyncSuspended").0, "False");
    assert_eq!(
        status.last_action.as_deref(),
        Some("restore-gitops fix merged, INC-4711"),
        "handled once, and recorded"
    );
    for entry in &status.gitops {
        assert!(entry.restored_at.is_some(), "{entry:?}");
        let message = entry.message.clone().unwrap_or_default();
        assert!(message.contains("INC-4711"), "{message}");
    }
    let app = object(plane, GitOpsKind::Application, argo_ns, "graphql-api").await;
    assert_eq!(held_by_operator(&app), None, "{app:#}");
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"],
        json!({"prune": true, "selfHeal": true}),
        "the unset field is unset again"
    );
    let helm = object(plane, GitOpsKind::HelmRelease, ns, "graphql-api").await;
    assert_eq!(held_by_operator(&helm), None);
    assert!(helm["spec"].get("suspend").is_none(), "{helm:#}");
    // The explicit `suspend: false` went with the field: unset is what Flux
    // reads as false, and the owner's next apply writes it again, with no
    // conflict, since nobody else holds the field.
    let kustomization = object(plane, GitOpsKind::Kustomization, ns, "graphql-api").await;
    assert_eq!(held_by_operator(&kustomization), None);
    assert_ne!(kustomization["spec"]["suspend"], json!(true));
    let path = plane.dir().join(format!("{ns}-kustomization.yaml"));
    std::fs::write(&path, KUSTOMIZATION).expect("write");
    let reapplied = kubectl(
        plane,
        &[
            "apply",
            "--server-side",
            "--field-manager=flux-owner",
            "-n",
            ns,
            "-f",
            &path.to_string_lossy(),
        ],
    )
    .await;
    assert!(reapplied.status.success(), "{}", describe(&reapplied));
    let kustomization = object(plane, GitOpsKind::Kustomization, ns, "graphql-api").await;
    assert_eq!(kustomization["spec"]["suspend"], json!(false));
    assert_eq!(held_by_operator(&kustomization), None);
    // The workload stays where the rollback put it.
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v1"));
    drop(operator);
}

/// Without `rbac.gitops.enabled` (the chart's default) the operator may not
/// touch Argo CD's objects: the rollback is refused before anything moves, and says why.
#[tokio::test]
async fn without_the_charts_gitops_rights_the_rollback_is_refused_and_no_workload_moves() {
    let plane = gitops_plane().await;
    let team = plane.namespace("gitops-refused").await.expect("namespace");
    let ns = team.name();
    // Rollback rights in the namespace, no rbac.gitops: the chart's default.
    let identity =
        chart_identity_with(plane, "gitops-off", &format!("watchNamespaces={{{ns}}}")).await;
    let can = kubectl(
        plane,
        &[
            "auth",
            "can-i",
            "patch",
            "applications.argoproj.io",
            "-n",
            ns,
            &format!("--as={}", identity.user),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");
    let operator = Operator::start_as(plane, &identity, &["--namespace", ns]).await;
    apply_yaml(plane, ns, &application(ns, ns)).await;
    release(plane, ns, "graphql-api", "v1").await;
    release(plane, ns, "graphql-api", "v2").await;
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql-gitops
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: ImageTag, imageTag: v1}}
  gitops:
    suspendAutoSync: [{{kind: Application, name: graphql-api}}]
"
        ),
    )
    .await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), ns);
    let status = wait_for(&api, "graphql-gitops", &operator, "was refused", |s| {
        s.phase == Some(RollbackPhase::Refused)
    })
    .await;
    let (ready, reason, message) = condition(&status, "GitOpsReady");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "GitOpsForbidden")
    );
    assert!(message.contains("rbac.gitops.enabled"), "{message}");
    assert_eq!(condition(&status, "Ready").1, "GitOpsForbidden");
    assert!(
        status.waves.is_empty() && status.gitops.is_empty(),
        "{status:#?}"
    );
    let events = kubectl(
        plane,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "reason=GitOpsForbidden,type=Warning",
            "-o",
            "name",
        ],
    )
    .await;
    assert!(
        !events.stdout.is_empty(),
        "no Warning event: {}",
        describe(&events)
    );
    // Nothing moved, nothing was written on the Application.
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v2"));
    let app = object(plane, GitOpsKind::Application, ns, "graphql-api").await;
    assert_eq!(held_by_operator(&app), None);
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"],
        json!({"prune": true, "selfHeal": true})
    );
}

/// The example, applied as written (its namespaces replaced by the test's):
/// Argo CD's automatic sync is held while the rollback runs; deleting the
/// rollback during its bake gives it back exactly once, and the rollback
/// goes away.
#[tokio::test]
async fn deleting_the_example_rollback_gives_auto_sync_back_once() {
    let plane = gitops_plane().await;
    let team = plane.namespace("gitops-example").await.expect("namespace");
    let argocd = plane
        .namespace("gitops-example-argocd")
        .await
        .expect("namespace");
    let (ns, argo_ns) = (team.name(), argocd.name());
    let identity = chart_identity_with(
        plane,
        "gitops-example",
        &format!(
            "watchNamespaces={{{ns}}},rbac.gitops.enabled=true,rbac.gitops.namespaces={{{argo_ns}}}"
        ),
    )
    .await;
    let operator = Operator::start_as(plane, &identity, &["--namespace", ns]).await;
    authorize_rollbacks(plane, argo_ns, &format!("{ns}/graphql-gitops")).await;
    apply_yaml(plane, argo_ns, &application(argo_ns, ns)).await;
    release(plane, ns, "graphql-api", "3.240.0").await;
    release(plane, ns, "graphql-api", "3.242.1").await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), ns);

    // A rollback the Application's namespace does not name is refused,
    // though the operator's RBAC would allow it: the namespace's consent.
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: not-named
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {ns}}}]
  target: {{type: ImageTag, imageTag: 3.240.0}}
  gitops:
    suspendAutoSync: [{{kind: Application, name: graphql-api, namespace: {argo_ns}}}]
"
        ),
    )
    .await;
    let status = wait_for(&api, "not-named", &operator, "was refused", |s| {
        s.phase == Some(RollbackPhase::Refused)
    })
    .await;
    let (_, reason, message) = condition(&status, "GitOpsReady");
    assert_eq!(reason, "GitOpsForbidden");
    assert!(
        message.contains("weblab.dev/authorized-rollbacks"),
        "{message}"
    );
    assert_eq!(
        image(plane, ns, "graphql-api").await,
        format!("{IMAGE}:3.242.1")
    );
    let app = object(plane, GitOpsKind::Application, argo_ns, "graphql-api").await;
    assert_eq!(held_by_operator(&app), None, "{app:#}");

    let example =
        std::fs::read_to_string(support::repo_root().join("examples/rollback-gitops.yaml"))
            .expect("the example");
    let example = example
        .replace("namespace: graphql\n", &format!("namespace: {ns}\n"))
        .replace("namespace: argocd\n", &format!("namespace: {argo_ns}\n"));
    apply_yaml(plane, ns, &example).await;
    // Deleted while it bakes (the example's bake is a minute).
    wait_for(&api, "graphql-gitops", &operator, "rolled out", |s| {
        s.waves
            .first()
            .is_some_and(|w| w.phase == weblab_operator::api::rollback::WavePhase::Baking)
    })
    .await;
    assert_eq!(
        image(plane, ns, "graphql-api").await,
        format!("{IMAGE}:3.240.0")
    );
    let app = object(plane, GitOpsKind::Application, argo_ns, "graphql-api").await;
    assert!(held_by_operator(&app).is_some(), "{app:#}");

    api.delete("graphql-gitops", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = eventually(Duration::from_secs(30), || async {
        api.get_opt("graphql-gitops").await.ok().flatten().is_none()
    })
    .await;
    assert!(
        gone,
        "the rollback was never released:\n{}",
        operator.logs()
    );
    let app = object(plane, GitOpsKind::Application, argo_ns, "graphql-api").await;
    assert_eq!(held_by_operator(&app), None, "{app:#}");
    assert_eq!(
        app["spec"]["syncPolicy"]["automated"],
        json!({"prune": true, "selfHeal": true})
    );
    let restored = operator
        .logs()
        .lines()
        .filter(|line| line.contains("AutoSyncRestored") && line.contains("being deleted"))
        .count();
    assert_eq!(restored, 1, "log:\n{}", operator.logs());
}

const WEBHOOK_TOKEN: &str = "alertmanager-to-weblab-gitops";

/// Armed in advance for a service Flux deploys with a HelmRelease: nothing
/// is suspended while it waits; the alarm fires through Alertmanager's
/// webhook, the HelmRelease is suspended before the workload moves, and
/// re-arming gives it back, the operator's manager holding nothing after.
#[tokio::test]
async fn an_armed_rollback_suspends_flux_when_it_fires_and_re_arming_gives_it_back() {
    let plane = gitops_plane().await;
    let team = plane.namespace("gitops-armed").await.expect("namespace");
    let ns = team.name();
    let identity = chart_identity_with(
        plane,
        "gitops-armed",
        &format!("watchNamespaces={{{ns}}},rbac.gitops.enabled=true"),
    )
    .await;
    apply_yaml(
        plane,
        ns,
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: weblab-webhook
stringData:
  token: {WEBHOOK_TOKEN}
---
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: graphql-errors
spec:
  severity: Sev2
  alertmanager:
    matchers:
      - name: alertname
        value: GraphQLErrors
"
        ),
    )
    .await;
    let secret = format!("{ns}/weblab-webhook");
    let operator = Operator::start_as(
        plane,
        &identity,
        &["--namespace", ns, "--webhook-token-secret", &secret],
    )
    .await;
    apply_yaml(plane, ns, HELM_RELEASE).await;
    release(plane, ns, "graphql-api", "v1").await;
    release(plane, ns, "graphql-api", "v2").await;
    apply_yaml(
        plane,
        ns,
        "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql-armed
spec:
  targets: [{kind: Deployment, name: graphql-api}]
  waves: [{region: prodNA, namespace: NAMESPACE}]
  target: {type: ImageTag, imageTag: v1}
  trigger: {type: Alarm, alarms: {names: [graphql-errors]}, severities: [Sev2]}
  verification: {rolloutDeadline: 90s, bake: 2s}
  gitops:
    suspendAutoSync: [{kind: HelmRelease, name: graphql-api}]
"
        .replace("NAMESPACE", ns)
        .as_str(),
    )
    .await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), ns);
    let armed = wait_for(
        &api,
        "graphql-armed",
        &operator,
        "was armed and checked",
        |s| {
            s.phase == Some(RollbackPhase::Armed)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "GitOpsReady" && c.status == "True")
        },
    )
    .await;
    assert!(armed.gitops.is_empty(), "{armed:#?}");
    assert_eq!(condition(&armed, "AutoSyncSuspended").0, "False");
    let helm = object(plane, GitOpsKind::HelmRelease, ns, "graphql-api").await;
    assert_eq!(
        held_by_operator(&helm),
        None,
        "armed, nothing held: {helm:#}"
    );

    let fired_at = Instant::now();
    push_alert_with_token(&operator, WEBHOOK_TOKEN, "GraphQLErrors", "firing").await;
    let done = wait_for(&api, "graphql-armed", &operator, "succeeded", |s| {
        s.phase == Some(RollbackPhase::Succeeded)
    })
    .await;
    println!(
        "figure: armed rollback with a HelmRelease suspension succeeded {:.1}s after the alert",
        fired_at.elapsed().as_secs_f64()
    );
    assert_eq!(image(plane, ns, "graphql-api").await, format!("{IMAGE}:v1"));
    let entry = done.gitops.first().expect("the HelmRelease is recorded");
    assert_eq!(entry.state, GitOpsState::Suspended);
    let helm = object(plane, GitOpsKind::HelmRelease, ns, "graphql-api").await;
    assert_eq!(
        held_by_operator(&helm),
        Some(json!({"f:spec": {"f:suspend": {}}}))
    );
    assert_eq!(helm["spec"]["suspend"], json!(true));

    push_alert_with_token(&operator, WEBHOOK_TOKEN, "GraphQLErrors", "resolved").await;
    request_action(plane, ns, "rollback/graphql-armed", "rearm after INC-12").await;
    let rearmed = wait_for(&api, "graphql-armed", &operator, "was re-armed", |s| {
        s.phase == Some(RollbackPhase::Armed)
            && s.gitops.iter().all(|e| e.state == GitOpsState::Restored)
    })
    .await;
    assert_eq!(rearmed.gitops.len(), 1, "{rearmed:#?}");
    assert_eq!(condition(&rearmed, "AutoSyncSuspended").0, "False");
    let helm = object(plane, GitOpsKind::HelmRelease, ns, "graphql-api").await;
    assert_eq!(held_by_operator(&helm), None, "{helm:#}");
    assert!(helm["spec"].get("suspend").is_none(), "{helm:#}");
    let rollback = api.get("graphql-armed").await.expect("rollback");
    assert!(
        !rollback
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_owned()),
        "the finalizer stays after everything was given back"
    );
}
