//! The `ChangeWindow` controller: evaluates each window with
//! [`window::evaluate`] against the alarms of its namespace, writes
//! `status.open/reason/nextTransition` only when they change, and wakes up at
//! the next calendar transition. Alarms are watched, so an alarm entering
//! `ALARM` closes the windows that select it at once.

pub mod window;

use std::{sync::Arc, time::Duration};

use futures::{Stream, future::BoxFuture};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    core::{Selector, SelectorExt},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    Result,
    api::{
        Alarm, ChangeWindow,
        change_window::ChangeWindowStatus,
        conditions::{self, DesiredCondition},
        weblab_notifier::Evidence,
    },
    cache::Caches,
    controllers::{Context, Note, Reconciles, run},
};

use window::{Verdict, WindowAlarm};

/// The field manager of this controller's status writes.
pub const MANAGER: &str = "weblab-operator/changewindow";
const CONTROLLER: &str = "changewindow";

/// How long a window without a forecast transition waits before it is
/// evaluated again: a safety net; alarms and spec changes arrive by watch.
const RESYNC: Duration = Duration::from_secs(3600);

/// Wakes a little after a transition rather than on it, so that the
/// evaluation lands on the new side of the bound.
const AFTER_TRANSITION: Duration = Duration::from_millis(50);

/// What a window reconciliation reads besides the window.
pub struct WindowContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The alarms in scope.
    pub alarms: Store<Alarm>,
}

impl Reconciles for WindowContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

/// The window's alarms, as the pure evaluation reads them.
fn alarms_of(namespace: &str, store: &Store<Alarm>) -> Vec<WindowAlarm> {
    store
        .state()
        .iter()
        .filter(|alarm| alarm.namespace().as_deref() == Some(namespace))
        .map(|alarm| WindowAlarm {
            name: alarm.name_any(),
            labels: alarm.labels().clone(),
            severity: alarm.spec.severity,
            state: alarm.status.as_ref().and_then(|s| s.state),
        })
        .collect()
}

/// The status a verdict (or an evaluation error) asks for.
fn desired_status(
    window: &ChangeWindow,
    outcome: &Result<Verdict, window::WindowError>,
    now: Timestamp,
) -> ChangeWindowStatus {
    let current = window.status.clone().unwrap_or_default();
    let generation = window.meta().generation;
    let (open, reason, next_transition, ready) = match outcome {
        Ok(verdict) => (
            Some(verdict.open),
            Some(verdict.reason.clone()),
            verdict.next_transition.map(Time),
            DesiredCondition::new(
                conditions::READY,
                true,
                if verdict.open { "Open" } else { "Closed" },
                verdict.reason.clone(),
            ),
        ),
        // A window that cannot be evaluated is closed: dial-ups and merges
        // wait, moves towards safety never look at it.
        Err(error) => (
            Some(false),
            Some(format!("closed: {error}")),
            None,
            DesiredCondition::new(conditions::READY, false, "InvalidSpec", error.to_string()),
        ),
    };
    let stalled = DesiredCondition::new(
        conditions::STALLED,
        outcome.is_err(),
        if outcome.is_err() {
            "InvalidSpec"
        } else {
            "Evaluated"
        },
        match outcome {
            Ok(_) => "the window is evaluated".to_owned(),
            Err(error) => error.to_string(),
        },
    );
    ChangeWindowStatus {
        observed_generation: generation,
        open,
        reason,
        next_transition,
        conditions: conditions::merge(
            &current.conditions,
            &[ready, stalled],
            generation,
            &Time(now),
        ),
    }
}

/// The events a status change is worth.
fn notes(
    before: &ChangeWindowStatus,
    after: &ChangeWindowStatus,
    outcome_error: Option<&str>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if before.open != after.open {
        let reason = after.reason.clone().unwrap_or_default();
        notes.push(match after.open {
            Some(true) => Note::normal("WindowOpened", reason),
            _ => Note::normal("WindowClosed", reason),
        });
    }
    if let Some(error) = outcome_error
        && before.reason != after.reason
    {
        notes.push(Note::warning("InvalidSpec", error.to_owned()));
    }
    notes
}

/// Reconciles one window.
#[tracing::instrument(skip_all, fields(window = %window.name_any(), namespace = window.namespace()))]
pub async fn reconcile(window: Arc<ChangeWindow>, cx: Arc<WindowContext>) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        return Ok(Action::await_change());
    };

    let namespace = window.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let outcome = window::evaluate(&window.spec, now, &alarms_of(&namespace, &cx.alarms));
    let before = window.status.clone().unwrap_or_default();
    let after = desired_status(&window, &outcome, now);
    if after != before {
        let api: Api<ChangeWindow> = Api::namespaced(ctx.client.clone(), &namespace);
        ctx.apply_status(&api, &window, MANAGER, &after).await?;
        let error = outcome.as_ref().err().map(ToString::to_string);
        for note in notes(&before, &after, error.as_deref()) {
            ctx.publish_decision(window.as_ref(), Evidence::default(), &note)
                .await;
        }
    }
    let wait = outcome
        .ok()
        .and_then(|verdict| verdict.next_transition)
        .map(|next| until(now, next) + AFTER_TRANSITION)
        .map_or(RESYNC, |wait| wait.min(RESYNC));
    Ok(Action::requeue(wait))
}

/// The time from `now` to `then`, zero when it has passed.
pub fn until(now: Timestamp, then: Timestamp) -> Duration {
    let millis = then.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// The windows in `alarm`'s namespace whose alarm gate selects it (a
/// selector that does not parse counts, so its error shows sooner), and
/// those closed now: an alarm whose labels changed may no longer be
/// selected, and the window it closed must look again.
fn windows_selecting(windows: &Store<ChangeWindow>, alarm: &Alarm) -> Vec<ObjectRef<ChangeWindow>> {
    let namespace = alarm.namespace();
    windows
        .state()
        .iter()
        .filter(|window| window.namespace() == namespace)
        .filter(|window| {
            let closed = window.status.as_ref().and_then(|s| s.open) == Some(false);
            window
                .spec
                .closed_while_alarms
                .as_ref()
                .is_some_and(|gate| {
                    closed
                        || Selector::try_from(gate.selector.clone())
                            .map_or(true, |selector| selector.matches(alarm.labels()))
                })
        })
        .map(|window| ObjectRef::from(window.as_ref()))
        .collect()
}

/// The change-window controller for one scope, reading the scope's shared
/// caches; runs until `shutdown`.
pub fn controller(
    ctx: Arc<Context>,
    caches: &Caches,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let windows = caches.windows.store();
    let by_alarm = {
        let windows = windows.clone();
        move |alarm: Arc<Alarm>| windows_selecting(&windows, &alarm)
    };
    let cx = Arc::new(WindowContext {
        ctx,
        alarms: caches.alarms.store(),
    });
    let controller = Controller::for_shared_stream(caches.windows.subscribe(), windows)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn window(status: Option<ChangeWindowStatus>) -> ChangeWindow {
        let mut window: ChangeWindow = serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": "protocol", "namespace": "team", "generation": 1},
            "spec": {
                "timeZone": "America/Los_Angeles",
                "weekly": [{"days": ["Mon", "Tue", "Wed", "Thu"], "start": "00:00", "end": "18:00"}]
            }
        }))
        .expect("a valid window");
        window.status = status;
        window
    }

    #[test]
    fn a_settled_window_plans_no_write_and_no_event() {
        let now: Timestamp = "2026-11-17T18:00:00Z".parse().expect("instant");
        let outcome = window::evaluate(&window(None).spec, now, &[]);
        let first = desired_status(&window(None), &outcome, now);
        assert_eq!(first.open, Some(true));
        let events = notes(&ChangeWindowStatus::default(), &first, None);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "WindowOpened");

        let later = now
            .checked_add(jiff::SignedDuration::from_mins(5))
            .expect("instant");
        let settled = window(Some(first.clone()));
        let outcome = window::evaluate(&settled.spec, later, &[]);
        let again = desired_status(&settled, &outcome, later);
        assert_eq!(again, first, "nothing changed, so nothing is written");
        assert!(notes(&first, &again, None).is_empty());
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let now: Timestamp = "2026-11-17T18:00:00Z".parse().expect("instant");
        let past: Timestamp = "2026-11-17T17:00:00Z".parse().expect("instant");
        assert_eq!(until(now, past), Duration::ZERO);
        assert_eq!(until(past, now), Duration::from_secs(3600));
    }
}
