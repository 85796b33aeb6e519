//! The `Rollback` controller: reads the rollback, its alarms (from the
//! watch) and its workloads in every region (polled: regions may be other
//! clusters), asks [`plan::decide`] what to do, restores pod templates,
//! records stable revisions, and writes the status and events. Alarm state
//! changes reach the rollbacks that attach them through the watch, at once.
//! With `spec.gitops` it also reads and writes the automatic-sync field of
//! Argo CD and Flux objects ([`gitops`]), and holds a finalizer that gives
//! that field back when the rollback is deleted.

pub mod access;
pub mod clusters;
pub mod gitops;
pub mod plan;
pub mod workloads;

use std::{collections::BTreeMap, sync::Arc};

use futures::{Stream, future::BoxFuture};
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    api::{
        Alarm, MergeTrainPause, Rollback,
        alarm::AlarmState,
        common::AlarmSelection,
        conditions,
        rollback::{RollbackPhase, RollbackStatus, TriggerType, Wave},
    },
    cache::Caches,
    controllers::{Context, Note, Reconciles, attach, merge_train_pause, notifier, run},
};

use clusters::Clusters;
use plan::{ACTION_ANNOTATION, AlarmReading, RegionView, World};

/// The field manager of this controller's writes.
pub const MANAGER: &str = "weblab-operator/rollback";
const CONTROLLER: &str = "rollback";

/// What a rollback reconciliation reads besides the rollback itself.
pub struct RollbackContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The alarms in scope.
    pub alarms: Store<Alarm>,
    /// Clients for the regions in other clusters.
    pub clusters: Clusters,
    /// The merge-train pauses in scope, for `spec.pauseMergeTrains`.
    pub pauses: Store<MergeTrainPause>,
}

impl Reconciles for RollbackContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// Reconciles one rollback.
#[tracing::instrument(skip_all, fields(rollback = %rollback.name_any(), namespace = rollback.namespace()))]
pub async fn reconcile(rollback: Arc<Rollback>, cx: Arc<RollbackContext>) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        return Ok(Action::await_change());
    };

    let namespace = rollback.namespace().unwrap_or_default();
    let spec = &rollback.spec;
    let status = rollback.status.clone().unwrap_or_default();
    if rollback.meta().deletion_timestamp.is_some() {
        return finalize(ctx, &rollback, &status).await;
    }
    let mut missing = Vec::new();
    let trigger_alarms = if spec.trigger.type_ == TriggerType::Alarm {
        read_alarms(&spec.trigger.alarms, &namespace, &cx.alarms, &mut missing)
    } else {
        Vec::new()
    };
    let verification_alarms = read_alarms(
        &spec.verification.alarms,
        &namespace,
        &cx.alarms,
        &mut missing,
    );
    let request = rollback
        .annotations()
        .get(ACTION_ANNOTATION)
        .map(String::as_str)
        .filter(|text| status.last_action.as_deref() != Some(*text));

    // Every region's access is decided once per reconciliation, before
    // anything of it is read; restores and marks use only these clients.
    let wanted = plan::regions_to_read(spec, &status);
    let reads = spec
        .waves
        .iter()
        .filter(|wave| wanted.contains(&wave.region.as_str()))
        .map(|wave| async {
            let client = region_client(&cx, &rollback, wave).await;
            let view = match &client {
                Ok(client) => workloads::read_region(client, &wave.namespace, &spec.targets).await,
                Err(refused) => refused.clone(),
            };
            (wave.region.clone(), (client.ok(), view))
        });
    let (clients, regions): (
        BTreeMap<String, Option<Client>>,
        BTreeMap<String, RegionView>,
    ) = futures::future::join_all(reads)
        .await
        .into_iter()
        .map(|(region, (client, view))| ((region.clone(), client), (region, view)))
        .unzip();
    let client_of = |wave: &Wave| {
        clients
            .get(&wave.region)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("region {} may not be acted on now", wave.region))
    };

    let gitops_keys = plan::gitops_to_read(spec, &status, &namespace);
    // Before the rollback runs, the suspension is also tried in a dry run;
    // an armed rollback already found able to suspend only reads, until it
    // fires.
    let probe = match status.phase {
        None | Some(RollbackPhase::Pending) => true,
        Some(RollbackPhase::Armed) => {
            status.fired_by.is_some()
                || !conditions::is_true(&status.conditions, plan::GITOPS_READY)
        }
        _ => false,
    };
    let gitops_views: BTreeMap<_, _> = gitops::read(&ctx.client, &rollback, &gitops_keys, probe)
        .await
        .into_iter()
        .collect();

    let now = Timestamp::now();
    let mut decision = plan::decide(&World {
        spec,
        generation: rollback.meta().generation.unwrap_or_default(),
        status: &status,
        trigger_alarms: &trigger_alarms,
        verification_alarms: &verification_alarms,
        missing: &missing,
        regions: &regions,
        namespace: &namespace,
        gitops: &gitops_views,
        request,
        now,
    });
    // After success, whether it helped.
    let attached: Vec<_> = trigger_alarms.iter().chain(&verification_alarms).collect();
    let (escalation, escalation_evidence) = notifier::escalation::for_rollback(
        spec,
        &decision.status,
        status.escalation.as_ref(),
        &attached,
        now,
    );
    decision.status.escalation = escalation.status;
    if let Some(wake) = escalation.wake {
        let next = decision.requeue_after.map_or(wake, |after| after.min(wake));
        decision.requeue_after = Some(next);
    }

    // Fields are given back before the status that says so is written; a
    // suspension was recorded by an earlier status. Both before any
    // workload is touched.
    for key in &decision.releases {
        gitops::release(&ctx.client, key).await?;
    }
    for suspend in &decision.suspends {
        gitops::suspend(&ctx.client, &suspend.key, &suspend.resource_version).await?;
    }
    // Restores run concurrently: a region's workloads are independent.
    let restores = decision.restores.iter().map(|restore| async {
        let wave = spec
            .waves
            .iter()
            .find(|w| w.region == restore.region)
            .ok_or_else(|| Error::Region {
                region: restore.region.clone(),
                why: "not in spec.waves any more".to_owned(),
            })?;
        let client = client_of(wave).map_err(|why| Error::Region {
            region: wave.region.clone(),
            why,
        })?;
        workloads::restore(
            &client,
            &wave.namespace,
            restore.kind,
            &restore.name,
            &restore.hash,
        )
        .await
    });
    let outcomes = futures::future::join_all(restores).await;
    let mut first_error = None;
    for (restore, outcome) in decision.restores.iter().zip(outcomes) {
        if let Err(error) = outcome {
            let note = Note::warning(
                "RestoreFailed",
                format!(
                    "cannot restore {:?} {} in region {}: {error}",
                    restore.kind, restore.name, restore.region
                ),
            );
            let evidence = notifier::evidence::rollback(&decision.status);
            ctx.publish_decision(rollback.as_ref(), evidence, &note)
                .await;
            first_error.get_or_insert(error);
        }
    }
    // Restored workloads are restored again harmlessly at the retry; the
    // status is written only once every restore of this step went through.
    if let Some(error) = first_error {
        return Err(error);
    }
    for mark in &decision.marks {
        let Some(wave) = spec.waves.iter().find(|w| w.region == mark.region) else {
            continue;
        };
        let marked = match client_of(wave) {
            Ok(client) => workloads::mark(
                &client,
                &wave.namespace,
                mark.kind,
                &mark.name,
                &mark.hash,
                mark.mark,
                now,
            )
            .await
            .map_err(|error| error.to_string()),
            Err(why) => Err(why),
        };
        // A mark not written now is computed again at the next look.
        if let Err(why) = marked {
            tracing::warn!(region = %mark.region, workload = %mark.name, %why, "cannot record revision");
        } else if mark.mark == plan::Mark::Stable {
            let note = Note::normal(
                "RevisionStable",
                format!(
                    "{:?} {} in region {}: revision {} recorded as stable",
                    mark.kind, mark.name, mark.region, mark.hash
                ),
            );
            let evidence = notifier::evidence::rollback(&decision.status);
            ctx.publish_decision(rollback.as_ref(), evidence, &note)
                .await;
        }
    }
    let phase = decision.status.phase;
    let wanted = plan::merge_train_pauses(&rollback.name_any(), &rollback.spec, phase);
    merge_train_pause::owned::sync(&ctx.client, &cx.pauses, rollback.as_ref(), &wanted).await?;

    let wrote = decision.status != status;
    let api: Api<Rollback> = Api::namespaced(ctx.client.clone(), &namespace);
    // The finalizer comes before the status that records a suspension, so
    // that no suspension is ever recorded on a rollback deleted without it.
    let holds = plan::holds_auto_sync(&decision.status);
    let mut current = Arc::clone(&rollback);
    if holds && !has_finalizer(&rollback) {
        current = Arc::new(set_finalizer(&api, &rollback, true).await?);
    }
    if wrote {
        ctx.apply_status(&api, current.as_ref(), MANAGER, &decision.status)
            .await?;
        if let Some(result) = decision.finished {
            ctx.metrics.rollbacks.with_label_values(&[result]).inc();
        }
        for (result, took) in &decision.waves_ended {
            ctx.metrics
                .rollback_wave_duration
                .with_label_values(&[result])
                .observe(took.as_secs_f64());
        }
    }
    for note in &decision.notes {
        let evidence = notifier::evidence::rollback(&decision.status);
        ctx.publish_decision(rollback.as_ref(), evidence, note)
            .await;
    }
    if let Some(note) = &escalation.note {
        let only = spec.escalation.as_ref().and_then(|e| e.notifier.as_deref());
        ctx.publish_to(rollback.as_ref(), escalation_evidence, note, only)
            .await;
    }
    if !holds && has_finalizer(&rollback) {
        // Read afresh: the status write moved the resourceVersion on.
        if let Some(fresh) = api
            .get_opt(&rollback.name_any())
            .await
            .map_err(Error::Kube)?
        {
            set_finalizer(&api, &fresh, false).await?;
        }
    }
    let settled = matches!(phase, Some(RollbackPhase::Failed | RollbackPhase::Refused));
    Ok(match decision.requeue_after {
        // After a write, our own watch event brings the fresh object back;
        // the poll stays as a safety net.
        Some(after) if wrote => Action::requeue(after.max(plan::POLL)),
        Some(after) => Action::requeue(after),
        None if settled => Action::await_change(),
        None => Action::requeue(plan::RESYNC),
    })
}

/// A rollback being deleted gives back every automatic-sync field it may
/// hold, then lets go of its finalizer: once, as the object is gone after.
async fn finalize(ctx: &Context, rollback: &Rollback, status: &RollbackStatus) -> Result<Action> {
    if !has_finalizer(rollback) {
        return Ok(Action::await_change());
    }
    let mut restored = Vec::new();
    for entry in status.gitops.iter().filter(|e| plan::is_held(e)) {
        let key = plan::GitOpsKey::of(entry);
        if gitops::release(&ctx.client, &key).await? {
            restored.push(key.label());
        }
    }
    if !restored.is_empty() {
        let note = Note::normal(
            "AutoSyncRestored",
            format!(
                "automatic sync given back (the rollback is being deleted): {}",
                restored.join(", ")
            ),
        );
        let evidence = notifier::evidence::rollback(status);
        ctx.publish_decision(rollback, evidence, &note).await;
    }
    let api: Api<Rollback> = Api::namespaced(
        ctx.client.clone(),
        &rollback.namespace().unwrap_or_default(),
    );
    set_finalizer(&api, rollback, false).await?;
    Ok(Action::await_change())
}

fn has_finalizer(rollback: &Rollback) -> bool {
    rollback.finalizers().iter().any(|f| f == gitops::FINALIZER)
}

/// Adds or removes [`gitops::FINALIZER`], on condition that the rollback is
/// unchanged since it was read; the rollback as written.
async fn set_finalizer(api: &Api<Rollback>, rollback: &Rollback, held: bool) -> Result<Rollback> {
    let mut finalizers: Vec<String> = rollback
        .finalizers()
        .iter()
        .filter(|f| *f != gitops::FINALIZER)
        .cloned()
        .collect();
    if held {
        finalizers.push(gitops::FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": rollback.resource_version(),
        }
    });
    api.patch(
        &rollback.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)
}

/// The client through which the rollback may act in `wave`'s region, or
/// the view that says why it may not. Another namespace of this cluster
/// must authorize the rollback (see [`access`]); another cluster is reached
/// with the inline credentials of the rollback's own kubeconfig Secret.
async fn region_client(
    cx: &RollbackContext,
    rollback: &Rollback,
    wave: &Wave,
) -> Result<Client, RegionView> {
    let own = &cx.ctx.client;
    let namespace = rollback.namespace().unwrap_or_default();
    if let Some(reference) = &wave.kubeconfig_secret_ref {
        return cx
            .clusters
            .client(own, &namespace, reference)
            .await
            .map_err(|error| match error.reason() {
                Some(reason) => RegionView::Misconfigured {
                    reason,
                    message: error.to_string(),
                },
                None => RegionView::Unreachable(error.to_string()),
            });
    }
    if wave.namespace == namespace {
        return Ok(own.clone());
    }
    let name = rollback.name_any();
    match access::check(own, &namespace, &name, &wave.namespace).await {
        Ok(None) => Ok(own.clone()),
        Ok(Some(why)) => {
            tracing::info!(target_namespace = %wave.namespace, region = %wave.region, "refused: the namespace does not authorize this Rollback");
            Err(RegionView::NotAuthorized(why))
        }
        Err(error) => Err(RegionView::Unreachable(format!(
            "cannot tell whether namespace {} authorizes this Rollback: {error}",
            wave.namespace
        ))),
    }
}

/// The attached alarms as the planner reads them; names not found (and
/// selectors that do not parse) go to `missing`.
fn read_alarms(
    selection: &AlarmSelection,
    namespace: &str,
    store: &Store<Alarm>,
    missing: &mut Vec<String>,
) -> Vec<AlarmReading> {
    attach::attached(selection, "the alarm selector", namespace, store, missing)
        .iter()
        .map(|alarm| {
            let status = alarm.status.as_ref();
            AlarmReading {
                name: alarm.name_any(),
                state: status
                    .and_then(|s| s.state)
                    .unwrap_or(AlarmState::InsufficientData),
                severity: alarm.spec.severity,
                since: status
                    .and_then(|s| s.last_transition_time.as_ref())
                    .map(|t| t.0),
            }
        })
        .collect()
}

/// The rollbacks in `alarm`'s namespace that attach it, as trigger or as
/// verification.
fn rollbacks_attaching(rollbacks: &Store<Rollback>, alarm: &Alarm) -> Vec<ObjectRef<Rollback>> {
    let namespace = alarm.namespace();
    rollbacks
        .state()
        .iter()
        .filter(|r| r.namespace() == namespace)
        .filter(|r| {
            [&r.spec.trigger.alarms, &r.spec.verification.alarms]
                .iter()
                .any(|selection| attach::attaches(selection, alarm))
        })
        .map(|r| ObjectRef::from(r.as_ref()))
        .collect()
}

/// The Rollback controller for one scope, reading the scope's shared
/// caches; runs until `shutdown`.
///
/// `allow_kubeconfig_exec` (`--insecure-kubeconfig-exec`) lets the
/// kubeconfigs of other clusters run exec plugins.
pub fn controller(
    ctx: Arc<Context>,
    caches: &Caches,
    allow_kubeconfig_exec: bool,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let rollbacks = caches.rollbacks.store();
    let by_alarm = {
        let rollbacks = rollbacks.clone();
        move |alarm: Arc<Alarm>| rollbacks_attaching(&rollbacks, &alarm)
    };
    let cx = Arc::new(RollbackContext {
        ctx,
        alarms: caches.alarms.store(),
        clusters: Clusters::new(allow_kubeconfig_exec),
        pauses: caches.pauses.store(),
    });
    let controller = Controller::for_shared_stream(caches.rollbacks.subscribe(), rollbacks)
        .watches_shared_stream(caches.alarms.subscribe(), by_alarm)
        .owns_shared_stream(caches.pauses.subscribe());
    run(
        controller,
        CONTROLLER,
        cx,
        reconcile,
        reconcile_all,
        shutdown,
    )
}
