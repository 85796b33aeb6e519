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

use std::{collections::BTreeMap, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        alarm::AlarmState,
        common::{MicroTime, Severity, micro_time},
        conditions::{self, DesiredCondition},
        rollback::{
            FiredBy, RevisionTarget, RevisionTargetType, RollbackPhase, RollbackSpec,
            RollbackStatus, TriggerType, WavePhase, WaveStatus, WorkloadKind, WorkloadResult,
            WorkloadStatus,
        },
    },
    controllers::Note,
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
/// rollback: `rearm` followed by anything that makes the request distinct
/// (`rearm 2026-11-22 by alice`). Each distinct value is handled once.
pub const ACTION_ANNOTATION: &str = "weblab.dev/action";

/// One revision of a workload: a ReplicaSet of a Deployment, or a
/// ControllerRevision of a StatefulSet.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// The revision number `kubectl rollout history` shows.
    pub number: i64,
    /// Its identity: `pod-template-hash`, or the ControllerRevision's name.
    pub hash: String,
    /// The container images, for people and for `ImageTag` targets.
    pub images: Vec<String>,
    /// When it was deployed: the `weblab.dev/deployed-at` annotation, or
    /// else the object's creation time.
    pub deployed_at: Timestamp,
    /// When the operator confirmed it stable (`weblab.dev/stable-since`).
    pub stable_since: Option<Timestamp>,
    /// For StatefulSets: when the operator first saw it rolled out
    /// (`weblab.dev/rolled-out-at`).
    pub rolled_out_at: Option<Timestamp>,
}

/// Whether a workload's current revision runs everywhere.
#[derive(Clone, Debug, PartialEq)]
pub enum Rollout {
    /// Every replica updated and available, none of an older revision;
    /// since when, when the workload tells (Deployments do).
    Complete(Option<Timestamp>),
    /// Still rolling out, in words.
    InProgress(String),
}

/// A targeted workload in one region.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
    /// Its revisions still kept, by number.
    pub revisions: Vec<Revision>,
    /// The identity of its current revision; `None` while its controller
    /// has not observed the latest spec.
    pub current: Option<String>,
    /// Its rollout.
    pub rollout: Rollout,
}

impl Workload {
    fn revision(&self, hash: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.hash == hash)
    }

    fn current_revision(&self) -> Option<&Revision> {
        self.current.as_deref().and_then(|hash| self.revision(hash))
    }

    fn label(&self) -> String {
        format!("{:?} {}", self.kind, self.name)
    }
}

/// One region as read now.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionView {
    /// The targeted workloads, and the named targets that do not exist.
    Read {
        /// Targeted workloads.
        workloads: Vec<Workload>,
        /// Named targets not found, in words.
        not_found: Vec<String>,
    },
    /// The region could not be read, and why.
    Unreachable(String),
    /// The region cannot be reached as configured, and a person must fix it
    /// (a kubeconfig Secret missing, invalid or refused).
    Misconfigured {
        /// The condition and event reason, e.g. `KubeconfigNotFound`.
        reason: &'static str,
        /// What is wrong, in words.
        message: String,
    },
    /// A namespace of this cluster that does not authorize this rollback:
    /// nothing of it was read, and nothing of it may be changed.
    NotAuthorized(String),
}

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

/// The revision a target asks for, for one workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice<'a> {
    /// Restore this revision.
    Restore(&'a Revision),
    /// The workload already runs it.
    AlreadyThere(&'a Revision),
}

/// Chooses the revision `target` asks for among the workload's kept ones;
/// the error says why there is none (e.g. pruned by `revisionHistoryLimit`).
pub fn choose<'a>(
    target: &RevisionTarget,
    workload: &'a Workload,
    now: Timestamp,
) -> Result<Choice<'a>, String> {
    let current = workload.current_revision().ok_or_else(|| {
        format!(
            "{}: its current revision is not among its ReplicaSets/ControllerRevisions",
            workload.label()
        )
    })?;
    let kept = || {
        let numbers: Vec<String> = workload
            .revisions
            .iter()
            .map(|r| r.number.to_string())
            .collect();
        numbers.join(", ")
    };
    let newest = |wanted: &dyn Fn(&Revision) -> bool| {
        workload
            .revisions
            .iter()
            .filter(|r| wanted(r))
            .max_by_key(|r| r.number)
    };
    let found = match target.type_ {
        RevisionTargetType::PreviousStable => newest(&|r: &Revision| {
            r.number < current.number && r.stable_since.is_some()
        })
        .ok_or_else(|| {
            format!(
                "{}: no stable revision older than its current revision {} is left (revisions kept: {}); stable revisions are recorded by an armed Rollback, or by hand with the weblab.dev/stable-since annotation",
                workload.label(),
                current.number,
                kept()
            )
        })?,
        RevisionTargetType::Revision => {
            let wanted = target.revision.unwrap_or_default();
            newest(&|r: &Revision| r.number == wanted).ok_or_else(|| {
                format!(
                    "{}: revision {wanted} is not kept any more (pruned by revisionHistoryLimit?); revisions kept: {}",
                    workload.label(),
                    kept()
                )
            })?
        }
        RevisionTargetType::ImageTag => {
            let tag = target.image_tag.as_deref().unwrap_or_default();
            if runs_tag(current, tag) {
                current
            } else {
                newest(&|r: &Revision| runs_tag(r, tag)).ok_or_else(|| {
                    format!(
                        "{}: no kept revision runs image tag {tag:?} (revisions kept: {})",
                        workload.label(),
                        kept()
                    )
                })?
            }
        }
        RevisionTargetType::UndoSince => {
            let since = target.since.map(|d| d.get()).unwrap_or_default();
            let cutoff = now
                .checked_sub(SignedDuration::try_from(since).unwrap_or(SignedDuration::MAX))
                .unwrap_or(Timestamp::MIN);
            newest(&|r: &Revision| r.deployed_at <= cutoff).ok_or_else(|| {
                format!(
                    "{}: every kept revision was deployed after {cutoff} (revisions kept: {}); the older ones were pruned",
                    workload.label(),
                    kept()
                )
            })?
        }
    };
    Ok(if found.hash == current.hash {
        Choice::AlreadyThere(found)
    } else {
        Choice::Restore(found)
    })
}

/// Whether a revision's containers run `tag` (`image:tag` or
/// `image:tag@digest`).
fn runs_tag(revision: &Revision, tag: &str) -> bool {
    revision.images.iter().any(|image| {
        let image = image.split('@').next().unwrap_or_default();
        let name = image.rsplit('/').next().unwrap_or_default();
        name.split_once(':').is_some_and(|(_, t)| t == tag)
    })
}

/// Decides the next step.
pub fn decide(world: &World) -> Decision {
    let mut planner = Planner {
        world,
        status: world.status.clone(),
        now: micro_time(world.now),
        decision: Decision {
            status: RollbackStatus::default(),
            restores: Vec::new(),
            marks: Vec::new(),
            notes: Vec::new(),
            finished: None,
            waves_ended: Vec::new(),
            requeue_after: None,
        },
        waiting: None,
        refused_because: None,
    };
    planner.run();
    planner.finish()
}

struct Planner<'a> {
    world: &'a World<'a>,
    status: RollbackStatus,
    /// Status times keep microseconds: wave lengths and bakes are derived
    /// from them.
    now: MicroTime,
    decision: Decision,
    /// Why the rollback cannot go on right now, for the conditions.
    waiting: Option<String>,
    /// The reason of a refusal decided now.
    refused_because: Option<&'static str>,
}

impl Planner<'_> {
    fn run(&mut self) {
        if let Some(request) = self.world.request {
            self.handle_request(request);
        }
        // Before anything starts or is armed, every namespace must let the
        // rollback in; once it runs, a wave finds out for itself.
        if matches!(
            self.status.phase,
            None | Some(RollbackPhase::Pending | RollbackPhase::Armed)
        ) && self.refuse_unauthorized()
        {
            return;
        }
        match self.status.phase {
            None | Some(RollbackPhase::Pending) => match self.world.spec.trigger.type_ {
                TriggerType::Immediate => {
                    // Pending until every region has been read.
                    self.status.phase = Some(RollbackPhase::Pending);
                    self.start();
                }
                TriggerType::Alarm => {
                    self.status.phase = Some(RollbackPhase::Armed);
                    self.status.armed_at = Some(self.now.clone());
                    self.note(Note::normal(
                        "Armed",
                        "armed: fires when an attached alarm enters ALARM at a trigger severity"
                            .to_owned(),
                    ));
                    self.armed();
                }
            },
            Some(RollbackPhase::Armed) => self.armed(),
            Some(RollbackPhase::Progressing) => self.progress(),
            Some(RollbackPhase::Succeeded) => self.watch_for_overwrites(),
            Some(RollbackPhase::Failed | RollbackPhase::Refused) => {}
        }
    }

    fn note(&mut self, note: Note) {
        self.decision.notes.push(note);
    }

    /// Refuses the rollback when a region's namespace does not authorize
    /// it; whether it did.
    fn refuse_unauthorized(&mut self) -> bool {
        let refusals: Vec<String> = self
            .world
            .spec
            .waves
            .iter()
            .filter_map(|wave| match self.world.regions.get(&wave.region) {
                Some(RegionView::NotAuthorized(why)) => {
                    Some(format!("region {}: {why}", wave.region))
                }
                _ => None,
            })
            .collect();
        if refusals.is_empty() {
            return false;
        }
        self.refuse(NOT_AUTHORIZED, &refusals);
        true
    }

    fn refuse(&mut self, reason: &'static str, refusals: &[String]) {
        let message = format!("refused, nothing was changed: {}", refusals.join("; "));
        self.status.phase = Some(RollbackPhase::Refused);
        self.status.finished_at = Some(self.now.clone());
        self.note(Note::warning(reason, message.clone()));
        self.waiting = Some(message);
        self.refused_because = Some(reason);
        self.decision.finished = Some("refused");
    }

    fn requeue(&mut self, after: Duration) {
        let after = after.max(Duration::from_millis(100));
        self.decision.requeue_after = Some(
            self.decision
                .requeue_after
                .map_or(after, |current| current.min(after)),
        );
    }

    fn handle_request(&mut self, request: &str) {
        self.status.last_action = Some(request.to_owned());
        let word = request.split_whitespace().next().unwrap_or_default();
        if word != "rearm" {
            self.note(Note::warning(
                "UnknownAction",
                format!("unknown action {word:?} in {ACTION_ANNOTATION}: use rearm"),
            ));
            return;
        }
        let finished = matches!(
            self.status.phase,
            Some(RollbackPhase::Succeeded | RollbackPhase::Failed | RollbackPhase::Refused)
        );
        if self.world.spec.trigger.type_ != TriggerType::Alarm || !finished {
            self.note(Note::warning(
                "RearmIgnored",
                format!(
                    "rearm applies to an Alarm-triggered rollback that has finished; this one is {:?} with trigger {:?}",
                    self.status.phase, self.world.spec.trigger.type_
                ),
            ));
            return;
        }
        let last_action = self.status.last_action.take();
        self.status = RollbackStatus {
            last_action,
            phase: Some(RollbackPhase::Armed),
            armed_at: Some(self.now.clone()),
            conditions: std::mem::take(&mut self.status.conditions),
            ..RollbackStatus::default()
        };
        self.note(Note::normal(
            "Rearmed",
            format!("re-armed by request {request:?}"),
        ));
    }

    /// Armed: fire on a trigger alarm, else record revisions that became
    /// stable.
    fn armed(&mut self) {
        let trigger = &self.world.spec.trigger;
        let fired = self
            .world
            .trigger_alarms
            .iter()
            .find(|a| a.state == AlarmState::Alarm && trigger.severities.contains(&a.severity));
        if let Some(alarm) = fired {
            self.status.fired_by = Some(FiredBy {
                alarm: alarm.name.clone(),
                severity: alarm.severity,
                at: self.now.clone(),
            });
            self.note(Note::warning(
                "Fired",
                format!(
                    "alarm {} is in ALARM at {}: rolling back",
                    alarm.name, alarm.severity
                ),
            ));
            self.start();
            return;
        }
        self.track_stable_revisions();
        self.requeue(RESYNC);
    }

    /// Marks current revisions that ran clean for `stableAfter`.
    fn track_stable_revisions(&mut self) {
        let severities = &self.world.spec.verification.severities;
        let mut clear_since = Some(Timestamp::MIN);
        for alarm in self.world.verification_alarms {
            if alarm.state == AlarmState::Alarm && severities.contains(&alarm.severity) {
                clear_since = None;
                break;
            }
            if let (Some(since), Some(clear)) = (alarm.since, clear_since) {
                clear_since = Some(clear.max(since));
            }
        }
        let Some(clear_since) = clear_since else {
            return;
        };
        let stable_after =
            SignedDuration::try_from(self.world.spec.stable_after.get()).unwrap_or_default();
        for wave in &self.world.spec.waves {
            let Some(RegionView::Read { workloads, .. }) = self.world.regions.get(&wave.region)
            else {
                continue;
            };
            for workload in workloads {
                let Some(current) = workload.current_revision() else {
                    continue;
                };
                if current.stable_since.is_some() {
                    continue;
                }
                let Rollout::Complete(complete_since) = &workload.rollout else {
                    continue;
                };
                let mark = |mark| RevisionMark {
                    region: wave.region.clone(),
                    kind: workload.kind,
                    name: workload.name.clone(),
                    hash: current.hash.clone(),
                    mark,
                };
                let Some(rolled_out) = complete_since.or(current.rolled_out_at) else {
                    // A StatefulSet does not say since when it is rolled out:
                    // the operator records when it first saw it.
                    self.decision.marks.push(mark(Mark::RolledOut));
                    self.requeue(self.world.spec.stable_after.get());
                    continue;
                };
                let stable_at = rolled_out.max(clear_since).saturating_add(stable_after);
                match stable_at {
                    Ok(at) if at <= self.world.now => {
                        self.decision.marks.push(mark(Mark::Stable));
                    }
                    Ok(at) => self.requeue(until(self.world.now, at)),
                    Err(_) => {}
                }
            }
        }
    }

    /// Preflight every region before anything changes: each targeted
    /// workload must have the revision the target asks for.
    fn start(&mut self) {
        let mut refusals = Vec::new();
        for wave in &self.world.spec.waves {
            match self.world.regions.get(&wave.region) {
                Some(RegionView::Read {
                    workloads,
                    not_found,
                }) => {
                    for missing in not_found {
                        refusals.push(format!("region {}: {missing}", wave.region));
                    }
                    if workloads.is_empty() && not_found.is_empty() {
                        refusals.push(format!(
                            "region {}: no workload matches the targets in namespace {}",
                            wave.region, wave.namespace
                        ));
                    }
                    for workload in workloads {
                        if workload.current.is_none() {
                            self.waiting = Some(format!(
                                "waiting for {} in region {} to observe its latest spec",
                                workload.label(),
                                wave.region
                            ));
                            self.requeue(POLL);
                            return;
                        }
                        if let Err(why) = choose(&self.world.spec.target, workload, self.world.now)
                        {
                            refusals.push(format!("region {}: {why}", wave.region));
                        }
                    }
                }
                Some(
                    RegionView::Unreachable(why)
                    | RegionView::Misconfigured { message: why, .. }
                    | RegionView::NotAuthorized(why),
                ) => {
                    self.waiting = Some(format!("cannot read region {}: {why}", wave.region));
                    self.requeue(RESYNC.min(Duration::from_secs(5)));
                    return;
                }
                None => {
                    self.waiting = Some(format!("region {} was not read", wave.region));
                    self.requeue(POLL);
                    return;
                }
            }
        }
        if !refusals.is_empty() {
            self.refuse(REFUSED, &refusals);
            return;
        }
        self.status.phase = Some(RollbackPhase::Progressing);
        self.status.started_at = Some(self.now.clone());
        self.status.finished_at = None;
        self.status.waves = self
            .world
            .spec
            .waves
            .iter()
            .map(|wave| WaveStatus {
                region: wave.region.clone(),
                phase: WavePhase::Pending,
                started_at: None,
                rolled_out_at: None,
                finished_at: None,
                workloads: Vec::new(),
                message: None,
            })
            .collect();
        self.note(Note::normal(
            "Started",
            format!(
                "rolling back {} region(s), at most {} at once",
                self.world.spec.waves.len(),
                self.world.spec.max_concurrent_regions
            ),
        ));
        self.progress();
    }

    fn progress(&mut self) {
        let max = self.world.spec.max_concurrent_regions.max(1) as usize;
        let mut failure: Option<String> = None;
        for index in 0..self.status.waves.len() {
            if failure.is_some() {
                break;
            }
            let active = self
                .status
                .waves
                .iter()
                .filter(|w| matches!(w.phase, WavePhase::RollingBack | WavePhase::Baking))
                .count();
            let mut wave = self.status.waves[index].clone();
            match wave.phase {
                // A wave just started restores at the next reconciliation,
                // once its chosen revisions are recorded.
                WavePhase::Pending if active < max => self.start_wave(&mut wave),
                WavePhase::RollingBack => self.roll_back(&mut wave),
                WavePhase::Baking => self.bake(&mut wave),
                _ => {}
            }
            if wave.phase == WavePhase::Failed {
                failure = Some(format!(
                    "region {}: {}",
                    wave.region,
                    wave.message.clone().unwrap_or_default()
                ));
            }
            self.status.waves[index] = wave;
        }
        if let Some(why) = failure {
            for wave in &mut self.status.waves {
                if matches!(wave.phase, WavePhase::RollingBack | WavePhase::Baking) {
                    wave.phase = WavePhase::Failed;
                    wave.finished_at = Some(self.now.clone());
                    wave.message = Some(format!("stopped: {why}"));
                }
            }
            self.status.phase = Some(RollbackPhase::Failed);
            self.status.finished_at = Some(self.now.clone());
            self.status.current_region = None;
            self.decision.finished = Some("failed");
            self.note(Note::warning(
                "RollbackFailed",
                format!("rollback stopped, later regions untouched: {why}"),
            ));
            self.decision.requeue_after = None;
            return;
        }
        let active: Vec<&str> = self
            .status
            .waves
            .iter()
            .filter(|w| matches!(w.phase, WavePhase::RollingBack | WavePhase::Baking))
            .map(|w| w.region.as_str())
            .collect();
        self.status.current_region = (!active.is_empty()).then(|| active.join(","));
        if self
            .status
            .waves
            .iter()
            .all(|w| w.phase == WavePhase::Succeeded)
        {
            self.status.phase = Some(RollbackPhase::Succeeded);
            self.status.finished_at = Some(self.now.clone());
            self.decision.finished = Some("succeeded");
            self.note(Note::normal(
                "RollbackSucceeded",
                format!(
                    "all {} region(s) rolled back and verified",
                    self.status.waves.len()
                ),
            ));
            self.requeue(RESYNC);
        }
    }

    fn start_wave(&mut self, wave: &mut WaveStatus) {
        let view = match self.world.regions.get(&wave.region) {
            Some(RegionView::Read { not_found, .. }) if !not_found.is_empty() => {
                wave.started_at = Some(self.now.clone());
                self.fail_wave(wave, not_found.join("; "));
                return;
            }
            Some(RegionView::Read { workloads, .. }) => workloads,
            Some(RegionView::NotAuthorized(why)) => {
                wave.started_at = Some(self.now.clone());
                self.fail_wave(wave, why.clone());
                return;
            }
            Some(RegionView::Unreachable(why) | RegionView::Misconfigured { message: why, .. }) => {
                self.waiting = Some(format!("cannot read region {}: {why}", wave.region));
                self.requeue(Duration::from_secs(5));
                return;
            }
            None => return,
        };
        let mut workloads = Vec::new();
        for workload in view {
            if workload.current.is_none() {
                self.waiting = Some(format!(
                    "waiting for {} in region {} to observe its latest spec",
                    workload.label(),
                    wave.region
                ));
                self.requeue(POLL);
                return;
            }
            let from = workload.current_revision();
            let mut status = WorkloadStatus {
                kind: workload.kind,
                name: workload.name.clone(),
                from_revision: from.map(|r| r.number),
                to_revision: None,
                from_hash: workload.current.clone(),
                to_hash: None,
                to_images: None,
                started_at: None,
                finished_at: None,
                result: WorkloadResult::Pending,
                message: None,
            };
            match choose(&self.world.spec.target, workload, self.world.now) {
                Ok(Choice::Restore(to)) => {
                    status.to_revision = Some(to.number);
                    status.to_hash = Some(to.hash.clone());
                    status.to_images = Some(to.images.join(", "));
                }
                Ok(Choice::AlreadyThere(to)) => {
                    status.to_revision = Some(to.number);
                    status.to_hash = Some(to.hash.clone());
                    status.to_images = Some(to.images.join(", "));
                    status.result = WorkloadResult::RollingOut;
                    status.started_at = Some(self.now.clone());
                    status.message = Some("already at the target revision".to_owned());
                }
                Err(why) => {
                    status.result = WorkloadResult::Failed;
                    status.message = Some(why.clone());
                    wave.message = Some(why);
                }
            }
            workloads.push(status);
        }
        wave.workloads = workloads;
        wave.started_at = Some(self.now.clone());
        if wave.message.is_some() {
            wave.phase = WavePhase::Failed;
            wave.finished_at = Some(self.now.clone());
            self.decision.waves_ended.push(("failed", Duration::ZERO));
            return;
        }
        wave.phase = WavePhase::RollingBack;
        let summary: Vec<String> = wave
            .workloads
            .iter()
            .map(|w| {
                format!(
                    "{:?} {} {} -> {}",
                    w.kind,
                    w.name,
                    revision_text(w.from_revision),
                    revision_text(w.to_revision)
                )
            })
            .collect();
        self.note(Note::normal(
            "WaveStarted",
            format!("region {}: {}", wave.region, summary.join(", ")),
        ));
        // The restores happen at the next reconciliation, once the chosen
        // revisions are recorded.
        self.requeue(Duration::ZERO);
    }

    fn roll_back(&mut self, wave: &mut WaveStatus) {
        let region = wave.region.clone();
        let deadline = self.world.spec.verification.rollout_deadline.get();
        let started = wave.started_at.as_ref().map_or(self.world.now, |t| t.0);
        let late = elapsed(started, self.world.now) >= deadline;
        let view = match self.world.regions.get(&region) {
            Some(RegionView::Read { workloads, .. }) => Some(workloads),
            // Revoked while the wave runs: nothing more of it is read.
            Some(RegionView::NotAuthorized(why)) => {
                self.fail_wave(wave, why.clone());
                return;
            }
            Some(RegionView::Unreachable(why) | RegionView::Misconfigured { message: why, .. }) => {
                if late {
                    self.fail_wave(
                        wave,
                        format!("region unreachable past the rollout deadline: {why}"),
                    );
                } else {
                    self.waiting = Some(format!("cannot read region {region}: {why}"));
                    self.requeue(POLL);
                }
                return;
            }
            None => None,
        };
        let Some(view) = view else {
            return;
        };
        let mut failure = None;
        for status in &mut wave.workloads {
            let Some(workload) = view
                .iter()
                .find(|w| w.kind == status.kind && w.name == status.name)
            else {
                failure = Some(format!(
                    "{:?} {} disappeared during the rollback",
                    status.kind, status.name
                ));
                break;
            };
            let to = status.to_hash.clone().unwrap_or_default();
            match status.result {
                WorkloadResult::Pending if late => {
                    failure = Some(format!(
                        "{:?} {} could not be restored to revision {} within {} (see the operator's events and log)",
                        status.kind,
                        status.name,
                        revision_text(status.to_revision),
                        self.world.spec.verification.rollout_deadline
                    ));
                    status.result = WorkloadResult::Failed;
                    status.finished_at = Some(self.now.clone());
                    break;
                }
                WorkloadResult::Pending => {
                    self.decision.restores.push(Restore {
                        region: region.clone(),
                        kind: status.kind,
                        name: status.name.clone(),
                        hash: to,
                    });
                    status.result = WorkloadResult::RollingOut;
                    status.started_at = Some(self.now.clone());
                }
                WorkloadResult::RollingOut => match (&workload.current, &workload.rollout) {
                    // Until the deadline, another revision may only mean
                    // that the restore is not observed yet.
                    (Some(current), _) if *current != to && late => {
                        failure = Some(format!(
                            "{:?} {} runs revision {}, not the restored {}, at the rollout deadline: was it changed by someone else (a GitOps sync)?",
                            status.kind,
                            status.name,
                            workload
                                .revision(current)
                                .map_or_else(|| current.clone(), |r| r.number.to_string()),
                            revision_text(status.to_revision)
                        ));
                        status.result = WorkloadResult::Failed;
                        status.finished_at = Some(self.now.clone());
                        break;
                    }
                    (Some(current), Rollout::Complete(_)) if *current == to => {
                        status.result = WorkloadResult::Succeeded;
                        status.finished_at = Some(self.now.clone());
                        status.message = None;
                    }
                    (_, Rollout::InProgress(how)) if late => {
                        failure = Some(format!(
                            "{:?} {} did not roll out within {}: {how}",
                            status.kind, status.name, self.world.spec.verification.rollout_deadline
                        ));
                        status.result = WorkloadResult::Failed;
                        status.finished_at = Some(self.now.clone());
                        status.message = Some(how.clone());
                        break;
                    }
                    (None, _) if late => {
                        failure = Some(format!(
                            "{:?} {} did not roll out within the deadline: its controller never observed the restored spec",
                            status.kind, status.name
                        ));
                        status.result = WorkloadResult::Failed;
                        status.finished_at = Some(self.now.clone());
                        break;
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if let Some(why) = failure {
            self.fail_wave(wave, why);
            return;
        }
        if wave
            .workloads
            .iter()
            .all(|w| w.result == WorkloadResult::Succeeded)
        {
            wave.phase = WavePhase::Baking;
            wave.rolled_out_at = Some(self.now.clone());
            self.note(Note::normal(
                "WaveRolledOut",
                format!(
                    "region {region}: rolled out; baking for {}",
                    self.world.spec.verification.bake
                ),
            ));
            self.bake(wave);
        } else {
            self.requeue(POLL.min(until(self.world.now, deadline_at(started, deadline))));
        }
    }

    /// An alarm that enters ALARM after the rollout fails the region at
    /// once (the rollback made things worse); one already firing at the
    /// rollout has the bake to clear (the rollback did not help otherwise).
    fn bake(&mut self, wave: &mut WaveStatus) {
        let severities = &self.world.spec.verification.severities;
        let rolled_out = wave.rolled_out_at.as_ref().map_or(self.world.now, |t| t.0);
        let bake = self.world.spec.verification.bake.get();
        let baked = elapsed(rolled_out, self.world.now) >= bake;
        let firing = self
            .world
            .verification_alarms
            .iter()
            .filter(|a| a.state == AlarmState::Alarm && severities.contains(&a.severity));
        for alarm in firing {
            let entered_since_rollout = alarm.since.is_some_and(|since| since > rolled_out);
            if entered_since_rollout || baked {
                let why = if entered_since_rollout {
                    format!(
                        "alarm {} entered ALARM at {} during the bake",
                        alarm.name, alarm.severity
                    )
                } else {
                    format!(
                        "alarm {} ({}) is still in ALARM {} after the rollout: the rollback did not clear it",
                        alarm.name, alarm.severity, self.world.spec.verification.bake
                    )
                };
                self.fail_wave(wave, why);
                return;
            }
        }
        if baked {
            wave.phase = WavePhase::Succeeded;
            wave.finished_at = Some(self.now.clone());
            let took = wave
                .started_at
                .as_ref()
                .map_or(Duration::ZERO, |t| elapsed(t.0, self.world.now));
            self.decision.waves_ended.push(("succeeded", took));
            self.note(Note::normal(
                "WaveSucceeded",
                format!("region {}: rolled back and verified", wave.region),
            ));
        } else {
            self.requeue(until(self.world.now, deadline_at(rolled_out, bake)));
        }
    }

    fn fail_wave(&mut self, wave: &mut WaveStatus, why: String) {
        wave.phase = WavePhase::Failed;
        wave.finished_at = Some(self.now.clone());
        wave.message = Some(why);
        let took = wave
            .started_at
            .as_ref()
            .map_or(Duration::ZERO, |t| elapsed(t.0, self.world.now));
        self.decision.waves_ended.push(("failed", took));
    }

    /// After success: report (once per workload) a workload that runs the
    /// revision it was rolled back from again. Never restores it a second
    /// time: fighting a GitOps tool's auto-sync helps nobody.
    fn watch_for_overwrites(&mut self) {
        let mut found = Vec::new();
        for wave in &mut self.status.waves {
            let Some(RegionView::Read { workloads, .. }) = self.world.regions.get(&wave.region)
            else {
                continue;
            };
            for status in &mut wave.workloads {
                if status.result != WorkloadResult::Succeeded || status.from_hash == status.to_hash
                {
                    continue;
                }
                let current = workloads
                    .iter()
                    .find(|w| w.kind == status.kind && w.name == status.name)
                    .and_then(|w| w.current.clone());
                if current.is_some() && current == status.from_hash {
                    status.result = WorkloadResult::Overwritten;
                    let message = format!(
                        "{:?} {} in region {} runs revision {} again, the one rolled back from: something re-applied it (a GitOps auto-sync?); the rollback does not undo it again",
                        status.kind,
                        status.name,
                        wave.region,
                        revision_text(status.from_revision)
                    );
                    status.message = Some(message.clone());
                    found.push(message);
                }
            }
        }
        for message in found {
            self.note(Note::warning("Overwritten", message));
        }
        self.requeue(RESYNC);
    }

    fn conditions(&self) -> Vec<DesiredCondition> {
        use conditions::{DEGRADED, READY, RECONCILING, STALLED};
        let phase = self.status.phase;
        let overwritten: Vec<String> = self
            .status
            .waves
            .iter()
            .flat_map(|w| &w.workloads)
            .filter(|w| w.result == WorkloadResult::Overwritten)
            .map(|w| format!("{:?} {}", w.kind, w.name))
            .collect();
        let failure = self
            .status
            .waves
            .iter()
            .find(|w| w.phase == WavePhase::Failed && !is_stopped(w))
            .map(|w| {
                format!(
                    "region {}: {}",
                    w.region,
                    w.message.clone().unwrap_or_default()
                )
            });
        let stall = self.misconfiguration();
        let (ready, reason, message) = match (&stall, phase) {
            // A reference a person must fix outweighs what the phase says.
            (Some((reason, message)), _) => (false, *reason, message.clone()),
            (None, Some(RollbackPhase::Succeeded)) => (
                true,
                "Succeeded",
                "every region rolled back and verified".to_owned(),
            ),
            (None, Some(RollbackPhase::Armed)) => (
                true,
                "Armed",
                "armed; fires when an attached alarm enters ALARM".to_owned(),
            ),
            (None, Some(RollbackPhase::Failed)) => {
                (false, "WaveFailed", failure.unwrap_or_default())
            }
            (None, Some(RollbackPhase::Refused)) => (
                false,
                self.refusal_reason(),
                self.waiting
                    .clone()
                    .or_else(|| {
                        conditions::find(&self.world.status.conditions, READY)
                            .map(|c| c.message.clone())
                    })
                    .unwrap_or_default(),
            ),
            (None, _) => (
                false,
                "Progressing",
                self.waiting.clone().unwrap_or_else(|| {
                    format!(
                        "rolling back region(s) {}",
                        self.status.current_region.clone().unwrap_or_default()
                    )
                }),
            ),
        };
        let finished_badly = matches!(phase, Some(RollbackPhase::Failed | RollbackPhase::Refused))
            || stall.is_some();
        let reconciling = stall.is_none()
            && matches!(
                phase,
                Some(RollbackPhase::Progressing | RollbackPhase::Pending) | None
            );
        let mut wanted = vec![
            DesiredCondition::new(READY, ready, reason, message.clone()),
            DesiredCondition::new(
                RECONCILING,
                reconciling,
                if reconciling {
                    "Progressing"
                } else {
                    "Settled"
                },
                if reconciling {
                    message.clone()
                } else {
                    String::new()
                },
            ),
            DesiredCondition::new(
                STALLED,
                finished_badly,
                if finished_badly { reason } else { "NotStalled" },
                if finished_badly {
                    message
                } else {
                    String::new()
                },
            ),
        ];
        let mut degraded = Vec::new();
        if !overwritten.is_empty() {
            degraded.push(format!(
                "re-applied after the rollback (GitOps auto-sync?): {}",
                overwritten.join(", ")
            ));
        }
        if !self.world.missing.is_empty() {
            degraded.push(self.world.missing.join("; "));
        }
        wanted.push(DesiredCondition::new(
            DEGRADED,
            !degraded.is_empty(),
            if !overwritten.is_empty() {
                "Overwritten"
            } else if !self.world.missing.is_empty() {
                "AlarmsMissing"
            } else {
                "Healthy"
            },
            degraded.join("; "),
        ));
        wanted
    }

    /// The regions a person must fix before the rollback can go on (not
    /// once it has ended): the first one's reason, and every one in words.
    fn misconfiguration(&self) -> Option<(&'static str, String)> {
        if matches!(
            self.status.phase,
            Some(RollbackPhase::Succeeded | RollbackPhase::Failed | RollbackPhase::Refused)
        ) {
            return None;
        }
        let mut first = None;
        let mut problems = Vec::new();
        for wave in &self.world.spec.waves {
            if let Some(RegionView::Misconfigured { reason, message }) =
                self.world.regions.get(&wave.region)
            {
                first.get_or_insert(*reason);
                problems.push(format!("region {}: {message}", wave.region));
            }
        }
        first.map(|reason| (reason, problems.join("; ")))
    }

    /// The reason of a refusal: decided now, or kept from the condition
    /// written when it was.
    fn refusal_reason(&self) -> &'static str {
        self.refused_because.unwrap_or_else(|| {
            let before = conditions::find(&self.world.status.conditions, conditions::READY);
            if before.is_some_and(|c| c.reason == NOT_AUTHORIZED) {
                NOT_AUTHORIZED
            } else {
                REFUSED
            }
        })
    }

    fn finish(mut self) -> Decision {
        // A misconfiguration is reported once per distinct problem, as the
        // Stalled condition's message tells what was reported last.
        if let Some((reason, message)) = self.misconfiguration() {
            let reported = conditions::find(&self.world.status.conditions, conditions::STALLED)
                .is_some_and(|c| c.status == "True" && c.message == message);
            if !reported {
                self.note(Note::warning(reason, message));
            }
        }
        let wanted = self.conditions();
        let observed = Some(self.world.generation);
        self.status.conditions = conditions::merge(
            &self.status.conditions,
            &wanted,
            observed,
            &Time(self.now.0),
        );
        self.status.observed_generation = observed;
        self.decision.status = self.status;
        self.decision
    }
}

fn is_stopped(wave: &WaveStatus) -> bool {
    wave.message
        .as_deref()
        .is_some_and(|m| m.starts_with("stopped: "))
}

fn revision_text(revision: Option<i64>) -> String {
    revision.map_or_else(|| "?".to_owned(), |r| r.to_string())
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

fn deadline_at(from: Timestamp, after: Duration) -> Timestamp {
    SignedDuration::try_from(after)
        .ok()
        .and_then(|d| from.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    elapsed(now, at)
}

#[cfg(test)]
mod tests;
