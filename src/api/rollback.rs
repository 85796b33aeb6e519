//! `Rollback`: return workloads to a previous stable revision, region by
//! region, with verification.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{AlarmSelection, Duration, MicroTime, SecretKeyRef, Severity},
    merge_train_pause::MergeTrainRef,
    weblab_notifier::{Escalation, EscalationStatus},
};

/// On a Namespace: the Rollbacks of other namespaces allowed to act in it,
/// as a comma-separated list of `namespace/name` (`namespace/*`: every
/// Rollback of that namespace). A Rollback acts in its own namespace
/// without it; a wave with a kubeconfig is governed by that kubeconfig's
/// credentials instead.
pub const AUTHORIZED_ROLLBACKS: &str = "weblab.dev/authorized-rollbacks";

/// Workloads returned to an earlier revision, region by region, each region
/// verified by alarms before the next; run at once or armed to fire on alarms.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "Rollback",
    namespaced,
    status = "RollbackStatus",
    derive = "PartialEq",
    shortname = "rbk",
    category = "weblab",
    doc = "Returns workloads to a previous stable revision, region by region, verifying each region with alarms.",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Region", type_ = "string", json_path = ".status.currentRegion"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.waves.all(w, self.waves.exists_one(o, o.region == w.region))")
        .message("wave regions must be unique")
        .field_path(".waves"),
    validation = Rule::new("self.trigger.type != 'Alarm' || (has(self.trigger.alarms.names) && size(self.trigger.alarms.names) > 0) || has(self.trigger.alarms.selector)")
        .message("an Alarm trigger needs trigger.alarms with names or a selector")
        .field_path(".trigger.alarms"),
)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// The workloads to roll back in every region.
    #[schemars(length(min = 1, max = 64))]
    pub targets: Vec<WorkloadTarget>,

    /// The regions, in order. Each wave is one region.
    #[schemars(length(min = 1, max = 64))]
    pub waves: Vec<Wave>,

    /// How many regions may roll back at once (1: one after another).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub max_concurrent_regions: u32,

    /// Which revision to return to.
    pub target: RevisionTarget,

    /// What proves a region is healthy after its rollback.
    #[serde(default)]
    pub verification: Verification,

    /// When the rollback runs.
    #[serde(default)]
    pub trigger: Trigger,

    /// How long a revision must run clean, fully rolled out and with the
    /// verification alarms clear, to count as stable.
    #[serde(default = "default_stable_after")]
    pub stable_after: Duration,

    /// Merge trains to pause while the rollback runs; lifted when it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub pause_merge_trains: Vec<MergeTrainRef>,

    /// GitOps tools (Argo CD, Flux) whose automatic sync would re-deploy the
    /// release being rolled back: suspended before the first region moves,
    /// restored on re-arm, on delete or on request. Opt-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOps>,

    /// Page when an attached alarm (trigger or verification) still fires a
    /// while after the rollback succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
}

fn one() -> u32 {
    1
}

fn default_stable_after() -> Duration {
    Duration::from_secs(3600)
}

/// Workloads of one kind, by name or by label selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.selector)")
    .message("a target names a workload or selects workloads by label: set exactly one of name and selector"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadTarget {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// The workload's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Every workload of `kind` whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The kinds of workload a rollback can move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (revisions are ReplicaSets).
    Deployment,
    /// `apps/v1` StatefulSet (revisions are ControllerRevisions).
    StatefulSet,
}

/// One region: a namespace, in this cluster or another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// The region's name, e.g. `prodNA`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    )]
    pub region: String,
    /// The namespace the workloads live in there. In this cluster, a
    /// namespace other than the Rollback's must authorize it with the
    /// `weblab.dev/authorized-rollbacks` annotation.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: String,
    /// A kubeconfig for another cluster; absent: this cluster. Inline
    /// credentials only: a kubeconfig with `exec`, `auth-provider`,
    /// `tokenFile`, a certificate or key file, or `proxy-url` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
}

/// The revision to return to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.type != 'Revision' || has(self.revision)")
        .message("target type Revision needs target.revision"),
    validation = Rule::new("self.type != 'ImageTag' || has(self.imageTag)")
        .message("target type ImageTag needs target.imageTag"),
    validation = Rule::new("self.type != 'UndoSince' || has(self.since)")
        .message("target type UndoSince needs target.since"),
    validation = Rule::new("(has(self.revision) ? 1 : 0) + (has(self.imageTag) ? 1 : 0) + (has(self.since) ? 1 : 0) <= 1")
        .message(Message::Expression("'target type ' + self.type + ' takes at most one of revision, imageTag and since, the one its type names'".into())),
)]
#[serde(rename_all = "camelCase")]
pub struct RevisionTarget {
    /// How the revision is chosen.
    #[serde(rename = "type")]
    pub type_: RevisionTargetType,
    /// For `Revision`: the workload revision number (as `kubectl rollout
    /// history` shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revision: Option<i64>,
    /// For `ImageTag`: the revision whose containers run this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    )]
    pub image_tag: Option<String>,
    /// For `UndoSince`: undo every change made within this long (the newest
    /// revision older than this, per workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Duration>,
}

/// How the revision to return to is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RevisionTargetType {
    /// The newest revision before the current one that was stable.
    PreviousStable,
    /// A revision by number.
    Revision,
    /// The newest revision running an image tag.
    ImageTag,
    /// The newest revision older than a duration.
    UndoSince,
}

/// What proves a region healthy after its rollback.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// How long each workload's rollout may take.
    #[serde(default = "default_rollout_deadline")]
    pub rollout_deadline: Duration,
    /// How long the alarms must stay clear after the rollout.
    #[serde(default = "default_bake")]
    pub bake: Duration,
    /// The alarms to watch.
    #[serde(default, skip_serializing_if = "AlarmSelection::is_empty")]
    pub alarms: AlarmSelection,
    /// The severities that fail a region.
    #[serde(default = "Severity::default_rollback")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(min = 1, max = 5))]
    pub severities: Vec<Severity>,
}

fn default_rollout_deadline() -> Duration {
    Duration::from_secs(600)
}

fn default_bake() -> Duration {
    Duration::from_secs(900)
}

impl Default for Verification {
    fn default() -> Self {
        Verification {
            rollout_deadline: default_rollout_deadline(),
            bake: default_bake(),
            alarms: AlarmSelection::default(),
            severities: Severity::default_rollback(),
        }
    }
}

/// When a rollback runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// `Immediate` (when applied) or `Alarm` (armed, fires once).
    #[serde(default, rename = "type")]
    pub type_: TriggerType,
    /// For `Alarm`: the alarms that fire it.
    #[serde(default)]
    pub alarms: AlarmSelection,
    /// For `Alarm`: the severities that fire it.
    #[serde(default = "Severity::default_rollback")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(min = 1, max = 5))]
    pub severities: Vec<Severity>,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger {
            type_: TriggerType::default(),
            alarms: AlarmSelection::default(),
            severities: Severity::default_rollback(),
        }
    }
}

/// When a rollback runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TriggerType {
    /// As soon as it is applied.
    #[default]
    Immediate,
    /// Armed: when an attached alarm fires at a listed severity.
    Alarm,
}

/// Where a rollback is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RollbackPhase {
    /// Accepted, not started.
    Pending,
    /// Waiting for an alarm to fire.
    Armed,
    /// Rolling regions back.
    Progressing,
    /// Every region rolled back and verified.
    Succeeded,
    /// A region failed; later regions were not touched.
    Failed,
    /// Refused before anything changed (e.g. no deployable target revision,
    /// or a target namespace that does not authorize the rollback).
    Refused,
}

/// Where a region is in its rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WavePhase {
    /// Not started.
    Pending,
    /// Restoring pod templates and waiting for rollouts.
    RollingBack,
    /// Rolled out; alarms must stay clear.
    Baking,
    /// Verified.
    Succeeded,
    /// Failed; see the message.
    Failed,
}

/// Observed state of a `Rollback`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the rollback is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RollbackPhase>,
    /// The region being rolled back now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_region: Option<String>,
    /// When an `Alarm`-triggered rollback was (re-)armed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed_at: Option<MicroTime>,
    /// What fired an armed rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_by: Option<FiredBy>,
    /// The last `weblab.dev/action` request handled (each distinct value is
    /// handled once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<MicroTime>,
    /// Per region, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["region"]))]
    pub waves: Vec<WaveStatus>,
    /// The GitOps objects whose automatic sync this rollback suspended:
    /// what it changed and what was there before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "namespace", "name"]))]
    pub gitops: Vec<GitOpsStatus>,
    /// `Ready`, `Reconciling`, `Stalled`, `Degraded`; with `spec.gitops`
    /// also `GitOpsReady` and `AutoSyncSuspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The escalation after success, per `spec.escalation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationStatus>,
}

/// What fired an armed rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiredBy {
    /// The alarm.
    pub alarm: String,
    /// Its severity.
    pub severity: Severity,
    /// When.
    pub at: MicroTime,
}

/// One region's rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// The region.
    pub region: String,
    /// Where it is.
    pub phase: WavePhase,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When every workload had rolled out and the bake began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_at: Option<MicroTime>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<MicroTime>,
    /// The workloads in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One workload's rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `Deployment` or `StatefulSet`.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
    /// The revision it ran before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<i64>,
    /// The revision restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<i64>,
    /// The revision it ran before, by identity: the ReplicaSet's
    /// `pod-template-hash`, or the ControllerRevision's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_hash: Option<String>,
    /// The revision restored, by identity (as `fromHash`); a GitOps tool
    /// that re-applies `fromHash` afterwards is reported, not fought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_hash: Option<String>,
    /// The image(s) restored, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_images: Option<String>,
    /// When its revision was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When it was seen rolled out (or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<MicroTime>,
    /// `Succeeded`, `Failed` or in progress.
    pub result: WorkloadResult,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The outcome for one workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadResult {
    /// Not yet rolled back.
    Pending,
    /// Pod template restored; rolling out.
    RollingOut,
    /// Rolled out.
    Succeeded,
    /// Did not roll out, or no target revision.
    Failed,
    /// Rolled back, then something (a GitOps tool's auto-sync, a pipeline)
    /// re-applied the revision it was rolled back from.
    Overwritten,
}

/// GitOps tools whose automatic sync a rollback suspends while it runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.suspendAutoSync.all(a, self.suspendAutoSync.exists_one(b, b.kind == a.kind && b.name == a.name && (has(b.__namespace__) ? b.__namespace__ : '') == (has(a.__namespace__) ? a.__namespace__ : '')))")
    .message("each GitOps object may be listed once")
    .field_path(".suspendAutoSync"))]
#[serde(rename_all = "camelCase")]
pub struct GitOps {
    /// The Argo CD Applications and Flux Kustomizations and HelmReleases
    /// that deploy the targets: their automatic sync is turned off (by
    /// server-side apply, field manager `weblab-operator-gitops`, that one
    /// field only) before the first region moves.
    #[schemars(length(min = 1, max = 16))]
    pub suspend_auto_sync: Vec<GitOpsRef>,
}

/// One GitOps object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsRef {
    /// `Application` (Argo CD), `Kustomization` or `HelmRelease` (Flux).
    pub kind: GitOpsKind,
    /// Its name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Its namespace; default: the rollback's. Another namespace must
    /// authorize the rollback with the `weblab.dev/authorized-rollbacks`
    /// annotation, as for a wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
}

/// The GitOps kinds whose automatic sync a rollback can suspend.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum GitOpsKind {
    /// Argo CD `argoproj.io/v1alpha1` Application:
    /// `spec.syncPolicy.automated.enabled` is set to `false`.
    Application,
    /// Flux `kustomize.toolkit.fluxcd.io/v1` Kustomization: `spec.suspend`
    /// is set to `true`.
    Kustomization,
    /// Flux `helm.toolkit.fluxcd.io/v2` HelmRelease: `spec.suspend` is set
    /// to `true`.
    HelmRelease,
}

/// Where one GitOps object's suspension is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GitOpsState {
    /// The prior value is recorded; the suspension is being written.
    Suspending,
    /// Automatic sync is off: the operator's field manager holds the field.
    Suspended,
    /// Automatic sync was already off: left alone, nothing to restore.
    AlreadyOff,
    /// The operator's field manager let go of the field: the owner's value
    /// is back.
    Restored,
}

/// One GitOps object whose automatic sync the rollback changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOpsStatus {
    /// Its kind.
    pub kind: GitOpsKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The field the rollback holds while it is suspended.
    pub field: String,
    /// Where the suspension is.
    pub state: GitOpsState,
    /// The field's value before, as JSON (`true`, `false`); absent: unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_value: Option<String>,
    /// When the suspension was recorded (before it was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<MicroTime>,
    /// When the field was given back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<MicroTime>,
    /// Details, e.g. why it was restored or that someone else changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
