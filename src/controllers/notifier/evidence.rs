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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{
        api::{
            Alarm, alarm::AlarmStatus, common::Severity, rollback::RollbackStatus,
            weblab_dial::WeblabDialStatus,
        },
        controllers::Note,
    };

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn a_dials_rollback_carries_its_alarm_and_the_allocations_it_changed() {
        let status: WeblabDialStatus = from(json!({
            "phase": "RolledBack",
            "rollback": {"at": "2026-12-03T08:00:00.000001Z", "alarm": "errors", "severity": "Sev2",
                         "value": 0.07, "threshold": 0.05, "realms": ["NA"], "generation": 2,
                         "message": "m"},
            "history": [
                {"at": "2026-12-03T07:00:00Z", "realm": "NA", "to": {"C": 50, "T1": 50},
                 "reason": "Target", "generation": 2},
                {"at": "2026-12-03T08:00:00.000001Z", "realm": "NA", "from": {"C": 50, "T1": 50},
                 "to": {"C": 100}, "reason": "Rollback", "generation": 2},
            ],
        }));
        let rolled_back = super::dial(&status, &Note::warning("RolledBack", String::new()));
        assert_eq!(rolled_back.alarm.as_deref(), Some("errors"));
        assert_eq!(rolled_back.severity, Some(Severity::Sev2));
        assert_eq!(
            (rolled_back.value, rolled_back.threshold),
            (Some(0.07), Some(0.05))
        );
        assert_eq!(rolled_back.realms, ["NA"]);
        assert_eq!(rolled_back.from.as_deref(), Some("C:50 T1:50"));
        assert_eq!(rolled_back.to.as_deref(), Some("C:100"));
        // Another decision of the same dial is not the alarm's.
        let resumed = super::dial(&status, &Note::normal("Resumed", String::new()));
        assert_eq!(resumed.alarm, None);
    }

    #[test]
    fn a_guardrail_names_the_treatment_that_regresses_most_per_realm() {
        let alarm: Alarm = from(json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
            "metadata": {"name": "checkout-guardrail"},
            "spec": {"severity": "Sev2", "guardrail": {
                "dialRef": {"name": "d"}, "url": "http://prometheus:9090",
                "outcomes": "o", "trials": "t"}},
        }));
        let status: AlarmStatus = from(json!({
            "state": "ALARM",
            "realms": [{"realm": "EU", "state": "ALARM", "reason": "r", "treatments": [
                {"treatment": "T1", "state": "ALARM", "trials": 1000.0, "controlTrials": 1000.0,
                 "rate": 0.02, "controlRate": 0.01, "estimate": 0.01},
                {"treatment": "T2", "state": "OK", "trials": 1000.0, "controlTrials": 1000.0,
                 "rate": 0.05, "controlRate": 0.01, "estimate": 0.04},
            ]}, {"realm": "NA", "state": "OK", "reason": "r"}],
        }));
        let evidence = super::alarm(&alarm, &status);
        assert_eq!(evidence.realms, ["EU"]);
        assert_eq!(
            evidence.estimate.as_deref(),
            Some("T1 in EU: +0.0100 (rate 0.0200 vs control 0.0100)")
        );
        assert_eq!(evidence.threshold, None);
    }

    #[test]
    fn a_rollback_carries_what_fired_it_and_the_revisions() {
        let status: RollbackStatus = from(json!({
            "phase": "Succeeded",
            "firedBy": {"alarm": "errors", "severity": "Sev1", "at": "2026-12-03T08:00:00Z"},
            "waves": [{"region": "prodNA", "phase": "Succeeded", "workloads": [
                {"kind": "Deployment", "name": "graphql-api", "fromRevision": 3, "toRevision": 1,
                 "fromHash": "abc", "toHash": "def", "toImages": "graphql:3.240.0",
                 "result": "Succeeded"}]}],
        }));
        let evidence = super::rollback(&status);
        assert_eq!(evidence.alarm.as_deref(), Some("errors"));
        assert_eq!(evidence.realms, ["prodNA"]);
        assert_eq!(evidence.from.as_deref(), Some("revision 3 (abc)"));
        assert_eq!(
            evidence.to.as_deref(),
            Some("revision 1 (def): graphql:3.240.0")
        );
    }
}
