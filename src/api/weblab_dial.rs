//! `WeblabDial`: the desired allocation of one weblab and how to get there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    alarm::AlarmState,
    common::{
        AlarmSelection, Allocation, Duration, LocalRef, MicroTime, Severity,
        effective_allocation_schema, optional_effective_allocation_schema,
    },
    merge_train_pause::MergeTrainRef,
    weblab_notifier::{Escalation, EscalationStatus},
};

/// The most entries the bounded allocation history keeps.
pub const HISTORY_LIMIT: usize = 50;

/// A weblab's desired allocation per realm, reached through optional
/// progressive steps, rolled back automatically when attached alarms fire.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "WeblabDial",
    namespaced,
    status = "WeblabDialStatus",
    derive = "PartialEq",
    shortname = "dial",
    shortname = "wd",
    category = "weblab",
    doc = "The desired allocation of one weblab (an A/B experiment or feature flag), how to get there, and when to roll it back.",
    printcolumn(name = "Weblab", type_ = "string", json_path = ".spec.weblab"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Allocation", type_ = "string", json_path = ".status.summary"),
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
    validation = Rule::new("self.allocation.all(t, t in self.treatments)")
        .message("every treatment in spec.allocation must be listed in spec.treatments")
        .field_path(".allocation"),
    validation = Rule::new("!has(self.steps) || self.steps.all(s, s.allocation.all(t, t in self.treatments))")
        .message("every treatment in a step's allocation must be listed in spec.treatments")
        .field_path(".steps"),
    validation = Rule::new("!has(self.overrides) || self.overrides.all(o, o.treatment in self.treatments)")
        .message("every override's treatment must be listed in spec.treatments")
        .field_path(".overrides"),
    validation = Rule::new("!has(self.overrides) || self.overrides.map(o, has(o.units) ? size(o.units) : 0).sum() <= 4000")
        .message("overrides may list at most 4000 units in all; put larger populations in a segment")
        .field_path(".overrides"),
    validation = Rule::new("!has(self.rollback) || !has(self.rollback.allocation) || self.rollback.allocation.all(t, t in self.treatments)")
        .message("every treatment in the rollback allocation must be listed in spec.treatments")
        .field_path(".rollback.allocation"),
    validation = Rule::new("!has(self.waves) || self.waves.all(w, w.realms.all(r, r in self.realms))")
        .message("waves may only name realms listed in spec.realms")
        .field_path(".waves"),
    validation = Rule::new("!has(self.waves) || self.realms.all(r, self.waves.exists_one(w, r in w.realms))")
        .message("each realm in spec.realms must appear in exactly one wave")
        .field_path(".waves"),
)]
#[serde(rename_all = "camelCase")]
pub struct WeblabDialSpec {
    /// The experiment's id, as applications name it (the OFREP flag key is
    /// the object's name). Also the bucketing salt unless `salt` is set.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    )]
    pub weblab: String,

    /// Salt for bucketing units; changing it reshuffles every unit. Defaults
    /// to `weblab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub salt: Option<String>,

    /// The treatments, control first (`[C, T1]`).
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(min = 1, max = 16),
        inner(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"))
    )]
    pub treatments: Vec<String>,

    /// Realms (marketplace regions such as `NA`, `EU`, `FE`) this dial sets.
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(min = 1, max = 32),
        inner(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"))
    )]
    pub realms: Vec<String>,

    /// The domain the allocation applies to (`production`, `beta`, `gamma`).
    #[serde(default = "default_domain")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub domain: String,

    /// The allocation to reach in every realm.
    pub allocation: Allocation,

    /// Intermediate allocations, in order, before `allocation`. Empty: go
    /// straight to `allocation`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub steps: Vec<Step>,

    /// Realms in order: each step reaches the first wave's realms, bakes,
    /// then the next wave's. Empty: all realms at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub waves: Vec<RealmWave>,

    /// Units pinned to a treatment whatever the allocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub overrides: Vec<Override>,

    /// Where to go when an attached alarm fires, and which alarms do that.
    #[serde(default)]
    pub rollback: DialRollback,

    /// A `ChangeWindow` that gates moves towards risk (dial-ups, promotes).
    /// Moves towards safety are never gated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_window_ref: Option<LocalRef>,
}

fn default_domain() -> String {
    "production".to_owned()
}

/// One intermediate allocation and what follows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The allocation this step sets.
    pub allocation: Allocation,

    /// How long to hold this allocation, with attached alarms clear, before
    /// the next wave or step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Duration>,

    /// After the bake, wait for a person to promote or resume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

/// Realms that move together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealmWave {
    /// The realms of this wave.
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(min = 1, max = 32))]
    pub realms: Vec<String>,
}

/// Units pinned to one treatment.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("(has(self.units) && size(self.units) > 0) || (has(self.segments) && size(self.segments) > 0)")
    .message("an override needs at least one unit or segment"))]
#[serde(rename_all = "camelCase")]
pub struct Override {
    /// The treatment these units get.
    #[schemars(length(min = 1, max = 63))]
    pub treatment: String,

    /// Unit ids (customer ids, device ids, sessions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = 4000),
        inner(length(min = 1, max = 256))
    )]
    pub units: Vec<String>,

    /// Named segments (e.g. `beta-customers`); a request carries the segments
    /// its unit belongs to in the `segments` context attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = 32),
        inner(length(min = 1, max = 63))
    )]
    pub segments: Vec<String>,
}

/// Whether overrides still apply after a rollback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OverridePolicy {
    /// Overrides keep winning (beta customers keep the new experience).
    #[default]
    Keep,
    /// Every unit, overridden or not, gets the rollback allocation.
    Drop,
}

/// What a dial does while an attached alarm has no data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InsufficientDataPolicy {
    /// Stay where it is: no move towards risk until the alarm has data.
    #[default]
    Hold,
    /// Treat missing data as clear and keep progressing.
    Proceed,
    /// Treat missing data as firing and roll back.
    RollBack,
}

/// The rollback allocation and its triggers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialRollback {
    /// The allocation to return to. Defaults to 100% of the first treatment
    /// (control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,

    /// The alarms that roll this dial back.
    #[serde(default, skip_serializing_if = "AlarmSelection::is_empty")]
    pub alarms: AlarmSelection,

    /// Alarm severities that roll back; others only record and notify.
    #[serde(default = "Severity::default_rollback")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(min = 1, max = 5))]
    pub severities: Vec<Severity>,

    /// Whether overrides still win after a rollback.
    #[serde(default)]
    pub overrides: OverridePolicy,

    /// What to do while an attached alarm is `INSUFFICIENT_DATA`.
    #[serde(default)]
    pub on_insufficient_data: InsufficientDataPolicy,

    /// Merge trains to pause while the dial is rolled back by an alarm.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub pause_merge_trains: Vec<MergeTrainRef>,

    /// Page when an attached alarm still fires a while after an alarm
    /// rolled the dial back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Escalation>,
}

impl Default for DialRollback {
    fn default() -> Self {
        DialRollback {
            allocation: None,
            alarms: AlarmSelection::default(),
            severities: Severity::default_rollback(),
            overrides: OverridePolicy::default(),
            on_insufficient_data: InsufficientDataPolicy::default(),
            pause_merge_trains: Vec::new(),
            escalation: None,
        }
    }
}

impl WeblabDialSpec {
    /// The control treatment: the first one listed.
    pub fn control(&self) -> Option<&str> {
        self.treatments.first().map(String::as_str)
    }

    /// The allocation a rollback returns to.
    pub fn rollback_allocation(&self) -> Allocation {
        match (&self.rollback.allocation, self.control()) {
            (Some(allocation), _) => allocation.clone(),
            (None, Some(control)) => Allocation::all_in(control),
            (None, None) => Allocation::default(),
        }
    }

    /// The salt units are bucketed with.
    pub fn salt(&self) -> &str {
        self.salt.as_deref().unwrap_or(&self.weblab)
    }
}

/// Where a dial is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DialPhase {
    /// Moved to a step's allocation that has no bake; the next follows at once.
    Progressing,
    /// Holding a step's allocation for its bake time.
    Baking,
    /// Waiting for a person (a pause step, or a `pause` action).
    Paused,
    /// A move towards risk waits: the change window is closed or an attached
    /// alarm has no data.
    Waiting,
    /// At the desired allocation everywhere.
    Dialed,
    /// An attached alarm fired; at the rollback allocation until the spec
    /// changes or a person retries.
    RolledBack,
    /// A person aborted; at the rollback allocation until retried.
    Aborted,
    /// The spec cannot be carried out (e.g. a missing reference); the
    /// effective allocation is unchanged.
    Failed,
}

impl DialPhase {
    /// Every phase, for metrics that report zero as well.
    pub const ALL: [DialPhase; 8] = [
        DialPhase::Progressing,
        DialPhase::Baking,
        DialPhase::Paused,
        DialPhase::Waiting,
        DialPhase::Dialed,
        DialPhase::RolledBack,
        DialPhase::Aborted,
        DialPhase::Failed,
    ];
}

/// Observed state of a `WeblabDial`. Everything served to applications comes
/// from `realms`: the effective allocation per realm.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeblabDialStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the dial is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DialPhase>,

    /// The effective allocation per realm: what is served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["realm"]))]
    pub realms: Vec<RealmAllocation>,

    /// Progress through `spec.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepStatus>,

    /// The states of the attached alarms, as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub alarms: Vec<AttachedAlarm>,

    /// Why the dial is rolled back or aborted, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,

    /// A person paused the dial: no move towards risk until resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,

    /// The last manual action the controller carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<HandledAction>,

    /// `Ready`, `Reconciling`, `Stalled`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The most recent allocation changes, oldest first, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AllocationChange>,

    /// The effective allocation in one line, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,

    /// The escalation of the last rollback, per `spec.rollback.escalation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationStatus>,
}

/// The effective allocation of one realm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RealmAllocation {
    /// The realm.
    pub realm: String,
    /// What units in this realm are served.
    #[schemars(schema_with = "effective_allocation_schema")]
    pub allocation: Allocation,
    /// Which of the 10,000 buckets each treatment holds, sorted by `start`.
    /// Kept across changes so that growing a treatment never moves a unit out
    /// of it and shrinking moves only the units that must move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub buckets: Vec<BucketRange>,
    /// Whether this is the rollback allocation put in place by an alarm or an
    /// abort.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
}

/// A run of buckets `[start, end)` held by one treatment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketRange {
    /// The treatment.
    pub treatment: String,
    /// The first bucket.
    #[schemars(range(max = 9999))]
    pub start: u32,
    /// One past the last bucket.
    #[schemars(range(min = 1, max = 10000))]
    pub end: u32,
}

/// Progress through the steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Index into `spec.steps`; `spec.steps` length means the final target.
    pub index: u32,
    /// Index into `spec.waves` within the step.
    pub wave: u32,
    /// When this step's wave reached its allocation (to the microsecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// When the bake ends (to the microsecond, never before `startedAt`
    /// plus the bake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<MicroTime>,
    /// A person promoted this stage: the rest of its bake and its pause are
    /// skipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
    /// What the dial waits for, if anything, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// An attached alarm's state as the dial saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachedAlarm {
    /// The `Alarm`'s name.
    pub name: String,
    /// Its state.
    pub state: AlarmState,
    /// Its severity.
    pub severity: Severity,
    /// The realm it is scoped to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

/// Why a dial was rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    /// When (to the microsecond: alarm-to-rollback latency is read from it).
    pub at: MicroTime,
    /// The alarm that rolled the dial back (the first to fire); empty for
    /// an abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// The other alarms at a rollback severity that fired with it or while
    /// the dial stayed rolled back, in the order seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_alarms: Vec<String>,
    /// Its severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Its value when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The realms rolled back.
    pub realms: Vec<String>,
    /// The generation that was rolled back; a new one clears the record.
    pub generation: i64,
    /// A sentence for people.
    pub message: String,
}

/// Why the effective allocation of a realm changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChangeReason {
    /// A progressive step was reached.
    Step,
    /// The desired allocation was reached.
    Target,
    /// An attached alarm fired.
    Rollback,
    /// A person aborted.
    Abort,
    /// A person promoted past the rest of the bake.
    Promote,
}

/// One change of one realm's effective allocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationChange {
    /// When (to the microsecond: the time between steps is read from it).
    pub at: MicroTime,
    /// The realm.
    pub realm: String,
    /// The allocation before; absent for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_effective_allocation_schema")]
    pub from: Option<Allocation>,
    /// The allocation after.
    #[schemars(schema_with = "effective_allocation_schema")]
    pub to: Allocation,
    /// Why.
    pub reason: ChangeReason,
    /// The spec generation that asked for it.
    pub generation: i64,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A manual action the controller has carried out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledAction {
    /// The request as written in the action annotation.
    pub request: String,
    /// When it was carried out.
    pub at: Time,
}
