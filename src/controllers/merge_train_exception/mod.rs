//! The `MergeTrainException` controller: reads the exception, whether a
//! pause or window of its namespace names its train, and the uses the gate
//! queued ([`uses`]); asks [`plan::decide`] for the next status; writes it
//! when it changed, publishes the events, and takes the recorded uses off
//! the queue. The gate ([`crate::server::gates`]) decides on its own clock
//! whether an exception works, with the same [`plan::expiry`].

pub mod plan;
pub mod uses;

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{Controller, controller::Action, reflector::Store, watcher},
};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    api::{ChangeWindow, MergeTrainException, MergeTrainPause},
    controllers::{Context, error_policy, scoped, settle},
};

use plan::World;
use uses::ExceptionUses;

/// The field manager of this controller's status writes.
pub const MANAGER: &str = "weblab-operator/mergetrainexception";
const CONTROLLER: &str = "mergetrainexception";
const KIND: &str = "MergeTrainException";

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
    let reference = exception.object_ref(&());
    for note in &decision.notes {
        ctx.publish(&reference, KIND, note).await;
    }
    let mut wait = decision.requeue_after;
    if more_pending {
        // Uses that arrived during the write wait for the next batch.
        wait = Some(wait.map_or(plan::BATCH_INTERVAL, |w| w.min(plan::BATCH_INTERVAL)));
    }
    Ok(wait.map_or_else(Action::await_change, |wait| {
        Action::requeue(wait.max(Duration::from_millis(100)))
    }))
}

/// Builds the controller for one scope from the pause and window caches of
/// that scope; returns the exception cache (which the gate serves from) and
/// the future that runs the controller. Each exception the gate lets
/// through for the first time since its last record is reconciled at once.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    trains: (Store<MergeTrainPause>, Store<ChangeWindow>),
    uses: Arc<ExceptionUses>,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> (Store<MergeTrainException>, BoxFuture<'static, ()>) {
    let client = ctx.client.clone();
    let config = watcher::Config::default().any_semantic();
    let controller = Controller::new(scoped::<MergeTrainException>(&client, namespace), config);
    let exceptions = controller.store();
    let used = uses.subscribe(namespace);
    let (pauses, windows) = trains;
    let cx = Arc::new(ExceptionContext {
        ctx,
        pauses,
        windows,
        uses,
    });
    let run = controller
        .reconcile_on(used)
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            |object, cx| async move {
                let result = reconcile(Arc::clone(&object), Arc::clone(&cx)).await;
                settle(&cx.ctx, object.as_ref(), result)
            },
            |object, error: &Error, cx| error_policy(CONTROLLER, object.as_ref(), error, &cx.ctx),
            cx,
        )
        .for_each(|_| futures::future::ready(()))
        .boxed();
    (exceptions, run)
}
