use super::*;

use crate::api::merge_train_pause::MergeTrainPauseSpec;

fn at(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 instant")
}

fn spec(extra: serde_json::Value) -> MergeTrainPauseSpec {
    let mut json = serde_json::json!({"train": "graphql-main", "reason": "Sev2 in prodNA"});
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(json).expect("a valid spec")
}

struct Case {
    spec: MergeTrainPauseSpec,
    status: MergeTrainPauseStatus,
    deleting: bool,
    alarms: Vec<ClearReading>,
    now: Timestamp,
}

impl Case {
    fn new(spec: MergeTrainPauseSpec) -> Self {
        Case {
            spec,
            status: MergeTrainPauseStatus::default(),
            deleting: false,
            alarms: Vec::new(),
            now: at("2026-11-22T10:00:00Z"),
        }
    }

    fn world(&self) -> World<'_> {
        World {
            spec: &self.spec,
            status: &self.status,
            generation: 1,
            created: Some(at("2026-11-22T09:00:00Z")),
            deleting: self.deleting,
            alarms: &self.alarms,
            missing: &[],
            now: self.now,
        }
    }

    /// Carries out the plan with a provider that answers `outcome`, as the
    /// shell does; returns the operation called, if any.
    fn step(&mut self, outcome: Result<Report, String>) -> Option<Operation> {
        match decide(&self.world()) {
            Plan::Call(operation) => {
                self.status = record(&self.world(), operation, outcome).status;
                Some(operation)
            }
            Plan::Settle(decision) => {
                self.status = decision.status.clone();
                None
            }
            Plan::Release => None,
        }
    }
}

fn ok(active: Option<bool>) -> Result<Report, String> {
    Ok(Report {
        active,
        restore: Some(RestoreState { active: true }),
        message: "done".to_owned(),
    })
}

#[test]
fn a_pause_records_what_to_restore_before_it_pauses() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    assert_eq!(case.step(ok(Some(true))), Some(Operation::Prepare));
    assert_eq!(case.status.phase, Some(PausePhase::Pausing));
    assert_eq!(case.status.restore, Some(RestoreState { active: true }));
    assert_eq!(case.step(ok(Some(false))), Some(Operation::Pause));
    assert_eq!(case.status.phase, Some(PausePhase::Paused));
    assert_eq!(
        case.status.expires_at,
        Some(Time(at("2026-11-22T13:00:00Z")))
    );

    // Settled: nothing to call, nothing changes, wake at the expiry.
    let Plan::Settle(decision) = decide(&case.world()) else {
        panic!("a paused pause settles")
    };
    assert_eq!(decision.status, case.status);
    assert!(decision.notes.is_empty());
    assert_eq!(decision.requeue_after, RESYNC);
    case.now = at("2026-11-22T12:58:00Z");
    let Plan::Settle(decision) = decide(&case.world()) else {
        panic!("still paused")
    };
    assert_eq!(decision.requeue_after, Duration::from_secs(120));

    // Expired: resumed once.
    case.now = at("2026-11-22T13:00:00Z");
    assert_eq!(case.step(ok(Some(true))), Some(Operation::Resume));
    assert_eq!(case.status.phase, Some(PausePhase::Resumed));
    assert_eq!(case.step(ok(Some(true))), None, "resumed is final");
}

#[test]
fn failures_back_off_show_in_status_and_turn_failed() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(ok(Some(true)));
    let plan = decide(&case.world());
    assert_eq!(plan, Plan::Call(Operation::Pause));
    let decision = record(
        &case.world(),
        Operation::Pause,
        Err("GitLab answered 503".to_owned()),
    );
    assert_eq!(decision.status.failures, 1);
    assert_eq!(decision.status.phase, Some(PausePhase::Pausing));
    assert_eq!(decision.requeue_after, FIRST_BACKOFF);
    assert!(
        decision
            .notes
            .iter()
            .any(|n| n.warning && n.reason == "ProviderFailed")
    );
    assert!(conditions::is_true(
        &decision.status.conditions,
        conditions::DEGRADED
    ));
    case.status = decision.status;

    // Woken early: wait for the backoff, do not call.
    assert!(matches!(decide(&case.world()), Plan::Settle(_)));
    for failures in 2..=FAILED_AFTER {
        case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
        assert_eq!(
            case.step(Err("still 503".to_owned())),
            Some(Operation::Pause)
        );
        assert_eq!(case.status.failures, failures);
    }
    assert_eq!(case.status.phase, Some(PausePhase::Failed));
    assert_eq!(backoff(2), FIRST_BACKOFF * 2);
    assert_eq!(backoff(40), MAX_BACKOFF);

    // A success clears the failures.
    case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    assert_eq!(case.step(ok(Some(false))), Some(Operation::Pause));
    assert_eq!(case.status.phase, Some(PausePhase::Paused));
    assert_eq!(case.status.failures, 0);
    assert!(!conditions::is_true(
        &case.status.conditions,
        conditions::DEGRADED
    ));
}

#[test]
fn deleting_resumes_once_then_releases() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(ok(Some(true)));
    case.step(ok(Some(false)));
    case.deleting = true;
    let plan = decide(&case.world());
    assert_eq!(plan, Plan::Call(Operation::Resume));
    let decision = record(&case.world(), Operation::Resume, ok(Some(true)));
    assert!(decision.release);
    case.status = decision.status;
    assert_eq!(decide(&case.world()), Plan::Release, "no second resume");

    // A pause deleted before it touched anything just lets go.
    let mut fresh = Case::new(spec(serde_json::json!({"duration": "4h"})));
    fresh.deleting = true;
    assert_eq!(decide(&fresh.world()), Plan::Release);
}

#[test]
fn a_pause_in_progress_is_resumed_on_delete_even_after_failures() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(ok(Some(true)));
    case.step(Err("503".to_owned()));
    case.deleting = true;
    case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    assert_eq!(decide(&case.world()), Plan::Call(Operation::Resume));
}

#[test]
fn resume_when_waits_for_every_alarm_to_be_ok_long_enough() {
    let mut case = Case::new(spec(serde_json::json!({
        "resumeWhen": {"alarms": {"names": ["api-errors", "latency"]}, "clearFor": "30m"}
    })));
    case.alarms = vec![
        ClearReading {
            name: "api-errors".to_owned(),
            state: Some(AlarmState::Alarm),
            since: Some(at("2026-11-22T09:30:00Z")),
        },
        ClearReading {
            name: "latency".to_owned(),
            state: Some(AlarmState::Ok),
            since: Some(at("2026-11-22T08:00:00Z")),
        },
    ];
    case.step(ok(Some(true)));
    case.step(ok(Some(false)));
    assert_eq!(case.status.phase, Some(PausePhase::Paused));
    assert!(matches!(decide(&case.world()), Plan::Settle(_)));

    // api-errors clears at 10:00; the pause holds until 10:30.
    case.alarms[0].state = Some(AlarmState::Ok);
    case.alarms[0].since = Some(at("2026-11-22T10:00:00Z"));
    let Plan::Settle(decision) = decide(&case.world()) else {
        panic!("not yet")
    };
    assert_eq!(
        decision.requeue_after,
        RESYNC.min(Duration::from_secs(1800))
    );
    case.now = at("2026-11-22T10:30:00Z");
    assert_eq!(decide(&case.world()), Plan::Call(Operation::Resume));

    // An alarm without data never counts as clear.
    case.alarms[1].state = Some(AlarmState::InsufficientData);
    assert!(matches!(decide(&case.world()), Plan::Settle(_)));
}

#[test]
fn a_fractional_duration_expires_on_a_whole_second_so_status_reads_back_equal() {
    let case = Case::new(spec(serde_json::json!({"duration": "1.5s"})));
    assert_eq!(expires_at(&case.world()), Some(at("2026-11-22T09:00:02Z")));
}

#[test]
fn a_pause_already_over_when_created_never_pauses() {
    let mut case = Case::new(spec(
        serde_json::json!({"expiresAt": "2026-11-22T08:00:00Z"}),
    ));
    assert_eq!(case.step(ok(None)), None);
    assert_eq!(case.status.phase, Some(PausePhase::Resumed));
}

fn unauthorized() -> Result<Report, String> {
    Err("GitLab answered 401 to reading pipeline schedule 7: the token was rejected".to_owned())
}

#[test]
fn a_pause_that_never_recorded_what_to_restore_lets_go_at_once_when_deleted() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    assert_eq!(case.step(unauthorized()), Some(Operation::Prepare));
    assert_eq!(case.status.phase, Some(PausePhase::Pausing));
    assert_eq!(case.status.prepared_at, None);

    // Deleted during the backoff, and after failing for good: no resume to
    // wait for, whatever the provider says.
    case.deleting = true;
    assert_eq!(decide(&case.world()), Plan::Release);
    case.deleting = false;
    for _ in 1..FAILED_AFTER {
        case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
        assert_eq!(case.step(unauthorized()), Some(Operation::Prepare));
    }
    assert_eq!(case.status.phase, Some(PausePhase::Failed));
    case.deleting = true;
    case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    assert_eq!(decide(&case.world()), Plan::Release);
}

#[test]
fn a_failed_prepare_is_read_again_before_anything_is_paused() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(Err("GitLab answered 503".to_owned()));
    case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    // Pausing now would leave no state to restore on resume.
    assert_eq!(case.step(ok(Some(true))), Some(Operation::Prepare));
    assert_eq!(case.status.restore, Some(RestoreState { active: true }));
    assert_eq!(case.step(ok(Some(false))), Some(Operation::Pause));
    assert_eq!(case.status.phase, Some(PausePhase::Paused));
}

#[test]
fn a_pause_that_expires_before_it_could_read_anything_ends_without_a_call() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(unauthorized());
    case.now = at("2026-11-22T13:00:00Z");
    let Plan::Settle(decision) = decide(&case.world()) else {
        panic!("nothing to resume")
    };
    assert_eq!(decision.status.phase, Some(PausePhase::Resumed));
    assert_eq!(decision.status.failures, 0);
    assert!(
        decision.notes[0].message.contains("was never paused"),
        "{:?}",
        decision.notes
    );
}

#[test]
fn a_paused_train_whose_resume_fails_keeps_the_finalizer_and_says_why() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.step(ok(Some(true)));
    case.step(ok(Some(false)));
    assert!(case.status.prepared_at.is_some());
    case.deleting = true;
    assert_eq!(decide(&case.world()), Plan::Call(Operation::Resume));
    let decision = record(&case.world(), Operation::Resume, unauthorized());
    assert!(!decision.release);
    let note = &decision.notes[0];
    assert!(note.warning);
    assert_eq!(note.reason, "ResumeBlocked");
    for fragment in ["401", "weblab.dev/resume-train", "graphql-main"] {
        assert!(
            note.message.contains(fragment),
            "{fragment}: {}",
            note.message
        );
    }
    let ready = conditions::find(&decision.status.conditions, conditions::READY).expect("Ready");
    assert_eq!(ready.reason, "ResumeBlocked");
    assert!(ready.message.contains("401"), "{}", ready.message);
    assert!(
        ready.message.contains("weblab.dev/resume-train"),
        "{}",
        ready.message
    );
    case.status = decision.status;
    case.now = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    assert_eq!(decide(&case.world()), Plan::Call(Operation::Resume));
}

#[test]
fn pause_times_keep_sub_seconds_and_a_retry_never_comes_early() {
    let mut case = Case::new(spec(serde_json::json!({"duration": "4h"})));
    case.now = at("2026-11-22T10:00:00.300Z");
    case.step(Err("GitLab answered 503".to_owned()));
    // Read back as the API server stores it.
    let json = serde_json::to_value(&case.status).expect("status serialises");
    case.status = serde_json::from_value(json).expect("status reads back");
    let retry_at = case.status.next_attempt_at.as_ref().expect("scheduled").0;
    assert_eq!(retry_at, at("2026-11-22T10:00:02.300Z"));
    case.now = at("2026-11-22T10:00:02.100Z");
    assert!(matches!(decide(&case.world()), Plan::Settle(_)));

    case.now = retry_at;
    case.step(ok(Some(true)));
    case.now = at("2026-11-22T10:00:02.750Z");
    case.step(ok(Some(false)));
    let json = serde_json::to_value(&case.status).expect("status serialises");
    case.status = serde_json::from_value(json).expect("status reads back");
    let paused_at = case.status.paused_at.as_ref().expect("paused").0;
    assert_eq!(paused_at, at("2026-11-22T10:00:02.750Z"));
}

#[test]
fn composed_pause_messages_repeat_no_word() {
    use crate::controllers::doubled_word;
    let mut case = Case::new(spec(serde_json::json!({
        "duration": "4h",
        "resumeWhen": {"alarms": {"names": ["api-errors"]}, "clearFor": "30m"}
    })));
    case.alarms = vec![ClearReading {
        name: "api-errors".to_owned(),
        state: Some(AlarmState::Alarm),
        since: Some(at("2026-11-22T09:30:00Z")),
    }];
    let mut decisions = Vec::new();
    for (operation, outcome) in [
        (Operation::Prepare, unauthorized()),
        (Operation::Prepare, ok(Some(true))),
        (Operation::Pause, Err("GitLab answered 503".to_owned())),
        (Operation::Pause, ok(Some(false))),
    ] {
        let decision = record(&case.world(), operation, outcome);
        case.status = decision.status.clone();
        decisions.push(decision);
    }
    case.deleting = true;
    decisions.push(record(&case.world(), Operation::Resume, unauthorized()));
    decisions.push(record(&case.world(), Operation::Resume, ok(Some(true))));
    let messages = decisions.iter().flat_map(|d| {
        d.notes
            .iter()
            .map(|n| n.message.clone())
            .chain(d.status.conditions.iter().map(|c| c.message.clone()))
            .collect::<Vec<_>>()
    });
    for message in messages {
        assert_eq!(doubled_word(&message), None, "{message}");
    }
}
