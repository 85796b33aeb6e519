//! What each kind's decisions rest on, read from the status the decision
//! wrote: the alarm and its value against the threshold (or a guardrail's
//! estimate), the realms or regions, the allocation or revision before and
//! after. Pure: the controllers call these with what they just decided.

use kube::ResourceExt;

use crate::{
    api::{
        Alarm,
        alarm::{AlarmState, AlarmStatus},
        rollback::RollbackStatus,
        weblab_dial::WeblabDialStatus,
        weblab_notifier::Evidence,
    },
    controllers::Note,
};

/// A dial's decision: the rollback record when it rolled back; the realms
/// and allocations the decision changed (the newest history entries).
pub fn dial(status: &WeblabDialStatus, note: &Note) -> Evidence {
    let mut evidence = Evidence::default();
    if note.reason == "RolledBack"
        && let Some(record) = &status.rollback
    {
        evidence.alarm.clone_from(&record.alarm);
        evidence.severity = record.severity;
        evidence.value = record.value;
        evidence.threshold = record.threshold;
        evidence.realms.clone_from(&record.realms);
    }
    if let Some(newest) = status.history.last() {
        let changes: Vec<_> = status
            .history
            .iter()
            .filter(|change| change.at == newest.at)
            .collect();
        if evidence.realms.is_empty() {
            evidence.realms = changes.iter().map(|c| c.realm.clone()).collect();
        }
        evidence.from = newest.from.as_ref().map(ToString::to_string);
        evidence.to = Some(newest.to.to_string());
    }
    evidence
}

/// An alarm's decision: itself, its value against its threshold, and for a
/// guardrail the treatment that regresses most in each alarming realm.
pub fn alarm(alarm: &Alarm, status: &AlarmStatus) -> Evidence {
    let alarming: Vec<_> = status
        .realms
        .iter()
        .filter(|realm| realm.state == AlarmState::Alarm)
        .collect();
    let estimate: Vec<String> = alarming
        .iter()
        .filter_map(|realm| {
            realm
                .treatments
                .iter()
                .filter(|t| t.state == AlarmState::Alarm)
                .max_by(|a, b| a.estimate.abs().total_cmp(&b.estimate.abs()))
                .map(|t| {
                    format!(
                        "{} in {}: {:+.4} (rate {:.4} vs control {:.4})",
                        t.treatment, realm.realm, t.estimate, t.rate, t.control_rate
                    )
                })
        })
        .collect();
    let mut realms: Vec<String> = alarming.iter().map(|r| r.realm.clone()).collect();
    if realms.is_empty() {
        realms.extend(alarm.spec.realm.clone());
    }
    Evidence {
        realms,
        alarm: Some(alarm.name_any()),
        severity: Some(alarm.spec.severity),
        value: status.value,
        threshold: alarm.spec.prometheus.as_ref().map(|p| p.threshold),
        estimate: (!estimate.is_empty()).then(|| estimate.join("; ")),
        ..Evidence::default()
    }
}

/// A Rollback's decision: the alarm that fired it, its regions, and the
/// revisions of its first workload (before and restored).
pub fn rollback(status: &RollbackStatus) -> Evidence {
    let workload = status.waves.iter().flat_map(|w| &w.workloads).next();
    let revision = |number: Option<i64>, hash: Option<&String>| match (number, hash) {
        (Some(number), Some(hash)) => Some(format!("revision {number} ({hash})")),
        (Some(number), None) => Some(format!("revision {number}")),
        (None, Some(hash)) => Some(hash.clone()),
        (None, None) => None,
    };
    Evidence {
        realms: match &status.current_region {
            Some(region) => vec![region.clone()],
            None => status.waves.iter().map(|w| w.region.clone()).collect(),
        },
        alarm: status.fired_by.as_ref().map(|f| f.alarm.clone()),
        severity: status.fired_by.as_ref().map(|f| f.severity),
        from: workload.and_then(|w| revision(w.from_revision, w.from_hash.as_ref())),
        to: workload.and_then(|w| {
            let restored = revision(w.to_revision, w.to_hash.as_ref());
            match (&restored, &w.to_images) {
                (Some(restored), Some(images)) => Some(format!("{restored}: {images}")),
                _ => restored,
            }
        }),
        ..Evidence::default()
    }
}
