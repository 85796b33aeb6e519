//! Workloads on the control plane that runs them (kube-controller-manager,
//! kube-scheduler, kwok): the Deployments rollback tests release and roll
//! back.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use testenv::ControlPlane;
use tokio::sync::OnceCell;

use super::{apply_yaml, eventually, install_crds_once};

/// How long a workload may take to roll out on two shared cores.
pub const WAIT: Duration = Duration::from_secs(120);
/// The image every test Deployment runs, at a tag per release.
pub const IMAGE: &str = "registry.invalid/weblab/graphql";

/// This binary's control plane with workloads, and the CRDs installed.
pub async fn plane() -> &'static ControlPlane {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let plane = testenv::shared_with_workloads()
        .await
        .unwrap_or_else(|error| panic!("cannot start the control plane: {error}"));
    install_crds_once(plane, &CRDS).await;
    plane
}

/// A Deployment of two replicas running `tag`; `unschedulable` gives it a
/// nodeSelector no fake Node matches, so it never becomes available.
pub fn deployment(name: &str, tag: &str, unschedulable: bool) -> String {
    let selector = if unschedulable {
        "      nodeSelector:\n        weblab.dev/no-such-node: \"true\"\n"
    } else {
        ""
    };
    // Later releases add an environment variable: a rollback must remove it,
    // not merge the old template into the new one.
    let env = if tag == "v1" {
        String::new()
    } else {
        format!("          env: [{{name: RELEASE, value: \"{tag}\"}}]\n")
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/part-of: graphql
spec:
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{selector}      containers:
        - name: app
          image: {IMAGE}:{tag}
{env}"
    )
}

/// Waits until the Deployment runs its latest spec everywhere.
pub async fn rolled_out(plane: &ControlPlane, namespace: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(plane.client().await.expect("client"), namespace);
    let done = eventually(WAIT, || async {
        let Ok(d) = api.get(name).await else {
            return false;
        };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.unwrap_or_default();
        status.observed_generation >= d.metadata.generation
            && status.updated_replicas == Some(want)
            && status.available_replicas == Some(want)
            && status.replicas == Some(want)
    })
    .await;
    assert!(done, "deployment {namespace}/{name} never rolled out");
}

/// Applies `tag` and waits for its rollout.
pub async fn release(plane: &ControlPlane, namespace: &str, name: &str, tag: &str) {
    apply_yaml(plane, namespace, &deployment(name, tag, false)).await;
    rolled_out(plane, namespace, name).await;
}

/// The image the Deployment's pod template runs now.
pub async fn image(plane: &ControlPlane, namespace: &str, name: &str) -> String {
    let api: Api<Deployment> = Api::namespaced(plane.client().await.expect("client"), namespace);
    api.get(name)
        .await
        .ok()
        .and_then(|d| d.spec?.template.spec?.containers.first()?.image.clone())
        .unwrap_or_default()
}

/// Lets Rollbacks in `namespace` act in `target` (this cluster), as the
/// target namespace's owner does: the `weblab.dev/authorized-rollbacks`
/// annotation, set to `value` with real kubectl.
pub async fn authorize_rollbacks(plane: &ControlPlane, target: &str, value: &str) {
    let output = super::kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "namespace",
            target,
            &format!("weblab.dev/authorized-rollbacks={value}"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", super::describe(&output));
}
