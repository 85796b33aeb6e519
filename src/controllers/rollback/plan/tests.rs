use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::rollback::{RevisionTarget, RollbackSpec};

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("a valid timestamp")
}

fn revision(number: i64, tag: &str, deployed_at: Timestamp, stable: bool) -> Revision {
    Revision {
        number,
        hash: format!("h{tag}"),
        images: vec![format!("registry.example/graphql:{tag}")],
        deployed_at,
        stable_since: stable.then_some(deployed_at),
        rolled_out_at: None,
    }
}

/// 3.240.0 stable, 3.241.0 never confirmed, 3.242.1 current (bad).
fn graphql(current_tag: &str) -> Workload {
    Workload {
        kind: WorkloadKind::Deployment,
        name: "graphql-api".to_owned(),
        revisions: vec![
            revision(1, "3.240.0", t(-3 * 86_400), true),
            revision(2, "3.241.0", t(-30 * 3600), false),
            revision(3, "3.242.1", t(-3600), false),
        ],
        current: Some(format!("h{current_tag}")),
        rollout: Rollout::Complete(Some(t(-3000))),
    }
}

fn spec(yaml: &str) -> RollbackSpec {
    serde_saphyr::from_str(yaml).expect("a valid spec")
}

fn four_regions(max: u32) -> RollbackSpec {
    spec(&format!(
        "targets: [{{kind: Deployment, name: graphql-api}}]
waves:
  - {{region: prodNA, namespace: na}}
  - {{region: prodFE, namespace: fe}}
  - {{region: prodEU, namespace: eu}}
  - {{region: prodZAZ, namespace: zaz}}
maxConcurrentRegions: {max}
target: {{type: PreviousStable}}
verification: {{rolloutDeadline: 10m, bake: 15m, alarms: {{names: [errors]}}}}
"
    ))
}

fn target(yaml: &str) -> RevisionTarget {
    serde_saphyr::from_str(yaml).expect("a valid target")
}

fn read(workloads: Vec<Workload>) -> RegionView {
    RegionView::Read {
        workloads,
        not_found: Vec::new(),
    }
}

fn all_regions(spec: &RollbackSpec, view: &RegionView) -> BTreeMap<String, RegionView> {
    spec.waves
        .iter()
        .map(|w| (w.region.clone(), view.clone()))
        .collect()
}

fn alarm(state: AlarmState, severity: Severity, since: Timestamp) -> AlarmReading {
    AlarmReading {
        name: "errors".to_owned(),
        state,
        severity,
        since: Some(since),
    }
}

struct Case {
    spec: RollbackSpec,
    status: RollbackStatus,
    regions: BTreeMap<String, RegionView>,
    alarms: Vec<AlarmReading>,
    request: Option<String>,
    now: Timestamp,
}

impl Case {
    fn new(spec: RollbackSpec, view: RegionView) -> Self {
        let regions = all_regions(&spec, &view);
        Case {
            spec,
            status: RollbackStatus::default(),
            regions,
            alarms: Vec::new(),
            request: None,
            now: t(0),
        }
    }

    fn decide(&self) -> Decision {
        decide(&World {
            spec: &self.spec,
            generation: 1,
            status: &self.status,
            trigger_alarms: &self.alarms,
            verification_alarms: &self.alarms,
            missing: &[],
            regions: &self.regions,
            request: self.request.as_deref(),
            now: self.now,
        })
    }

    /// Decides, and takes the decision's status as the written one.
    fn step(&mut self) -> Decision {
        let decision = self.decide();
        self.status = decision.status.clone();
        self.request = None;
        decision
    }

    fn set_region(&mut self, region: &str, view: RegionView) {
        self.regions.insert(region.to_owned(), view);
    }

    fn later(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    fn wave(&self, region: &str) -> &WaveStatus {
        self.status
            .waves
            .iter()
            .find(|w| w.region == region)
            .expect("the wave exists")
    }
}

fn reasons(decision: &Decision) -> Vec<&'static str> {
    decision.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn previous_stable_skips_revisions_never_confirmed() {
    let workload = graphql("3.242.1");
    let choice = choose(&target("type: PreviousStable"), &workload, t(0));
    let Ok(Choice::Restore(to)) = choice else {
        panic!("expected a restore, got {choice:?}");
    };
    assert_eq!((to.number, to.hash.as_str()), (1, "h3.240.0"));
}

#[test]
fn previous_stable_is_refused_when_the_stable_revision_was_pruned() {
    let mut workload = graphql("3.242.1");
    workload.revisions.remove(0);
    let why = choose(&target("type: PreviousStable"), &workload, t(0)).expect_err("refused");
    assert!(why.contains("no stable revision"), "{why}");
    assert!(why.contains("revisions kept: 2, 3"), "{why}");
}

#[test]
fn a_named_revision_that_was_pruned_is_refused() {
    let workload = graphql("3.242.1");
    let why = choose(&target("{type: Revision, revision: 7}"), &workload, t(0)).expect_err("gone");
    assert!(why.contains("revision 7 is not kept"), "{why}");
    let choice = choose(&target("{type: Revision, revision: 2}"), &workload, t(0));
    assert!(matches!(choice, Ok(Choice::Restore(r)) if r.number == 2));
}

#[test]
fn image_tag_picks_the_revision_running_it() {
    let workload = graphql("3.242.1");
    let choice = choose(
        &target("{type: ImageTag, imageTag: 3.241.0}"),
        &workload,
        t(0),
    );
    assert!(matches!(choice, Ok(Choice::Restore(r)) if r.number == 2));
    let choice = choose(
        &target("{type: ImageTag, imageTag: 3.242.1}"),
        &workload,
        t(0),
    );
    assert!(matches!(choice, Ok(Choice::AlreadyThere(r)) if r.number == 3));
    // A prefix of a tag is not the tag.
    let choice = choose(
        &target("{type: ImageTag, imageTag: '3.24'}"),
        &workload,
        t(0),
    );
    assert!(choice.is_err());
}

#[test]
fn undo_since_takes_the_newest_revision_older_than_the_window() {
    let workload = graphql("3.242.1");
    let choice = choose(&target("{type: UndoSince, since: 24h}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::Restore(r)) if r.number == 2),
        "{choice:?}"
    );
    let choice = choose(&target("{type: UndoSince, since: 48h}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::Restore(r)) if r.number == 1),
        "{choice:?}"
    );
    // Nothing changed in the last 30 minutes: already there.
    let choice = choose(&target("{type: UndoSince, since: 30m}"), &workload, t(0));
    assert!(
        matches!(choice, Ok(Choice::AlreadyThere(r)) if r.number == 3),
        "{choice:?}"
    );
    let why = choose(&target("{type: UndoSince, since: 100h}"), &workload, t(0))
        .expect_err("every revision is newer");
    assert!(why.contains("pruned"), "{why}");
}

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

fn armed_spec() -> RollbackSpec {
    spec(
        "targets: [{kind: Deployment, name: graphql-api}]
waves: [{region: prodNA, namespace: na}]
target: {type: PreviousStable}
trigger: {type: Alarm, alarms: {names: [errors]}, severities: [Sev2]}
verification: {bake: 1m, alarms: {names: [errors]}, severities: [Sev2]}
stableAfter: 30m
",
    )
}

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
