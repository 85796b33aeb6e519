//! Real Prometheus and Alertmanager on loopback, and the small HTTP endpoints
//! the tests put next to them.
//!
//! The binaries are the Debian packages `hack/prereqs.sh` installs
//! (`/usr/bin/prometheus`, `/usr/bin/prometheus-alertmanager`); the
//! environment variables [`PROMETHEUS_ENV`] and [`ALERTMANAGER_ENV`], or the
//! `binary` option, point elsewhere. Like the control plane's processes, they
//! die with the test binary and log into their directory.

mod alertmanager;
mod gitlab;
mod http_server;
mod metrics_endpoint;
mod prometheus;
mod webhook_recorder;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use alertmanager::{Alert, Alertmanager, AlertmanagerOptions};
pub use gitlab::{GitLabContract, Schedule};
pub use http_server::HttpRequest;
pub use metrics_endpoint::MetricsEndpoint;
pub use prometheus::{Prometheus, PrometheusOptions, Sample};
pub use webhook_recorder::WebhookRecorder;

use crate::Error;
use crate::process::ManagedProcess;

/// Overrides the Prometheus binary (default `/usr/bin/prometheus`).
pub const PROMETHEUS_ENV: &str = "WEBLAB_PROMETHEUS";
/// Overrides the Alertmanager binary (default `/usr/bin/prometheus-alertmanager`).
pub const ALERTMANAGER_ENV: &str = "WEBLAB_ALERTMANAGER";

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);
/// How long `stop` lets a process shut down cleanly before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The timeout of each HTTP call the harness makes to the components.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start is tried when the free port was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

/// The binary to run: the option, else the environment variable, else the
/// Debian package's path; an error naming all three when it is not there.
fn locate(
    name: &'static str,
    option: Option<&Path>,
    env: &'static str,
    default: &str,
) -> Result<PathBuf, Error> {
    let path = option
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(env).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing { name, path, env })
    }
}

/// A client for the components' HTTP APIs, built per call because the
/// harness outlives the runtimes of single tests and a pooled connection is
/// bound to the runtime that opened it.
fn http_client() -> Result<reqwest::Client, Error> {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| {
        // reqwest is built without a TLS provider of its own; another part of
        // the process may have installed one first, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT)
        .build()
        .map_err(|source| Error::Http {
            action: "build an HTTP client".to_owned(),
            source,
        })
}

/// Polls `<url>/-/ready` (both components have it) until it answers 200,
/// failing early with the log's tail if the process exits.
async fn wait_ready(process: &ManagedProcess, url: &str, timeout: Duration) -> Result<(), Error> {
    let client = http_client()?;
    let ready = format!("{url}/-/ready");
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        let last_error = match client.get(&ready).timeout(POLL * 10).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!("HTTP {}", response.status()),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: ready,
                timeout,
                last_error,
                log: process.log().to_path_buf(),
                log_tail: process.log_tail(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Turns a non-2xx answer into an error carrying its body.
async fn expect_success(
    response: reqwest::Response,
    action: impl FnOnce() -> String,
) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(Error::Response {
        action: action(),
        status: status.as_u16(),
        body: body.trim().to_owned(),
    })
}

/// A duration as Prometheus and Alertmanager write it (milliseconds are their
/// smallest unit).
fn prometheus_duration(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A YAML scalar: a JSON string is valid YAML and escapes whatever it holds.
fn yaml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Removes `path` (a directory of an earlier run) if it exists.
fn remove_dir_if_present(path: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove old data", path)(err))
        }
        _ => Ok(()),
    }
}

/// Writes a config file with owner-only permissions (it may hold a token).
fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io("write", path))?;
    file.write_all(contents.as_bytes())
        .map_err(Error::io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_milliseconds() {
        assert_eq!(prometheus_duration(Duration::from_secs(1)), "1000ms");
        assert_eq!(prometheus_duration(Duration::from_millis(50)), "50ms");
    }

    #[test]
    fn locate_prefers_the_option_and_names_the_env_when_missing() {
        let err = locate(
            "prometheus",
            Some(Path::new("/nonexistent/prometheus")),
            PROMETHEUS_ENV,
            "/usr/bin/prometheus",
        )
        .expect_err("no such binary");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/prometheus"), "{message}");
        assert!(message.contains(PROMETHEUS_ENV), "{message}");
    }
}
