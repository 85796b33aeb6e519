//! Reading targeted workloads and their revisions into [`plan`] snapshots,
//! restoring a revision (the effect of `kubectl rollout undo`), and the
//! annotations that record stable revisions on ReplicaSets and
//! ControllerRevisions, where they survive restarts and `kubectl` shows them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet},
    core::v1::PodTemplateSpec,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams},
    core::{Selector, SelectorExt},
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::rollback::{WorkloadKind, WorkloadTarget},
};

use super::{
    MANAGER,
    plan::{Mark, RegionView, Revision, Rollout, Workload},
};

/// On a ReplicaSet or ControllerRevision: when the operator confirmed the
/// revision stable (RFC 3339). People may set it by hand, too.
pub const STABLE_SINCE: &str = "weblab.dev/stable-since";
/// On a ReplicaSet or ControllerRevision: when the revision was deployed
/// (RFC 3339), e.g. set by a pipeline; the age `UndoSince` uses. Without
/// it, the object's creation time counts.
pub const DEPLOYED_AT: &str = "weblab.dev/deployed-at";
/// On a ControllerRevision: when the operator first saw it rolled out.
pub const ROLLED_OUT_AT: &str = "weblab.dev/rolled-out-at";
const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
const TEMPLATE_HASH: &str = "pod-template-hash";

/// Reads the targeted workloads of one namespace: a list of each kind
/// targeted and of its revisions, whatever the number of workloads.
pub async fn read_region(
    client: &Client,
    namespace: &str,
    targets: &[WorkloadTarget],
) -> RegionView {
    match read(client, namespace, targets).await {
        Ok(view) => view,
        Err(error) => RegionView::Unreachable(error.to_string()),
    }
}

async fn read(client: &Client, namespace: &str, targets: &[WorkloadTarget]) -> Result<RegionView> {
    let mut workloads = Vec::new();
    let mut not_found = Vec::new();
    let wants = |kind| targets.iter().any(|t| t.kind == kind);
    if wants(WorkloadKind::Deployment) {
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(Error::Kube)?
            .items;
        let chosen = select(
            WorkloadKind::Deployment,
            targets,
            &deployments,
            namespace,
            &mut not_found,
        );
        if !chosen.is_empty() {
            let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(Error::Kube)?
                .items;
            workloads.extend(chosen.into_iter().map(|d| deployment(d, &replica_sets)));
        }
    }
    if wants(WorkloadKind::StatefulSet) {
        let sets = Api::<StatefulSet>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .map_err(Error::Kube)?
            .items;
        let chosen = select(
            WorkloadKind::StatefulSet,
            targets,
            &sets,
            namespace,
            &mut not_found,
        );
        if !chosen.is_empty() {
            let revisions = Api::<ControllerRevision>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(Error::Kube)?
                .items;
            workloads.extend(chosen.into_iter().map(|s| stateful_set(s, &revisions)));
        }
    }
    Ok(RegionView::Read {
        workloads,
        not_found,
    })
}

/// The objects of `kind` the targets name or select, each once, by name;
/// a missing name or a selector that does not parse goes to `not_found`,
/// which refuses the rollback.
fn select<'a, K: ResourceExt>(
    kind: WorkloadKind,
    targets: &[WorkloadTarget],
    objects: &'a [K],
    namespace: &str,
    not_found: &mut Vec<String>,
) -> Vec<&'a K> {
    let mut chosen: BTreeMap<String, &K> = BTreeMap::new();
    for target in targets.iter().filter(|t| t.kind == kind) {
        if let Some(name) = &target.name {
            match objects.iter().find(|o| o.name_any() == *name) {
                Some(object) => {
                    chosen.insert(name.clone(), object);
                }
                None => not_found.push(format!(
                    "{kind:?} {name} not found in namespace {namespace}"
                )),
            }
        }
        if let Some(selector) = &target.selector {
            let selector = match Selector::try_from(selector.clone()) {
                Ok(selector) => selector,
                Err(error) => {
                    not_found.push(format!("the {kind:?} target selector is invalid: {error}"));
                    continue;
                }
            };
            for object in objects.iter().filter(|o| selector.matches(o.labels())) {
                chosen.insert(object.name_any(), object);
            }
        }
    }
    chosen.into_values().collect()
}

fn owned_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    meta.owner_references.as_ref().is_some_and(|owners| {
        owners
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    })
}

fn annotation_time(meta: &ObjectMeta, key: &str) -> Option<Timestamp> {
    meta.annotations.as_ref()?.get(key)?.parse().ok()
}

fn images(template: Option<&PodTemplateSpec>) -> Vec<String> {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|spec| {
            spec.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn revision_of(meta: &ObjectMeta, number: i64, hash: String, images: Vec<String>) -> Revision {
    let created = meta
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    Revision {
        number,
        hash,
        images,
        deployed_at: annotation_time(meta, DEPLOYED_AT).unwrap_or(created),
        stable_since: annotation_time(meta, STABLE_SINCE),
        rolled_out_at: annotation_time(meta, ROLLED_OUT_AT),
    }
}

fn observed(meta: &ObjectMeta, observed_generation: Option<i64>) -> bool {
    observed_generation.unwrap_or_default() >= meta.generation.unwrap_or_default()
}

fn deployment(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Workload {
    let uid = deployment.metadata.uid.as_deref();
    let mut revisions: Vec<Revision> = replica_sets
        .iter()
        .filter(|rs| owned_by(&rs.metadata, uid))
        .filter_map(|rs| {
            let number = rs.annotations().get(DEPLOYMENT_REVISION)?.parse().ok()?;
            let hash = rs.labels().get(TEMPLATE_HASH)?.clone();
            let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
            Some(revision_of(&rs.metadata, number, hash, images(template)))
        })
        .collect();
    revisions.sort_by_key(|r| r.number);
    let status = deployment.status.clone().unwrap_or_default();
    let seen = observed(&deployment.metadata, status.observed_generation);
    let want = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or_default();
    let available = status.available_replicas.unwrap_or_default();
    let total = status.replicas.unwrap_or_default();
    let rollout = if seen && updated == want && available == want && total == want {
        // The Progressing condition turns NewReplicaSetAvailable when the
        // rollout completes and keeps its time while it stays so.
        let since = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            })
            .and_then(|c| c.last_update_time)
            .map(|t| t.0);
        Rollout::Complete(since)
    } else {
        Rollout::InProgress(format!(
            "{updated} of {want} replicas updated, {available} available, {total} in total"
        ))
    };
    Workload {
        kind: WorkloadKind::Deployment,
        name: deployment.name_any(),
        current: seen
            .then(|| revisions.last().map(|r| r.hash.clone()))
            .flatten(),
        revisions,
        rollout,
    }
}

fn stateful_set(set: &StatefulSet, controller_revisions: &[ControllerRevision]) -> Workload {
    let uid = set.metadata.uid.as_deref();
    let mut revisions: Vec<Revision> = controller_revisions
        .iter()
        .filter(|cr| owned_by(&cr.metadata, uid))
        .map(|cr| {
            let template = cr
                .data
                .as_ref()
                .and_then(|d| d.0.pointer("/spec/template").cloned())
                .and_then(|t| serde_json::from_value::<PodTemplateSpec>(t).ok());
            revision_of(
                &cr.metadata,
                cr.revision,
                cr.name_any(),
                images(template.as_ref()),
            )
        })
        .collect();
    revisions.sort_by_key(|r| r.number);
    let status = set.status.clone().unwrap_or_default();
    let seen = observed(&set.metadata, status.observed_generation);
    let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or_default();
    let same =
        status.current_revision.is_some() && status.current_revision == status.update_revision;
    let rollout = if seen && same && updated == want && ready == want && status.replicas == want {
        Rollout::Complete(None)
    } else {
        Rollout::InProgress(format!(
            "{updated} of {want} replicas updated, {ready} ready, {} in total",
            status.replicas
        ))
    };
    Workload {
        kind: WorkloadKind::StatefulSet,
        name: set.name_any(),
        current: seen.then_some(status.update_revision).flatten(),
        revisions,
        rollout,
    }
}

/// Restores revision `hash` of a workload, as `kubectl rollout undo` does:
/// the ReplicaSet's pod template (without its `pod-template-hash` label)
/// replaces the Deployment's; a ControllerRevision's recorded patch is
/// applied to the StatefulSet. Restoring the same revision twice changes
/// nothing the second time.
pub async fn restore(
    client: &Client,
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
    hash: &str,
) -> Result<()> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match kind {
        WorkloadKind::Deployment => {
            let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .list(&ListParams::default().labels(&format!("{TEMPLATE_HASH}={hash}")))
                .await
                .map_err(Error::Kube)?
                .items;
            let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
            let target = deployments.get(name).await.map_err(Error::Kube)?;
            let uid = target.metadata.uid.as_deref();
            let template = replica_sets
                .into_iter()
                .find(|rs| owned_by(&rs.metadata, uid))
                .and_then(|rs| rs.spec.and_then(|s| s.template))
                .ok_or_else(|| Error::RevisionGone {
                    workload: format!("Deployment {namespace}/{name}"),
                    revision: hash.to_owned(),
                })?;
            let mut template = serde_json::to_value(template).map_err(Error::Json)?;
            if let Some(labels) = template
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.remove(TEMPLATE_HASH);
            }
            if let Some(object) = template.as_object_mut() {
                object.insert("$patch".to_owned(), json!("replace"));
            }
            let patch = json!({"spec": {"template": template}});
            deployments
                .patch(name, &params, &Patch::Strategic(patch))
                .await
                .map_err(Error::Kube)?;
        }
        WorkloadKind::StatefulSet => {
            let revision = Api::<ControllerRevision>::namespaced(client.clone(), namespace)
                .get_opt(hash)
                .await
                .map_err(Error::Kube)?
                .and_then(|cr| cr.data)
                .ok_or_else(|| Error::RevisionGone {
                    workload: format!("StatefulSet {namespace}/{name}"),
                    revision: hash.to_owned(),
                })?;
            Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, &Patch::Strategic(revision.0))
                .await
                .map_err(Error::Kube)?;
        }
    }
    Ok(())
}

/// Records `mark` on revision `hash` of workload `name`, at `now`.
pub async fn mark(
    client: &Client,
    namespace: &str,
    kind: WorkloadKind,
    name: &str,
    hash: &str,
    mark: Mark,
    now: Timestamp,
) -> Result<()> {
    let key = match mark {
        Mark::Stable => STABLE_SINCE,
        Mark::RolledOut => ROLLED_OUT_AT,
    };
    let patch = json!({"metadata": {"annotations": {key: now.to_string()}}});
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match kind {
        WorkloadKind::Deployment => {
            let api = Api::<ReplicaSet>::namespaced(client.clone(), namespace);
            let found = api
                .list(&ListParams::default().labels(&format!("{TEMPLATE_HASH}={hash}")))
                .await
                .map_err(Error::Kube)?;
            let owner = Api::<Deployment>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(Error::Kube)?;
            let uid = owner.metadata.uid.as_deref();
            for rs in found.items.iter().filter(|rs| owned_by(&rs.metadata, uid)) {
                api.patch(&rs.name_any(), &params, &Patch::Merge(&patch))
                    .await
                    .map_err(Error::Kube)?;
            }
        }
        WorkloadKind::StatefulSet => {
            Api::<ControllerRevision>::namespaced(client.clone(), namespace)
                .patch(hash, &params, &Patch::Merge(&patch))
                .await
                .map_err(Error::Kube)?;
        }
    }
    Ok(())
}
