//! `WeblabNotifier`: which decisions of the objects in its namespace reach
//! people, through which sinks (Slack, Microsoft Teams, PagerDuty, a signed
//! webhook), grouped and rate-limited. A kind rather than chart values, so
//! that each team routes its own namespace's decisions with its own
//! Secrets, and the administrator grants nothing per team.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, MicroTime, SecretKeyRef, Severity};

/// The most decisions awaiting delivery one notifier records in its status;
/// past it, the oldest group is delivered before a new one opens.
pub const MAX_PENDING: usize = 50;
/// The most object names a pending group lists (it counts them all).
pub const MAX_GROUP_OBJECTS: usize = 20;

/// Routes the decisions of the objects in its namespace (rolled back,
/// aborted, alarm firing and cleared, pauses, windows) to people.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "WeblabNotifier",
    namespaced,
    status = "WeblabNotifierStatus",
    derive = "PartialEq",
    shortname = "wn",
    category = "weblab",
    doc = "Routes the decisions of the objects in its namespace to Slack, Microsoft Teams, PagerDuty or a signed webhook.",
    printcolumn(name = "Sinks", type_ = "string", json_path = ".spec.sinks[*].name"),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.pendingCount"
    ),
    printcolumn(
        name = "Failing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"SinkFailing\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.sinks.all(s, self.sinks.exists_one(o, o.name == s.name))")
        .message("sink names must be unique")
        .field_path(".sinks"),
)]
#[serde(rename_all = "camelCase")]
pub struct WeblabNotifierSpec {
    /// Where messages go; each decision that passes the filters goes to
    /// every sink.
    #[schemars(length(min = 1, max = 8))]
    pub sinks: Vec<Sink>,

    /// Which decisions are sent; absent: all of them.
    #[serde(default)]
    pub filter: NotificationFilter,

    /// Links added to each message (a dashboard, a runbook), with
    /// `{{name}}`, `{{namespace}}`, `{{kind}}`, `{{realm}}`, `{{alarm}}`
    /// and `{{reason}}` replaced by the decision's values, URL-encoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub links: Vec<LinkTemplate>,

    /// How decisions are grouped into one message.
    #[serde(default)]
    pub grouping: Grouping,

    /// How many messages the notifier sends at most.
    #[serde(default)]
    pub rate_limit: RateLimit,

    /// The deadline of each delivery attempt (default 10s, at most 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// One destination of messages.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("[has(self.slack), has(self.teams), has(self.pagerduty), has(self.webhook)].filter(x, x).size() == 1")
        .message("a sink is exactly one of slack, teams, pagerduty or webhook"),
)]
#[serde(rename_all = "camelCase")]
pub struct Sink {
    /// The sink's name, unique in the notifier; status reports per name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<ChatSink>,
    /// A Microsoft Teams workflow webhook ("When a Teams webhook request is
    /// received"), posting an Adaptive Card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<ChatSink>,
    /// PagerDuty Events API v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<PagerDutySink>,
    /// A signed HTTP POST of the message as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSink>,
}

/// A chat webhook whose URL is its credential, read from a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatSink {
    /// The key of a Secret in this namespace holding the webhook URL.
    pub webhook_secret_ref: SecretKeyRef,
}

/// A PagerDuty service's Events API v2 integration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PagerDutySink {
    /// The key of a Secret in this namespace holding the integration's
    /// routing key.
    pub routing_key_secret_ref: SecretKeyRef,
    /// The PagerDuty severity of every alert; absent: from the decision's
    /// severity (Sev1 critical, Sev2 and Sev2.5 error, Sev3 warning, Sev4
    /// info; error when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<PagerDutySeverity>,
}

/// PagerDuty's alert severities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    /// `critical`.
    Critical,
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `info`.
    Info,
}

impl PagerDutySeverity {
    /// The word PagerDuty expects.
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }
}

/// A receiver of signed JSON messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSink {
    /// Where to POST; no credentials or fragment.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s#@]+$"))]
    pub url: String,
    /// The HMAC key.
    pub secret_ref: SecretKeyRef,
}

/// The kinds whose decisions a notifier may route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotifiedKind {
    /// `WeblabDial`.
    WeblabDial,
    /// `Rollback`.
    Rollback,
    /// `Alarm`.
    Alarm,
    /// `MergeTrainPause`.
    MergeTrainPause,
    /// `ChangeWindow`.
    ChangeWindow,
    /// `MergeTrainException`.
    MergeTrainException,
}

impl NotifiedKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifiedKind::WeblabDial => "WeblabDial",
            NotifiedKind::Rollback => "Rollback",
            NotifiedKind::Alarm => "Alarm",
            NotifiedKind::MergeTrainPause => "MergeTrainPause",
            NotifiedKind::ChangeWindow => "ChangeWindow",
            NotifiedKind::MergeTrainException => "MergeTrainException",
        }
    }
}

/// Which decisions are sent; every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFilter {
    /// The kinds; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = 6))]
    pub kinds: Vec<NotifiedKind>,
    /// The decisions by event reason (`RolledBack`, `Aborted`, `Failed`,
    /// `AlarmFiring`, `AlarmCleared`, `Paused`, `Resumed`, `WindowClosed`,
    /// `WaveFailed`, ...); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = 64),
        inner(length(min = 1, max = 63), regex(pattern = r"^[A-Z][A-Za-z0-9]*$"))
    )]
    pub reasons: Vec<String>,
    /// The objects whose labels match (operators as for alarm selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::checked_selector")]
    pub selector: Option<LabelSelector>,
    /// Decisions with a severity (an alarm's, or the alarm that caused
    /// them) are sent when at least this severe; decisions without one are
    /// not held back by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
}

/// A link added to messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkTemplate {
    /// The link's text.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The URL, with placeholders in double braces.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^https?://([^{}\s]|\{\{(name|namespace|kind|realm|alarm|reason)\}\})+$")
    )]
    pub url: String,
}

/// How decisions are grouped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grouping {
    /// How long a group collects decisions (of one alarm, or of one object
    /// and reason) before its message is sent (default 10s, at most 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Duration>,
}

/// How many messages are sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Messages per minute at most, per sink (default 30); groups past it
    /// wait, and collect further decisions meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub max_per_minute: Option<u32>,
}

/// What a message asks of PagerDuty.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum NotificationAction {
    /// Something went wrong: an alert (PagerDuty `trigger`).
    Trigger,
    /// An alarm cleared: its alert resolves (PagerDuty `resolve`).
    Resolve,
    /// A change worth knowing (PagerDuty change event).
    Change,
}

/// A decision as a message carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The event reason.
    pub reason: String,
    /// Whether the event was a Warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// The event message.
    pub message: String,
    /// When it was decided.
    pub at: MicroTime,
    /// The evidence.
    #[serde(default)]
    pub evidence: Evidence,
}

/// What a decision rests on, as far as its kind knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The realms or regions concerned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub realms: Vec<String>,
    /// The alarm that caused the decision (or the alarm itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// Its severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The alarm's last value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The alarm's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// A guardrail's estimate, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
    /// The allocation or revision before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The allocation or revision after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The object's `weblab.dev/ticket` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// A message recorded before it is delivered, so that a successor leader
/// delivers what its predecessor could not, with the same dedup key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// This message's id, sent as `X-Weblab-Delivery` and in the payloads.
    pub id: String,
    /// What the message asks.
    pub action: NotificationAction,
    /// What it is grouped by: `alarm/<name>`, or `<kind>/<name>/<reason>`.
    pub subject: String,
    /// PagerDuty's `dedup_key`: one per subject, so that a retry or a
    /// successor's delivery joins the same alert, and a resolve finds it.
    pub dedup_key: String,
    /// When the group opened.
    pub opened_at: MicroTime,
    /// The first decision of the group.
    pub first: DecisionRecord,
    /// The objects the group's decisions concern, `Kind/name`, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    /// How many decisions the group holds.
    pub count: u32,
    /// The sinks that accepted it already.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<String>,
}

/// How one sink fares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// Deliveries failed in a row (every attempt of each); reset by a
    /// success.
    #[serde(default)]
    pub failures: u32,
    /// The last failure, in the operator's words (never the answer's text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last delivery it accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<MicroTime>,
}

/// The last message delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivered {
    /// The message's id.
    pub id: String,
    /// Its subject.
    pub subject: String,
    /// Its dedup key.
    pub dedup_key: String,
    /// How many decisions it carried.
    pub count: u32,
    /// When the last sink accepted it.
    pub at: MicroTime,
}

/// Observed state of a `WeblabNotifier`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeblabNotifierStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Messages decided but not yet accepted by every sink (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub pending: Vec<PendingNotification>,
    /// How many are pending, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_count: Option<u32>,
    /// The last message every sink accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered: Option<Delivered>,
    /// Per sink.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sinks: Vec<SinkStatus>,
    /// `SinkFailing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Page when a rollback did not help: an attached alarm still fires `after`
/// the rollback completed. The page resolves by itself once no attached
/// alarm fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// How long after the rollback completed (the runbook's 15m).
    pub after: Duration,
    /// The page's severity (Sev1 is PagerDuty's `critical`).
    #[serde(default = "escalation_severity")]
    pub severity: Severity,
    /// The `WeblabNotifier` (in this namespace) that pages, whatever its
    /// filter; absent (or not found, which a Warning event reports): every
    /// notifier whose filter lets `Escalated` and `EscalationResolved`
    /// through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub notifier: Option<String>,
}

fn escalation_severity() -> Severity {
    Severity::Sev1
}

/// Where an escalation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EscalationState {
    /// Rolled back; waiting `after` to see whether the alarms clear.
    Watching,
    /// An attached alarm still fired: paged.
    Paged,
    /// No attached alarm fires (any page is resolved).
    Resolved,
}

/// The escalation of the last rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EscalationStatus {
    /// Where it stands.
    pub state: EscalationState,
    /// When the rollback completed.
    pub since: MicroTime,
    /// When the alarms are looked at.
    pub due_at: MicroTime,
    /// When it paged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paged_at: Option<MicroTime>,
    /// When the page was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<MicroTime>,
    /// The attached alarms firing when it last changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}
