//! The wave state machine: from the phase as last written and the world as
//! read now, the next phase of the rollback and of each wave, the restores
//! and marks to write, and the events to publish.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{
    ACTION_ANNOTATION, Choice, Decision, Mark, NOT_AUTHORIZED, POLL, REFUSED, RESYNC, RegionView,
    Restore, RevisionMark, Rollout, World, choose,
};
use crate::{
    api::{
        alarm::AlarmState,
        common::{MicroTime, micro_time},
        rollback::{
            FiredBy, RollbackPhase, RollbackStatus, TriggerType, WavePhase, WaveStatus,
            WorkloadResult, WorkloadStatus,
        },
    },
    controllers::Note,
};

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
            suspends: Vec::new(),
            releases: Vec::new(),
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

/// One decision being made: the status as it is being changed, and what
/// else to do.
pub(super) struct Planner<'a> {
    pub(super) world: &'a World<'a>,
    pub(super) status: RollbackStatus,
    /// Status times keep microseconds: wave lengths and bakes are derived
    /// from them.
    pub(super) now: MicroTime,
    pub(super) decision: Decision,
    /// Why the rollback cannot go on right now, for the conditions.
    pub(super) waiting: Option<String>,
    /// The reason of a refusal decided now.
    pub(super) refused_because: Option<&'static str>,
}

impl Planner<'_> {
    fn run(&mut self) {
        if let Some(request) = self.world.request {
            self.handle_request(request);
        }
        self.watch_gitops();
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
        if self.status.phase == Some(RollbackPhase::Armed) {
            self.report_gitops_problem();
        }
    }

    pub(super) fn note(&mut self, note: Note) {
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

    pub(super) fn refuse(&mut self, reason: &'static str, refusals: &[String]) {
        let message = format!("refused, nothing was changed: {}", refusals.join("; "));
        self.status.phase = Some(RollbackPhase::Refused);
        self.status.finished_at = Some(self.now.clone());
        self.note(Note::warning(reason, message.clone()));
        // Nothing moved: what was suspended for this run comes back now.
        self.restore_gitops("the rollback was refused");
        self.waiting = Some(message);
        self.refused_because = Some(reason);
        self.decision.finished = Some("refused");
    }

    pub(super) fn requeue(&mut self, after: Duration) {
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
        if word == "restore-gitops" {
            if !self.restore_gitops(&format!("restored by request {request:?}")) {
                self.note(Note::warning(
                    "RestoreGitOpsIgnored",
                    "restore-gitops: this rollback holds no automatic sync off".to_owned(),
                ));
            }
            return;
        }
        if word != "rearm" {
            self.note(Note::warning(
                "UnknownAction",
                format!(
                    "unknown action {word:?} in {ACTION_ANNOTATION}: use rearm or restore-gitops"
                ),
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
        self.restore_gitops("re-armed");
        let last_action = self.status.last_action.take();
        self.status = RollbackStatus {
            last_action,
            phase: Some(RollbackPhase::Armed),
            armed_at: Some(self.now.clone()),
            gitops: std::mem::take(&mut self.status.gitops),
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
        // Fired, and waiting to start (e.g. for automatic sync to be
        // suspended): the alarm may have cleared since, the decision stands.
        if self.status.fired_by.is_some() {
            self.start();
            return;
        }
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
        // After the preflight (a refusal suspends nothing), before any wave.
        if !self.gitops_gate() {
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
