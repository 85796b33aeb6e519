//! `Alarm`: one signal, a threshold, a duration, a severity; its state.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::common::{Duration, LocalRef, MicroTime, SecretKeyRef, Severity};

/// One signal watched against a threshold, from Prometheus (pulled) or
/// Alertmanager (pushed to the operator's webhook).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "Alarm",
    namespaced,
    status = "AlarmStatus",
    derive = "PartialEq",
    shortname = "alm",
    category = "weblab",
    doc = "One signal watched against a threshold, with a severity; changes attach alarms to roll back when they fire.",
    printcolumn(name = "Severity", type_ = "string", json_path = ".spec.severity"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Value", type_ = "number", json_path = ".status.value"),
    printcolumn(
        name = "Realm",
        type_ = "string",
        json_path = ".spec.realm",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("[has(self.prometheus), has(self.alertmanager), has(self.guardrail)].filter(x, x).size() == 1")
    .message("set exactly one source: spec.prometheus, spec.alertmanager or spec.guardrail"))]
#[serde(rename_all = "camelCase")]
pub struct AlarmSpec {
    /// How urgent a firing is; changes choose which severities roll them back.
    pub severity: Severity,

    /// The realm the signal is about; a dial then rolls back only that realm.
    /// Absent: every realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub realm: Option<String>,

    /// What the alarm means, for the person reading an event about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Pull a PromQL query at an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,

    /// Receive alerts pushed by Alertmanager to the operator's webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerSource>,

    /// Compare each treatment of a dial with its control, per realm, from
    /// the application's own counters in Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<GuardrailSource>,
}

/// The confidence level of a guardrail that does not set one.
pub const DEFAULT_CONFIDENCE: f64 = 0.99;

/// A comparative guardrail: in every realm, each treatment's rate of an
/// outcome (errors among requests) against control's, counted since the
/// realm's current stage started, with an always-valid sequential test and
/// a sample-ratio check. `ALARM` in a realm rolls back that realm only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("duration(self.interval) >= duration('5s')")
    .message("interval must be at least 5s")
    .field_path(".interval"))]
#[serde(rename_all = "camelCase")]
pub struct GuardrailSource {
    /// The `WeblabDial` (same namespace) whose treatments are compared: its
    /// first treatment is control; its status gives the shares served and
    /// when each realm's stage started.
    pub dial_ref: LocalRef,

    /// The Prometheus server, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,

    /// PromQL counting outcomes (e.g. errors) of one treatment in one realm
    /// over a window; `$treatment`, `$realm` and `$window` (e.g. `347s`)
    /// are substituted. E.g. `sum(increase(http_requests_total{weblab="checkout",
    /// treatment="$treatment",realm="$realm",code=~"5.."}[$window]))`.
    #[schemars(length(min = 1, max = 8192))]
    pub outcomes: String,

    /// PromQL counting trials (e.g. requests), with the same placeholders.
    #[schemars(length(min = 1, max = 8192))]
    pub trials: String,

    /// To compare a mean (latency) rather than a rate: PromQL summing the
    /// squares of the values, with the same placeholders; `outcomes` then
    /// sums the values (e.g. a summary's `_sum`) and `trials` counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub squares: Option<String>,

    /// Whether a higher (errors) or a lower (successes) rate is worse.
    #[serde(default)]
    pub worse: WorseDirection,

    /// How much worse than control a treatment may be. Absent: any
    /// regression the test can show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<GuardrailTolerance>,

    /// The confidence level of the decision (1 - the false-alarm rate per
    /// realm, whatever the number of evaluations).
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.8, max = 0.9999))]
    pub confidence: f64,

    /// Fewer trials than this in control or in a treatment, since the stage
    /// started, decide nothing (`INSUFFICIENT_DATA`).
    #[serde(default = "default_min_trials")]
    #[schemars(range(min = 100, max = 100_000_000))]
    pub min_trials: u32,

    /// How often to evaluate (at least 5s).
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// How long each query may take; a timeout counts as missing data.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,

    /// A bearer token for Prometheus, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
}

fn default_confidence() -> f64 {
    DEFAULT_CONFIDENCE
}

fn default_min_trials() -> u32 {
    1000
}

/// Which way of a rate is a regression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorseDirection {
    /// A higher rate is worse (errors, timeouts).
    #[default]
    Higher,
    /// A lower rate is worse (successes, conversions).
    Lower,
}

/// A tolerance, relative to control's rate or absolute.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.relative) != has(self.absolute)")
    .message("set exactly one of relative and absolute"))]
#[serde(rename_all = "camelCase")]
pub struct GuardrailTolerance {
    /// A fraction of control's rate: `0.1` tolerates 10% more errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub relative: Option<f64>,
    /// A difference of rates: `0.001` tolerates 0.1 percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub absolute: Option<f64>,
}

/// A PromQL query evaluated at an interval and compared to a threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.datapointsToAlarm <= self.evaluationPeriods")
        .message("datapointsToAlarm (M) must not exceed evaluationPeriods (N)")
        .field_path(".datapointsToAlarm"),
    validation = Rule::new("!has(self.interval) || duration(self.interval) >= duration('5s')")
        .message("interval must be at least 5s")
        .field_path(".interval"),
    validation = Rule::new("!has(self.timeout) || (duration(self.timeout) > duration('0s') && duration(self.timeout) <= duration('60s'))")
        .message("timeout must be more than 0s and at most 60s")
        .field_path(".timeout"),
    validation = Rule::new("(has(self.timeout) ? duration(self.timeout) : duration('5s')) < (has(self.interval) ? duration(self.interval) : duration('15s'))")
        .message("timeout must be shorter than interval")
        .field_path(".timeout"),
)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// The Prometheus server, e.g. `http://prometheus.monitoring:9090`;
    /// no credentials, query or fragment.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub url: String,

    /// An instant PromQL query; its result is reduced to one number.
    #[schemars(length(min = 1, max = 8192))]
    pub query: String,

    /// How often to evaluate; at least 5s.
    #[serde(default = "default_interval")]
    pub interval: Duration,

    /// How long a query may take, at most 60s and less than the interval;
    /// a timeout counts as missing data.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,

    /// How the value compares to the threshold to breach.
    pub comparison: Comparison,

    /// The threshold.
    pub threshold: f64,

    /// M: breaching datapoints among the last N that put the alarm in
    /// `ALARM`; fewer than M clear it.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub datapoints_to_alarm: u32,

    /// N: how many recent datapoints are considered.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub evaluation_periods: u32,

    /// How a datapoint with no data (empty result, NaN, query error or
    /// timeout) counts.
    #[serde(default)]
    pub missing_data: MissingDataPolicy,

    /// How a result of several series is reduced to one value.
    #[serde(default)]
    pub series: SeriesReduction,

    /// A bearer token for Prometheus, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,

    /// A traffic floor: a datapoint taken while the volume is below it counts
    /// as missing data (under `missingData`), so that in a quiet hour one
    /// error among two requests cannot breach an error-ratio threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_floor: Option<TrafficFloor>,
}

/// The volume under which a datapoint says too little to count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficFloor {
    /// An instant PromQL query for the volume behind the signal, e.g.
    /// `sum(rate(http_requests_total{service="checkout"}[5m]))`; the sum of
    /// its series is compared to `minimum`. Evaluated with the signal's
    /// query, at the same instant.
    #[schemars(length(min = 1, max = 8192))]
    pub query: String,
    /// Below this volume (an empty result counts as 0) the datapoint is
    /// missing data.
    #[schemars(range(min = 0.0))]
    pub minimum: f64,
}

/// The shortest interval the operator queries at.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest a query may take.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl PrometheusSource {
    /// The interval the operator keeps: the API server enforces the floor,
    /// and an alarm stored before it did is held to it here.
    pub fn effective_interval(&self) -> std::time::Duration {
        self.interval.get().max(MIN_INTERVAL)
    }

    /// The timeout the operator keeps: at most [`MAX_TIMEOUT`] and never
    /// longer than the interval.
    pub fn effective_timeout(&self) -> std::time::Duration {
        self.timeout
            .get()
            .min(MAX_TIMEOUT)
            .min(self.effective_interval())
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn one() -> u32 {
    1
}

/// How a value compares to the threshold to breach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    /// value > threshold breaches.
    GreaterThan,
    /// value >= threshold breaches.
    GreaterThanOrEqual,
    /// value < threshold breaches.
    LessThan,
    /// value <= threshold breaches.
    LessThanOrEqual,
}

/// How a datapoint without data counts, as the trusted alarm systems define it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MissingDataPolicy {
    /// Missing: with too few datapoints the alarm is `INSUFFICIENT_DATA`.
    #[default]
    Missing,
    /// Ignored: the alarm keeps its current state.
    Ignore,
    /// Counts as breaching.
    Breaching,
    /// Counts as not breaching.
    NotBreaching,
}

/// How several series become one value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SeriesReduction {
    /// The series furthest into breach (the largest for `GreaterThan*`, the
    /// smallest for `LessThan*`).
    #[default]
    Worst,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
    /// The sum.
    Sum,
    /// The mean.
    Average,
}

/// Alerts pushed by Alertmanager, matched by labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerSource {
    /// Every matcher must hold for an alert to count (e.g.
    /// `alertname = HighErrorRate`).
    #[schemars(length(min = 1, max = 16))]
    pub matchers: Vec<LabelMatcher>,

    /// A firing alert not re-sent for this long is stale: the alarm becomes
    /// `INSUFFICIENT_DATA`. Keep Alertmanager's `repeat_interval` shorter.
    #[serde(default = "default_stale_after")]
    pub stale_after: Duration,
}

fn default_stale_after() -> Duration {
    Duration::from_secs(3600)
}

/// One label matcher, as Alertmanager writes them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelMatcher {
    /// The label's name.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// How the value is compared; absent means `=`. Not defaulted by the
    /// API server: a default inside this (atomic) list would make every
    /// server-side re-apply of an unchanged manifest a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<MatchOperator>,
    /// The value, or a regular expression for `=~` and `!~`.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// Label comparison operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MatchOperator {
    /// Equal.
    #[default]
    #[serde(rename = "=")]
    Equal,
    /// Not equal.
    #[serde(rename = "!=")]
    NotEqual,
    /// Matches a fully anchored regular expression.
    #[serde(rename = "=~")]
    Matches,
    /// Does not match a fully anchored regular expression.
    #[serde(rename = "!~")]
    NotMatches,
}

/// The state of an alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AlarmState {
    /// Not breaching.
    #[serde(rename = "OK")]
    Ok,
    /// Breaching.
    #[serde(rename = "ALARM")]
    Alarm,
    /// Not enough data to tell.
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        })
    }
}

/// Observed state of an `Alarm`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AlarmState>,

    /// The last value seen (absent when it was missing or NaN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,

    /// Why the alarm is in its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// When the state last changed, to the microsecond: a pause's
    /// `resumeWhen.clearFor` counts from it and must never end early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<MicroTime>,

    /// The most recent datapoints (at most `evaluationPeriods`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datapoints: Vec<Datapoint>,

    /// Alerts from Alertmanager that currently match and fire, in detail:
    /// at most 100, the most recently received. The counts in `alertGroups`
    /// hold every one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["fingerprint"]))]
    pub alerts: Vec<ObservedAlert>,

    /// Per Alertmanager group (`groupKey`): how many matching alerts its
    /// latest notification said fire, counted in full even when only some
    /// of them are kept in `alerts`, and alerts Alertmanager left out of the
    /// notification (`truncatedAlerts`) that may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["groupKey"]))]
    pub alert_groups: Vec<AlertGroup>,

    /// For a guardrail: the comparison with control in each realm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["realm"]))]
    pub realms: Vec<RealmComparison>,

    /// `Ready` (the source answers), `Degraded` (it does not); for a
    /// guardrail, `SampleRatioMismatch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One evaluation of the source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Datapoint {
    /// When it was taken.
    pub at: Time,
    /// The value; absent when there was no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Whether it breached; absent when it did not count either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaching: Option<bool>,
}

/// A firing alert received from Alertmanager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedAlert {
    /// Alertmanager's fingerprint of the alert.
    pub fingerprint: String,
    /// Its `alertname` label, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// When it started firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Time>,
    /// When a notification last carried it.
    pub last_received: Time,
}

/// What the latest notification of one Alertmanager group said about an
/// alarm's alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertGroup {
    /// The group's `groupKey` (a digest of it when longer than 128 bytes).
    pub group_key: String,
    /// Matching alerts that fire, including those Alertmanager truncated
    /// when the group's common labels show they match.
    pub firing: u32,
    /// Alerts Alertmanager truncated whose labels it did not send, so that
    /// whether they match is unknown: the alarm reads at least
    /// `INSUFFICIENT_DATA` while any are fresh.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unknown: u32,
    /// When a notification of the group last arrived.
    pub last_received: Time,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// The condition a guardrail sets while the trials of some realm do not
/// match the shares served there.
pub const SAMPLE_RATIO_MISMATCH: &str = "SampleRatioMismatch";

/// A guardrail's decision in one realm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealmComparison {
    /// The realm.
    pub realm: String,
    /// `ALARM` when a treatment is worse than control here; the dial rolls
    /// back this realm only.
    pub state: AlarmState,
    /// Why, in words.
    pub reason: String,
    /// When the realm's current stage started: counts run from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<MicroTime>,
    /// Trials per treatment, as shares: observed and served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<SampleRatio>,
    /// Each treatment against control.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub treatments: Vec<TreatmentComparison>,
}

/// Trials per treatment against the shares served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SampleRatio {
    /// Each treatment's share of the trials counted.
    pub observed: BTreeMap<String, f64>,
    /// Each treatment's share served by the dial.
    pub expected: BTreeMap<String, f64>,
    /// Whether they differ beyond chance (Lindon & Malek's sequential test
    /// at 0.001): decisions in the realm are withheld.
    pub mismatch: bool,
}

/// One treatment against control, since the stage started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TreatmentComparison {
    /// The treatment.
    pub treatment: String,
    /// Its decision.
    pub state: AlarmState,
    /// Its trials.
    pub trials: f64,
    /// Control's trials.
    pub control_trials: f64,
    /// Its outcome rate (or mean).
    pub rate: f64,
    /// Control's outcome rate (or mean).
    pub control_rate: f64,
    /// The estimate: its rate (or mean) minus control's.
    pub estimate: f64,
    /// The lower end of the confidence sequence of the estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// The upper end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
}
