//! The read side at scale: 10,000 dials (`WEBLAB_BENCH_SCALE_DIALS`), 100
//! alarms and 20 change windows in one namespace, a leader and a second
//! replica that only watches and serves.
//!
//! Prints the peak resident memory of both (`VmHWM`), the time until every
//! dial is `Dialed`, the leader's status writes, API retries and events per
//! dial, the time a fresh replica takes to serve (a full list of every
//! kind), and the time from an Alertmanager notification to every replica
//! serving the rollback. Then the same load again in a second namespace
//! with kube-apiserver and etcd pinned to one CPU (`taskset`), for the
//! retries, conflicts and errors a starved API server causes.

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};
use weblab_operator::api::{Alarm, ChangeWindow, WeblabDial, weblab_dial::DialPhase};

use super::{BenchResult, alarms, counter, wait_until};

const ALARMS: usize = 100;
const WINDOWS: usize = 20;
const TRIALS: usize = 20;

/// How many dials: `WEBLAB_BENCH_SCALE_DIALS`, default 10,000.
fn dial_count() -> usize {
    std::env::var("WEBLAB_BENCH_SCALE_DIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= ALARMS)
        .unwrap_or(10_000)
}

/// `--api-writes-per-second` and `--api-write-burst` from
/// `WEBLAB_BENCH_WRITES_PER_SECOND` (both set to it), to see what the
/// operator's default pacing costs and spares the API server.
fn write_rate_args() -> Vec<String> {
    std::env::var("WEBLAB_BENCH_WRITES_PER_SECOND")
        .ok()
        .filter(|rate| rate.parse::<u32>().is_ok_and(|rate| rate > 0))
        .map(|rate| {
            vec![
                format!("--api-writes-per-second={rate}"),
                format!("--api-write-burst={rate}"),
            ]
        })
        .unwrap_or_default()
}

/// One `weblab-operator run` process, killed when dropped.
struct Replica {
    base: String,
    child: tokio::process::Child,
}

impl Replica {
    /// Starts a replica of `namespace`'s operator; all of them stand for
    /// the Lease in `namespace`, so the first one started leads.
    async fn start(
        plane: &testenv::ControlPlane,
        namespace: &str,
        identity: &str,
    ) -> BenchResult<Self> {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let log = std::fs::File::create(plane.dir().join(format!("{identity}.log")))?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weblab-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(plane.kubeconfig_path())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--namespace",
                namespace,
                "--leader-election",
                "--lease-namespace",
                namespace,
                "--identity",
                identity,
                "--webhook-token-secret",
                &format!("{namespace}/{}", alarms::TOKEN_SECRET),
            ])
            .args(write_rate_args())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Replica {
            base: format!("http://127.0.0.1:{port}"),
            child,
        })
    }

    async fn metrics(&self, http: &reqwest::Client) -> String {
        match http.get(format!("{}/metrics", self.base)).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn wait_ready(&self, http: &reqwest::Client, within: Duration) -> BenchResult<()> {
        wait_until(within, || async {
            http.get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    /// Peak resident memory in MiB, from `/proc/<pid>/status`.
    fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return f64::NAN;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("VmHWM:").and_then(|kib| {
                        kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok()
                    })
                })
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    }

    /// Whether it serves dial `name` rolled back.
    async fn serves_rollback(&self, http: &reqwest::Client, namespace: &str, name: &str) -> bool {
        let url = format!(
            "{}/v1/weblabs/{namespace}/{name}/treatment?unit=customer-77&realm=EU",
            self.base
        );
        let Ok(response) = http.get(url).send().await else {
            return false;
        };
        response
            .json::<Value>()
            .await
            .is_ok_and(|body| body["reason"] == "rollback")
    }
}

fn dial_name(index: usize) -> String {
    format!("scale-{index:05}")
}

fn alarm_name(index: usize) -> String {
    format!("scale-alarm-{index:03}")
}

/// Dial `index` attaches alarm `index % 100` and window `index % 20`; alarm
/// 0 is the one the trials fire, so every 100th dial rolls back.
fn dial(index: usize) -> BenchResult<WeblabDial> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "WeblabDial",
        "metadata": {"name": dial_name(index)},
        "spec": {
            "weblab": format!("SCALE_{index:05}"),
            "treatments": ["C", "T1", "T2"], "realms": ["NA", "EU"],
            "allocation": {"C": 50, "T1": 25, "T2": 25},
            "overrides": [{"treatment": "T1", "units": ["customer-1", "customer-2", "customer-3"]}],
            "changeWindowRef": {"name": format!("scale-window-{:02}", index % WINDOWS)},
            "rollback": {"alarms": {"names": [alarm_name(index % ALARMS)]}}
        }
    }))?)
}

async fn create_alarms_and_windows(client: &kube::Client, namespace: &str) -> BenchResult<()> {
    let alarms: Api<Alarm> = Api::namespaced(client.clone(), namespace);
    for index in 0..ALARMS {
        let alertname = if index == 0 {
            "BenchErrors".to_owned()
        } else {
            format!("Scale{index:03}")
        };
        let alarm: Alarm = serde_json::from_value(json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
            "metadata": {"name": alarm_name(index)},
            "spec": {"severity": "Sev2", "alertmanager": {"matchers": [
                {"name": "alertname", "value": alertname}]}}
        }))?;
        alarms.create(&PostParams::default(), &alarm).await?;
    }
    let windows: Api<ChangeWindow> = Api::namespaced(client.clone(), namespace);
    for index in 0..WINDOWS {
        // Open all week; closed while a Sev2 alarm labelled for it fires
        // (none is), so that each window reads the alarm cache too.
        let window: ChangeWindow = serde_json::from_value(json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "ChangeWindow",
            "metadata": {"name": format!("scale-window-{index:02}")},
            "spec": {"timeZone": "UTC", "closedWhileAlarms": {
                "selector": {"matchLabels": {"scale-window": format!("w{index:02}")}},
                "severity": "Sev2"}}
        }))?;
        windows.create(&PostParams::default(), &window).await?;
    }
    Ok(())
}

async fn create_dials(client: &kube::Client, namespace: &str, dials: usize) -> BenchResult<()> {
    let api: Api<WeblabDial> = Api::namespaced(client.clone(), namespace);
    stream::iter(0..dials)
        .map(|index| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &dial(index)?).await?;
                BenchResult::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until the leader's cache holds `dials` dials `Dialed`, printing
/// progress every 30 s.
async fn wait_settled(leader: &Replica, http: &reqwest::Client, dials: usize) -> BenchResult<()> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let dialed = counter(
            &leader.metrics(http).await,
            "weblab_dials{phase=\"Dialed\"}",
        );
        if dialed as usize >= dials {
            return Ok(());
        }
        if reported.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  ... {dialed} of {dials} Dialed after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            reported = Instant::now();
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(format!("only {dialed} of {dials} dials Dialed after an hour").into());
        }
        sleep(Duration::from_secs(1)).await;
    }
}

/// Dials `Dialed` as the API server lists them (pages of 500).
async fn count_dialed(client: &kube::Client, namespace: &str) -> BenchResult<usize> {
    let api: Api<WeblabDial> = Api::namespaced(client.clone(), namespace);
    let mut dialed = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        dialed += page
            .items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DialPhase::Dialed))
            .count();
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(dialed),
        }
    }
}

/// Events about dials: objects, occurrences (series counted), and
/// objects by reason.
async fn dial_events(
    client: &kube::Client,
    namespace: &str,
) -> BenchResult<(usize, usize, BTreeMap<String, usize>)> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let (mut objects, mut occurrences) = (0, 0);
    let mut reasons = BTreeMap::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for event in page
            .items
            .iter()
            .filter(|e| e.involved_object.kind.as_deref() == Some("WeblabDial"))
        {
            objects += 1;
            *reasons
                .entry(event.reason.clone().unwrap_or_default())
                .or_default() += 1;
            let series = event.series.as_ref().and_then(|s| s.count).unwrap_or(0);
            occurrences +=
                usize::try_from(event.count.unwrap_or(1).max(series).max(1)).unwrap_or(1);
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok((objects, occurrences, reasons)),
        }
    }
}

fn sum_series(metrics: &str, prefix: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn print_write_figures(metrics: &str, dials: usize) {
    let per_dial = |value: f64| value / dials as f64;
    let status = |result: &str| {
        counter(
            metrics,
            &format!(
                "weblab_status_writes_total{{controller=\"weblab-operator/weblabdial\",result=\"{result}\"}}"
            ),
        )
    };
    println!(
        "  dial status writes per dial {:>8.2}   (ok {:.0}, conflict {:.0} = {:.3}/dial, stale skipped {:.0}, error {:.0})",
        per_dial(status("ok")),
        status("ok"),
        status("conflict"),
        per_dial(status("conflict")),
        status("stale"),
        status("error"),
    );
    let retries = sum_series(metrics, "weblab_api_retries_total");
    if retries.is_empty() {
        println!("  API retries                 none (no 429 or 5xx answered)");
    }
    for (labels, value) in retries {
        println!(
            "  API retries {labels:<16}{value:>8.0}   ({:.3}/dial)",
            per_dial(value)
        );
    }
    println!(
        "  throttled (client side)    {:>8.1} s, summed over the writes that waited",
        counter(metrics, "weblab_api_throttled_seconds_total")
    );
    let errors = sum_series(metrics, "weblab_reconcile_errors_total");
    let total = errors.iter().fold(0.0, |sum, (_, value)| sum + value);
    println!("  reconcile errors           {total:>8.0}   {errors:?}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the scenario and prints its figures.
pub async fn read_side(http: &reqwest::Client) -> BenchResult<()> {
    let dials = dial_count();
    let plane = testenv::ControlPlane::start(testenv::Options::default()).await?;
    plane
        .install_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let client = plane.client().await?;
    let namespace = plane.namespace("scale").await?;
    let ns = namespace.name();
    alarms::create_webhook_secret(&client, ns).await?;

    let leader = Replica::start(&plane, ns, "leader").await?;
    leader.wait_ready(http, Duration::from_secs(120)).await?;
    wait_until(Duration::from_secs(60), || async {
        counter(&leader.metrics(http).await, "weblab_leader") == 1.0
    })
    .await?;
    create_alarms_and_windows(&client, ns).await?;
    let started = Instant::now();
    create_dials(&client, ns, dials).await?;
    let created = started.elapsed();
    wait_settled(&leader, http, dials).await?;
    let settled = started.elapsed();
    let listed = count_dialed(&client, ns).await?;
    let leader_metrics = leader.metrics(http).await;
    let (event_objects, event_occurrences, reasons) = dial_events(&client, ns).await?;

    // A second replica started with everything in place: how long its
    // full list takes before it serves, and what holding it costs.
    let resync_started = Instant::now();
    let replica = Replica::start(&plane, ns, "replica").await?;
    replica.wait_ready(http, Duration::from_secs(300)).await?;
    let resync = resync_started.elapsed();

    println!();
    println!(
        "Read side: {dials} dials, {ALARMS} alarms, {WINDOWS} windows in one namespace; a leader and a watching replica (debug build unless built otherwise)"
    );
    println!(
        "  operator flags             {:?} (none: the defaults)",
        write_rate_args()
    );
    println!(
        "  created in                 {:>8.2} s",
        created.as_secs_f64()
    );
    println!(
        "  all Dialed after           {:>8.2} s   (listed Dialed: {listed})",
        settled.as_secs_f64()
    );
    print_write_figures(&leader_metrics, dials);
    println!(
        "  events per dial            {:>8.3}   ({event_objects} Event objects, {event_occurrences} occurrences)",
        event_objects as f64 / dials as f64
    );
    println!("    by reason: {reasons:?}");
    println!(
        "  fresh replica serving after {:>7.2} s   (lists every kind)",
        resync.as_secs_f64()
    );
    println!(
        "  peak RSS leader            {:>8.1} MiB",
        leader.peak_rss_mib()
    );
    println!(
        "  peak RSS watching replica  {:>8.1} MiB",
        replica.peak_rss_mib()
    );

    alarm_to_every_replica(http, &client, ns, &[&leader, &replica], dials).await?;
    println!(
        "  peak RSS after the trials  {:>8.1} MiB leader, {:.1} MiB replica",
        leader.peak_rss_mib(),
        replica.peak_rss_mib()
    );
    drop(replica);
    drop(leader);

    starved(http, &plane, &client, dials).await
}

/// The time from the notification to every replica serving the rollback
/// of the attached dials (the first and the last), over `TRIALS` trials.
async fn alarm_to_every_replica(
    http: &reqwest::Client,
    client: &kube::Client,
    namespace: &str,
    replicas: &[&Replica],
    dials: usize,
) -> BenchResult<()> {
    let leader = replicas[0];
    let attached: Vec<usize> = (0..dials).step_by(ALARMS).collect();
    let watched = [
        dial_name(attached[0]),
        dial_name(attached[attached.len() - 1]),
    ];
    let api: Api<WeblabDial> = Api::namespaced(client.clone(), namespace);
    let mut latencies = Vec::new();
    let mut answered = Vec::new();
    for trial in 1..=TRIALS {
        let started = Instant::now();
        // The replicas are polled from the moment the notification is sent,
        // not once the webhook has answered.
        let notify = async {
            let response = http
                .post(format!("{}/v1/webhooks/alertmanager", leader.base))
                .bearer_auth(alarms::TOKEN)
                .json(&alarms::notification("firing"))
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(format!("webhook answered {}", response.status()).into());
            }
            BenchResult::Ok(started.elapsed().as_secs_f64())
        };
        let served = async {
            let mut pending: Vec<(usize, &str)> = (0..replicas.len())
                .flat_map(|r| watched.iter().map(move |name| (r, name.as_str())))
                .collect();
            while !pending.is_empty() {
                if started.elapsed() > Duration::from_secs(60) {
                    return Err(format!(
                        "trial {trial}: {} never served the rollback",
                        pending.len()
                    )
                    .into());
                }
                let served: Vec<bool> = stream::iter(pending.clone())
                    .map(|(r, name)| replicas[r].serves_rollback(http, namespace, name))
                    .buffered(4)
                    .collect()
                    .await;
                let mut served = served.into_iter();
                pending.retain(|_| !served.next().unwrap_or(false));
                if !pending.is_empty() {
                    sleep(Duration::from_millis(2)).await;
                }
            }
            BenchResult::Ok(started.elapsed().as_secs_f64())
        };
        let (answered_after, served_after) = tokio::try_join!(notify, served)?;
        answered.push(answered_after);
        latencies.push(served_after);

        let response = http
            .post(format!("{}/v1/webhooks/alertmanager", leader.base))
            .bearer_auth(alarms::TOKEN)
            .json(&alarms::notification("resolved"))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("webhook answered {}", response.status()).into());
        }
        // Retry once the alarm is clear: a retry while it fires rolls back
        // again at once.
        sleep(Duration::from_secs(2)).await;
        stream::iter(attached.iter().copied())
            .map(|index| {
                let api = api.clone();
                async move {
                    let patch = json!({"metadata": {"annotations": {
                        "weblab.dev/action": format!("retry scale-{trial}")}}});
                    api.patch(
                        &dial_name(index),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await?;
        wait_settled(leader, http, dials).await?;
    }
    latencies.sort_by(f64::total_cmp);
    answered.sort_by(f64::total_cmp);
    println!(
        "  Alertmanager notification to every replica serving the rollback ({} attached dials, {TRIALS} trials):",
        attached.len()
    );
    println!(
        "    p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        percentile(&latencies, 50.0) * 1e3,
        percentile(&latencies, 99.0) * 1e3,
        percentile(&latencies, 100.0) * 1e3
    );
    println!(
        "    (the webhook answered after p50 {:.1} ms, p99 {:.1} ms)",
        percentile(&answered, 50.0) * 1e3,
        percentile(&answered, 99.0) * 1e3
    );
    Ok(())
}

/// The same load with kube-apiserver and etcd pinned to one CPU.
async fn starved(
    http: &reqwest::Client,
    plane: &testenv::ControlPlane,
    client: &kube::Client,
    dials: usize,
) -> BenchResult<()> {
    for process in plane.processes() {
        if matches!(process.name(), "kube-apiserver" | "etcd") {
            let pinned = std::process::Command::new("taskset")
                .args(["-a", "-c", "-p", "0", &process.pid().to_string()])
                .stdout(Stdio::null())
                .status()?;
            if !pinned.success() {
                return Err(format!("taskset {} failed: {pinned}", process.name()).into());
            }
        }
    }
    let namespace = plane.namespace("scale-starved").await?;
    let ns = namespace.name();
    alarms::create_webhook_secret(client, ns).await?;
    let leader = Replica::start(plane, ns, "starved-leader").await?;
    leader.wait_ready(http, Duration::from_secs(300)).await?;
    wait_until(Duration::from_secs(120), || async {
        counter(&leader.metrics(http).await, "weblab_leader") == 1.0
    })
    .await?;
    create_alarms_and_windows(client, ns).await?;
    let started = Instant::now();
    create_dials(client, ns, dials).await?;
    let created = started.elapsed();
    wait_settled(&leader, http, dials).await?;
    let settled = started.elapsed();
    let metrics = leader.metrics(http).await;
    let (event_objects, _, reasons) = dial_events(client, ns).await?;
    println!();
    println!(
        "Read side, API server starved: kube-apiserver and etcd pinned to CPU 0 (taskset), {dials} dials"
    );
    println!(
        "  created in                 {:>8.2} s",
        created.as_secs_f64()
    );
    println!(
        "  all Dialed after           {:>8.2} s",
        settled.as_secs_f64()
    );
    print_write_figures(&metrics, dials);
    println!(
        "  events per dial            {:>8.3}   by reason: {reasons:?}",
        event_objects as f64 / dials as f64
    );
    println!(
        "  peak RSS leader            {:>8.1} MiB",
        leader.peak_rss_mib()
    );
    Ok(())
}
