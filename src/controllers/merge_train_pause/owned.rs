//! Pauses owned by another object (a `Rollback`, a `WeblabDial` rolled back
//! by an alarm; each owner's plan says which pauses it wants): created while
//! the owner wants its trains paused, deleted
//! when it no longer does, which resumes the trains through the pause's
//! finalizer. Each owned pause has a deterministic name, so creation is
//! create-if-absent and a crash between two steps does no harm; its
//! controller `ownerReference` lets the garbage collector remove it with
//! its owner.

use std::{collections::BTreeMap, sync::Arc};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
    runtime::reflector::Store,
};
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    api::{
        common::Duration,
        merge_train_pause::{MergeTrainPause, MergeTrainPauseSpec, MergeTrainRef},
    },
};

/// The longest an owned pause holds when its owner never lets go: a pause
/// must end, and a train paused for a day is a question for a person.
pub const OWNED_PAUSE_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The label saying which kind of object owns a pause.
pub const OWNER_KIND_LABEL: &str = "weblab.dev/owner-kind";

/// A pause an owner wants to exist.
#[derive(Clone, Debug, PartialEq)]
pub struct PauseTemplate {
    /// The train and its provider.
    pub train: MergeTrainRef,
    /// Why, for people and the gate's answer.
    pub reason: String,
    /// A ticket link.
    pub ticket: Option<String>,
}

/// The name of the pause `owner` holds on `train`: `{owner}-{train}`, cut
/// and suffixed with a hash when that would be too long for a name.
pub fn pause_name(owner: &str, train: &str) -> String {
    let name = format!("{owner}-{train}");
    if name.len() <= 253 {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let suffix: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let head: String = name.chars().take(253 - 11).collect();
    format!("{}-{suffix}", head.trim_end_matches(['-', '.']))
}

/// What to change so that exactly the wanted pauses exist.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedChange {
    /// Create this pause.
    Create(Box<MergeTrainPause>),
    /// Delete the pause of this name.
    Delete(String),
}

fn owned_by(pause: &MergeTrainPause, uid: &str) -> bool {
    pause
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The changes that make `owner`'s pauses match `wanted`, given the pauses
/// in its namespace. A pause of the wanted name that someone else owns is
/// left alone (and not created twice).
pub fn plan_changes<K>(
    owner: &K,
    wanted: &[PauseTemplate],
    existing: &[Arc<MergeTrainPause>],
) -> Vec<OwnedChange>
where
    K: Resource<DynamicType = ()>,
{
    let (Some(uid), Some(owner_ref)) = (owner.meta().uid.clone(), owner.controller_owner_ref(&()))
    else {
        return Vec::new();
    };
    let namespace = owner.namespace();
    let in_namespace = |p: &&Arc<MergeTrainPause>| p.namespace() == namespace;
    let wanted_names: BTreeMap<String, &PauseTemplate> = wanted
        .iter()
        .map(|t| (pause_name(&owner.name_any(), &t.train.train), t))
        .collect();
    let mut changes: Vec<OwnedChange> = wanted_names
        .iter()
        .filter(|(name, _)| {
            !existing
                .iter()
                .filter(in_namespace)
                .any(|p| p.name_any() == **name)
        })
        .map(|(name, template)| {
            let mut pause = MergeTrainPause::new(
                name,
                MergeTrainPauseSpec {
                    train: template.train.clone(),
                    reason: template.reason.chars().take(1024).collect(),
                    ticket: template.ticket.clone(),
                    expires_at: None,
                    duration: Some(OWNED_PAUSE_LIMIT),
                    resume_when: None,
                },
            );
            pause.metadata = ObjectMeta {
                name: Some(name.clone()),
                namespace: namespace.clone(),
                owner_references: Some(vec![owner_ref.clone()]),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "weblab-operator".to_owned(),
                    ),
                    (OWNER_KIND_LABEL.to_owned(), K::kind(&()).into_owned()),
                ])),
                ..ObjectMeta::default()
            };
            OwnedChange::Create(Box::new(pause))
        })
        .collect();
    changes.extend(
        existing
            .iter()
            .filter(in_namespace)
            .filter(|p| owned_by(p, &uid))
            .filter(|p| p.meta().deletion_timestamp.is_none())
            .filter(|p| !wanted_names.contains_key(&p.name_any()))
            .map(|p| OwnedChange::Delete(p.name_any())),
    );
    changes
}

/// Makes `owner`'s pauses match `wanted`: creates the missing ones and
/// deletes the unwanted ones (which resumes their trains). Reads from
/// `store`, so that a settled owner makes no API call at all.
pub async fn sync<K>(
    client: &Client,
    store: &Store<MergeTrainPause>,
    owner: &K,
    wanted: &[PauseTemplate],
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let changes = plan_changes(owner, wanted, &store.state());
    let Some(namespace) = owner.namespace() else {
        return Ok(());
    };
    let api: Api<MergeTrainPause> = Api::namespaced(client.clone(), &namespace);
    for change in changes {
        match change {
            OwnedChange::Create(pause) => match api.create(&PostParams::default(), &pause).await {
                Ok(_) => {
                    tracing::info!(pause = %pause.name_any(), "created an owned merge-train pause")
                }
                // The cache was behind: it exists already.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(Error::Kube(error)),
            },
            OwnedChange::Delete(name) => match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pause = %name, "deleted an owned merge-train pause"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(Error::Kube(error)),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WeblabDial;

    fn dial() -> WeblabDial {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "WeblabDial",
            "metadata": {"name": "checkout", "namespace": "team", "uid": "uid-1"},
            "spec": {
                "weblab": "CHECKOUT",
                "treatments": ["C", "T1"],
                "realms": ["NA"],
                "allocation": {"T1": 100},
                "rollback": {"pauseMergeTrains": [{"train": "web-main"}]}
            }
        }))
        .expect("a valid dial")
    }

    fn wanted() -> Vec<PauseTemplate> {
        vec![PauseTemplate {
            train: serde_json::from_value(serde_json::json!({"train": "web-main"})).expect("ref"),
            reason: "WeblabDial checkout was rolled back".to_owned(),
            ticket: None,
        }]
    }

    #[test]
    fn a_wanted_pause_is_created_once_and_deleted_when_no_longer_wanted() {
        let dial = dial();
        let wanted = wanted();
        let changes = plan_changes(&dial, &wanted, &[]);
        let [OwnedChange::Create(pause)] = changes.as_slice() else {
            panic!("one creation: {changes:?}")
        };
        assert_eq!(pause.name_any(), "checkout-web-main");
        assert_eq!(pause.namespace().as_deref(), Some("team"));
        let owner = &pause.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        assert_eq!(pause.spec.duration, Some(OWNED_PAUSE_LIMIT));

        // Existing: nothing to do.
        let existing = vec![Arc::new((**pause).clone())];
        assert!(plan_changes(&dial, &wanted, &existing).is_empty());
        // No longer wanted: deleted.
        assert_eq!(
            plan_changes(&dial, &[], &existing),
            vec![OwnedChange::Delete("checkout-web-main".to_owned())]
        );
    }

    #[test]
    fn others_pauses_are_left_alone() {
        let dial = dial();
        let mut someone_elses: MergeTrainPause = MergeTrainPause::new(
            "checkout-web-main",
            MergeTrainPauseSpec {
                train: serde_json::from_value(serde_json::json!({"train": "web-main"}))
                    .expect("ref"),
                reason: "manual".to_owned(),
                ticket: None,
                expires_at: None,
                duration: Some(OWNED_PAUSE_LIMIT),
                resume_when: None,
            },
        );
        someone_elses.metadata.namespace = Some("team".to_owned());
        let existing = vec![Arc::new(someone_elses)];
        assert!(plan_changes(&dial, &wanted(), &existing).is_empty());
        assert!(plan_changes(&dial, &[], &existing).is_empty());
    }

    #[test]
    fn long_names_are_cut_and_stay_distinct() {
        let owner = "o".repeat(250);
        let a = pause_name(&owner, "train-a");
        let b = pause_name(&owner, "train-b");
        assert!(a.len() <= 253 && b.len() <= 253);
        assert_ne!(a, b);
    }
}
