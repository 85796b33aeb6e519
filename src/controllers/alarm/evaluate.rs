//! M-of-N evaluation of a pulled signal: pure, no I/O.
//!
//! Each evaluation yields one datapoint. A datapoint *breaches*, is *good*,
//! or is *missing*; the alarm looks at the last N (`evaluationPeriods`):
//!
//! - `ALARM` when at least M (`datapointsToAlarm`) of them breach;
//! - `OK` when it could not be `ALARM` even if every missing datapoint
//!   breached (breaching + missing < M), so an alarm never reads `OK`
//!   because its source went quiet;
//! - `INSUFFICIENT_DATA` otherwise. Until N datapoints exist, the slots not
//!   yet taken count as missing: a new alarm proves it is clear first.
//!
//! How a sample without data (an empty vector, or only NaN) counts is the
//! alarm's `missingData` policy: `missing` (default), `breaching`,
//! `notBreaching`, or `ignore` (the datapoint is recorded, the state is
//! kept). A query that fails (error, timeout, unreadable answer) is never
//! good: it is missing, or breaching under `breaching`.
//!
//! With a traffic floor, a datapoint whose volume (the floor's query,
//! summed) is below the floor's minimum is *below the floor*: its value is
//! recorded for people but it counts as missing data, under the same
//! policy. A failed volume query is a failed datapoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::alarm::{
    AlarmState, AlarmStatus, Comparison, Datapoint, MissingDataPolicy, PrometheusSource,
    SeriesReduction,
};

/// What one query of the source returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Sample {
    /// The values of the series in the result (NaN included, as returned).
    Values(Vec<f64>),
    /// The query failed; the text says why.
    Failed(String),
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The new state.
    pub state: AlarmState,
    /// The value of this datapoint, when it had one.
    pub value: Option<f64>,
    /// Why the alarm is in `state`, for people.
    pub reason: String,
    /// The datapoints after this one was added (at most N, oldest first).
    pub datapoints: Vec<Datapoint>,
    /// The source failed: what to report in the `Degraded` condition.
    pub source_error: Option<String>,
    /// How this datapoint counted, for the evaluations metric.
    pub outcome: Outcome,
}

/// How one datapoint counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It breached.
    Breaching,
    /// It did not breach.
    Good,
    /// It had no data.
    NoData,
    /// The query failed.
    Failed,
    /// The traffic was below the floor: counted as missing data.
    BelowFloor,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Breaching => "breaching",
            Outcome::Good => "ok",
            Outcome::NoData => "no_data",
            Outcome::Failed => "error",
            Outcome::BelowFloor => "below_floor",
        }
    }
}

/// Reduces the series to one value by `reduction`, leaving out NaN; `None`
/// when nothing is left.
pub fn reduce(values: &[f64], reduction: SeriesReduction, comparison: Comparison) -> Option<f64> {
    let mut numbers = values.iter().copied().filter(|v| !v.is_nan()).peekable();
    numbers.peek()?;
    let max = |numbers: &mut dyn Iterator<Item = f64>| numbers.fold(f64::NEG_INFINITY, f64::max);
    let min = |numbers: &mut dyn Iterator<Item = f64>| numbers.fold(f64::INFINITY, f64::min);
    Some(match reduction {
        SeriesReduction::Worst => match comparison {
            Comparison::GreaterThan | Comparison::GreaterThanOrEqual => max(&mut numbers),
            Comparison::LessThan | Comparison::LessThanOrEqual => min(&mut numbers),
        },
        SeriesReduction::Max => max(&mut numbers),
        SeriesReduction::Min => min(&mut numbers),
        SeriesReduction::Sum => numbers.sum(),
        SeriesReduction::Average => {
            let (sum, count) = numbers.fold((0.0, 0u32), |(sum, count), v| (sum + v, count + 1));
            sum / f64::from(count)
        }
    })
}

/// Whether `value` breaches `threshold` under `comparison`.
pub fn breaches(value: f64, comparison: Comparison, threshold: f64) -> bool {
    match comparison {
        Comparison::GreaterThan => value > threshold,
        Comparison::GreaterThanOrEqual => value >= threshold,
        Comparison::LessThan => value < threshold,
        Comparison::LessThanOrEqual => value <= threshold,
    }
}

fn symbol(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::GreaterThan => ">",
        Comparison::GreaterThanOrEqual => ">=",
        Comparison::LessThan => "<",
        Comparison::LessThanOrEqual => "<=",
    }
}

/// Adds the datapoint from `sample`, taken `at`, to `previous`'s recent
/// datapoints and decides the state. `previous` must describe the same spec
/// (the caller resets it when the spec changes).
///
/// `volume` is the traffic floor's sample, taken with `sample`; `None` when
/// the source has no floor.
pub fn evaluate(
    source: &PrometheusSource,
    previous: &AlarmStatus,
    sample: Sample,
    volume: Option<Sample>,
    at: Time,
) -> Evaluation {
    let (value, mut outcome, mut source_error) = match sample {
        Sample::Failed(error) => (None, Outcome::Failed, Some(error)),
        Sample::Values(values) => match reduce(&values, source.series, source.comparison) {
            Some(value) if breaches(value, source.comparison, source.threshold) => {
                (Some(value), Outcome::Breaching, None)
            }
            Some(value) => (Some(value), Outcome::Good, None),
            None => (None, Outcome::NoData, None),
        },
    };
    let mut traffic = None;
    if let (Some(floor), Some(volume)) = (&source.traffic_floor, volume)
        && matches!(outcome, Outcome::Breaching | Outcome::Good)
    {
        match volume {
            Sample::Failed(error) => {
                outcome = Outcome::Failed;
                source_error = Some(format!("the traffic floor's query: {error}"));
            }
            Sample::Values(values) => {
                let total: f64 = values.iter().filter(|v| !v.is_nan()).sum();
                if total < floor.minimum {
                    outcome = Outcome::BelowFloor;
                    traffic = Some(format!("traffic {total} below the floor {}", floor.minimum));
                }
            }
        }
    }
    let breaching = match (outcome, source.missing_data) {
        (Outcome::Breaching, _) => Some(true),
        (Outcome::Good, _) => Some(false),
        (Outcome::NoData | Outcome::Failed | Outcome::BelowFloor, MissingDataPolicy::Breaching) => {
            Some(true)
        }
        (Outcome::NoData | Outcome::BelowFloor, MissingDataPolicy::NotBreaching) => Some(false),
        (Outcome::NoData | Outcome::Failed | Outcome::BelowFloor, _) => None,
    };

    let periods = source.evaluation_periods.max(1) as usize;
    let mut datapoints: Vec<Datapoint> = previous.datapoints.clone();
    datapoints.push(Datapoint {
        at,
        value,
        breaching,
    });
    let excess = datapoints.len().saturating_sub(periods);
    datapoints.drain(..excess);

    let needed = source.datapoints_to_alarm.max(1) as usize;
    let breached = datapoints
        .iter()
        .filter(|d| d.breaching == Some(true))
        .count();
    let good = datapoints
        .iter()
        .filter(|d| d.breaching == Some(false))
        .count();
    let missing = periods - breached - good;
    let condition = format!("{} {}", symbol(source.comparison), source.threshold);
    let now = match (value, &traffic) {
        (Some(value), Some(traffic)) => format!("value {value} with {traffic} (missing data)"),
        (Some(value), None) if outcome == Outcome::Failed => {
            format!("value {value}, but the traffic floor's query failed")
        }
        (Some(value), None) => format!("value {value}"),
        (None, _) if outcome == Outcome::Failed => "the query failed".to_owned(),
        (None, _) => "no data".to_owned(),
    };

    let (state, reason) = if matches!(outcome, Outcome::NoData | Outcome::BelowFloor)
        && source.missing_data == MissingDataPolicy::Ignore
    {
        let kept = previous.state.unwrap_or(AlarmState::InsufficientData);
        let why = traffic.as_deref().unwrap_or("no data");
        (kept, format!("{why} (ignored); keeping {kept}"))
    } else if breached >= needed {
        (
            AlarmState::Alarm,
            format!("{breached} of the last {periods} datapoints breach {condition}; {now}"),
        )
    } else if breached + missing < needed {
        (
            AlarmState::Ok,
            format!(
                "{breached} of the last {periods} datapoints breach {condition} ({needed} needed); {now}"
            ),
        )
    } else {
        (
            AlarmState::InsufficientData,
            format!(
                "{missing} of the last {periods} datapoints are missing and {breached} breach {condition}: cannot rule out an alarm ({needed} needed); {now}"
            ),
        )
    };
    Evaluation {
        state,
        value,
        reason,
        datapoints,
        source_error,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn source(m: u32, n: u32, missing: MissingDataPolicy) -> PrometheusSource {
        PrometheusSource {
            url: "http://prometheus:9090".to_owned(),
            query: "error_rate".to_owned(),
            interval: crate::api::common::Duration::from_secs(15),
            timeout: crate::api::common::Duration::from_secs(5),
            comparison: Comparison::GreaterThan,
            threshold: 0.05,
            datapoints_to_alarm: m,
            evaluation_periods: n,
            missing_data: missing,
            series: SeriesReduction::Worst,
            bearer_token_secret_ref: None,
            traffic_floor: None,
        }
    }

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + second).expect("in range"))
    }

    /// Feeds `samples` one by one and returns the state after each.
    fn run(source: &PrometheusSource, samples: &[Sample]) -> Vec<AlarmState> {
        let mut status = AlarmStatus::default();
        samples
            .iter()
            .enumerate()
            .map(|(i, sample)| {
                let evaluation = evaluate(source, &status, sample.clone(), None, at(i as i64));
                status.state = Some(evaluation.state);
                status.datapoints = evaluation.datapoints;
                evaluation.state
            })
            .collect()
    }

    fn v(value: f64) -> Sample {
        Sample::Values(vec![value])
    }

    const HIGH: f64 = 0.2;
    const LOW: f64 = 0.01;
    use AlarmState::{Alarm, InsufficientData as Insufficient, Ok};

    #[test]
    fn one_of_one_follows_each_datapoint() {
        let s = source(1, 1, MissingDataPolicy::Missing);
        assert_eq!(run(&s, &[v(LOW), v(HIGH), v(LOW)]), vec![Ok, Alarm, Ok]);
    }

    #[test]
    fn three_of_five_needs_three_breaches_and_clears_below_three() {
        let s = source(3, 5, MissingDataPolicy::Missing);
        let states = run(
            &s,
            &[
                v(LOW),
                v(LOW),
                v(LOW),
                v(HIGH),
                v(HIGH),
                v(HIGH),
                v(LOW),
                v(LOW),
                v(LOW),
            ],
        );
        assert_eq!(
            states,
            vec![
                // Two empty slots could still breach with the first good
                // datapoint: not yet provably OK.
                Insufficient,
                Insufficient,
                Ok,
                Ok,
                Ok,
                Alarm,
                Alarm,
                Alarm,
                // [H, L, L, L] ... the window now holds 2 breaches of 5.
                Ok,
            ]
        );
    }

    #[test]
    fn a_failing_source_is_never_ok() {
        for policy in [
            MissingDataPolicy::Missing,
            MissingDataPolicy::Ignore,
            MissingDataPolicy::NotBreaching,
        ] {
            let s = source(1, 1, policy);
            let states = run(&s, &[v(LOW), Sample::Failed("connection refused".into())]);
            assert_eq!(states, vec![Ok, Insufficient], "policy {policy:?}");
        }
        let s = source(1, 1, MissingDataPolicy::Breaching);
        let states = run(&s, &[v(LOW), Sample::Failed("timeout".into())]);
        assert_eq!(states, vec![Ok, Alarm]);
    }

    #[test]
    fn missing_data_policies() {
        let empty = Sample::Values(vec![]);
        let nan = Sample::Values(vec![f64::NAN]);
        let cases = [
            (
                MissingDataPolicy::Missing,
                vec![Ok, Insufficient, Insufficient],
            ),
            (MissingDataPolicy::Breaching, vec![Ok, Alarm, Alarm]),
            (MissingDataPolicy::NotBreaching, vec![Ok, Ok, Ok]),
            (MissingDataPolicy::Ignore, vec![Ok, Ok, Ok]),
        ];
        for (policy, expected) in cases {
            let s = source(1, 1, policy);
            assert_eq!(
                run(&s, &[v(LOW), empty.clone(), nan.clone()]),
                expected,
                "{policy:?}"
            );
        }
        // Ignore keeps ALARM as well as OK.
        let s = source(1, 1, MissingDataPolicy::Ignore);
        assert_eq!(
            run(&s, &[v(HIGH), Sample::Values(vec![])]),
            vec![Alarm, Alarm]
        );
    }

    #[test]
    fn several_series_reduce_by_policy_and_skip_nan() {
        let values = [0.01, f64::NAN, 0.3, 0.02];
        assert_eq!(
            reduce(&values, SeriesReduction::Worst, Comparison::GreaterThan),
            Some(0.3)
        );
        assert_eq!(
            reduce(&values, SeriesReduction::Worst, Comparison::LessThan),
            Some(0.01)
        );
        assert_eq!(
            reduce(&values, SeriesReduction::Min, Comparison::GreaterThan),
            Some(0.01)
        );
        let sum = reduce(&values, SeriesReduction::Sum, Comparison::GreaterThan);
        assert!(sum.is_some_and(|s| (s - 0.33).abs() < 1e-12));
        let average = reduce(&values, SeriesReduction::Average, Comparison::GreaterThan);
        assert!(average.is_some_and(|a| (a - 0.11).abs() < 1e-12));
        assert_eq!(
            reduce(&[f64::NAN], SeriesReduction::Max, Comparison::GreaterThan),
            None
        );
        assert_eq!(
            reduce(&[], SeriesReduction::Max, Comparison::GreaterThan),
            None
        );
    }

    #[test]
    fn infinity_compares_as_a_number() {
        let s = source(1, 1, MissingDataPolicy::Missing);
        assert_eq!(run(&s, &[v(f64::INFINITY)]), vec![Alarm]);
    }

    #[test]
    fn reasons_name_the_threshold_and_value() {
        let s = source(1, 1, MissingDataPolicy::Missing);
        let evaluation = evaluate(&s, &AlarmStatus::default(), v(HIGH), None, at(0));
        assert_eq!(evaluation.state, Alarm);
        assert!(
            evaluation.reason.contains("> 0.05"),
            "{}",
            evaluation.reason
        );
        assert!(
            evaluation.reason.contains("value 0.2"),
            "{}",
            evaluation.reason
        );
        assert_eq!(evaluation.value, Some(HIGH));
        assert_eq!(evaluation.outcome, Outcome::Breaching);
    }

    fn with_floor(policy: MissingDataPolicy, minimum: f64) -> PrometheusSource {
        PrometheusSource {
            traffic_floor: Some(crate::api::alarm::TrafficFloor {
                query: "sum(rate(http_requests_total[5m]))".to_owned(),
                minimum,
            }),
            ..source(1, 1, policy)
        }
    }

    #[test]
    fn a_breach_below_the_traffic_floor_counts_as_missing_data() {
        // One error in two requests: a 50% error ratio on 0.03 requests/s.
        let quiet = Some(v(0.03));
        let s = with_floor(MissingDataPolicy::Missing, 1.0);
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), quiet.clone(), at(0));
        assert_eq!(e.state, Insufficient, "{}", e.reason);
        assert_eq!(e.outcome, Outcome::BelowFloor);
        assert_eq!(e.value, Some(0.5), "the value is kept for people");
        assert!(e.reason.contains("below the floor 1"), "{}", e.reason);

        let s = with_floor(MissingDataPolicy::NotBreaching, 1.0);
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), quiet.clone(), at(0));
        assert_eq!(e.state, Ok, "{}", e.reason);

        let s = with_floor(MissingDataPolicy::Breaching, 1.0);
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), quiet, at(0));
        assert_eq!(
            e.state, Alarm,
            "the policy decides, as for any missing data"
        );
    }

    #[test]
    fn above_the_floor_the_threshold_decides() {
        let s = with_floor(MissingDataPolicy::NotBreaching, 1.0);
        // Several series are summed; NaN is left out.
        let busy = Some(Sample::Values(vec![0.6, 0.6, f64::NAN]));
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), busy, at(0));
        assert_eq!((e.state, e.outcome), (Alarm, Outcome::Breaching));
        let e = evaluate(&s, &AlarmStatus::default(), v(0.01), Some(v(5.0)), at(0));
        assert_eq!((e.state, e.outcome), (Ok, Outcome::Good));
    }

    #[test]
    fn an_empty_volume_is_no_traffic_and_a_failed_one_is_a_failed_datapoint() {
        let s = with_floor(MissingDataPolicy::NotBreaching, 1.0);
        let empty = Some(Sample::Values(vec![]));
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), empty, at(0));
        assert_eq!((e.state, e.outcome), (Ok, Outcome::BelowFloor));
        let down = Some(Sample::Failed("no answer".to_owned()));
        let e = evaluate(&s, &AlarmStatus::default(), v(0.5), down, at(0));
        // A failed query is never good, whatever the policy for no data.
        assert_eq!((e.state, e.outcome), (Insufficient, Outcome::Failed));
        assert!(
            e.source_error
                .is_some_and(|why| why.contains("traffic floor"))
        );
    }

    fn sample() -> impl Strategy<Value = Sample> {
        prop_oneof![
            4 => (0.0f64..0.1).prop_map(|x| Sample::Values(vec![x])),
            1 => Just(Sample::Values(vec![])),
            1 => Just(Sample::Failed("down".to_owned())),
        ]
    }

    fn policy() -> impl Strategy<Value = MissingDataPolicy> {
        prop_oneof![
            Just(MissingDataPolicy::Missing),
            Just(MissingDataPolicy::Ignore),
            Just(MissingDataPolicy::Breaching),
            Just(MissingDataPolicy::NotBreaching),
        ]
    }

    proptest! {
        /// The window never exceeds N, ALARM always has M breaches in it,
        /// and OK is only reached when the missing datapoints could not
        /// have made M (or, under `ignore`, when it was OK already).
        #[test]
        fn states_agree_with_the_window(
            (m, n) in (1u32..6).prop_flat_map(|n| (1..=n, Just(n))),
            missing in policy(),
            samples in proptest::collection::vec(sample(), 1..40),
        ) {
            let s = source(m, n, missing);
            let mut status = AlarmStatus::default();
            for (i, sample) in samples.into_iter().enumerate() {
                let failed = matches!(sample, Sample::Failed(_));
                let before = status.state;
                let e = evaluate(&s, &status, sample, None, at(i as i64));
                prop_assert!(e.datapoints.len() <= n as usize);
                let breached = e.datapoints.iter().filter(|d| d.breaching == Some(true)).count();
                let good = e.datapoints.iter().filter(|d| d.breaching == Some(false)).count();
                let unknown = n as usize - breached - good;
                let ignored = e.outcome == Outcome::NoData && missing == MissingDataPolicy::Ignore;
                match e.state {
                    AlarmState::Alarm => prop_assert!(ignored || breached >= m as usize),
                    AlarmState::Ok => prop_assert!(
                        (ignored && before == Some(AlarmState::Ok)) || breached + unknown < m as usize
                    ),
                    AlarmState::InsufficientData => prop_assert!(ignored || breached < m as usize),
                }
                if failed {
                    // A failed query is never a good datapoint.
                    let counted = e.datapoints.last().and_then(|d| d.breaching);
                    prop_assert_ne!(counted, Some(false));
                }
                status.state = Some(e.state);
                status.datapoints = e.datapoints;
            }
        }
    }
}
