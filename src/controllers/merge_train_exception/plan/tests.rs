use super::*;

use crate::api::merge_train_exception::{MergeCandidate, MergeRequestRef};

fn at(text: &str) -> Timestamp {
    text.parse().expect("an instant")
}

fn spec(end: serde_json::Value) -> MergeTrainExceptionSpec {
    let mut value = serde_json::json!({
        "train": "web-main",
        "mergeRequest": {"project": "web/app", "iid": 42},
        "reason": "the fix for SEV2-7781",
        "approvedBy": "oncall@example.com",
    });
    if let (Some(object), Some(end)) = (value.as_object_mut(), end.as_object()) {
        object.extend(end.clone());
    }
    serde_json::from_value(value).expect("a valid spec")
}

const CREATED: &str = "2026-12-03T08:00:00Z";

/// One exception's life, reconciled step by step with its status carried
/// over as the API server would store it.
struct Scenario {
    spec: MergeTrainExceptionSpec,
    status: MergeTrainExceptionStatus,
    train_known: bool,
    recorded_at: Option<Timestamp>,
}

impl Scenario {
    fn new(end: serde_json::Value) -> Self {
        Scenario {
            spec: spec(end),
            status: MergeTrainExceptionStatus::default(),
            train_known: true,
            recorded_at: None,
        }
    }

    /// Decides at `now` with `pending` uses; keeps the status as written
    /// (read back through JSON) and the record time when uses were taken.
    fn step(&mut self, now: &str, pending: Option<&PendingUses>) -> Decision {
        let now = at(now);
        let decision = decide(&World {
            spec: &self.spec,
            status: &self.status,
            generation: Some(1),
            created: Some(at(CREATED)),
            train_known: self.train_known,
            pending,
            recorded_at: self.recorded_at,
            now,
        });
        if decision.status != self.status {
            let stored = serde_json::to_value(&decision.status).expect("serializes");
            self.status = serde_json::from_value(stored).expect("reads back");
            if decision.recorded.is_some() {
                self.recorded_at = Some(now);
            }
        }
        decision
    }
}

fn uses(count: u64, first: &str, last: &str) -> PendingUses {
    PendingUses {
        uid: "u1".to_owned(),
        count,
        first: at(first),
        last: at(last),
        held_by: "MergeTrainPause sev2-freeze".to_owned(),
    }
}

fn reasons(decision: &Decision) -> Vec<&'static str> {
    decision.notes.iter().map(|note| note.reason).collect()
}

#[test]
fn an_exception_is_active_until_its_expiry_then_expires_by_itself_with_one_event() {
    let mut life = Scenario::new(serde_json::json!({"duration": "4h"}));
    let first = life.step("2026-12-03T08:00:01Z", None);
    assert_eq!(first.status.phase, Some(ExceptionPhase::Active));
    assert_eq!(
        first.status.expires_at.as_ref().map(|t| t.0),
        Some(at("2026-12-03T12:00:00Z"))
    );
    assert_eq!(reasons(&first), ["ExceptionActive"]);
    assert!(
        first.notes[0]
            .message
            .contains("approved by oncall@example.com")
    );
    // Woken just after the expiry (a settled exception also every 5 min).
    assert_eq!(first.requeue_after, Some(RESYNC));
    let near = life.step("2026-12-03T11:59:00Z", None);
    assert_eq!(
        near.requeue_after,
        Some(Duration::from_secs(60) + AFTER_EXPIRY)
    );
    assert!(near.notes.is_empty(), "settled: nothing to say");
    assert_eq!(near.status, life.status, "settled: nothing to write");

    let expired = life.step("2026-12-03T12:00:00Z", None);
    assert_eq!(expired.status.phase, Some(ExceptionPhase::Expired));
    assert_eq!(reasons(&expired), ["ExceptionExpired"]);
    assert_eq!(
        expired.requeue_after, None,
        "nothing more happens by the clock"
    );
    let again = life.step("2026-12-03T12:05:00Z", None);
    assert!(again.notes.is_empty());
    assert_eq!(again.status, life.status);
}

#[test]
fn the_gate_and_the_controller_agree_on_the_instant_of_expiry() {
    let spec = spec(serde_json::json!({"duration": "90m"}));
    let created = Some(at(CREATED));
    assert!(spec.is_live(created, at("2026-12-03T09:29:59.999Z")));
    assert!(!spec.is_live(created, at("2026-12-03T09:30:00Z")));
    // A fraction of a second in the duration rounds the expiry up.
    let spec = self::spec(serde_json::json!({"duration": "1.5s"}));
    assert_eq!(spec.expiry(created), Ok(at("2026-12-03T08:00:02Z")));
}

#[test]
fn an_expiry_more_than_seven_days_after_creation_never_works() {
    let mut life = Scenario::new(serde_json::json!({"expiresAt": "2026-12-10T08:00:01Z"}));
    let decision = life.step("2026-12-03T08:00:01Z", None);
    assert_eq!(decision.status.phase, Some(ExceptionPhase::Invalid));
    assert_eq!(decision.status.expires_at, None);
    assert_eq!(reasons(&decision), ["InvalidSpec"]);
    assert!(decision.notes[0].warning);
    assert!(decision.notes[0].message.contains("more than 7 days"));
    assert!(
        !life
            .spec
            .is_live(Some(at(CREATED)), at("2026-12-03T09:00:00Z"))
    );

    // Exactly seven days is allowed.
    let spec = spec(serde_json::json!({"expiresAt": "2026-12-10T08:00:00Z"}));
    assert!(spec.is_live(Some(at(CREATED)), at("2026-12-10T07:59:59Z")));
}

#[test]
fn the_first_use_is_recorded_at_once_with_one_event_and_later_ones_in_batches() {
    let mut life = Scenario::new(serde_json::json!({"duration": "4h"}));
    life.step("2026-12-03T08:00:01Z", None);

    let first = uses(2, "2026-12-03T09:00:00.250Z", "2026-12-03T09:00:03Z");
    let decision = life.step("2026-12-03T09:00:04Z", Some(&first));
    assert_eq!(decision.recorded.as_ref(), Some(&first));
    assert_eq!(decision.status.uses, 2);
    assert_eq!(
        decision.status.first_used.as_ref().map(|t| t.0),
        Some(at("2026-12-03T09:00:00Z")),
        "whole seconds, as the API server keeps them"
    );
    assert_eq!(reasons(&decision), ["ExceptionUsed"]);
    assert!(
        decision.notes[0]
            .message
            .contains("held by MergeTrainPause sev2-freeze")
    );

    // A use 10 s later waits for the batch: no write, woken when it is due.
    let second = uses(1, "2026-12-03T09:00:14Z", "2026-12-03T09:00:14Z");
    let waiting = life.step("2026-12-03T09:00:14Z", Some(&second));
    assert_eq!(waiting.recorded, None);
    assert_eq!(waiting.status, life.status, "nothing written yet");
    assert_eq!(waiting.requeue_after, Some(Duration::from_secs(20)));

    let more = uses(3, "2026-12-03T09:00:14Z", "2026-12-03T09:00:30Z");
    let batch = life.step("2026-12-03T09:00:34Z", Some(&more));
    assert_eq!(batch.recorded.as_ref(), Some(&more));
    assert_eq!(batch.status.uses, 5);
    assert_eq!(
        batch.status.first_used.as_ref().map(|t| t.0),
        Some(at("2026-12-03T09:00:00Z"))
    );
    assert_eq!(
        batch.status.last_used.as_ref().map(|t| t.0),
        Some(at("2026-12-03T09:00:30Z"))
    );
    assert!(batch.notes.is_empty(), "one event at the first use only");
}

#[test]
fn pending_uses_ride_on_the_expiry_write_whatever_the_batch_says() {
    let mut life = Scenario::new(serde_json::json!({"duration": "1h"}));
    life.step("2026-12-03T08:00:01Z", None);
    life.step(
        "2026-12-03T08:59:50Z",
        Some(&uses(1, "2026-12-03T08:59:50Z", "2026-12-03T08:59:50Z")),
    );
    let late = uses(1, "2026-12-03T08:59:59Z", "2026-12-03T08:59:59Z");
    let expired = life.step("2026-12-03T09:00:00Z", Some(&late));
    assert_eq!(expired.status.phase, Some(ExceptionPhase::Expired));
    assert_eq!(expired.recorded.as_ref(), Some(&late));
    assert_eq!(expired.status.uses, 2);
    assert_eq!(reasons(&expired), ["ExceptionExpired"]);
    assert!(expired.notes[0].message.contains("after 2 uses"));
}

#[test]
fn after_a_failover_pending_uses_are_recorded_at_once() {
    let mut life = Scenario::new(serde_json::json!({"duration": "4h"}));
    life.step("2026-12-03T08:00:01Z", None);
    life.step(
        "2026-12-03T08:10:00Z",
        Some(&uses(1, "2026-12-03T08:10:00Z", "2026-12-03T08:10:00Z")),
    );
    // A new leader has no record time of its own.
    life.recorded_at = None;
    let pending = uses(4, "2026-12-03T08:10:05Z", "2026-12-03T08:10:09Z");
    let decision = life.step("2026-12-03T08:10:10Z", Some(&pending));
    assert_eq!(decision.status.uses, 5);
    assert!(decision.notes.is_empty());
}

#[test]
fn a_train_nobody_names_is_a_condition_and_one_warning_not_an_error() {
    let mut life = Scenario::new(serde_json::json!({"duration": "4h"}));
    life.train_known = false;
    let reason = |decision: &Decision| {
        conditions::find(&decision.status.conditions, TRAIN_KNOWN)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    // Applied together with its pause: no warning while it is young.
    let decision = life.step("2026-12-03T08:00:01Z", None);
    assert_eq!(decision.status.phase, Some(ExceptionPhase::Active));
    assert_eq!(reasons(&decision), ["ExceptionActive"]);
    assert_eq!(
        reason(&decision),
        Some(("False".into(), "NotYetKnown".into()))
    );
    assert_eq!(decision.requeue_after, Some(UNKNOWN_TRAIN_RECHECK));

    let decision = life.step("2026-12-03T08:00:30Z", None);
    assert_eq!(reasons(&decision), ["UnknownTrain"]);
    assert!(decision.notes[0].warning);
    assert_eq!(
        reason(&decision),
        Some(("False".into(), "UnknownTrain".into()))
    );
    assert!(
        life.step("2026-12-03T08:05:00Z", None).notes.is_empty(),
        "said once"
    );

    life.train_known = true;
    let known = life.step("2026-12-03T08:10:00Z", None);
    assert!(conditions::is_true(&known.status.conditions, TRAIN_KNOWN));
    assert!(known.notes.is_empty());
    assert_eq!(known.requeue_after, Some(RESYNC));
}

#[test]
fn a_train_held_soon_after_the_exception_never_warns() {
    let mut life = Scenario::new(serde_json::json!({"duration": "4h"}));
    life.train_known = false;
    life.step("2026-12-03T08:00:01Z", None);
    life.train_known = true;
    let decision = life.step("2026-12-03T08:00:11Z", None);
    assert!(decision.notes.is_empty(), "{:?}", decision.notes);
    assert!(conditions::is_true(
        &decision.status.conditions,
        TRAIN_KNOWN
    ));
}

#[test]
fn exceptions_name_merge_requests_exactly_and_commits_without_regard_to_case() {
    let by_mr = spec(serde_json::json!({"duration": "1h"}));
    let candidate = |project: &str, iid: i64| MergeCandidate {
        merge_request: Some(MergeRequestRef {
            project: project.to_owned(),
            iid,
        }),
        sha: None,
    };
    assert!(by_mr.names(&candidate("web/app", 42)));
    assert!(!by_mr.names(&candidate("web/app", 43)));
    assert!(!by_mr.names(&candidate("web/other", 42)));
    assert!(!by_mr.names(&MergeCandidate::default()));

    let sha = "0123456789abcdef0123456789abcdef01234567";
    let mut by_sha = spec(serde_json::json!({"duration": "1h"}));
    by_sha.merge_request = None;
    by_sha.sha = Some(sha.to_uppercase());
    let asking = MergeCandidate {
        merge_request: Some(MergeRequestRef {
            project: "web/app".to_owned(),
            iid: 42,
        }),
        sha: Some(sha.to_owned()),
    };
    assert!(by_sha.names(&asking));
    assert!(!by_sha.names(&candidate("web/app", 42)));
    assert_eq!(by_sha.subject(), format!("commit {sha}"));
    assert_eq!(by_mr.subject(), "merge request web/app!42");
}
