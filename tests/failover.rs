//! High availability with two real operator processes (as the chart's
//! ServiceAccount, on the chart's Lease): only the leader writes, the
//! follower serves assignments, and when the leader is killed with SIGKILL
//! (no chance to release the lease) the follower takes over once the lease
//! expires and carries the dial on: every step exactly once in its history.
//! A webhook notification received by the follower takes effect too.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::{Operator, apply_yaml, chart_identity, control_plane, eventually};
use weblab_operator::api::{Alarm, WeblabDial, alarm::AlarmState, weblab_dial::DialPhase};

/// Short lease timings so the test takes seconds, not the default 15 s.
const LEASE: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];

/// The webhook token Secret, in the chart's release namespace as the chart
/// deploys it (the only Secret namespace its RBAC grants without config).
const TOKEN_SECRET: &str = "failover-webhook-token";
const TOKEN: &str = "failover-token-91d2";

const STEPS: [&str; 5] = [
    "C:90 T1:10",
    "C:80 T1:20",
    "C:70 T1:30",
    "C:60 T1:40",
    "C:50 T1:50",
];

fn dial_yaml() -> String {
    let steps: String = (1..=5)
        .map(|i| {
            format!(
                "    - allocation: {{C: {}, T1: {}}}\n      bake: 1s\n",
                100 - 10 * i,
                10 * i
            )
        })
        .collect();
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: failover
spec:
  weblab: FAILOVER
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {{T1: 100}}
  steps:
{steps}  waves:
    - realms: [NA]
    - realms: [EU]
"
    )
}

async fn is_leader(operator: &Operator) -> bool {
    matches!(operator.get("/metrics").await, Some((200, text)) if text.lines().any(|l| l == "weblab_leader 1"))
}

async fn start(identity: &str, namespace: &str) -> Operator {
    let plane = control_plane().await;
    let chart = chart_identity(plane).await;
    let secret = format!("{}/{TOKEN_SECRET}", support::CHART_NAMESPACE);
    let mut args = vec![
        "--namespace",
        namespace,
        "--leader-election",
        "--identity",
        identity,
        "--webhook-token-secret",
        &secret,
    ];
    args.extend(LEASE);
    Operator::start_as(plane, chart, &args).await
}

#[tokio::test]
async fn the_follower_serves_and_takes_over_a_progressing_dial_after_the_leader_is_killed() {
    let plane = control_plane().await;
    let chart = chart_identity(plane).await;
    let ns = plane.namespace("failover").await.expect("namespace");
    apply_yaml(
        plane,
        support::CHART_NAMESPACE,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {TOKEN_SECRET}\nstringData:\n  token: {TOKEN}\n"
        ),
    )
    .await;
    let first = start("replica-a", ns.name()).await;
    assert!(
        eventually(Duration::from_secs(30), || is_leader(&first)).await,
        "the first replica never led:\n{}",
        first.logs()
    );
    let second = start("replica-b", ns.name()).await;
    assert!(!is_leader(&second).await, "two leaders");

    let client = plane.client().await.expect("client");
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns.name());
    apply_yaml(plane, ns.name(), &dial_yaml()).await;
    let history_len = || async {
        dials
            .get("failover")
            .await
            .ok()
            .and_then(|dial| dial.status)
            .map_or(0, |status| status.history.len())
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            history_len().await >= 3
        })
        .await,
        "the leader did not progress:\n{}",
        first.logs()
    );

    // The follower serves assignments from its own cache, the same answer
    // as the leader's.
    let path = format!(
        "/v1/weblabs/{}/failover/treatment?unit=customer-7&realm=NA",
        ns.name()
    );
    let (status, from_follower) = second.get(&path).await.expect("the follower answers");
    assert_eq!(status, 200, "{from_follower}");
    let answer: serde_json::Value = serde_json::from_str(&from_follower).expect("JSON");
    assert!(answer["treatment"].is_string(), "{answer}");
    assert!(
        !is_leader(&second).await,
        "the follower answered as a follower"
    );

    // A notification that reaches the follower is recorded by the follower.
    apply_yaml(
        plane,
        ns.name(),
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: pushed
spec:
  severity: Sev3
  alertmanager:
    matchers: [{name: alertname, value: FollowerTest}]
",
    )
    .await;
    let notification = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "weblab", "groupKey": "{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "FollowerTest"},
                    "fingerprint": "f0110e4e5"}]
    });
    let alarms: Api<Alarm> = Api::namespaced(client.clone(), ns.name());
    let recorded = eventually(Duration::from_secs(30), || async {
        // The alarm may not be in the follower's cache at the first try.
        let _ = support::http()
            .post(format!("{}/v1/webhooks/alertmanager", second.base))
            .bearer_auth(TOKEN)
            .json(&notification)
            .send()
            .await;
        alarms
            .get("pushed")
            .await
            .ok()
            .and_then(|alarm| alarm.status?.state)
            == Some(AlarmState::Alarm)
    })
    .await;
    assert!(
        recorded,
        "the follower did not record the alert:\n{}",
        second.logs()
    );
    assert!(!is_leader(&second).await, "still a follower");

    let before = history_len().await;
    first.kill().await;
    let killed = Instant::now();
    let took_over = eventually(Duration::from_secs(30), || is_leader(&second)).await;
    let takeover = killed.elapsed();
    assert!(
        took_over,
        "the follower never took over:\n{}",
        second.logs()
    );
    println!("takeover after SIGKILL: {takeover:?} (lease duration 3s)");

    let leases: Api<Lease> = Api::namespaced(client, &chart.namespace);
    let lease = leases
        .get(support::CHART_RELEASE)
        .await
        .expect("the Lease")
        .spec
        .expect("spec");
    assert_eq!(lease.holder_identity.as_deref(), Some("replica-b"));
    assert!(lease.lease_transitions.unwrap_or(0) >= 1);

    let dialed = eventually(Duration::from_secs(90), || async {
        dials
            .get("failover")
            .await
            .is_ok_and(|dial| dial.status.and_then(|s| s.phase) == Some(DialPhase::Dialed))
    })
    .await;
    assert!(dialed, "the new leader did not finish:\n{}", second.logs());
    let history = dials
        .get("failover")
        .await
        .expect("dial")
        .status
        .expect("status")
        .history;
    assert!(
        history.len() > before,
        "the new leader made no progress of its own"
    );
    let applied: Vec<(String, String)> = history
        .iter()
        .map(|change| (change.realm.clone(), change.to.to_string()))
        .collect();
    let expected: Vec<(String, String)> = STEPS
        .iter()
        .chain(["T1:100"].iter())
        .flat_map(|to| {
            [
                ("NA".to_owned(), (*to).to_owned()),
                ("EU".to_owned(), (*to).to_owned()),
            ]
        })
        .collect();
    assert_eq!(
        applied, expected,
        "every step of every realm exactly once, in order"
    );

    // A rolling update: a third replica joins, the leader gets SIGTERM,
    // releases the Lease and the newcomer leads without waiting for expiry.
    let third = start("replica-c", ns.name()).await;
    assert!(!is_leader(&third).await, "two leaders");
    let terminated = Instant::now();
    let (exit, handed_over) = tokio::join!(
        second.terminate(),
        eventually(Duration::from_secs(30), || is_leader(&third)),
    );
    assert!(exit.success(), "the leader exits 0 on SIGTERM: {exit}");
    assert!(handed_over, "no hand-over:\n{}", third.logs());
    println!(
        "hand-over after SIGTERM: {:?} (retry period 500ms)",
        terminated.elapsed()
    );
    let (status, answer) = third.get(&path).await.expect("answers");
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(answer["treatment"], "T1", "at 100% T1 every unit is in T1");
}
