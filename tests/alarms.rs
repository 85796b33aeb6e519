//! Alarms end to end with real parts: the operator process, alarms and dials
//! applied with real kubectl, a metrics endpoint scraped by a real
//! Prometheus, alerts posted to a real Alertmanager that notifies the
//! operator's webhook; outcomes read from status, events and the assignment
//! API. The webhook's defences are tested by posting to it directly.

mod support;

use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Event;
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::{Value, json};
use support::{
    Operator, WEBHOOK_TOKEN, annotate, apply_yaml, control_plane, eventually, http,
    operator_with_webhook, operator_with_webhook_args,
};
use testenv::{
    Alert, Alertmanager, AlertmanagerOptions, ControlPlane, MetricsEndpoint, Prometheus,
    PrometheusOptions,
};
use weblab_operator::api::{Alarm, WeblabDial, alarm::AlarmState, weblab_dial::DialPhase};

const WAIT: Duration = Duration::from_secs(60);
const WEBHOOK: &str = "/v1/webhooks/alertmanager";

/// A real Alertmanager notifying `operator`'s webhook with the token.
async fn alertmanager_for(operator: &Operator, name: &str) -> Alertmanager {
    let plane = control_plane().await;
    let mut options = AlertmanagerOptions::new(format!("{}{WEBHOOK}", operator.base));
    options.bearer_token = Some(WEBHOOK_TOKEN.to_owned());
    Alertmanager::start(plane.dir().join(format!("alertmanager-{name}")), options)
        .await
        .unwrap_or_else(|error| panic!("cannot start Alertmanager: {error}"))
}

fn alert(alertname: &str) -> Alert {
    Alert::new(&[
        ("alertname", alertname),
        ("env", "prod"),
        ("service", "checkout"),
    ])
}

/// Fires `alertname` through Alertmanager.
async fn fire(alertmanager: &Alertmanager, alertname: &str) {
    alertmanager
        .post_alerts(&[alert(alertname)])
        .await
        .unwrap_or_else(|error| panic!("cannot post {alertname}: {error}"));
}

/// Resolves `alertname` through Alertmanager.
async fn resolve(alertmanager: &Alertmanager, alertname: &str) {
    alertmanager
        .resolve(&[alert(alertname)])
        .await
        .unwrap_or_else(|error| panic!("cannot resolve {alertname}: {error}"));
}

fn alertmanager_alarm(name: &str, severity: &str, realm: Option<&str>, alertname: &str) -> String {
    let realm = realm.map_or(String::new(), |r| format!("  realm: {r}\n"));
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: {name}
spec:
  severity: \"{severity}\"
{realm}  alertmanager:
    matchers:
      - name: alertname
        value: {alertname}
      - name: env
        operator: \"=~\"
        value: prod|production
---
"
    )
}

fn dial(name: &str, alarms: &[&str]) -> String {
    let names = alarms.join(", ");
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
spec:
  weblab: {name}
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {{T1: 100}}
  rollback:
    alarms:
      names: [{names}]
---
"
    )
}

/// A webhook notification (payload version 4) with `alerts` given as
/// (alertname, status, fingerprint).
fn notification(alerts: &[(&str, &str, &str)]) -> Value {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(alertname, status, fingerprint)| {
            json!({
                "status": status,
                "labels": {"alertname": alertname, "env": "prod", "severity": "page"},
                "annotations": {"summary": "test"},
                "startsAt": "2026-11-22T01:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.invalid/graph",
                "fingerprint": fingerprint
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": alerts.first().and_then(|a| a["status"].as_str()).unwrap_or("firing"),
        "receiver": "weblab",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": alerts
    })
}

/// POSTs `body` to the webhook as JSON with `token` (none: no header):
/// status and body.
async fn post(operator: &Operator, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
    post_with(&http(), operator, token, body).await
}

/// [`post`] through an existing client (and its connection pool).
async fn post_with(
    client: &reqwest::Client,
    operator: &Operator,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let response = send(client, operator, token, Some("application/json"), body).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// POSTs `body` to the webhook with `token` and `content_type` (none: no
/// header of either).
async fn send(
    client: &reqwest::Client,
    operator: &Operator,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{}{WEBHOOK}", operator.base))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the operator answers")
}

/// A notification of one firing `HighErrorRate` alert with `fingerprint`,
/// labelled `namespace=<namespace>` when given.
fn one_alert(fingerprint: &str, namespace: Option<&str>) -> Vec<u8> {
    let mut body = notification(&[("HighErrorRate", "firing", fingerprint)]);
    if let Some(namespace) = namespace {
        body["alerts"][0]["labels"]["namespace"] = json!(namespace);
    }
    serde_json::to_vec(&body).expect("serializes")
}

/// Applies the `errors` alarm (`HighErrorRate` in prod) in `namespace` and
/// waits until `operator` has reconciled it, so that it is in its cache.
async fn errors_alarm(plane: &ControlPlane, namespace: &str, operator: &Operator) -> Api<Alarm> {
    apply_yaml(
        plane,
        namespace,
        &alertmanager_alarm("errors", "Sev2", None, "HighErrorRate"),
    )
    .await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), namespace);
    wait_alarm(&alarms, "errors", AlarmState::Ok, operator).await;
    alarms
}

/// Sends 40 one-alert notifications at once (fingerprints `<prefix>-NN`,
/// labelled `namespace=<namespace>` when given), spread over `replicas`, and
/// checks that each is answered 200 and, as a 200 means written, that every
/// alert is on the `errors` alarm right away.
async fn notify_at_once(
    replicas: &[&Operator],
    prefix: &str,
    namespace: Option<&str>,
    alarms: &Api<Alarm>,
) {
    let client = http();
    let fingerprints: Vec<String> = (0..40).map(|i| format!("{prefix}-{i:02}")).collect();
    let answers = futures::future::join_all(fingerprints.iter().zip(replicas.iter().cycle()).map(
        |(fingerprint, operator)| {
            post_with(
                &client,
                operator,
                Some(WEBHOOK_TOKEN),
                one_alert(fingerprint, namespace),
            )
        },
    ))
    .await;
    for (fingerprint, (status, text)) in fingerprints.iter().zip(&answers) {
        assert_eq!(*status, 200, "{fingerprint}: {text}");
        assert!(text.contains("\"alarms\":1"), "{fingerprint}: {text}");
    }
    let on_alarm = recorded(alarms, "errors").await;
    let missing: Vec<&String> = fingerprints
        .iter()
        .filter(|fingerprint| !on_alarm.contains(fingerprint))
        .collect();
    assert!(missing.is_empty(), "not recorded: {missing:?}");
}

/// The fingerprints recorded on alarm `name`.
async fn recorded(api: &Api<Alarm>, name: &str) -> Vec<String> {
    let alarm = api.get_status(name).await.expect("the alarm exists");
    alarm
        .status
        .map(|status| status.alerts)
        .unwrap_or_default()
        .into_iter()
        .map(|alert| alert.fingerprint)
        .collect()
}

async fn notify(operator: &Operator, alerts: &[(&str, &str, &str)]) {
    let body = serde_json::to_vec(&notification(alerts)).expect("serializes");
    let (status, text) = post(operator, Some(WEBHOOK_TOKEN), body).await;
    assert_eq!(status, 200, "webhook answered {text}");
}

async fn alarm_state(api: &Api<Alarm>, name: &str) -> Option<AlarmState> {
    api.get(name).await.ok()?.status?.state
}

async fn wait_alarm(api: &Api<Alarm>, name: &str, want: AlarmState, operator: &Operator) {
    let reached = eventually(WAIT, || async {
        alarm_state(api, name).await == Some(want)
    })
    .await;
    assert!(
        reached,
        "alarm {name} never became {want}; status {:?}\nlog:\n{}",
        api.get(name).await.ok().and_then(|a| a.status),
        operator.logs()
    );
}

async fn wait_dial(
    api: &Api<WeblabDial>,
    name: &str,
    want: DialPhase,
    operator: &Operator,
) -> WeblabDial {
    let phase = |d: &WeblabDial| d.status.as_ref().and_then(|s| s.phase);
    let reached = eventually(WAIT, || async {
        api.get(name).await.ok().as_ref().and_then(phase) == Some(want)
    })
    .await;
    let current = api.get(name).await.expect("the dial exists");
    assert!(
        reached,
        "dial {name} never reached {want:?}; status {:#?}\nlog:\n{}",
        current.status,
        operator.logs()
    );
    current
}

/// The treatment the assignment API serves `unit` in `realm`.
async fn treatment(
    operator: &Operator,
    namespace: &str,
    dial: &str,
    realm: &str,
) -> (String, String) {
    let (status, body) = operator
        .get(&format!(
            "/v1/weblabs/{namespace}/{dial}/treatment?unit=customer-42&realm={realm}"
        ))
        .await
        .expect("the operator answers");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    (
        body["treatment"].as_str().unwrap_or_default().to_owned(),
        body["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The state the dial recorded for one attached alarm.
fn seen(dial: &WeblabDial, alarm: &str) -> Option<AlarmState> {
    dial.status
        .as_ref()?
        .alarms
        .iter()
        .find(|a| a.name == alarm)
        .map(|a| a.state)
}

#[tokio::test]
async fn alerts_roll_back_by_severity_and_realm_and_stay_rolled_back_until_retried() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-webhook").await;
    let alertmanager = alertmanager_for(&operator, ns.name()).await;
    let manifests = [
        alertmanager_alarm("errors", "Sev2", None, "HighErrorRate"),
        alertmanager_alarm("latency", "Sev3", None, "HighLatency"),
        alertmanager_alarm("errors-eu", "Sev2", Some("EU"), "HighErrorRateEU"),
        dial("checkout", &["errors", "latency"]),
        dial("search", &["errors-eu"]),
    ]
    .concat();
    apply_yaml(plane, ns.name(), &manifests).await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    // Alertmanager alarms read OK until an alert fires, so the dials dial up.
    for name in ["errors", "latency", "errors-eu"] {
        wait_alarm(&alarms, name, AlarmState::Ok, &operator).await;
    }
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    wait_dial(&dials, "search", DialPhase::Dialed, &operator).await;

    // Sev3 only records: the dial sees it, and keeps serving T1.
    fire(&alertmanager, "HighLatency").await;
    wait_alarm(&alarms, "latency", AlarmState::Alarm, &operator).await;
    let recorded = eventually(WAIT, || async {
        dials
            .get("checkout")
            .await
            .ok()
            .and_then(|d| seen(&d, "latency"))
            == Some(AlarmState::Alarm)
    })
    .await;
    assert!(recorded, "the dial never recorded the Sev3 alarm");
    let checkout = dials.get("checkout").await.expect("dial");
    assert_eq!(
        checkout.status.as_ref().and_then(|s| s.phase),
        Some(DialPhase::Dialed)
    );
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "T1"
    );

    // An alarm scoped to EU rolls back EU only.
    fire(&alertmanager, "HighErrorRateEU").await;
    let search = wait_dial(&dials, "search", DialPhase::RolledBack, &operator).await;
    let realms = &search.status.as_ref().expect("status").realms;
    let eu = realms.iter().find(|r| r.realm == "EU").expect("EU");
    let na = realms.iter().find(|r| r.realm == "NA").expect("NA");
    assert!(
        eu.rolled_back && eu.allocation.to_string().contains("C:100"),
        "{eu:?}"
    );
    assert!(
        !na.rolled_back && na.allocation.to_string().contains("T1:100"),
        "{na:?}"
    );
    assert_eq!(
        treatment(&operator, ns.name(), "search", "EU").await,
        ("C".to_owned(), "rollback".to_owned())
    );
    assert_eq!(
        treatment(&operator, ns.name(), "search", "NA").await.0,
        "T1"
    );

    // Sev2 everywhere rolls back every realm; the record names the alarm.
    fire(&alertmanager, "HighErrorRate").await;
    let checkout = wait_dial(&dials, "checkout", DialPhase::RolledBack, &operator).await;
    let record = checkout
        .status
        .as_ref()
        .and_then(|s| s.rollback.clone())
        .expect("a rollback record");
    assert_eq!(record.alarm.as_deref(), Some("errors"));
    assert_eq!(record.realms, vec!["NA".to_owned(), "EU".to_owned()]);
    for realm in ["NA", "EU"] {
        assert_eq!(
            treatment(&operator, ns.name(), "checkout", realm).await.0,
            "C"
        );
    }
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let warned = eventually(WAIT, || async {
        events.list(&ListParams::default()).await.is_ok_and(|list| {
            list.items.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("RolledBack")
                    && e.involved_object.name.as_deref() == Some("checkout")
                    && e.message.as_deref().unwrap_or_default().contains("errors")
            })
        })
    })
    .await;
    assert!(warned, "no Warning event names the alarm");

    // Resolved: the alarm clears, the dial stays rolled back...
    resolve(&alertmanager, "HighErrorRate").await;
    wait_alarm(&alarms, "errors", AlarmState::Ok, &operator).await;
    let cleared_seen = eventually(WAIT, || async {
        dials
            .get("checkout")
            .await
            .ok()
            .and_then(|d| seen(&d, "errors"))
            == Some(AlarmState::Ok)
    })
    .await;
    assert!(cleared_seen, "the dial never saw the alarm clear");
    let checkout = dials.get("checkout").await.expect("dial");
    assert_eq!(
        checkout.status.as_ref().and_then(|s| s.phase),
        Some(DialPhase::RolledBack)
    );
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "C"
    );

    // ...until a person asks for a retry.
    annotate(plane, ns.name(), "checkout", "retry 1").await;
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "T1"
    );
}

#[tokio::test]
async fn a_retry_while_the_alarm_still_fires_does_not_dial_up() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-retry").await;
    let alertmanager = alertmanager_for(&operator, ns.name()).await;
    let manifests = [
        alertmanager_alarm("errors", "Sev2", None, "HighErrorRate"),
        dial("checkout", &["errors"]),
    ]
    .concat();
    apply_yaml(plane, ns.name(), &manifests).await;
    let dials: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    fire(&alertmanager, "HighErrorRate").await;
    wait_dial(&dials, "checkout", DialPhase::RolledBack, &operator).await;

    annotate(plane, ns.name(), "checkout", "retry 1").await;
    let handled = eventually(WAIT, || async {
        dials
            .get("checkout")
            .await
            .ok()
            .and_then(|d| d.status?.last_action)
            .is_some()
    })
    .await;
    assert!(handled, "the retry was never handled:\n{}", operator.logs());
    let checkout = dials.get("checkout").await.expect("dial");
    let status = checkout.status.expect("status");
    assert_eq!(status.phase, Some(DialPhase::RolledBack), "{status:#?}");
    assert!(
        status
            .realms
            .iter()
            .all(|r| r.allocation.to_string().contains("C:100"))
    );
}

#[tokio::test]
async fn the_webhook_refuses_bad_requests_and_survives_a_flood() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-flood").await;
    let alarms = errors_alarm(plane, ns.name(), &operator).await;
    let before = alarms.get("errors").await.expect("alarm");

    let firing = serde_json::to_vec(&notification(&[("HighErrorRate", "firing", "f-1")]))
        .expect("serializes");
    let mut old_version = notification(&[("HighErrorRate", "firing", "f-1")]);
    old_version["version"] = json!("3");
    let old_version = serde_json::to_vec(&old_version).expect("serializes");
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("no token", None, firing.clone(), 401),
        ("wrong token", Some("guess"), firing.clone(), 401),
        (
            "a prefix of the token",
            Some(&WEBHOOK_TOKEN[..8]),
            firing.clone(),
            401,
        ),
        (
            "not JSON",
            Some(WEBHOOK_TOKEN),
            b"{\"version\": \"4\", ".to_vec(),
            400,
        ),
        (
            "JSON of another shape",
            Some(WEBHOOK_TOKEN),
            b"[1, 2, 3]".to_vec(),
            400,
        ),
        (
            "another payload version",
            Some(WEBHOOK_TOKEN),
            old_version,
            422,
        ),
        ("9 MiB", Some(WEBHOOK_TOKEN), vec![b' '; 9 << 20], 413),
    ];
    for (what, token, body, want) in cases {
        let (status, text) = post(&operator, token, body).await;
        assert_eq!(status, want, "{what}: {text}");
        let error: Value = serde_json::from_str(&text).expect("a JSON error");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {text}"
        );
    }

    // 10,000 requests, malformed or unauthenticated, 32 at a time.
    let garbage: Vec<(Option<&str>, Vec<u8>)> = vec![
        (None, firing.clone()),
        (Some("wrong"), firing.clone()),
        (Some(WEBHOOK_TOKEN), b"\x00\xff\xfe garbage".to_vec()),
        (
            Some(WEBHOOK_TOKEN),
            b"{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[{\"fingerprint\":\"\"}]}"
                .to_vec(),
        ),
    ];
    let client = http();
    let statuses: Vec<u16> = stream::iter(0..10_000)
        .map(|i| {
            let (token, body) = garbage[i % garbage.len()].clone();
            let (client, operator) = (&client, &operator);
            async move { post_with(client, operator, token, body).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "every bad request gets a 4xx: {:?}",
        statuses
            .iter()
            .filter(|s| !(400..500).contains(*s))
            .take(5)
            .collect::<Vec<_>>()
    );
    // A valid notification sent as anything but JSON is refused, as the
    // assignment API refuses it.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = send(
            &client,
            &operator,
            Some(WEBHOOK_TOKEN),
            content_type,
            firing.clone(),
        )
        .await;
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let error: Value = response.json().await.expect("a JSON error");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("application/json")),
            "{content_type:?}: {error}"
        );
    }
    let after = alarms.get("errors").await.expect("alarm");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the alarm was touched"
    );
    assert_eq!(operator.get("/healthz").await.map(|(s, _)| s), Some(200));

    // A notification that matches nothing touches nothing...
    let body = serde_json::to_vec(&notification(&[("SomethingElse", "firing", "f-2")]))
        .expect("serializes");
    let (status, text) = post(&operator, Some(WEBHOOK_TOKEN), body).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"alarms\":0"), "{text}");
    assert_eq!(
        alarms
            .get("errors")
            .await
            .expect("alarm")
            .resource_version(),
        before.resource_version()
    );
    // ...and the real one still works after the flood.
    notify(&operator, &[("HighErrorRate", "firing", "f-1")]).await;
    wait_alarm(&alarms, "errors", AlarmState::Alarm, &operator).await;
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weblab_webhook_requests_total{result=\"unauthorized\"}")),
        "{metrics}"
    );
}

/// One group's notification with `count` alerts (`f-00000`, ...), the
/// first `resolved` of them resolved, labelled as a real service's would be
/// (about 400 bytes each: 5,000 of them are more than 1 MiB).
fn group_of(count: usize, resolved: usize) -> Vec<u8> {
    let alerts: Vec<Value> = (0..count)
        .map(|i| {
            let status = if i < resolved { "resolved" } else { "firing" };
            json!({
                "status": status,
                "labels": {"alertname": "HighErrorRate", "env": "prod", "severity": "page",
                           "instance": format!("checkout-{i:05}.prod.internal:9100"),
                           "job": "checkout"},
                "annotations": {"summary": "checkout errors above 5% on this instance",
                                "runbook_url": "https://runbooks.example.com/checkout/errors"},
                "startsAt": "2026-11-22T01:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.invalid/graph?g0.expr=checkout_errors",
                "fingerprint": format!("f-{i:05}")
            })
        })
        .collect();
    let status = if resolved == count {
        "resolved"
    } else {
        "firing"
    };
    serde_json::to_vec(&json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"HighErrorRate\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "weblab",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "env": "prod", "severity": "page", "job": "checkout"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.invalid",
        "alerts": alerts
    }))
    .expect("serializes")
}

/// Posts `body` and reads the alarm back: (state, value, alerts kept in
/// detail, alerts counted).
async fn deliver(
    operator: &Operator,
    alarms: &Api<Alarm>,
    body: Vec<u8>,
) -> (Option<AlarmState>, Option<f64>, usize, u32) {
    let (status, text) = post(operator, Some(WEBHOOK_TOKEN), body).await;
    assert_eq!(status, 200, "webhook answered {text}");
    // A 200 means written.
    let status = alarms
        .get_status("errors")
        .await
        .expect("alarm")
        .status
        .unwrap_or_default();
    let counted = status.alert_groups.iter().map(|g| g.firing).sum();
    (status.state, status.value, status.alerts.len(), counted)
}

#[tokio::test]
async fn groups_of_150_and_5000_alerts_are_counted_in_full_and_events_fit() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-large").await;
    let alarms = errors_alarm(plane, ns.name(), &operator).await;

    let (state, value, detailed, counted) = deliver(&operator, &alarms, group_of(150, 0)).await;
    assert_eq!(state, Some(AlarmState::Alarm));
    assert_eq!((value, detailed, counted), (Some(150.0), 100, 150));
    let large = group_of(5000, 0);
    assert!(large.len() > 1 << 20, "{} bytes", large.len());
    let (state, value, detailed, counted) = deliver(&operator, &alarms, large).await;
    assert_eq!(state, Some(AlarmState::Alarm));
    assert_eq!((value, detailed, counted), (Some(5000.0), 100, 5000));

    // Every alert but the last resolves, every one kept in detail among
    // them: the alarm still fires for the last.
    let (state, value, detailed, counted) = deliver(&operator, &alarms, group_of(5000, 4999)).await;
    assert_eq!(state, Some(AlarmState::Alarm));
    assert_eq!((value, detailed, counted), (Some(1.0), 1, 1));
    let (state, _, detailed, counted) = deliver(&operator, &alarms, group_of(5000, 5000)).await;
    assert_eq!(state, Some(AlarmState::Ok));
    assert_eq!((detailed, counted), (0, 0));

    // The transitions were published, each within the API server's limit.
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let published = eventually(WAIT, || async {
        let Ok(list) = events.list(&ListParams::default()).await else {
            return false;
        };
        let of_alarm: Vec<&Event> = list
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("errors"))
            .collect();
        let reasons: Vec<&str> = of_alarm
            .iter()
            .filter_map(|e| e.reason.as_deref())
            .collect();
        reasons.contains(&"AlarmFiring") && reasons.contains(&"AlarmCleared")
    })
    .await;
    assert!(
        published,
        "no AlarmFiring and AlarmCleared events\nlog:\n{}",
        operator.logs()
    );
    let list = events.list(&ListParams::default()).await.expect("events");
    for event in &list.items {
        let note = event.message.as_deref().unwrap_or_default();
        assert!(note.len() <= 1024, "{} bytes: {note}", note.len());
    }
}

#[tokio::test]
async fn concurrent_notifications_for_one_alarm_are_all_recorded() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-concurrent").await;
    let alarms = errors_alarm(plane, ns.name(), &operator).await;

    // Alertmanager sends its groups concurrently: 40 one-alert
    // notifications for the same alarm at once. Their alerts carry another
    // namespace's label: without --alertmanager-namespace-label an alarm
    // matches alerts from anywhere (the documented default).
    notify_at_once(&[&operator], "concurrent", Some("another-team"), &alarms).await;
    wait_alarm(&alarms, "errors", AlarmState::Alarm, &operator).await;
}

#[tokio::test]
async fn two_replicas_notified_at_once_record_every_alert() {
    let plane = control_plane().await;
    let election = [
        "--leader-election",
        "--lease-name",
        "alarm-replicas-webhook",
    ];
    let (ns, first) = operator_with_webhook_args(plane, "alarm-replicas", &election).await;
    let secret = format!("{}/weblab-webhook", ns.name());
    let mut args = vec!["--namespace", ns.name(), "--webhook-token-secret", &secret];
    args.extend(election);
    let second = Operator::start(plane, &args).await;
    let alarms = errors_alarm(plane, ns.name(), &first).await;
    let client = http();
    for (replica, operator) in [("first", &first), ("second", &second)] {
        let caches_it = eventually(WAIT, || async {
            let (status, text) = post_with(
                &client,
                operator,
                Some(WEBHOOK_TOKEN),
                one_alert(&format!("probe-{replica}"), None),
            )
            .await;
            status == 200 && text.contains("\"alarms\":1")
        })
        .await;
        assert!(caches_it, "the {replica} replica never matched the alarm");
    }

    // Alertmanager's groups spread over both replicas: writes to one alarm
    // now race across processes, which the conflict retry settles.
    notify_at_once(&[&first, &second], "replicas", None, &alarms).await;
}

#[tokio::test]
async fn with_the_api_server_frozen_the_webhook_answers_503_and_records_on_retry() {
    // A control plane of its own: freezing the shared one would stall the
    // other tests of this binary.
    let plane = testenv::ControlPlane::start(
        testenv::Options::default().crds(support::repo_root().join("crds")),
    )
    .await
    .unwrap_or_else(|error| panic!("cannot start a control plane: {error}"));
    let (ns, operator) =
        operator_with_webhook_args(&plane, "alarm-outage", &["--webhook-record-timeout", "2s"])
            .await;
    let alarms = errors_alarm(&plane, ns.name(), &operator).await;

    let client = http();
    let during = one_alert("during-the-outage", None);
    let answer = {
        let _frozen = plane.pause_apiserver();
        // The API server stays frozen until the webhook has answered: a
        // webhook that waits for it never answers (the client gives up
        // after 30 s) and fails the test.
        let response = send(
            &client,
            &operator,
            Some(WEBHOOK_TOKEN),
            Some("application/json"),
            during.clone(),
        )
        .await;
        let retry_after = response.headers().get("retry-after").cloned();
        (
            response.status().as_u16(),
            retry_after,
            response.text().await.unwrap_or_default(),
        )
    };
    let (status, retry_after, text) = answer;
    assert_eq!(status, 503, "{text}");
    assert!(retry_after.is_some(), "503 without Retry-After");
    let error: Value = serde_json::from_str(&text).expect("a JSON error");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("retry")),
        "{text}"
    );

    // Alertmanager sends it again; once the API server is back, a 200 means
    // the alert is on the alarm.
    let accepted = eventually(WAIT, || async {
        post_with(&client, &operator, Some(WEBHOOK_TOKEN), during.clone())
            .await
            .0
            == 200
    })
    .await;
    assert!(
        accepted,
        "never accepted after the outage:\n{}",
        operator.logs()
    );
    assert!(
        recorded(&alarms, "errors")
            .await
            .contains(&"during-the-outage".to_owned())
    );
}

#[tokio::test]
async fn a_namespace_label_confines_alarms_to_alerts_of_their_namespace() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook_args(
        plane,
        "alarm-nslabel",
        &["--alertmanager-namespace-label", "namespace"],
    )
    .await;
    let alarms = errors_alarm(plane, ns.name(), &operator).await;
    let before = alarms.get("errors").await.expect("alarm");

    // Alerts of another namespace, or of none, match no alarm here.
    for (fingerprint, namespace) in [("elsewhere", Some("another-team")), ("nowhere", None)] {
        let (status, text) = post(
            &operator,
            Some(WEBHOOK_TOKEN),
            one_alert(fingerprint, namespace),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"alarms\":0"), "{fingerprint}: {text}");
    }
    assert_eq!(
        alarms
            .get("errors")
            .await
            .expect("alarm")
            .resource_version(),
        before.resource_version(),
        "an alert of another namespace touched the alarm"
    );
    // One labelled with the alarm's own namespace fires it.
    let (status, text) = post(
        &operator,
        Some(WEBHOOK_TOKEN),
        one_alert("at-home", Some(ns.name())),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"alarms\":1"), "{text}");
    wait_alarm(&alarms, "errors", AlarmState::Alarm, &operator).await;
    assert_eq!(
        recorded(&alarms, "errors").await,
        vec!["at-home".to_owned()]
    );
}

#[tokio::test]
async fn without_its_secret_the_webhook_refuses_everything() {
    let plane = control_plane().await;
    let namespace = plane.namespace("alarm-nosecret").await.expect("namespace");
    let secret = format!("{}/absent", namespace.name());
    let operator = Operator::start(
        plane,
        &[
            "--namespace",
            namespace.name(),
            "--webhook-token-secret",
            &secret,
        ],
    )
    .await;
    let body = serde_json::to_vec(&notification(&[("HighErrorRate", "firing", "f-1")]))
        .expect("serializes");
    let (status, text) = post(&operator, Some(WEBHOOK_TOKEN), body).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("--webhook-token-secret"), "{text}");
}

/// A Prometheus alarm on `max(checkout_error_ratio)` above 5%, evaluated
/// every 5 s (the shortest interval the API server accepts).
fn prometheus_alarm(name: &str, prometheus: &Prometheus) -> String {
    prometheus_alarm_with(name, prometheus, "")
}

/// [`prometheus_alarm`] with more lines in its `spec.prometheus`.
fn prometheus_alarm_with(name: &str, prometheus: &Prometheus, more: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: {name}
spec:
  severity: Sev2
  prometheus:
    url: {}
    query: max(checkout_error_ratio)
    interval: 5s
    timeout: 2s
    comparison: GreaterThan
    threshold: 0.05
{more}---
",
        prometheus.url()
    )
}

/// A metrics endpoint serving the error ratio, and a real Prometheus
/// scraping it every second, once the first sample is in.
async fn error_ratio_scraped(name: &str, ratio: f64) -> (MetricsEndpoint, Prometheus) {
    let plane = control_plane().await;
    let endpoint = MetricsEndpoint::serve().expect("a metrics endpoint");
    endpoint.set("checkout_error_ratio", &[("service", "checkout")], ratio);
    let mut options = PrometheusOptions::default();
    options.scrape_targets = vec![endpoint.address()];
    let prometheus = Prometheus::start(plane.dir().join(format!("prometheus-{name}")), options)
        .await
        .unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"));
    prometheus
        .wait_for_samples("checkout_error_ratio", WAIT)
        .await
        .unwrap_or_else(|error| panic!("Prometheus never scraped the endpoint: {error}"));
    (endpoint, prometheus)
}

#[tokio::test]
async fn a_prometheus_threshold_rolls_back_and_the_dial_waits_for_a_retry() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-prom").await;
    let (endpoint, prometheus) = error_ratio_scraped(ns.name(), 0.01).await;
    let manifests = [
        prometheus_alarm("errors", &prometheus),
        dial("checkout", &["errors"]),
    ]
    .concat();
    apply_yaml(plane, ns.name(), &manifests).await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    wait_alarm(&alarms, "errors", AlarmState::Ok, &operator).await;
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "T1"
    );

    // The test raises the error rate; Prometheus scrapes it; the alarm fires.
    endpoint.set("checkout_error_ratio", &[("service", "checkout")], 0.2);
    wait_alarm(&alarms, "errors", AlarmState::Alarm, &operator).await;
    let checkout = wait_dial(&dials, "checkout", DialPhase::RolledBack, &operator).await;
    let record = checkout.status.and_then(|s| s.rollback).expect("a record");
    assert_eq!(record.value, Some(0.2), "{record:?}");
    assert_eq!(record.threshold, Some(0.05), "{record:?}");
    for realm in ["NA", "EU"] {
        assert_eq!(
            treatment(&operator, ns.name(), "checkout", realm).await,
            ("C".to_owned(), "rollback".to_owned())
        );
    }
    let alarm = alarms.get("errors").await.expect("alarm");
    let status = alarm.status.expect("status");
    assert_eq!(status.value, Some(0.2));
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("> 0.05"),
        "{status:?}"
    );
    assert!(
        status
            .datapoints
            .last()
            .is_some_and(|d| d.breaching == Some(true))
    );

    // Lower again: the alarm clears, the dial stays rolled back.
    endpoint.set("checkout_error_ratio", &[("service", "checkout")], 0.01);
    wait_alarm(&alarms, "errors", AlarmState::Ok, &operator).await;
    let seen_ok = eventually(WAIT, || async {
        dials
            .get("checkout")
            .await
            .ok()
            .and_then(|d| seen(&d, "errors"))
            == Some(AlarmState::Ok)
    })
    .await;
    assert!(seen_ok, "the dial never saw the alarm clear");
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "C"
    );
    annotate(plane, ns.name(), "checkout", "retry 1").await;
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    assert_eq!(
        treatment(&operator, ns.name(), "checkout", "NA").await.0,
        "T1"
    );
}

#[tokio::test]
async fn with_prometheus_stopped_the_alarm_has_no_data_and_the_dial_holds() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-noprom").await;
    let (_endpoint, mut prometheus) = error_ratio_scraped(ns.name(), 0.01).await;
    let stepped = "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: checkout
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {T1: 100}
  steps:
    - allocation: {C: 90, T1: 10}
      pause: true
  rollback:
    alarms:
      names: [errors]
";
    apply_yaml(
        plane,
        ns.name(),
        &[prometheus_alarm("errors", &prometheus), stepped.to_owned()].concat(),
    )
    .await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    wait_dial(&dials, "checkout", DialPhase::Paused, &operator).await;

    prometheus.stop();
    wait_alarm(&alarms, "errors", AlarmState::InsufficientData, &operator).await;
    let alarm = alarms.get("errors").await.expect("alarm");
    let status = alarm.status.expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"),
        "{status:?}"
    );
    // A person resumes, but the step towards risk waits for data.
    annotate(plane, ns.name(), "checkout", "resume 1").await;
    let held = wait_dial(&dials, "checkout", DialPhase::Waiting, &operator).await;
    let status = held.status.expect("status");
    let waiting_for = status.step.and_then(|s| s.waiting_for).unwrap_or_default();
    assert!(waiting_for.contains("errors"), "{waiting_for}");
    assert!(
        status
            .realms
            .iter()
            .all(|r| r.allocation.to_string() == "C:90 T1:10"),
        "{:?}",
        status.realms
    );

    // Data again: the dial goes on.
    prometheus.restart().await.expect("Prometheus restarts");
    wait_alarm(&alarms, "errors", AlarmState::Ok, &operator).await;
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
}

#[tokio::test]
async fn below_its_traffic_floor_a_quiet_realm_cannot_roll_back() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "alarm-floor").await;
    // 3 a.m.: one request in the last minute, and it failed.
    let (endpoint, prometheus) = error_ratio_scraped(ns.name(), 1.0).await;
    let volume = "checkout_requests_per_second";
    endpoint.set(volume, &[("service", "checkout")], 0.02);
    prometheus
        .wait_for_samples(volume, WAIT)
        .await
        .unwrap_or_else(|error| panic!("Prometheus never scraped {volume}: {error}"));
    let alarm = prometheus_alarm_with(
        "errors",
        &prometheus,
        &format!(
            "    missingData: notBreaching
    trafficFloor:
      query: sum({volume})
      minimum: 1
"
        ),
    );
    apply_yaml(
        plane,
        ns.name(),
        &[alarm, dial("checkout", &["errors"])].concat(),
    )
    .await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    wait_alarm(&alarms, "errors", AlarmState::Ok, &operator).await;
    wait_dial(&dials, "checkout", DialPhase::Dialed, &operator).await;
    let status = alarms
        .get("errors")
        .await
        .expect("alarm")
        .status
        .expect("status");
    assert_eq!(status.value, Some(1.0), "the value is shown: {status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(reason.contains("below the floor 1"), "{reason}");

    // Traffic returns with the same error ratio: now it counts.
    endpoint.set(volume, &[("service", "checkout")], 40.0);
    wait_alarm(&alarms, "errors", AlarmState::Alarm, &operator).await;
    wait_dial(&dials, "checkout", DialPhase::RolledBack, &operator).await;
}
