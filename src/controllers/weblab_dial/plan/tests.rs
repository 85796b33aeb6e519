use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;

const T0: i64 = 1_800_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(T0 + seconds).expect("valid timestamp")
}

fn spec(yaml: &str) -> WeblabDialSpec {
    serde_saphyr::from_str(yaml).expect("a valid spec")
}

fn alloc(json: &str) -> Allocation {
    serde_json::from_str(json).expect("a valid allocation")
}

const PROGRESSIVE: &str = "
weblab: W
treatments: [C, T1]
realms: [NA, EU, FE]
allocation: {T1: 100}
steps:
  - allocation: {C: 95, T1: 5}
    bake: 10m
  - allocation: {C: 50, T1: 50}
    bake: 10m
    pause: true
waves:
  - realms: [NA]
  - realms: [EU, FE]
";

/// A scenario: a dial, the world around it, and the status carried from one
/// decision to the next, as the controller does through the API server.
struct Scenario {
    spec: WeblabDialSpec,
    generation: i64,
    status: WeblabDialStatus,
    alarms: Vec<AlarmReading>,
    missing: Vec<String>,
    window: WindowGate,
}

impl Scenario {
    fn new(yaml: &str) -> Self {
        Scenario {
            spec: spec(yaml),
            generation: 1,
            status: WeblabDialStatus::default(),
            alarms: Vec::new(),
            missing: Vec::new(),
            window: WindowGate::Open,
        }
    }

    fn decide_with(&mut self, seconds: i64, request: Option<&str>) -> Decision {
        self.decide_at(at(seconds), request)
    }

    fn decide_at(&mut self, now: Timestamp, request: Option<&str>) -> Decision {
        let world = World {
            spec: &self.spec,
            generation: self.generation,
            status: &self.status,
            alarms: &self.alarms,
            missing: &self.missing,
            window: self.window.clone(),
            request,
            now,
        };
        let decision = decide(&world);
        self.status = decision.status.clone();
        decision
    }

    fn decide(&mut self, seconds: i64) -> Decision {
        self.decide_with(seconds, None)
    }

    fn request(&mut self, seconds: i64, action: &str) -> Decision {
        let text = format!("{action} at {seconds}");
        self.decide_with(seconds, Some(&text))
    }

    /// The status as the controller reads it back from the API server.
    fn through_api(&mut self) {
        let json = serde_json::to_value(&self.status).expect("status serialises");
        self.status = serde_json::from_value(json).expect("status reads back");
    }

    fn served(&self, realm: &str) -> Option<Allocation> {
        self.status
            .realms
            .iter()
            .find(|entry| entry.realm == realm)
            .map(|entry| entry.allocation.clone())
    }

    fn phase(&self) -> Option<DialPhase> {
        self.status.phase
    }

    fn alarm(&mut self, name: &str, state: AlarmState, severity: Severity, realm: Option<&str>) {
        self.alarms.retain(|a| a.name != name);
        self.alarms.push(AlarmReading {
            name: name.to_owned(),
            state,
            severity,
            realm: realm.map(str::to_owned),
            realms: None,
            value: Some(0.12),
            threshold: Some(0.05),
        });
    }

    fn change_spec(&mut self, yaml: &str) {
        self.spec = spec(yaml);
        self.generation += 1;
    }
}

fn reasons(decision: &Decision) -> Vec<&'static str> {
    decision.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn without_steps_the_dial_goes_straight_to_the_target_then_settles() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA, EU], allocation: {C: 90, T1: 10}}",
    );
    let first = dial.decide(0);
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"C": 90, "T1": 10}"#)));
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 90, "T1": 10}"#)));
    assert_eq!(dial.status.history.len(), 2);
    assert!(
        dial.status
            .history
            .iter()
            .all(|c| c.reason == ChangeReason::Target && c.from.is_none())
    );
    // One write: the last stage without a bake is dialed at once.
    assert_eq!(dial.phase(), Some(DialPhase::Dialed));
    assert!(reasons(&first).contains(&"Dialed"), "{:?}", reasons(&first));
    assert!(conditions::is_true(
        &dial.status.conditions,
        conditions::READY
    ));
    assert_eq!(dial.status.summary.as_deref(), Some("C:90 T1:10"));

    // Settled: later decisions change nothing, so the controller writes nothing.
    let settled = dial.status.clone();
    let again = dial.decide(3600);
    assert_eq!(again.status, settled);
    assert!(again.notes.is_empty());
    assert_eq!(again.requeue_after, RESYNC);
}

#[test]
fn steps_bake_wave_by_wave_and_pause_for_a_person() {
    let mut dial = Scenario::new(PROGRESSIVE);
    let five = alloc(r#"{"C": 95, "T1": 5}"#);
    let half = alloc(r#"{"C": 50, "T1": 50}"#);

    let d = dial.decide(0);
    assert_eq!(dial.served("NA"), Some(five.clone()));
    assert_eq!(dial.served("EU"), None, "EU waits for NA's bake");
    assert_eq!(dial.phase(), Some(DialPhase::Baking));
    assert_eq!(d.requeue_after, Duration::from_secs(600));

    // Mid-bake nothing moves, and nothing is written.
    let before = dial.status.clone();
    let d = dial.decide(300);
    assert_eq!(d.status, before);
    assert_eq!(d.requeue_after, Duration::from_secs(300));

    dial.decide(600);
    assert_eq!(dial.served("EU"), Some(five.clone()));
    assert_eq!(dial.served("FE"), Some(five.clone()));
    dial.decide(1200);
    assert_eq!(dial.served("NA"), Some(half.clone()));
    assert_eq!(dial.served("EU"), Some(five.clone()));
    dial.decide(1800);
    assert_eq!(dial.served("EU"), Some(half.clone()));

    // The last wave of a pause step waits for a person after its bake.
    let d = dial.decide(2400);
    assert_eq!(dial.phase(), Some(DialPhase::Paused));
    assert!(reasons(&d).contains(&"Paused"));
    assert!(!conditions::is_true(
        &dial.status.conditions,
        conditions::READY
    ));
    dial.decide(9999);
    assert_eq!(
        dial.served("NA"),
        Some(half.clone()),
        "a pause step holds until resumed"
    );

    dial.request(10_000, "resume");
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"T1": 100}"#)));
    dial.decide(10_001);
    dial.decide(10_002);
    assert_eq!(dial.served("FE"), Some(alloc(r#"{"T1": 100}"#)));
    assert_eq!(dial.phase(), Some(DialPhase::Dialed));

    // Every step is in the history exactly once per realm.
    let na: Vec<String> = dial
        .status
        .history
        .iter()
        .filter(|c| c.realm == "NA")
        .map(|c| c.to.to_string())
        .collect();
    assert_eq!(na, ["C:95 T1:5", "C:50 T1:50", "T1:100"]);
}

#[test]
fn promote_skips_the_rest_of_the_bake() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    let d = dial.request(60, "promote");
    assert!(reasons(&d).contains(&"Promoted"));
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
    assert_eq!(
        dial.status.last_action.as_ref().map(|a| a.request.as_str()),
        Some("promote at 60")
    );
}

#[test]
fn pause_holds_moves_towards_risk_until_resumed() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    dial.request(60, "pause");
    assert_eq!(dial.phase(), Some(DialPhase::Paused));
    dial.decide(5000);
    assert_eq!(dial.served("EU"), None, "paused: EU does not get the step");
    dial.request(5001, "resume");
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
}

#[test]
fn abort_goes_to_the_rollback_allocation_and_stays_until_retried() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    let d = dial.request(60, "abort");
    assert!(d.notes.iter().any(|n| n.warning && n.reason == "Aborted"));
    let control = alloc(r#"{"C": 100}"#);
    for realm in ["NA", "EU", "FE"] {
        assert_eq!(dial.served(realm), Some(control.clone()));
    }
    assert_eq!(dial.phase(), Some(DialPhase::Aborted));
    assert!(conditions::is_true(
        &dial.status.conditions,
        conditions::STALLED
    ));
    dial.decide(100_000);
    assert_eq!(
        dial.served("NA"),
        Some(control.clone()),
        "aborted dials stay"
    );

    dial.request(100_001, "retry");
    assert_eq!(dial.status.rollback, None);
    assert_eq!(
        dial.served("NA"),
        Some(alloc(r#"{"C": 95, "T1": 5}"#)),
        "progression starts again from the first step"
    );
    assert_eq!(dial.phase(), Some(DialPhase::Baking));
}

#[test]
fn an_alarm_at_a_rollback_severity_rolls_every_realm_back_and_it_stays_back() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    dial.decide(600);
    dial.alarm("errors", AlarmState::Alarm, Severity::Sev2, None);
    let d = dial.decide(601);
    let control = alloc(r#"{"C": 100}"#);
    assert_eq!(dial.served("NA"), Some(control.clone()));
    assert_eq!(dial.served("EU"), Some(control.clone()));
    assert_eq!(dial.phase(), Some(DialPhase::RolledBack));
    let warning = d
        .notes
        .iter()
        .find(|n| n.reason == "RolledBack")
        .expect("a RolledBack event");
    assert!(warning.warning);
    for fragment in ["errors", "Sev2", "0.12", "0.05"] {
        assert!(
            warning.message.contains(fragment),
            "{fragment} missing from {}",
            warning.message
        );
    }
    let record = dial.status.rollback.clone().expect("a rollback record");
    assert_eq!(record.alarm.as_deref(), Some("errors"));
    assert_eq!(record.value, Some(0.12));
    assert!(dial.status.realms.iter().all(|r| r.rolled_back));

    // Firing on: a retry is refused. Cleared: the dial stays rolled back.
    let d = dial.request(700, "retry");
    assert!(reasons(&d).contains(&"RetryRefused"));
    dial.alarm("errors", AlarmState::Ok, Severity::Sev2, None);
    let d = dial.decide(800);
    assert_eq!(dial.phase(), Some(DialPhase::RolledBack));
    assert!(d.notes.is_empty(), "no repeated events");
    dial.request(900, "retry");
    assert_eq!(dial.phase(), Some(DialPhase::Baking));
}

#[test]
fn a_realm_scoped_alarm_rolls_back_only_its_realm() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA, EU], allocation: {C: 50, T1: 50}}",
    );
    dial.decide(0);
    dial.decide(1);
    dial.alarm("eu-errors", AlarmState::Alarm, Severity::Sev2_5, Some("EU"));
    dial.decide(2);
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 100}"#)));
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"C": 50, "T1": 50}"#)));
    assert_eq!(
        dial.status.rollback.as_ref().map(|r| r.realms.clone()),
        Some(vec!["EU".to_owned()])
    );
}

#[test]
fn a_guardrail_rolls_back_only_the_realms_it_decides_are_worse() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA, EU, FE], allocation: {C: 95, T1: 5}}",
    );
    dial.decide(0);
    dial.decide(1);
    dial.alarm("t1-errors", AlarmState::Alarm, Severity::Sev2, None);
    if let Some(reading) = dial.alarms.iter_mut().find(|a| a.name == "t1-errors") {
        reading.realms = Some(vec!["EU".to_owned()]);
        reading.threshold = None;
    }
    let d = dial.decide(2);
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 100}"#)));
    for realm in ["NA", "FE"] {
        assert_eq!(dial.served(realm), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
    }
    let record = dial.status.rollback.clone().expect("a rollback record");
    assert_eq!(record.realms, vec!["EU".to_owned()]);
    let warning = d
        .notes
        .iter()
        .find(|n| n.reason == "RolledBack")
        .expect("a RolledBack event");
    assert!(
        warning.message.contains("t1-errors (Sev2) is ALARM in EU"),
        "{}",
        warning.message
    );
}

#[test]
fn a_lower_severity_alarm_only_notifies() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.alarm("latency", AlarmState::Alarm, Severity::Sev3, None);
    let d = dial.decide(0);
    assert!(reasons(&d).contains(&"AlarmNotify"));
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
    assert!(conditions::is_true(
        &dial.status.conditions,
        conditions::DEGRADED
    ));
    let d = dial.decide(600);
    assert!(
        !reasons(&d).contains(&"AlarmNotify"),
        "notified once per transition"
    );
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
}

#[test]
fn insufficient_data_follows_the_dial_policy() {
    let mut hold = Scenario::new(PROGRESSIVE);
    hold.alarm("errors", AlarmState::InsufficientData, Severity::Sev2, None);
    hold.decide(0);
    assert_eq!(hold.phase(), Some(DialPhase::Waiting));
    assert_eq!(hold.served("NA"), None);

    let mut proceed = Scenario::new(&format!(
        "{PROGRESSIVE}rollback: {{onInsufficientData: Proceed}}\n"
    ));
    proceed.alarm("errors", AlarmState::InsufficientData, Severity::Sev2, None);
    proceed.decide(0);
    assert_eq!(proceed.served("NA"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));

    let mut roll = Scenario::new(&format!(
        "{PROGRESSIVE}rollback: {{onInsufficientData: RollBack}}\n"
    ));
    roll.decide(0);
    roll.alarm("errors", AlarmState::InsufficientData, Severity::Sev2, None);
    roll.decide(1);
    assert_eq!(roll.phase(), Some(DialPhase::RolledBack));
}

#[test]
fn a_closed_window_holds_dial_ups_but_never_dial_downs() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA], allocation: {C: 50, T1: 50}}",
    );
    dial.window = WindowGate::Closed("outside Mon-Thu 00:00-18:00".to_owned());
    dial.decide(0);
    assert_eq!(dial.phase(), Some(DialPhase::Waiting));
    assert_eq!(dial.served("NA"), None);
    assert!(
        dial.status
            .step
            .as_ref()
            .and_then(|s| s.waiting_for.clone())
            .is_some_and(|w| w.contains("Mon-Thu"))
    );

    dial.window = WindowGate::Open;
    dial.decide(1);
    dial.decide(2);
    assert_eq!(dial.phase(), Some(DialPhase::Dialed));

    dial.window = WindowGate::Closed("holiday freeze".to_owned());
    dial.change_spec("{weblab: W, treatments: [C, T1], realms: [NA], allocation: {C: 90, T1: 10}}");
    dial.decide(3);
    assert_eq!(
        dial.served("NA"),
        Some(alloc(r#"{"C": 90, "T1": 10}"#)),
        "dial-downs are never gated"
    );
}

#[test]
fn a_spec_change_mid_way_continues_from_the_effective_allocation() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    dial.decide(600);
    dial.decide(1200);
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"C": 50, "T1": 50}"#)));
    // Same steps, a lower target: NA is past the 5% step already.
    dial.change_spec(&PROGRESSIVE.replace("allocation: {T1: 100}", "allocation: {C: 25, T1: 75}"));
    dial.decide(1300);
    assert_eq!(
        dial.served("NA"),
        Some(alloc(r#"{"C": 50, "T1": 50}"#)),
        "NA is not sent back to 5%"
    );
    assert_eq!(
        dial.served("EU"),
        Some(alloc(r#"{"C": 50, "T1": 50}"#)),
        "EU catches up with the step NA is at"
    );
    let na_history: Vec<String> = dial
        .status
        .history
        .iter()
        .filter(|c| c.realm == "NA")
        .map(|c| c.to.to_string())
        .collect();
    assert_eq!(na_history, ["C:95 T1:5", "C:50 T1:50"]);
}

#[test]
fn a_spec_change_while_the_alarm_fires_stays_rolled_back() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    dial.alarm("errors", AlarmState::Alarm, Severity::Sev1, None);
    dial.decide(1);
    dial.change_spec(&PROGRESSIVE.replace("bake: 10m", "bake: 5m"));
    dial.decide(2);
    assert_eq!(dial.phase(), Some(DialPhase::RolledBack));
    assert_eq!(dial.status.rollback.as_ref().map(|r| r.generation), Some(2));
    dial.alarm("errors", AlarmState::Ok, Severity::Sev1, None);
    dial.change_spec(PROGRESSIVE);
    dial.decide(3);
    assert_eq!(
        dial.phase(),
        Some(DialPhase::Baking),
        "a new spec after the alarm cleared progresses again"
    );
}

#[test]
fn missing_references_hold_the_allocation_and_warn_once() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA], allocation: {C: 50, T1: 50}}",
    );
    dial.decide(0);
    dial.decide(1);
    dial.change_spec("{weblab: W, treatments: [C, T1], realms: [NA], allocation: {T1: 100}}");
    dial.missing = vec!["Alarm \"errors\" not found".to_owned()];
    let d = dial.decide(2);
    assert_eq!(dial.phase(), Some(DialPhase::Failed));
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"C": 50, "T1": 50}"#)));
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.reason == "ReferenceNotFound")
    );
    let d = dial.decide(3);
    assert!(d.notes.is_empty(), "reported once");
    dial.missing.clear();
    dial.decide(4);
    assert_eq!(dial.served("NA"), Some(alloc(r#"{"T1": 100}"#)));
}

#[test]
fn removed_realms_stop_being_served_and_history_is_bounded() {
    let mut dial = Scenario::new(
        "{weblab: W, treatments: [C, T1], realms: [NA, EU], allocation: {C: 50, T1: 50}}",
    );
    dial.decide(0);
    for i in 0..40 {
        let share = if i % 2 == 0 { 60 } else { 40 };
        dial.change_spec(&format!(
            "{{weblab: W, treatments: [C, T1], realms: [NA, EU], allocation: {{C: {share}, T1: {}}}}}",
            100 - share
        ));
        dial.decide(i + 1);
    }
    assert_eq!(dial.status.history.len(), HISTORY_LIMIT);
    dial.change_spec("{weblab: W, treatments: [C, T1], realms: [NA], allocation: {C: 50, T1: 50}}");
    dial.decide(100);
    assert_eq!(dial.served("EU"), None);
}

#[test]
fn bucket_layouts_follow_the_effective_allocation() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    let layout =
        Layout::from_ranges(dial.status.realms[0].buckets.clone()).expect("a valid layout");
    assert_eq!(layout.allocation(), alloc(r#"{"C": 95, "T1": 5}"#));
}

#[test]
fn unknown_actions_are_rejected_with_the_choices() {
    let error = "dial-up"
        .parse::<ManualAction>()
        .expect_err("not an action");
    assert!(error.contains("pause, resume, promote, abort or retry"));
    assert_eq!(
        " retry #2 by alice".parse::<ManualAction>(),
        Ok(ManualAction::Retry)
    );
}

#[test]
fn an_invalid_request_is_reported_once_and_recorded() {
    let mut dial = Scenario::new(PROGRESSIVE);
    let d = dial.decide_with(0, Some("dial-up now"));
    assert!(
        d.notes
            .iter()
            .any(|n| n.warning && n.reason == "InvalidAction" && n.message.contains("dial-up"))
    );
    assert_eq!(
        dial.status.last_action.as_ref().map(|a| a.request.as_str()),
        Some("dial-up now")
    );
}

#[test]
fn a_bake_read_back_from_the_api_never_ends_early() {
    let mut dial = Scenario::new(PROGRESSIVE);
    let started = at(0) + SignedDuration::from_millis(400);
    dial.decide_at(started, None);
    dial.through_api();
    assert_eq!(dial.phase(), Some(DialPhase::Baking));
    let step = dial.status.step.clone().expect("a step");
    let (from, until) = (
        step.started_at.expect("started").0,
        step.bake_until.expect("baking").0,
    );
    assert_eq!(from, started);
    assert_eq!(until.duration_since(from), SignedDuration::from_mins(10));

    // 0.2 s before the 10m bake ends, NA still bakes and EU has not moved.
    let d = dial.decide_at(at(600) + SignedDuration::from_millis(200), None);
    dial.through_api();
    assert_eq!(dial.phase(), Some(DialPhase::Baking));
    assert!(d.notes.is_empty(), "{:?}", reasons(&d));
    assert_eq!(dial.served("EU"), None);
    assert!(d.requeue_after > Duration::ZERO && d.requeue_after <= Duration::from_millis(200));
    dial.decide_at(at(600) + SignedDuration::from_millis(400), None);
    assert_eq!(dial.served("EU"), Some(alloc(r#"{"C": 95, "T1": 5}"#)));
}

#[test]
fn the_rollback_record_names_the_alarm_that_rolled_back_and_lists_the_others() {
    let mut dial = Scenario::new(PROGRESSIVE);
    dial.decide(0);
    dial.alarm("na-errors", AlarmState::Alarm, Severity::Sev2, Some("NA"));
    let first = dial.decide(10);
    let event = first
        .notes
        .iter()
        .find(|n| n.reason == "RolledBack")
        .expect("a RolledBack event");
    assert!(event.message.contains("na-errors"), "{}", event.message);

    // A more severe alarm fires later: NA is back already, EU and FE go too.
    dial.alarm("latency", AlarmState::Alarm, Severity::Sev1, None);
    let later = dial.decide(20);
    let record = dial.status.rollback.clone().expect("a rollback record");
    assert_eq!(record.alarm.as_deref(), Some("na-errors"));
    assert_eq!(record.other_alarms, vec!["latency".to_owned()]);
    assert_eq!(record.realms, vec!["NA", "EU", "FE"]);
    assert_eq!(record.at, MicroTime(at(10)));
    assert_eq!(reasons(&later), vec!["RolledBack"]);
    assert!(
        later.notes[0].message.contains("latency")
            && later.notes[0].message.contains("rolled back EU, FE "),
        "{}",
        later.notes[0].message
    );

    // Nothing new: nothing written, nothing said.
    let quiet = dial.decide(30);
    assert!(quiet.notes.is_empty());
    assert_eq!(quiet.status, dial.status);
}

/// Every message a decision composes: events, conditions, what it waits for.
fn messages(decision: &Decision) -> Vec<String> {
    let mut all: Vec<String> = decision.notes.iter().map(|n| n.message.clone()).collect();
    all.extend(decision.status.conditions.iter().map(|c| c.message.clone()));
    all.extend(
        decision
            .status
            .step
            .as_ref()
            .and_then(|s| s.waiting_for.clone()),
    );
    all.extend(decision.status.rollback.as_ref().map(|r| r.message.clone()));
    all
}

#[test]
fn composed_messages_repeat_no_word() {
    use crate::{
        api::change_window::{ChangeWindowSpec, ChangeWindowStatus},
        controllers::{change_window::window::evaluate, doubled_word},
    };
    let window: ChangeWindowSpec = serde_json::from_value(serde_json::json!({
        "timeZone": "UTC",
        "blackouts": [{"name": "holiday-freeze", "start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"}]
    }))
    .expect("a valid window");
    let verdict = evaluate(&window, at(0), &[]).expect("evaluates");
    assert!(!verdict.open, "{verdict:?}");
    let status = ChangeWindowStatus {
        open: Some(false),
        reason: Some(verdict.reason),
        ..ChangeWindowStatus::default()
    };

    let mut dial = Scenario::new(PROGRESSIVE);
    dial.window = window_gate("merge-protocol", Some(&status));
    let mut decisions = vec![dial.decide(0)];
    assert_eq!(dial.phase(), Some(DialPhase::Waiting));
    dial.window = window_gate("merge-protocol", None);
    decisions.push(dial.decide(1));
    dial.window = WindowGate::Open;
    decisions.push(dial.decide(2));
    decisions.push(dial.request(3, "pause"));
    decisions.push(dial.request(4, "promote"));
    decisions.push(dial.request(5, "resume"));
    dial.alarm("errors", AlarmState::Alarm, Severity::Sev2, None);
    dial.alarm("latency", AlarmState::Alarm, Severity::Sev3, None);
    decisions.push(dial.decide(6));
    decisions.push(dial.request(7, "retry"));
    decisions.push(dial.request(8, "abort"));
    decisions.push(dial.request(9, "bogus"));
    dial.missing = vec!["Alarm \"gone\" not found".to_owned()];
    decisions.push(dial.decide(10));
    for message in decisions.iter().flat_map(messages) {
        assert_eq!(doubled_word(&message), None, "{message}");
    }
}

#[test]
fn merge_trains_are_paused_only_while_an_alarm_holds_the_dial_rolled_back() {
    let yaml = format!("{PROGRESSIVE}rollback: {{pauseMergeTrains: [{{train: web-main}}]}}\n");
    let pauses = |dial: &Scenario| merge_train_pauses("checkout", &dial.spec, &dial.status);
    let mut dial = Scenario::new(&yaml);
    dial.decide(0);
    assert!(
        pauses(&dial).is_empty(),
        "a dial that progresses pauses nothing"
    );
    dial.alarm("errors", AlarmState::Alarm, Severity::Sev2, None);
    dial.decide(60);
    let wanted = pauses(&dial);
    assert_eq!(wanted.len(), 1);
    assert_eq!(wanted[0].train.train, "web-main");
    assert!(
        wanted[0]
            .reason
            .starts_with("WeblabDial checkout was rolled back: "),
        "{}",
        wanted[0].reason
    );
    dial.alarm("errors", AlarmState::Ok, Severity::Sev2, None);
    dial.request(120, "retry");
    assert!(pauses(&dial).is_empty(), "a retry lifts the pause");

    // An abort is a person's decision, not an incident: no pause.
    let mut aborted = Scenario::new(&yaml);
    aborted.decide(0);
    aborted.request(60, "abort");
    assert_eq!(aborted.phase(), Some(DialPhase::Aborted));
    assert!(pauses(&aborted).is_empty());
}
