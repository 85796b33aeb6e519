//! The operator's HTTP surface: health, readiness and metrics, and the
//! treatment-assignment APIs (native JSON in [`assignments`], OFREP in
//! [`ofrep`]) served from the informer caches on every replica.

mod assignments;
mod dials;
pub mod gates;
mod ofrep;
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
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    api::{
        ChangeWindow, MergeTrainPause, WeblabDial, merge_train_pause::PausePhase,
        weblab_dial::DialPhase,
    },
    metrics::Metrics,
};

/// What the handlers share.
#[derive(Clone)]
pub struct ServerState {
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The dial caches, one per watched scope (a namespace, or all).
    pub dials: Vec<Store<WeblabDial>>,
    /// The merge-train pause caches, one per watched scope.
    pub pauses: Vec<Store<MergeTrainPause>>,
    /// The change-window caches, one per watched scope.
    pub windows: Vec<Store<ChangeWindow>>,
    /// Whether this replica can serve: its CRDs are established and its
    /// caches have synced.
    pub ready: Arc<AtomicBool>,
}

/// The router with every endpoint.
pub fn router(state: ServerState) -> Router {
    // One catalog (and compiled-dial cache) shared by both assignment APIs.
    let catalog = Arc::new(dials::DialCatalog::new(
        state.dials.clone(),
        state.ready.clone(),
    ));
    let gates = gates::routes(gates::GateState {
        pauses: state.pauses.clone(),
        windows: state.windows.clone(),
        ready: state.ready.clone(),
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(assignments::routes(catalog.clone()))
        .merge(ofrep::routes(catalog))
        .merge(gates)
}

/// Binds `address` now, so that a port already in use fails the start, and
/// serves until `shutdown` is cancelled.
pub async fn serve(
    address: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = Result<()>>> {
    let server_error = |source| Error::Server {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(server_error)?;
    let bound = listener.local_addr().map_err(server_error)?;
    tracing::info!(address = %bound, "HTTP server listening");
    Ok(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|source| Error::Server {
                address: bound.to_string(),
                source,
            })
    })
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
