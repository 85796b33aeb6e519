//! What a message says, and how each sink wants it on the wire, without
//! I/O:
//!
//! - Slack incoming webhooks: `{"text", "blocks"}` with a header, a section
//!   and fields in `mrkdwn` (with `&`, `<` and `>` escaped), and a context
//!   of links (Block Kit limits: header 150 characters, section 3,000,
//!   field 2,000, at most 10 fields);
//! - Microsoft Teams workflow webhooks: `{"type": "message", "attachments"}`
//!   with one Adaptive Card (`application/vnd.microsoft.card.adaptive`,
//!   version 1.4): a title, the message, a FactSet and `Action.OpenUrl`s;
//! - PagerDuty Events API v2: `trigger` and `resolve` events to
//!   `/v2/enqueue` with the group's `dedup_key`, and change events to
//!   `/v2/change/enqueue` (summary at most 1,024 characters);
//! - the signed webhook: the message as JSON.

use jiff::Timestamp;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::api::{
    common::Severity,
    weblab_notifier::{LinkTemplate, NotificationAction, PagerDutySeverity, PendingNotification},
};

/// Slack's longest header text.
const SLACK_HEADER: usize = 150;
/// Slack's longest section text.
const SLACK_SECTION: usize = 3000;
/// Slack's longest field text.
const SLACK_FIELD: usize = 2000;
/// PagerDuty's longest summary.
const PAGERDUTY_SUMMARY: usize = 1024;

/// A message about one group, ready to render for any sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The group.
    pub pending: PendingNotification,
    /// The notifier's namespace.
    pub namespace: String,
    /// Links, with placeholders filled in: (text, URL).
    pub links: Vec<(String, String)>,
}

impl Message {
    /// The message for `pending` in `namespace`, its links from `templates`.
    pub fn new(pending: PendingNotification, namespace: &str, templates: &[LinkTemplate]) -> Self {
        let links = templates
            .iter()
            .map(|t| (t.name.clone(), fill(&t.url, &pending, namespace)))
            .collect();
        let mut links: Vec<(String, String)> = links;
        if let Some(ticket) = &pending.first.evidence.ticket {
            links.push(("Ticket".to_owned(), ticket.clone()));
        }
        Message {
            pending,
            namespace: namespace.to_owned(),
            links,
        }
    }

    /// One line that says what happened.
    pub fn title(&self) -> String {
        let first = &self.pending.first;
        let ns = &self.namespace;
        if self.pending.count <= 1 {
            return format!("{} {ns}/{}: {}", first.kind, first.name, first.reason);
        }
        let what = match &first.evidence.alarm {
            Some(alarm) => format!("Alarm {ns}/{alarm}"),
            None => format!("{} {ns}/{}", first.kind, first.name),
        };
        format!(
            "{what}: {} decisions on {} objects ({})",
            self.pending.count,
            self.object_count(),
            first.reason
        )
    }

    fn object_count(&self) -> String {
        let listed = self.pending.objects.len();
        if (listed as u32) < self.pending.count
            && listed == crate::api::weblab_notifier::MAX_GROUP_OBJECTS
        {
            format!("{listed}+")
        } else {
            listed.to_string()
        }
    }

    /// The first decision's message, and the other objects' names.
    pub fn text(&self) -> String {
        let mut text = self.pending.first.message.clone();
        if self.pending.objects.len() > 1 {
            text.push_str("\nObjects: ");
            text.push_str(&self.pending.objects.join(", "));
            if (self.pending.objects.len() as u32) < self.pending.count {
                text.push_str(", …");
            }
        }
        text
    }

    /// The evidence as (label, value) pairs, for fields and facts.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let evidence = &self.pending.first.evidence;
        let mut facts = vec![(
            "Object",
            format!(
                "{} {}/{}",
                self.pending.first.kind, self.namespace, self.pending.first.name
            ),
        )];
        let mut push = |label, value: Option<String>| {
            if let Some(value) = value {
                facts.push((label, value));
            }
        };
        push(
            "Realms",
            (!evidence.realms.is_empty()).then(|| evidence.realms.join(", ")),
        );
        push("Alarm", evidence.alarm.clone());
        push("Severity", evidence.severity.map(|s| s.to_string()));
        push("Value", evidence.value.map(|v| v.to_string()));
        push("Threshold", evidence.threshold.map(|v| v.to_string()));
        push("Estimate", evidence.estimate.clone());
        push("From", evidence.from.clone());
        push("To", evidence.to.clone());
        push("Ticket", evidence.ticket.clone());
        facts
    }

    /// A Slack incoming webhook's body.
    pub fn slack(&self) -> Value {
        let title = self.title();
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, SLACK_HEADER)}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&slack_escape(&self.text()), SLACK_SECTION)}}),
        ];
        let fields: Vec<Value> = self
            .facts()
            .iter()
            .take(10)
            .map(|(label, value)| {
                json!({"type": "mrkdwn", "text": cut(&format!("*{label}*\n{}", slack_escape(value)), SLACK_FIELD)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
        if !self.links.is_empty() {
            let links: Vec<String> = self
                .links
                .iter()
                .map(|(text, url)| format!("<{}|{}>", slack_escape(url), slack_escape(text)))
                .collect();
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]}));
        }
        json!({
            // The fallback is mrkdwn too: escaped like the blocks.
            "text": slack_escape(&format!("{title}\n{}", self.text())),
            "blocks": blocks,
        })
    }

    /// A Teams workflow webhook's body: one Adaptive Card.
    pub fn teams(&self) -> Value {
        let facts: Vec<Value> = self
            .facts()
            .iter()
            .map(|(label, value)| json!({"title": label, "value": value}))
            .collect();
        let actions: Vec<Value> = self
            .links
            .iter()
            .map(|(text, url)| json!({"type": "Action.OpenUrl", "title": text, "url": url}))
            .collect();
        let mut card = json!({
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": self.title(), "weight": "Bolder", "size": "Medium", "wrap": true},
                {"type": "TextBlock", "text": self.text(), "wrap": true},
                {"type": "FactSet", "facts": facts},
            ],
        });
        if !actions.is_empty() {
            card["actions"] = Value::Array(actions);
        }
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": card,
            }],
        })
    }

    /// A PagerDuty event: its path under the Events API, and its body.
    pub fn pagerduty(
        &self,
        routing_key: &str,
        severity: Option<PagerDutySeverity>,
    ) -> (&'static [&'static str], Value) {
        let links: Vec<Value> = self
            .links
            .iter()
            .map(|(text, url)| json!({"href": url, "text": text}))
            .collect();
        let details = self.details();
        let summary = cut(&self.title(), PAGERDUTY_SUMMARY);
        let source = format!("weblab-operator/{}", self.namespace);
        match self.pending.action {
            NotificationAction::Change => (
                &["v2", "change", "enqueue"],
                json!({
                    "routing_key": routing_key,
                    "payload": {
                        "summary": summary,
                        "source": source,
                        "timestamp": self.pending.opened_at.0.to_string(),
                        "custom_details": details,
                    },
                    "links": links,
                }),
            ),
            NotificationAction::Resolve => (
                &["v2", "enqueue"],
                json!({
                    "routing_key": routing_key,
                    "event_action": "resolve",
                    "dedup_key": self.pending.dedup_key,
                }),
            ),
            NotificationAction::Trigger => {
                let severity = severity
                    .unwrap_or_else(|| pagerduty_severity(self.pending.first.evidence.severity));
                (
                    &["v2", "enqueue"],
                    json!({
                        "routing_key": routing_key,
                        "event_action": "trigger",
                        "dedup_key": self.pending.dedup_key,
                        "client": "weblab-operator",
                        "payload": {
                            "summary": summary,
                            "source": source,
                            "severity": severity.as_str(),
                            "timestamp": self.pending.opened_at.0.to_string(),
                            "component": format!("{}/{}", self.pending.first.kind, self.pending.first.name),
                            "group": self.namespace,
                            "class": self.pending.first.reason,
                            "custom_details": details,
                        },
                        "links": links,
                    }),
                )
            }
        }
    }

    /// The signed webhook's body, sent at `now`.
    pub fn webhook(&self, now: Timestamp) -> Value {
        let links: Vec<Value> = self
            .links
            .iter()
            .map(|(text, url)| json!({"text": text, "url": url}))
            .collect();
        json!({
            "id": self.pending.id,
            "action": self.pending.action,
            "subject": self.pending.subject,
            "dedupKey": self.pending.dedup_key,
            "namespace": self.namespace,
            "title": self.title(),
            "count": self.pending.count,
            "objects": self.pending.objects,
            "first": self.pending.first,
            "links": links,
            "sentAt": now.round(jiff::Unit::Millisecond).unwrap_or(now).to_string(),
        })
    }

    fn details(&self) -> Value {
        let mut details = serde_json::Map::new();
        for (label, value) in self.facts() {
            details.insert(label.to_lowercase(), Value::String(value));
        }
        details.insert("message".to_owned(), Value::String(self.text()));
        details.insert("decisions".to_owned(), json!(self.pending.count));
        details.insert("objects".to_owned(), json!(self.pending.objects));
        details.insert("id".to_owned(), json!(self.pending.id));
        Value::Object(details)
    }
}

/// PagerDuty's severity for one of ours: none is an error (something went
/// wrong, but no alarm said how badly).
pub fn pagerduty_severity(severity: Option<Severity>) -> PagerDutySeverity {
    match severity {
        Some(Severity::Sev1) => PagerDutySeverity::Critical,
        Some(Severity::Sev2 | Severity::Sev2_5) | None => PagerDutySeverity::Error,
        Some(Severity::Sev3) => PagerDutySeverity::Warning,
        Some(Severity::Sev4) => PagerDutySeverity::Info,
    }
}

/// `template` with its placeholders replaced by the group's values,
/// percent-encoded: a value cannot add a path, a query or another host.
pub fn fill(template: &str, pending: &PendingNotification, namespace: &str) -> String {
    let first = &pending.first;
    let realm = first.evidence.realms.first().cloned().unwrap_or_default();
    let alarm = first.evidence.alarm.clone().unwrap_or_default();
    let values = [
        ("{{name}}", first.name.as_str()),
        ("{{namespace}}", namespace),
        ("{{kind}}", first.kind.as_str()),
        ("{{realm}}", realm.as_str()),
        ("{{alarm}}", alarm.as_str()),
        ("{{reason}}", first.reason.as_str()),
    ];
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        match values.iter().find(|(key, _)| tail.starts_with(key)) {
            Some((key, value)) => {
                out.extend(utf8_percent_encode(value, NON_ALPHANUMERIC));
                rest = &tail[key.len()..];
            }
            None => {
                // The API server refuses unknown placeholders; drop the braces.
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Slack's `mrkdwn` control characters escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to at most `max` characters, ellipsis included.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
