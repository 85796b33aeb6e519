//! The GitOps objects of `spec.gitops` (Argo CD Applications, Flux
//! Kustomizations and HelmReleases), read and written for the plan (see
//! `plan/gitops.rs`).
//!
//! Writes are server-side applies by one field manager, [`MANAGER`], whose
//! applied configuration is the automatic-sync field and nothing else. To
//! suspend, it applies the field at its "off" value with force, taking it
//! from whoever set it. To restore, it applies an empty configuration: the
//! manager gives the field up, and as nobody else owns it any more the API
//! server removes it. Removing is what restores the prior value: the field
//! is only ever taken while automatic sync is on, i.e. while it is unset or
//! set to its default (`suspend: false`, `automated.enabled: true`), and
//! unset means that default to both tools. The object's owner (a parent
//! Application or Kustomization, `kubectl apply`) writes its literal value
//! again at its next apply without any conflict. Re-applying the prior value
//! instead would leave this manager owning the field forever, so that the
//! owner's next change conflicts or is silently kept at ours. Someone who
//! changed the field in between took it from this manager, and keeps it.

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{
    access,
    plan::{AutoSync, GitOpsKey, GitOpsView, auto_sync_field, suspended_value},
};
use crate::{
    Error, Result,
    api::{Rollback, rollback::GitOpsKind},
};

/// The field manager of the suspensions; it holds nothing else.
pub const MANAGER: &str = "weblab-operator-gitops";
/// Held on a Rollback while it may hold automatic sync off, so that deleting
/// it gives the fields back first.
pub const FINALIZER: &str = "weblab.dev/restore-gitops";

/// The API resource of `kind`, at the version the pinned CRDs store.
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

fn api(client: &Client, key: &GitOpsKey) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), &key.namespace, &resource(key.kind))
}

/// The path of the automatic-sync field as `metadata.managedFields` spells
/// it (`fieldsV1`).
fn managed_path(kind: GitOpsKind) -> Vec<String> {
    auto_sync_field(kind)
        .split('.')
        .map(|part| format!("f:{part}"))
        .collect()
}

/// The apply configuration of [`MANAGER`]: the field at its "off" value
/// (`off`), or nothing (to give it back); on condition that the object is
/// at `resource_version`.
fn configuration(key: &GitOpsKey, off: bool, resource_version: &str) -> Value {
    let resource = resource(key.kind);
    let mut object = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": key.name, "resourceVersion": resource_version},
    });
    if off {
        let mut value = json!(suspended_value(key.kind));
        for part in auto_sync_field(key.kind).split('.').rev() {
            value = json!({ part: value });
        }
        if let (Some(object), Some(spec)) = (object.as_object_mut(), value.get("spec")) {
            object.insert("spec".to_owned(), spec.clone());
        }
    }
    object
}

/// Reads a GitOps object's automatic sync from the object (as JSON).
pub fn auto_sync(kind: GitOpsKind, object: &Value) -> AutoSync {
    let spec = &object["spec"];
    let (value, on) = match kind {
        GitOpsKind::Application => {
            let automated = &spec["syncPolicy"]["automated"];
            let enabled = automated["enabled"].as_bool();
            (enabled, automated.is_object() && enabled != Some(false))
        }
        GitOpsKind::Kustomization | GitOpsKind::HelmRelease => {
            let suspend = spec["suspend"].as_bool();
            (suspend, suspend != Some(true))
        }
    };
    AutoSync {
        value,
        on,
        held: holds_field(kind, object),
        resource_version: object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The fields [`MANAGER`] holds on `object` (its applied `fieldsV1`), if any.
pub fn held_fields(object: &Value) -> Option<&Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|entry| entry["manager"] == MANAGER && entry["operation"] == "Apply")
        .map(|entry| &entry["fieldsV1"])
        .filter(|fields| fields.as_object().is_some_and(|f| !f.is_empty()))
}

fn holds_field(kind: GitOpsKind, object: &Value) -> bool {
    let Some(mut fields) = held_fields(object) else {
        return false;
    };
    for part in managed_path(kind) {
        match fields.get(&part) {
            Some(inner) => fields = inner,
            None => return false,
        }
    }
    true
}

/// Reads the GitOps objects `keys` for `rollback`. An object in another
/// namespace is read only if that namespace authorizes the rollback. With
/// `probe`, an object whose automatic sync is on is also suspended in a
/// server-side dry run, so that RBAC refusing the write is known before the
/// rollback fires.
pub async fn read(
    client: &Client,
    rollback: &Rollback,
    keys: &[GitOpsKey],
    probe: bool,
) -> Vec<(GitOpsKey, GitOpsView)> {
    let reads = keys.iter().map(|key| async move {
        let view = read_one(client, rollback, key, probe).await;
        (key.clone(), view)
    });
    futures::future::join_all(reads).await
}

async fn read_one(
    client: &Client,
    rollback: &Rollback,
    key: &GitOpsKey,
    probe: bool,
) -> GitOpsView {
    let namespace = rollback.metadata.namespace.as_deref().unwrap_or_default();
    let name = rollback.metadata.name.as_deref().unwrap_or_default();
    if key.namespace != namespace {
        match access::check(client, namespace, name, &key.namespace).await {
            Ok(None) => {}
            Ok(Some(why)) => return GitOpsView::NotAuthorized(format!("{}: {why}", key.label())),
            Err(error) => {
                return GitOpsView::Unreachable(format!(
                    "cannot tell whether namespace {} authorizes this Rollback: {error}",
                    key.namespace
                ));
            }
        }
    }
    let object = match api(client, key).get(&key.name).await {
        Ok(object) => object,
        Err(error) => return refusal(key, "read", error),
    };
    let object = match serde_json::to_value(&object) {
        Ok(object) => object,
        Err(error) => return GitOpsView::Unreachable(format!("{}: {error}", key.label())),
    };
    let read = auto_sync(key.kind, &object);
    if probe && read.on && !read.held {
        let params = PatchParams::apply(MANAGER)
            .force()
            .validation_strict()
            .dry_run();
        let patch = configuration(key, true, &read.resource_version);
        if let Err(error) = api(client, key)
            .patch(&key.name, &params, &Patch::Apply(&patch))
            .await
        {
            // A conflict only means the object changed since it was read.
            if !matches!(&error, kube::Error::Api(status) if status.code == 409) {
                return refusal(key, "suspend", error);
            }
        }
    }
    GitOpsView::Read(read)
}

/// What a failed call on a GitOps object means for the rollback; the API
/// server's words are kept out (they may name other objects).
fn refusal(key: &GitOpsKey, what: &str, error: kube::Error) -> GitOpsView {
    let label = key.label();
    match error {
        kube::Error::Api(status) if status.code == 404 => GitOpsView::NotFound(format!(
            "{label} not found (is {} installed, and is the name right?)",
            match key.kind {
                GitOpsKind::Application => "Argo CD",
                GitOpsKind::Kustomization | GitOpsKind::HelmRelease => "Flux",
            }
        )),
        kube::Error::Api(status) if status.code == 403 => GitOpsView::Forbidden(format!(
            "the operator may not {what} {label}: an administrator grants get and patch on it with the Helm values rbac.gitops.enabled and rbac.gitops.namespaces"
        )),
        kube::Error::Api(status) if matches!(status.code, 400 | 422) => {
            GitOpsView::Forbidden(format!(
                "the API server does not accept {} on {label}: its CRD is too old for suspending automatic sync",
                auto_sync_field(key.kind)
            ))
        }
        other => GitOpsView::Unreachable(format!("cannot {what} {label}: {other}")),
    }
}

/// Turns `key`'s automatic sync off, on condition that it is still at
/// `resource_version`.
pub async fn suspend(client: &Client, key: &GitOpsKey, resource_version: &str) -> Result<()> {
    // Strict: a CRD without the field (an Argo CD before
    // `automated.enabled`) refuses it instead of pruning it silently.
    let params = PatchParams::apply(MANAGER).force().validation_strict();
    let patch = configuration(key, true, resource_version);
    api(client, key)
        .patch(&key.name, &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// Gives `key`'s automatic-sync field back (see the module's header);
/// whether there was anything to give back. An object that is gone, or on
/// which the manager holds nothing, is left alone: no write.
pub async fn release(client: &Client, key: &GitOpsKey) -> Result<bool> {
    let api = api(client, key);
    let Some(object) = api.get_opt(&key.name).await.map_err(Error::Kube)? else {
        return Ok(false);
    };
    let object = serde_json::to_value(&object).map_err(Error::Json)?;
    if held_fields(&object).is_none() {
        return Ok(false);
    }
    // The resourceVersion precondition also keeps the apply from creating
    // an object deleted since it was read.
    let version = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    let patch = configuration(key, false, version);
    api.patch(
        &key.name,
        &PatchParams::apply(MANAGER),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: GitOpsKind) -> GitOpsKey {
        GitOpsKey {
            kind,
            namespace: "argocd".to_owned(),
            name: "graphql".to_owned(),
        }
    }

    #[test]
    fn the_suspension_applies_the_auto_sync_field_and_nothing_else() {
        assert_eq!(
            configuration(&key(GitOpsKind::Application), true, "7"),
            json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": "graphql", "resourceVersion": "7"},
                "spec": {"syncPolicy": {"automated": {"enabled": false}}},
            })
        );
        assert_eq!(
            configuration(&key(GitOpsKind::HelmRelease), true, "7")["spec"],
            json!({"suspend": true})
        );
        assert_eq!(
            configuration(&key(GitOpsKind::Kustomization), false, "8"),
            json!({
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": "graphql", "resourceVersion": "8"},
            })
        );
    }

    #[test]
    fn automatic_sync_is_read_as_each_tool_reads_it() {
        let app = |policy: Value| json!({"spec": {"syncPolicy": policy}});
        let on = |kind, object: &Value| auto_sync(kind, object).on;
        assert!(on(GitOpsKind::Application, &app(json!({"automated": {}}))));
        assert!(on(
            GitOpsKind::Application,
            &app(json!({"automated": {"enabled": true}}))
        ));
        assert!(!on(
            GitOpsKind::Application,
            &app(json!({"automated": {"enabled": false}}))
        ));
        assert!(!on(
            GitOpsKind::Application,
            &app(json!({"syncOptions": []}))
        ));
        let flux = |spec: Value| json!({ "spec": spec });
        assert!(on(GitOpsKind::Kustomization, &flux(json!({}))));
        assert!(on(
            GitOpsKind::HelmRelease,
            &flux(json!({"suspend": false}))
        ));
        assert!(!on(
            GitOpsKind::HelmRelease,
            &flux(json!({"suspend": true}))
        ));
        assert_eq!(
            auto_sync(GitOpsKind::HelmRelease, &flux(json!({"suspend": false}))).value,
            Some(false)
        );
    }

    #[test]
    fn only_the_managers_applied_field_counts_as_held() {
        let object = |manager: &str, operation: &str, fields: Value| {
            json!({"metadata": {"resourceVersion": "3", "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:suspend": {}}}},
                {"manager": manager, "operation": operation, "fieldsV1": fields},
            ]}, "spec": {"suspend": true}})
        };
        let suspend = json!({"f:spec": {"f:suspend": {}}});
        let held = |o: &Value| auto_sync(GitOpsKind::Kustomization, o).held;
        assert!(held(&object(MANAGER, "Apply", suspend.clone())));
        assert!(!held(&object(MANAGER, "Update", suspend.clone())));
        assert!(!held(&object("someone", "Apply", suspend)));
        assert!(!held(&object(
            MANAGER,
            "Apply",
            json!({"f:spec": {"f:interval": {}}})
        )));
        assert!(held_fields(&object(MANAGER, "Apply", json!({}))).is_none());
        let argo = json!({"metadata": {"managedFields": [{"manager": MANAGER, "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:syncPolicy": {"f:automated": {"f:enabled": {}}}}}}]}});
        assert!(auto_sync(GitOpsKind::Application, &argo).held);
        assert!(!auto_sync(GitOpsKind::HelmRelease, &argo).held);
    }
}
