//! weblab-operator: weblab dials, alarm-driven rollbacks, merge-train pauses
//! and change windows, reconciled as Kubernetes custom resources.
//!
//! Layout: [`api`] holds the resource types; [`operator`] wires the
//! controllers, the HTTP [`server`] and [`leader`] election together;
//! [`metrics`] is the Prometheus registry they share.

pub mod api;
pub mod assignment;
pub mod cache;
pub mod controllers;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod outbound;
pub mod server;
pub mod stats;
pub mod view;

/// Every failure below `main`, one variant per source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),

    /// The CRDs are not installed or not established in time.
    #[error(
        "CRD {crd} is not established after {waited_secs}s; install it with `kubectl apply --server-side -f crds/`"
    )]
    CrdNotEstablished {
        /// The CRD's name.
        crd: String,
        /// How long the operator waited.
        waited_secs: u64,
    },

    /// The HTTP server could not bind or failed.
    #[error("HTTP server on {address} failed: {source}")]
    Server {
        /// The listen address.
        address: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },

    /// A metric could not be registered (a programming error caught at start).
    #[error("cannot register metric: {0}")]
    Metrics(#[source] prometheus::Error),

    /// Serializing a CRD failed.
    #[error("cannot render CRDs as YAML: {0}")]
    Yaml(#[source] serde_saphyr::SerializeError),

    /// An outbound HTTP client could not be built (TLS set-up).
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// A revision chosen for a rollback is no longer there to restore.
    #[error(
        "{workload}: revision {revision} to restore is gone (pruned?); the rollback must be re-planned"
    )]
    RevisionGone {
        /// The workload, `Kind namespace/name`.
        workload: String,
        /// The revision's identity.
        revision: String,
    },

    /// A rollback region's cluster cannot be reached.
    #[error("region {region}: {why}")]
    Region {
        /// The region.
        region: String,
        /// Why, in words.
        why: String,
    },

    /// A value could not be converted to or from JSON.
    #[error("cannot convert to JSON: {0}")]
    Json(#[source] serde_json::Error),

    /// A status write skipped: the cached object is at a resourceVersion
    /// the API server already refused as stale; the watch brings the fresh
    /// one.
    #[error("{object}: the cached object is stale; waiting for the watch to bring the fresh one")]
    StaleCache {
        /// The object, `Kind namespace/name`.
        object: String,
    },

    /// This replica lost the leader lease and must stop writing.
    #[error("lost the leader lease {lease}; another replica took over")]
    LeaseLost {
        /// The Lease's namespace/name.
        lease: String,
    },
}

impl Error {
    /// A short UpperCamelCase reason, for event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::StaleCache { .. } => "StaleCache",
            _ if self.is_conflict() => "Conflict",
            Error::Kube(_) => "KubeApiError",
            Error::CrdNotEstablished { .. } => "CrdNotEstablished",
            Error::Server { .. } => "ServerError",
            Error::Metrics(_) => "MetricsError",
            Error::Yaml(_) => "YamlError",
            Error::HttpClient(_) => "HttpClientError",
            Error::LeaseLost { .. } => "LeaseLost",
            Error::RevisionGone { .. } => "RevisionGone",
            Error::Json(_) => "JsonError",
            Error::Region { .. } => "RegionUnreachable",
        }
    }

    /// Whether a write was refused as conflicting (HTTP 409, e.g. for a
    /// stale resourceVersion), or skipped because it would have been.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => status.code == 409,
            Error::StaleCache { .. } => true,
            _ => false,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
