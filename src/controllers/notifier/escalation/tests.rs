use std::time::Duration;

use jiff::Timestamp;

use super::{Assessment, ESCALATED, RESOLVED, Watch, assess};
use crate::api::{
    common::Severity,
    weblab_notifier::{Escalation, EscalationState, EscalationStatus},
};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap_or_else(|_| unreachable!())
}

fn policy() -> Escalation {
    Escalation {
        after: Duration::from_secs(900).into(),
        severity: Severity::Sev1,
        notifier: None,
    }
}

/// Steps the escalation of a rollback completed at 0 through `steps` of
/// (time, firing alarms), each step reading the status the last wrote.
fn run(steps: &[(i64, &[&str])]) -> Vec<Assessment> {
    let policy = policy();
    let mut previous: Option<EscalationStatus> = None;
    steps
        .iter()
        .map(|(now, firing)| {
            let assessment = assess(&Watch {
                policy: Some(&policy),
                completed_at: Some(at(0)),
                firing: firing.iter().map(|s| (*s).to_owned()).collect(),
                previous: previous.as_ref(),
                now: at(*now),
            });
            previous.clone_from(&assessment.status);
            assessment
        })
        .collect()
}

fn state(assessment: &Assessment) -> Option<EscalationState> {
    assessment.status.as_ref().map(|s| s.state)
}

fn reason(assessment: &Assessment) -> Option<&'static str> {
    assessment.note.as_ref().map(|n| n.reason)
}

#[test]
fn an_alarm_still_firing_after_fifteen_minutes_pages_once_and_resolves_when_it_clears() {
    let steps = run(&[
        (0, &["errors"]),
        (600, &["errors"]),
        (900, &["errors"]),
        (960, &["errors", "latency"]),
        (1200, &[]),
        (1300, &[]),
    ]);
    assert_eq!(steps[0].wake, Some(Duration::from_secs(900)));
    assert_eq!(steps[1].wake, Some(Duration::from_secs(300)));
    let states: Vec<_> = steps.iter().map(state).collect();
    use EscalationState::{Paged, Resolved, Watching};
    assert_eq!(
        states,
        [Watching, Watching, Paged, Paged, Resolved, Resolved].map(Some)
    );
    let reasons: Vec<_> = steps.iter().map(reason).collect();
    assert_eq!(
        reasons,
        [None, None, Some(ESCALATED), None, Some(RESOLVED), None]
    );
    let paged = steps[2]
        .note
        .as_ref()
        .map(|n| n.message.clone())
        .unwrap_or_default();
    assert_eq!(
        paged,
        "errors still firing 15m after the rollback completed; paging at Sev1"
    );
    // Settled states write nothing new.
    assert_eq!(steps[4].status, steps[5].status);
}

#[test]
fn alarms_that_cleared_in_time_page_nobody() {
    let steps = run(&[(0, &["errors"]), (300, &[]), (900, &[]), (1000, &[])]);
    assert!(steps.iter().all(|s| s.note.is_none()));
    assert_eq!(state(&steps[3]), Some(EscalationState::Resolved));
}

#[test]
fn a_firing_again_after_the_resolution_pages_again() {
    let steps = run(&[(900, &["errors"]), (1000, &[]), (1100, &["errors"])]);
    let reasons: Vec<_> = steps.iter().map(reason).collect();
    assert_eq!(reasons, [Some(ESCALATED), Some(RESOLVED), Some(ESCALATED)]);
}

#[test]
fn leaving_the_rollback_resolves_a_page_and_clears_the_status() {
    let policy = policy();
    let paged = run(&[(900, &["errors"])]).remove(0).status;
    let left = assess(&Watch {
        policy: Some(&policy),
        completed_at: None,
        firing: vec!["errors".to_owned()],
        previous: paged.as_ref(),
        now: at(1000),
    });
    assert_eq!(left.status, None);
    assert_eq!(reason(&left), Some(RESOLVED));
}

#[test]
fn a_rearmed_rollback_resolves_its_page() {
    let spec: crate::api::rollback::RollbackSpec = serde_json::from_value(serde_json::json!({
        "targets": [{"kind": "Deployment", "name": "graphql-api"}],
        "waves": [{"region": "prodNA", "namespace": "prod"}],
        "target": {"type": "PreviousStable"},
        "escalation": {"after": "15m"},
    }))
    .unwrap_or_else(|error| panic!("{error}"));
    let paged = run(&[(900, &["errors"])]).remove(0).status;
    // Re-arming starts the status over: nothing succeeded any more.
    let rearmed = crate::api::rollback::RollbackStatus {
        phase: Some(crate::api::rollback::RollbackPhase::Armed),
        ..Default::default()
    };
    let (assessment, _) = super::for_rollback(&spec, &rearmed, paged.as_ref(), &[], at(1000));
    assert_eq!(assessment.status, None);
    assert_eq!(reason(&assessment), Some(RESOLVED));
}
