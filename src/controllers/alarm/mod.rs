//! The `Alarm` controller. Prometheus alarms are pulled: the leader queries
//! each at its interval and adds a datapoint ([`evaluate`]). Alertmanager
//! alarms are pushed: every replica's webhook records the alerts it
//! receives ([`receive`]), and the leader marks alerts that stopped being
//! re-sent as stale. Dials see the state through their own watch on alarms.

pub mod alertmanager;
pub mod evaluate;
pub mod guardrail;
pub mod inbox;
pub mod intake;
pub mod prometheus;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, future::BoxFuture};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{Controller, controller::Action},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    api::{
        Alarm,
        alarm::{AlarmState, AlarmStatus, AlertmanagerSource, PrometheusSource},
        common::{Duration as ApiDuration, SecretKeyRef, micro_time},
        conditions::{self, DesiredCondition},
    },
    cache::Caches,
    controllers::{Context, Note, Reconciles, notifier, read_secret_key, run},
};

use alertmanager::{Delivery, Matchers};
use evaluate::Sample;

/// The field manager of alarm status writes (controller and webhook alike).
pub const MANAGER: &str = "weblab-operator/alarm";
const CONTROLLER: &str = "alarm";
/// How often a webhook write is retried after a conflict.
const WRITE_ATTEMPTS: usize = 5;
/// The longest a failing alarm waits between queries (unless its interval
/// is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Doublings of the interval at most: a source that comes back is queried
/// again within eight intervals. Each query costs at most one capped answer
/// and one status write, so this bounds the load a failing alarm makes.
const MAX_DOUBLINGS: u32 = 3;

/// The last query of one alarm.
#[derive(Clone, Copy)]
struct Queried {
    generation: i64,
    at: Instant,
    /// How long until the next query: the interval, or longer after
    /// failures.
    wait: Duration,
    /// Failed queries in a row.
    failures: u32,
}

/// How long an alarm waits before its next query: its interval, doubled
/// for each failed query in a row ([`MAX_DOUBLINGS`] times at most), up to
/// [`MAX_BACKOFF`] (or the interval when that is longer). A source that
/// fails, answers too much or is refused is asked less often, and never
/// holds up other alarms (each reconcile runs on its own).
fn next_wait(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(MAX_DOUBLINGS);
    interval
        .saturating_mul(factor)
        .min(MAX_BACKOFF.max(interval))
}

/// What an alarm reconciliation needs.
pub struct AlarmContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// When this replica last queried each Prometheus alarm (by uid), for
    /// which generation, at which interval: a reconcile triggered by our own
    /// status write does not query again before the interval.
    queried: Mutex<HashMap<String, Queried>>,
}

impl Reconciles for AlarmContext {
    fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl AlarmContext {
    /// A context for the alarm controller.
    pub fn new(ctx: Arc<Context>) -> Self {
        AlarmContext {
            ctx,
            queried: Mutex::new(HashMap::new()),
        }
    }

    /// How long until the alarm, evaluated every `interval` (longer after
    /// failures), is due, or `None` when it is due now.
    fn not_due(&self, alarm: &Alarm, interval: Duration) -> Option<Duration> {
        let mut wait = interval;
        let generation = alarm.meta().generation.unwrap_or_default();
        let remembered = self
            .queried
            .lock()
            .ok()
            .and_then(|queried| queried.get(&alarm.uid().unwrap_or_default()).copied());
        let elapsed = match remembered {
            Some(last) if last.generation == generation => {
                wait = last.wait;
                last.at.elapsed()
            }
            // A new leader, or a new spec: go by the last recorded datapoint
            // of this generation, so a failover does not query twice.
            _ => {
                let status = alarm.status.as_ref()?;
                if status.observed_generation != Some(generation) {
                    return None;
                }
                let last = status.datapoints.last()?;
                Timestamp::now()
                    .duration_since(last.at.0)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            }
        };
        wait.checked_sub(elapsed).filter(|left| !left.is_zero())
    }

    /// Records a query that just ended (`failed` or not) and returns how
    /// long until the next one.
    fn remember(&self, alarm: &Alarm, interval: Duration, failed: bool) -> Duration {
        let generation = alarm.meta().generation.unwrap_or_default();
        let uid = alarm.uid().unwrap_or_default();
        let Ok(mut queried) = self.queried.lock() else {
            return interval;
        };
        let failures = match queried.get(&uid) {
            Some(last) if failed && last.generation == generation => last.failures + 1,
            _ if failed => 1,
            _ => 0,
        };
        let wait = next_wait(interval, failures);
        // Deleted alarms are never reconciled again: forget whatever has
        // not been queried for two of its waits.
        queried.retain(|_, last| last.at.elapsed() < 2 * last.wait + Duration::from_secs(60));
        queried.insert(
            uid,
            Queried {
                generation,
                at: Instant::now(),
                wait,
                failures,
            },
        );
        wait
    }
}

/// Reconciles one alarm (leader only).
#[tracing::instrument(skip_all, fields(alarm = %alarm.name_any(), namespace = alarm.namespace()))]
pub async fn reconcile(alarm: Arc<Alarm>, cx: Arc<AlarmContext>) -> Result<Action> {
    let ctx = &cx.ctx;
    let Some(_timer) = ctx.begin(CONTROLLER) else {
        return Ok(Action::await_change());
    };
    match (
        &alarm.spec.prometheus,
        &alarm.spec.alertmanager,
        &alarm.spec.guardrail,
    ) {
        (Some(source), _, _) => pull(&alarm, source, &cx).await,
        (None, Some(source), _) => review_alerts(&alarm, source, ctx).await,
        (None, None, Some(source)) => guardrail::evaluate(&alarm, source, &cx).await,
        // The API server rejects an alarm without a source.
        (None, None, None) => Ok(Action::await_change()),
    }
}

/// Queries Prometheus when the alarm is due and records the datapoint.
async fn pull(alarm: &Alarm, source: &PrometheusSource, cx: &AlarmContext) -> Result<Action> {
    if let Some(wait) = cx.not_due(alarm, source.effective_interval()) {
        return Ok(Action::requeue(wait));
    }
    let ctx = &cx.ctx;
    let namespace = alarm.namespace().unwrap_or_default();
    let token = bearer_token(ctx, &namespace, source.bearer_token_secret_ref.as_ref()).await;
    let (sample, volume) = match &token {
        Ok(token) => {
            let query = |promql| {
                prometheus::query(
                    &ctx.outbound,
                    &source.url,
                    promql,
                    source.effective_timeout(),
                    token.as_deref(),
                )
            };
            // The signal and its volume at the same instant.
            match &source.traffic_floor {
                None => (query(&source.query).await, None),
                Some(floor) => {
                    let (sample, volume) =
                        futures::join!(query(&source.query), query(&floor.query));
                    (sample, Some(volume))
                }
            }
        }
        Err(message) => (Sample::Failed(message.clone()), None),
    };
    // Remembered before the status write, so that a failing write does not
    // make the alarm due again at once.
    let failed = matches!(sample, Sample::Failed(_)) || matches!(volume, Some(Sample::Failed(_)));
    let wait = cx.remember(alarm, source.effective_interval(), failed);

    let generation = alarm.meta().generation.unwrap_or_default();
    let status = alarm.status.clone().unwrap_or_default();
    // Datapoints of an earlier spec (another query or threshold) do not count.
    let previous = if status.observed_generation == Some(generation) {
        status.clone()
    } else {
        AlarmStatus {
            state: status.state,
            ..AlarmStatus::default()
        }
    };
    let now = Time(Timestamp::now());
    let evaluation = evaluate::evaluate(source, &previous, sample, volume, now.clone());
    ctx.metrics
        .alarm_evaluations
        .with_label_values(&[evaluation.outcome.as_str()])
        .inc();
    if let Some(error) = &evaluation.source_error {
        tracing::info!(
            %error,
            retry_in = %ApiDuration::from(wait),
            "the Prometheus query failed; backing off"
        );
    }
    let desired = source_conditions(
        evaluation.source_error.as_ref(),
        ApiDuration::from(source.effective_interval()),
        wait,
    );
    let next = AlarmStatus {
        observed_generation: Some(generation),
        state: Some(evaluation.state),
        value: evaluation.value,
        reason: Some(evaluation.reason),
        last_transition_time: if status.state == Some(evaluation.state) {
            status.last_transition_time.clone()
        } else {
            Some(micro_time(now.0))
        },
        datapoints: evaluation.datapoints,
        alerts: Vec::new(),
        alert_groups: Vec::new(),
        realms: Vec::new(),
        conditions: conditions::merge(&status.conditions, &desired, Some(generation), &now),
    };
    let api: Api<Alarm> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.apply_status(&api, alarm, MANAGER, &next).await?;

    let mut notes: Vec<Note> = transition(alarm, &status, &next).into_iter().collect();
    let newly_degraded = |s: &AlarmStatus| conditions::is_true(&s.conditions, conditions::DEGRADED);
    if let Some(error) = &evaluation.source_error
        && !newly_degraded(&status)
    {
        notes.push(Note::warning(
            "SourceUnavailable",
            format!("cannot query Prometheus at {}: {error}", source.url),
        ));
    }
    for note in &notes {
        publish(ctx, alarm, &status, &next, note).await;
    }
    Ok(Action::requeue(wait))
}

/// The bearer token for Prometheus, when the source names one.
async fn bearer_token(
    ctx: &Context,
    namespace: &str,
    key: Option<&SecretKeyRef>,
) -> Result<Option<String>, String> {
    match key {
        None => Ok(None),
        Some(key) => read_secret_key(&ctx.client, namespace, key).await.map(Some),
    }
}

/// `Ready` and `Degraded` after an evaluation of a pulled source.
fn source_conditions(
    error: Option<&String>,
    interval: ApiDuration,
    wait: Duration,
) -> Vec<DesiredCondition> {
    match error {
        None => vec![
            DesiredCondition::new(
                conditions::READY,
                true,
                "Evaluated",
                format!("queried every {interval}"),
            ),
            DesiredCondition::new(conditions::DEGRADED, false, "SourceAnswers", ""),
        ],
        Some(error) => {
            let message = format!("{error}; next query in {}", ApiDuration::from(wait));
            vec![
                DesiredCondition::new(
                    conditions::READY,
                    false,
                    "SourceUnavailable",
                    message.clone(),
                ),
                DesiredCondition::new(conditions::DEGRADED, true, "SourceUnavailable", message),
            ]
        }
    }
}

/// Marks recorded alerts stale when Alertmanager stopped re-sending them,
/// and reports matchers that do not compile.
async fn review_alerts(
    alarm: &Alarm,
    source: &AlertmanagerSource,
    ctx: &Context,
) -> Result<Action> {
    let generation = alarm.meta().generation.unwrap_or_default();
    let status = alarm.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let records = alertmanager::Records {
        alerts: status.alerts.clone(),
        groups: status.alert_groups.clone(),
    };
    let (mut next, assessment) =
        alertmanager::status_with(&status, records, source.stale_after.get(), &now);
    next.observed_generation = Some(generation);
    next.datapoints = Vec::new();
    let matchers = Matchers::compile(&source.matchers);
    let desired = match &matchers {
        Ok(_) => vec![
            DesiredCondition::new(
                conditions::READY,
                true,
                "Listening",
                "receives Alertmanager notifications at /v1/webhooks/alertmanager",
            ),
            DesiredCondition::new(conditions::STALLED, false, "Listening", ""),
        ],
        Err(error) => vec![
            DesiredCondition::new(conditions::READY, false, "InvalidMatcher", error.clone()),
            DesiredCondition::new(conditions::STALLED, true, "InvalidMatcher", error.clone()),
        ],
    };
    next.conditions = conditions::merge(&status.conditions, &desired, Some(generation), &now);
    if next != status {
        let api: Api<Alarm> =
            Api::namespaced(ctx.client.clone(), &alarm.namespace().unwrap_or_default());
        ctx.apply_status(&api, alarm, MANAGER, &next).await?;
        if let Some(note) = transition(alarm, &status, &next) {
            publish(ctx, alarm, &status, &next, &note).await;
        }
        if let Err(error) = &matchers
            && !conditions::is_true(&status.conditions, conditions::STALLED)
        {
            let note = Note::warning(
                "InvalidMatcher",
                format!("{error}; fix spec.alertmanager.matchers"),
            );
            publish(ctx, alarm, &status, &next, &note).await;
        }
    }
    Ok(assessment
        .stale_in
        .map_or_else(Action::await_change, Action::requeue))
}

/// Publishes `note` about `alarm`, which went from `before` to `after`, as
/// a decision for the notifiers, but for a first evaluation's `OK`, which
/// cleared nothing: an event only.
pub(crate) async fn publish(
    ctx: &Context,
    alarm: &Alarm,
    before: &AlarmStatus,
    after: &AlarmStatus,
    note: &Note,
) {
    if before.state.is_none()
        && after.state == Some(AlarmState::Ok)
        && note.reason == "AlarmCleared"
    {
        ctx.publish(&alarm.object_ref(&()), "Alarm", note).await;
    } else {
        let evidence = notifier::evidence::alarm(alarm, after);
        ctx.publish_decision(alarm, evidence, note).await;
    }
}

/// The event for a change of state, if the state changed.
fn transition(alarm: &Alarm, before: &AlarmStatus, after: &AlarmStatus) -> Option<Note> {
    let state = after.state?;
    if before.state == Some(state) {
        return None;
    }
    let message = format!(
        "{} ({}) is {state}: {}",
        alarm.name_any(),
        alarm.spec.severity,
        after.reason.as_deref().unwrap_or_default()
    );
    Some(match state {
        AlarmState::Alarm => Note::warning("AlarmFiring", message),
        AlarmState::InsufficientData => Note::warning("InsufficientData", message),
        AlarmState::Ok => Note::normal("AlarmCleared", message),
    })
}

/// Records `deliveries` (what notifications told `alarm`, in the order
/// they arrived) on any replica: the state comes from the
/// notifications, not from a cache, so followers may write it. A conflict
/// (another replica, or the leader's staleness check, wrote first) re-reads
/// the alarm and tries again. Returns the alarm as last written or read, for
/// the next write to start from. Callers serialise writes per alarm within
/// the process ([`inbox::AlertInbox`]), so conflicts come only from outside.
pub async fn receive(ctx: &Arc<Context>, alarm: Alarm, deliveries: &[&Delivery]) -> Result<Alarm> {
    let Some(source) = alarm.spec.alertmanager.clone() else {
        return Ok(alarm);
    };
    let namespace = alarm.namespace().unwrap_or_default();
    let api: Api<Alarm> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut current = alarm;
    let mut attempt = 1;
    loop {
        let status = current.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let records = alertmanager::record(&status, deliveries, &now);
        let (next, _) = alertmanager::status_with(&status, records, source.stale_after.get(), &now);
        if next == status {
            return Ok(current);
        }
        match ctx.apply_status(&api, &current, MANAGER, &next).await {
            Ok(written) => {
                if let Some(note) = transition(&current, &status, &next) {
                    // The state is recorded, so the webhook answers now:
                    // the event may wait its turn behind other writes (the
                    // client paces them, see `api_client`) and must hold
                    // neither Alertmanager nor the record timeout.
                    let ctx = Arc::clone(ctx);
                    let alarm = current.clone();
                    tokio::spawn(async move {
                        publish(&ctx, &alarm, &status, &next, &note).await;
                    });
                }
                return Ok(written);
            }
            Err(error) if error.is_conflict() && attempt < WRITE_ATTEMPTS => {
                attempt += 1;
                current = api
                    .get_status(&current.name_any())
                    .await
                    .map_err(Error::Kube)?;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The alarm controller for one scope, reading the scope's shared caches;
/// runs until `shutdown`.
pub fn controller(
    cx: Arc<AlarmContext>,
    caches: &Caches,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let controller =
        Controller::for_shared_stream(caches.alarms.subscribe(), caches.alarms.store());
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
    use std::time::Duration;

    use super::{MAX_BACKOFF, next_wait};

    #[test]
    fn failures_double_the_wait_up_to_the_cap() {
        let interval = Duration::from_secs(5);
        let waits: Vec<u64> = (0..10)
            .map(|failures| next_wait(interval, failures).as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 40, 40, 40, 40, 40, 40]);
        let minute = Duration::from_secs(60);
        assert_eq!(next_wait(minute, u32::MAX), MAX_BACKOFF);
        // An interval longer than the cap is kept.
        let hourly = Duration::from_secs(3600);
        assert_eq!(next_wait(hourly, 3), hourly);
    }
}
