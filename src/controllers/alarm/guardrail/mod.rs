//! Guardrail alarms: the shell around [`plan`]. Each evaluation reads the
//! dial it compares (same namespace), queries Prometheus for every
//! treatment's trials and outcomes in every realm it compares, and writes
//! the per-realm decisions to the alarm's status. Dials attaching the alarm
//! roll back exactly the realms in `ALARM`.

pub mod plan;

use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};

use crate::outbound::Outbound;

use super::{
    AlarmContext, MANAGER, bearer_token, evaluate::Sample, prometheus, source_conditions,
    transition,
};
use crate::{
    Error, Result,
    api::{
        Alarm, WeblabDial,
        alarm::{AlarmState, AlarmStatus, Datapoint, GuardrailSource, SAMPLE_RATIO_MISMATCH},
        conditions::{self, DesiredCondition},
    },
    controllers::Note,
};

use plan::{Counts, RealmPlan, Work};

/// Queries in flight at once for one guardrail.
const CONCURRENT_QUERIES: usize = 8;

/// Evaluates the guardrail when it is due and records the decisions.
pub(super) async fn evaluate(
    alarm: &Alarm,
    source: &GuardrailSource,
    cx: &AlarmContext,
) -> Result<Action> {
    let interval = source.interval.get();
    if let Some(wait) = cx.not_due(alarm, interval) {
        return Ok(Action::requeue(wait));
    }
    let ctx = &cx.ctx;
    let namespace = alarm.namespace().unwrap_or_default();
    let now = Timestamp::now();
    let dials: Api<WeblabDial> = Api::namespaced(ctx.client.clone(), &namespace);
    let dial = dials
        .get_opt(&source.dial_ref.name)
        .await
        .map_err(Error::Kube)?;
    let (realms, source_error, missing) = match dial {
        None => (
            Vec::new(),
            None,
            Some(format!(
                "WeblabDial {namespace}/{} not found; fix spec.guardrail.dialRef",
                source.dial_ref.name
            )),
        ),
        Some(dial) => {
            let token =
                bearer_token(ctx, &namespace, source.bearer_token_secret_ref.as_ref()).await;
            let test = plan::test(source);
            let mut realms = Vec::new();
            let mut failure = None;
            for realm in plan::realms(&dial, alarm.spec.realm.as_deref(), now) {
                let counts = match &token {
                    Ok(token) => query(cx, source, &realm, token.as_deref()).await,
                    Err(error) => failed(&realm, error),
                };
                let (decision, error) = plan::decide(&realm, &counts, &test);
                failure = failure.or(error);
                realms.push(decision);
            }
            (realms, failure, None)
        }
    };
    // Remembered before the status write, so that a failing write does not
    // make the guardrail due again at once; a failing source backs off.
    let wait = cx.remember(alarm, interval, source_error.is_some());
    let (state, reason, value) = match &missing {
        Some(missing) => (AlarmState::InsufficientData, missing.clone(), None),
        None => plan::overall(&realms),
    };

    let generation = alarm.meta().generation.unwrap_or_default();
    let status = alarm.status.clone().unwrap_or_default();
    let at = Time(now);
    let mismatched: Vec<String> = realms
        .iter()
        .filter(|r| r.sample_ratio.as_ref().is_some_and(|s| s.mismatch))
        .map(|r| r.reason.clone())
        .collect();
    let mut desired = match &missing {
        // Without its dial the guardrail has nothing to compare: stalled
        // until the reference resolves, not a Prometheus problem.
        Some(missing) => vec![
            DesiredCondition::new(conditions::READY, false, "DialNotFound", missing.clone()),
            DesiredCondition::new(conditions::STALLED, true, "DialNotFound", missing.clone()),
        ],
        None => {
            let mut desired = source_conditions(source_error.as_ref(), source.interval, wait);
            desired.push(DesiredCondition::new(
                conditions::STALLED,
                false,
                "DialFound",
                "",
            ));
            desired
        }
    };
    desired.push(if mismatched.is_empty() {
        DesiredCondition::new(SAMPLE_RATIO_MISMATCH, false, "SharesMatch", "")
    } else {
        DesiredCondition::new(
            SAMPLE_RATIO_MISMATCH,
            true,
            "SampleRatioMismatch",
            mismatched.join("; "),
        )
    });
    let next = AlarmStatus {
        observed_generation: Some(generation),
        state: Some(state),
        value,
        reason: Some(reason),
        last_transition_time: if status.state == Some(state) {
            status.last_transition_time.clone()
        } else {
            Some(crate::api::common::micro_time(at.0))
        },
        // The last evaluation, so that a new leader knows when it was.
        datapoints: vec![Datapoint {
            at: at.clone(),
            value,
            breaching: Some(state == AlarmState::Alarm),
        }],
        alerts: Vec::new(),
        alert_groups: Vec::new(),
        realms,
        conditions: conditions::merge(&status.conditions, &desired, Some(generation), &at),
    };
    let api: Api<Alarm> = Api::namespaced(ctx.client.clone(), &namespace);
    ctx.apply_status(&api, alarm, MANAGER, &next).await?;

    let mut notes: Vec<Note> = transition(alarm, &status, &next).into_iter().collect();
    if let Some(missing) = &missing
        && !conditions::is_true(&status.conditions, conditions::STALLED)
    {
        notes.push(Note::warning("ReferenceNotFound", missing.clone()));
    }
    if !mismatched.is_empty() && !conditions::is_true(&status.conditions, SAMPLE_RATIO_MISMATCH) {
        notes.push(Note::warning("SampleRatioMismatch", mismatched.join("; ")));
    }
    if let Some(error) = &source_error
        && !conditions::is_true(&status.conditions, conditions::DEGRADED)
    {
        notes.push(Note::warning(
            "SourceUnavailable",
            format!("cannot query Prometheus at {}: {error}", source.url),
        ));
    }
    for note in &notes {
        tracing::info!(reason = note.reason, "{}", note.message);
        super::publish(ctx, alarm, &status, &next, note).await;
    }
    Ok(Action::requeue(wait))
}

/// Every arm's counts in one realm, or nothing when the realm needs none.
async fn query(
    cx: &AlarmContext,
    source: &GuardrailSource,
    realm: &RealmPlan,
    token: Option<&str>,
) -> Vec<Counts> {
    let Work::Query { window, arms } = &realm.work else {
        return Vec::new();
    };
    // Trials, outcomes (and squares) of each arm, in the arms' order.
    let templates: Vec<&String> = [Some(&source.trials), Some(&source.outcomes)]
        .into_iter()
        .chain([source.squares.as_ref()])
        .flatten()
        .collect();
    let queries: Vec<String> = arms
        .iter()
        .flat_map(|(treatment, _)| {
            templates
                .iter()
                .map(|template| plan::render(template, treatment, &realm.realm, *window))
        })
        .collect();
    let samples: Vec<Sample> = stream::iter(queries)
        .map(|promql| {
            fetch(
                cx.ctx.outbound.clone(),
                source.url.clone(),
                promql,
                source.timeout.get(),
                token.map(str::to_owned),
            )
        })
        .buffered(CONCURRENT_QUERIES)
        .collect()
        .await;
    samples
        .chunks_exact(templates.len())
        .map(|arm| Counts {
            trials: arm[0].clone(),
            outcomes: arm[1].clone(),
            squares: arm.get(2).cloned(),
        })
        .collect()
}

/// One query, with owned arguments so that many can run at once.
async fn fetch(
    outbound: Outbound,
    url: String,
    promql: String,
    timeout: std::time::Duration,
    token: Option<String>,
) -> Sample {
    prometheus::query(&outbound, &url, &promql, timeout, token.as_deref()).await
}

/// Counts that all failed for the same reason.
fn failed(realm: &RealmPlan, error: &str) -> Vec<Counts> {
    let arms = match &realm.work {
        Work::Query { arms, .. } => arms.len(),
        Work::Decided(..) => 0,
    };
    let failure = || Sample::Failed(error.to_owned());
    (0..arms)
        .map(|_| Counts {
            trials: failure(),
            outcomes: failure(),
            squares: None,
        })
        .collect()
}
