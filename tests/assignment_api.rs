//! The treatment-assignment APIs of a real `weblab-operator run` process
//! against a real control plane: the controller reconciles the dials applied
//! with kubectl, and every replica answers from its informer cache, through
//! the native JSON API and through OFREP, the latter driven by the real
//! OpenFeature Python SDK.
//!
//! Expected treatments are computed from the dial's status as read from the
//! API server, with the crate's pure assignment module, and the observed
//! shares are checked against the allocation itself.

mod support;

use std::{cell::RefCell, collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use kube::Api;
use serde_json::{Value, json};
use support::{
    Operator, apply_yaml, control_plane, describe, eventually, kubectl, operator_for_new_namespace,
    repo_root,
};
use testenv::ControlPlane;
use tokio::io::AsyncWriteExt;
use weblab_operator::{
    api::WeblabDial,
    assignment::{AssignmentReason, DialRules, RealmLayout},
};

/// Time for the controller to write a status and the operator's cache to
/// see it.
const SETTLE: Duration = Duration::from_secs(30);

/// A dial with two realms, three treatments, a unit override and a segment
/// override.
fn checkout_dial(name: &str) -> String {
    format!(
        r#"apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
spec:
  weblab: CHECKOUT_BUTTON_1
  treatments: [C, T1, T2]
  realms: [NA, EU]
  allocation:
    C: 50
    T1: 30
    T2: 20
  overrides:
    - treatment: T2
      units: [qa-alice]
    - treatment: T1
      segments: [beta-customers]
"#
    )
}

/// A one-realm dial.
fn banner_dial(name: &str) -> String {
    format!(
        r#"apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
spec:
  weblab: BANNER_7
  treatments: [C, T1]
  realms: [NA]
  allocation:
    C: 40
    T1: 60
"#
    )
}

/// A dial whose change window does not exist: the controller holds it
/// (phase Failed) before any allocation, so it serves control by default.
fn frozen_dial(name: &str) -> String {
    format!(
        r#"apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {name}
spec:
  weblab: FROZEN_3
  treatments: [C, T1]
  realms: [NA]
  allocation:
    T1: 100
  changeWindowRef:
    name: no-such-window
"#
    )
}

/// Applies `manifest` with kubectl and waits until the controller has
/// settled the dial `name` in `phase`; the dials' API and the dial.
async fn apply_settled(
    plane: &ControlPlane,
    namespace: &str,
    manifest: &str,
    name: &str,
    phase: &str,
) -> (Api<WeblabDial>, WeblabDial) {
    apply_yaml(plane, namespace, manifest).await;
    let api = dials(plane, namespace).await;
    let dial = settled(&api, name, phase).await;
    (api, dial)
}

async fn dials(plane: &ControlPlane, namespace: &str) -> Api<WeblabDial> {
    Api::namespaced(plane.client().await.expect("a client"), namespace)
}

/// Waits until the controller has written a bucket layout for every realm of
/// `name` and reached `phase`, and returns the dial as the API server has it.
async fn settled(api: &Api<WeblabDial>, name: &str, phase: &str) -> WeblabDial {
    // The last read, for the failure message.
    let last: RefCell<Option<WeblabDial>> = RefCell::new(None);
    let reached = eventually(SETTLE, || {
        let last = &last;
        async move {
            let Ok(dial) = api.get(name).await else {
                return false;
            };
            let status = dial.status.clone().unwrap_or_default();
            let phase_reached = status.phase.is_some_and(|p| format!("{p:?}") == phase);
            let laid_out = phase == "Failed"
                || dial.spec.realms.iter().all(|realm| {
                    status
                        .realms
                        .iter()
                        .any(|r| r.realm == *realm && !r.buckets.is_empty())
                });
            *last.borrow_mut() = Some(dial);
            phase_reached && laid_out
        }
    })
    .await;
    let last = last.into_inner();
    assert!(reached, "{name} never reached {phase}: {last:#?}");
    last.expect("read at least once")
}

/// The treatment and native reason the dial's status says `unit` gets.
fn expected(
    dial: &WeblabDial,
    realm: &str,
    unit: &str,
    segments: &[String],
) -> (String, &'static str) {
    let rules = DialRules::from_spec(&dial.spec).expect("the dial lists treatments");
    let layout = dial
        .status
        .as_ref()
        .and_then(|status| status.realms.iter().find(|r| r.realm == realm))
        .map(|entry| RealmLayout::from_status(entry).expect("a valid layout"))
        .and_then(|layout| layout);
    let assignment = rules.assign(layout.as_ref(), unit, segments);
    let reason = match assignment.reason {
        AssignmentReason::Override => "override",
        AssignmentReason::Allocation => "allocation",
        AssignmentReason::Rollback => "rollback",
        AssignmentReason::Default => "default",
    };
    (assignment.treatment.to_owned(), reason)
}

/// GET the treatment of one unit: the status and the JSON body.
async fn treatment(base: &str, namespace: &str, name: &str, query: &str) -> (u16, Value) {
    let url = format!("{base}/v1/weblabs/{namespace}/{name}/treatment?{query}");
    let response = support::http()
        .get(&url)
        .send()
        .await
        .expect("the operator answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("GET {url} answered {status} {text:?}, not JSON: {error}"));
    (status, body)
}

/// POST `body` (with `content_type`) to `path`: the status and the body text.
async fn post(base: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = support::http()
        .post(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the operator answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Sends `GET path` to `base` over a bare TCP connection and reads the
/// answer until the server closes it: the head and the body.
async fn raw_get(base: &str, path: &str) -> (String, String) {
    use tokio::io::AsyncReadExt;
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the operator accepts connections");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("the answer is read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_owned(), body.to_owned())
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{text:?} is not JSON: {error}"))
}

/// The batch of `units` in `realm`: unit -> (treatment, reason).
async fn batch(
    base: &str,
    namespace: &str,
    name: &str,
    realm: &str,
    units: &[String],
) -> BTreeMap<String, (String, String)> {
    let body = json!({"realm": realm, "units": units});
    let (status, text) = post(
        base,
        &format!("/v1/weblabs/{namespace}/{name}/treatments"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer = parse(&text);
    let items = answer["treatments"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), units.len(), "one answer per unit: {text}");
    items
        .iter()
        .map(|item| {
            let field = |key: &str| item[key].as_str().unwrap_or_default().to_owned();
            (field("unit"), (field("treatment"), field("reason")))
        })
        .collect()
}

fn units(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("customer-{i}")).collect()
}

/// Polls until the operator serves `reason` for `query`, so that its cache
/// has caught up with the status read from the API server.
async fn serves(operator: &Operator, namespace: &str, name: &str, query: &str, reason: &str) {
    let last = RefCell::new(Value::Null);
    let caught_up = eventually(SETTLE, || {
        let last = &last;
        async move {
            let (_, body) = treatment(&operator.base, namespace, name, query).await;
            let done = body["reason"] == reason;
            *last.borrow_mut() = body;
            done
        }
    })
    .await;
    assert!(
        caught_up,
        "{name} never served {reason} for {query}: {}; log:\n{}",
        last.borrow(),
        operator.logs()
    );
}

#[tokio::test]
async fn native_single_and_batch_follow_the_status_and_overrides_win() {
    let plane = control_plane().await;
    let (namespace, operator) = operator_for_new_namespace(plane, "assign-native").await;
    let ns = namespace.name();
    let (_, dial) = apply_settled(
        plane,
        ns,
        &checkout_dial("checkout-button"),
        "checkout-button",
        "Dialed",
    )
    .await;
    serves(
        &operator,
        ns,
        "checkout-button",
        "unit=customer-0&realm=EU",
        "allocation",
    )
    .await;

    // One unit at a time, in both realms.
    for realm in ["NA", "EU"] {
        for unit in units(20) {
            let (status, body) = treatment(
                &operator.base,
                ns,
                "checkout-button",
                &format!("unit={unit}&realm={realm}"),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let (treatment, reason) = expected(&dial, realm, &unit, &[]);
            assert_eq!(
                body["treatment"],
                treatment.as_str(),
                "{unit} in {realm}: {body}"
            );
            assert_eq!(body["reason"], reason);
            assert_eq!(body["unit"], unit.as_str());
            assert_eq!(body["realm"], realm);
            assert_eq!(body["weblab"], "CHECKOUT_BUTTON_1");
            assert_eq!(body["namespace"], ns);
            assert_eq!(body["name"], "checkout-button");
            assert_eq!(
                body["generation"],
                dial.metadata.generation.unwrap_or_default()
            );
            assert_eq!(
                body["observedGeneration"],
                dial.status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or_default()
            );
        }
    }

    // A batch of 1,000 agrees with the status, and its shares with the
    // allocation (five standard deviations).
    let many = units(1000);
    let answers = batch(&operator.base, ns, "checkout-button", "NA", &many).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for unit in &many {
        let (treatment, reason) = expected(&dial, "NA", unit, &[]);
        assert_eq!(
            answers.get(unit),
            Some(&(treatment.clone(), reason.to_owned())),
            "{unit}"
        );
        *counts.entry(treatment).or_default() += 1;
    }
    for (treatment, share) in [("C", 0.5), ("T1", 0.3), ("T2", 0.2)] {
        let observed = counts.get(treatment).copied().unwrap_or(0) as f64 / 1000.0;
        let tolerance = 5.0 * (share * (1.0 - share) / 1000.0_f64).sqrt();
        assert!(
            (observed - share).abs() <= tolerance,
            "{treatment}: {observed} of units, allocated {share}"
        );
    }

    // Overrides win: by unit over segment, by segment over the allocation.
    let (_, body) = treatment(
        &operator.base,
        ns,
        "checkout-button",
        "unit=qa-alice&realm=NA&segment=beta-customers",
    )
    .await;
    assert_eq!(
        (&body["treatment"], &body["reason"]),
        (&json!("T2"), &json!("override"))
    );
    for unit in units(10) {
        let (_, body) = treatment(
            &operator.base,
            ns,
            "checkout-button",
            &format!("unit={unit}&realm=EU&segment=other&segment=beta-customers"),
        )
        .await;
        assert_eq!(
            (&body["treatment"], &body["reason"]),
            (&json!("T1"), &json!("override")),
            "{unit}"
        );
    }
    let segment_batch =
        json!({"realm": "EU", "units": ["qa-alice", "customer-1"], "segments": ["beta-customers"]});
    let (status, text) = post(
        &operator.base,
        &format!("/v1/weblabs/{ns}/checkout-button/treatments"),
        "application/json",
        segment_batch.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer = parse(&text);
    assert_eq!(answer["treatments"][0]["treatment"], "T2");
    assert_eq!(answer["treatments"][1]["treatment"], "T1");
    assert_eq!(answer["treatments"][1]["reason"], "override");
}

#[tokio::test]
async fn an_abort_serves_the_rollback_allocation_and_keeps_overrides() {
    let plane = control_plane().await;
    let (namespace, operator) = operator_for_new_namespace(plane, "assign-abort").await;
    let ns = namespace.name();
    let (api, _) = apply_settled(
        plane,
        ns,
        &checkout_dial("checkout-button"),
        "checkout-button",
        "Dialed",
    )
    .await;

    let annotated = kubectl(
        plane,
        &[
            "annotate",
            "-n",
            ns,
            "weblabdial",
            "checkout-button",
            "weblab.dev/action=abort",
        ],
    )
    .await;
    assert!(annotated.status.success(), "{}", describe(&annotated));
    let dial = settled(&api, "checkout-button", "Aborted").await;
    serves(
        &operator,
        ns,
        "checkout-button",
        "unit=customer-0&realm=NA",
        "rollback",
    )
    .await;

    let answers = batch(&operator.base, ns, "checkout-button", "NA", &units(200)).await;
    for (unit, (treatment, reason)) in &answers {
        assert_eq!(
            (treatment.as_str(), reason.as_str()),
            ("C", "rollback"),
            "{unit}: the rollback allocation is 100% control"
        );
        assert_eq!(
            expected(&dial, "NA", unit, &[]),
            ("C".to_owned(), "rollback")
        );
    }
    // `rollback.overrides` defaults to Keep: pinned units keep their treatment.
    let (_, body) = treatment(
        &operator.base,
        ns,
        "checkout-button",
        "unit=qa-alice&realm=EU",
    )
    .await;
    assert_eq!(
        (&body["treatment"], &body["reason"]),
        (&json!("T2"), &json!("override"))
    );

    // OFREP says SPLIT, and why in the metadata.
    let (status, text) = post(
        &operator.base,
        &format!("/namespaces/{ns}/ofrep/v1/evaluate/flags/checkout-button"),
        "application/json",
        json!({"context": {"targetingKey": "customer-3", "realm": "EU"}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let success = parse(&text);
    assert_eq!(
        (&success["value"], &success["reason"]),
        (&json!("C"), &json!("SPLIT"))
    );
    assert_eq!(success["metadata"]["assignment"], "rollback");
}

#[tokio::test]
async fn a_dial_without_an_effective_allocation_serves_control_by_default() {
    let plane = control_plane().await;
    let (namespace, operator) = operator_for_new_namespace(plane, "assign-default").await;
    let ns = namespace.name();
    let (_, dial) = apply_settled(plane, ns, &frozen_dial("frozen"), "frozen", "Failed").await;
    assert!(
        dial.status.as_ref().is_none_or(|s| s.realms.is_empty()),
        "a held dial has no effective allocation: {dial:#?}"
    );
    // The realm may be left out: the dial has one.
    let (status, body) = treatment(&operator.base, ns, "frozen", "unit=customer-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["treatment"], &body["reason"]),
        (&json!("C"), &json!("default"))
    );
    assert_eq!(body["realm"], "NA");
}

#[tokio::test]
async fn a_deleted_dial_is_not_found_by_either_api() {
    let plane = control_plane().await;
    let (namespace, operator) = operator_for_new_namespace(plane, "assign-delete").await;
    let ns = namespace.name();
    let (_, _) = apply_settled(plane, ns, &banner_dial("banner"), "banner", "Dialed").await;
    serves(&operator, ns, "banner", "unit=customer-1", "allocation").await;
    let ofrep = "/ofrep/v1/evaluate/flags/banner".to_owned();
    let context = json!({"context": {"targetingKey": "customer-1"}}).to_string();
    let (status, text) = post(
        &operator.base,
        &ofrep,
        "application/json",
        context.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let deleted = kubectl(
        plane,
        &["delete", "-n", ns, "weblabdial", "banner", "--wait=true"],
    )
    .await;
    assert!(deleted.status.success(), "{}", describe(&deleted));
    let gone = eventually(SETTLE, || async {
        treatment(&operator.base, ns, "banner", "unit=customer-1")
            .await
            .0
            == 404
    })
    .await;
    assert!(
        gone,
        "the deleted dial is still served; log:\n{}",
        operator.logs()
    );
    let (_, body) = treatment(&operator.base, ns, "banner", "unit=customer-1").await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no WeblabDial \"banner\"")),
        "{body}"
    );

    for path in [
        ofrep,
        format!("/namespaces/{ns}/ofrep/v1/evaluate/flags/banner"),
    ] {
        let (status, text) = post(
            &operator.base,
            &path,
            "application/json",
            context.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, 404, "{path}: {text}");
        let failure = parse(&text);
        assert_eq!(failure["errorCode"], "FLAG_NOT_FOUND", "{path}");
        assert_eq!(failure["key"], "banner");
    }
    // And it is gone from a bulk evaluation.
    let (status, text) = post(
        &operator.base,
        &format!("/namespaces/{ns}/ofrep/v1/evaluate/flags"),
        "application/json",
        context.into_bytes(),
    )
    .await;
    assert_eq!((status, parse(&text)), (200, json!({"flags": []})));
}

#[tokio::test]
async fn two_replicas_give_identical_assignments() {
    let plane = control_plane().await;
    let namespace = plane.namespace("assign-replicas").await.expect("namespace");
    let ns = namespace.name();
    // Both elect on the same Lease, so one leads and writes and the other
    // only follows: the follower must serve from its own cache all the same.
    let election = |identity: &'static str| {
        [
            "--namespace",
            ns,
            "--leader-election",
            "--lease-namespace",
            ns,
            "--identity",
            identity,
        ]
    };
    let first = Operator::start(plane, &election("replica-a")).await;
    let second = Operator::start(plane, &election("replica-b")).await;
    let (_, dial) = apply_settled(
        plane,
        ns,
        &checkout_dial("checkout-button"),
        "checkout-button",
        "Dialed",
    )
    .await;
    for operator in [&first, &second] {
        serves(
            operator,
            ns,
            "checkout-button",
            "unit=customer-0&realm=EU",
            "allocation",
        )
        .await;
    }

    let many = units(1000);
    for realm in ["NA", "EU"] {
        let a = batch(&first.base, ns, "checkout-button", realm, &many).await;
        let b = batch(&second.base, ns, "checkout-button", realm, &many).await;
        assert_eq!(a.len(), 1000);
        assert!(a == b, "the replicas disagree in {realm}");
        for unit in &many {
            let (treatment, _) = expected(&dial, realm, unit, &[]);
            assert_eq!(
                a.get(unit).map(|(t, _)| t.as_str()),
                Some(treatment.as_str()),
                "{unit}"
            );
        }
    }
    // Exactly one of them leads, and the other answered all the same.
    let leaders = leading(&[&first, &second]).await;
    assert_eq!(
        leaders.iter().filter(|l| **l).count(),
        1,
        "leaders: {leaders:?}"
    );
}

/// Whether each operator reports `weblab_leader 1`.
async fn leading(operators: &[&Operator]) -> Vec<bool> {
    let mut leaders = Vec::new();
    for operator in operators {
        let metrics = operator
            .get("/metrics")
            .await
            .map(|(_, text)| text)
            .unwrap_or_default();
        leaders.push(metrics.lines().any(|line| line == "weblab_leader 1"));
    }
    leaders
}

#[tokio::test]
async fn malformed_requests_get_json_errors_and_the_server_stays_healthy() {
    let plane = control_plane().await;
    let namespace = plane
        .namespace("assign-malformed")
        .await
        .expect("namespace");
    let ns = namespace.name();
    let operator = Operator::start(plane, &["--namespace", ns]).await;
    let (_, _) = apply_settled(
        plane,
        ns,
        &checkout_dial("checkout-button"),
        "checkout-button",
        "Dialed",
    )
    .await;
    serves(
        &operator,
        ns,
        "checkout-button",
        "unit=customer-0&realm=NA",
        "allocation",
    )
    .await;
    let base = &operator.base;

    let native_get = [
        ("realm=NA", 400, "unit="),
        ("unit=&realm=NA", 400, "empty"),
        ("unit=customer-1", 400, "several realms"),
        ("unit=customer-1&realm=MARS", 400, "not one of"),
        (
            "unit=customer-1&realm=NA&units=x",
            400,
            "unknown query parameter",
        ),
        // Latin-1 bytes: refused as the JSON APIs refuse them, not replaced
        // (which made M%FCller and M%E4ller one unit).
        ("unit=M%FCller&realm=NA", 400, "unit is not UTF-8"),
        ("unit=M%E4ller&realm=NA", 400, "unit is not UTF-8"),
    ];
    for (query, status, needle) in native_get {
        let (got, body) = treatment(base, ns, "checkout-button", query).await;
        assert_eq!(got, status, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{query}: {error:?} lacks {needle:?}"
        );
    }
    let long_unit = format!("unit={}&realm=NA", "u".repeat(257));
    assert_eq!(
        treatment(base, ns, "checkout-button", &long_unit).await.0,
        400
    );
    let (status, body) = treatment(base, ns, "no-such-dial", "unit=a&realm=NA").await;
    assert_eq!(status, 404, "{body}");
    // A 70 KB URL, refused by hyper before any handler (over 65,534 bytes),
    // still gets a JSON error. Sent by hand: HTTP clients refuse to send it.
    let (head, body) = raw_get(
        base,
        &format!(
            "/v1/weblabs/{ns}/checkout-button/treatment?unit={}&realm=NA",
            "u".repeat(70 * 1024)
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    assert!(
        parse(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("65534")),
        "{head}\n{body}"
    );

    let batch_path = format!("/v1/weblabs/{ns}/checkout-button/treatments");
    let huge = format!(r#"{{"realm": "NA", "units": ["{}"]}}"#, "u".repeat(1 << 20)).into_bytes();
    let native_post: [(&str, Vec<u8>, u16); 6] = [
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", br#"{"realm": "NA"}"#.to_vec(), 400),
        (
            "application/json",
            br#"{"realm": "MARS", "units": ["a"]}"#.to_vec(),
            400,
        ),
        ("application/json", br#"[1, 2]"#.to_vec(), 400),
        (
            "text/plain",
            br#"{"realm": "NA", "units": ["a"]}"#.to_vec(),
            415,
        ),
        ("application/json", huge.clone(), 413),
    ];
    for (content_type, body, status) in native_post {
        let (got, text) = post(base, &batch_path, content_type, body).await;
        assert_eq!(got, status, "{content_type}: {text}");
        assert!(
            parse(&text)["error"].as_str().is_some_and(|e| e.len() > 20),
            "{text}"
        );
    }

    let ofrep_path = format!("/namespaces/{ns}/ofrep/v1/evaluate/flags/checkout-button");
    let ofrep: [(Vec<u8>, u16, &str); 6] = [
        (b"{not json".to_vec(), 400, "PARSE_ERROR"),
        (br#"{"context": "NA"}"#.to_vec(), 400, "PARSE_ERROR"),
        (
            br#"{"context": {"realm": "NA"}}"#.to_vec(),
            400,
            "TARGETING_KEY_MISSING",
        ),
        (
            br#"{"context": {"targetingKey": "a"}}"#.to_vec(),
            400,
            "INVALID_CONTEXT",
        ),
        (
            br#"{"context": {"targetingKey": "a", "realm": 7}}"#.to_vec(),
            400,
            "INVALID_CONTEXT",
        ),
        (huge, 413, "GENERAL"),
    ];
    for (body, status, code) in ofrep {
        let (got, text) = post(base, &ofrep_path, "application/json", body).await;
        assert_eq!(got, status, "{code}: {text}");
        let failure = parse(&text);
        assert_eq!(failure["errorCode"], code, "{text}");
        assert!(
            failure["errorDetails"]
                .as_str()
                .is_some_and(|d| d.len() > 20),
            "{text}"
        );
    }

    // Mistyped paths under the APIs' prefixes answer JSON too.
    let (status, text) = post(
        base,
        &format!("/v1/weblabs/{ns}/checkout-button"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(
        parse(&text)["error"]
            .as_str()
            .is_some_and(|e| e.contains("/treatment")),
        "{text}"
    );
    let (status, text) = post(
        base,
        &format!("/namespaces/{ns}/ofrep/v2/evaluate/flags/x"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(parse(&text)["errorCode"], "GENERAL");

    // Still healthy, still serving, nothing panicked.
    assert_eq!(operator.get("/healthz").await, Some((200, "ok".to_owned())));
    assert_eq!(
        operator.get("/readyz").await.map(|(status, _)| status),
        Some(200)
    );
    let (status, body) = treatment(base, ns, "checkout-button", "unit=customer-1&realm=NA").await;
    assert_eq!(status, 200, "{body}");
    let logs = operator.logs();
    assert!(!logs.contains("panicked"), "the operator panicked:\n{logs}");

    // Every answer, good or bad, is counted and timed by API and code.
    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    for series in [
        "weblab_assignment_requests_total{api=\"native\",code=\"200\"}",
        "weblab_assignment_requests_total{api=\"native\",code=\"400\"}",
        "weblab_assignment_requests_total{api=\"ofrep\",code=\"404\"}",
        "weblab_assignment_request_duration_seconds_count{api=\"ofrep\"}",
    ] {
        assert!(
            metrics.lines().any(|line| line.starts_with(series)),
            "no {series} in\n{metrics}"
        );
    }
}

/// The virtualenv with the pinned OpenFeature SDK and OFREP provider.
async fn python_env() -> PathBuf {
    let output = tokio::process::Command::new(repo_root().join("hack/python-env.sh"))
        .output()
        .await
        .expect("hack/python-env.sh runs");
    assert!(
        output.status.success(),
        "hack/python-env.sh failed: {}",
        describe(&output)
    );
    let venv = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    PathBuf::from(venv)
}

/// Runs tests/ofrep/client.py with `cases`; its exit status and report.
async fn python_client(venv: &std::path::Path, cases: &Value) -> (std::process::Output, Value) {
    let mut child = tokio::process::Command::new(venv.join("bin/python"))
        .arg(repo_root().join("tests/ofrep/client.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python starts");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    stdin
        .write_all(json!({"cases": cases}).to_string().as_bytes())
        .await
        .expect("the cases are written");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("client.py finishes within 2 minutes")
        .expect("client.py's output");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "client.py printed no report ({error}): {}",
            describe(&output)
        )
    });
    (output, report)
}

#[tokio::test]
async fn the_openfeature_python_sdk_evaluates_flags_through_ofrep() {
    let venv = python_env().await;
    let plane = control_plane().await;
    let team_a = plane.namespace("ofrep-a").await.expect("namespace");
    let team_b = plane.namespace("ofrep-b").await.expect("namespace");
    let (a, b) = (team_a.name(), team_b.name());
    let operator = Operator::start(plane, &["--namespace", &format!("{a},{b}")]).await;
    apply_yaml(plane, a, &checkout_dial("checkout-button")).await;
    apply_yaml(plane, a, &frozen_dial("frozen")).await;
    // The same name in both namespaces: the root mount cannot tell which.
    apply_yaml(plane, a, &banner_dial("banner")).await;
    apply_yaml(plane, b, &banner_dial("banner")).await;
    let checkout = settled(&dials(plane, a).await, "checkout-button", "Dialed").await;
    settled(&dials(plane, a).await, "frozen", "Failed").await;
    let banner_b = settled(&dials(plane, b).await, "banner", "Dialed").await;
    settled(&dials(plane, a).await, "banner", "Dialed").await;
    serves(
        &operator,
        a,
        "checkout-button",
        "unit=customer-0&realm=EU",
        "allocation",
    )
    .await;
    serves(&operator, b, "banner", "unit=customer-0", "allocation").await;

    let root = operator.base.clone();
    let in_a = format!("{root}/namespaces/{a}");
    let in_b = format!("{root}/namespaces/{b}");
    let generation = checkout.metadata.generation.unwrap_or_default();
    let mut cases = Vec::new();
    for (base, realm, unit) in [
        (&root, "NA", "customer-1"),
        (&root, "EU", "customer-2"),
        (&in_a, "NA", "customer-3"),
        (&in_a, "EU", "customer-4"),
        (&in_a, "NA", "customer-5"),
    ] {
        let (treatment, _) = expected(&checkout, realm, unit, &[]);
        cases.push(json!({
            "base": base, "flag": "checkout-button", "default": "fallback",
            "targetingKey": unit, "attributes": {"realm": realm},
            "expect": {
                "value": treatment, "variant": treatment, "reason": "SPLIT", "error_code": null,
                "metadata": {"assignment": "allocation", "realm": realm, "generation": generation,
                             "namespace": a, "weblab": "CHECKOUT_BUTTON_1"},
            },
        }));
    }
    let override_cases = [
        // A unit override.
        json!({"base": in_a, "flag": "checkout-button", "default": "fallback",
               "targetingKey": "qa-alice", "attributes": {"realm": "EU"},
               "expect": {"value": "T2", "variant": "T2", "reason": "TARGETING_MATCH",
                          "metadata": {"assignment": "override"}}}),
        // A segment override, through the `segments` attribute.
        json!({"base": root, "flag": "checkout-button", "default": "fallback",
               "targetingKey": "customer-9", "attributes": {"realm": "NA", "segments": ["beta-customers"]},
               "expect": {"value": "T1", "variant": "T1", "reason": "TARGETING_MATCH"}}),
        // No effective allocation yet: control, by default.
        json!({"base": in_a, "flag": "frozen", "default": "fallback",
               "targetingKey": "customer-1", "attributes": {},
               "expect": {"value": "C", "variant": "C", "reason": "DEFAULT", "error_code": null,
                          "metadata": {"assignment": "default", "realm": "NA"}}}),
        // One realm: it need not be named; namespaced base URL for team b.
        json!({"base": in_b, "flag": "banner", "default": "fallback",
               "targetingKey": "customer-7", "attributes": {},
               "expect": {"value": expected(&banner_b, "NA", "customer-7", &[]).0,
                          "reason": "SPLIT", "metadata": {"namespace": b}}}),
        // Unknown key, at the root and in a namespace.
        json!({"base": root, "flag": "no-such-flag", "default": "fallback",
               "targetingKey": "customer-1", "attributes": {"realm": "NA"},
               "expect": {"value": "fallback", "reason": "ERROR", "error_code": "FLAG_NOT_FOUND"}}),
        json!({"base": in_b, "flag": "checkout-button", "default": "fallback",
               "targetingKey": "customer-1", "attributes": {"realm": "NA"},
               "expect": {"value": "fallback", "reason": "ERROR", "error_code": "FLAG_NOT_FOUND"}}),
        // The name in two namespaces, asked at the root.
        json!({"base": root, "flag": "banner", "default": "fallback",
               "targetingKey": "customer-1", "attributes": {},
               "expect": {"value": "fallback", "reason": "ERROR", "error_code": "GENERAL"}}),
        // Two realms and none named; then no targeting key.
        json!({"base": in_a, "flag": "checkout-button", "default": "fallback",
               "targetingKey": "customer-1", "attributes": {},
               "expect": {"value": "fallback", "reason": "ERROR", "error_code": "INVALID_CONTEXT"}}),
        json!({"base": in_a, "flag": "checkout-button", "default": "fallback",
               "attributes": {"realm": "NA"},
               "expect": {"value": "fallback", "reason": "ERROR", "error_code": "TARGETING_KEY_MISSING"}}),
    ];
    cases.extend(override_cases);
    let cases = Value::Array(cases);
    let (output, report) = python_client(&venv, &cases).await;
    assert!(
        output.status.success(),
        "the SDK saw something else than expected: {}\nreport: {report:#}",
        describe(&output)
    );

    // client.py compared; check here too that it evaluated every case and
    // that its report says what was asserted.
    let results = report["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        results.len(),
        cases.as_array().map_or(0, Vec::len),
        "{report:#}"
    );
    assert_eq!(report["mismatches"], json!([]));
    let (first_expected, _) = expected(&checkout, "NA", "customer-1", &[]);
    assert_eq!(results[0]["value"], first_expected.as_str());
    assert_eq!(results[0]["reason"], "SPLIT");
    assert_eq!(results[5]["reason"], "TARGETING_MATCH");
    assert_eq!(results[9]["error_code"], "FLAG_NOT_FOUND");
    let ambiguous = results[11]["error_message"].as_str().unwrap_or_default();
    assert!(ambiguous.contains("/namespaces/"), "{ambiguous:?}");
}
