use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Decision, MAX_PENDING, OVERFLOW, Outbox, Route, dedup_key, routes};
use crate::api::{
    common::{Severity, micro_time},
    weblab_notifier::{
        DecisionRecord, Evidence, NotificationAction, NotificationFilter, NotifiedKind,
    },
};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap_or_else(|_| unreachable!())
}

fn decision(kind: &str, name: &str, reason: &str, warning: bool, alarm: Option<&str>) -> Decision {
    Decision {
        namespace: "team".to_owned(),
        labels: BTreeMap::from([("team".to_owned(), "checkout".to_owned())]),
        record: DecisionRecord {
            kind: kind.to_owned(),
            name: name.to_owned(),
            reason: reason.to_owned(),
            warning,
            message: format!("{name}: {reason}"),
            at: micro_time(at(0)),
            evidence: Evidence {
                alarm: alarm.map(str::to_owned),
                severity: alarm.map(|_| Severity::Sev2),
                ..Evidence::default()
            },
        },
        notifier: None,
    }
}

fn route() -> Route<'static> {
    Route {
        namespace: "team",
        notifier: "oncall",
        wait: Duration::from_secs(10),
    }
}

#[test]
fn one_alarm_rolling_back_a_hundred_dials_is_one_group() {
    let mut outbox = Outbox::default();
    outbox.add(
        &route(),
        &decision("Alarm", "errors", "AlarmFiring", true, Some("errors")),
        at(0),
    );
    for i in 0..100 {
        let dial = decision(
            "WeblabDial",
            &format!("dial-{i}"),
            "RolledBack",
            true,
            Some("errors"),
        );
        outbox.add(&route(), &dial, at(1));
    }
    assert_eq!(outbox.groups.len(), 1);
    let pending = &outbox.groups[0].pending;
    assert_eq!(pending.count, 101);
    assert_eq!(
        pending.objects.len(),
        20,
        "names are bounded, the count is not"
    );
    assert_eq!(pending.subject, "alarm/errors");
    assert_eq!(pending.dedup_key, "weblab/team/oncall/alarm/errors");
    assert_eq!(pending.action, NotificationAction::Trigger);
    // Not due before the grouping wait: nothing leaves at 9 s, all at 10 s.
    assert!(outbox.take_due(30, at(9)).is_empty());
    assert_eq!(outbox.take_due(30, at(10)).len(), 1);
}

#[test]
fn a_cleared_alarm_resolves_the_alert_its_firing_opened() {
    let mut outbox = Outbox::default();
    outbox.add(
        &route(),
        &decision("Alarm", "errors", "AlarmFiring", true, Some("errors")),
        at(0),
    );
    outbox.add(
        &route(),
        &decision("Alarm", "errors", "AlarmCleared", false, Some("errors")),
        at(1),
    );
    assert_eq!(outbox.groups.len(), 2);
    let (trigger, resolve) = (&outbox.groups[0].pending, &outbox.groups[1].pending);
    assert_eq!(trigger.action, NotificationAction::Trigger);
    assert_eq!(resolve.action, NotificationAction::Resolve);
    assert_eq!(trigger.dedup_key, resolve.dedup_key);
    assert_ne!(trigger.id, resolve.id);
}

#[test]
fn a_decision_after_the_group_left_opens_a_new_group_with_the_same_dedup_key() {
    let mut outbox = Outbox::default();
    let dial = decision("WeblabDial", "d", "RolledBack", true, Some("errors"));
    outbox.add(&route(), &dial, at(0));
    let sent = outbox.take_due(30, at(10));
    outbox.add(&route(), &dial, at(11));
    assert_eq!(outbox.groups.len(), 2);
    assert_eq!(outbox.groups[1].pending.dedup_key, sent[0].dedup_key);
    assert_ne!(outbox.groups[1].pending.id, sent[0].id);
}

#[test]
fn the_rate_limit_holds_groups_back_in_order() {
    let mut outbox = Outbox::default();
    for i in 0..3 {
        let change = decision("WeblabDial", &format!("d{i}"), "StepApplied", false, None);
        outbox.add(&route(), &change, at(0));
    }
    let first = outbox.take_due(2, at(10));
    assert_eq!(first.len(), 2);
    // Two a minute: the third waits 30 s for its token.
    assert!(outbox.take_due(2, at(20)).is_empty());
    let next = outbox.next_due().unwrap_or_else(|| panic!("nothing due"));
    assert!(next > at(20) && next <= at(41), "{next}");
    let third = outbox.take_due(2, at(41));
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].objects, vec!["WeblabDial/d2".to_owned()]);
}

#[test]
fn a_group_stays_until_every_sink_accepted_it() {
    let mut outbox = Outbox::default();
    outbox.add(
        &route(),
        &decision("Rollback", "r", "RollbackFailed", true, None),
        at(0),
    );
    let id = outbox.take_due(30, at(10))[0].id.clone();
    let slack = vec!["slack".to_owned()];
    assert_eq!(outbox.settle(&id, &slack, true, 0.5, at(12)), None);
    let group = &outbox.groups[0];
    assert_eq!(group.pending.delivered, slack);
    assert!(!group.in_flight);
    assert!(group.due > at(12), "backs off before the next delivery");
    let again = outbox.take_due(30, group.due);
    assert_eq!(
        again[0].delivered, slack,
        "the sink that accepted is not sent it again"
    );
    let done = outbox.settle(&id, &["pagerduty".to_owned()], false, 0.5, at(30));
    assert_eq!(done.map(|p| p.delivered.len()), Some(2));
    assert!(outbox.groups.is_empty());
}

#[test]
fn redelivery_backs_off_exponentially_to_a_cap() {
    let mut outbox = Outbox::default();
    outbox.add(
        &route(),
        &decision("Rollback", "r", "RollbackFailed", true, None),
        at(0),
    );
    let mut now = at(10);
    let mut waits = Vec::new();
    for _ in 0..10 {
        let id = outbox.take_due(600, now)[0].id.clone();
        outbox.settle(&id, &[], true, 1.0, now);
        let due = outbox.groups[0].due;
        waits.push(due.duration_since(now).as_secs());
        now = due;
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
}

#[test]
fn the_pending_list_never_exceeds_its_bound() {
    let mut outbox = Outbox::default();
    for i in 0..200 {
        let warning = i % 2 == 0;
        let change = decision("WeblabDial", &format!("d{i}"), "StepApplied", warning, None);
        outbox.add(&route(), &change, at(0));
    }
    assert!(
        outbox.groups.len() <= MAX_PENDING,
        "{}",
        outbox.groups.len()
    );
    let overflow: u32 = outbox
        .groups
        .iter()
        .filter(|g| g.pending.subject == OVERFLOW)
        .map(|g| g.pending.count)
        .sum();
    let total: u32 = outbox.groups.iter().map(|g| g.pending.count).sum();
    assert_eq!(total, 200, "every decision is counted somewhere");
    assert!(overflow > 0);
}

#[test]
fn a_successor_delivers_with_the_same_ids_and_dedup_keys() {
    let mut outbox = Outbox::default();
    outbox.add(
        &route(),
        &decision("WeblabDial", "d", "RolledBack", true, Some("errors")),
        at(0),
    );
    let recorded = outbox.pending();
    let mut successor = Outbox::restore(&recorded, at(3));
    let due = successor.take_due(30, at(3));
    assert_eq!(due, recorded, "due at once, unchanged");
}

#[test]
fn filters_match_kinds_reasons_severities_and_labels() {
    let dial = decision("WeblabDial", "d", "RolledBack", true, Some("errors"));
    let mut filter = NotificationFilter::default();
    assert_eq!(routes(&filter, &dial), Ok(true));
    filter.kinds = vec![NotifiedKind::Rollback];
    assert_eq!(routes(&filter, &dial), Ok(false));
    filter.kinds = vec![NotifiedKind::WeblabDial];
    filter.reasons = vec!["Aborted".to_owned()];
    assert_eq!(routes(&filter, &dial), Ok(false));
    filter.reasons = vec!["RolledBack".to_owned()];
    filter.min_severity = Some(Severity::Sev1);
    assert_eq!(
        routes(&filter, &dial),
        Ok(false),
        "Sev2 is less severe than Sev1"
    );
    filter.min_severity = Some(Severity::Sev3);
    assert_eq!(routes(&filter, &dial), Ok(true));
    let unrated = decision("WeblabDial", "d", "RolledBack", true, None);
    assert_eq!(
        routes(&filter, &unrated),
        Ok(true),
        "no severity: not held back"
    );
    filter.selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("team".to_owned(), "search".to_owned())])),
        ..LabelSelector::default()
    });
    assert_eq!(routes(&filter, &dial), Ok(false));
}

#[test]
fn dedup_keys_fit_pagerduty() {
    let long = "a".repeat(253);
    let key = dedup_key(&"n".repeat(63), &long, &format!("alarm/{long}"));
    assert!(key.len() <= 255, "{}", key.len());
    assert_eq!(
        key,
        dedup_key(&"n".repeat(63), &long, &format!("alarm/{long}"))
    );
    assert_ne!(
        key,
        dedup_key(&"n".repeat(63), &long, &format!("alarm/{long}x"))
    );
}
