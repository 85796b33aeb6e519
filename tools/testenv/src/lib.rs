//! A real, local Kubernetes control plane for weblab-operator's tests.
//!
//! [`ControlPlane::start`] runs `etcd` and `kube-apiserver` on loopback (and,
//! with [`Options::workloads`], `kube-controller-manager`, `kube-scheduler` and
//! `kwok` with fake Nodes, so Deployments really roll out). The binaries are the
//! pinned ones `hack/tools.sh build` (`make tools`) builds from their Go modules.
//!
//! One control plane per test binary is the intended use:
//!
//! ```no_run
//! # async fn demo() -> Result<(), testenv::Error> {
//! let control_plane = testenv::shared().await?;
//! let namespace = control_plane.namespace("dial").await?;
//! let client = control_plane.client().await?;
//! # let _ = (namespace, client);
//! # Ok(())
//! # }
//! ```
//!
//! Real Prometheus and Alertmanager, and the endpoints tests put next to
//! them, are in [`monitoring`]:
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> Result<(), testenv::Error> {
//! let metrics = testenv::MetricsEndpoint::serve()?;
//! metrics.set("http_error_ratio", &[("service", "checkout")], 0.0);
//! let mut options = testenv::PrometheusOptions::default();
//! options.scrape_targets.push(metrics.address());
//! let prometheus = testenv::Prometheus::start(dir.join("prometheus"), options).await?;
//! # let _ = prometheus;
//! # Ok(())
//! # }
//! ```
//!
//! Every process the harness starts dies with the test binary, also when a
//! test panics or the binary is killed (see [`process`]).

mod certs;
mod control_plane;
pub mod monitoring;
mod namespace;
pub mod process;
mod shared;
mod tools;
mod workdir;
mod workloads;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use control_plane::{ControlPlane, Options, PausedProcess};
pub use monitoring::{
    ALERTMANAGER_ENV, Alert, Alertmanager, AlertmanagerOptions, GitLabContract, HttpRequest,
    MetricsEndpoint, PROMETHEUS_ENV, Prometheus, PrometheusOptions, Sample, WebhookRecorder,
};
pub use namespace::TestNamespace;
pub use shared::{shared, shared_with_workloads};
pub use tools::{TOOLS_BIN_ENV, Tools};
pub use workdir::TempDir;
pub use workloads::FAKE_NODE_ANNOTATION;

/// Everything that can go wrong while starting or using a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pinned tool binaries are not where the harness looked.
    #[error(
        "tool binaries missing in {dir}: {missing}; run `make tools` (or `hack/tools.sh build`), or point {env} at a directory holding them",
        missing = missing.join(", "),
        env = TOOLS_BIN_ENV
    )]
    ToolsMissing {
        /// The directory that was searched.
        dir: PathBuf,
        /// Names of the binaries that were not found.
        missing: Vec<String>,
    },

    /// `hack/tools.sh bindir` could not be run to find the tools.
    #[error("cannot locate the tool binaries: `{script} bindir` failed ({reason}); set {env} or run `make tools`", env = TOOLS_BIN_ENV)]
    ToolsScript {
        /// The script that was run.
        script: PathBuf,
        /// Why it failed.
        reason: String,
    },

    /// A file or directory of the control plane could not be written or read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the harness was doing.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// No free loopback port could be reserved.
    #[error("cannot reserve a free port on 127.0.0.1: {0}")]
    Port(#[source] std::io::Error),

    /// Generating the certificates failed.
    #[error("cannot generate the control plane's certificates: {0}")]
    Certificates(#[from] rcgen::Error),

    /// A process could not be started.
    #[error("cannot start {name} ({binary}): {source}")]
    Spawn {
        /// Which component.
        name: String,
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A process exited while the control plane was starting or running.
    #[error("{name} exited with {status} during startup; last lines of {log}:\n{log_tail}")]
    ProcessExited {
        /// Which component.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },

    /// A component did not become ready in time.
    #[error(
        "{what} not ready after {timeout:?} (last error: {last_error}); last lines of {log}:\n{log_tail}"
    )]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The last error seen while polling.
        last_error: String,
        /// The log file of the component most likely at fault.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// The generated kubeconfig could not be loaded into a client configuration.
    #[error("cannot load kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A Kubernetes API call made by the harness failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the harness was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },

    /// A `kubectl` invocation failed.
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        /// The arguments, without `--kubeconfig`.
        args: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// A namespace prefix is not usable in a namespace name.
    #[error(
        "namespace prefix {0:?} is invalid: use 1 to 50 lowercase letters, digits or '-', starting with a letter"
    )]
    NamespacePrefix(String),

    /// A monitoring binary (Prometheus, Alertmanager) is not where the
    /// harness looked.
    #[error(
        "{name} not found at {path}: run hack/prereqs.sh (as root it installs the Debian package) or set {env} to the binary"
    )]
    BinaryMissing {
        /// Which component.
        name: &'static str,
        /// The path that was tried.
        path: PathBuf,
        /// The environment variable that overrides it.
        env: &'static str,
    },

    /// An HTTP call to Prometheus or Alertmanager failed.
    #[error("{action}: {source}")]
    Http {
        /// What the harness was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// Prometheus or Alertmanager answered with an error or with something
    /// the harness cannot read.
    #[error("{action}: HTTP {status}: {body}")]
    Response {
        /// What the harness was doing.
        action: String,
        /// The HTTP status.
        status: u16,
        /// The body, or what was wrong with it.
        body: String,
    },

    /// The shared control plane of this test binary failed to start earlier.
    #[error("the shared control plane failed to start: {0}")]
    Shared(#[source] Arc<Error>),
}

impl Error {
    fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Whether the failure was a port taken by someone else between reserving
    /// and binding it, which a fresh attempt with new ports fixes.
    fn is_port_clash(&self) -> bool {
        match self {
            Error::ProcessExited { log_tail, .. } | Error::Timeout { log_tail, .. } => {
                log_tail.contains("address already in use")
            }
            _ => false,
        }
    }
}
