//! The `MergeTrainException` controller: reads the exception, whether a
//! pause or window of its namespace names its train, and the uses the gate
//! queued ([`ExceptionUses`]); asks [`plan::decide`] for the next status; writes it
//! when it changed, publishes the events, and takes the recorded uses off
//! the queue. The gate ([`crate::server::gates`]) decides on its own clock
//! whether an exception works, with the same [`plan::expiry`].

pub mod plan;

use std::{sync::Arc, time::Duration};

use futures::{Stream, future::BoxFuture};
use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    Result,
    api::{ChangeWindow, MergeTrainException, MergeTrainPause, weblab_notifier::Evidence},
    cache::Caches,
    controllers::{Context, Reconciles, run},
};

use crate::view::exception_uses::{BATCH_INTERVAL, ExceptionUses};
use plan::World;

/// The field manager of this controller's status writes.
pub const MANAGER: &str = "weblab-operator/mergetrainexception";
const CONTROLLER: &str = "mergetrainexception";

/// What an exception reconciliation reads besides the exception.
pub struct ExceptionContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The pauses in scope (read only: does one name the train?).
    pub pauses: Store<MergeTrainPause>,
    /// The windows in scope (same).
    pub windows: Store<ChangeWindow>,
    /// The uses the gate queued.
    pub uses: Arc<ExceptionUses>,
}

impl Reconciles for ExceptionContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// Whether a pause or window in `namespace` names `train`.
fn train_known(cx: &ExceptionContext, namespace: &str, train: &str) -> bool {
    let in_namespace =
        |object_namespace: Option<&String>| object_namespace.is_some_and(|ns| ns == namespace);
    cx.pauses
        .find(|pause| {
            in_namespace(pause.metadata.namespace.as_ref()) && pause.spec.train.train == train
        })
        .is_some()
        || cx
            .windows
            .find(|window| {
                in_namespace(window.metadata.namespace.as_ref())
                    && window.spec.merge_trains.iter().any(|t| t == train)
            })
            .is_some()
}

/// Reconciles one exception.
#[tracing::instrument(skip_all, fields(exception = %exception.name_any(), namespace = exception.namespace()))]
pub async fn reconcile(
    exception: Arc<MergeTrainException>,
    cx: Arc<ExceptionContext>,
) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        // A follower keeps its queued uses until it leads.
        return Ok(Action::await_change());
    };
    let namespace = exception.namespace().unwrap_or_default();
    let name = exception.name_any();
    let uid = exception.uid().unwrap_or_default();
    let pending = cx.uses.pending(&namespace, &name, &uid);
    let status = exception.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let world = World {
        spec: &exception.spec,
        status: &status,
        generation: exception.meta().generation,
        created: exception.meta().creation_timestamp.as_ref().map(|t| t.0),
        train_known: train_known(&cx, &namespace, &exception.spec.train),
        pending: pending.as_ref(),
        recorded_at: cx.uses.recorded_at(&namespace, &name),
        now,
    };
    let decision = plan::decide(&world);
    let mut more_pending = false;
    if decision.status != status {
        let api: Api<MergeTrainException> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.apply_status(&api, &exception, MANAGER, &decision.status)
            .await?;
        if let Some(recorded) = &decision.recorded {
            more_pending = cx.uses.recorded(&namespace, &name, recorded, now);
            tracing::info!(
                uses = decision.status.uses,
                added = recorded.count,
                "recorded uses of the exception"
            );
        }
    }
    for note in &decision.notes {
        let evidence = Evidence {
            ticket: exception.spec.ticket.clone(),
            ..Evidence::default()
        };
        ctx.publish_decision(exception.as_ref(), evidence, note)
            .await;
    }
    let mut wait = decision.requeue_after;
    if more_pending {
        // Uses that arrived during the write wait for the next batch.
        wait = Some(wait.map_or(BATCH_INTERVAL, |w| w.min(BATCH_INTERVAL)));
    }
    Ok(wait.map_or_else(Action::await_change, |wait| {
        Action::requeue(wait.max(Duration::from_millis(100)))
    }))
}

/// The exception controller for one scope, reading the scope's shared
/// caches; runs until `shutdown`. Each exception the gate lets through for
/// the first time since its last record is reconciled at once, and so is
/// each exception whose train a pause or window starts or stops naming.
pub fn controller(
    ctx: Arc<Context>,
    caches: &Caches,
    namespace: Option<&str>,
    uses: Arc<ExceptionUses>,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let exceptions = caches.exceptions.store();
    let used = uses.subscribe(namespace);
    let by_pause = {
        let exceptions = exceptions.clone();
        move |pause: Arc<MergeTrainPause>| {
            exceptions_for(
                &exceptions,
                pause.namespace(),
                std::slice::from_ref(&pause.spec.train.train),
            )
        }
    };
    let by_window = {
        let exceptions = exceptions.clone();
        move |window: Arc<ChangeWindow>| {
            exceptions_for(&exceptions, window.namespace(), &window.spec.merge_trains)
        }
    };
    let cx = Arc::new(ExceptionContext {
        ctx,
        pauses: caches.pauses.store(),
        windows: caches.windows.store(),
        uses,
    });
    let controller = Controller::for_shared_stream(caches.exceptions.subscribe(), exceptions)
        .watches_shared_stream(caches.pauses.subscribe(), by_pause)
        .watches_shared_stream(caches.windows.subscribe(), by_window)
        .reconcile_on(used);
    run(
        controller,
        CONTROLLER,
        cx,
        reconcile,
        reconcile_all,
        shutdown,
    )
}

/// The exceptions in `namespace` for one of `trains`.
fn exceptions_for(
    exceptions: &Store<MergeTrainException>,
    namespace: Option<String>,
    trains: &[String],
) -> Vec<ObjectRef<MergeTrainException>> {
    exceptions
        .state()
        .iter()
        .filter(|exception| exception.namespace() == namespace)
        .filter(|exception| trains.contains(&exception.spec.train))
        .map(|exception| ObjectRef::from(exception.as_ref()))
        .collect()
}
