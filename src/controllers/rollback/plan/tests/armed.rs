//! An armed rollback: stable revisions, firing, re-arming, overwrites.

use super::*;

#[test]
fn an_armed_rollback_records_stable_revisions_then_fires_once() {
    let mut fresh = graphql("3.242.1");
    // Rolled out 10 minutes ago: not stable yet.
    fresh.rollout = Rollout::Complete(Some(t(-600)));
    let mut case = Case::new(armed_spec(), read(vec![fresh.clone()]));
    case.alarms = vec![alarm(AlarmState::Ok, Severity::Sev2, t(-7200))];
    let armed = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
    assert_eq!(reasons(&armed), vec!["Armed"]);
    assert!(armed.marks.is_empty());
    assert_eq!(armed.requeue_after, Some(RESYNC));

    // A Sev3 notice is not a trigger, and does not reset the clock.
    case.later(1200);
    let stable = case.step();
    assert_eq!(
        stable.marks,
        vec![RevisionMark {
            region: "prodNA".to_owned(),
            kind: WorkloadKind::Deployment,
            name: "graphql-api".to_owned(),
            hash: "h3.242.1".to_owned(),
            mark: Mark::Stable,
        }]
    );
    assert_eq!(stable.status, case.status, "marks alone write no status");

    // An alarm that cleared recently restarts the clock.
    case.alarms = vec![alarm(AlarmState::Ok, Severity::Sev2, t(1100))];
    assert!(case.decide().marks.is_empty());

    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(1250))];
    case.later(60);
    let fired = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    assert_eq!(
        case.status.fired_by.as_ref().map(|f| f.alarm.as_str()),
        Some("errors")
    );
    assert_eq!(reasons(&fired), vec!["Fired", "Started", "WaveStarted"]);
}

#[test]
fn an_alarm_at_another_severity_does_not_fire() {
    let mut case = Case::new(armed_spec(), read(vec![graphql("3.242.1")]));
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev3, t(0))];
    case.step();
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
}

#[test]
fn rearming_is_an_explicit_request_handled_once() {
    let mut case = Case::new(armed_spec(), read(vec![graphql("3.242.1")]));
    case.status.phase = Some(RollbackPhase::Succeeded);
    case.status.fired_by = Some(FiredBy {
        alarm: "errors".to_owned(),
        severity: Severity::Sev2,
        at: MicroTime(t(-60)),
    });
    case.request = Some("rearm after INC-42".to_owned());
    let rearmed = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
    assert_eq!(case.status.fired_by, None);
    assert_eq!(
        case.status.last_action.as_deref(),
        Some("rearm after INC-42")
    );
    assert_eq!(reasons(&rearmed), vec!["Rearmed"]);

    // Rearm on an armed rollback is refused with a warning, and recorded.
    case.request = Some("rearm again".to_owned());
    let ignored = case.step();
    assert_eq!(reasons(&ignored), vec!["RearmIgnored"]);
    assert_eq!(case.status.last_action.as_deref(), Some("rearm again"));
}

#[test]
fn a_re_applied_bad_revision_is_reported_once_not_fought() {
    let mut case = Case::new(four_regions(4), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    for region in ["prodFE", "prodEU", "prodZAZ"] {
        case.set_region(region, read(vec![graphql("3.240.0")]));
    }
    case.step();
    case.later(900);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Succeeded));

    // Argo CD syncs the bad release back into prodEU.
    case.set_region("prodEU", read(vec![graphql("3.242.1")]));
    case.later(30);
    let reported = case.step();
    assert!(reported.restores.is_empty(), "never fights it");
    assert_eq!(reasons(&reported), vec!["Overwritten"]);
    assert!(reported.notes[0].warning);
    assert_eq!(
        case.wave("prodEU").workloads[0].result,
        WorkloadResult::Overwritten
    );
    let degraded = conditions::find(&case.status.conditions, conditions::DEGRADED).expect("set");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Overwritten")
    );

    // A new, different release afterwards is not an overwrite.
    let again = case.decide();
    assert!(again.notes.is_empty());
    assert_eq!(again.status, case.status);
}

#[test]
fn a_settled_rollback_plans_no_write() {
    let mut case = Case::new(four_regions(4), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    for region in ["prodNA", "prodFE", "prodEU", "prodZAZ"] {
        case.set_region(region, read(vec![graphql("3.240.0")]));
    }
    case.step();
    case.later(900);
    let done = case.step();
    assert_eq!(done.finished, Some("succeeded"));
    case.later(60);
    let quiet = case.decide();
    assert_eq!(quiet.status, case.status);
    assert!(quiet.notes.is_empty() && quiet.restores.is_empty() && quiet.marks.is_empty());
}

#[test]
fn stateful_sets_get_their_rollout_time_recorded_first() {
    let mut set = graphql("3.242.1");
    set.kind = WorkloadKind::StatefulSet;
    set.rollout = Rollout::Complete(None);
    let mut case = Case::new(armed_spec(), read(vec![set.clone()]));
    let first = case.step();
    assert_eq!(first.marks.len(), 1);
    assert_eq!(first.marks[0].mark, Mark::RolledOut);
    if let Some(current) = set.revisions.last_mut() {
        current.rolled_out_at = Some(t(-3600));
    }
    case.set_region("prodNA", read(vec![set]));
    let second = case.step();
    assert_eq!(second.marks.len(), 1);
    assert_eq!(second.marks[0].mark, Mark::Stable);
}
