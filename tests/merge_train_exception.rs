//! MergeTrainException end to end: the real operator process against a real
//! kube-apiserver, manifests applied with `kubectl`, and the gate queried
//! with the real `curl --fail` as a CI job would: the fix named by an
//! exception passes a held train (exit 0), every other merge request is
//! refused (exit 22 on 423), an expired exception lets nothing through, and
//! the uses the gate answered are recorded in status and one event.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use support::{Operator, apply_yaml, control_plane, describe, eventually, kubectl, repo_root};
use testenv::ControlPlane;
use weblab_operator::api::{
    MergeTrainException, MergeTrainPause, merge_train_exception::ExceptionPhase,
    merge_train_pause::PausePhase,
};

const WAIT: Duration = Duration::from_secs(60);

/// `curl --fail` against the gate of `train` with `query`: its exit code
/// (0 open or let through, 22 on 423 or 400).
async fn curl_gate(operator: &Operator, namespace: &str, train: &str, query: &str) -> i32 {
    let output = tokio::process::Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--max-time", "10"])
        .arg(format!(
            "{}/v1/gates/{namespace}/{train}{query}",
            operator.base
        ))
        .output()
        .await
        .expect("curl runs");
    output.status.code().unwrap_or(-1)
}

async fn gate_answer(
    operator: &Operator,
    namespace: &str,
    train: &str,
    query: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = operator
        .get(&format!("/v1/gates/{namespace}/{train}{query}"))
        .await
        .expect("the operator answers");
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, json)
}

fn pause_yaml(name: &str, train: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: MergeTrainPause
metadata:
  name: {name}
spec:
  train: {train}
  reason: Sev2 in progress; only the fix merges
  duration: 2h
"
    )
}

fn exception_yaml(name: &str, train: &str, names: &str, end: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: MergeTrainException
metadata:
  name: {name}
spec:
  train: {train}
{names}
  reason: the fix for the Sev2
  approvedBy: oncall@example.com
{end}"
    )
}

async fn wait_pause(api: &Api<MergeTrainPause>, name: &str, operator: &Operator) {
    let paused = eventually(WAIT, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            == Some(PausePhase::Paused)
    })
    .await;
    assert!(paused, "{name} never paused:\n{}", operator.logs());
}

async fn wait_exception<F>(
    api: &Api<MergeTrainException>,
    name: &str,
    operator: &Operator,
    what: &str,
    check: F,
) -> MergeTrainException
where
    F: Fn(&MergeTrainException) -> bool,
{
    let reached = eventually(WAIT, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some_and(|exception| check(&exception))
    })
    .await;
    let current = api.get(name).await.expect("exists");
    assert!(
        reached,
        "{name} never {what}: {:#?}\nlog:\n{}",
        current.status,
        operator.logs()
    );
    current
}

fn phase(exception: &MergeTrainException) -> Option<ExceptionPhase> {
    exception.status.as_ref().and_then(|s| s.phase)
}

async fn events(plane: &ControlPlane, namespace: &str, name: &str, reason: &str) -> usize {
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

/// A metric's value summed over its label sets, from `/metrics`.
async fn metric(operator: &Operator, prefix: &str) -> f64 {
    let (_, text) = operator.get("/metrics").await.expect("metrics");
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const EXCEPTION_WRITES: &str =
    "weblab_status_writes_total{controller=\"weblab-operator/mergetrainexception\"";

const FIX: &str = "?project=graphql%2Fapi&mergeRequest=4127";

#[tokio::test]
async fn the_fix_passes_a_held_train_and_nothing_else_does() {
    let plane = control_plane().await;
    let team = plane.namespace("mte-fix").await.expect("namespace");
    let other = plane.namespace("mte-other").await.expect("namespace");
    let (ns, other_ns) = (team.name().to_owned(), other.name().to_owned());
    let watched = format!("{ns},{other_ns}");
    let operator = Operator::start(plane, &["--namespace", &watched]).await;
    let client = plane.client().await.expect("client");
    let pauses: Api<MergeTrainPause> = Api::namespaced(client.clone(), &ns);
    let exceptions: Api<MergeTrainException> = Api::namespaced(client, &ns);

    // Both namespaces hold their graphql-main train.
    apply_yaml(plane, &ns, &pause_yaml("sev2-freeze", "graphql-main")).await;
    apply_yaml(plane, &other_ns, &pause_yaml("sev2-freeze", "graphql-main")).await;
    wait_pause(&pauses, "sev2-freeze", &operator).await;
    let other_pauses: Api<MergeTrainPause> =
        Api::namespaced(plane.client().await.expect("client"), &other_ns);
    wait_pause(&other_pauses, "sev2-freeze", &operator).await;
    assert_eq!(curl_gate(&operator, &ns, "graphql-main", FIX).await, 22);

    // The example, as a person applies it.
    let example = repo_root().join("examples/mergetrainexception-fix.yaml");
    let applied = kubectl(
        plane,
        &["apply", "-n", &ns, "-f", &example.to_string_lossy()],
    )
    .await;
    assert!(applied.status.success(), "{}", describe(&applied));
    let active = wait_exception(
        &exceptions,
        "sev2-7781-fix",
        &operator,
        "became Active",
        |e| phase(e) == Some(ExceptionPhase::Active),
    )
    .await;
    let status = active.status.expect("status");
    assert!(status.expires_at.is_some());
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "TrainKnown" && c.status == "True"),
        "{status:?}"
    );
    assert_eq!(
        events(plane, &ns, "sev2-7781-fix", "ExceptionActive").await,
        1
    );
    // The Active write is counted once the write returns.
    let writes = || metric(&operator, EXCEPTION_WRITES);
    assert!(eventually(WAIT, || async { writes().await >= 1.0 }).await);
    let writes_before_uses = writes().await;

    // The fix passes: its first use is recorded at once, with one event.
    let first_use = Instant::now();
    assert_eq!(curl_gate(&operator, &ns, "graphql-main", FIX).await, 0);
    let used = wait_exception(
        &exceptions,
        "sev2-7781-fix",
        &operator,
        "recorded a use",
        |e| e.status.as_ref().is_some_and(|s| s.uses >= 1),
    )
    .await;
    println!(
        "first use to its record in status: {} ms",
        first_use.elapsed().as_millis()
    );
    let status = used.status.expect("status");
    assert_eq!(status.uses, 1, "{status:?}");
    assert!(status.first_used.is_some() && status.first_used == status.last_used);
    let event_seen = eventually(WAIT, || async {
        events(plane, &ns, "sev2-7781-fix", "ExceptionUsed").await == 1
    })
    .await;
    assert!(event_seen, "no ExceptionUsed event:\n{}", operator.logs());

    // Every other merge request, and a caller naming none, is refused; the
    // other namespace's train stays held for the fix too.
    for refused in [
        "",
        "?project=graphql%2Fapi&mergeRequest=4128",
        "?project=graphql%2Fweb&mergeRequest=4127",
        "?sha=0123456789abcdef0123456789abcdef01234567",
    ] {
        assert_eq!(
            curl_gate(&operator, &ns, "graphql-main", refused).await,
            22,
            "{refused:?} must be refused"
        );
    }
    assert_eq!(
        curl_gate(&operator, &other_ns, "graphql-main", FIX).await,
        22,
        "an exception opens nothing in another namespace"
    );

    // A malformed query is a JSON 400, whatever the train's state.
    for (query, says) in [
        ("?mergeRequest=4127", "mergeRequest needs project"),
        ("?project=graphql%2Fapi&mergeRequest=abc", "IID"),
        ("?sha=0123abc", "full commit SHA"),
    ] {
        for train in ["graphql-main", "open-train"] {
            let (status, body) = gate_answer(&operator, &ns, train, query).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains(says)),
                "{query}: {body}"
            );
        }
    }
    assert_eq!(
        curl_gate(&operator, &ns, "open-train", FIX).await,
        0,
        "an open train is open, and no use"
    );

    // Four more: batched, not a write per request.
    let batch_started = Instant::now();
    let (status, body) = gate_answer(&operator, &ns, "graphql-main", FIX).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["open"], true);
    assert_eq!(body["exception"], "sev2-7781-fix");
    assert_eq!(
        body["reasons"][0]["name"], "sev2-freeze",
        "what it was let through: {body}"
    );
    for _ in 0..3 {
        assert_eq!(curl_gate(&operator, &ns, "graphql-main", FIX).await, 0);
    }
    wait_exception(
        &exceptions,
        "sev2-7781-fix",
        &operator,
        "recorded 5 uses",
        |e| e.status.as_ref().is_some_and(|s| s.uses == 5),
    )
    .await;
    println!(
        "four later uses recorded after {} ms",
        batch_started.elapsed().as_millis()
    );
    let used_writes = writes().await - writes_before_uses;
    println!("status writes for 5 uses: {used_writes}");
    // At most: the first use, the batch after it, the batch of the last three.
    assert!(
        used_writes <= 3.0,
        "5 uses took {used_writes} status writes"
    );
    assert_eq!(
        events(plane, &ns, "sev2-7781-fix", "ExceptionUsed").await,
        1
    );
    assert_eq!(
        metric(&operator, "weblab_gate_exception_uses_total").await,
        5.0
    );

    // What it names cannot be changed after approval.
    let changed = kubectl(
        plane,
        &[
            "patch",
            "-n",
            &ns,
            "mergetrainexception/sev2-7781-fix",
            "--type=merge",
            "-p",
            r#"{"spec":{"mergeRequest":{"iid":4128}}}"#,
        ],
    )
    .await;
    assert!(!changed.status.success(), "{}", describe(&changed));
    assert!(
        String::from_utf8_lossy(&changed.stderr).contains("cannot change"),
        "{}",
        describe(&changed)
    );
}

#[tokio::test]
async fn an_expired_exception_lets_nothing_through_and_turns_expired_by_itself() {
    let plane = control_plane().await;
    let (ns, operator) = support::operator_for_new_namespace(plane, "mte-expiry").await;
    let ns = ns.name().to_owned();
    let client = plane.client().await.expect("client");
    let pauses: Api<MergeTrainPause> = Api::namespaced(client.clone(), &ns);
    let exceptions: Api<MergeTrainException> = Api::namespaced(client, &ns);
    apply_yaml(plane, &ns, &pause_yaml("freeze", "web-main")).await;
    wait_pause(&pauses, "freeze", &operator).await;
    let mr = |iid: u32| format!("  mergeRequest: {{project: web/app, iid: {iid}}}");

    // Expired from the start.
    apply_yaml(
        plane,
        &ns,
        &exception_yaml(
            "stale",
            "web-main",
            &mr(1),
            "  expiresAt: \"2026-01-01T00:00:00Z\"\n",
        ),
    )
    .await;
    wait_exception(&exceptions, "stale", &operator, "became Expired", |e| {
        phase(e) == Some(ExceptionPhase::Expired)
    })
    .await;
    assert_eq!(
        curl_gate(
            &operator,
            &ns,
            "web-main",
            "?project=web%2Fapp&mergeRequest=1"
        )
        .await,
        22
    );

    // Works for 10 seconds, then stops by itself.
    apply_yaml(
        plane,
        &ns,
        &exception_yaml("brief", "web-main", &mr(2), "  duration: 10s\n"),
    )
    .await;
    wait_exception(&exceptions, "brief", &operator, "became Active", |e| {
        phase(e) == Some(ExceptionPhase::Active)
    })
    .await;
    let query = "?project=web%2Fapp&mergeRequest=2";
    assert_eq!(curl_gate(&operator, &ns, "web-main", query).await, 0);
    let expired = wait_exception(&exceptions, "brief", &operator, "expired", |e| {
        phase(e) == Some(ExceptionPhase::Expired)
    })
    .await;
    let status = expired.status.expect("status");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Expired"),
        "{status:?}"
    );
    assert_eq!(curl_gate(&operator, &ns, "web-main", query).await, 22);
    assert_eq!(events(plane, &ns, "brief", "ExceptionExpired").await, 1);
    assert_eq!(status.uses, 1, "the use before the expiry is recorded");

    // An expiry more than 7 days after creation never works.
    apply_yaml(
        plane,
        &ns,
        &exception_yaml(
            "forever",
            "web-main",
            &mr(3),
            "  expiresAt: \"2099-01-01T00:00:00Z\"\n",
        ),
    )
    .await;
    wait_exception(&exceptions, "forever", &operator, "became Invalid", |e| {
        phase(e) == Some(ExceptionPhase::Invalid)
    })
    .await;
    assert_eq!(
        curl_gate(
            &operator,
            &ns,
            "web-main",
            "?project=web%2Fapp&mergeRequest=3"
        )
        .await,
        22
    );
    assert_eq!(events(plane, &ns, "forever", "InvalidSpec").await, 1);
}

#[tokio::test]
async fn a_closed_change_window_lets_the_named_commit_through() {
    let plane = control_plane().await;
    let (ns, operator) = support::operator_for_new_namespace(plane, "mte-window").await;
    let ns = ns.name().to_owned();
    let exceptions: Api<MergeTrainException> =
        Api::namespaced(plane.client().await.expect("client"), &ns);
    let start = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .expect("instant")
        .round(jiff::Unit::Second)
        .expect("rounds");
    let end = start
        .checked_add(jiff::SignedDuration::from_hours(24))
        .expect("instant");
    apply_yaml(
        plane,
        &ns,
        &format!(
            "apiVersion: weblab.dev/v1alpha1
kind: ChangeWindow
metadata:
  name: holiday
spec:
  timeZone: UTC
  blackouts:
    - name: holiday-freeze
      start: \"{start}\"
      end: \"{end}\"
  mergeTrains: [web-main]
"
        ),
    )
    .await;
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    apply_yaml(
        plane,
        &ns,
        &exception_yaml(
            "hotfix",
            "web-main",
            &format!("  sha: {sha}"),
            "  duration: 1h\n",
        ),
    )
    .await;
    wait_exception(
        &exceptions,
        "hotfix",
        &operator,
        "became Active with its train known",
        |e| {
            phase(e) == Some(ExceptionPhase::Active)
                && e.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "TrainKnown" && c.status == "True")
                })
        },
    )
    .await;
    let closed = eventually(WAIT, || async {
        curl_gate(&operator, &ns, "web-main", "").await == 22
    })
    .await;
    assert!(
        closed,
        "the window never closed the gate:\n{}",
        operator.logs()
    );
    let upper = sha.to_uppercase();
    assert_eq!(
        curl_gate(&operator, &ns, "web-main", &format!("?sha={upper}")).await,
        0
    );
    // A merge-train job knows both; the commit is enough.
    assert_eq!(
        curl_gate(
            &operator,
            &ns,
            "web-main",
            &format!("?project=web%2Fapp&mergeRequest=9&sha={sha}")
        )
        .await,
        0
    );
    assert_eq!(
        curl_gate(
            &operator,
            &ns,
            "web-main",
            "?sha=0000000000000000000000000000000000000000"
        )
        .await,
        22
    );

    // An exception naming a train nobody holds says so (once it is 30 s
    // old: one applied with its pause does not).
    apply_yaml(
        plane,
        &ns,
        &exception_yaml(
            "typo",
            "web-mian",
            &format!("  sha: {sha}"),
            "  duration: 1h\n",
        ),
    )
    .await;
    wait_exception(
        &exceptions,
        "typo",
        &operator,
        "reported its unknown train",
        |e| {
            e.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "TrainKnown" && c.reason == "UnknownTrain")
            })
        },
    )
    .await;
    assert_eq!(events(plane, &ns, "typo", "UnknownTrain").await, 1);
}

async fn is_leader(operator: &Operator) -> bool {
    matches!(operator.get("/metrics").await, Some((200, text)) if text.lines().any(|l| l == "weblab_leader 1"))
}

#[tokio::test]
async fn a_followers_uses_are_recorded_once_it_leads() {
    let plane = control_plane().await;
    let namespace = plane.namespace("mte-follower").await.expect("namespace");
    let ns = namespace.name().to_owned();
    let replica = |identity: &'static str| {
        let ns = ns.clone();
        async move {
            Operator::start(
                plane,
                &[
                    "--namespace",
                    &ns,
                    "--leader-election",
                    "--identity",
                    identity,
                    "--lease-name",
                    "mte-follower",
                    "--lease-namespace",
                    &ns,
                    "--lease-duration",
                    "3s",
                    "--renew-deadline",
                    "2s",
                    "--retry-period",
                    "500ms",
                ],
            )
            .await
        }
    };
    let leader = replica("replica-a").await;
    assert!(
        eventually(Duration::from_secs(30), || is_leader(&leader)).await,
        "no leader:\n{}",
        leader.logs()
    );
    let follower = replica("replica-b").await;
    let client = plane.client().await.expect("client");
    let pauses: Api<MergeTrainPause> = Api::namespaced(client.clone(), &ns);
    let exceptions: Api<MergeTrainException> = Api::namespaced(client, &ns);
    apply_yaml(plane, &ns, &pause_yaml("freeze", "web-main")).await;
    wait_pause(&pauses, "freeze", &leader).await;
    apply_yaml(
        plane,
        &ns,
        &exception_yaml(
            "fix",
            "web-main",
            "  mergeRequest: {project: web/app, iid: 7}",
            "  duration: 1h\n",
        ),
    )
    .await;
    wait_exception(&exceptions, "fix", &leader, "became Active", |e| {
        phase(e) == Some(ExceptionPhase::Active)
    })
    .await;

    // The follower serves the gate from its own caches, and writes nothing.
    let query = "?project=web%2Fapp&mergeRequest=7";
    let served = eventually(WAIT, || async {
        curl_gate(&follower, &ns, "web-main", query).await == 0
    })
    .await;
    assert!(
        served,
        "the follower never let the fix through:\n{}",
        follower.logs()
    );
    assert_eq!(curl_gate(&follower, &ns, "web-main", query).await, 0);
    assert!(!is_leader(&follower).await, "two leaders");
    assert_eq!(
        metric(&follower, "weblab_gate_exception_uses_total").await,
        2.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uses = |exception: MergeTrainException| exception.status.map_or(0, |s| s.uses);
    assert_eq!(
        uses(exceptions.get("fix").await.expect("exists")),
        0,
        "a follower never writes"
    );

    // The leader dies; the follower leads and records what it answered.
    leader.kill().await;
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || is_leader(&follower)).await,
        "the follower never took over:\n{}",
        follower.logs()
    );
    let recorded = wait_exception(
        &exceptions,
        "fix",
        &follower,
        "recorded the follower's uses",
        |e| e.status.as_ref().is_some_and(|s| s.uses == 2),
    )
    .await;
    println!(
        "leader killed to the follower's uses in status: {} ms (lease duration 3s)",
        killed.elapsed().as_millis()
    );
    assert!(recorded.status.is_some_and(|s| s.first_used.is_some()));
    // The event follows the status write that records the first use.
    let told = eventually(Duration::from_secs(10), || async {
        events(plane, &ns, "fix", "ExceptionUsed").await >= 1
    })
    .await;
    assert!(told, "no ExceptionUsed event:\n{}", follower.logs());
    assert_eq!(events(plane, &ns, "fix", "ExceptionUsed").await, 1);
}
