//! The rollback's conditions, derived from the status the wave state
//! machine planned, and the decision's last step that writes them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Decision, GITOPS_FORBIDDEN, GITOPS_NOT_FOUND, NOT_AUTHORIZED, REFUSED, RegionView,
    waves::Planner,
};
use crate::{
    api::{
        conditions::{self, DesiredCondition},
        rollback::{RollbackPhase, WavePhase, WaveStatus, WorkloadResult},
    },
    controllers::Note,
};

impl Planner<'_> {
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
        wanted.extend(self.gitops_conditions());
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
            match before.map(|c| c.reason.as_str()) {
                Some(NOT_AUTHORIZED) => NOT_AUTHORIZED,
                Some(GITOPS_FORBIDDEN) => GITOPS_FORBIDDEN,
                Some(GITOPS_NOT_FOUND) => GITOPS_NOT_FOUND,
                _ => REFUSED,
            }
        })
    }

    pub(super) fn finish(mut self) -> Decision {
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
