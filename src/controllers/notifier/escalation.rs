//! Escalation, without I/O: the runbook's "monitor for 15 minutes; if you
//! still see no improvement, page more people". Once a rollback completed,
//! the attached alarms are looked at `after` later: if one still fires, the
//! object pages (a Warning `Escalated` decision, which the notifiers send
//! as a PagerDuty trigger with the object's own dedup key); once none
//! fires, the page resolves (`EscalationResolved`). An alarm that fires
//! again after that pages again.

use std::time::Duration;

use jiff::Timestamp;

use crate::{
    api::{
        alarm::AlarmState,
        common::micro_time,
        rollback::{RollbackPhase, RollbackSpec, RollbackStatus},
        weblab_dial::{DialPhase, WeblabDialSpec, WeblabDialStatus},
        weblab_notifier::{Escalation, EscalationState, EscalationStatus, Evidence},
    },
    controllers::{
        Note, rollback::plan::AlarmReading as RollbackAlarm, weblab_dial::plan::AlarmReading,
    },
};

/// The reason of a page.
pub const ESCALATED: &str = "Escalated";
/// The reason of a page's resolution.
pub const RESOLVED: &str = "EscalationResolved";

/// What an escalation is decided from.
pub struct Watch<'a> {
    /// The object's policy.
    pub policy: Option<&'a Escalation>,
    /// When the rollback completed, while the object stays rolled back.
    pub completed_at: Option<Timestamp>,
    /// The attached alarms that fire now.
    pub firing: Vec<String>,
    /// The status as last written.
    pub previous: Option<&'a EscalationStatus>,
    /// Now.
    pub now: Timestamp,
}

/// What to record, say and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// The status to record.
    pub status: Option<EscalationStatus>,
    /// The decision to publish, if any.
    pub note: Option<Note>,
    /// When to look again (the escalation is due).
    pub wake: Option<Duration>,
}

/// Decides the escalation of one object.
pub fn assess(watch: &Watch<'_>) -> Assessment {
    let previous = watch.previous;
    let was_paged = previous.is_some_and(|p| p.state == EscalationState::Paged);
    let (Some(policy), Some(since)) = (watch.policy, watch.completed_at) else {
        return Assessment {
            status: None,
            note: was_paged.then(|| {
                Note::normal(
                    RESOLVED,
                    "the page is resolved: the object is no longer rolled back".to_owned(),
                )
            }),
            wake: None,
        };
    };
    let since = micro_time(since);
    let due = since.0.checked_add(policy.after.get()).unwrap_or(since.0);
    // A new rollback starts a new watch.
    let previous = previous.filter(|p| p.since == since);
    let mut status = previous.cloned().unwrap_or_else(|| EscalationStatus {
        state: EscalationState::Watching,
        since: since.clone(),
        due_at: micro_time(due),
        paged_at: None,
        resolved_at: None,
        alarms: watch.firing.clone(),
    });
    status.due_at = micro_time(due);
    if watch.now < due {
        status.state = EscalationState::Watching;
        status.alarms.clone_from(&watch.firing);
        let wait = watch.now.duration_until(due);
        return Assessment {
            status: Some(status),
            note: None,
            wake: Duration::try_from(wait).ok(),
        };
    }
    let mut note = None;
    match (status.state, watch.firing.is_empty()) {
        (EscalationState::Paged, false) => {}
        (_, false) => {
            status.state = EscalationState::Paged;
            status.paged_at = Some(micro_time(watch.now));
            status.resolved_at = None;
            note = Some(Note::warning(
                ESCALATED,
                format!(
                    "{} still firing {} after the rollback completed; paging at {}",
                    watch.firing.join(", "),
                    friendly(policy.after.get()),
                    policy.severity
                ),
            ));
        }
        (EscalationState::Paged, true) => {
            status.state = EscalationState::Resolved;
            status.resolved_at = Some(micro_time(watch.now));
            note = Some(Note::normal(
                RESOLVED,
                "the page is resolved: no attached alarm fires any more".to_owned(),
            ));
        }
        (_, true) => status.state = EscalationState::Resolved,
    }
    if status.state != EscalationState::Paged || note.is_some() {
        status.alarms.clone_from(&watch.firing);
    }
    Assessment {
        status: Some(status),
        note,
        wake: None,
    }
}

/// `15m`, `1h 30m`: a duration as people write it.
fn friendly(duration: Duration) -> String {
    jiff::SignedDuration::try_from(duration)
        .map(|d| format!("{d:#}"))
        .unwrap_or_else(|_| format!("{duration:?}"))
}

#[cfg(test)]
mod tests;

/// A dial's escalation, from the status just decided and the escalation
/// `previous`ly recorded: watched while an alarm holds it rolled back; the
/// attached alarms in `ALARM` are the ones still firing. Also the evidence
/// of its page: the first of them, the realms rolled back.
pub fn for_dial(
    spec: &WeblabDialSpec,
    status: &WeblabDialStatus,
    previous: Option<&EscalationStatus>,
    alarms: &[AlarmReading],
    now: Timestamp,
) -> (Assessment, Evidence) {
    let record = status
        .rollback
        .as_ref()
        .filter(|r| status.phase == Some(DialPhase::RolledBack) && r.alarm.is_some());
    let firing: Vec<&AlarmReading> = alarms
        .iter()
        .filter(|a| a.state == AlarmState::Alarm)
        .collect();
    let assessment = assess(&Watch {
        policy: spec.rollback.escalation.as_ref(),
        completed_at: record.map(|r| r.at.0),
        firing: firing.iter().map(|a| a.name.clone()).collect(),
        previous,
        now,
    });
    let first = firing.first();
    let evidence = Evidence {
        realms: record.map(|r| r.realms.clone()).unwrap_or_default(),
        alarm: first.map(|a| a.name.clone()),
        severity: spec.rollback.escalation.as_ref().map(|e| e.severity),
        value: first.and_then(|a| a.value),
        threshold: first.and_then(|a| a.threshold),
        ..Evidence::default()
    };
    (assessment, evidence)
}

/// A Rollback's escalation, from the status just decided (a re-arm clears
/// it) and the escalation `previous`ly recorded: watched once it
/// succeeded; its trigger and verification alarms in `ALARM` are the ones
/// still firing.
pub fn for_rollback(
    spec: &RollbackSpec,
    status: &RollbackStatus,
    previous: Option<&EscalationStatus>,
    alarms: &[&RollbackAlarm],
    now: Timestamp,
) -> (Assessment, Evidence) {
    let completed = status
        .finished_at
        .as_ref()
        .filter(|_| status.phase == Some(RollbackPhase::Succeeded));
    let mut firing: Vec<String> = alarms
        .iter()
        .filter(|a| a.state == AlarmState::Alarm)
        .map(|a| a.name.clone())
        .collect();
    firing.sort();
    firing.dedup();
    let assessment = assess(&Watch {
        policy: spec.escalation.as_ref(),
        completed_at: completed.map(|at| at.0),
        firing: firing.clone(),
        previous,
        now,
    });
    let evidence = Evidence {
        realms: status.waves.iter().map(|w| w.region.clone()).collect(),
        alarm: firing.first().cloned(),
        severity: spec.escalation.as_ref().map(|e| e.severity),
        ..Evidence::default()
    };
    (assessment, evidence)
}
