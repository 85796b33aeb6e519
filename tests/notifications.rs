//! Notifications through the real operator against the contract server
//! of `support::sinks` standing in for PagerDuty (see
//! tests/notification_contract.rs): one alarm that rolls back 100 dials is
//! one page, a decision recorded by a leader killed with SIGKILL before
//! delivering it is delivered once by its successor, with the same dedup
//! key, and an alarm still firing a while after a rollback pages, resolved
//! when it clears.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use support::{
    Operator, apply_yaml, control_plane, eventually, operator_with_webhook_args, push_alert,
    sinks::{ROUTING_KEY, Scripted, SinkContract},
};
use weblab_operator::api::{
    Rollback, WeblabDial, WeblabNotifier, rollback::RollbackPhase, weblab_dial::DialPhase,
    weblab_notifier::EscalationState,
};

const DIALS: usize = 100;

fn notifier_yaml(wait: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: oncall-pagerduty
stringData:
  routingKey: {ROUTING_KEY}
---
apiVersion: weblab.dev/v1alpha1
kind: WeblabNotifier
metadata:
  name: oncall
spec:
  sinks:
    - name: oncall
      pagerduty:
        routingKeySecretRef: {{name: oncall-pagerduty, key: routingKey}}
  filter:
    reasons: [AlarmFiring, RolledBack]
  grouping:
    wait: {wait}
"
    )
}

const ALARM: &str = "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: checkout-errors
  labels: {weblab.dev/attach: checkout}
  annotations: {weblab.dev/ticket: 'https://tickets.example.com/SEV2-42'}
spec:
  severity: Sev2
  alertmanager:
    matchers:
      - {name: alertname, value: CheckoutErrors}
";

fn dial_yaml(name: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
  annotations: {{weblab.dev/ticket: 'https://tickets.example.com/CHG-{name}'}}
spec:
  weblab: {}
  treatments: [C, T1]
  realms: [NA]
  allocation: {{C: 50, T1: 50}}
  rollback:
    alarms:
      selector:
        matchLabels: {{weblab.dev/attach: checkout}}
",
        name.to_uppercase().replace('-', "_")
    )
}

async fn rolled_back(dials: &Api<WeblabDial>) -> usize {
    dials.list(&Default::default()).await.map_or(0, |list| {
        list.items
            .iter()
            .filter(|d| {
                d.status
                    .as_ref()
                    .is_some_and(|s| s.phase == Some(DialPhase::RolledBack))
            })
            .count()
    })
}

#[tokio::test]
async fn one_alarm_rolling_back_a_hundred_dials_is_one_page() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-grouped",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    apply_yaml(plane, ns.name(), &notifier_yaml("10s")).await;
    apply_yaml(plane, ns.name(), ALARM).await;
    let manifests: Vec<String> = (0..DIALS)
        .map(|i| dial_yaml(&format!("dial-{i:03}")))
        .collect();
    apply_yaml(plane, ns.name(), &manifests.join("---\n")).await;
    let client = plane.client().await.expect("client");
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns.name());
    let settled = eventually(Duration::from_secs(60), || async {
        dials.list(&Default::default()).await.is_ok_and(|list| {
            list.items.len() == DIALS
                && list.items.iter().all(|d| {
                    d.status
                        .as_ref()
                        .is_some_and(|s| s.phase == Some(DialPhase::Dialed))
                })
        })
    })
    .await;
    assert!(settled, "the dials never settled:\n{}", operator.logs());

    let fired = Instant::now();
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let all = eventually(Duration::from_secs(60), || async {
        rolled_back(&dials).await == DIALS
    })
    .await;
    assert!(all, "not every dial rolled back:\n{}", operator.logs());
    println!(
        "{DIALS} dials rolled back {:?} after the alert",
        fired.elapsed()
    );
    let notifiers: Api<WeblabNotifier> = Api::namespaced(client, ns.name());
    let delivered = eventually(Duration::from_secs(60), || async {
        notifiers
            .get("oncall")
            .await
            .ok()
            .and_then(|n| n.status)
            .is_some_and(|s| s.pending.is_empty() && s.last_delivered.is_some())
    })
    .await;
    assert!(delivered, "never delivered:\n{}", operator.logs());
    println!("delivered {:?} after the alert", fired.elapsed());

    let triggers: Vec<serde_json::Value> = server
        .received()
        .into_iter()
        .filter(|r| r.path == "/v2/enqueue")
        .map(|r| {
            assert_eq!(r.violations, Vec::<String>::new());
            r.body
        })
        .collect();
    let decisions: u64 = triggers
        .iter()
        .map(|t| {
            t["payload"]["custom_details"]["decisions"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    println!(
        "{} PagerDuty event(s) carried {decisions} decisions",
        triggers.len()
    );
    // The alarm's firing and every dial's rollback: one alert.
    assert_eq!(decisions, DIALS as u64 + 1);
    let key = format!("weblab/{}/oncall/alarm/checkout-errors", ns.name());
    assert!(triggers.iter().all(|t| t["dedup_key"] == key.as_str()));
    assert_eq!(server.incidents(), (1, vec![key]), "one page");
    assert_eq!(triggers.len(), 1, "one message for the whole group");
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    let writes: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weblab_status_writes_total") && l.contains("notifier"))
        .collect();
    println!("notifier status writes: {writes:?}");
}

async fn is_leader(operator: &Operator) -> bool {
    matches!(operator.get("/metrics").await, Some((200, text)) if text.lines().any(|l| l == "weblab_leader 1"))
}

#[tokio::test]
async fn a_decision_recorded_by_a_killed_leader_is_delivered_once_by_its_successor() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    let election = [
        "--leader-election",
        "--lease-name",
        "notify-failover",
        "--lease-duration",
        "3s",
        "--renew-deadline",
        "2s",
        "--retry-period",
        "500ms",
        "--pagerduty-events-url",
        &server.url,
    ];
    let (ns, first) = operator_with_webhook_args(plane, "notify-failover", &election).await;
    assert!(eventually(Duration::from_secs(30), || is_leader(&first)).await);
    let secret = format!("{}/weblab-webhook", ns.name());
    let mut args = vec!["--namespace", ns.name(), "--webhook-token-secret", &secret];
    args.extend(election);
    let second = Operator::start(plane, &args).await;
    assert!(!is_leader(&second).await, "two leaders");

    // A grouping wait far longer than the test: only a successor's
    // take-over delivers.
    apply_yaml(plane, ns.name(), &notifier_yaml("10m")).await;
    apply_yaml(plane, ns.name(), ALARM).await;
    apply_yaml(plane, ns.name(), &dial_yaml("checkout")).await;
    let client = plane.client().await.expect("client");
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns.name());
    let notifiers: Api<WeblabNotifier> = Api::namespaced(client, ns.name());
    assert!(
        eventually(Duration::from_secs(30), || async {
            dials
                .get("checkout")
                .await
                .ok()
                .and_then(|d| d.status)
                .is_some_and(|s| s.phase.is_some())
        })
        .await
    );
    push_alert(&first, "CheckoutErrors", "firing").await;
    let recorded = eventually(Duration::from_secs(30), || async {
        notifiers
            .get("oncall")
            .await
            .ok()
            .and_then(|n| n.status)
            .is_some_and(|s| {
                s.pending
                    .first()
                    .is_some_and(|p| p.objects.contains(&"WeblabDial/checkout".to_owned()))
            })
    })
    .await;
    assert!(
        recorded,
        "the leader never recorded the group:\n{}",
        first.logs()
    );
    let pending = notifiers
        .get("oncall")
        .await
        .expect("the notifier")
        .status
        .expect("a status")
        .pending;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        server.received().is_empty(),
        "delivered before the grouping wait"
    );

    let killed = Instant::now();
    first.kill().await;
    let delivered = eventually(Duration::from_secs(60), || async {
        !server.received().is_empty()
            && notifiers
                .get("oncall")
                .await
                .ok()
                .and_then(|n| n.status)
                .is_some_and(|s| s.pending.is_empty())
    })
    .await;
    assert!(
        delivered,
        "the successor never delivered:\n{}",
        second.logs()
    );
    println!(
        "delivered by the successor {:?} after the SIGKILL",
        killed.elapsed()
    );
    // Nothing more comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = server.received();
    assert_eq!(received.len(), 1, "delivered once");
    assert_eq!(received[0].body["dedup_key"], pending[0].dedup_key.as_str());
    assert_eq!(received[0].headers["x-weblab-delivery"], pending[0].id);
    assert_eq!(
        received[0].body["links"][0]["href"],
        "https://tickets.example.com/SEV2-42"
    );
    let status = notifiers
        .get("oncall")
        .await
        .expect("the notifier")
        .status
        .expect("a status");
    assert_eq!(
        status.last_delivered.map(|d| d.id),
        Some(pending[0].id.clone())
    );
}

#[tokio::test]
async fn an_alarm_still_firing_after_the_rollback_pages_and_its_clearing_resolves_the_page() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-escalation",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    // The notifier's filter lets no escalation through: the dial names it.
    apply_yaml(plane, ns.name(), &notifier_yaml("1s")).await;
    apply_yaml(plane, ns.name(), ALARM).await;
    let dial = dial_yaml("checkout").replace(
        "  rollback:\n",
        "  rollback:\n    escalation: {after: 3s, severity: Sev1, notifier: oncall}\n",
    );
    apply_yaml(plane, ns.name(), &dial).await;
    let client = plane.client().await.expect("client");
    let dials: Api<WeblabDial> = Api::namespaced(client, ns.name());
    let escalation = || async {
        dials
            .get("checkout")
            .await
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.escalation)
    };
    let key = format!("weblab/{}/oncall/escalation/WeblabDial/checkout", ns.name());
    let page_open = || async { server.incidents().1.contains(&key) };

    let fired = Instant::now();
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let watching = eventually(Duration::from_secs(30), || async {
        escalation()
            .await
            .is_some_and(|e| e.state == EscalationState::Watching)
    })
    .await;
    assert!(watching, "never watched:\n{}", operator.logs());
    assert!(!page_open().await, "paged before the escalation was due");
    let paged = eventually(Duration::from_secs(30), || async {
        escalation()
            .await
            .is_some_and(|e| e.state == EscalationState::Paged)
            && page_open().await
    })
    .await;
    assert!(paged, "never paged:\n{}", operator.logs());
    println!(
        "paged {:?} after the alert (escalation after 3s)",
        fired.elapsed()
    );
    let trigger = server
        .received()
        .into_iter()
        .find(|r| r.body["dedup_key"] == key.as_str())
        .expect("the page");
    assert_eq!(trigger.violations, Vec::<String>::new());
    assert_eq!(trigger.body["event_action"], "trigger");
    assert_eq!(trigger.body["payload"]["severity"], "critical");
    assert_eq!(trigger.body["payload"]["class"], "Escalated");
    assert_eq!(
        trigger.body["payload"]["custom_details"]["alarm"],
        "checkout-errors"
    );

    let cleared = Instant::now();
    push_alert(&operator, "CheckoutErrors", "resolved").await;
    let resolved = eventually(Duration::from_secs(30), || async {
        escalation()
            .await
            .is_some_and(|e| e.state == EscalationState::Resolved)
            && !page_open().await
    })
    .await;
    assert!(resolved, "never resolved:\n{}", operator.logs());
    println!("resolved {:?} after the alert cleared", cleared.elapsed());
    let status = escalation().await.expect("an escalation");
    assert!(
        status.paged_at.is_some() && status.resolved_at.is_some(),
        "{status:?}"
    );
    let for_the_page: Vec<String> = server
        .received()
        .into_iter()
        .filter(|r| r.body["dedup_key"] == key.as_str())
        .map(|r| {
            r.body["event_action"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(for_the_page, ["trigger", "resolve"]);
}

/// The same for a Rollback, on a control plane where workloads roll out:
/// its trigger alarm still fires after it succeeded (its verification
/// watches nothing), so it pages; the alarm's clearing resolves the page.
#[tokio::test]
async fn a_rollback_that_did_not_help_pages_until_its_alarm_clears() {
    let plane = support::workloads::plane().await;
    let server = SinkContract::start().await;
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-rbk-escalation",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    let namespace = ns.name();
    let notifier = notifier_yaml("1s").replace(
        "reasons: [AlarmFiring, RolledBack]",
        "reasons: [Escalated, EscalationResolved]",
    );
    apply_yaml(plane, namespace, &notifier).await;
    apply_yaml(plane, namespace, ALARM).await;
    support::workloads::release(plane, namespace, "graphql-api", "3.240.0").await;
    support::workloads::release(plane, namespace, "graphql-api", "3.241.0").await;
    apply_yaml(
        plane,
        namespace,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: graphql
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{{region: prodNA, namespace: {namespace}}}]
  target: {{type: Revision, revision: 1}}
  trigger: {{type: Alarm, alarms: {{names: [checkout-errors]}}, severities: [Sev2]}}
  verification: {{rolloutDeadline: 90s, bake: 1s}}
  escalation: {{after: 3s, severity: Sev2}}
"
        ),
    )
    .await;
    let client = plane.client().await.expect("client");
    let rollbacks: Api<Rollback> = Api::namespaced(client, namespace);
    let status = || async {
        rollbacks
            .get("graphql")
            .await
            .ok()
            .and_then(|r| r.status)
            .unwrap_or_default()
    };
    let armed = eventually(Duration::from_secs(60), || async {
        status().await.phase == Some(RollbackPhase::Armed)
    })
    .await;
    assert!(armed, "never armed:\n{}", operator.logs());
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let key = format!("weblab/{namespace}/oncall/escalation/Rollback/graphql");
    let paged = eventually(Duration::from_secs(120), || async {
        let status = status().await;
        status.phase == Some(RollbackPhase::Succeeded)
            && status
                .escalation
                .is_some_and(|e| e.state == EscalationState::Paged)
            && server.incidents().1.contains(&key)
    })
    .await;
    assert!(
        paged,
        "never paged: {:?}\n{}",
        status().await,
        operator.logs()
    );
    let trigger = server
        .received()
        .into_iter()
        .find(|r| r.body["dedup_key"] == key.as_str())
        .expect("the page");
    assert_eq!(trigger.body["payload"]["severity"], "error");
    assert_eq!(
        trigger.body["payload"]["custom_details"]["realms"],
        "prodNA"
    );

    push_alert(&operator, "CheckoutErrors", "resolved").await;
    let resolved = eventually(Duration::from_secs(30), || async {
        status()
            .await
            .escalation
            .is_some_and(|e| e.state == EscalationState::Resolved)
            && !server.incidents().1.contains(&key)
    })
    .await;
    assert!(resolved, "never resolved:\n{}", operator.logs());
}

/// A notifier routes the decisions of its own namespace only: an alarm
/// firing in another namespace the same operator watches reaches none of
/// its sinks.
#[tokio::test]
async fn a_notifier_never_sees_another_namespaces_decisions() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    let other = plane.namespace("notify-other").await.expect("namespace");
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-own",
        &[
            "--namespace",
            other.name(),
            "--pagerduty-events-url",
            &server.url,
        ],
    )
    .await;
    apply_yaml(plane, ns.name(), &notifier_yaml("1s")).await;
    // The same alarm in the other namespace, matching the same alert.
    apply_yaml(plane, other.name(), ALARM).await;
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let client = plane.client().await.expect("client");
    let alarms: Api<weblab_operator::api::Alarm> = Api::namespaced(client, other.name());
    let fired = eventually(Duration::from_secs(30), || async {
        alarms
            .get("checkout-errors")
            .await
            .ok()
            .and_then(|a| a.status)
            .and_then(|s| s.state)
            .is_some_and(|s| s == weblab_operator::api::alarm::AlarmState::Alarm)
    })
    .await;
    assert!(
        fired,
        "the other namespace's alarm never fired:\n{}",
        operator.logs()
    );
    // Longer than the grouping wait: nothing comes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(server.received().is_empty(), "{:?}", server.received());

    // Its own namespace's alarm does reach it.
    apply_yaml(plane, ns.name(), ALARM).await;
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let delivered = eventually(Duration::from_secs(30), || async {
        !server.received().is_empty()
    })
    .await;
    assert!(delivered, "never delivered:\n{}", operator.logs());
    let key = format!("weblab/{}/oncall/alarm/checkout-errors", ns.name());
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.body["dedup_key"] == key.as_str())
    );
}

/// A sink that refuses every attempt of a delivery sets `SinkFailing` with
/// a Warning event, the message stays pending, and the next delivery clears
/// both (`SinkRecovered`).
#[tokio::test]
async fn a_failing_sink_is_reported_and_its_message_delivered_once_it_recovers() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    // Every attempt of the first delivery (5) fails.
    server.script(&[Scripted::Fail(503); 5]);
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-failing",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    apply_yaml(plane, ns.name(), &notifier_yaml("1s")).await;
    apply_yaml(plane, ns.name(), ALARM).await;
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let client = plane.client().await.expect("client");
    let notifiers: Api<WeblabNotifier> = Api::namespaced(client.clone(), ns.name());
    let condition =
        |status: &Option<weblab_operator::api::weblab_notifier::WeblabNotifierStatus>| {
            status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "SinkFailing")
                    .cloned()
            })
        };
    let failing = eventually(Duration::from_secs(60), || async {
        let status = notifiers.get("oncall").await.ok().and_then(|n| n.status);
        condition(&status).is_some_and(|c| c.status == "True")
            && status.is_some_and(|s| s.pending.len() == 1)
    })
    .await;
    assert!(failing, "never reported:\n{}", operator.logs());
    let status = notifiers.get("oncall").await.expect("notifier").status;
    let message = condition(&status).map(|c| c.message).unwrap_or_default();
    assert_eq!(
        message,
        "oncall: 1 failed deliveries, last: the pagerduty sink answered HTTP 503"
    );
    let recovered = eventually(Duration::from_secs(60), || async {
        let status = notifiers.get("oncall").await.ok().and_then(|n| n.status);
        condition(&status).is_some_and(|c| c.status == "False")
            && status.is_some_and(|s| s.pending.is_empty())
    })
    .await;
    assert!(recovered, "never recovered:\n{}", operator.logs());
    let statuses: Vec<u16> = server.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 503, 503, 503, 202]);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, ns.name());
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("WeblabNotifier"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"SinkFailing".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"SinkRecovered".to_owned()), "{reasons:?}");
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    for line in [
        "result=\"failed\",sink=\"pagerduty\"} 1",
        "result=\"delivered\",sink=\"pagerduty\"} 1",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("weblab_notifications_total") && l.ends_with(line)),
            "{line} not in the metrics"
        );
    }
}

/// An escalation that names a notifier that does not exist still pages,
/// through the notifiers whose filter lets it through, and says so.
#[tokio::test]
async fn an_escalation_naming_a_missing_notifier_pages_through_the_others() {
    let plane = control_plane().await;
    let server = SinkContract::start().await;
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "notify-misnamed",
        &["--pagerduty-events-url", &server.url],
    )
    .await;
    let notifier = notifier_yaml("1s").replace(
        "reasons: [AlarmFiring, RolledBack]",
        "reasons: [Escalated, EscalationResolved]",
    );
    apply_yaml(plane, ns.name(), &notifier).await;
    apply_yaml(plane, ns.name(), ALARM).await;
    let dial = dial_yaml("checkout").replace(
        "  rollback:\n",
        "  rollback:\n    escalation: {after: 1s, notifier: on-call}\n",
    );
    apply_yaml(plane, ns.name(), &dial).await;
    push_alert(&operator, "CheckoutErrors", "firing").await;
    let key = format!("weblab/{}/oncall/escalation/WeblabDial/checkout", ns.name());
    let paged = eventually(Duration::from_secs(30), || async {
        server.incidents().1.contains(&key)
    })
    .await;
    assert!(paged, "never paged:\n{}", operator.logs());
    let client = plane.client().await.expect("client");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, ns.name());
    let warned = eventually(Duration::from_secs(10), || async {
        events.list(&Default::default()).await.is_ok_and(|list| {
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("NotifierNotFound")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("checkout")
            })
        })
    })
    .await;
    assert!(warned, "no NotifierNotFound event:\n{}", operator.logs());
}
