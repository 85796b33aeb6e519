//! The pure decision of the `WeblabDial` controller: from the dial, the
//! states of the alarms it attaches and its change window, the next status and
//! the events to publish. No I/O, and no clock: `now` is an input, and it is
//! written only into what actually changes, so a settled dial plans no write.
//!
//! The order of concerns is the order of safety:
//! 1. a person's request (abort and retry first of all);
//! 2. alarms at a rollback severity move affected realms to the rollback
//!    allocation, whatever else is going on, and stop progression;
//! 3. missing references hold the dial where it is;
//! 4. progression through the stages (each step's allocation, wave by wave),
//!    where a move towards risk waits for a pause, a closed change window or
//!    an alarm without data, and a move towards safety never waits.

use std::{str::FromStr, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        alarm::AlarmState,
        change_window::ChangeWindowStatus,
        common::{Allocation, MicroTime, Severity, micro_time},
        conditions::{self, ConditionStatus, DesiredCondition},
        weblab_dial::{
            AllocationChange, AttachedAlarm, BucketRange, ChangeReason, DialPhase, HISTORY_LIMIT,
            HandledAction, InsufficientDataPolicy, RealmAllocation, RollbackRecord, StepStatus,
            WeblabDialSpec, WeblabDialStatus,
        },
    },
    assignment::Layout,
    controllers::{Note, merge_train_pause::owned::PauseTemplate},
};

/// How long the controller waits before looking again at a dial that has
/// nothing scheduled: a safety net, the watches do the real work.
pub const RESYNC: Duration = Duration::from_secs(300);

/// A manual action, requested through the `weblab.dev/action` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManualAction {
    /// No move towards risk until resumed.
    Pause,
    /// Undo a pause, and let a pause step go on.
    Resume,
    /// Skip the rest of the current bake and pause step.
    Promote,
    /// Go to the rollback allocation everywhere and stay.
    Abort,
    /// Leave a rollback or an abort and progress again.
    Retry,
}

/// The annotation through which people ask for manual actions. Its value is
/// the action, optionally followed by anything that makes the request
/// distinct (`promote`, `promote 2026-11-21T10:00:00Z by alice`): each distinct
/// value is handled once, and the handled one is recorded in
/// `status.lastAction`, so nothing has to clear the annotation.
pub const ACTION_ANNOTATION: &str = "weblab.dev/action";

impl FromStr for ManualAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let word = text.split_whitespace().next().unwrap_or_default();
        match word {
            "pause" => Ok(ManualAction::Pause),
            "resume" => Ok(ManualAction::Resume),
            "promote" => Ok(ManualAction::Promote),
            "abort" => Ok(ManualAction::Abort),
            "retry" => Ok(ManualAction::Retry),
            other => Err(format!(
                "unknown action {other:?}: use pause, resume, promote, abort or retry"
            )),
        }
    }
}

/// The state of one attached alarm, as read from its status.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmReading {
    /// The `Alarm`'s name.
    pub name: String,
    /// Its state; an alarm never evaluated counts as `INSUFFICIENT_DATA`.
    pub state: AlarmState,
    /// Its severity.
    pub severity: Severity,
    /// The realm it is scoped to.
    pub realm: Option<String>,
    /// For a guardrail, which decides per realm: the realms in `state`;
    /// only those roll back.
    pub realms: Option<Vec<String>>,
    /// Its last value.
    pub value: Option<f64>,
    /// Its threshold, when it has one.
    pub threshold: Option<f64>,
}

/// Whether the dial's change window lets moves towards risk happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowGate {
    /// Open, or no window referenced.
    Open,
    /// Closed, and why.
    Closed(String),
}

/// The gate of the change window `name`, from its status. Its reason
/// already says "open"/"closed", so it is quoted as it is.
pub fn window_gate(name: &str, status: Option<&ChangeWindowStatus>) -> WindowGate {
    match status.and_then(|s| s.open) {
        Some(true) => WindowGate::Open,
        Some(false) => WindowGate::Closed(format!(
            "ChangeWindow {name}: {}",
            status.and_then(|s| s.reason.as_deref()).unwrap_or("closed")
        )),
        // Unknown is not open: a dial-up waits until the window is evaluated.
        None => WindowGate::Closed(format!("ChangeWindow {name} has not been evaluated yet")),
    }
}

/// The merge-train pauses the dial `name` wants: its
/// `spec.rollback.pauseMergeTrains`, while an alarm holds it rolled back
/// (not after an abort, not once retried or changed).
pub fn merge_train_pauses(
    name: &str,
    spec: &WeblabDialSpec,
    status: &WeblabDialStatus,
) -> Vec<PauseTemplate> {
    let rolled_back_by_alarm = status.phase == Some(DialPhase::RolledBack)
        && status.rollback.as_ref().is_some_and(|r| r.alarm.is_some());
    if !rolled_back_by_alarm {
        return Vec::new();
    }
    let why = status
        .rollback
        .as_ref()
        .map(|r| r.message.clone())
        .unwrap_or_default();
    spec.rollback
        .pause_merge_trains
        .iter()
        .map(|train| PauseTemplate {
            train: train.clone(),
            reason: format!("WeblabDial {name} was rolled back: {why}"),
            ticket: None,
        })
        .collect()
}

/// Everything the decision depends on.
pub struct World<'a> {
    /// The dial's spec.
    pub spec: &'a WeblabDialSpec,
    /// The spec's generation.
    pub generation: i64,
    /// The status as last written.
    pub status: &'a WeblabDialStatus,
    /// The attached alarms that exist.
    pub alarms: &'a [AlarmReading],
    /// References that do not resolve, in words.
    pub missing: &'a [String],
    /// The change window.
    pub window: WindowGate,
    /// A request not yet handled: the text of the action annotation.
    pub request: Option<&'a str>,
    /// The time of the decision.
    pub now: Timestamp,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write (equal to the current one when nothing changed).
    pub status: WeblabDialStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When to look again.
    pub requeue_after: Duration,
}

/// One step's allocation applied to one wave of realms.
struct Stage<'a> {
    step: usize,
    wave: usize,
    realms: Vec<&'a str>,
    allocation: &'a Allocation,
    bake: Option<Duration>,
    pause: bool,
}

fn stages(spec: &WeblabDialSpec) -> Vec<Stage<'_>> {
    let waves: Vec<Vec<&str>> = if spec.waves.is_empty() {
        vec![spec.realms.iter().map(String::as_str).collect()]
    } else {
        spec.waves
            .iter()
            .map(|wave| wave.realms.iter().map(String::as_str).collect())
            .collect()
    };
    let last_wave = waves.len().saturating_sub(1);
    let steps = spec
        .steps
        .iter()
        .map(|step| (&step.allocation, step.bake.map(|b| b.get()), step.pause))
        .chain(std::iter::once((&spec.allocation, None, false)));
    steps
        .enumerate()
        .flat_map(|(step, (allocation, bake, pause))| {
            waves.iter().enumerate().map(move |(wave, realms)| Stage {
                step,
                wave,
                realms: realms.clone(),
                allocation,
                bake,
                pause: pause && wave == last_wave,
            })
        })
        .collect()
}

/// Decides the next status of a dial.
pub fn decide(world: &World<'_>) -> Decision {
    let mut draft = Draft::new(world);
    draft.observe_alarms();
    let mut restart = world.status.observed_generation != Some(world.generation);
    if restart
        && draft
            .status
            .rollback
            .as_ref()
            .is_some_and(|r| r.generation != world.generation)
    {
        // A new spec is a new decision by a person: the old rollback no
        // longer holds (an alarm still firing rolls back again below).
        draft.clear_rollback();
    }
    if let Some(text) = world.request {
        restart |= draft.handle_request(text);
    }
    draft.roll_back_for_alarms();
    let phase = match &draft.status.rollback {
        Some(record) if record.alarm.is_some() => DialPhase::RolledBack,
        Some(_) => DialPhase::Aborted,
        None if !world.missing.is_empty() => draft.hold_for_missing_references(),
        None => draft.progress(restart),
    };
    draft.finish(phase)
}

/// The realms a dial serves once the alarms in `alarms` that roll it back
/// have done so: exactly what [`decide`] writes for them, computed without
/// the rest of the decision, so that the assignment API can serve a rollback
/// as soon as it sees the alarm, before the status write lands. `None` when
/// none of them rolls the dial back.
pub fn rolled_back_realms(
    spec: &WeblabDialSpec,
    generation: i64,
    status: &WeblabDialStatus,
    alarms: &[AlarmReading],
    now: Timestamp,
) -> Option<Vec<RealmAllocation>> {
    let world = World {
        spec,
        generation,
        status,
        alarms,
        missing: &[],
        window: WindowGate::Open,
        request: None,
        now,
    };
    let mut draft = Draft::new(&world);
    if !alarms.iter().any(|alarm| draft.rolls_back(alarm)) {
        return None;
    }
    draft.roll_back_for_alarms();
    Some(draft.status.realms)
}

struct Draft<'w, 'a> {
    world: &'w World<'a>,
    status: WeblabDialStatus,
    notes: Vec<Note>,
    requeue_after: Duration,
    rollback: Allocation,
    /// Status times keep microseconds: bakes and latencies are read from
    /// them.
    now: MicroTime,
}

impl<'w, 'a> Draft<'w, 'a> {
    fn new(world: &'w World<'a>) -> Self {
        let mut status = world.status.clone();
        // Realms no longer listed stop being served.
        status
            .realms
            .retain(|entry| world.spec.realms.contains(&entry.realm));
        Draft {
            world,
            status,
            notes: Vec::new(),
            requeue_after: RESYNC,
            rollback: world.spec.rollback_allocation(),
            now: micro_time(world.now),
        }
    }

    fn spec(&self) -> &'a WeblabDialSpec {
        self.world.spec
    }

    fn rolls_back(&self, alarm: &AlarmReading) -> bool {
        let rollback = &self.spec().rollback;
        rollback.severities.contains(&alarm.severity)
            && (alarm.state == AlarmState::Alarm
                || (alarm.state == AlarmState::InsufficientData
                    && rollback.on_insufficient_data == InsufficientDataPolicy::RollBack))
    }

    /// Records the attached alarms' states; a lower-severity alarm entering
    /// `ALARM` only notifies.
    fn observe_alarms(&mut self) {
        let mut attached: Vec<AttachedAlarm> = self
            .world
            .alarms
            .iter()
            .map(|alarm| AttachedAlarm {
                name: alarm.name.clone(),
                state: alarm.state,
                severity: alarm.severity,
                realm: alarm.realm.clone(),
            })
            .collect();
        attached.sort_by(|a, b| a.name.cmp(&b.name));
        for alarm in self.world.alarms {
            let was = self
                .status
                .alarms
                .iter()
                .find(|seen| seen.name == alarm.name)
                .map(|seen| seen.state);
            if alarm.state == AlarmState::Alarm
                && was != Some(AlarmState::Alarm)
                && !self.rolls_back(alarm)
            {
                self.notes.push(Note::warning(
                    "AlarmNotify",
                    format!(
                        "{}; {} does not roll this dial back",
                        describe_alarm(alarm),
                        alarm.severity
                    ),
                ));
            }
        }
        self.status.alarms = attached;
    }

    /// Carries out a manual action; `true` when progression must be planned
    /// afresh from the current effective allocation.
    fn handle_request(&mut self, text: &str) -> bool {
        // Recorded even when invalid, so that each request is handled (or
        // reported) exactly once, in the same write as its effect.
        self.status.last_action = Some(HandledAction {
            request: text.to_owned(),
            at: Time(self.now.0),
        });
        let action = match text.parse::<ManualAction>() {
            Ok(action) => action,
            Err(error) => {
                self.notes.push(Note::warning(
                    "InvalidAction",
                    format!("ignored {ACTION_ANNOTATION}: {error}"),
                ));
                return false;
            }
        };
        match action {
            ManualAction::Pause => {
                self.status.paused = true;
                self.notes.push(Note::normal(
                    "Paused",
                    "paused by request: no move towards risk until resumed".to_owned(),
                ));
            }
            ManualAction::Resume => {
                self.status.paused = false;
                if let Some(step) = &mut self.status.step
                    && step.started_at.is_some()
                    && step
                        .bake_until
                        .as_ref()
                        .is_none_or(|until| until.0 <= self.now.0)
                {
                    step.promoted = true;
                }
                self.notes
                    .push(Note::normal("Resumed", "resumed by request".to_owned()));
            }
            ManualAction::Promote => {
                if let Some(step) = &mut self.status.step {
                    step.promoted = true;
                }
                self.notes.push(Note::normal(
                    "Promoted",
                    "promoted by request: the rest of this stage's bake and pause are skipped"
                        .to_owned(),
                ));
            }
            ManualAction::Abort => {
                let realms: Vec<String> = self.spec().realms.clone();
                let rollback = self.rollback.clone();
                self.move_realms(
                    &realms,
                    &rollback,
                    true,
                    ChangeReason::Abort,
                    "aborted by request",
                );
                self.status.rollback = Some(RollbackRecord {
                    at: self.now.clone(),
                    alarm: None,
                    other_alarms: Vec::new(),
                    severity: None,
                    value: None,
                    threshold: None,
                    realms,
                    generation: self.world.generation,
                    message: format!(
                        "aborted by request; every realm at {rollback} until retried or the spec changes"
                    ),
                });
                self.notes.push(Note::warning(
                    "Aborted",
                    format!("aborted by request: every realm set to {rollback}"),
                ));
            }
            ManualAction::Retry => {
                if self.status.rollback.is_none() {
                    self.notes.push(Note::normal(
                        "RetryIgnored",
                        "retry requested, but the dial is neither rolled back nor aborted"
                            .to_owned(),
                    ));
                    return false;
                }
                if let Some(alarm) = self.world.alarms.iter().find(|a| self.rolls_back(a)) {
                    self.notes.push(Note::warning(
                        "RetryRefused",
                        format!("retry refused: {}", describe_alarm(alarm)),
                    ));
                    return false;
                }
                self.clear_rollback();
                self.notes.push(Note::normal(
                    "Retried",
                    "retried by request: progressing again from the rollback allocation".to_owned(),
                ));
                return true;
            }
        }
        false
    }

    fn clear_rollback(&mut self) {
        self.status.rollback = None;
        for entry in &mut self.status.realms {
            entry.rolled_back = false;
        }
    }

    /// Moves the realms of every alarm firing at a rollback severity to the
    /// rollback allocation. Never gated: this is the move towards safety.
    fn roll_back_for_alarms(&mut self) {
        let mut firing: Vec<&AlarmReading> = self
            .world
            .alarms
            .iter()
            .filter(|a| self.rolls_back(a))
            .collect();
        if firing.is_empty() {
            return;
        }
        firing.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.name.cmp(&b.name))
        });
        let rollback = self.rollback.clone();
        let mut affected: Vec<String> = Vec::new();
        // The alarms that roll back a realm this dial serves, most severe
        // first.
        let mut causes: Vec<&AlarmReading> = Vec::new();
        for alarm in firing {
            let realms: Vec<String> = match (&alarm.realms, &alarm.realm) {
                (Some(scoped), _) => self
                    .spec()
                    .realms
                    .iter()
                    .filter(|realm| scoped.contains(realm))
                    .cloned()
                    .collect(),
                (None, Some(realm)) if self.spec().realms.contains(realm) => vec![realm.clone()],
                // Scoped to a realm this dial does not serve: nothing to do.
                (None, Some(_)) => Vec::new(),
                (None, None) => self.spec().realms.clone(),
            };
            if realms.is_empty() {
                continue;
            }
            causes.push(alarm);
            let message = format!("rolled back: {}", describe_alarm(alarm));
            self.move_realms(&realms, &rollback, true, ChangeReason::Rollback, &message);
            for realm in realms {
                if !affected.contains(&realm) {
                    affected.push(realm);
                }
            }
        }
        let Some(&first) = causes.first() else {
            // Scoped elsewhere: nothing rolled back.
            return;
        };
        let order = &self.spec().realms;
        let record = match self.status.rollback.take() {
            // Already aborted by a person: the abort's record stands.
            Some(abort) if abort.alarm.is_none() => {
                self.status.rollback = Some(abort);
                return;
            }
            // Already rolled back: the record keeps the alarm that did it
            // (its event named that one) and lists the others.
            Some(mut record) if record.generation == self.world.generation => {
                let added: Vec<String> = affected
                    .iter()
                    .filter(|realm| !record.realms.contains(realm))
                    .cloned()
                    .collect();
                record.realms.extend(added.iter().cloned());
                record
                    .realms
                    .sort_by_key(|realm| order.iter().position(|r| r == realm));
                for alarm in &causes {
                    if record.alarm.as_deref() != Some(alarm.name.as_str())
                        && !record.other_alarms.contains(&alarm.name)
                    {
                        record.other_alarms.push(alarm.name.clone());
                    }
                }
                if !added.is_empty() {
                    // More realms went back: a decision of its own, named
                    // after the most severe alarm that reaches them.
                    let cause = causes
                        .iter()
                        .find(|alarm| {
                            alarm
                                .realm
                                .as_ref()
                                .is_none_or(|realm| added.contains(realm))
                        })
                        .copied()
                        .unwrap_or(first);
                    self.notes.push(Note::warning(
                        "RolledBack",
                        format!(
                            "{}; rolled back {} to {rollback}",
                            describe_alarm(cause),
                            added.join(", ")
                        ),
                    ));
                }
                record
            }
            _ => {
                affected.sort_by_key(|realm| order.iter().position(|r| r == realm));
                let message = format!(
                    "{}; rolled back {} to {rollback}",
                    describe_alarm(first),
                    affected.join(", ")
                );
                self.notes
                    .push(Note::warning("RolledBack", message.clone()));
                RollbackRecord {
                    at: self.now.clone(),
                    alarm: Some(first.name.clone()),
                    other_alarms: causes[1..].iter().map(|a| a.name.clone()).collect(),
                    severity: Some(first.severity),
                    value: first.value,
                    threshold: first.threshold,
                    realms: affected,
                    generation: self.world.generation,
                    message,
                }
            }
        };
        self.status.rollback = Some(record);
    }

    fn hold_for_missing_references(&mut self) -> DialPhase {
        let message = self.missing_message();
        let already_reported = self.status.phase == Some(DialPhase::Failed)
            && conditions::find(&self.status.conditions, conditions::READY)
                .is_some_and(|c| c.message == message);
        if !already_reported {
            self.notes.push(Note::warning("ReferenceNotFound", message));
        }
        // Whatever the spec asks now is planned afresh, from the effective
        // allocation, once the references resolve.
        self.status.step = None;
        DialPhase::Failed
    }

    fn missing_message(&self) -> String {
        format!(
            "cannot carry out the dial: {}; the effective allocation is unchanged",
            self.world.missing.join("; ")
        )
    }

    /// What holds a move towards risk, in words.
    fn risk_blocker(&self) -> Option<String> {
        if self.status.paused {
            return Some("a person to resume (paused by request)".to_owned());
        }
        if let WindowGate::Closed(reason) = &self.world.window {
            return Some(format!("the change window to open ({reason})"));
        }
        if self.spec().rollback.on_insufficient_data == InsufficientDataPolicy::Hold {
            let silent = self.world.alarms.iter().find(|a| {
                a.state == AlarmState::InsufficientData
                    && self.spec().rollback.severities.contains(&a.severity)
            });
            if let Some(alarm) = silent {
                return Some(format!(
                    "alarm {} to have data (it is INSUFFICIENT_DATA)",
                    alarm.name
                ));
            }
        }
        None
    }

    /// Moves through the stages: at most one change of effective allocation
    /// per decision, so that every step is its own recorded write.
    fn progress(&mut self, restart: bool) -> DialPhase {
        let stages = stages(self.spec());
        if restart || self.status.step.is_none() {
            let start = self.first_stage_to_do(&stages);
            self.status.step = Some(self.step_at(&stages, start));
        }
        loop {
            let position = self.position(&stages);
            let (Some(stage), Some(step)) = (stages.get(position), self.status.step.clone()) else {
                self.status.step = Some(self.step_at(&stages, stages.len()));
                return DialPhase::Dialed;
            };
            if step.started_at.is_none() {
                let moves: Vec<String> = stage
                    .realms
                    .iter()
                    .filter(|realm| {
                        self.effective(realm).normalized() != stage.allocation.normalized()
                    })
                    .map(|realm| (*realm).to_owned())
                    .collect();
                if moves.is_empty() {
                    // Nothing changes here (e.g. a spec change mid-way): no
                    // bake and no pause for it.
                    self.status.step = Some(self.step_at(&stages, position + 1));
                    continue;
                }
                let towards_risk = moves.iter().any(|realm| {
                    !stage
                        .allocation
                        .lies_between(&self.effective(realm), &self.rollback)
                });
                if towards_risk && let Some(blocker) = self.risk_blocker() {
                    let phase = if self.status.paused {
                        DialPhase::Paused
                    } else {
                        DialPhase::Waiting
                    };
                    self.set_waiting(Some(blocker));
                    return phase;
                }
                let is_target = stage.step == self.spec().steps.len();
                let reason = if is_target {
                    ChangeReason::Target
                } else {
                    ChangeReason::Step
                };
                let message = if is_target {
                    "reached the desired allocation".to_owned()
                } else {
                    format!("step {} of {}", stage.step + 1, self.spec().steps.len())
                };
                self.move_realms(&moves, stage.allocation, false, reason, &message);
                self.notes.push(Note::normal(
                    if is_target {
                        "TargetApplied"
                    } else {
                        "StepApplied"
                    },
                    format!("{}: {} ({message})", moves.join(", "), stage.allocation),
                ));
                // Both kept to the microsecond, rounded up: a bake read
                // back from status never ends early.
                let started_at = self.now.clone();
                let bake_until = stage
                    .bake
                    .and_then(|bake| started_at.0.checked_add(bake).ok())
                    .map(micro_time);
                self.status.step = Some(StepStatus {
                    started_at: Some(started_at),
                    bake_until,
                    waiting_for: None,
                    ..step
                });
                return match stage.bake {
                    Some(bake) => {
                        self.requeue_after = bake;
                        DialPhase::Baking
                    }
                    // The last stage without a bake: the dial is dialed in
                    // the same write, not one write later.
                    None if position + 1 == stages.len() => {
                        self.status.step = Some(self.step_at(&stages, stages.len()));
                        DialPhase::Dialed
                    }
                    None => {
                        self.requeue_after = Duration::ZERO;
                        DialPhase::Progressing
                    }
                };
            }
            if !step.promoted {
                if let Some(until) = &step.bake_until
                    && let Ok(left) = Duration::try_from(until.0.duration_since(self.world.now))
                    && !left.is_zero()
                {
                    self.set_waiting(None);
                    self.requeue_after = left;
                    return if self.status.paused {
                        DialPhase::Paused
                    } else {
                        DialPhase::Baking
                    };
                }
                if stage.pause {
                    self.set_waiting(Some(
                        "a person to resume or promote (pause step)".to_owned(),
                    ));
                    return DialPhase::Paused;
                }
            }
            self.status.step = Some(self.step_at(&stages, position + 1));
        }
    }

    fn set_waiting(&mut self, waiting_for: Option<String>) {
        if let Some(step) = &mut self.status.step {
            step.waiting_for = waiting_for;
        }
    }

    /// The flat stage index the status points at.
    fn position(&self, stages: &[Stage<'_>]) -> usize {
        let waves = stages.iter().filter(|s| s.step == 0).count().max(1);
        self.status
            .step
            .as_ref()
            .map_or(0, |step| step.index as usize * waves + step.wave as usize)
    }

    fn step_at(&self, stages: &[Stage<'_>], position: usize) -> StepStatus {
        let (index, wave) = match stages.get(position) {
            Some(stage) => (stage.step, stage.wave),
            None => (self.spec().steps.len() + 1, 0),
        };
        StepStatus {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            wave: u32::try_from(wave).unwrap_or(u32::MAX),
            started_at: None,
            bake_until: None,
            promoted: false,
            waiting_for: None,
        }
    }

    /// Where progression starts after a spec change or a retry: the first
    /// step not already covered in every realm, so that a dial at 25% whose
    /// target changes does not go back to 5% first.
    fn first_stage_to_do(&self, stages: &[Stage<'_>]) -> usize {
        stages
            .iter()
            .position(|stage| {
                stage.wave == 0
                    && (stage.step == self.spec().steps.len()
                        || !self.spec().realms.iter().all(|realm| {
                            stage
                                .allocation
                                .lies_between(&self.rollback, &self.effective(realm))
                        }))
            })
            .unwrap_or(0)
    }

    /// The allocation served in a realm now: control until a stage sets it.
    fn effective(&self, realm: &str) -> Allocation {
        self.status
            .realms
            .iter()
            .find(|entry| entry.realm == realm)
            .map(|entry| entry.allocation.clone())
            .unwrap_or_else(|| {
                self.spec()
                    .control()
                    .map(Allocation::all_in)
                    .unwrap_or_default()
            })
    }

    /// Sets `realms` to `to`, evolving each bucket layout with minimal moves,
    /// and records each actual change in the history.
    fn move_realms(
        &mut self,
        realms: &[String],
        to: &Allocation,
        rolled_back: bool,
        reason: ChangeReason,
        message: &str,
    ) {
        let target = to.normalized();
        for realm in realms {
            let position = self
                .status
                .realms
                .iter()
                .position(|entry| &entry.realm == realm);
            let current = position.map(|i| self.status.realms[i].clone());
            if let Some(entry) = &current
                && entry.allocation == target
            {
                if entry.rolled_back != rolled_back
                    && let Some(i) = position
                {
                    self.status.realms[i].rolled_back = rolled_back;
                }
                continue;
            }
            let buckets = rebalance(
                current.as_ref().map(|e| e.buckets.as_slice()),
                &target,
                &self.spec().treatments,
            );
            let next = RealmAllocation {
                realm: realm.clone(),
                allocation: target.clone(),
                buckets,
                rolled_back,
            };
            match position {
                Some(i) => self.status.realms[i] = next,
                None => self.status.realms.push(next),
            }
            self.status.history.push(AllocationChange {
                at: self.now.clone(),
                realm: realm.clone(),
                from: current.map(|e| e.allocation),
                to: target.clone(),
                reason,
                generation: self.world.generation,
                message: message.to_owned(),
            });
        }
        let order = &self.spec().realms;
        self.status
            .realms
            .sort_by_key(|entry| order.iter().position(|r| r == &entry.realm));
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
    }

    fn finish(mut self, phase: DialPhase) -> Decision {
        if self.status.phase != Some(phase) {
            let waiting = self
                .status
                .step
                .as_ref()
                .and_then(|s| s.waiting_for.clone());
            let message = match &waiting {
                // "Waiting: waiting for" would say it twice.
                Some(what) if phase == DialPhase::Waiting => format!("waiting for {what}"),
                Some(what) => format!("{phase:?}: waiting for {what}"),
                None => format!("{phase:?}"),
            };
            if matches!(
                phase,
                DialPhase::Dialed | DialPhase::Waiting | DialPhase::Paused
            ) {
                self.notes.push(Note::normal(phase_reason(phase), message));
            }
        }
        self.status.phase = Some(phase);
        self.status.observed_generation = Some(self.world.generation);
        self.status.summary = Some(summary(&self.status.realms, &self.world.spec.realms));
        let desired = self.desired_conditions(phase);
        self.status.conditions = conditions::merge(
            &self.world.status.conditions,
            &desired,
            Some(self.world.generation),
            &Time(self.now.0),
        );
        Decision {
            status: self.status,
            notes: self.notes,
            requeue_after: self.requeue_after,
        }
    }

    fn desired_conditions(&self, phase: DialPhase) -> Vec<DesiredCondition> {
        let detail = match phase {
            DialPhase::RolledBack | DialPhase::Aborted => self
                .status
                .rollback
                .as_ref()
                .map(|r| r.message.clone())
                .unwrap_or_default(),
            DialPhase::Failed => self.missing_message(),
            _ => match self
                .status
                .step
                .as_ref()
                .and_then(|s| s.waiting_for.as_ref())
            {
                Some(what) => format!("waiting for {what}"),
                None => format!(
                    "effective allocation {}",
                    self.status.summary.clone().unwrap_or_default()
                ),
            },
        };
        let reason = phase_reason(phase);
        let firing: Vec<&str> = self
            .status
            .alarms
            .iter()
            .filter(|a| a.state == AlarmState::Alarm)
            .map(|a| a.name.as_str())
            .collect();
        let reconciling = matches!(
            phase,
            DialPhase::Progressing | DialPhase::Baking | DialPhase::Waiting | DialPhase::Paused
        );
        let stalled = matches!(
            phase,
            DialPhase::RolledBack | DialPhase::Aborted | DialPhase::Failed
        );
        vec![
            DesiredCondition::new(
                conditions::READY,
                phase == DialPhase::Dialed,
                reason,
                detail.clone(),
            ),
            DesiredCondition::new(
                conditions::RECONCILING,
                reconciling,
                reason,
                if reconciling {
                    detail.clone()
                } else {
                    String::new()
                },
            ),
            DesiredCondition::new(
                conditions::STALLED,
                stalled,
                reason,
                if stalled { detail } else { String::new() },
            ),
            DesiredCondition::new(
                conditions::DEGRADED,
                ConditionStatus::from(!firing.is_empty()),
                if firing.is_empty() {
                    "AlarmsClear"
                } else {
                    "AlarmFiring"
                },
                if firing.is_empty() {
                    String::new()
                } else {
                    format!("in ALARM: {}", firing.join(", "))
                },
            ),
        ]
    }
}

fn phase_reason(phase: DialPhase) -> &'static str {
    match phase {
        DialPhase::Progressing => "Progressing",
        DialPhase::Baking => "Baking",
        DialPhase::Paused => "Paused",
        DialPhase::Waiting => "Waiting",
        DialPhase::Dialed => "Dialed",
        DialPhase::RolledBack => "RolledBack",
        DialPhase::Aborted => "Aborted",
        DialPhase::Failed => "Failed",
    }
}

/// The bucket layout after moving to `to`; a missing or corrupt layout
/// starts afresh (every replica computes the same from the same status).
fn rebalance(
    current: Option<&[BucketRange]>,
    to: &Allocation,
    treatments: &[String],
) -> Vec<BucketRange> {
    let layout = match current.map(Layout::from_ranges) {
        Some(Ok(layout)) => layout.rebalance(to, treatments),
        Some(Err(error)) => {
            tracing::warn!(%error, "bucket layout in status is invalid; laying buckets out afresh");
            Layout::initial(to, treatments)
        }
        None => Layout::initial(to, treatments),
    };
    layout.into_ranges()
}

fn describe_alarm(alarm: &AlarmReading) -> String {
    let mut text = format!(
        "alarm {} ({}) is {}",
        alarm.name, alarm.severity, alarm.state
    );
    if let Some(realms) = &alarm.realms {
        text.push_str(&format!(" in {}", realms.join(", ")));
    } else if let Some(realm) = &alarm.realm {
        text.push_str(&format!(" in {realm}"));
    }
    match (alarm.value, alarm.threshold) {
        (Some(value), Some(threshold)) => {
            text.push_str(&format!(" at {value} (threshold {threshold})"))
        }
        (Some(value), None) => text.push_str(&format!(" at {value}")),
        _ => {}
    }
    text
}

/// The effective allocation in one line: one allocation when every realm
/// serves the same, otherwise one per realm.
fn summary(realms: &[RealmAllocation], order: &[String]) -> String {
    let served: Vec<(&str, String)> = order
        .iter()
        .map(|realm| {
            let text = realms
                .iter()
                .find(|entry| &entry.realm == realm)
                .map_or_else(|| "-".to_owned(), |entry| entry.allocation.to_string());
            (realm.as_str(), text)
        })
        .collect();
    match served.first() {
        Some((_, first)) if served.iter().all(|(_, text)| text == first) => first.clone(),
        _ => served
            .iter()
            .map(|(realm, text)| format!("{realm}={text}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests;
