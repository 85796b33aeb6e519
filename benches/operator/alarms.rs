//! Alarm to rollback. 100 of the 1,000 dials attach one alarm.
//!
//! Alertmanager: each trial posts a firing notification to the operator's
//! webhook, exactly as Alertmanager would (the clock starts when it is sent
//! on loopback), and polls the assignment API for the 100 dials until each
//! serves the rollback treatment; then resolves the alert, retries the dials
//! and waits until they are dialed up again.
//!
//! Prometheus: the same with a Prometheus alarm (interval 5 s, the shortest allowed) on a series a
//! real Prometheus scrapes every second; the clock starts when the metrics
//! endpoint starts exposing the breaching value.

use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};
use weblab_operator::api::{Alarm, WeblabDial, weblab_dial::DialPhase};

use testenv::{MetricsEndpoint, Prometheus, PrometheusOptions};

use super::{Bench, BenchResult, wait_until};

/// The Secret holding the webhook token.
pub const TOKEN_SECRET: &str = "weblab-webhook";
/// The webhook token.
pub const TOKEN: &str = "bench-token-5d1f";
const ATTACHED: usize = 100;
const TRIALS: usize = 5;

/// Creates the webhook token Secret before the operator starts.
pub async fn create_webhook_secret(client: &kube::Client, namespace: &str) -> BenchResult<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": TOKEN_SECRET},
        "stringData": {"token": TOKEN}
    }))?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// A notification from Alertmanager about the `BenchErrors` alert.
pub fn notification(status: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"BenchErrors\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "weblab", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid",
        "alerts": [{
            "status": status, "labels": {"alertname": "BenchErrors"}, "annotations": {},
            "startsAt": "2026-11-22T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "bench0000000001"
        }]
    })
}

async fn notify(bench: &Bench<'_>, status: &str) -> BenchResult<()> {
    let response = bench
        .http
        .post(format!("{}/v1/webhooks/alertmanager", bench.base))
        .bearer_auth(TOKEN)
        .json(&notification(status))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("webhook answered {}", response.status()).into());
    }
    Ok(())
}

/// Whether the assignment API serves dial `index` rolled back.
async fn serves_rollback(bench: &Bench<'_>, index: usize) -> bool {
    let url = format!(
        "{}/v1/weblabs/{}/bench-{index:04}/treatment?unit=customer-77&realm=EU",
        bench.base, bench.namespace
    );
    let Ok(response) = bench.http.get(url).send().await else {
        return false;
    };
    response
        .json::<Value>()
        .await
        .is_ok_and(|body| body["reason"] == "rollback")
}

async fn count_dialed(dials: &Api<WeblabDial>) -> usize {
    dials.list(&ListParams::default()).await.map_or(0, |list| {
        list.items
            .iter()
            .take(ATTACHED)
            .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DialPhase::Dialed))
            .count()
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the trials and prints per-dial and whole-group latencies.
pub async fn alarm_to_rollback(bench: &Bench<'_>) -> BenchResult<()> {
    let alarms: Api<Alarm> = Api::namespaced(bench.client.clone(), bench.namespace);
    let alarm: Alarm = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
        "metadata": {"name": "bench-errors"},
        "spec": {"severity": "Sev2", "alertmanager": {"matchers": [
            {"name": "alertname", "value": "BenchErrors"}]}}
    }))?;
    alarms.create(&PostParams::default(), &alarm).await?;
    // Attach the alarm to the first 100 dials (a spec change, as a person
    // would make it); they stay dialed up while it is OK.
    let dials: Api<WeblabDial> = Api::namespaced(bench.client.clone(), bench.namespace);
    attach(&dials, "bench-errors").await?;
    wait_until(Duration::from_secs(120), || async {
        count_dialed(&dials).await == ATTACHED
    })
    .await?;

    println!();
    println!(
        "Alarm to rollback: {ATTACHED} of 1,000 dials attached to one alarm, {TRIALS} trials each"
    );
    let webhook = measure(bench, &dials, "webhook", |bench, firing| async move {
        notify(bench, if firing { "firing" } else { "resolved" }).await
    })
    .await?;
    report("Alertmanager notification sent", &webhook);

    // The same through Prometheus: attach a pulled alarm instead.
    let endpoint = MetricsEndpoint::serve()?;
    endpoint.set("bench_error_ratio", &[], 0.0);
    let mut options = PrometheusOptions::default();
    options.scrape_targets = vec![endpoint.address()];
    let prometheus = Prometheus::start(bench.plane.dir().join("bench-prometheus"), options).await?;
    prometheus
        .wait_for_samples("bench_error_ratio", Duration::from_secs(60))
        .await?;
    let alarm: Alarm = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
        "metadata": {"name": "bench-prometheus"},
        "spec": {"severity": "Sev2", "prometheus": {
            "url": prometheus.url(), "query": "max(bench_error_ratio)", "interval": "5s",
            "timeout": "1s", "comparison": "GreaterThan", "threshold": 0.05}}
    }))?;
    alarms.create(&PostParams::default(), &alarm).await?;
    attach(&dials, "bench-prometheus").await?;
    wait_until(Duration::from_secs(120), || async {
        count_dialed(&dials).await == ATTACHED
    })
    .await?;
    let endpoint = &endpoint;
    let pulled = measure(bench, &dials, "prometheus", |_, firing| async move {
        endpoint.set("bench_error_ratio", &[], if firing { 0.5 } else { 0.0 });
        Ok(())
    })
    .await?;
    report(
        "breaching value exposed (scrape 1 s, alarm interval 5 s)",
        &pulled,
    );
    Ok(())
}

/// Attaches `alarm` (alone) to the first 100 dials.
async fn attach(dials: &Api<WeblabDial>, alarm: &str) -> BenchResult<()> {
    for index in 0..ATTACHED {
        let patch = json!({"spec": {"rollback": {"alarms": {"names": [alarm]}}}});
        dials
            .patch(
                &format!("bench-{index:04}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// Latencies of the trials: per dial, and until all 100 served rollback.
struct Latencies {
    per_dial: Vec<f64>,
    all: Vec<f64>,
    /// Until the signal call returned (for the webhook: the alarm written).
    signalled: Vec<f64>,
}

/// Runs the trials; `signal(bench, true)` makes the alarm fire, `false`
/// clears it.
async fn measure<'b, F, Fut>(
    bench: &'b Bench<'b>,
    dials: &Api<WeblabDial>,
    label: &str,
    signal: F,
) -> BenchResult<Latencies>
where
    F: Fn(&'b Bench<'b>, bool) -> Fut,
    Fut: Future<Output = BenchResult<()>>,
{
    let mut per_dial = Vec::new();
    let mut all = Vec::new();
    let mut signalled = Vec::new();
    for trial in 1..=TRIALS {
        let started = Instant::now();
        signal(bench, true).await?;
        signalled.push(started.elapsed().as_secs_f64());
        let mut pending: Vec<usize> = (0..ATTACHED).collect();
        while !pending.is_empty() {
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("{} dials never rolled back", pending.len()).into());
            }
            let served: Vec<(usize, bool)> = stream::iter(pending.clone())
                .map(|index| async move { (index, serves_rollback(bench, index).await) })
                .buffer_unordered(8)
                .collect()
                .await;
            let now = started.elapsed().as_secs_f64();
            for (index, rolled_back) in served {
                if rolled_back {
                    per_dial.push(now);
                    pending.retain(|i| *i != index);
                }
            }
            // Poll gently: a tight loop would take the CPU the API server
            // and the operator need to do the work being measured.
            if !pending.is_empty() {
                sleep(Duration::from_millis(20)).await;
            }
        }
        all.push(started.elapsed().as_secs_f64());

        signal(bench, false).await?;
        // Retry only once the alarm is clear: a retry while it fires rolls
        // back again at once.
        sleep(Duration::from_secs(3)).await;
        for index in 0..ATTACHED {
            let patch = json!({"metadata": {"annotations": {
                "weblab.dev/action": format!("retry {label}-{trial}")}}});
            dials
                .patch(
                    &format!("bench-{index:04}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        wait_until(Duration::from_secs(120), || async {
            count_dialed(dials).await == ATTACHED
        })
        .await?;
    }
    per_dial.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    signalled.sort_by(f64::total_cmp);
    Ok(Latencies {
        per_dial,
        all,
        signalled,
    })
}

fn report(from: &str, latencies: &Latencies) {
    println!(
        "  from {from} (the call returned after p50 {:.0} ms):",
        percentile(&latencies.signalled, 50.0) * 1e3
    );
    println!(
        "    per dial, until the assignment API serves rollback  p50 {:>7.0} ms   p99 {:>7.0} ms",
        percentile(&latencies.per_dial, 50.0) * 1e3,
        percentile(&latencies.per_dial, 99.0) * 1e3
    );
    println!(
        "    until all {ATTACHED} serve rollback                      p50 {:>7.0} ms   max {:>7.0} ms",
        percentile(&latencies.all, 50.0) * 1e3,
        percentile(&latencies.all, 100.0) * 1e3
    );
}
