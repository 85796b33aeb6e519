//! Which namespaces of this cluster a Rollback may act in: its own, and any
//! other whose Namespace names it in the `weblab.dev/authorized-rollbacks`
//! annotation. The operator's client can patch workloads wherever the
//! chart's RBAC reaches; without this check it would act for anyone who can
//! create a Rollback anywhere (a confused deputy). The target opts in, as
//! Kargo's `kargo.akuity.io/authorized-stage` does, because only the
//! target's owner can set an annotation on its Namespace.

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use crate::api::rollback::AUTHORIZED_ROLLBACKS;

/// Whether a Namespace's [`AUTHORIZED_ROLLBACKS`] annotation (`value`) lets
/// the Rollback `namespace/name` act there: a comma-separated list of
/// `namespace/name` entries, `namespace/*` for every Rollback of that
/// namespace. Anything else in the list authorizes nothing.
pub fn authorizes(value: &str, namespace: &str, name: &str) -> bool {
    value
        .split(',')
        .filter_map(|entry| entry.trim().split_once('/'))
        .filter(|(allowed_namespace, allowed_name)| {
            !allowed_namespace.is_empty() && !allowed_name.is_empty()
        })
        .any(|(allowed_namespace, allowed_name)| {
            allowed_namespace == namespace && (allowed_name == name || allowed_name == "*")
        })
}

/// Why the Rollback `namespace/name` may not act in `target`, in words a
/// person can act on. The same words whether `target` exists or not: a
/// tenant learns nothing about other namespaces from a refusal.
pub fn refusal(namespace: &str, name: &str, target: &str) -> String {
    format!(
        "namespace {target} does not authorize Rollback {namespace}/{name}: its annotation {AUTHORIZED_ROLLBACKS} must list {namespace}/{name} (or {namespace}/*); nothing in it was read or changed"
    )
}

/// Asks the API server (no cache: a revoked authorization counts at the
/// next look) whether `target` lets the Rollback `namespace/name` act
/// there: `None` if it does, else why not.
pub async fn check(
    client: &Client,
    namespace: &str,
    name: &str,
    target: &str,
) -> Result<Option<String>, kube::Error> {
    let found = match Api::<Namespace>::all(client.clone())
        .get_metadata_opt(target)
        .await
    {
        Ok(found) => found,
        // The chart grants get on a Namespace where it grants the rollback
        // rights: without it the operator could not act there anyway.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Some(format!(
                "the operator has no rollback rights in namespace {target}: an administrator grants them with the Helm value rbac.rollback.namespaces"
            )));
        }
        Err(error) => return Err(error),
    };
    let allowed = found
        .as_ref()
        .and_then(|ns| ns.metadata.annotations.as_ref())
        .and_then(|annotations| annotations.get(AUTHORIZED_ROLLBACKS))
        .is_some_and(|value| authorizes(value, namespace, name));
    Ok((!allowed).then(|| refusal(namespace, name, target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listed_rollback_or_its_whole_namespace_is_authorized() {
        let value = "team-a/rollback-1, team-b/* ,broken, /x,team-c/";
        assert!(authorizes(value, "team-a", "rollback-1"));
        assert!(!authorizes(value, "team-a", "rollback-2"));
        assert!(authorizes(value, "team-b", "anything"));
        assert!(!authorizes(value, "team-c", "anything"));
        assert!(!authorizes(value, "broken", "broken"));
        assert!(!authorizes(value, "", "x"));
        assert!(!authorizes("", "team-a", "rollback-1"));
        // Neither a wildcard namespace nor a prefix counts.
        assert!(!authorizes("*/*", "team-a", "rollback-1"));
        assert!(!authorizes("team/*", "team-a", "rollback-1"));
        assert!(!authorizes("team-a/rollback", "team-a", "rollback-1"));
    }

    #[test]
    fn a_refusal_names_the_annotation_and_the_entry_to_add() {
        let why = refusal("team-a", "undo", "payments");
        assert!(why.contains("weblab.dev/authorized-rollbacks"), "{why}");
        assert!(
            why.contains("team-a/undo") && why.contains("payments"),
            "{why}"
        );
    }
}
