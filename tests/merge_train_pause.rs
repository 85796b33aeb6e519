//! MergeTrainPause end to end: the real operator process against a real
//! kube-apiserver, manifests applied with `kubectl`, and the gate queried
//! with the real `curl --fail` exactly as a CI job would. Alarms fire and
//! resolve by alerts pushed to the operator's webhook, as Alertmanager would.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::{Api, ResourceExt, api::ListParams};
use support::{
    Operator, apply_yaml, control_plane, eventually, kubectl, operator_for_new_namespace,
    operator_with_webhook, push_alert,
};
use weblab_operator::api::{
    MergeTrainPause, WeblabDial, merge_train_pause::PausePhase, weblab_dial::DialPhase,
};

const WAIT: Duration = Duration::from_secs(60);

/// `curl --fail` against the gate: its exit code (0 open, 22 on 423).
async fn curl_gate(operator: &Operator, namespace: &str, train: &str) -> i32 {
    let output = tokio::process::Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--max-time", "10"])
        .arg(format!("{}/v1/gates/{namespace}/{train}", operator.base))
        .output()
        .await
        .expect("curl runs");
    output.status.code().unwrap_or(-1)
}

async fn gate_answer(
    operator: &Operator,
    namespace: &str,
    train: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = operator
        .get(&format!("/v1/gates/{namespace}/{train}"))
        .await
        .expect("the operator answers");
    (status, serde_json::from_str(&body).expect("JSON"))
}

fn pause_yaml(name: &str, train: &str, end: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: MergeTrainPause
metadata:
  name: {name}
spec:
  train: {train}
  reason: {name} holds the train
  ticket: https://tickets.example.com/{name}
{end}"
    )
}

async fn phase(api: &Api<MergeTrainPause>, name: &str) -> Option<PausePhase> {
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.status)
        .and_then(|s| s.phase)
}

async fn wait_for_phase(
    api: &Api<MergeTrainPause>,
    name: &str,
    want: PausePhase,
    operator: &Operator,
) {
    let reached = eventually(WAIT, || async { phase(api, name).await == Some(want) }).await;
    let current = api.get_opt(name).await.ok().flatten();
    assert!(
        reached,
        "{name} never reached {want:?}: {:#?}\noperator log:\n{}",
        current.map(|p| p.status),
        operator.logs()
    );
}

async fn events(plane: &testenv::ControlPlane, namespace: &str, name: &str, reason: &str) -> usize {
    let api: Api<Event> = Api::namespaced(plane.client().await.expect("client"), namespace);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| usize::try_from(e.count.unwrap_or(1)).unwrap_or(1))
        .sum()
}

/// The status writes a controller made so far, from `/metrics`.
async fn status_writes(operator: &Operator, manager: &str) -> f64 {
    let (_, text) = operator.get("/metrics").await.expect("metrics");
    text.lines()
        .filter(|line| line.starts_with("weblab_status_writes_total{") && line.contains(manager))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn gate_pauses_combine_and_deleting_one_resumes_exactly_once() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-gate").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);

    assert_eq!(
        curl_gate(&operator, &ns, "web-main").await,
        0,
        "no pause: open"
    );

    apply_yaml(
        plane,
        &ns,
        &pause_yaml("release-freeze", "web-main", "  duration: 1h\n"),
    )
    .await;
    apply_yaml(
        plane,
        &ns,
        &pause_yaml("sev2-freeze", "web-main", "  duration: 2h\n"),
    )
    .await;
    wait_for_phase(&api, "release-freeze", PausePhase::Paused, &operator).await;
    wait_for_phase(&api, "sev2-freeze", PausePhase::Paused, &operator).await;
    // Settled pauses are quiet: no status write while nothing changes.
    let writes = status_writes(&operator, "weblab-operator/mergetrainpause").await;
    assert!(writes > 0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status_writes(&operator, "weblab-operator/mergetrainpause").await,
        writes
    );
    let paused = api.get("release-freeze").await.expect("exists");
    assert!(
        paused
            .finalizers()
            .iter()
            .any(|f| f == "weblab.dev/resume-train")
    );

    assert_eq!(
        curl_gate(&operator, &ns, "web-main").await,
        22,
        "423 fails curl --fail"
    );
    assert_eq!(curl_gate(&operator, &ns, "other-train").await, 0);
    let (status, body) = gate_answer(&operator, &ns, "web-main").await;
    assert_eq!(status, 423);
    assert_eq!(body["open"], false);
    let reasons = body["reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 2, "{body}");
    assert_eq!(reasons[0]["kind"], "MergeTrainPause");
    assert_eq!(reasons[0]["name"], "release-freeze");
    // Anonymous callers learn what holds the train, not why (tests/http_server.rs
    // shows the details going to the namespace's token).
    assert_eq!(
        reasons[0].as_object().map(|r| r.len()),
        Some(2),
        "only kind and name: {body}"
    );

    // One of two deleted: still held by the other.
    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/release-freeze",
            "--wait=true",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    assert!(
        api.get_opt("release-freeze")
            .await
            .expect("reads")
            .is_none()
    );
    assert_eq!(events(plane, &ns, "release-freeze", "Resumed").await, 1);
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 22);

    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/sev2-freeze",
            "--wait=true",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    let open = eventually(WAIT, || async {
        curl_gate(&operator, &ns, "web-main").await == 0
    })
    .await;
    assert!(open, "the gate opens once every pause is gone");
    assert_eq!(
        events(plane, &ns, "sev2-freeze", "Resumed").await,
        1,
        "resumed exactly once"
    );
    assert_eq!(events(plane, &ns, "sev2-freeze", "Paused").await, 1);
}

#[tokio::test]
async fn a_pause_resumes_at_its_expiry() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-expiry").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);

    let expires = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(6))
        .expect("instant")
        .round(jiff::Unit::Second)
        .expect("rounds");
    apply_yaml(
        plane,
        &ns,
        &pause_yaml(
            "short",
            "web-main",
            &format!("  expiresAt: \"{expires}\"\n"),
        ),
    )
    .await;
    wait_for_phase(&api, "short", PausePhase::Paused, &operator).await;
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 22);
    // kubectl shows the future expiry as a time, not as `<invalid>`.
    let listed = kubectl(plane, &["get", "-n", &ns, "mtp", "short"]).await;
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains(&expires.to_string()) && !table.contains("<invalid>"),
        "{}",
        support::describe(&listed)
    );
    wait_for_phase(&api, "short", PausePhase::Resumed, &operator).await;
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 0);
    let status = api
        .get("short")
        .await
        .expect("kept")
        .status
        .expect("status");
    let resumed_at = status.resumed_at.expect("resumedAt").0;
    assert!(
        resumed_at >= expires,
        "resumed at {resumed_at}, expiry {expires}"
    );
}

fn alarm_yaml(name: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: {name}
  labels:
    team: web
spec:
  severity: Sev2
  alertmanager:
    matchers:
      - name: alertname
        value: {name}
"
    )
}

#[tokio::test]
async fn resume_when_waits_for_the_alarm_to_be_ok_for_clear_for() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "mtp-resume").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);

    apply_yaml(plane, &ns, &alarm_yaml("api-errors")).await;
    push_alert(&operator, "api-errors", "firing").await;
    apply_yaml(
        plane,
        &ns,
        &pause_yaml(
            "incident",
            "web-main",
            "  duration: 4h\n  resumeWhen:\n    alarms:\n      selector:\n        matchLabels: {team: web}\n    clearFor: 3s\n",
        ),
    )
    .await;
    wait_for_phase(&api, "incident", PausePhase::Paused, &operator).await;
    // While the alarm fires, the pause holds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(phase(&api, "incident").await, Some(PausePhase::Paused));

    push_alert(&operator, "api-errors", "resolved").await;
    let cleared = jiff::Timestamp::now();
    wait_for_phase(&api, "incident", PausePhase::Resumed, &operator).await;
    let resumed_at = api
        .get("incident")
        .await
        .expect("kept")
        .status
        .and_then(|s| s.resumed_at)
        .expect("resumedAt")
        .0;
    // The status times are whole seconds; allow for that rounding.
    assert!(
        resumed_at.as_second() + 1 >= cleared.as_second() + 3,
        "resumed at {resumed_at}, cleared at {cleared}"
    );
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 0);
}

#[tokio::test]
async fn a_dial_rolled_back_by_an_alarm_pauses_its_trains_until_retried() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "mtp-dial").await;
    let ns = ns.name().to_owned();
    let client = plane.client().await.expect("client");
    let pauses: Api<MergeTrainPause> = Api::namespaced(client.clone(), &ns);
    let dials: Api<WeblabDial> = Api::namespaced(client, &ns);

    apply_yaml(plane, &ns, &alarm_yaml("checkout-errors")).await;
    push_alert(&operator, "checkout-errors", "resolved").await;
    apply_yaml(
        plane,
        &ns,
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: CHECKOUT
  treatments: [C, T1]
  realms: [NA]
  allocation: {C: 50, T1: 50}
  rollback:
    alarms: {names: [checkout-errors]}
    pauseMergeTrains:
      - train: web-main
",
    )
    .await;
    let dial_phase = |want: DialPhase| {
        let dials = dials.clone();
        async move {
            eventually(WAIT, || async {
                dials
                    .get("checkout")
                    .await
                    .ok()
                    .and_then(|d| d.status)
                    .and_then(|s| s.phase)
                    == Some(want)
            })
            .await
        }
    };
    assert!(
        dial_phase(DialPhase::Dialed).await,
        "log:\n{}",
        operator.logs()
    );
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 0);

    push_alert(&operator, "checkout-errors", "firing").await;
    assert!(
        dial_phase(DialPhase::RolledBack).await,
        "log:\n{}",
        operator.logs()
    );
    wait_for_phase(&pauses, "checkout-web-main", PausePhase::Paused, &operator).await;
    let pause = pauses.get("checkout-web-main").await.expect("created");
    let owner = &pause.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("WeblabDial", "checkout", Some(true))
    );
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 22);

    push_alert(&operator, "checkout-errors", "resolved").await;
    let output = kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "-n",
            &ns,
            "weblabdial/checkout",
            "weblab.dev/action=retry 1",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    let gone = eventually(WAIT, || async {
        pauses
            .get_opt("checkout-web-main")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;
    assert!(
        gone,
        "the owned pause is deleted after the retry; log:\n{}",
        operator.logs()
    );
    assert_eq!(curl_gate(&operator, &ns, "web-main").await, 0);
    assert_eq!(events(plane, &ns, "checkout-web-main", "Resumed").await, 1);
}

/// A webhook receiver that counts the actions it accepted (signature
/// checked) after refusing the first `fail_first` requests with 500.
struct Receiver {
    url: String,
    actions: std::sync::Arc<std::sync::Mutex<(usize, Vec<String>)>>,
}

async fn receiver(key: &'static [u8], fail_first: usize) -> Receiver {
    use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post};
    use weblab_operator::controllers::merge_train_pause::webhook::{
        SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
    };
    type Shared = std::sync::Arc<std::sync::Mutex<(usize, Vec<String>)>>;
    let actions: Shared = std::sync::Arc::new(std::sync::Mutex::new((fail_first, Vec::new())));
    let handler = move |State(shared): State<Shared>, headers: HeaderMap, body: Bytes| async move {
        let mut state = shared.lock().expect("lock");
        if state.0 > 0 {
            state.0 -= 1;
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let timestamp: i64 = header(TIMESTAMP_HEADER).parse().unwrap_or_default();
        if sign(key, timestamp, &body) != header(SIGNATURE_HEADER) {
            return axum::http::StatusCode::UNAUTHORIZED;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        state
            .1
            .push(json["action"].as_str().unwrap_or_default().to_owned());
        axum::http::StatusCode::OK
    };
    let app = axum::Router::new()
        .route("/hook", post(handler))
        .with_state(actions.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, actions }
}

#[tokio::test]
async fn a_webhook_pause_shows_failures_retries_and_resumes_once_on_delete() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-webhook").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);
    // One failed call (three attempts) before the receiver accepts.
    let hook = receiver(b"shared-secret", 3).await;

    apply_yaml(
        plane,
        &ns,
        &format!(
            "apiVersion: v1
kind: Secret
metadata:
  name: hook
stringData:
  key: shared-secret
---
{}  provider:
    type: Webhook
    webhook:
      url: {}
      secretRef: {{name: hook, key: key}}
",
            pause_yaml("queue-freeze", "queue-main", "  duration: 1h\n"),
            hook.url
        ),
    )
    .await;
    let failed_once = eventually(WAIT, || async {
        api.get("queue-freeze")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.failures == 1)
    })
    .await;
    assert!(
        failed_once,
        "the failure shows in status; log:\n{}",
        operator.logs()
    );
    assert!(events(plane, &ns, "queue-freeze", "ProviderFailed").await >= 1);
    wait_for_phase(&api, "queue-freeze", PausePhase::Paused, &operator).await;
    let status = api
        .get("queue-freeze")
        .await
        .expect("exists")
        .status
        .expect("status");
    assert_eq!(status.failures, 0, "a success clears the failures");
    assert_eq!(hook.actions.lock().expect("lock").1, ["pause"]);

    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/queue-freeze",
            "--wait=true",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    assert_eq!(
        hook.actions.lock().expect("lock").1,
        ["pause", "resume"],
        "resumed exactly once"
    );
}
