//! The pure decision of the `Rollback` controller: from the rollback, the
//! states of its alarms and a snapshot of its workloads in every region, the
//! next status, the pod templates to restore, the revisions to mark stable,
//! and the events to publish. No I/O and no clock: `now` is an input.
//!
//! A wave moves `Pending -> RollingBack -> Baking -> Succeeded`, or to
//! `Failed`, which stops the whole rollback. Restoring is split in two
//! writes on purpose: the chosen revision is recorded in status first, and
//! only then restored, so a retry after any failure restores the same
//! revision instead of choosing again from a world that already moved.
//!
//! By concern: `revision` models the workloads as read, `target`
//! chooses the revision a target asks for, `waves` is the state machine,
//! `gitops` suspends the automatic sync of Argo CD and Flux before the
//! first wave and gives it back, and `conditions` derives the conditions
//! from the status it planned.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use crate::{
    api::{
        alarm::AlarmState,
        common::Severity,
        rollback::{RollbackPhase, RollbackSpec, RollbackStatus, WorkloadKind},
    },
    controllers::{Note, merge_train_pause::owned::PauseTemplate},
};

/// How often a rollback that waits on workloads looks at them again: their
/// rollouts are polled (they may live in other clusters), alarms are watched.
pub const POLL: Duration = Duration::from_millis(500);
/// How often an armed or finished rollback looks at its workloads (stable
/// revisions, re-applied templates).
pub const RESYNC: Duration = Duration::from_secs(30);

/// The reason of a refusal for want of a target namespace's authorization.
pub const NOT_AUTHORIZED: &str = "NotAuthorized";
/// The reason of every other refusal.
const REFUSED: &str = "Refused";

/// The annotation through which people ask for manual actions on a
/// rollback: `rearm` or `restore-gitops`, followed by anything that makes
/// the request distinct (`rearm 2026-11-22 by alice`). Each distinct value
/// is handled once.
pub const ACTION_ANNOTATION: &str = "weblab.dev/action";

mod conditions;
mod gitops;
mod revision;
mod target;
mod waves;

pub use gitops::{
    AUTO_SYNC_SUSPENDED, AutoSync, GITOPS_FORBIDDEN, GITOPS_NOT_FOUND, GITOPS_READY, GitOpsKey,
    GitOpsView, Suspend, auto_sync_field, gitops_refs, gitops_to_read, holds_auto_sync, is_held,
    suspended_value,
};
pub use revision::{RegionView, Revision, Rollout, Workload};
pub use target::{Choice, choose};
pub use waves::decide;

/// An attached alarm's state, as the rollback sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmReading {
    /// The alarm's name.
    pub name: String,
    /// Its state; never evaluated counts as `INSUFFICIENT_DATA`.
    pub state: AlarmState,
    /// Its severity.
    pub severity: Severity,
    /// When its state last changed.
    pub since: Option<Timestamp>,
}

/// Everything the decision depends on.
pub struct World<'a> {
    /// The rollback's spec.
    pub spec: &'a RollbackSpec,
    /// The spec's generation.
    pub generation: i64,
    /// The status as last written.
    pub status: &'a RollbackStatus,
    /// The alarms that fire an armed rollback.
    pub trigger_alarms: &'a [AlarmReading],
    /// The alarms that verify each region.
    pub verification_alarms: &'a [AlarmReading],
    /// Alarm references that do not resolve, in words.
    pub missing: &'a [String],
    /// The regions read for this decision (see [`regions_to_read`]).
    pub regions: &'a BTreeMap<String, RegionView>,
    /// The rollback's namespace (the default of `spec.gitops` entries).
    pub namespace: &'a str,
    /// The GitOps objects read for this decision (see [`gitops_to_read`]).
    pub gitops: &'a BTreeMap<GitOpsKey, GitOpsView>,
    /// A request not yet handled: the action annotation's text.
    pub request: Option<&'a str>,
    /// The time of the decision.
    pub now: Timestamp,
}

/// Restore one workload's revision (the effect of `kubectl rollout undo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    /// The region.
    pub region: String,
    /// The workload's kind.
    pub kind: WorkloadKind,
    /// The workload's name.
    pub name: String,
    /// The identity of the revision to restore.
    pub hash: String,
}

/// What to record on a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// `weblab.dev/stable-since`: it ran clean for `stableAfter`.
    Stable,
    /// `weblab.dev/rolled-out-at` (StatefulSets): it was first seen rolled out.
    RolledOut,
}

/// An annotation to write on one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionMark {
    /// The region.
    pub region: String,
    /// The workload's kind.
    pub kind: WorkloadKind,
    /// The workload's name.
    pub name: String,
    /// The revision's identity.
    pub hash: String,
    /// What to record.
    pub mark: Mark,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write (equal to the current one when nothing changed).
    pub status: RollbackStatus,
    /// Pod templates to restore before the status is written.
    pub restores: Vec<Restore>,
    /// Revision annotations to write.
    pub marks: Vec<RevisionMark>,
    /// GitOps objects whose automatic sync to turn off; each was recorded
    /// as `Suspending` by an earlier decision.
    pub suspends: Vec<Suspend>,
    /// GitOps objects whose field to give back before the status (which
    /// records them `Restored`) is written.
    pub releases: Vec<GitOpsKey>,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When the rollback ended now: its result, for the metrics.
    pub finished: Option<&'static str>,
    /// Waves that ended now: result and duration, for the metrics.
    pub waves_ended: Vec<(&'static str, Duration)>,
    /// When to look again; `None`: only on a change.
    pub requeue_after: Option<Duration>,
}

/// The regions whose workloads a decision needs: none once the rollback
/// failed or was refused, every region otherwise (to preflight all of them
/// before anything changes, to track stable revisions while armed, to see
/// re-applied templates after success).
pub fn regions_to_read<'a>(spec: &'a RollbackSpec, status: &RollbackStatus) -> Vec<&'a str> {
    match status.phase {
        Some(RollbackPhase::Failed | RollbackPhase::Refused) => Vec::new(),
        _ => spec.waves.iter().map(|w| w.region.as_str()).collect(),
    }
}

/// The merge-train pauses the Rollback `name` wants: its
/// `spec.pauseMergeTrains` from the moment it runs until it succeeds; a
/// failed rollback keeps them (the incident is not over), and re-arming or
/// success lifts them.
pub fn merge_train_pauses(
    name: &str,
    spec: &RollbackSpec,
    phase: Option<RollbackPhase>,
) -> Vec<PauseTemplate> {
    if !matches!(
        phase,
        Some(RollbackPhase::Progressing | RollbackPhase::Failed)
    ) {
        return Vec::new();
    }
    spec.pause_merge_trains
        .iter()
        .map(|train| PauseTemplate {
            train: train.clone(),
            reason: format!("Rollback {name} is running"),
            ticket: None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
