//! Conditions, refusals and messages.

use super::*;

fn condition<'a>(status: &'a RollbackStatus, type_: &str) -> (&'a str, &'a str) {
    conditions::find(&status.conditions, type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
        .unwrap_or_default()
}

#[test]
fn a_namespace_that_does_not_authorize_the_rollback_refuses_it_before_anything() {
    for spec in [four_regions(1), armed_spec()] {
        let mut case = Case::new(spec, read(vec![graphql("3.242.1")]));
        let region = case.spec.waves[0].region.clone();
        case.set_region(
            &region,
            RegionView::NotAuthorized("namespace na does not authorize".to_owned()),
        );
        let decision = case.step();
        assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
        assert_eq!(reasons(&decision), vec![NOT_AUTHORIZED]);
        assert!(decision.restores.is_empty() && decision.marks.is_empty());
        assert!(case.status.waves.is_empty() && case.status.armed_at.is_none());
        assert_eq!(condition(&case.status, "Ready"), ("False", NOT_AUTHORIZED));
        assert_eq!(condition(&case.status, "Stalled"), ("True", NOT_AUTHORIZED));
        // The reason stays, and nothing more happens.
        let again = case.step();
        assert!(again.notes.is_empty() && again.status == case.status);
    }
}

#[test]
fn an_authorization_revoked_mid_rollback_fails_the_next_wave_untouched() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    case.step();
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.later(5);
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Baking);
    // Revoked during the first region's bake: the second never starts.
    case.set_region(
        "prodFE",
        RegionView::NotAuthorized("namespace fe does not authorize".to_owned()),
    );
    case.later(15 * 60);
    let decision = case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Succeeded);
    assert!(decision.restores.is_empty());
    assert_eq!(case.status.phase, Some(RollbackPhase::Failed));
    let failed = case.wave("prodFE");
    assert_eq!(failed.phase, WavePhase::Failed);
    assert!(failed.workloads.is_empty());
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("does not authorize"))
    );
    assert_eq!(case.wave("prodEU").phase, WavePhase::Pending);
}

#[test]
fn a_missing_kubeconfig_stalls_with_one_warning_until_it_is_fixed() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.set_region(
        "prodEU",
        RegionView::Misconfigured {
            reason: "KubeconfigNotFound",
            message: "kubeconfig Secret team/eu not found".to_owned(),
        },
    );
    let first = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Pending));
    assert_eq!(reasons(&first), vec!["KubeconfigNotFound"]);
    assert_eq!(
        condition(&case.status, "Stalled"),
        ("True", "KubeconfigNotFound")
    );
    assert_eq!(
        condition(&case.status, "Ready"),
        ("False", "KubeconfigNotFound")
    );
    assert_eq!(condition(&case.status, "Reconciling").0, "False");
    assert!(first.requeue_after.is_some());
    // Still missing: no second warning.
    case.later(5);
    assert!(case.step().notes.is_empty());
    // Fixed: it starts.
    case.set_region("prodEU", read(vec![graphql("3.242.1")]));
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    assert_eq!(condition(&case.status, "Stalled").0, "False");
}

#[test]
fn wave_times_keep_sub_seconds_through_the_api_and_a_bake_never_ends_early() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    // Status goes through the API server between decisions, as JSON.
    let through_api = |case: &mut Case| {
        let json = serde_json::to_value(&case.status).expect("status serialises");
        case.status = serde_json::from_value(json).expect("status reads back");
    };
    case.now += SignedDuration::from_millis(700);
    case.step();
    through_api(&mut case);
    case.step();
    through_api(&mut case);
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    case.later(10);
    case.step();
    through_api(&mut case);
    let wave = case.wave("prodNA");
    let rolled_out = wave.rolled_out_at.clone().expect("rolled out").0;
    let started = wave.started_at.clone().expect("started").0;
    assert_eq!(
        rolled_out.duration_since(started),
        SignedDuration::from_secs(10)
    );
    assert_eq!(rolled_out.subsec_millisecond(), 700);

    // The 15m bake began at 10.7 s: at 910.5 s it still bakes.
    case.now = t(910) + SignedDuration::from_millis(500);
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Baking);
    case.now = t(910) + SignedDuration::from_millis(700);
    case.step();
    assert_eq!(case.wave("prodNA").phase, WavePhase::Succeeded);
}

#[test]
fn composed_rollback_messages_repeat_no_word() {
    use crate::controllers::doubled_word;
    let mut decisions = Vec::new();
    // Sequential waves: a success, then a region that never rolls out.
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    decisions.push(case.step());
    decisions.push(case.step());
    case.set_region("prodNA", read(vec![graphql("3.240.0")]));
    decisions.push(case.step());
    case.later(900);
    decisions.push(case.step());
    decisions.push(case.step());
    let mut stuck = graphql("3.240.0");
    stuck.rollout = Rollout::InProgress("0 of 2 replicas available".to_owned());
    case.set_region("prodFE", read(vec![stuck]));
    case.later(601);
    decisions.push(case.step());
    // An armed rollback fired by an alarm, failed by it during the bake.
    let mut armed = Case::new(armed_spec(), read(vec![graphql("3.242.1")]));
    decisions.push(armed.step());
    armed.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(0))];
    decisions.push(armed.step());
    decisions.push(armed.step());
    armed.set_region("prodNA", read(vec![graphql("3.240.0")]));
    decisions.push(armed.step());
    armed.later(120);
    decisions.push(armed.step());
    let messages = decisions.iter().flat_map(|d| {
        d.notes
            .iter()
            .map(|n| n.message.clone())
            .chain(d.status.conditions.iter().map(|c| c.message.clone()))
            .chain(d.status.waves.iter().filter_map(|w| w.message.clone()))
            .collect::<Vec<_>>()
    });
    let mut seen = 0;
    for message in messages {
        seen += 1;
        assert_eq!(doubled_word(&message), None, "{message}");
    }
    assert!(seen > 10, "only {seen} messages composed");
}
