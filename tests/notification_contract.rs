//! Contract tests of the notification sinks against `support::sinks`, a
//! server written from Slack's, Microsoft Teams' and PagerDuty's published
//! API documentation (they cannot run here): exact payloads, headers and
//! dedup keys, and the retry behaviour (a sink that fails 3 times, a slow
//! one, one that answers 429 with Retry-After). The last test sends through
//! the real operator, with each sink's example applied.

mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Api;
use support::{
    control_plane, eventually, operator_with_webhook_args, push_alert,
    sinks::{ROUTING_KEY, Scripted, SinkContract, WEBHOOK_KEY},
};
use weblab_operator::{
    api::{
        WeblabNotifier,
        common::{Severity, micro_time},
        weblab_notifier::{DecisionRecord, Evidence, NotificationAction, PendingNotification},
    },
    controllers::notifier::{
        deliver::{DELIVERY_HEADER, Target, deliver},
        message::Message,
    },
    outbound::Outbound,
};

const DEDUP: &str = "weblab/team/oncall/alarm/checkout-errors";

fn group(action: NotificationAction) -> PendingNotification {
    let at = micro_time(Timestamp::now());
    PendingNotification {
        id: "1800000000000-7".to_owned(),
        action,
        subject: "alarm/checkout-errors".to_owned(),
        dedup_key: DEDUP.to_owned(),
        opened_at: at.clone(),
        first: DecisionRecord {
            kind: "WeblabDial".to_owned(),
            name: "checkout-redesign".to_owned(),
            reason: "RolledBack".to_owned(),
            warning: true,
            message: "checkout-errors (Sev2) is ALARM at 0.07 > 0.05; rolled back NA to C:100"
                .to_owned(),
            at,
            evidence: Evidence {
                realms: vec!["NA".to_owned()],
                alarm: Some("checkout-errors".to_owned()),
                severity: Some(Severity::Sev2),
                value: Some(0.07),
                threshold: Some(0.05),
                from: Some("C:50 T1:50".to_owned()),
                to: Some("C:100".to_owned()),
                ticket: Some("https://tickets.example.com/SEV2-1".to_owned()),
                ..Evidence::default()
            },
        },
        objects: vec!["WeblabDial/checkout-redesign".to_owned()],
        count: 1,
        delivered: Vec::new(),
    }
}

fn message(action: NotificationAction) -> Message {
    Message::new(group(action), "team", &[])
}

/// Outbound calls as an administrator allows them to the contract server
/// on loopback.
fn outbound() -> Outbound {
    Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound")
}

fn url(text: &str) -> reqwest::Url {
    text.parse().expect("a URL")
}

async fn send(target: &Target, message: &Message, timeout: Duration) -> Result<u32, String> {
    deliver(&outbound(), target, message, timeout, || {})
        .await
        .map_err(|failure| failure.message)
}

#[tokio::test]
async fn contract_slack_gets_text_and_blocks() {
    let server = SinkContract::start().await;
    let message = message(NotificationAction::Trigger);
    let attempts = send(
        &Target::Slack(url(&server.slack_url())),
        &message,
        Duration::from_secs(5),
    )
    .await
    .expect("delivered");
    assert_eq!(attempts, 1);
    let received = server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.violations, Vec::<String>::new());
    assert_eq!(request.status, 200);
    assert_eq!(request.body, message.slack());
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(
        request.headers[&DELIVERY_HEADER.to_lowercase()],
        "1800000000000-7"
    );
    assert_eq!(
        request.body["blocks"][0]["text"]["text"],
        "WeblabDial team/checkout-redesign: RolledBack"
    );
}

#[tokio::test]
async fn contract_teams_gets_an_adaptive_card() {
    let server = SinkContract::start().await;
    let message = message(NotificationAction::Trigger);
    send(
        &Target::Teams(url(&server.teams_url())),
        &message,
        Duration::from_secs(5),
    )
    .await
    .expect("delivered");
    let received = server.received();
    assert_eq!(received[0].violations, Vec::<String>::new());
    assert_eq!(received[0].status, 202);
    assert_eq!(received[0].body, message.teams());
    let facts = received[0].body["attachments"][0]["content"]["body"][2]["facts"].clone();
    assert!(
        facts.as_array().is_some_and(
            |f| f.contains(&serde_json::json!({"title": "Threshold", "value": "0.05"}))
        ),
        "{facts}"
    );
}

#[tokio::test]
async fn contract_pagerduty_dedups_triggers_and_resolves_by_key() {
    let server = SinkContract::start().await;
    let target = Target::PagerDuty {
        base: url(&server.url),
        routing_key: ROUTING_KEY.to_owned(),
        severity: None,
    };
    let timeout = Duration::from_secs(5);
    // A trigger sent twice (a retry, or a successor's delivery) is one alert.
    for _ in 0..2 {
        send(&target, &message(NotificationAction::Trigger), timeout)
            .await
            .expect("triggered");
    }
    assert_eq!(server.incidents(), (1, vec![DEDUP.to_owned()]));
    send(&target, &message(NotificationAction::Resolve), timeout)
        .await
        .expect("resolved");
    assert_eq!(server.incidents(), (1, Vec::new()));
    send(&target, &message(NotificationAction::Change), timeout)
        .await
        .expect("a change event");
    let received = server.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v2/enqueue",
            "/v2/enqueue",
            "/v2/enqueue",
            "/v2/change/enqueue"
        ]
    );
    for request in &received {
        assert_eq!(request.violations, Vec::<String>::new(), "{}", request.body);
        assert_eq!(request.status, 202);
    }
    let trigger = &received[0].body;
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], DEDUP);
    assert_eq!(trigger["payload"]["severity"], "error");
    assert_eq!(trigger["payload"]["source"], "weblab-operator/team");
    assert_eq!(
        trigger["payload"]["custom_details"]["alarm"],
        "checkout-errors"
    );
    assert_eq!(trigger["payload"]["custom_details"]["value"], "0.07");
    assert_eq!(trigger["payload"]["custom_details"]["from"], "C:50 T1:50");
    assert_eq!(
        trigger["links"][0]["href"],
        "https://tickets.example.com/SEV2-1"
    );
    assert_eq!(
        received[2].body,
        serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": DEDUP})
    );
}

#[tokio::test]
async fn contract_the_webhook_is_signed() {
    let server = SinkContract::start().await;
    let target = Target::Webhook {
        url: url(&server.hook_url()),
        key: WEBHOOK_KEY.as_bytes().to_vec(),
    };
    send(
        &target,
        &message(NotificationAction::Trigger),
        Duration::from_secs(5),
    )
    .await
    .expect("delivered");
    let received = server.received();
    assert_eq!(received[0].violations, Vec::<String>::new());
    assert_eq!(received[0].status, 204);
    assert_eq!(received[0].body["dedupKey"], DEDUP);
    assert_eq!(received[0].body["first"]["evidence"]["threshold"], 0.05);
    // A wrong key is refused by the receiver's own verification.
    let forged = Target::Webhook {
        url: url(&server.hook_url()),
        key: b"another key".to_vec(),
    };
    let refused = send(
        &forged,
        &message(NotificationAction::Trigger),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        refused,
        Err("the webhook sink answered HTTP 401".to_owned())
    );
}

#[tokio::test]
async fn contract_a_sink_failing_three_times_gets_the_same_message_a_fourth_time() {
    let server = SinkContract::start().await;
    server.script(&[
        Scripted::Fail(503),
        Scripted::Fail(500),
        Scripted::Fail(502),
    ]);
    let target = Target::PagerDuty {
        base: url(&server.url),
        routing_key: ROUTING_KEY.to_owned(),
        severity: None,
    };
    let mut retries = 0;
    let started = Instant::now();
    let attempts = deliver(
        &outbound(),
        &target,
        &message(NotificationAction::Trigger),
        Duration::from_secs(5),
        || retries += 1,
    )
    .await
    .expect("delivered on the fourth attempt");
    println!("4 attempts with backoff took {:?}", started.elapsed());
    assert_eq!((attempts, retries), (4, 3));
    let received = server.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 500, 502, 202]);
    for request in &received {
        assert_eq!(request.headers["x-weblab-delivery"], "1800000000000-7");
        assert_eq!(request.body["dedup_key"], DEDUP);
    }
    assert_eq!(server.incidents().0, 1);
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!("waits between attempts: {gaps:?}");
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "backs off: {gaps:?}");
}

#[tokio::test]
async fn contract_a_slow_sink_times_out_and_is_tried_again() {
    let server = SinkContract::start().await;
    server.script(&[Scripted::Slow(Duration::from_secs(5))]);
    let started = Instant::now();
    let attempts = send(
        &Target::Slack(url(&server.slack_url())),
        &message(NotificationAction::Trigger),
        Duration::from_secs(1),
    )
    .await
    .expect("delivered on the second attempt");
    println!(
        "a 1 s deadline against a 5 s answer: delivered after {:?}",
        started.elapsed()
    );
    assert_eq!(attempts, 2);
    // The first request's handler was dropped with its connection: only
    // the second attempt was answered.
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].status, 200);
}

#[tokio::test]
async fn contract_429_waits_as_long_as_retry_after_says() {
    let server = SinkContract::start().await;
    server.script(&[Scripted::Throttle(2)]);
    let attempts = send(
        &Target::Teams(url(&server.teams_url())),
        &message(NotificationAction::Trigger),
        Duration::from_secs(5),
    )
    .await
    .expect("delivered after the wait");
    assert_eq!(attempts, 2);
    let received = server.received();
    let gap = received[1].at - received[0].at;
    println!("Retry-After: 2 -> next attempt after {gap:?}");
    assert!(gap >= Duration::from_secs(2), "{gap:?}");
    assert_eq!(received[1].status, 202);
}

#[tokio::test]
async fn contract_a_refusal_is_not_retried() {
    let server = SinkContract::start().await;
    server.script(&[Scripted::Fail(404)]);
    let refused = send(
        &Target::Slack(url(&server.slack_url())),
        &message(NotificationAction::Trigger),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(refused, Err("the slack sink answered HTTP 404".to_owned()));
    assert_eq!(server.received().len(), 1);
}

/// `examples/notifier-<sink>.yaml` with its Secret pointed at `server`.
fn example(sink: &str, server: &SinkContract) -> String {
    let path = support::repo_root().join(format!("examples/notifier-{sink}.yaml"));
    std::fs::read_to_string(path)
        .expect("the example exists")
        .replace(
            "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
            &server.slack_url(),
        )
        .replace(
            "https://example.webhook.office.com/workflows/0000/triggers/manual/paths/invoke",
            &server.teams_url(),
        )
        .replace("replace-with-the-32-character-key", ROUTING_KEY)
        .replace("https://hooks.example.com/weblab", &server.hook_url())
        .replace("replace-with-a-long-random-shared-secret", WEBHOOK_KEY)
        // Seconds, not the examples' production wait.
        .replace("wait: 30s", "wait: 1s")
}

#[tokio::test]
async fn contract_the_operator_sends_each_examples_sink_an_alarm() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    // The PagerDuty endpoint is the administrator's flag; here, the
    // contract server.
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-examples",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    for sink in ["slack", "teams", "pagerduty", "webhook"] {
        support::apply_yaml(plane, ns.name(), &example(sink, &server)).await;
    }
    support::apply_yaml(
        plane,
        ns.name(),
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: checkout-errors
  labels: {team: checkout}
spec:
  severity: Sev1
  realm: NA
  alertmanager:
    matchers:
      - {name: alertname, value: CheckoutErrors}
",
    )
    .await;
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let arrived = eventually(Duration::from_secs(30), || async {
        let paths: Vec<String> = server.received().into_iter().map(|r| r.path).collect();
        ["/slack/", "/teams/", "/v2/enqueue", "/hook"]
            .iter()
            .all(|want| paths.iter().any(|p| p.starts_with(want)))
    })
    .await;
    assert!(arrived, "{:?}\n{}", server.received(), operator.logs());
    for request in server.received() {
        assert_eq!(request.violations, Vec::<String>::new(), "{}", request.path);
    }
    let client = plane.client().await.expect("a client");
    let notifiers: Api<WeblabNotifier> = Api::namespaced(client, ns.name());
    let recorded = eventually(Duration::from_secs(10), || async {
        notifiers.list(&Default::default()).await.is_ok_and(|list| {
            list.items.iter().all(|n| {
                n.status
                    .as_ref()
                    .is_some_and(|s| s.pending.is_empty() && s.last_delivered.is_some())
            })
        })
    })
    .await;
    let statuses = notifiers.list(&Default::default()).await.map(|list| {
        list.items
            .into_iter()
            .map(|n| (n.metadata.name, n.status))
            .collect::<Vec<_>>()
    });
    assert!(
        recorded,
        "every notifier records its delivery: {statuses:#?}\n{}",
        operator.logs()
    );
}
