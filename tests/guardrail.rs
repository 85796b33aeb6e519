//! Guardrails end to end with real parts: the operator process, dials and
//! guardrail alarms applied with real kubectl, a simulated service that asks
//! the operator's assignment API which treatment each request's unit gets,
//! fails with a per-treatment probability and exposes request and error
//! counters by treatment and realm on a metrics endpoint that a real
//! Prometheus scrapes. Outcomes are read from status and events.
//!
//! Three dials share the service: `regress` (T1 doubles the error rate in
//! EU only), `same` (A/A everywhere) and `broken` (the service ignores the
//! assignment for 40% of T1's units and serves them control).

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use support::{Operator, apply_yaml, control_plane, eventually, http, operator_with_webhook};
use testenv::{MetricsEndpoint, Prometheus, PrometheusOptions};
use weblab_operator::{
    api::{
        Alarm, WeblabDial,
        alarm::{AlarmState, RealmComparison, SAMPLE_RATIO_MISMATCH},
        weblab_dial::DialPhase,
    },
    stats::simulation::Rng,
};

const WAIT: Duration = Duration::from_secs(120);
/// Units per realm per tick of 200 ms: 1,000 requests/s per realm.
const UNITS_PER_TICK: usize = 200;
/// Control's error rate; high so that a few thousand requests decide.
const BASE_ERRORS: f64 = 0.2;

/// How the simulated service treats one dial.
#[derive(Clone)]
struct Behaviour {
    dial: &'static str,
    realms: [&'static str; 2],
    /// The error rate of T1 per realm (control fails at BASE_ERRORS).
    t1_errors: [f64; 2],
    /// The share of units assigned T1 that the service serves control.
    ignored: f64,
}

fn dial_and_guardrail(dial: &str, prometheus: &Prometheus) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: {dial}
spec:
  weblab: {dial}
  treatments: [C, T1]
  realms: [EU, NA]
  allocation: {{C: 95, T1: 5}}
  rollback:
    alarms:
      names: [{dial}-errors]
---
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: {dial}-errors
spec:
  severity: Sev2
  guardrail:
    dialRef: {{name: {dial}}}
    url: {url}
    trials: sum(increase(sim_requests_total{{weblab=\"{dial}\",treatment=\"$treatment\",realm=\"$realm\"}}[$window]))
    outcomes: sum(increase(sim_errors_total{{weblab=\"{dial}\",treatment=\"$treatment\",realm=\"$realm\"}}[$window]))
    confidence: 0.999
    minTrials: 200
    interval: 5s
    timeout: 3s
---
",
        url = prometheus.url()
    )
}

/// Runs the simulated service for `behaviour` until aborted: each tick asks
/// the batch assignment API for fresh units in each realm, draws each
/// request's failure and publishes the cumulative counters.
async fn serve(
    operator_base: String,
    namespace: String,
    behaviour: Behaviour,
    metrics: Arc<MetricsEndpoint>,
) {
    let client = http();
    let mut rng = Rng::new(behaviour.dial.len() as u64 * 7919);
    let mut counters: BTreeMap<(&str, &str), (f64, f64)> = BTreeMap::new();
    let mut next_unit: u64 = 0;
    loop {
        for (index, realm) in behaviour.realms.iter().enumerate() {
            let units: Vec<String> = (0..UNITS_PER_TICK)
                .map(|i| format!("unit-{}", next_unit + i as u64))
                .collect();
            next_unit += UNITS_PER_TICK as u64;
            let answer = client
                .post(format!(
                    "{operator_base}/v1/weblabs/{namespace}/{}/treatments",
                    behaviour.dial
                ))
                .json(&json!({"realm": realm, "units": units}))
                .send()
                .await;
            let Ok(answer) = answer else { continue };
            let Ok(body) = answer.json::<Value>().await else {
                continue;
            };
            for item in body["treatments"].as_array().into_iter().flatten() {
                let assigned = item["treatment"].as_str().unwrap_or("C");
                let treatment = if assigned == "T1" && rng.uniform() >= behaviour.ignored {
                    "T1"
                } else {
                    "C"
                };
                let rate = if treatment == "T1" {
                    behaviour.t1_errors[index]
                } else {
                    BASE_ERRORS
                };
                let entry = counters.entry((treatment, realm)).or_default();
                entry.0 += 1.0;
                entry.1 += f64::from(u8::from(rng.uniform() < rate));
            }
            for treatment in ["C", "T1"] {
                let (requests, errors) = counters
                    .get(&(treatment, *realm))
                    .copied()
                    .unwrap_or_default();
                let labels = [
                    ("weblab", behaviour.dial),
                    ("treatment", treatment),
                    ("realm", realm),
                ];
                metrics.set("sim_requests_total", &labels, requests);
                metrics.set("sim_errors_total", &labels, errors);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn realm_result(alarms: &Api<Alarm>, alarm: &str, realm: &str) -> Option<RealmComparison> {
    let status = alarms.get(alarm).await.ok()?.status?;
    status.realms.into_iter().find(|r| r.realm == realm)
}

async fn wait_realm<F: Fn(&RealmComparison) -> bool>(
    alarms: &Api<Alarm>,
    alarm: &str,
    realm: &str,
    what: &str,
    check: F,
    operator: &Operator,
) -> RealmComparison {
    let reached = eventually(WAIT, || async {
        realm_result(alarms, alarm, realm)
            .await
            .as_ref()
            .is_some_and(&check)
    })
    .await;
    let current = realm_result(alarms, alarm, realm).await;
    assert!(
        reached,
        "{alarm} in {realm} never {what}; now {current:#?}\nlog:\n{}",
        operator.logs()
    );
    current.expect("a result")
}

async fn wait_phase(
    dials: &Api<WeblabDial>,
    name: &str,
    want: DialPhase,
    operator: &Operator,
) -> WeblabDial {
    let phase = |d: &WeblabDial| d.status.as_ref().and_then(|s| s.phase);
    let reached = eventually(WAIT, || async {
        dials.get(name).await.ok().as_ref().and_then(phase) == Some(want)
    })
    .await;
    let current = dials.get(name).await.expect("the dial exists");
    assert!(
        reached,
        "dial {name} never reached {want:?}; status {:#?}\nlog:\n{}",
        current.status,
        operator.logs()
    );
    current
}

fn trials_at_least(result: &RealmComparison, floor: f64) -> bool {
    result
        .treatments
        .iter()
        .all(|t| t.trials >= floor && t.control_trials >= floor)
        && !result.treatments.is_empty()
}

#[tokio::test]
async fn a_regression_rolls_back_its_realm_an_a_a_run_does_not_and_a_broken_assignment_is_a_sample_ratio_mismatch()
 {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "guardrail").await;
    let metrics = Arc::new(MetricsEndpoint::serve().expect("a metrics endpoint"));
    let mut options = PrometheusOptions::default();
    options.scrape_targets = vec![metrics.address()];
    let prometheus = Prometheus::start(
        plane.dir().join(format!("prometheus-{}", ns.name())),
        options,
    )
    .await
    .unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"));

    let mut dials_yaml: String = ["regress", "same", "broken"]
        .iter()
        .map(|dial| dial_and_guardrail(dial, &prometheus))
        .collect();
    // A guardrail whose dial does not exist: stalled, never OK.
    dials_yaml.push_str(&format!(
        "apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: orphan-errors
spec:
  severity: Sev2
  guardrail:
    dialRef: {{name: nope}}
    url: {}
    trials: sum(increase(sim_requests_total[$window]))
    outcomes: sum(increase(sim_errors_total[$window]))
",
        prometheus.url()
    ));
    apply_yaml(plane, ns.name(), &dials_yaml).await;
    let client = plane.client().await.expect("client");
    let alarms: Api<Alarm> = Api::namespaced(client.clone(), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns.name());
    for dial in ["regress", "same", "broken"] {
        wait_phase(&dials, dial, DialPhase::Dialed, &operator).await;
    }

    let behaviours = [
        Behaviour {
            dial: "regress",
            realms: ["EU", "NA"],
            t1_errors: [2.0 * BASE_ERRORS, BASE_ERRORS],
            ignored: 0.0,
        },
        Behaviour {
            dial: "same",
            realms: ["EU", "NA"],
            t1_errors: [BASE_ERRORS, BASE_ERRORS],
            ignored: 0.0,
        },
        Behaviour {
            dial: "broken",
            realms: ["EU", "NA"],
            t1_errors: [BASE_ERRORS, BASE_ERRORS],
            ignored: 0.4,
        },
    ];
    let services: Vec<_> = behaviours
        .into_iter()
        .map(|behaviour| {
            tokio::spawn(serve(
                operator.base.clone(),
                ns.name().to_owned(),
                behaviour,
                Arc::clone(&metrics),
            ))
        })
        .collect();

    // The regression: EU alarms with the estimate, and only EU rolls back.
    let eu = wait_realm(
        &alarms,
        "regress-errors",
        "EU",
        "reached ALARM",
        |r| r.state == AlarmState::Alarm,
        &operator,
    )
    .await;
    assert!(
        eu.reason.contains("T1 is worse than C in EU"),
        "{}",
        eu.reason
    );
    let t1 = &eu.treatments[0];
    assert!(
        t1.estimate > 0.05 && t1.estimate < 0.35,
        "estimate {}",
        t1.estimate
    );
    assert!(t1.lower.is_some_and(|lower| lower > 0.0), "{t1:?}");
    let regress = wait_phase(&dials, "regress", DialPhase::RolledBack, &operator).await;
    let status = regress.status.expect("status");
    let record = status.rollback.expect("a rollback record");
    assert_eq!(record.realms, vec!["EU".to_owned()], "{record:?}");
    assert!(record.value.is_some_and(|v| v > 0.05), "{record:?}");
    let served = |realm: &str| {
        status
            .realms
            .iter()
            .find(|r| r.realm == realm)
            .map(|r| (r.allocation.to_string(), r.rolled_back))
    };
    assert_eq!(served("EU").map(|s| s.1), Some(true));
    assert_eq!(
        served("NA").map(|s| s.1),
        Some(false),
        "NA keeps its allocation"
    );
    // What the assignment API serves: control to every unit in EU, T1 to
    // some in NA.
    let t1_units = |realm: &'static str| {
        let base = operator.base.clone();
        let namespace = ns.name().to_owned();
        async move {
            let units: Vec<String> = (0..1000).map(|i| format!("probe-{i}")).collect();
            let body: Value = http()
                .post(format!("{base}/v1/weblabs/{namespace}/regress/treatments"))
                .json(&json!({"realm": realm, "units": units}))
                .send()
                .await
                .expect("the operator answers")
                .json()
                .await
                .expect("JSON");
            body["treatments"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| item["treatment"] == "T1")
                .count()
        }
    };
    assert_eq!(t1_units("EU").await, 0);
    assert!(t1_units("NA").await > 0);

    // A/A: with enough trials in both realms the guardrail says OK, and the
    // dial was never rolled back.
    for realm in ["EU", "NA"] {
        wait_realm(
            &alarms,
            "same-errors",
            realm,
            "decided OK on enough trials",
            |r| r.state == AlarmState::Ok && trials_at_least(r, 2000.0),
            &operator,
        )
        .await;
    }
    let same = dials.get("same").await.expect("the A/A dial");
    let same_status = same.status.expect("status");
    assert_eq!(same_status.phase, Some(DialPhase::Dialed));
    assert_eq!(same_status.rollback, None);

    // The broken assignment: a sample ratio mismatch, no decision, a
    // condition naming both ratios, a Warning event.
    let broken = wait_realm(
        &alarms,
        "broken-errors",
        "EU",
        "found a sample ratio mismatch",
        |r| r.sample_ratio.as_ref().is_some_and(|s| s.mismatch),
        &operator,
    )
    .await;
    assert_eq!(broken.state, AlarmState::InsufficientData);
    assert!(broken.treatments.is_empty());
    let alarm = alarms.get("broken-errors").await.expect("alarm");
    let condition = alarm
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == SAMPLE_RATIO_MISMATCH)
                .cloned()
        })
        .expect("a SampleRatioMismatch condition");
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.contains("T1 0.05") && condition.message.contains("trials split"),
        "{}",
        condition.message
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let warned = eventually(WAIT, || async {
        events.list(&ListParams::default()).await.is_ok_and(|list| {
            list.items.iter().any(|e| {
                e.reason.as_deref() == Some("SampleRatioMismatch")
                    && e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("broken-errors")
            })
        })
    })
    .await;
    assert!(warned, "no SampleRatioMismatch event");
    let broken_dial = dials.get("broken").await.expect("the broken dial");
    assert_eq!(
        broken_dial.status.and_then(|s| s.rollback),
        None,
        "a mismatch decides nothing"
    );

    let orphan = alarms.get("orphan-errors").await.expect("the orphan alarm");
    let orphan = orphan.status.expect("evaluated long ago");
    assert_eq!(orphan.state, Some(AlarmState::InsufficientData));
    let stalled = orphan
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .expect("a Stalled condition");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "DialNotFound")
    );
    assert!(stalled.message.contains("nope"), "{}", stalled.message);

    for service in services {
        service.abort();
    }
}

/// The trials control has counted in `realm`, as the guardrail last saw them.
async fn control_trials(alarms: &Api<Alarm>, alarm: &str, realm: &str) -> Option<f64> {
    realm_result(alarms, alarm, realm)
        .await?
        .treatments
        .first()
        .map(|t| t.control_trials)
}

/// Polls until control's trials reach `target`, asserting that they never
/// fall well below `floor` meanwhile (a count restarted from zero would;
/// Prometheus's extrapolation at the window's ends may move a few trials).
async fn trials_keep_growing(alarms: &Api<Alarm>, floor: f64, target: f64, operator: &Operator) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(trials) = control_trials(alarms, "steady-errors", "EU").await {
            assert!(
                trials >= 0.9 * floor,
                "control's trials fell from {floor} to {trials}: a count started again"
            );
            if trials >= target {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "control's trials never reached {target}\nlog:\n{}",
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn counts_survive_a_service_restart_and_an_operator_restart() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "guardrail-restart").await;
    let metrics = Arc::new(MetricsEndpoint::serve().expect("a metrics endpoint"));
    let mut options = PrometheusOptions::default();
    options.scrape_targets = vec![metrics.address()];
    let prometheus = Prometheus::start(
        plane.dir().join(format!("prometheus-{}", ns.name())),
        options,
    )
    .await
    .unwrap_or_else(|error| panic!("cannot start Prometheus: {error}"));
    apply_yaml(plane, ns.name(), &dial_and_guardrail("steady", &prometheus)).await;
    let client = plane.client().await.expect("client");
    let alarms: Api<Alarm> = Api::namespaced(client.clone(), ns.name());
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns.name());
    wait_phase(&dials, "steady", DialPhase::Dialed, &operator).await;
    let behaviour = Behaviour {
        dial: "steady",
        realms: ["EU", "NA"],
        t1_errors: [BASE_ERRORS, BASE_ERRORS],
        ignored: 0.0,
    };
    let start = |base: &str| {
        tokio::spawn(serve(
            base.to_owned(),
            ns.name().to_owned(),
            behaviour.clone(),
            Arc::clone(&metrics),
        ))
    };

    let service = start(&operator.base);
    trials_keep_growing(&alarms, 0.0, 3000.0, &operator).await;
    // The service restarts: its counters start again from zero.
    service.abort();
    let before = control_trials(&alarms, "steady-errors", "EU")
        .await
        .unwrap_or_default();
    let service = start(&operator.base);
    trials_keep_growing(&alarms, before, before + 3000.0, &operator).await;

    // The operator restarts: it counts from the stage's start again, not
    // from its own.
    service.abort();
    let before = control_trials(&alarms, "steady-errors", "EU")
        .await
        .unwrap_or_default();
    assert!(operator.terminate().await.success());
    let secret = format!("{}/weblab-webhook", ns.name());
    let operator = Operator::start(
        plane,
        &["--namespace", ns.name(), "--webhook-token-secret", &secret],
    )
    .await;
    let service = start(&operator.base);
    trials_keep_growing(&alarms, before, before + 3000.0, &operator).await;
    let eu = realm_result(&alarms, "steady-errors", "EU")
        .await
        .expect("a result for EU");
    assert_eq!(eu.state, AlarmState::Ok, "{}", eu.reason);
    service.abort();
}

#[tokio::test]
async fn a_guardrail_whose_source_fails_backs_off() {
    let plane = control_plane().await;
    let (ns, operator) = operator_with_webhook(plane, "guardrail-backoff").await;
    // Nothing listens on port 1: every query fails at once.
    let yaml = "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: down
spec:
  weblab: down
  treatments: [C, T1]
  realms: [EU]
  allocation: {C: 95, T1: 5}
---
apiVersion: weblab.dev/v1alpha1
kind: Alarm
metadata:
  name: down-errors
spec:
  severity: Sev2
  guardrail:
    dialRef: {name: down}
    url: http://127.0.0.1:1
    trials: sum(increase(requests_total{treatment=\"$treatment\",realm=\"$realm\"}[$window]))
    outcomes: sum(increase(errors_total{treatment=\"$treatment\",realm=\"$realm\"}[$window]))
    interval: 5s
    timeout: 3s
";
    apply_yaml(plane, ns.name(), yaml).await;
    let alarms: Api<Alarm> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    // The first failure waits twice the interval, the second four times.
    let backed_off = eventually(Duration::from_secs(60), || async {
        let Some(status) = alarms.get("down-errors").await.ok().and_then(|a| a.status) else {
            return false;
        };
        status.conditions.iter().any(|c| {
            c.type_ == "Degraded" && c.status == "True" && c.message.ends_with("next query in 20s")
        })
    })
    .await;
    assert!(
        backed_off,
        "the guardrail did not back off\nlog:\n{}",
        operator.logs()
    );
}
