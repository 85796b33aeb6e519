//! The wave state machine of a rollback that runs now.

use super::*;

#[test]
fn a_refused_rollback_changes_nothing_in_any_region() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    let mut pruned = graphql("3.242.1");
    pruned.revisions.remove(0);
    case.set_region("prodEU", read(vec![pruned]));
    let decision = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
    assert!(decision.restores.is_empty());
    assert!(case.status.waves.is_empty());
    assert_eq!(reasons(&decision), vec!["Refused"]);
    assert_eq!(decision.finished, Some("refused"));
    let ready = conditions::find(&case.status.conditions, conditions::READY).expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("region prodEU"), "{}", ready.message);
    // Refused stays refused, quietly.
    let again = case.decide();
    assert_eq!(again.status, case.status);
    assert!(again.notes.is_empty());
}

#[test]
fn a_missing_named_target_is_refused() {
    let spec = four_regions(1);
    let mut case = Case::new(spec, read(vec![graphql("3.242.1")]));
    case.set_region(
        "prodFE",
        RegionView::Read {
            workloads: Vec::new(),
            not_found: vec!["Deployment graphql-api not found in namespace fe".to_owned()],
        },
    );
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
}

#[test]
fn a_target_gone_when_its_region_starts_fails_that_region() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.step();
    case.set_region(
        "prodFE",
        RegionView::Read {
            workloads: Vec::new(),
            not_found: vec!["Deployment graphql-api not found in namespace fe".to_owned()],
        },
    );
    case.later(900);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
    let message = case.wave("prodFE").message.clone().unwrap_or_default();
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn sequential_waves_roll_back_one_after_another_each_after_its_bake() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    let first = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    assert_eq!(reasons(&first), vec!["Started", "WaveStarted"]);
    // The chosen revision is recorded before anything is restored.
    assert!(first.restores.is_empty());
    assert_eq!(case.wave("prodNA").phase, WavePhase::RollingBack);
    assert_eq!(case.wave("prodFE").phase, WavePhase::Pending);
    let workload = &case.wave("prodNA").workloads[0];
    assert_eq!(
        (workload.from_revision, workload.to_revision),
        (Some(3), Some(1))
    );
    assert_eq!(workload.to_hash.as_deref(), Some("h3.240.0"));

    let restoring = case.step();
    assert_eq!(
        restoring.restores,
        vec![Restore {
            region: "prodNA".to_owned(),
            kind: WorkloadKind::Deployment,
            name: "graphql-api".to_owned(),
            hash: "h3.240.0".to_owned(),
        }]
    );
    assert_eq!(
        case.wave("prodNA").workloads[0].result,
        WorkloadResult::RollingOut
    );

    // Rolling out: the controller observed the change, not done yet.
    let mut rolling = graphql("3.240.0");
    rolling.rollout = Rollout::InProgress("1 of 2 replicas updated".to_owned());
    case.set_region("prodNA", read(vec![rolling]));
    case.later(5);
    let waiting = case.step();
    assert!(waiting.restores.is_empty());
    assert_eq!(case.wave("prodNA").phase, WavePhase::RollingBack);

    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.later(5);
    let rolled = case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Baking);
    assert_eq!(reasons(&rolled), vec!["WaveRolledOut"]);
    let workload = &case.wave("prodNA").workloads[0];
    assert_eq!(
        (workload.started_at.clone(), workload.finished_at.clone()),
        (Some(MicroTime(t(0))), Some(MicroTime(t(10))))
    );
    assert_eq!(case.wave("prodFE").phase, WavePhase::Pending);
    assert_eq!(rolled.requeue_after, Some(Duration::from_secs(900)));

    case.later(900);
    let baked = case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Succeeded);
    assert_eq!(case.wave("prodFE").phase, WavePhase::RollingBack);
    assert_eq!(reasons(&baked), vec!["WaveSucceeded", "WaveStarted"]);
    assert_eq!(
        baked.waves_ended,
        vec![("succeeded", Duration::from_secs(910))]
    );
    assert_eq!(case.status.current_region.as_deref(), Some("prodFE"));
}

#[test]
fn a_failed_region_stops_the_rollback_and_says_which_workload_and_why() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    let mut stuck = graphql("3.240.0");
    stuck.rollout = Rollout::InProgress("0 of 2 replicas available".to_owned());
    case.set_region("prodNA", read(vec![stuck]));
    case.later(601);
    let failed = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
    assert_eq!(case.wave("prodNA").phase, WavePhase::Failed);
    let message = case.wave("prodNA").message.clone().unwrap_or_default();
    assert!(
        message.contains("Deployment graphql-api did not roll out within"),
        "{message}"
    );
    assert!(message.contains("0 of 2 replicas available"), "{message}");
    for region in ["prodFE", "prodEU", "prodZAZ"] {
        assert_eq!(case.wave(region).phase, WavePhase::Pending, "{region}");
    }
    assert_eq!(reasons(&failed), vec!["RollbackFailed"]);
    assert_eq!(failed.finished, Some("failed"));
    assert!(failed.notes[0].warning);
    // Nothing else moves afterwards.
    case.later(3600);
    let after = case.decide();
    assert!(after.restores.is_empty());
    assert_eq!(after.status, case.status);
    assert!(regions_to_read(&case.spec, &case.status).is_empty());
}

#[test]
fn an_alarm_during_the_bake_fails_the_region() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Baking);
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(30))];
    case.later(60);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
    let message = case.wave("prodNA").message.clone().unwrap_or_default();
    assert!(
        message.contains("alarm errors entered ALARM at Sev2"),
        "{message}"
    );
}

#[test]
fn an_alarm_firing_before_the_rollout_has_the_bake_to_clear() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(-120))];
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.later(10);
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Baking);
    case.later(600);
    case.step();
    assert_eq!(
        case.wave("prodNA").phase,
        WavePhase::Baking,
        "may still clear"
    );
    case.alarms = vec![alarm(AlarmState::Ok, Severity::Sev2, t(700))];
    case.later(300);
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Succeeded);

    // Another region where it never clears fails at the end of its bake.
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(800))];
    case.set_region("prodFE", read(vec![graphql("3.240.0")]));
    case.step();
    case.later(10);
    case.step();
    assert_eq!(case.wave("prodFE").phase, WavePhase::Baking);
    case.later(900);
    case.step();
    let message = case.wave("prodFE").message.clone().unwrap_or_default();
    assert!(message.contains("did not clear it"), "{message}");
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
}

#[test]
fn parallel_waves_start_up_to_the_limit() {
    let mut case = Case::new(four_regions(2), read(vec![graphql("3.242.1")]));
    case.step();
    let phases: Vec<WavePhase> = case.status.waves.iter().map(|w| w.phase).collect();
    assert_eq!(
        phases,
        vec![
            WavePhase::RollingBack,
            WavePhase::RollingBack,
            WavePhase::Pending,
            WavePhase::Pending
        ]
    );
    assert_eq!(case.status.current_region.as_deref(), Some("prodNA,prodFE"));
    let restoring = case.step();
    assert_eq!(restoring.restores.len(), 2);
}

#[test]
fn someone_else_changing_the_workload_mid_rollback_fails_the_region() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.241.0")]));
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    case.later(600);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
    let message = case.wave("prodNA").message.clone().unwrap_or_default();
    assert!(message.contains("changed by someone else"), "{message}");
}

#[test]
fn an_unreachable_region_waits_until_the_deadline() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region(
        "prodNA",
        RegionView::Unreachable("connection refused".to_owned()),
    );
    case.later(30);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    case.later(600);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
}

#[test]
fn merge_trains_stay_paused_from_the_start_until_success_and_after_a_failure() {
    let mut spec = four_regions(1);
    spec.pause_merge_trains =
        vec![serde_json::from_value(serde_json::json!({"train": "web-main"})).expect("a train")];
    let wanted = |phase| merge_train_pauses("graphql", &spec, phase);
    for phase in [
        None,
        Some(RollbackPhase::Pending),
        Some(RollbackPhase::Armed),
    ] {
        assert!(wanted(phase).is_empty(), "{phase:?}");
    }
    for phase in [RollbackPhase::Progressing, RollbackPhase::Failed] {
        let pauses = wanted(Some(phase));
        assert_eq!(pauses.len(), 1, "{phase:?}");
        assert_eq!(pauses[0].train.train, "web-main");
        assert_eq!(pauses[0].reason, "Rollback graphql is running");
    }
    for phase in [RollbackPhase::Succeeded, RollbackPhase::Refused] {
        assert!(wanted(Some(phase)).is_empty(), "{phase:?}");
    }
}
