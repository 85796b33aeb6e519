//! Merge-train gates that CI jobs query before merging:
//! `GET /v1/gates/{namespace}/{train}` answers 200 `{"open": true}`, or 423
//! Locked with every reason the train is held, so that
//! `curl --fail` fails the job (exit code 22). A train is held by each
//! `MergeTrainPause` of it that has not resumed, and by each closed
//! `ChangeWindow` that lists it in `spec.mergeTrains`. Served from the
//! caches on every replica; 503 until they have synced.
//!
//! Anyone who can reach the port may ask whether a train is open and what
//! holds it (kinds and names); the reasons, ticket links and expiries, which
//! may describe an incident, only go to callers with the namespace's bearer
//! token (see [`super::auth`]).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use kube::{ResourceExt, runtime::reflector::Store};
use serde::Serialize;

use super::auth::Access;
use crate::api::{ChangeWindow, MergeTrainPause, merge_train_pause::PausePhase};

/// What the gate handler reads.
#[derive(Clone)]
pub struct GateState {
    /// The pause caches, one per watched scope.
    pub pauses: Vec<Store<MergeTrainPause>>,
    /// The change-window caches, one per watched scope.
    pub windows: Vec<Store<ChangeWindow>>,
    /// Whether the caches have synced.
    pub ready: Arc<AtomicBool>,
}

/// One reason a train is held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateReason {
    /// `MergeTrainPause` or `ChangeWindow`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// Why.
    pub reason: String,
    /// The ticket link, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// When it ends by the clock, if known (a window: its next opening).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// What an anonymous caller learns of one reason: what holds the train.
#[derive(Serialize)]
struct HeldBy {
    kind: &'static str,
    name: String,
}

impl From<GateReason> for HeldBy {
    fn from(reason: GateReason) -> Self {
        HeldBy {
            kind: reason.kind,
            name: reason.name,
        }
    }
}

#[derive(Serialize)]
struct GateAnswer<T> {
    open: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<T>,
}

/// Why `train` in `namespace` is held; empty: the gate is open.
pub fn reasons<'a>(
    namespace: &str,
    train: &str,
    pauses: impl IntoIterator<Item = &'a MergeTrainPause>,
    windows: impl IntoIterator<Item = &'a ChangeWindow>,
) -> Vec<GateReason> {
    let mut held: Vec<GateReason> = pauses
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace) && p.spec.train.train == train)
        .filter(|p| {
            // A pause holds from its creation until its train is resumed.
            p.status.as_ref().and_then(|s| s.phase) != Some(PausePhase::Resumed)
        })
        .map(|p| GateReason {
            kind: "MergeTrainPause",
            name: p.name_any(),
            reason: p.spec.reason.clone(),
            ticket: p.spec.ticket.clone(),
            expires_at: p
                .status
                .as_ref()
                .and_then(|s| s.expires_at.as_ref())
                .or(p.spec.expires_at.as_ref())
                .map(|t| t.0.to_string()),
        })
        .collect();
    held.extend(
        windows
            .into_iter()
            .filter(|w| w.namespace().as_deref() == Some(namespace))
            .filter(|w| w.spec.merge_trains.iter().any(|t| t == train))
            // Not evaluated yet counts as closed, as it does for dials.
            .filter(|w| w.status.as_ref().and_then(|s| s.open) != Some(true))
            .map(|w| {
                let status = w.status.as_ref();
                GateReason {
                    kind: "ChangeWindow",
                    name: w.name_any(),
                    reason: status
                        .and_then(|s| s.reason.clone())
                        .unwrap_or_else(|| "not evaluated yet".to_owned()),
                    ticket: None,
                    expires_at: status
                        .and_then(|s| s.next_transition.as_ref())
                        .map(|t| t.0.to_string()),
                }
            }),
    );
    held.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    held
}

async fn gate(
    State(state): State<GateState>,
    access: Option<Extension<Access>>,
    Path((namespace, train)): Path<(String, String)>,
) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the operator's caches have not synced yet"})),
        )
            .into_response();
    }
    let pauses: Vec<_> = state.pauses.iter().flat_map(Store::state).collect();
    let windows: Vec<_> = state.windows.iter().flat_map(Store::state).collect();
    let held = reasons(
        &namespace,
        &train,
        pauses.iter().map(AsRef::as_ref),
        windows.iter().map(AsRef::as_ref),
    );
    let (status, open) = if held.is_empty() {
        (StatusCode::OK, true)
    } else {
        (StatusCode::LOCKED, false)
    };
    if matches!(access, Some(Extension(Access::Authenticated))) {
        return (
            status,
            Json(GateAnswer {
                open,
                reasons: held,
            }),
        )
            .into_response();
    }
    let reasons: Vec<HeldBy> = held.into_iter().map(HeldBy::from).collect();
    (status, Json(GateAnswer { open, reasons })).into_response()
}

/// The gate routes.
pub fn routes(state: GateState) -> Router {
    Router::new()
        .route("/v1/gates/{namespace}/{train}", get(gate))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(name: &str, train: &str, phase: Option<&str>) -> MergeTrainPause {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "MergeTrainPause",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"train": train, "reason": format!("{name} says no"), "ticket": "https://t.example/1",
                     "expiresAt": "2026-12-01T17:00:00Z"},
            "status": phase.map(|p| serde_json::json!({"phase": p})),
        }))
        .expect("a valid pause")
    }

    fn window(open: Option<bool>) -> ChangeWindow {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": "protocol", "namespace": "team"},
            "spec": {"timeZone": "UTC", "weekly": [{"days": ["Mon"], "start": "00:00", "end": "18:00"}],
                     "mergeTrains": ["web-main"]},
            "status": open.map(|o| serde_json::json!({"open": o, "reason": "closed: outside"})),
        }))
        .expect("a valid window")
    }

    #[test]
    fn pauses_combine_and_resumed_ones_do_not_hold() {
        let pauses = [
            pause("a", "web-main", Some("Paused")),
            pause("b", "web-main", None),
            pause("c", "web-main", Some("Resumed")),
            pause("d", "other", Some("Paused")),
        ];
        let held = reasons("team", "web-main", &pauses, &[]);
        let names: Vec<&str> = held.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(held[0].expires_at.as_deref(), Some("2026-12-01T17:00:00Z"));
        assert!(reasons("other-ns", "web-main", &pauses, &[]).is_empty());
    }

    #[test]
    fn a_window_listing_the_train_holds_it_while_closed_or_unknown() {
        assert!(reasons("team", "web-main", &[], &[window(Some(true))]).is_empty());
        let held = reasons("team", "web-main", &[], &[window(Some(false))]);
        assert_eq!(held[0].kind, "ChangeWindow");
        assert_eq!(held[0].reason, "closed: outside");
        assert_eq!(reasons("team", "web-main", &[], &[window(None)]).len(), 1);
        assert!(reasons("team", "other", &[], &[window(Some(false))]).is_empty());
    }

    #[test]
    fn anonymous_callers_learn_what_holds_a_train_but_not_why() {
        let held = reasons("team", "web-main", &[pause("a", "web-main", None)], &[]);
        let anonymous: Vec<HeldBy> = held.clone().into_iter().map(HeldBy::from).collect();
        assert_eq!(
            serde_json::to_value(GateAnswer {
                open: false,
                reasons: anonymous
            })
            .expect("serializes"),
            serde_json::json!({"open": false, "reasons": [{"kind": "MergeTrainPause", "name": "a"}]})
        );
        let full = serde_json::to_value(GateAnswer {
            open: false,
            reasons: held,
        })
        .expect("serializes");
        assert_eq!(full["reasons"][0]["ticket"], "https://t.example/1");
        assert_eq!(full["reasons"][0]["reason"], "a says no");
    }
}
