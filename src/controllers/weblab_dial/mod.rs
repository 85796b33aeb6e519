//! The `WeblabDial` controller: reads the dial, its alarms and its change
//! window from the caches, asks [`plan::decide`] what to do, and writes the
//! status and events. Alarm and window changes reach the dials that attach
//! them through the watches, at once.

pub mod plan;

use std::sync::Arc;

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
    api::{Alarm, ChangeWindow, MergeTrainPause, WeblabDial, alarm::AlarmState},
    cache::Caches,
    controllers::{Context, Reconciles, attach, merge_train_pause, notifier, run},
};

use plan::{ACTION_ANNOTATION, AlarmReading, WindowGate, World};

/// The field manager of this controller's status writes.
pub const MANAGER: &str = "weblab-operator/weblabdial";
const CONTROLLER: &str = "weblabdial";

/// What a dial reconciliation reads besides the dial itself.
pub struct DialContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The alarms in scope.
    pub alarms: Store<Alarm>,
    /// The change windows in scope.
    pub windows: Store<ChangeWindow>,
    /// The merge-train pauses in scope, for `spec.rollback.pauseMergeTrains`.
    pub pauses: Store<MergeTrainPause>,
}

impl Reconciles for DialContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// Reconciles one dial.
#[tracing::instrument(skip_all, fields(dial = %dial.name_any(), namespace = dial.namespace()))]
pub async fn reconcile(dial: Arc<WeblabDial>, cx: Arc<DialContext>) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        return Ok(Action::await_change());
    };

    let namespace = dial.namespace().unwrap_or_default();
    let status = dial.status.clone().unwrap_or_default();
    let mut missing = Vec::new();
    let alarms: Vec<AlarmReading> = attach::attached(
        &dial.spec.rollback.alarms,
        "the alarm selector",
        &namespace,
        &cx.alarms,
        &mut missing,
    )
    .iter()
    .map(|alarm| reading(alarm))
    .collect();
    let window = read_window(&dial, &namespace, &cx.windows, &mut missing);
    let request = dial
        .annotations()
        .get(ACTION_ANNOTATION)
        .map(String::as_str)
        .filter(|text| {
            status
                .last_action
                .as_ref()
                .is_none_or(|handled| handled.request != *text)
        });
    let now = Timestamp::now();
    let mut decision = plan::decide(&World {
        spec: &dial.spec,
        generation: dial.meta().generation.unwrap_or_default(),
        status: &status,
        alarms: &alarms,
        missing: &missing,
        window,
        request,
        now,
    });
    // After a rollback by alarm, whether it helped.
    let (escalation, evidence) = notifier::escalation::for_dial(
        &dial.spec,
        &decision.status,
        status.escalation.as_ref(),
        &alarms,
        now,
    );
    decision.status.escalation = escalation.status;
    if let Some(wake) = escalation.wake {
        decision.requeue_after = if decision.requeue_after.is_zero() {
            wake
        } else {
            decision.requeue_after.min(wake)
        };
    }

    let wrote = decision.status != status;
    if wrote {
        let api: Api<WeblabDial> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.apply_status(&api, &dial, MANAGER, &decision.status)
            .await?;
    }
    for note in &decision.notes {
        let evidence = notifier::evidence::dial(&decision.status, note);
        ctx.publish_decision(dial.as_ref(), evidence, note).await;
    }
    if let Some(note) = &escalation.note {
        let only = dial.spec.rollback.escalation.as_ref();
        let only = only.and_then(|e| e.notifier.as_deref());
        ctx.publish_to(dial.as_ref(), evidence, note, only).await;
    }
    // Merge trains stay paused while an alarm holds the dial rolled back.
    let trains = plan::merge_train_pauses(&dial.name_any(), &dial.spec, &decision.status);
    merge_train_pause::owned::sync(&ctx.client, &cx.pauses, dial.as_ref(), &trains).await?;
    // After a write, our own watch event brings the fresh object back: acting
    // sooner would decide from a stale cache.
    Ok(if wrote && decision.requeue_after.is_zero() {
        Action::await_change()
    } else {
        Action::requeue(decision.requeue_after)
    })
}

/// An alarm's state as a dial sees it: never evaluated counts as no data.
pub fn reading(alarm: &Alarm) -> AlarmReading {
    let status = alarm.status.as_ref();
    let state = status
        .and_then(|s| s.state)
        .unwrap_or(AlarmState::InsufficientData);
    AlarmReading {
        name: alarm.name_any(),
        state,
        severity: alarm.spec.severity,
        realm: alarm.spec.realm.clone(),
        // A guardrail decides per realm: only its realms in that state count.
        realms: alarm.spec.guardrail.as_ref().map(|_| {
            status
                .map(|s| {
                    s.realms
                        .iter()
                        .filter(|r| r.state == state)
                        .map(|r| r.realm.clone())
                        .collect()
                })
                .unwrap_or_default()
        }),
        value: status.and_then(|s| s.value),
        threshold: alarm.spec.prometheus.as_ref().map(|p| p.threshold),
    }
}

fn read_window(
    dial: &WeblabDial,
    namespace: &str,
    store: &Store<ChangeWindow>,
    missing: &mut Vec<String>,
) -> WindowGate {
    let Some(reference) = &dial.spec.change_window_ref else {
        return WindowGate::Open;
    };
    let Some(window) = store.get(&ObjectRef::new(&reference.name).within(namespace)) else {
        missing.push(format!("ChangeWindow {:?} not found", reference.name));
        return WindowGate::Open;
    };
    plan::window_gate(&reference.name, window.status.as_ref())
}

/// The dials in `alarm`'s namespace that attach it.
fn dials_attaching(dials: &Store<WeblabDial>, alarm: &Alarm) -> Vec<ObjectRef<WeblabDial>> {
    let namespace = alarm.namespace();
    dials
        .state()
        .iter()
        .filter(|dial| dial.namespace() == namespace)
        .filter(|dial| attach::attaches(&dial.spec.rollback.alarms, alarm))
        .map(|dial| ObjectRef::from(dial.as_ref()))
        .collect()
}

/// The dials in `window`'s namespace that reference it.
fn dials_gated_by(dials: &Store<WeblabDial>, window: &ChangeWindow) -> Vec<ObjectRef<WeblabDial>> {
    let namespace = window.namespace();
    let name = window.name_any();
    dials
        .state()
        .iter()
        .filter(|dial| dial.namespace() == namespace)
        .filter(|dial| {
            dial.spec
                .change_window_ref
                .as_ref()
                .is_some_and(|r| r.name == name)
        })
        .map(|dial| ObjectRef::from(dial.as_ref()))
        .collect()
}

/// The dial controller for one scope (a namespace, or all), reading the
/// scope's shared caches; runs until `shutdown`.
pub fn controller(
    ctx: Arc<Context>,
    caches: &Caches,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let dials = caches.dials.store();
    let by_alarm = {
        let dials = dials.clone();
        move |alarm: Arc<Alarm>| dials_attaching(&dials, &alarm)
    };
    let by_window = {
        let dials = dials.clone();
        move |window: Arc<ChangeWindow>| dials_gated_by(&dials, &window)
    };
    let cx = Arc::new(DialContext {
        ctx,
        alarms: caches.alarms.store(),
        windows: caches.windows.store(),
        pauses: caches.pauses.store(),
    });
    let controller = Controller::for_shared_stream(caches.dials.subscribe(), dials)
        .watches_shared_stream(caches.alarms.subscribe(), by_alarm)
        .watches_shared_stream(caches.windows.subscribe(), by_window)
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
