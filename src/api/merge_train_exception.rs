//! `MergeTrainException`: one named merge request (or commit) that may pass
//! a held merge train, approved by a person, until an expiry.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Duration;

/// The longest an exception may live, counted from its creation: a freeze
/// exception is for the fix of an incident, not a standing bypass. The API
/// server checks `duration` against it; `expiresAt` is checked by the
/// controller and the gate, which know the creation time.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A merge request (or commit) let through a held merge train: the gate
/// answers 200 for it, and 423 for every other, until the exception expires.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "MergeTrainException",
    namespaced,
    status = "MergeTrainExceptionStatus",
    derive = "PartialEq",
    shortname = "mte",
    category = "weblab",
    doc = "Lets one named merge request or commit pass a held merge train until an expiry.",
    printcolumn(name = "Train", type_ = "string", json_path = ".spec.train"),
    printcolumn(
        name = "Project",
        type_ = "string",
        json_path = ".spec.mergeRequest.project"
    ),
    printcolumn(name = "IID", type_ = "integer", json_path = ".spec.mergeRequest.iid"),
    printcolumn(name = "SHA", type_ = "string", json_path = ".spec.sha", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    // An absolute time: kubectl renders a `date` column only as an age.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Uses", type_ = "integer", json_path = ".status.uses"),
    printcolumn(
        name = "Approved By",
        type_ = "string",
        json_path = ".spec.approvedBy",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".spec.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("has(self.mergeRequest) != has(self.sha)")
        .message("name exactly one of spec.mergeRequest or spec.sha"),
    validation = Rule::new("has(self.expiresAt) != has(self.duration)")
        .message("an exception must end: set exactly one of spec.expiresAt or spec.duration"),
    validation = Rule::new("!has(self.duration) || duration(self.duration) <= duration('168h')")
        .message("spec.duration is at most 168h (7 days): create a new exception to go on")
        .field_path(".duration"),
    validation = Rule::new("self.train == oldSelf.train && has(self.mergeRequest) == has(oldSelf.mergeRequest) && (!has(self.mergeRequest) || self.mergeRequest == oldSelf.mergeRequest) && has(self.sha) == has(oldSelf.sha) && (!has(self.sha) || self.sha == oldSelf.sha)")
        .message("spec.train, spec.mergeRequest and spec.sha cannot change: approve the other merge request with a new exception"),
)]
#[serde(rename_all = "camelCase")]
pub struct MergeTrainExceptionSpec {
    /// The held train, in this namespace, as its gate
    /// `/v1/gates/{namespace}/{train}` names it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
    )]
    pub train: String,

    /// The merge request let through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_request: Option<MergeRequestRef>,

    /// Or the commit let through: its full SHA-1 (40 hex digits) or SHA-256
    /// (64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$"))]
    pub sha: Option<String>,

    /// Why it may pass (e.g. the fix of the incident the train is held for).
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"\S"))]
    pub reason: String,

    /// Who approved it (the on-call engineer). A record for people: who may
    /// create exceptions at all is decided by RBAC.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"\S"))]
    pub approved_by: String,

    /// A link to the incident or change ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub ticket: Option<String>,

    /// When the exception stops working; at most 7 days after its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Or how long it works from its creation; at most `168h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// A merge request, as CI knows it (GitLab: `CI_PROJECT_PATH` or
/// `CI_PROJECT_ID`, and `CI_MERGE_REQUEST_IID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeRequestRef {
    /// The project's full path (`group/project`) or its numeric id, exactly
    /// as the CI job sends it.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub project: String,
    /// The merge request's number within the project.
    #[schemars(range(min = 1))]
    pub iid: i64,
}

/// Where an exception is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExceptionPhase {
    /// The gate lets the merge request through while the train is held.
    Active,
    /// Past its expiry; the gate treats the merge request like any other.
    Expired,
    /// It can never work (e.g. `expiresAt` more than 7 days after creation).
    Invalid,
}

/// Observed state of a `MergeTrainException`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergeTrainExceptionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Active`, `Expired` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExceptionPhase>,
    /// When it stops working, from `expiresAt` or `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// How many times the gate let the merge request through because of it
    /// (answers of the leader's gate; see the README).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uses: u64,
    /// When the gate first let it through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_used: Option<Time>,
    /// When the gate last let it through, as last recorded (uses are
    /// recorded at most every 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// `Ready` (the exception works now) and `TrainKnown` (a pause or a
    /// window in this namespace names the train).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// What a CI job asks the gate about: a merge request, a commit, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeCandidate {
    /// `project` and `mergeRequest` of the query.
    pub merge_request: Option<MergeRequestRef>,
    /// `sha` of the query.
    pub sha: Option<String>,
}

impl MergeCandidate {
    /// Whether the caller named anything an exception could match.
    pub fn is_empty(&self) -> bool {
        self.merge_request.is_none() && self.sha.is_none()
    }
}

impl MergeTrainExceptionSpec {
    /// Whether this exception names `candidate`'s merge request or commit
    /// (SHAs compare without regard to case; projects exactly).
    pub fn names(&self, candidate: &MergeCandidate) -> bool {
        let by_merge_request = matches!(
            (&self.merge_request, &candidate.merge_request),
            (Some(ours), Some(theirs)) if ours == theirs
        );
        let by_sha = matches!(
            (&self.sha, &candidate.sha),
            (Some(ours), Some(theirs)) if ours.eq_ignore_ascii_case(theirs)
        );
        by_merge_request || by_sha
    }

    /// The merge request or commit, for people: `group/app!42` or
    /// `commit 0123abc…`.
    pub fn subject(&self) -> String {
        match (&self.merge_request, &self.sha) {
            (Some(mr), _) => format!("merge request {}!{}", mr.project, mr.iid),
            (None, Some(sha)) => format!("commit {}", sha.to_ascii_lowercase()),
            (None, None) => "nothing".to_owned(),
        }
    }
}

impl MergeTrainExceptionSpec {
    /// When the exception stops working, in whole seconds (rounded up, so that
    /// the status shows the exact instant the gate uses), or why it never works.
    pub fn expiry(&self, created: Option<Timestamp>) -> Result<Timestamp, String> {
        let longest = SignedDuration::try_from(MAX_LIFETIME).unwrap_or(SignedDuration::MAX);
        let end = match (&self.expires_at, self.duration) {
            (Some(at), _) => {
                if let Some(created) = created
                    && at.0.duration_since(created) > longest
                {
                    return Err(format!(
                        "spec.expiresAt {} is more than 7 days after the exception was created ({created}); set an earlier expiresAt, or create a new exception when the time comes",
                        at.0
                    ));
                }
                at.0
            }
            (None, Some(duration)) => {
                let created = created.ok_or("the exception has no creation time")?;
                let duration = SignedDuration::try_from(duration.get())
                    .map_err(|_| "spec.duration is too long".to_owned())?;
                if duration > longest {
                    return Err("spec.duration is more than 168h (7 days)".to_owned());
                }
                created.checked_add(duration).map_err(|_| {
                    "spec.duration ends after the last representable time".to_owned()
                })?
            }
            (None, None) => return Err("set spec.expiresAt or spec.duration".to_owned()),
        };
        let whole = end
            .as_second()
            .saturating_add(i64::from(end.subsec_nanosecond() > 0));
        Timestamp::from_second(whole).map_err(|error| error.to_string())
    }

    /// Whether the exception works at `now`.
    pub fn is_live(&self, created: Option<Timestamp>, now: Timestamp) -> bool {
        self.expiry(created).is_ok_and(|end| now < end)
    }
}
