//! `make bench`: figures printed, never asserted.
//!
//! 1. Reconcile: 1,000 dials applied at once; time until every one is
//!    `Dialed`, and status writes per dial.
//! 2. Assignment API: `wrk` on loopback against the native endpoint and the
//!    OFREP endpoint with those 1,000 dials loaded: requests/s, p50, p99.
//! 3. Alarm to rollback: 100 of the 1,000 dials attached to one alarm; from
//!    the Alertmanager notification reaching the operator to the assignment
//!    API serving the rollback treatment, p50 and p99.
//! 4. Rollback: 4 regions x 10 Deployments on a second control plane where
//!    workloads run, sequential and parallel, split into waiting for
//!    rollouts and operator overhead.
//! 5. Read side at scale (`scale.rs`): 10,000 dials, 100 alarms, 20
//!    windows, a leader and a watching replica: memory, time to settle,
//!    writes and events per dial, alarm to every replica; then again with
//!    the API server starved of CPU.
//!
//! `WEBLAB_BENCH_ONLY=scale` runs section 5 alone;
//! `WEBLAB_BENCH_SCALE_DIALS` sets its dial count (default 10,000) and
//! `WEBLAB_BENCH_WRITES_PER_SECOND` its operators' write pacing (default:
//! the operator's).

mod alarms;
mod assignment;
mod rollback;
mod scale;

use std::{process::Stdio, time::Duration};

use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use tokio::time::{Instant, sleep};
use weblab_operator::api::{WeblabDial, weblab_dial::DialPhase};

const DIALS: usize = 1_000;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// What the sections share: the control plane, a client, and the operator.
pub struct Bench<'a> {
    /// The control plane.
    pub plane: &'a testenv::ControlPlane,
    /// A client of it.
    pub client: kube::Client,
    /// An HTTP client for the operator.
    pub http: &'a reqwest::Client,
    /// The operator's base URL.
    pub base: &'a str,
    /// The namespace of the 1,000 dials.
    pub namespace: &'a str,
}

fn main() -> BenchResult<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

fn dial(index: usize) -> BenchResult<WeblabDial> {
    let yaml = format!(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: bench-{index:04}
spec:
  weblab: BENCH_{index:04}
  treatments: [C, T1, T2]
  realms: [NA, EU]
  allocation: {{C: 50, T1: 25, T2: 25}}
  overrides:
    - treatment: T1
      units: [customer-1, customer-2, customer-3]
"
    );
    Ok(serde_saphyr::from_str(&yaml)?)
}

async fn run() -> BenchResult<()> {
    let http = weblab_operator::outbound::client(Duration::from_secs(30))?;
    if std::env::var("WEBLAB_BENCH_ONLY").as_deref() == Ok("scale") {
        return scale::read_side(&http).await;
    }
    let plane = testenv::ControlPlane::start(testenv::Options::default()).await?;
    plane
        .install_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let namespace = plane.namespace("bench").await?;
    let client = plane.client().await?;
    alarms::create_webhook_secret(&client, namespace.name()).await?;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(plane.dir().join("operator.log"))?;
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_weblab-operator"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(plane.kubeconfig_path())
        .args([
            // The benchmark's Prometheus and receivers are on loopback.
            "--allow-outbound-url-prefix",
            "http://127.0.0.1:",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            namespace.name(),
            "--webhook-token-secret",
            &format!("{}/{}", namespace.name(), alarms::TOKEN_SECRET),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    wait_until(Duration::from_secs(60), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;

    // 1. Reconcile.
    let api: Api<WeblabDial> = Api::namespaced(client.clone(), namespace.name());
    let started = Instant::now();
    stream::iter(0..DIALS)
        .map(|i| {
            let api = api.clone();
            async move {
                let manifest = dial(i)?;
                let created: BenchResult<WeblabDial> = api
                    .create(&PostParams::default(), &manifest)
                    .await
                    .map_err(Into::into);
                created
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<WeblabDial>>()
        .await?;
    let created = started.elapsed();
    wait_until(Duration::from_secs(300), || async {
        api.list(&ListParams::default()).await.is_ok_and(|list| {
            list.items
                .iter()
                .filter(|d| d.status.as_ref().and_then(|s| s.phase) == Some(DialPhase::Dialed))
                .count()
                == DIALS
        })
    })
    .await?;
    let settled = started.elapsed();
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let writes = counter(
        &metrics,
        "weblab_status_writes_total{controller=\"weblab-operator/weblabdial\",result=\"ok\"}",
    );
    let conflicts = counter(
        &metrics,
        "weblab_status_writes_total{controller=\"weblab-operator/weblabdial\",result=\"conflict\"}",
    );

    println!(
        "weblab-operator benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("Reconcile: {DIALS} dials applied at once");
    println!(
        "  created in                 {:>8.2} s",
        created.as_secs_f64()
    );
    println!(
        "  all Dialed after           {:>8.2} s",
        settled.as_secs_f64()
    );
    println!(
        "  status writes per dial     {:>8.2}   ({writes} writes, {conflicts} conflicts)",
        writes / DIALS as f64
    );
    let sample = api.get("bench-0000").await?;
    println!(
        "  (sample: {} -> {})",
        sample.name_any(),
        sample.status.and_then(|s| s.summary).unwrap_or_default()
    );

    assignment::under_load(&base, namespace.name()).await?;
    alarms::alarm_to_rollback(&Bench {
        plane: &plane,
        client,
        http: &http,
        base: &base,
        namespace: namespace.name(),
    })
    .await?;
    let _ = operator.kill().await;
    rollback::rollback_waves().await?;
    scale::read_side(&http).await
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> BenchResult<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        if Instant::now() > deadline {
            return Err(format!("timed out after {within:?}").into());
        }
        sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
