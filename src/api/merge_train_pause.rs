//! `MergeTrainPause`: hold a merge train closed until an expiry or a
//! condition, through a provider.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{AlarmSelection, Duration, MicroTime, SecretKeyRef};

/// A merge train held closed: nothing merges until the pause expires, its
/// resume condition holds, or it is deleted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "MergeTrainPause",
    namespaced,
    status = "MergeTrainPauseStatus",
    derive = "PartialEq",
    shortname = "mtp",
    category = "weblab",
    doc = "Holds a merge train closed through its provider until an expiry or a resume condition.",
    printcolumn(name = "Train", type_ = "string", json_path = ".spec.train"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    // An absolute time: kubectl renders a `date` column only as an age, so
    // a future expiry read `<invalid>` and a past one like a time left.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Ticket",
        type_ = "string",
        json_path = ".spec.ticket",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".spec.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.expiresAt) && has(self.duration))")
        .message("set spec.expiresAt or spec.duration, not both"),
    validation = Rule::new("has(self.expiresAt) || has(self.duration) || has(self.resumeWhen)")
        .message("a pause must end: set spec.expiresAt, spec.duration or spec.resumeWhen"),
)]
#[serde(rename_all = "camelCase")]
pub struct MergeTrainPauseSpec {
    /// The train and the provider that drives it.
    #[serde(flatten)]
    pub train: MergeTrainRef,

    /// Why the train is paused.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,

    /// A link to the incident or change ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub ticket: Option<String>,

    /// When the pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// How long the pause lasts from its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,

    /// Resume early once these alarms have been `OK` for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_when: Option<ResumeCondition>,
}

/// A merge train and how to pause it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeTrainRef {
    /// The train's name; CI jobs query the gate `/v1/gates/{namespace}/{train}`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
    )]
    pub train: String,

    /// How the train is paused besides closing its gate; absent: `Gate`.
    #[serde(default)]
    #[schemars(transform = no_default)]
    pub provider: Provider,
}

/// Leaves a field's default to the operator: a default the API server
/// fills in inside an (atomic) list item, such as a dial's or a Rollback's
/// `pauseMergeTrains`, turns every server-side re-apply of an unchanged
/// manifest into a write.
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// How a train is paused. The gate endpoint is closed for every pause,
/// whatever the provider.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("(has(self.type) ? self.type : 'Gate') != 'GitLab' || has(self.gitlab)")
        .message("provider type GitLab needs provider.gitlab"),
    validation = Rule::new("(has(self.type) ? self.type : 'Gate') != 'Webhook' || has(self.webhook)")
        .message("provider type Webhook needs provider.webhook"),
    validation = Rule::new("(has(self.type) ? self.type : 'Gate') == 'GitLab' || !has(self.gitlab)")
        .message(Message::Expression("'provider.gitlab is set but provider type is ' + (has(self.type) ? self.type : 'Gate')".into())),
    validation = Rule::new("(has(self.type) ? self.type : 'Gate') == 'Webhook' || !has(self.webhook)")
        .message(Message::Expression("'provider.webhook is set but provider type is ' + (has(self.type) ? self.type : 'Gate')".into())),
)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    /// Which provider; absent: `Gate`.
    #[serde(default, rename = "type")]
    #[schemars(transform = no_default)]
    pub type_: ProviderType,
    /// Settings for `GitLab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitLabProvider>,
    /// Settings for `Webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookProvider>,
}

/// The providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProviderType {
    /// Only the operator's gate endpoint, which CI jobs query before merging.
    #[default]
    Gate,
    /// A GitLab pipeline schedule's `active` flag.
    GitLab,
    /// A signed HTTP POST of `pause` and `resume`.
    Webhook,
}

/// A GitLab pipeline schedule that drives the merge train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitLabProvider {
    /// The GitLab instance, e.g. `https://gitlab.example.com`; no
    /// credentials, query or fragment.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s?#@]+$"))]
    pub url: String,
    /// The project's id or its full path (`group/project`).
    #[schemars(length(min = 1, max = 512))]
    pub project: String,
    /// The pipeline schedule's id.
    #[schemars(range(min = 1))]
    pub pipeline_schedule_id: i64,
    /// An API token with the `api` scope.
    pub token_secret_ref: SecretKeyRef,
}

/// An HTTP endpoint told to pause and resume, with an HMAC-SHA256 signature
/// over the timestamp and body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookProvider {
    /// Where to POST; no credentials or fragment.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s#@]+$"))]
    pub url: String,
    /// The HMAC key.
    pub secret_ref: SecretKeyRef,
}

/// Resume once alarms have been clear for a while.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeCondition {
    /// The alarms that must be `OK`.
    pub alarms: AlarmSelection,
    /// For how long.
    pub clear_for: Duration,
}

/// Where a pause is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PausePhase {
    /// Asking the provider to pause.
    Pausing,
    /// The provider confirmed the pause.
    Paused,
    /// Asking the provider to resume.
    Resuming,
    /// The train runs again (expired, condition met, or deleted).
    Resumed,
    /// The provider keeps failing; retried with backoff.
    Failed,
}

impl PausePhase {
    /// Every phase, for metrics that report zero as well.
    pub const ALL: [PausePhase; 5] = [
        PausePhase::Pausing,
        PausePhase::Paused,
        PausePhase::Resuming,
        PausePhase::Resumed,
        PausePhase::Failed,
    ];
}

/// Observed state of a `MergeTrainPause`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeTrainPauseStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the pause is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PausePhase>,
    /// When the pause ends, from `expiresAt` or `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the provider's state before the pause was read and recorded in
    /// `restore`, the last step before anything is changed. Absent while
    /// pausing: the pause has changed nothing, and deleting it resumes
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_at: Option<MicroTime>,
    /// When the provider confirmed the pause (to the microsecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<MicroTime>,
    /// When the train was resumed (to the microsecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<MicroTime>,
    /// What the provider last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderReport>,
    /// The provider's state before the pause, restored on resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreState>,
    /// Consecutive failed provider calls; reset by a success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When a failed provider call is tried again (exponential backoff; to
    /// the microsecond, never before the backoff has passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<MicroTime>,
    /// `Ready`, `Reconciling`, `Stalled`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// What a provider reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderReport {
    /// When (to the microsecond).
    pub at: MicroTime,
    /// Whether the train was running (e.g. the schedule's `active` flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// What it said.
    pub message: String,
}

/// The state to put back on resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreState {
    /// Whether the train was active before the pause; an inactive train
    /// stays inactive.
    pub active: bool,
}
