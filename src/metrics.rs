//! The Prometheus registry shared by the controllers and the HTTP server.
//! Labels stay low-cardinality: controller, kind, phase, reason; never object
//! names or error text.

use prometheus::{
    Counter, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder, core::Collector,
};

use crate::{Error, Result};

/// Every metric the operator exports, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// 1 while this replica holds the leader lease (or runs without election).
    pub leader: IntGauge,
    /// Reconciliations started, by controller.
    pub reconciliations: IntCounterVec,
    /// Failed reconciliations, by controller and reason.
    pub reconcile_errors: IntCounterVec,
    /// How long reconciliations take, by controller.
    pub reconcile_duration: HistogramVec,
    /// Status writes, by controller and result (`ok`, `conflict`, `error`).
    pub status_writes: IntCounterVec,
    /// Events published, by kind and reason (the state transitions).
    pub transitions: IntCounterVec,
    /// Dials in the watched namespaces, by phase.
    pub dials: IntGaugeVec,
    /// Alarms in the watched namespaces, by state.
    pub alarms: IntGaugeVec,
    /// Prometheus evaluations, by how the datapoint counted.
    pub alarm_evaluations: IntCounterVec,
    /// Alertmanager webhook requests, by result.
    pub webhook_requests: IntCounterVec,
    /// Assignment API requests, by API (`native`, `ofrep`) and status code.
    pub assignment_requests: IntCounterVec,
    /// How long assignment API requests take to answer, by API.
    pub assignment_duration: HistogramVec,
    /// Merge-train pauses in the watched namespaces, by phase.
    pub merge_train_pauses: IntGaugeVec,
    /// Change windows in the watched namespaces, by `open` (`true`, `false`,
    /// `unknown`).
    pub change_windows: IntGaugeVec,
    /// Calls to merge-train providers, by provider and result (`ok` or the
    /// failure's reason).
    pub provider_calls: IntCounterVec,
    /// Gate answers of 200 given because of a `MergeTrainException`.
    pub gate_exception_uses: IntCounter,
    /// Rollbacks that ended, by result (`succeeded`, `failed`, `refused`).
    pub rollbacks: IntCounterVec,
    /// How long rollback waves take, from start to verified (or failed).
    pub rollback_wave_duration: HistogramVec,
    /// Requests to the API server sent again, by the status code that
    /// refused them (429, 5xx).
    pub api_retries: IntCounterVec,
    /// Seconds writes waited for the client-side write rate limit.
    pub api_throttled_seconds: Counter,
    /// Notifications, by sink type and result (`delivered`, `retried`,
    /// `failed`; `dropped` for the `queue`).
    pub notifications: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> Result<C> {
    registry
        .register(Box::new(collector.clone()))
        .map_err(Error::Metrics)?;
    Ok(collector)
}

impl Metrics {
    /// Creates and registers every metric under the `weblab_` prefix.
    pub fn new() -> Result<Self> {
        let registry =
            Registry::new_custom(Some("weblab".to_owned()), None).map_err(Error::Metrics)?;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map_err(Error::Metrics)
        };
        Ok(Metrics {
            leader: register(
                &registry,
                IntGauge::new(
                    "leader",
                    "1 while this replica holds the leader lease and runs the controllers' writes",
                )
                .map_err(Error::Metrics)?,
            )?,
            reconciliations: register(
                &registry,
                counter(
                    "reconciliations_total",
                    "Reconciliations started",
                    &["controller"],
                )?,
            )?,
            reconcile_errors: register(
                &registry,
                counter(
                    "reconcile_errors_total",
                    "Failed reconciliations",
                    &["controller", "reason"],
                )?,
            )?,
            reconcile_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "reconcile_duration_seconds",
                        "How long reconciliations take",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ]),
                    &["controller"],
                )
                .map_err(Error::Metrics)?,
            )?,
            status_writes: register(
                &registry,
                counter(
                    "status_writes_total",
                    "Status writes by result",
                    &["controller", "result"],
                )?,
            )?,
            transitions: register(
                &registry,
                counter(
                    "transitions_total",
                    "Events published on state transitions, by kind and reason",
                    &["kind", "reason"],
                )?,
            )?,
            dials: register(
                &registry,
                IntGaugeVec::new(Opts::new("dials", "Weblab dials by phase"), &["phase"])
                    .map_err(Error::Metrics)?,
            )?,
            alarms: register(
                &registry,
                IntGaugeVec::new(Opts::new("alarms", "Alarms by state"), &["state"])
                    .map_err(Error::Metrics)?,
            )?,
            alarm_evaluations: register(
                &registry,
                counter(
                    "alarm_evaluations_total",
                    "Prometheus alarm evaluations, by how the datapoint counted (breaching, ok, no_data, error)",
                    &["result"],
                )?,
            )?,
            webhook_requests: register(
                &registry,
                counter(
                    "webhook_requests_total",
                    "Alertmanager webhook requests, by result",
                    &["result"],
                )?,
            )?,
            assignment_requests: register(
                &registry,
                counter(
                    "assignment_requests_total",
                    "Assignment API requests, by API and HTTP status code",
                    &["api", "code"],
                )?,
            )?,
            assignment_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "assignment_request_duration_seconds",
                        "Time to answer assignment API requests, from the request's arrival to its response",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
                    ]),
                    &["api"],
                )
                .map_err(Error::Metrics)?,
            )?,
            merge_train_pauses: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("merge_train_pauses", "Merge-train pauses by phase"),
                    &["phase"],
                )
                .map_err(Error::Metrics)?,
            )?,
            change_windows: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("change_windows", "Change windows by whether they are open"),
                    &["open"],
                )
                .map_err(Error::Metrics)?,
            )?,
            provider_calls: register(
                &registry,
                counter(
                    "provider_calls_total",
                    "Calls to merge-train providers by result",
                    &["provider", "result"],
                )?,
            )?,
            gate_exception_uses: register(
                &registry,
                IntCounter::new(
                    "gate_exception_uses_total",
                    "Merge-train gate answers of 200 given because of a MergeTrainException while the train was held",
                )
                .map_err(Error::Metrics)?,
            )?,
            rollbacks: register(
                &registry,
                counter(
                    "rollbacks_total",
                    "Rollbacks that ended, by result",
                    &["result"],
                )?,
            )?,
            rollback_wave_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "rollback_wave_duration_seconds",
                        "Time from a rollback wave's start to its verification or failure",
                    )
                    .buckets(vec![
                        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
                    ]),
                    &["result"],
                )
                .map_err(Error::Metrics)?,
            )?,
            api_retries: register(
                &registry,
                counter(
                    "api_retries_total",
                    "Requests to the Kubernetes API sent again after an answer of 429 or 5xx, by that answer's status code",
                    &["code"],
                )?,
            )?,
            api_throttled_seconds: register(
                &registry,
                Counter::new(
                    "api_throttled_seconds_total",
                    "Seconds the operator's writes waited for the client-side write rate limit (--api-writes-per-second)",
                )
                .map_err(Error::Metrics)?,
            )?,
            notifications: register(
                &registry,
                counter(
                    "notifications_total",
                    "Notifications by sink type and result (delivered, retried, failed, dropped)",
                    &["sink", "result"],
                )?,
            )?,
            registry,
        })
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> Result<String> {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(Error::Metrics)
    }
}
