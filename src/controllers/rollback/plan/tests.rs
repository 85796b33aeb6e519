//! Fixtures shared by the tests of every concern of the plan.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::api::{
    alarm::AlarmState,
    common::{MicroTime, Severity},
    conditions,
    rollback::{
        FiredBy, RevisionTarget, RollbackPhase, RollbackSpec, RollbackStatus, WavePhase,
        WaveStatus, WorkloadKind, WorkloadResult,
    },
};

mod armed;
mod gitops;
mod reporting;
mod target;
mod waves;

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("a valid timestamp")
}

fn revision(number: i64, tag: &str, deployed_at: Timestamp, stable: bool) -> Revision {
    Revision {
        number,
        hash: format!("h{tag}"),
        images: vec![format!("registry.example/graphql:{tag}")],
        deployed_at,
        stable_since: stable.then_some(deployed_at),
        rolled_out_at: None,
    }
}

/// 3.240.0 stable, 3.241.0 never confirmed, 3.242.1 current (bad).
fn graphql(current_tag: &str) -> Workload {
    Workload {
        kind: WorkloadKind::Deployment,
        name: "graphql-api".to_owned(),
        revisions: vec![
            revision(1, "3.240.0", t(-3 * 86_400), true),
            revision(2, "3.241.0", t(-30 * 3600), false),
            revision(3, "3.242.1", t(-3600), false),
        ],
        current: Some(format!("h{current_tag}")),
        rollout: Rollout::Complete(Some(t(-3000))),
    }
}

fn spec(yaml: &str) -> RollbackSpec {
    serde_saphyr::from_str(yaml).expect("a valid spec")
}

fn four_regions(max: u32) -> RollbackSpec {
    spec(&format!(
        "targets: [{{kind: Deployment, name: graphql-api}}]
waves:
  - {{region: prodNA, namespace: na}}
  - {{region: prodFE, namespace: fe}}
  - {{region: prodEU, namespace: eu}}
  - {{region: prodZAZ, namespace: zaz}}
maxConcurrentRegions: {max}
target: {{type: PreviousStable}}
verification: {{rolloutDeadline: 10m, bake: 15m, alarms: {{names: [errors]}}}}
"
    ))
}

fn target(yaml: &str) -> RevisionTarget {
    serde_saphyr::from_str(yaml).expect("a valid target")
}

fn read(workloads: Vec<Workload>) -> RegionView {
    RegionView::Read {
        workloads,
        not_found: Vec::new(),
    }
}

fn all_regions(spec: &RollbackSpec, view: &RegionView) -> BTreeMap<String, RegionView> {
    spec.waves
        .iter()
        .map(|w| (w.region.clone(), view.clone()))
        .collect()
}

fn alarm(state: AlarmState, severity: Severity, since: Timestamp) -> AlarmReading {
    AlarmReading {
        name: "errors".to_owned(),
        state,
        severity,
        since: Some(since),
    }
}

struct Case {
    spec: RollbackSpec,
    status: RollbackStatus,
    regions: BTreeMap<String, RegionView>,
    alarms: Vec<AlarmReading>,
    gitops: BTreeMap<GitOpsKey, GitOpsView>,
    request: Option<String>,
    now: Timestamp,
}

impl Case {
    fn new(spec: RollbackSpec, view: RegionView) -> Self {
        let regions = all_regions(&spec, &view);
        Case {
            spec,
            status: RollbackStatus::default(),
            regions,
            alarms: Vec::new(),
            gitops: BTreeMap::new(),
            request: None,
            now: t(0),
        }
    }

    fn decide(&self) -> Decision {
        decide(&World {
            spec: &self.spec,
            generation: 1,
            status: &self.status,
            trigger_alarms: &self.alarms,
            verification_alarms: &self.alarms,
            missing: &[],
            regions: &self.regions,
            namespace: "team",
            gitops: &self.gitops,
            request: self.request.as_deref(),
            now: self.now,
        })
    }

    /// Decides, and takes the decision's status as the written one.
    fn step(&mut self) -> Decision {
        let decision = self.decide();
        self.status = decision.status.clone();
        self.request = None;
        decision
    }

    fn set_region(&mut self, region: &str, view: RegionView) {
        self.regions.insert(region.to_owned(), view);
    }

    fn later(&mut self, seconds: i64) {
        self.now += SignedDuration::from_secs(seconds);
    }

    fn wave(&self, region: &str) -> &WaveStatus {
        self.status
            .waves
            .iter()
            .find(|w| w.region == region)
            .expect("the wave exists")
    }
}

fn armed_spec() -> RollbackSpec {
    spec(
        "targets: [{kind: Deployment, name: graphql-api}]
waves: [{region: prodNA, namespace: na}]
target: {type: PreviousStable}
trigger: {type: Alarm, alarms: {names: [errors]}, severities: [Sev2]}
verification: {bake: 1m, alarms: {names: [errors]}, severities: [Sev2]}
stableAfter: 30m
",
    )
}

fn reasons(decision: &Decision) -> Vec<&'static str> {
    decision.notes.iter().map(|n| n.reason).collect()
}
