//! One revision of a workload, a workload and a region as the rollback
//! reads them: the model every decision works on.

use jiff::Timestamp;

use crate::api::rollback::WorkloadKind;

/// One revision of a workload: a ReplicaSet of a Deployment, or a
/// ControllerRevision of a StatefulSet.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// The revision number `kubectl rollout history` shows.
    pub number: i64,
    /// Its identity: `pod-template-hash`, or the ControllerRevision's name.
    pub hash: String,
    /// The container images, for people and for `ImageTag` targets.
    pub images: Vec<String>,
    /// When it was deployed: the `weblab.dev/deployed-at` annotation, or
    /// else the object's creation time.
    pub deployed_at: Timestamp,
    /// When the operator confirmed it stable (`weblab.dev/stable-since`).
    pub stable_since: Option<Timestamp>,
    /// For StatefulSets: when the operator first saw it rolled out
    /// (`weblab.dev/rolled-out-at`).
    pub rolled_out_at: Option<Timestamp>,
}

/// Whether a workload's current revision runs everywhere.
#[derive(Clone, Debug, PartialEq)]
pub enum Rollout {
    /// Every replica updated and available, none of an older revision;
    /// since when, when the workload tells (Deployments do).
    Complete(Option<Timestamp>),
    /// Still rolling out, in words.
    InProgress(String),
}

/// A targeted workload in one region.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: String,
    /// Its revisions still kept, by number.
    pub revisions: Vec<Revision>,
    /// The identity of its current revision; `None` while its controller
    /// has not observed the latest spec.
    pub current: Option<String>,
    /// Its rollout.
    pub rollout: Rollout,
}

impl Workload {
    pub(super) fn revision(&self, hash: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.hash == hash)
    }

    pub(super) fn current_revision(&self) -> Option<&Revision> {
        self.current.as_deref().and_then(|hash| self.revision(hash))
    }

    pub(super) fn label(&self) -> String {
        format!("{:?} {}", self.kind, self.name)
    }
}

/// One region as read now.
#[derive(Clone, Debug, PartialEq)]
pub enum RegionView {
    /// The targeted workloads, and the named targets that do not exist.
    Read {
        /// Targeted workloads.
        workloads: Vec<Workload>,
        /// Named targets not found, in words.
        not_found: Vec<String>,
    },
    /// The region could not be read, and why.
    Unreachable(String),
    /// The region cannot be reached as configured, and a person must fix it
    /// (a kubeconfig Secret missing, invalid or refused).
    Misconfigured {
        /// The condition and event reason, e.g. `KubeconfigNotFound`.
        reason: &'static str,
        /// What is wrong, in words.
        message: String,
    },
    /// A namespace of this cluster that does not authorize this rollback:
    /// nothing of it was read, and nothing of it may be changed.
    NotAuthorized(String),
}
