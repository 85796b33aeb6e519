//! Rollback: 4 regions (namespaces) x 10 Deployments of 2 replicas on a
//! control plane where workloads run (kube-controller-manager, scheduler,
//! kwok), rolled back from v2 to v1 one region after another and then all
//! at once. The bake is 0s so that the figures show the mechanism; a real
//! bake (15 minutes in the runbook) adds itself once per sequential region.
//!
//! The rollback's status is polled every 50 ms to see when each wave starts,
//! rolls out and is verified: "waiting for rollouts" is the time during
//! which at least one region was rolling out (restoring pod templates and
//! Kubernetes replacing Pods); "operator overhead" is the rest, from the
//! creation of the Rollback to `Succeeded`. Restoring templates and polling
//! rollouts (every 500 ms) happen inside the rolling intervals: compare a
//! region's share with the plain release of one region, printed first.

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;
use weblab_operator::api::{
    Rollback,
    rollback::{AUTHORIZED_ROLLBACKS, RollbackPhase, WavePhase},
};

use super::{BenchResult, wait_until};

const REGIONS: [&str; 4] = ["prodna", "prodfe", "prodeu", "prodzaz"];
const DEPLOYMENTS: usize = 10;

fn deployment(index: usize, tag: &str) -> BenchResult<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("svc-{index:02}"), "labels": {"bench": "rollback"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": format!("svc-{index:02}")}},
            "template": {
                "metadata": {"labels": {"app": format!("svc-{index:02}")}},
                "spec": {"containers": [{"name": "app", "image": format!("registry.invalid/bench/svc:{tag}")}]}
            }
        }
    }))?)
}

/// Sets every Deployment of `namespace` to `tag` and waits for the rollouts.
async fn release(client: &kube::Client, namespace: &str, tag: &str) -> BenchResult<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    stream::iter(0..DEPLOYMENTS)
        .map(|i| {
            let api = api.clone();
            async move {
                let manifest = deployment(i, tag)?;
                let params = PatchParams::apply("bench").force();
                api.patch(&format!("svc-{i:02}"), &params, &Patch::Apply(&manifest))
                    .await?;
                BenchResult::Ok(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    wait_until(Duration::from_secs(300), || async {
        let Ok(list) = api.list(&Default::default()).await else {
            return false;
        };
        list.items.len() == DEPLOYMENTS
            && list.items.iter().all(|d| {
                let status = d.status.clone().unwrap_or_default();
                status.observed_generation >= d.metadata.generation
                    && status.updated_replicas == Some(2)
                    && status.available_replicas == Some(2)
                    && status.replicas == Some(2)
            })
    })
    .await
}

/// When each wave was first seen in each phase, relative to the start.
type Timeline = BTreeMap<(String, &'static str), Duration>;

fn phase_name(phase: WavePhase) -> &'static str {
    match phase {
        WavePhase::Pending => "pending",
        WavePhase::RollingBack => "rolling",
        WavePhase::Baking => "baking",
        WavePhase::Succeeded => "succeeded",
        WavePhase::Failed => "failed",
    }
}

/// Applies a rollback of every region to v1 with `max` regions at once;
/// returns the total time and the time spent waiting for rollouts.
async fn roll_back(
    client: &kube::Client,
    home: &str,
    namespaces: &[String],
    name: &str,
    max: usize,
) -> BenchResult<(Duration, Duration)> {
    let waves: Vec<_> = REGIONS
        .iter()
        .zip(namespaces)
        .map(|(region, ns)| json!({"region": region, "namespace": ns}))
        .collect();
    let rollback: Rollback = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "Rollback",
        "metadata": {"name": name},
        "spec": {
            "targets": [{"kind": "Deployment", "selector": {"matchLabels": {"bench": "rollback"}}}],
            "waves": waves,
            "maxConcurrentRegions": max,
            "target": {"type": "ImageTag", "imageTag": "v1"},
            "verification": {"rolloutDeadline": "5m", "bake": "0s"}
        }
    }))?;
    let api: Api<Rollback> = Api::namespaced(client.clone(), home);
    let started = Instant::now();
    api.create(&PostParams::default(), &rollback).await?;
    let mut timeline = Timeline::new();
    let deadline = started + Duration::from_secs(600);
    loop {
        let status = api.get(name).await?.status.unwrap_or_default();
        for wave in &status.waves {
            timeline
                .entry((wave.region.clone(), phase_name(wave.phase)))
                .or_insert_with(|| started.elapsed());
        }
        match status.phase {
            Some(RollbackPhase::Succeeded) => break,
            Some(RollbackPhase::Failed | RollbackPhase::Refused) => {
                return Err(format!("rollback {name} ended {:?}", status.phase).into());
            }
            _ if Instant::now() > deadline => return Err("rollback timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let total = started.elapsed();
    // The union of the regions' rolling intervals.
    let mut intervals: Vec<(Duration, Duration)> = REGIONS
        .iter()
        .filter_map(|region| {
            let from = timeline.get(&(region.to_string(), "rolling"))?;
            let to = timeline
                .get(&(region.to_string(), "baking"))
                .or_else(|| timeline.get(&(region.to_string(), "succeeded")))?;
            Some((*from, *to))
        })
        .collect();
    intervals.sort();
    let mut rolling = Duration::ZERO;
    let mut reach = Duration::ZERO;
    for (from, to) in intervals {
        let from = from.max(reach);
        if to > from {
            rolling += to - from;
            reach = to;
        }
    }
    Ok((total, rolling))
}

/// Runs the section on its own control plane with workloads.
pub async fn rollback_waves() -> BenchResult<()> {
    let plane = testenv::ControlPlane::start(testenv::Options::default().workloads(true)).await?;
    plane
        .install_crds(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
        .await?;
    let client = plane.client().await?;
    let home = plane.namespace("bench-rollback").await?;
    let mut guards = Vec::new();
    for region in REGIONS {
        guards.push(plane.namespace(region).await?);
    }
    let namespaces: Vec<String> = guards.iter().map(|g| g.name().to_owned()).collect();
    // Each region lets the home namespace's Rollbacks in.
    let authorization = json!({"metadata": {"annotations": {
        AUTHORIZED_ROLLBACKS: format!("{}/*", home.name())
    }}});
    for ns in &namespaces {
        Api::<Namespace>::all(client.clone())
            .patch(ns, &PatchParams::default(), &Patch::Merge(&authorization))
            .await?;
    }
    // A plain release of one region, applied directly, is the floor a
    // region's rollback cannot beat on this cluster.
    let mut plain = Duration::ZERO;
    for ns in &namespaces {
        release(&client, ns, "v1").await?;
        let released = Instant::now();
        release(&client, ns, "v2").await?;
        plain += released.elapsed();
    }
    let plain = plain / REGIONS.len() as u32;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(plane.dir().join("operator-rollback.log"))?;
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
            home.name(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let http = weblab_operator::outbound::client(Duration::from_secs(10))?;
    wait_until(Duration::from_secs(60), || async {
        http.get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;

    let (sequential, sequential_rolling) =
        roll_back(&client, home.name(), &namespaces, "sequential", 1).await?;
    for ns in &namespaces {
        release(&client, ns, "v2").await?;
    }
    let (parallel, parallel_rolling) =
        roll_back(&client, home.name(), &namespaces, "parallel", REGIONS.len()).await?;
    let _ = operator.kill().await;

    println!();
    println!(
        "Rollback: {} regions x {DEPLOYMENTS} Deployments (2 replicas each), v2 -> v1, bake 0s",
        REGIONS.len()
    );
    println!(
        "  plain release of one region, applied directly (the floor): {:>6.2} s",
        plain.as_secs_f64()
    );
    for (label, total, rolling) in [
        ("sequential", sequential, sequential_rolling),
        ("parallel (4 at once)", parallel, parallel_rolling),
    ] {
        println!(
            "  {label:<22} total {:>7.2} s = waiting for rollouts {:>7.2} s + operator overhead {:>6.2} s",
            total.as_secs_f64(),
            rolling.as_secs_f64(),
            total.saturating_sub(rolling).as_secs_f64()
        );
    }
    println!(
        "  manual runbook (DOMAIN.md 2): 8-10 min per region, 15-20 min for all four, plus watching dashboards"
    );
    Ok(())
}
