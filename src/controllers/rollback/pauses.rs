//! The merge-train pauses a running rollback owns (`spec.pauseMergeTrains`):
//! created when it starts, with the rollback as controlling owner and a
//! deterministic name, and deleted when it succeeds. A failed rollback
//! leaves them in place (the incident is not over); each ends on its own
//! after [`PAUSE_LIMIT`] at the latest, or when the rollback is deleted.

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};

use crate::{
    Error, Result,
    api::{
        MergeTrainPause, Rollback, common::Duration, merge_train_pause::MergeTrainPauseSpec,
        rollback::RollbackPhase,
    },
};

/// How long an owned pause lasts at most, should nothing lift it.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The name of the pause `rollback` owns for `train`.
pub fn pause_name(rollback: &str, train: &str) -> String {
    let room = 253usize.saturating_sub(train.len() + 1);
    let prefix: String = rollback.chars().take(room).collect();
    format!("{prefix}-{train}")
}

/// Creates the owned pauses while the rollback progresses and deletes them
/// once it succeeded; quiet (reads only) otherwise.
pub async fn reconcile(
    client: &Client,
    rollback: &Rollback,
    phase: Option<RollbackPhase>,
) -> Result<()> {
    let trains = &rollback.spec.pause_merge_trains;
    if trains.is_empty() {
        return Ok(());
    }
    let namespace = rollback.namespace().unwrap_or_default();
    let api: Api<MergeTrainPause> = Api::namespaced(client.clone(), &namespace);
    for train in trains {
        let name = pause_name(&rollback.name_any(), &train.train);
        match phase {
            Some(RollbackPhase::Progressing) => {
                if api.get_opt(&name).await.map_err(Error::Kube)?.is_some() {
                    continue;
                }
                let pause = MergeTrainPause {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(namespace.clone()),
                        owner_references: rollback.controller_owner_ref(&()).map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    spec: MergeTrainPauseSpec {
                        train: train.clone(),
                        reason: format!("Rollback {} is running", rollback.name_any()),
                        ticket: None,
                        expires_at: None,
                        duration: Some(PAUSE_LIMIT),
                        resume_when: None,
                    },
                    status: None,
                };
                match api.create(&PostParams::default(), &pause).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(Error::Kube(error)),
                }
            }
            Some(RollbackPhase::Succeeded) => {
                if api.get_opt(&name).await.map_err(Error::Kube)?.is_none() {
                    continue;
                }
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(Error::Kube(error)),
                }
            }
            _ => {}
        }
    }
    Ok(())
}
