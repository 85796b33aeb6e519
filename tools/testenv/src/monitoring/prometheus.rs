//! A real Prometheus server scraping loopback targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    POLL, PORT_ATTEMPTS, PROMETHEUS_ENV, STOP_GRACE, expect_success, http_client, locate,
    prometheus_duration, remove_dir_if_present, wait_ready, write_private, yaml_string,
};
use crate::Error;
use crate::control_plane::free_ports;
use crate::process::ManagedProcess;

/// The Debian package's binary.
const DEFAULT_BINARY: &str = "/usr/bin/prometheus";

/// How to start a [`Prometheus`]. Build with [`PrometheusOptions::default`]
/// and set the public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrometheusOptions {
    /// `host:port` targets scraped at `/metrics`, in one job named `testenv`
    /// (so their series carry `job="testenv"` and `instance="<target>"`).
    pub scrape_targets: Vec<String>,
    /// How often every target is scraped; also the scrape timeout. Prometheus
    /// accepts down to 1 ms; 1 s (the default) keeps the load negligible.
    pub scrape_interval: Duration,
    /// How often rules are evaluated.
    pub evaluation_interval: Duration,
    /// Rule files to load (recording or alerting rules).
    pub rule_files: Vec<PathBuf>,
    /// `host:port` of Alertmanagers that alerting rules notify (see
    /// [`Alertmanager::address`](crate::Alertmanager::address)).
    pub alertmanagers: Vec<String>,
    /// How often firing alerts are sent again (`--rules.alert.resend-delay`).
    /// Default 1 s rather than Prometheus's 1 min: the first send comes
    /// before Prometheus has applied its Alertmanager targets (5 s after
    /// start) and is lost, and the next would wait for this delay. Alerts
    /// sent carry `endsAt` = now + 4 × max(this, evaluation interval), so
    /// Alertmanager resolves them that long after Prometheus goes away.
    pub alert_resend_delay: Duration,
    /// The binary, instead of `$WEBLAB_PROMETHEUS` or `/usr/bin/prometheus`.
    pub binary: Option<PathBuf>,
    /// How long Prometheus may take to report ready.
    pub startup_timeout: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        PrometheusOptions {
            scrape_targets: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            rule_files: Vec::new(),
            alertmanagers: Vec::new(),
            alert_resend_delay: Duration::from_secs(1),
            binary: None,
            // Generous: two cores shared with cargo building other tests.
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// One element of an instant query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels, `__name__` included when the result keeps it.
    pub labels: BTreeMap<String, String>,
    /// Its value (NaN and infinities as Prometheus returns them).
    pub value: f64,
}

/// A running Prometheus on `127.0.0.1:<free port>`, its config, data and logs
/// in the directory given to [`Prometheus::start`]. Dropping it kills it.
///
/// What queries see when something stops:
/// - a *target* that stops answering: the next failed scrape writes
///   staleness markers, and from then on its series are absent (an empty
///   result), not their last value;
/// - *Prometheus* stopped ([`Prometheus::stop`]): the port refuses
///   connections, so queries fail;
/// - after [`Prometheus::restart`] the data survives (same directory);
///   series scraped before the stop are visible again for up to the 5 minute
///   lookback unless a staleness marker was written before the stop.
#[derive(Debug)]
pub struct Prometheus {
    process: Option<ManagedProcess>,
    dir: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    port: u16,
    startup_timeout: Duration,
    runs: u32,
}

impl Prometheus {
    /// Writes `dir/prometheus.yml`, starts Prometheus with its data in
    /// `dir/data` (removed first: a start is always fresh) and its log in
    /// `dir/prometheus.log`, and waits for `/-/ready`.
    pub async fn start(dir: impl Into<PathBuf>, options: PrometheusOptions) -> Result<Self, Error> {
        let dir = dir.into();
        let binary = locate(
            "prometheus",
            options.binary.as_deref(),
            PROMETHEUS_ENV,
            DEFAULT_BINARY,
        )?;
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let dir = std::path::absolute(&dir).map_err(Error::io("resolve", &dir))?;
        let config = dir.join("prometheus.yml");
        write_private(&config, &config_yaml(&options))?;
        let data = dir.join("data");

        let mut attempt = 1;
        loop {
            remove_dir_if_present(&data)?;
            let [port] = free_ports()?;
            let mut prometheus = Prometheus {
                process: None,
                args: vec![
                    format!("--config.file={}", config.display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    format!(
                        "--rules.alert.resend-delay={}",
                        prometheus_duration(options.alert_resend_delay)
                    ),
                ],
                dir: dir.clone(),
                binary: binary.clone(),
                port,
                startup_timeout: options.startup_timeout,
                runs: 0,
            };
            match prometheus.run().await {
                Err(err) if err.is_port_clash() && attempt < PORT_ATTEMPTS => {
                    tracing::warn!(%err, attempt, "port clash while starting Prometheus, retrying");
                    attempt += 1;
                }
                result => return result.map(|()| prometheus),
            }
        }
    }

    async fn run(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        self.runs += 1;
        let log = if self.runs == 1 {
            self.dir.join("prometheus.log")
        } else {
            self.dir.join(format!("prometheus.run{}.log", self.runs))
        };
        let process = ManagedProcess::spawn("prometheus", &self.binary, &self.args, &[], log)?;
        let ready = wait_ready(&process, &self.url(), self.startup_timeout).await;
        // Kept even when not ready, so that drop kills it.
        self.process = Some(process);
        ready?;
        tracing::info!(url = %self.url(), elapsed = ?started.elapsed(), "prometheus ready");
        Ok(())
    }

    /// `http://127.0.0.1:<port>`, the same across restarts.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of the current (or last) run.
    pub fn log(&self) -> Option<&Path> {
        self.process.as_ref().map(ManagedProcess::log)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// Stops Prometheus (SIGTERM, then SIGKILL after 10 s) and waits for it to
    /// exit; its port then refuses connections. Stopping twice is harmless.
    pub fn stop(&mut self) {
        if let Some(process) = &self.process {
            process.stop(STOP_GRACE);
        }
    }

    /// Starts Prometheus again on the same port with the same data (stopping
    /// it first if it runs) and waits for `/-/ready`. Fails if another
    /// process took the port meanwhile.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.process = None;
        self.run().await
    }

    /// Evaluates `promql` now with `/api/v1/query`: one [`Sample`] per series
    /// of an instant vector, or one without labels for a scalar. Fails on a
    /// bad query, a range-vector result or when Prometheus is not reachable.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, Error> {
        let action = || format!("query Prometheus at {} for {promql:?}", self.url());
        let http_error = |source| Error::Http {
            action: action(),
            source,
        };
        let response = http_client()?
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(http_error)?;
        let body: serde_json::Value = expect_success(response, action)
            .await?
            .json()
            .await
            .map_err(http_error)?;
        parse_query_result(&body).map_err(|reason| Error::Response {
            action: action(),
            status: 200,
            body: format!("{reason}: {body}"),
        })
    }

    /// Polls `promql` until it returns at least one sample, and returns them;
    /// the way to wait until a freshly set series has been scraped. Query
    /// errors count as "not yet".
    pub async fn wait_for_samples(
        &self,
        promql: &str,
        timeout: Duration,
    ) -> Result<Vec<Sample>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.query(promql).await {
                Ok(samples) if !samples.is_empty() => return Ok(samples),
                Ok(_) => "empty result".to_owned(),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                let (log, log_tail) = match &self.process {
                    Some(process) => (process.log().to_path_buf(), process.log_tail()),
                    None => (PathBuf::new(), String::new()),
                };
                return Err(Error::Timeout {
                    what: format!("a sample for {promql:?}"),
                    timeout,
                    last_error,
                    log,
                    log_tail,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn config_yaml(options: &PrometheusOptions) -> String {
    let interval = prometheus_duration(options.scrape_interval);
    let mut yaml = format!(
        "# Written by testenv for one test run.\n\
         global:\n\
         \x20 scrape_interval: {interval}\n\
         \x20 scrape_timeout: {interval}\n\
         \x20 evaluation_interval: {}\n",
        prometheus_duration(options.evaluation_interval)
    );
    if !options.rule_files.is_empty() {
        yaml.push_str("rule_files:\n");
        for file in &options.rule_files {
            yaml.push_str(&format!("  - {}\n", yaml_string(&file.to_string_lossy())));
        }
    }
    if !options.alertmanagers.is_empty() {
        yaml.push_str(&format!(
            "alerting:\n\
             \x20 alertmanagers:\n\
             \x20   - static_configs:\n\
             \x20       - targets: [{}]\n",
            yaml_list(&options.alertmanagers)
        ));
    }
    yaml.push_str(&format!(
        "scrape_configs:\n\
         \x20 - job_name: testenv\n\
         \x20   static_configs:\n\
         \x20     - targets: [{}]\n",
        yaml_list(&options.scrape_targets)
    ));
    yaml
}

/// The items of a YAML flow sequence.
fn yaml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| yaml_string(item))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `{"status":"success","data":{"resultType":..,"result":..}}`.
fn parse_query_result(body: &serde_json::Value) -> Result<Vec<Sample>, String> {
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => result
            .as_array()
            .ok_or("the vector is not an array")?
            .iter()
            .map(|element| {
                let labels = element["metric"]
                    .as_object()
                    .ok_or("a sample has no metric")?
                    .iter()
                    .map(|(key, value)| {
                        let value = value.as_str().ok_or("a label value is not a string")?;
                        Ok((key.clone(), value.to_owned()))
                    })
                    .collect::<Result<_, &str>>()?;
                Ok(Sample {
                    labels,
                    value: parse_value(&element["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: parse_value(result)?,
        }]),
        other => Err(format!("unsupported result type {other:?}")),
    }
}

/// `[<unix seconds>, "<value>"]`; Rust's parser reads Prometheus's `NaN`,
/// `+Inf` and `-Inf` spellings too.
fn parse_value(pair: &serde_json::Value) -> Result<f64, String> {
    pair[1]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("not a [time, value] pair: {pair}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_targets_rules_and_intervals() {
        let options = PrometheusOptions {
            scrape_targets: vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()],
            scrape_interval: Duration::from_millis(500),
            rule_files: vec![PathBuf::from("/r/rules.yml")],
            alertmanagers: vec!["127.0.0.1:3".to_owned()],
            ..PrometheusOptions::default()
        };
        let yaml = config_yaml(&options);
        assert!(yaml.contains("scrape_interval: 500ms\n  scrape_timeout: 500ms\n"));
        assert!(yaml.contains("evaluation_interval: 1000ms\n"));
        assert!(yaml.contains("rule_files:\n  - \"/r/rules.yml\"\n"));
        assert!(yaml.contains("- targets: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"));
        assert!(yaml.contains(
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:3\"]\n"
        ));
        assert!(!config_yaml(&PrometheusOptions::default()).contains("alerting"));
    }

    #[test]
    fn parses_vectors_scalars_and_special_values() {
        let vector = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "testenv"}, "value": [1.5, "1"]},
            {"metric": {}, "value": [1.5, "NaN"]},
            {"metric": {}, "value": [1.5, "+Inf"]},
        ]}});
        let samples = parse_query_result(&vector).expect("a vector");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["job"], "testenv");
        assert_eq!(samples[0].value, 1.0);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::INFINITY);

        let scalar = serde_json::json!({"data": {"resultType": "scalar", "result": [1.5, "-2.5"]}});
        assert_eq!(
            parse_query_result(&scalar).expect("a scalar")[0].value,
            -2.5
        );

        let matrix = serde_json::json!({"data": {"resultType": "matrix", "result": []}});
        assert!(parse_query_result(&matrix).is_err());
    }
}
