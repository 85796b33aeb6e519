use jiff::Timestamp;
use serde_json::json;

use super::{Message, fill, pagerduty_severity};
use crate::api::{
    common::{Severity, micro_time},
    weblab_notifier::{
        DecisionRecord, Evidence, LinkTemplate, NotificationAction, PagerDutySeverity,
        PendingNotification,
    },
};

fn pending(action: NotificationAction, count: u32) -> PendingNotification {
    let at = micro_time(Timestamp::from_second(1_800_000_000).unwrap_or_else(|_| unreachable!()));
    PendingNotification {
        id: "1800000000000-1".to_owned(),
        action,
        subject: "alarm/errors".to_owned(),
        dedup_key: "weblab/team/oncall/alarm/errors".to_owned(),
        opened_at: at.clone(),
        first: DecisionRecord {
            kind: "WeblabDial".to_owned(),
            name: "checkout".to_owned(),
            reason: "RolledBack".to_owned(),
            warning: true,
            message: "errors (Sev2) at 0.07 > 0.05; rolled back NA to C:100".to_owned(),
            at,
            evidence: Evidence {
                realms: vec!["NA".to_owned()],
                alarm: Some("errors".to_owned()),
                severity: Some(Severity::Sev2),
                value: Some(0.07),
                threshold: Some(0.05),
                from: Some("C:50 T1:50".to_owned()),
                to: Some("C:100".to_owned()),
                ticket: Some("https://tickets.example.com/T-1".to_owned()),
                ..Evidence::default()
            },
        },
        objects: (0..count.min(20))
            .map(|i| format!("WeblabDial/dial-{i}"))
            .collect(),
        count,
        delivered: Vec::new(),
    }
}

fn message(action: NotificationAction, count: u32) -> Message {
    Message::new(
        pending(action, count),
        "team",
        &[LinkTemplate {
            name: "Dashboard".to_owned(),
            url: "https://grafana.example.com/d/x?var-dial={{name}}&var-realm={{realm}}".to_owned(),
        }],
    )
}

#[test]
fn links_fill_placeholders_percent_encoded() {
    let mut group = pending(NotificationAction::Trigger, 1);
    group.first.name = "a&b/c".to_owned();
    assert_eq!(
        fill(
            "https://g/d?dial={{name}}&ns={{namespace}}&r={{realm}}&x={{unknown}}",
            &group,
            "team"
        ),
        "https://g/d?dial=a%26b%2Fc&ns=team&r=NA&x=unknown}}"
    );
}

#[test]
fn a_grouped_message_says_how_many_decisions_and_objects() {
    let grouped = message(NotificationAction::Trigger, 100);
    assert_eq!(
        grouped.title(),
        "Alarm team/errors: 100 decisions on 20+ objects (RolledBack)"
    );
    assert!(grouped.text().ends_with(", …"));
    let single = message(NotificationAction::Trigger, 1);
    assert_eq!(single.title(), "WeblabDial team/checkout: RolledBack");
}

#[test]
fn slack_gets_text_and_blocks_with_escaped_mrkdwn() {
    let body = message(NotificationAction::Trigger, 1).slack();
    assert_eq!(
        body["text"],
        "WeblabDial team/checkout: RolledBack\nerrors (Sev2) at 0.07 &gt; 0.05; rolled back NA to C:100"
    );
    assert_eq!(body["blocks"][0]["type"], "header");
    assert_eq!(body["blocks"][0]["text"]["type"], "plain_text");
    assert_eq!(
        body["blocks"][1]["text"]["text"],
        "errors (Sev2) at 0.07 &gt; 0.05; rolled back NA to C:100"
    );
    let fields = body["blocks"][2]["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields"));
    assert!(fields.contains(&json!({"type": "mrkdwn", "text": "*Threshold*\n0.05"})));
    assert!(fields.len() <= 10);
    assert_eq!(
        body["blocks"][3]["elements"][0]["text"],
        "<https://grafana.example.com/d/x?var-dial=checkout&amp;var-realm=NA|Dashboard> · <https://tickets.example.com/T-1|Ticket>"
    );
}

#[test]
fn teams_gets_one_adaptive_card() {
    let body = message(NotificationAction::Trigger, 1).teams();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(attachment["content"]["type"], "AdaptiveCard");
    assert_eq!(attachment["content"]["version"], "1.4");
    assert_eq!(attachment["content"]["body"][2]["type"], "FactSet");
    assert_eq!(
        attachment["content"]["actions"][0]["type"],
        "Action.OpenUrl"
    );
}

#[test]
fn pagerduty_triggers_resolves_and_records_changes() {
    let (path, trigger) = message(NotificationAction::Trigger, 3).pagerduty("R0UT1NG", None);
    assert_eq!(path, ["v2", "enqueue"]);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], "R0UT1NG");
    assert_eq!(trigger["dedup_key"], "weblab/team/oncall/alarm/errors");
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], "weblab-operator/team");
    assert_eq!(trigger["payload"]["custom_details"]["threshold"], "0.05");
    assert_eq!(trigger["payload"]["custom_details"]["decisions"], 3);
    let (_, fixed) =
        message(NotificationAction::Trigger, 1).pagerduty("R", Some(PagerDutySeverity::Critical));
    assert_eq!(fixed["payload"]["severity"], "critical");
    let (path, resolve) = message(NotificationAction::Resolve, 1).pagerduty("R", None);
    assert_eq!(path, ["v2", "enqueue"]);
    assert_eq!(
        resolve,
        json!({"routing_key": "R", "event_action": "resolve", "dedup_key": "weblab/team/oncall/alarm/errors"})
    );
    let (path, change) = message(NotificationAction::Change, 1).pagerduty("R", None);
    assert_eq!(path, ["v2", "change", "enqueue"]);
    assert!(change.get("event_action").is_none() && change.get("dedup_key").is_none());
    assert_eq!(change["payload"]["timestamp"], "2027-01-15T08:00:00Z");
}

#[test]
fn severities_map_onto_pagerdutys() {
    assert_eq!(
        pagerduty_severity(Some(Severity::Sev1)),
        PagerDutySeverity::Critical
    );
    assert_eq!(
        pagerduty_severity(Some(Severity::Sev2_5)),
        PagerDutySeverity::Error
    );
    assert_eq!(
        pagerduty_severity(Some(Severity::Sev3)),
        PagerDutySeverity::Warning
    );
    assert_eq!(pagerduty_severity(None), PagerDutySeverity::Error);
}
