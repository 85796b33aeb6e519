//! A guardrail's evaluation, pure: which counts to query for each realm of
//! the dial, and the decision they lead to ([`crate::stats`] does the
//! statistics).
//!
//! Counts run from the start of the realm's current stage (the last change
//! of its effective allocation in the dial's history), read as one
//! cumulative `increase(...[<seconds since the start>s])` per evaluation:
//! Prometheus absorbs counter resets, an operator restart loses nothing,
//! and no interval is counted twice.
//!
//! In a realm:
//! - nothing is compared where no treatment is exposed or control is not
//!   served (before the first stage, after a rollback, fully dialed up):
//!   `OK`, said so;
//! - a failed query, or trials per treatment that do not match the shares
//!   served (sample ratio mismatch), withhold every decision:
//!   `INSUFFICIENT_DATA`;
//! - otherwise each exposed treatment is compared with control; `ALARM`
//!   when one of them is worse beyond the tolerance, `INSUFFICIENT_DATA`
//!   while one has fewer trials than the floor, `OK` otherwise.
//!
//! The alarm is `ALARM` when any realm is, else `INSUFFICIENT_DATA` when
//! any realm is, else `OK`; a dial rolls back only the realms in `ALARM`.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::{
    api::{
        WeblabDial,
        alarm::{
            AlarmState, GuardrailSource, RealmComparison, SampleRatio, TreatmentComparison,
            WorseDirection,
        },
        common::{MicroTime, Percent},
    },
    controllers::alarm::evaluate::Sample,
    stats::{
        sequential::{self, Arm, Test, Tolerance, Verdict, Worse},
        srm,
    },
};

/// One realm of the dial, ready to query.
#[derive(Clone, Debug, PartialEq)]
pub struct RealmPlan {
    /// The realm.
    pub realm: String,
    /// When its current stage started.
    pub since: Option<MicroTime>,
    /// What to query, or the decision already made without data.
    pub work: Work,
}

/// What a realm needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// Query each treatment's counts over the window (seconds).
    Query {
        /// Seconds since the stage started.
        window: u64,
        /// Every treatment, control first, with the share served.
        arms: Vec<(String, f64)>,
    },
    /// Decided without data: the state and why.
    Decided(AlarmState, String),
}

/// One treatment's counts, as queried.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    /// Trials.
    pub trials: Sample,
    /// Outcomes, or the sum of the values for a mean.
    pub outcomes: Sample,
    /// For a mean: the sum of the squared values.
    pub squares: Option<Sample>,
}

/// Fills a query template for one treatment of one realm.
pub fn render(template: &str, treatment: &str, realm: &str, window: u64) -> String {
    template
        .replace("$treatment", treatment)
        .replace("$realm", realm)
        .replace("$window", &format!("{window}s"))
}

/// The realms of `dial` to evaluate (only `only` when the alarm is scoped
/// to a realm), at `now`.
pub fn realms(dial: &WeblabDial, only: Option<&str>, now: Timestamp) -> Vec<RealmPlan> {
    let status = dial.status.clone().unwrap_or_default();
    dial.spec
        .realms
        .iter()
        .filter(|realm| only.is_none_or(|only| only == realm.as_str()))
        .map(|realm| {
            let served = status.realms.iter().find(|entry| &entry.realm == realm);
            // The last change of the realm's allocation starts its stage; a
            // history trimmed past it falls back to the step's start.
            let since = status
                .history
                .iter()
                .rev()
                .find(|change| &change.realm == realm)
                .map(|change| change.at.clone())
                .or_else(|| status.step.as_ref().and_then(|s| s.started_at.clone()));
            let share = |treatment: &str| {
                served.map_or(0.0, |entry| {
                    f64::from(entry.allocation.share(treatment).basis_points())
                        / f64::from(Percent::HUNDRED.basis_points())
                })
            };
            let arms: Vec<(String, f64)> = dial
                .spec
                .treatments
                .iter()
                .map(|t| (t.clone(), share(t)))
                .collect();
            let exposed = arms.iter().skip(1).any(|(_, share)| *share > 0.0);
            let control = arms.first().map_or(0.0, |(_, share)| *share);
            let work = match (&since, exposed, control > 0.0) {
                (_, false, _) => Work::Decided(
                    AlarmState::Ok,
                    format!("no treatment is exposed in {realm}: nothing to compare"),
                ),
                (_, true, false) => Work::Decided(
                    AlarmState::Ok,
                    format!("control is not served in {realm}: nothing to compare with"),
                ),
                (None, true, true) => Work::Decided(
                    AlarmState::InsufficientData,
                    format!("the dial does not say when the stage in {realm} started"),
                ),
                (Some(since), true, true) => {
                    let elapsed = now.duration_since(since.0).as_secs();
                    Work::Query {
                        window: u64::try_from(elapsed).unwrap_or(0),
                        arms,
                    }
                }
            };
            RealmPlan {
                realm: realm.clone(),
                since,
                work,
            }
        })
        .collect()
}

/// The statistical question a guardrail asks.
pub fn test(source: &GuardrailSource) -> Test {
    Test {
        worse: match source.worse {
            WorseDirection::Higher => Worse::Higher,
            WorseDirection::Lower => Worse::Lower,
        },
        tolerance: match &source.tolerance {
            Some(tolerance) => match (tolerance.relative, tolerance.absolute) {
                (_, Some(absolute)) => Tolerance::Absolute(absolute),
                (relative, None) => Tolerance::Relative(relative.unwrap_or(0.0)),
            },
            None => Tolerance::Relative(0.0),
        },
        confidence: source.confidence,
        min_trials: f64::from(source.min_trials),
    }
}

/// A count from a query's answer: the sum of its series (none is zero).
fn count(sample: &Sample) -> Result<f64, String> {
    match sample {
        Sample::Values(values) => Ok(values.iter().filter(|v| v.is_finite()).sum()),
        Sample::Failed(error) => Err(error.clone()),
    }
}

/// A rate as a percentage, or a mean as it is.
fn level_text(value: f64, mean: bool) -> String {
    if mean {
        format!("{value:.4}")
    } else {
        format!("{:.3}%", value * 100.0)
    }
}

/// A difference of rates in percentage points, or of means as it is.
fn difference_text(value: f64, mean: bool) -> String {
    if mean {
        format!("{value:+.4}")
    } else {
        format!("{:+.3} points", value * 100.0)
    }
}

fn shares(arms: &[(String, f64)], values: &[f64]) -> BTreeMap<String, f64> {
    arms.iter()
        .zip(values)
        .map(|((treatment, _), value)| (treatment.clone(), (value * 1e4).round() / 1e4))
        .collect()
}

fn ratio_text(map: &BTreeMap<String, f64>, arms: &[(String, f64)]) -> String {
    arms.iter()
        .map(|(treatment, _)| {
            format!(
                "{treatment} {:.4}",
                map.get(treatment).copied().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides one realm from its counts (one per arm of [`Work::Query`], same
/// order). Returns the decision and, when a query failed, why.
pub fn decide(
    plan: &RealmPlan,
    counts: &[Counts],
    test: &Test,
) -> (RealmComparison, Option<String>) {
    let realm = &plan.realm;
    let result = |state, reason: String| RealmComparison {
        realm: realm.clone(),
        state,
        reason,
        since: plan.since.clone(),
        sample_ratio: None,
        treatments: Vec::new(),
    };
    let arms = match &plan.work {
        Work::Decided(state, reason) => return (result(*state, reason.clone()), None),
        Work::Query { arms, .. } => arms,
    };
    let mut observed = Vec::with_capacity(arms.len());
    for c in counts {
        match (count(&c.trials), count(&c.outcomes)) {
            (Ok(trials), Ok(outcomes)) => observed.push(Arm {
                trials,
                outcomes,
                squares: match c.squares.as_ref().map(count).transpose() {
                    Ok(squares) => squares,
                    Err(error) => {
                        let reason = format!("cannot sum the squares in {realm}: {error}");
                        return (result(AlarmState::InsufficientData, reason), Some(error));
                    }
                },
            }),
            (Err(error), _) | (_, Err(error)) => {
                let reason = format!("cannot count trials and outcomes in {realm}: {error}");
                return (result(AlarmState::InsufficientData, reason), Some(error));
            }
        }
    }
    if observed.len() != arms.len() {
        let reason = format!("counts of {} treatments for {}", observed.len(), arms.len());
        return (result(AlarmState::InsufficientData, reason), None);
    }

    let trials: Vec<f64> = observed.iter().map(|arm| arm.trials).collect();
    let served: Vec<f64> = arms.iter().map(|(_, share)| *share).collect();
    let ratio = srm::check(&trials, &served);
    let sample_ratio = SampleRatio {
        observed: shares(arms, &ratio.observed),
        expected: shares(arms, &ratio.expected),
        mismatch: ratio.mismatch,
    };
    if ratio.mismatch {
        let reason = format!(
            "sample ratio mismatch in {realm}: trials split {}, the dial serves {}; decisions withheld until the assignment is fixed",
            ratio_text(&sample_ratio.observed, arms),
            ratio_text(&sample_ratio.expected, arms),
        );
        return (
            RealmComparison {
                sample_ratio: Some(sample_ratio),
                ..result(AlarmState::InsufficientData, reason)
            },
            None,
        );
    }

    let control_name = arms.first().map_or("control", |(t, _)| t.as_str());
    let control = observed.first().copied().unwrap_or_default();
    let mean = control.squares.is_some();
    let exposed: Vec<usize> = (1..arms.len()).filter(|&i| arms[i].1 > 0.0).collect();
    let level = format!("{}%", test.confidence * 100.0);
    let mut treatments = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    let mut thin: Vec<String> = Vec::new();
    for &i in &exposed {
        let name = &arms[i].0;
        let comparison = sequential::compare(control, observed[i], test, exposed.len());
        let state = match comparison.verdict {
            Verdict::Worse => AlarmState::Alarm,
            Verdict::NotWorse => AlarmState::Ok,
            Verdict::Insufficient => AlarmState::InsufficientData,
        };
        let finite = |x: f64| Some(x).filter(|x| x.is_finite());
        match comparison.verdict {
            Verdict::Worse if worst.as_ref().is_none_or(|(m, _)| comparison.margin > *m) => {
                worst = Some((
                    comparison.margin,
                    format!(
                        "{name} is worse than {control_name} in {realm}: {} vs {} ({}, {level} confidence sequence {} to {}) over {:.0} and {:.0} trials",
                        level_text(comparison.treatment_rate, mean),
                        level_text(comparison.control_rate, mean),
                        difference_text(comparison.difference, mean),
                        difference_text(comparison.interval.0, mean),
                        difference_text(comparison.interval.1, mean),
                        observed[i].trials,
                        control.trials,
                    ),
                ));
            }
            Verdict::Insufficient => thin.push(format!(
                "{name} has {:.0} trials and {control_name} {:.0} ({} needed each)",
                observed[i].trials, control.trials, test.min_trials
            )),
            _ => {}
        }
        treatments.push(TreatmentComparison {
            treatment: name.clone(),
            state,
            trials: observed[i].trials,
            control_trials: control.trials,
            rate: comparison.treatment_rate,
            control_rate: comparison.control_rate,
            estimate: comparison.difference,
            lower: finite(comparison.interval.0),
            upper: finite(comparison.interval.1),
        });
    }
    let (state, reason) = match (worst, thin.is_empty()) {
        (Some((_, reason)), _) => (AlarmState::Alarm, reason),
        (None, false) => (
            AlarmState::InsufficientData,
            format!("too few trials in {realm}: {}", thin.join("; ")),
        ),
        (None, true) => (
            AlarmState::Ok,
            format!(
                "no treatment is shown worse than {control_name} in {realm} at {level} confidence"
            ),
        ),
    };
    (
        RealmComparison {
            sample_ratio: Some(sample_ratio),
            treatments,
            ..result(state, reason)
        },
        None,
    )
}

/// The alarm's state from its realms', the reason, and the value: the
/// estimate of the treatment furthest past its tolerance in `ALARM`.
pub fn overall(realms: &[RealmComparison]) -> (AlarmState, String, Option<f64>) {
    let in_state = |state| realms.iter().filter(move |r| r.state == state);
    let state = [AlarmState::Alarm, AlarmState::InsufficientData]
        .into_iter()
        .find(|state| in_state(*state).next().is_some())
        .unwrap_or(AlarmState::Ok);
    if realms.is_empty() {
        return (
            AlarmState::InsufficientData,
            "the dial serves none of the realms this guardrail watches".to_owned(),
            None,
        );
    }
    let reason = in_state(state)
        .map(|r| r.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let value = in_state(AlarmState::Alarm)
        .flat_map(|r| &r.treatments)
        .filter(|t| t.state == AlarmState::Alarm)
        .map(|t| t.estimate)
        .reduce(f64::max);
    (state, reason, value)
}

#[cfg(test)]
mod tests;
