//! The operator's HTTP surface: health, readiness and metrics, the
//! treatment-assignment APIs (native JSON in [`assignments`], OFREP in
//! [`ofrep`]) served from the informer caches, the merge-train gates
//! ([`gates`]), guarded per namespace by bearer tokens ([`auth`]), and the
//! Alertmanager webhook ([`alertmanager`]), all on every replica, behind the
//! listener's limits ([`listener`]).

pub mod alertmanager;
mod assignments;
pub mod auth;
pub mod gates;
pub mod listener;
pub mod notification;
mod ofrep;
mod parse_errors;
mod request;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use kube::runtime::reflector::Store;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    api::{
        Alarm, ChangeWindow, MergeTrainPause, WeblabDial, alarm::AlarmState,
        merge_train_pause::PausePhase, weblab_dial::DialPhase,
    },
    metrics::Metrics,
    view::{dials::DialCatalog, firing::Firing, gates::Exceptions},
};

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Where the Alertmanager webhook records notifications.
    pub intake: Arc<dyn alertmanager::Intake>,
    /// The dial caches, one per watched scope (a namespace, or all).
    pub dials: Vec<Store<WeblabDial>>,
    /// The alarm caches, one per watched scope.
    pub alarms: Vec<Store<Alarm>>,
    /// What may be firing, as the alarm controller last saw it.
    pub firing: Arc<Firing>,
    /// The Alertmanager webhook's bearer token.
    pub webhook_token: alertmanager::WebhookToken,
    /// How the Alertmanager webhook records notifications.
    pub webhook: alertmanager::WebhookOptions,
    /// The merge-train pause caches, one per watched scope.
    pub pauses: Vec<Store<MergeTrainPause>>,
    /// The change-window caches, one per watched scope.
    pub windows: Vec<Store<ChangeWindow>>,
    /// The merge-train exception caches, and the uses the gate queues.
    pub exceptions: Exceptions,
    /// Whether this replica can serve: its CRDs are established and its
    /// caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The namespaces' API tokens.
    pub tokens: auth::ApiTokens,
    /// The namespace the root OFREP mount serves; `None`: the root is off.
    pub ofrep_root_namespace: Option<String>,
    /// The listener's limits.
    pub limits: listener::Limits,
}

/// The router with every endpoint.
pub fn router(state: ServerState) -> Router {
    // One catalog (and compiled-dial cache) shared by both assignment APIs.
    let catalog = Arc::new(
        DialCatalog::new(state.dials.clone(), state.ready.clone())
            .with_alarms(state.alarms.clone(), state.firing.clone()),
    );
    let registry = state.metrics.clone();
    let receiver = alertmanager::Receiver {
        metrics: state.metrics.clone(),
        intake: state.intake.clone(),
        options: state.webhook.clone(),
        token: state.webhook_token.clone(),
        ready: state.ready.clone(),
    };
    let gates = gates::routes(gates::GateState {
        pauses: state.pauses.clone(),
        windows: state.windows.clone(),
        exceptions: state.exceptions.clone(),
        uses_total: state.metrics.gate_exception_uses.clone(),
        ready: state.ready.clone(),
    });
    // Each guarded API checks the namespace's token inside its metrics, so
    // that refusals are counted with the API's other answers.
    let guarded = |routes: Router| {
        routes.layer(middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::authenticate,
        ))
    };
    let apis = Router::new()
        .merge(measured(
            guarded(assignments::routes(catalog.clone())),
            &registry,
            "native",
        ))
        .merge(measured(
            guarded(ofrep::routes(
                catalog,
                state.ofrep_root_namespace.as_deref(),
            )),
            &registry,
            "ofrep",
        ))
        .merge(guarded(gates));
    let limits = state.limits;
    // The probes stay out of the concurrency limit: a replica busy with a
    // flood is still alive.
    let limited = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(apis)
        .merge(alertmanager::routes(receiver))
        .fallback(unknown_path);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(listener::bounded(limited, &limits))
}

async fn unknown_path() -> Response {
    request::to_json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "no such endpoint: the operator serves /healthz, /readyz, /metrics, /v1/weblabs/<namespace>/<name>/treatment(s), /namespaces/<namespace>/ofrep/v1/..., /v1/gates/<namespace>/<train> and POST /v1/webhooks/alertmanager"}),
    )
}

/// `routes` with every request counted and timed as `api`.
fn measured(routes: Router, metrics: &Metrics, api: &'static str) -> Router {
    routes.layer(middleware::from_fn_with_state(
        (metrics.clone(), api),
        measure,
    ))
}

async fn measure(
    State((metrics, api)): State<(Metrics, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .assignment_duration
        .with_label_values(&[api])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .assignment_requests
        .with_label_values(&[api, response.status().as_str()])
        .inc();
    response
}

/// Binds `address` now, so that a port already in use fails the start, and
/// serves until `shutdown` is cancelled.
pub async fn serve(
    address: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = ()>> {
    let server_error = |source| Error::Server {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(server_error)?;
    let bound = listener.local_addr().map_err(server_error)?;
    tracing::info!(address = %bound, limits = ?state.limits, "HTTP server listening");
    let limits = state.limits;
    Ok(listener::serve(listener, router(state), limits, shutdown))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ServerState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for CRDs and caches",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<ServerState>) -> Response {
    count_dials_by_phase(&state);
    count_alarms_by_state(&state);
    count_pauses_and_windows(&state);
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics").into_response()
        }
    }
}

/// Sets `weblab_dials{phase}` from the caches, so that every replica reports
/// what it serves, leader or not.
fn count_dials_by_phase(state: &ServerState) {
    let mut counts: BTreeMap<String, i64> = DialPhase::ALL
        .iter()
        .map(|phase| (format!("{phase:?}"), 0))
        .collect();
    for dial in state.dials.iter().flat_map(Store::state) {
        let phase = dial
            .status
            .as_ref()
            .and_then(|status| status.phase)
            .map_or_else(|| "Unknown".to_owned(), |phase| format!("{phase:?}"));
        *counts.entry(phase).or_default() += 1;
    }
    for (phase, count) in counts {
        state.metrics.dials.with_label_values(&[&phase]).set(count);
    }
}

/// Sets `weblab_alarms{state}` from the caches; an alarm never evaluated
/// counts as `INSUFFICIENT_DATA`, as dials read it.
fn count_alarms_by_state(state: &ServerState) {
    let states = [
        AlarmState::Ok,
        AlarmState::Alarm,
        AlarmState::InsufficientData,
    ];
    let mut counts = [0i64; 3];
    for alarm in state.alarms.iter().flat_map(Store::state) {
        let current = alarm
            .status
            .as_ref()
            .and_then(|status| status.state)
            .unwrap_or(AlarmState::InsufficientData);
        if let Some(index) = states.iter().position(|s| *s == current) {
            counts[index] += 1;
        }
    }
    for (state_name, count) in states.iter().zip(counts) {
        state
            .metrics
            .alarms
            .with_label_values(&[&state_name.to_string()])
            .set(count);
    }
}

/// Sets `weblab_merge_train_pauses{phase}` and `weblab_change_windows{open}`
/// from the caches.
fn count_pauses_and_windows(state: &ServerState) {
    let mut phases: BTreeMap<String, i64> = PausePhase::ALL
        .iter()
        .map(|phase| (format!("{phase:?}"), 0))
        .collect();
    for pause in state.pauses.iter().flat_map(Store::state) {
        let phase = pause
            .status
            .as_ref()
            .and_then(|status| status.phase)
            .map_or_else(|| "Unknown".to_owned(), |phase| format!("{phase:?}"));
        *phases.entry(phase).or_default() += 1;
    }
    for (phase, count) in phases {
        state
            .metrics
            .merge_train_pauses
            .with_label_values(&[&phase])
            .set(count);
    }
    let mut open: BTreeMap<&str, i64> = [("true", 0), ("false", 0), ("unknown", 0)].into();
    for window in state.windows.iter().flat_map(Store::state) {
        let key = match window.status.as_ref().and_then(|status| status.open) {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        };
        *open.entry(key).or_default() += 1;
    }
    for (key, count) in open {
        state
            .metrics
            .change_windows
            .with_label_values(&[key])
            .set(count);
    }
}
