//! With kube-controller-manager, kube-scheduler and kwok, workloads really run:
//! Deployments become available and roll out, Jobs complete.

mod common;

use std::time::Duration;

use common::{TestResult, eventually};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(90);

fn template(app: &str, image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                // Never pulled: kwok only pretends to run containers.
                image: Some(image.to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

/// Waits until the Deployment's current generation is fully rolled out:
/// every replica updated and available, no old replicas left.
async fn rolled_out(deployments: &Api<Deployment>, name: &str) -> TestResult {
    eventually(
        &format!("deployment {name} rolled out"),
        ROLLOUT_TIMEOUT,
        || async {
            let deployment = deployments.get(name).await?;
            let generation = deployment.metadata.generation.unwrap_or_default();
            let want = deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1);
            let status = deployment.status.unwrap_or_default();
            let done = status.observed_generation.unwrap_or_default() >= generation
                && status.updated_replicas == Some(want)
                && status.available_replicas == Some(want)
                && status.replicas == Some(want);
            Ok(if done {
                Ok(())
            } else {
                Err(format!("generation {generation}, status {status:?}"))
            })
        },
    )
    .await
}

#[tokio::test]
async fn fake_nodes_are_ready() -> TestResult {
    let control_plane = testenv::shared_with_workloads().await?;
    assert!(control_plane.has_workloads());
    let nodes = Api::<Node>::all(control_plane.client().await?)
        .list(&ListParams::default().labels("type=kwok"))
        .await?;
    assert_eq!(nodes.items.len(), 2);
    for node in &nodes.items {
        let conditions = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "{} not Ready: {conditions:?}",
            node.name_any()
        );
    }
    Ok(())
}

#[tokio::test]
async fn deployment_becomes_available_and_rolls_out() -> TestResult {
    let control_plane = testenv::shared_with_workloads().await?;
    let namespace = control_plane.namespace("rollout").await?;
    let client = control_plane.client().await?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace.name());

    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..LabelSelector::default()
            },
            template: template("web", "registry.invalid/weblab/web:v1"),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    rolled_out(&deployments, "web").await?;

    let pods = Api::<Pod>::namespaced(client.clone(), namespace.name());
    let running = pods.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(running.items.len(), 2);
    for pod in &running.items {
        let spec = pod.spec.as_ref().ok_or("pod without spec")?;
        let node = spec.node_name.as_deref().unwrap_or_default();
        assert!(node.starts_with("kwok-node-"), "scheduled onto {node:?}");
        let status = pod.status.as_ref().ok_or("pod without status")?;
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status.pod_ip.is_some(),
            "kwok gave {} no IP",
            pod.name_any()
        );
    }

    let patch = serde_json::json!({
        "spec": { "template": { "spec": { "containers": [
            { "name": "app", "image": "registry.invalid/weblab/web:v2" }
        ] } } }
    });
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    rolled_out(&deployments, "web").await?;

    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace.name())
        .list(&ListParams::default().labels("app=web"))
        .await?;
    assert_eq!(replica_sets.items.len(), 2, "one ReplicaSet per revision");
    let image_of = |rs: &ReplicaSet| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    for rs in &replica_sets.items {
        let replicas = rs.status.as_ref().map(|s| s.replicas).unwrap_or_default();
        match image_of(rs).as_str() {
            "registry.invalid/weblab/web:v2" => assert_eq!(replicas, 2, "new ReplicaSet"),
            "registry.invalid/weblab/web:v1" => assert_eq!(replicas, 0, "old ReplicaSet"),
            other => panic!("unexpected image {other}"),
        }
    }

    // Old pods are really gone (kwok's pod-delete stage), not left Terminating.
    let after = pods.list(&ListParams::default().labels("app=web")).await?;
    let images: Vec<String> = after
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    assert_eq!(images, vec!["registry.invalid/weblab/web:v2"; 2]);
    Ok(())
}

#[tokio::test]
async fn job_runs_to_completion() -> TestResult {
    let control_plane = testenv::shared_with_workloads().await?;
    let namespace = control_plane.namespace("job").await?;
    let jobs = Api::<Job>::namespaced(control_plane.client().await?, namespace.name());
    let mut pod_template = template("once", "registry.invalid/weblab/once:v1");
    if let Some(spec) = pod_template.spec.as_mut() {
        spec.restart_policy = Some("Never".to_owned());
    }
    let job = Job {
        metadata: ObjectMeta {
            name: Some("once".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            template: pod_template,
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    jobs.create(&PostParams::default(), &job).await?;
    eventually("job succeeded", ROLLOUT_TIMEOUT, || async {
        let status = jobs.get("once").await?.status.unwrap_or_default();
        Ok(if status.succeeded == Some(1) {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        })
    })
    .await?;
    Ok(())
}
