//! A real Alertmanager routing every alert to one webhook.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    ALERTMANAGER_ENV, PORT_ATTEMPTS, STOP_GRACE, expect_success, http_client, locate,
    prometheus_duration, remove_dir_if_present, wait_ready, write_private, yaml_string,
};
use crate::Error;
use crate::control_plane::free_ports;
use crate::process::ManagedProcess;

/// The Debian package's binary.
const DEFAULT_BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// How to start an [`Alertmanager`]. Build with
/// [`AlertmanagerOptions::new`] and set the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AlertmanagerOptions {
    /// Where notifications are POSTed (Alertmanager's webhook payload,
    /// version 4).
    pub webhook_url: String,
    /// Sent as `Authorization: Bearer <token>` with every notification.
    pub bearer_token: Option<String>,
    /// Labels that group alerts into one notification; the default `["..."]`
    /// groups by every label, so each distinct alert is notified on its own.
    pub group_by: Vec<String>,
    /// How long a new group waits before its first notification. Zero (the
    /// default) is accepted and sends at once.
    pub group_wait: Duration,
    /// How often a group with changes (a new alert, a resolved one) is
    /// notified again. Alertmanager rejects zero; 1 ms is its smallest value.
    /// Default 100 ms, so a resolution arrives within about that.
    pub group_interval: Duration,
    /// How often an unchanged firing group is notified again (checked at
    /// each group interval). Alertmanager rejects zero. Default 1 h: one
    /// notification per change unless a test asks for repeats.
    pub repeat_interval: Duration,
    /// Also notify when alerts resolve (default true).
    pub send_resolved: bool,
    /// The binary, instead of `$WEBLAB_ALERTMANAGER` or
    /// `/usr/bin/prometheus-alertmanager`.
    pub binary: Option<PathBuf>,
    /// How long Alertmanager may take to report ready.
    pub startup_timeout: Duration,
}

impl AlertmanagerOptions {
    /// Options notifying `webhook_url`, with the defaults documented on each field.
    pub fn new(webhook_url: impl Into<String>) -> Self {
        AlertmanagerOptions {
            webhook_url: webhook_url.into(),
            bearer_token: None,
            group_by: vec!["...".to_owned()],
            group_wait: Duration::ZERO,
            group_interval: Duration::from_millis(100),
            repeat_interval: Duration::from_secs(3600),
            send_resolved: true,
            binary: None,
            // Generous: two cores shared with cargo building other tests.
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// An alert as posted to Alertmanager's `/api/v2/alerts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    /// Identify the alert (Alertmanager's fingerprint is their hash); at
    /// least one is required.
    pub labels: BTreeMap<String, String>,
    /// Free-form details.
    pub annotations: BTreeMap<String, String>,
    /// When it started; Alertmanager uses the time it receives it if unset.
    pub starts_at: Option<jiff::Timestamp>,
    /// When it ends; if unset Alertmanager resolves it by itself after its
    /// `resolve_timeout` (5 min) unless it is posted again.
    pub ends_at: Option<jiff::Timestamp>,
}

impl Alert {
    /// An alert with these labels and nothing else.
    pub fn new(labels: &[(&str, &str)]) -> Self {
        Alert {
            labels: labels
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..Alert::default()
        }
    }

    /// Adds an annotation.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    fn to_json(&self) -> serde_json::Value {
        let mut alert = serde_json::json!({
            "labels": self.labels,
            "annotations": self.annotations,
        });
        if let Some(starts_at) = self.starts_at {
            alert["startsAt"] = starts_at.to_string().into();
        }
        if let Some(ends_at) = self.ends_at {
            alert["endsAt"] = ends_at.to_string().into();
        }
        alert
    }
}

/// A running Alertmanager on `127.0.0.1:<free port>` with clustering off, one
/// route and one webhook receiver; its config, data and log in the directory
/// given to [`Alertmanager::start`]. Dropping it kills it.
#[derive(Debug)]
pub struct Alertmanager {
    process: ManagedProcess,
    dir: PathBuf,
    port: u16,
}

impl Alertmanager {
    /// Writes `dir/alertmanager.yml`, starts Alertmanager with its data in
    /// `dir/data` (removed first) and its log in `dir/alertmanager.log`, and
    /// waits for `/-/ready`. A config Alertmanager rejects fails here with
    /// its log's tail.
    pub async fn start(
        dir: impl Into<PathBuf>,
        options: AlertmanagerOptions,
    ) -> Result<Self, Error> {
        let started = Instant::now();
        let dir = dir.into();
        let binary = locate(
            "prometheus-alertmanager",
            options.binary.as_deref(),
            ALERTMANAGER_ENV,
            DEFAULT_BINARY,
        )?;
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let dir = std::path::absolute(&dir).map_err(Error::io("resolve", &dir))?;
        let config = dir.join("alertmanager.yml");
        write_private(&config, &config_yaml(&options))?;
        let data = dir.join("data");

        let mut attempt = 1;
        loop {
            remove_dir_if_present(&data)?;
            let [port] = free_ports()?;
            let args = vec![
                format!("--config.file={}", config.display()),
                format!("--storage.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // One instance: no gossip port, no waiting for peers.
                "--cluster.listen-address=".to_owned(),
            ];
            let process = ManagedProcess::spawn(
                "alertmanager",
                &binary,
                &args,
                &[],
                dir.join("alertmanager.log"),
            )?;
            let alertmanager = Alertmanager {
                process,
                dir: dir.clone(),
                port,
            };
            match wait_ready(
                &alertmanager.process,
                &alertmanager.url(),
                options.startup_timeout,
            )
            .await
            {
                Ok(()) => {
                    tracing::info!(url = %alertmanager.url(), elapsed = ?started.elapsed(), "alertmanager ready");
                    return Ok(alertmanager);
                }
                Err(err) if err.is_port_clash() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!(%err, attempt, "port clash while starting Alertmanager, retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    /// `127.0.0.1:<port>`, the form Prometheus's
    /// [`PrometheusOptions::alertmanagers`](crate::PrometheusOptions::alertmanagers) takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding the config, data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        self.process.log()
    }

    /// Posts `alerts` to `/api/v2/alerts`, as Prometheus would. Alertmanager
    /// answers 400 for an alert without labels or ending before it starts.
    pub async fn post_alerts(&self, alerts: &[Alert]) -> Result<(), Error> {
        let body: Vec<serde_json::Value> = alerts.iter().map(Alert::to_json).collect();
        let action = || format!("post {} alert(s) to {}", alerts.len(), self.url());
        let response = http_client()?
            .post(format!("{}/api/v2/alerts", self.url()))
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::Http {
                action: action(),
                source,
            })?;
        expect_success(response, action).await.map(drop)
    }

    /// Resolves `alerts` (matched by their labels) the way Prometheus does:
    /// posts them again ending now. Their annotations go along, because the
    /// resolved notification carries those of the last post; Alertmanager
    /// keeps each alert's original start.
    pub async fn resolve(&self, alerts: &[Alert]) -> Result<(), Error> {
        let now = jiff::Timestamp::now();
        let alerts: Vec<Alert> = alerts
            .iter()
            .map(|alert| Alert {
                ends_at: Some(now),
                ..alert.clone()
            })
            .collect();
        self.post_alerts(&alerts).await
    }

    /// Stops Alertmanager (SIGTERM, then SIGKILL after 10 s) and waits for it
    /// to exit.
    pub fn stop(self) {
        self.process.stop(STOP_GRACE);
    }
}

fn config_yaml(options: &AlertmanagerOptions) -> String {
    let group_by: Vec<String> = options.group_by.iter().map(|l| yaml_string(l)).collect();
    let authorization = match &options.bearer_token {
        Some(token) => format!(
            "\x20       http_config:\n\
             \x20         authorization:\n\
             \x20           type: Bearer\n\
             \x20           credentials: {}\n",
            yaml_string(token)
        ),
        None => String::new(),
    };
    format!(
        "# Written by testenv for one test run.\n\
         route:\n\
         \x20 receiver: webhook\n\
         \x20 group_by: [{group_by}]\n\
         \x20 group_wait: {group_wait}\n\
         \x20 group_interval: {group_interval}\n\
         \x20 repeat_interval: {repeat_interval}\n\
         receivers:\n\
         \x20 - name: webhook\n\
         \x20   webhook_configs:\n\
         \x20     - url: {url}\n\
         \x20       send_resolved: {send_resolved}\n\
         \x20       max_alerts: 0\n\
         {authorization}",
        group_by = group_by.join(", "),
        group_wait = prometheus_duration(options.group_wait),
        group_interval = prometheus_duration(options.group_interval),
        repeat_interval = prometheus_duration(options.repeat_interval),
        url = yaml_string(&options.webhook_url),
        send_resolved = options.send_resolved,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_one_route_to_the_webhook_with_the_token() {
        let mut options = AlertmanagerOptions::new("http://127.0.0.1:1/hook");
        options.bearer_token = Some("se\"cret".to_owned());
        let yaml = config_yaml(&options);
        assert!(yaml.contains("group_by: [\"...\"]\n"), "{yaml}");
        assert!(
            yaml.contains(
                "group_wait: 0ms\n  group_interval: 100ms\n  repeat_interval: 3600000ms\n"
            ),
            "{yaml}"
        );
        assert!(
            yaml.contains("- url: \"http://127.0.0.1:1/hook\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("send_resolved: true\n        max_alerts: 0\n"),
            "{yaml}"
        );
        assert!(yaml.contains("credentials: \"se\\\"cret\"\n"), "{yaml}");

        options.bearer_token = None;
        assert!(!config_yaml(&options).contains("authorization"));
    }

    #[test]
    fn alerts_serialise_as_api_v2_expects() {
        let mut alert = Alert::new(&[("alertname", "HighErrorRate")]).annotation("summary", "5%");
        alert.ends_at = Some("2026-01-02T03:04:05Z".parse().expect("a timestamp"));
        assert_eq!(
            alert.to_json(),
            serde_json::json!({
                "labels": {"alertname": "HighErrorRate"},
                "annotations": {"summary": "5%"},
                "endsAt": "2026-01-02T03:04:05Z",
            })
        );
    }
}
