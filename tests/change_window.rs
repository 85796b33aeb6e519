//! ChangeWindow end to end: the real operator evaluates windows against a
//! real kube-apiserver; a dial-up waits while its window is closed, and a
//! dial-down or an abort does not. Alarms fire and resolve by alerts pushed
//! to the operator's webhook, and the merge-train gate of a
//! train the window lists is checked with `curl --fail`.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::Api;
use support::{
    Operator, apply_yaml, control_plane, eventually, kubectl, operator_for_new_namespace,
    operator_with_webhook, push_alert,
};
use weblab_operator::api::{ChangeWindow, WeblabDial, weblab_dial::DialPhase};

const WAIT: Duration = Duration::from_secs(60);

/// A window open all week except for a blackout from `start` to `end`.
fn window_yaml(start: Timestamp, end: Timestamp) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: ChangeWindow
metadata:
  name: protocol
spec:
  timeZone: America/Los_Angeles
  blackouts:
    - name: freeze
      start: \"{start}\"
      end: \"{end}\"
  closedWhileAlarms:
    selector:
      matchLabels: {{team: web}}
    severity: Sev2
  mergeTrains: [web-main]
"
    )
}

fn hours(n: i64) -> Timestamp {
    Timestamp::now()
        .checked_add(SignedDuration::from_hours(n))
        .expect("instant")
        .round(jiff::Unit::Second)
        .expect("rounds")
}

fn dial_yaml(allocation: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: CHECKOUT
  treatments: [C, T1]
  realms: [NA]
  allocation: {allocation}
  changeWindowRef: {{name: protocol}}
"
    )
}

async fn window_open(api: &Api<ChangeWindow>) -> Option<bool> {
    api.get("protocol").await.ok()?.status?.open
}

async fn wait_window(api: &Api<ChangeWindow>, want: bool, operator: &Operator) -> ChangeWindow {
    let reached = eventually(WAIT, || async { window_open(api).await == Some(want) }).await;
    let current = api.get("protocol").await.expect("exists");
    assert!(
        reached,
        "the window never became open={want}: {:#?}\nlog:\n{}",
        current.status,
        operator.logs()
    );
    current
}

async fn wait_dial(api: &Api<WeblabDial>, want: DialPhase, operator: &Operator) -> WeblabDial {
    let reached = eventually(WAIT, || async {
        api.get("checkout")
            .await
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.phase)
            == Some(want)
    })
    .await;
    let current = api.get("checkout").await.expect("exists");
    assert!(
        reached,
        "the dial never reached {want:?}: {:#?}\nlog:\n{}",
        current.status,
        operator.logs()
    );
    current
}

async fn curl_gate(operator: &Operator, namespace: &str) -> i32 {
    tokio::process::Command::new("curl")
        .args(["--fail", "--silent", "--max-time", "10"])
        .arg(format!("{}/v1/gates/{namespace}/web-main", operator.base))
        .output()
        .await
        .expect("curl runs")
        .status
        .code()
        .unwrap_or(-1)
}

#[tokio::test]
async fn a_closed_window_holds_dial_ups_but_never_dial_downs_or_aborts() {
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "window-dial").await;
    let ns = ns.name().to_owned();
    let client = plane.client().await.expect("client");
    let windows: Api<ChangeWindow> = Api::namespaced(client.clone(), &ns);
    let dials: Api<WeblabDial> = Api::namespaced(client, &ns);

    // Open: the blackout is tomorrow.
    let (start, end) = (hours(24), hours(48));
    apply_yaml(plane, &ns, &window_yaml(start, end)).await;
    let open = wait_window(&windows, true, &operator).await;
    let status = open.status.expect("status");
    assert_eq!(
        status.next_transition.map(|t| t.0),
        Some(start),
        "closes when the blackout starts"
    );
    assert_eq!(curl_gate(&operator, &ns).await, 0);

    apply_yaml(plane, &ns, &dial_yaml("{C: 50, T1: 50}")).await;
    wait_dial(&dials, DialPhase::Dialed, &operator).await;

    // Closed: the blackout is now, until tomorrow.
    let end = hours(24);
    apply_yaml(plane, &ns, &window_yaml(hours(-1), end)).await;
    let closed = wait_window(&windows, false, &operator).await;
    let status = closed.status.expect("status");
    assert!(
        status
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("blackout freeze")),
        "{status:?}"
    );
    assert_eq!(status.next_transition.map(|t| t.0), Some(end));
    assert_eq!(
        curl_gate(&operator, &ns).await,
        22,
        "the listed train's gate is closed"
    );

    // A dial-up waits, visibly, with the window's reason.
    apply_yaml(plane, &ns, &dial_yaml("{C: 25, T1: 75}")).await;
    let waiting = wait_dial(&dials, DialPhase::Waiting, &operator).await;
    let waiting_for = waiting
        .status
        .and_then(|s| s.step)
        .and_then(|s| s.waiting_for)
        .unwrap_or_default();
    assert!(
        waiting_for.contains("protocol") && waiting_for.contains("blackout"),
        "{waiting_for}"
    );

    // A dial-down does not.
    apply_yaml(plane, &ns, &dial_yaml("{C: 90, T1: 10}")).await;
    let down = wait_dial(&dials, DialPhase::Dialed, &operator).await;
    let served = down.status.expect("status").realms[0]
        .allocation
        .to_string();
    assert_eq!(served, "C:90 T1:10");

    // Nor does an abort.
    let output = kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "-n",
            &ns,
            "weblabdial/checkout",
            "weblab.dev/action=abort 1",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    let aborted = wait_dial(&dials, DialPhase::Aborted, &operator).await;
    assert_eq!(
        aborted.status.expect("status").realms[0]
            .allocation
            .to_string(),
        "C:100"
    );
}

#[tokio::test]
async fn an_alarm_at_sev2_closes_the_window_at_once_and_its_recovery_reopens_it() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "window-alarm").await;
    let ns = ns.name().to_owned();
    let windows: Api<ChangeWindow> = Api::namespaced(plane.client().await.expect("client"), &ns);

    apply_yaml(plane, &ns, &window_yaml(hours(24), hours(48))).await;
    wait_window(&windows, true, &operator).await;
    for (name, severity) in [("api-errors", "Sev2"), ("latency", "Sev3")] {
        apply_yaml(
            plane,
            &ns,
            &format!(
                "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: {name}
  labels: {{team: web}}
spec:
  severity: {severity}
  alertmanager:
    matchers:
      - name: alertname
        value: {name}
"
            ),
        )
        .await;
    }
    // A Sev3 only notifies: the window stays open.
    push_alert(&operator, "latency", "firing").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(window_open(&windows).await, Some(true));

    push_alert(&operator, "api-errors", "firing").await;
    let closed = wait_window(&windows, false, &operator).await;
    assert_eq!(
        closed.status.and_then(|s| s.reason).as_deref(),
        Some("closed: alarm api-errors (Sev2) is in ALARM")
    );
    assert_eq!(curl_gate(&operator, &ns).await, 22);

    push_alert(&operator, "api-errors", "resolved").await;
    wait_window(&windows, true, &operator).await;
    assert_eq!(curl_gate(&operator, &ns).await, 0);
}
