//! The `MergeTrainPause` controller: reads the pause and the alarms of its
//! resume condition, asks [`plan::decide`] what to do, calls the provider
//! when told to, and records the outcome with [`plan::record`]. A finalizer
//! makes deleting a pause resume its train first.
//!
//! Secrets (the GitLab token, the webhook key) are read with a `get` by name
//! when a call needs them; the operator never lists Secrets.

pub mod gitlab;
pub mod owned;
pub mod plan;
pub mod provider;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use futures::{Stream, future::BoxFuture};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
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
        Alarm, MergeTrainPause,
        common::SecretKeyRef,
        merge_train_pause::{MergeTrainPauseSpec, ProviderType},
        weblab_notifier::Evidence,
    },
    cache::Caches,
    controllers::{Context, Reconciles, attach, run},
    outbound::Outbound,
};

use plan::{ClearReading, Operation, Plan, World};
use provider::{AnyProvider, Gate, PauseRequest, ProviderError, TrainProvider};

/// The field manager of this controller's status writes.
pub const MANAGER: &str = "weblab-operator/mergetrainpause";
/// Held on every pause until its train has been resumed.
pub const FINALIZER: &str = "weblab.dev/resume-train";
const CONTROLLER: &str = "mergetrainpause";
/// Every provider call gives up after this long (and is retried).
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a pause reconciliation reads besides the pause.
pub struct PauseContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The alarms in scope, for `resumeWhen`.
    pub alarms: Store<Alarm>,
}

impl Reconciles for PauseContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// The alarms `resumeWhen` selects, and those named but missing.
fn read_alarms(
    pause: &MergeTrainPause,
    namespace: &str,
    store: &Store<Alarm>,
) -> (Vec<ClearReading>, Vec<String>) {
    let Some(condition) = &pause.spec.resume_when else {
        return (Vec::new(), Vec::new());
    };
    let mut missing = Vec::new();
    let readings = attach::attached(
        &condition.alarms,
        "the resumeWhen alarm selector",
        namespace,
        store,
        &mut missing,
    )
    .iter()
    .map(|alarm| {
        let status = alarm.status.as_ref();
        ClearReading {
            name: alarm.name_any(),
            state: status.and_then(|s| s.state),
            since: status
                .and_then(|s| s.last_transition_time.as_ref())
                .map(|t| t.0),
        }
    })
    .collect();
    (readings, missing)
}

/// Reads one key of a Secret with a `get` by name.
async fn read_secret(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<Vec<u8>, ProviderError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api.get_opt(&reference.name).await.map_err(|error| {
        ProviderError::Settings(format!(
            "cannot read Secret {namespace}/{}: {error}",
            reference.name
        ))
    })?;
    let secret = secret.ok_or_else(|| {
        ProviderError::Settings(format!(
            "Secret {namespace}/{} not found; create it with the key {:?}",
            reference.name, reference.key
        ))
    })?;
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| {
            ProviderError::Settings(format!(
                "Secret {namespace}/{} has no key {:?}",
                reference.name, reference.key
            ))
        })
}

/// The provider `spec` names, with its Secret read.
async fn provider_for(
    client: &Client,
    outbound: &Outbound,
    namespace: &str,
    spec: &MergeTrainPauseSpec,
) -> Result<AnyProvider, ProviderError> {
    let provider = &spec.train.provider;
    match provider.type_ {
        ProviderType::Gate => Ok(AnyProvider::Gate(Gate)),
        ProviderType::GitLab => {
            let settings = provider.gitlab.as_ref().ok_or_else(|| {
                ProviderError::Settings("provider type GitLab needs provider.gitlab".to_owned())
            })?;
            let token = read_secret(client, namespace, &settings.token_secret_ref).await?;
            let token = String::from_utf8(token).map_err(|_| {
                ProviderError::Settings("the GitLab token is not UTF-8 text".to_owned())
            })?;
            gitlab::GitLab::new(outbound, settings, token, PROVIDER_TIMEOUT)
                .map(AnyProvider::GitLab)
        }
        ProviderType::Webhook => {
            let settings = provider.webhook.as_ref().ok_or_else(|| {
                ProviderError::Settings("provider type Webhook needs provider.webhook".to_owned())
            })?;
            let key = read_secret(client, namespace, &settings.secret_ref).await?;
            webhook::Webhook::new(outbound, &settings.url, key, PROVIDER_TIMEOUT)
                .map(AnyProvider::Webhook)
        }
    }
}

/// Carries out one provider call; the error in words.
async fn call(
    cx: &PauseContext,
    pause: &MergeTrainPause,
    world: &World<'_>,
    operation: Operation,
) -> Result<plan::Report, String> {
    let namespace = pause.namespace().unwrap_or_default();
    let request = PauseRequest {
        namespace: namespace.clone(),
        name: pause.name_any(),
        train: pause.spec.train.train.clone(),
        reason: pause.spec.reason.clone(),
        ticket: pause.spec.ticket.clone(),
        expires_at: plan::expires_at(world).map(|at| at.to_string()),
    };
    let provider_name = format!("{:?}", pause.spec.train.provider.type_);
    let provider = provider_for(&cx.ctx.client, &cx.ctx.outbound, &namespace, &pause.spec);
    let outcome = match provider.await {
        Ok(provider) => match operation {
            Operation::Prepare => provider.prepare(&request).await,
            Operation::Pause => provider.pause(&request).await,
            Operation::Resume => {
                provider
                    .resume(&request, world.status.restore.as_ref())
                    .await
            }
        },
        Err(error) => Err(error),
    };
    let result = match &outcome {
        Ok(_) => "ok",
        Err(error) => error.reason(),
    };
    cx.ctx
        .metrics
        .provider_calls
        .with_label_values(&[provider_name.as_str(), result])
        .inc();
    outcome.map_err(|error| error.to_string())
}

/// Adds or removes this controller's finalizer, on condition that the
/// pause is unchanged since it was read.
async fn set_finalizer(
    api: &Api<MergeTrainPause>,
    pause: &MergeTrainPause,
    held: bool,
) -> Result<()> {
    let mut finalizers: Vec<String> = pause
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if held {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": pause.resource_version(),
        }
    });
    api.patch(
        &pause.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Reconciles one pause.
#[tracing::instrument(skip_all, fields(pause = %pause.name_any(), namespace = pause.namespace()))]
pub async fn reconcile(pause: Arc<MergeTrainPause>, cx: Arc<PauseContext>) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        return Ok(Action::await_change());
    };

    let namespace = pause.namespace().unwrap_or_default();
    let api: Api<MergeTrainPause> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = pause.meta().deletion_timestamp.is_some();
    let held = pause.finalizers().iter().any(|f| f == FINALIZER);
    if !held {
        if !deleting {
            // The finalizer comes before any provider call, so that a
            // deletion can never skip the resume.
            set_finalizer(&api, &pause, true).await?;
        }
        return Ok(Action::await_change());
    }

    let (alarms, missing) = read_alarms(&pause, &namespace, &cx.alarms);
    let status = pause.status.clone().unwrap_or_default();
    let world = World {
        spec: &pause.spec,
        status: &status,
        generation: pause.meta().generation.unwrap_or_default(),
        created: pause.meta().creation_timestamp.as_ref().map(|t| t.0),
        deleting,
        alarms: &alarms,
        missing: &missing,
        now: Timestamp::now(),
    };
    let decision = match plan::decide(&world) {
        Plan::Release => {
            set_finalizer(&api, &pause, false).await?;
            return Ok(Action::await_change());
        }
        Plan::Settle(decision) => *decision,
        Plan::Call(operation) => {
            let outcome = call(&cx, &pause, &world, operation).await;
            // The outcome is recorded at the time it arrived.
            let world = World {
                now: Timestamp::now(),
                ..world.clone()
            };
            plan::record(&world, operation, outcome)
        }
    };

    let wrote = decision.status != status;
    if wrote {
        ctx.apply_status(&api, &pause, MANAGER, &decision.status)
            .await?;
    }
    for note in &decision.notes {
        let evidence = Evidence {
            ticket: pause.spec.ticket.clone(),
            ..Evidence::default()
        };
        ctx.publish_decision(pause.as_ref(), evidence, note).await;
    }
    if decision.release {
        // Resumed and recorded: the pause may go. Our status write changed
        // the resource version, so read the pause's finalizers afresh.
        let current = api.get(&pause.name_any()).await.map_err(Error::Kube)?;
        set_finalizer(&api, &current, false).await?;
        return Ok(Action::await_change());
    }
    Ok(if wrote && decision.requeue_after.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(decision.requeue_after.max(Duration::from_millis(100)))
    })
}

/// The pauses in `alarm`'s namespace whose resume condition selects it.
fn pauses_resumed_by(
    pauses: &Store<MergeTrainPause>,
    alarm: &Alarm,
) -> Vec<ObjectRef<MergeTrainPause>> {
    let namespace = alarm.namespace();
    pauses
        .state()
        .iter()
        .filter(|pause| pause.namespace() == namespace)
        .filter(|pause| {
            pause
                .spec
                .resume_when
                .as_ref()
                .is_some_and(|c| attach::attaches(&c.alarms, alarm))
        })
        .map(|pause| ObjectRef::from(pause.as_ref()))
        .collect()
}

/// The merge-train pause controller for one scope, reading the scope's
/// shared caches; runs until `shutdown`.
pub fn controller(
    ctx: Arc<Context>,
    caches: &Caches,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let pauses = caches.pauses.store();
    let by_alarm = {
        let pauses = pauses.clone();
        move |alarm: Arc<Alarm>| pauses_resumed_by(&pauses, &alarm)
    };
    let cx = Arc::new(PauseContext {
        ctx,
        alarms: caches.alarms.store(),
    });
    let controller = Controller::for_shared_stream(caches.pauses.subscribe(), pauses)
        .watches_shared_stream(caches.alarms.subscribe(), by_alarm);
    run(
        controller,
        CONTROLLER,
        cx,
        reconcile,
        reconcile_all,
        shutdown,
    )
}
