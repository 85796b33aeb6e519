//! Merge-train gates as the server answers them: what holds a train, and
//! which live exception lets a merge request through. Pure over the cached
//! objects; the clock is the caller's.

use std::sync::Arc;

use jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::Store};
use serde::Serialize;

use super::exception_uses::ExceptionUses;
use crate::api::{
    ChangeWindow, MergeTrainException, MergeTrainPause, merge_train_exception::MergeCandidate,
    merge_train_pause::PausePhase,
};

/// The exception caches, one per watched scope, and the queue of their
/// uses, which the leader records.
#[derive(Clone)]
pub struct Exceptions {
    /// The caches.
    pub stores: Vec<Store<MergeTrainException>>,
    /// The queue.
    pub uses: Arc<ExceptionUses>,
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

/// The live exception of `namespace` (first by name) that lets `candidate`
/// pass `train` at `now`. Exceptions of other namespaces never count.
pub fn exception_for<'a>(
    namespace: &str,
    train: &str,
    candidate: &MergeCandidate,
    exceptions: impl IntoIterator<Item = &'a MergeTrainException>,
    now: Timestamp,
) -> Option<&'a MergeTrainException> {
    if candidate.is_empty() {
        return None;
    }
    exceptions
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(namespace) && e.spec.train == train)
        .filter(|e| e.spec.names(candidate))
        .filter(|e| {
            let created = e.metadata.creation_timestamp.as_ref().map(|t| t.0);
            e.spec.is_live(created, now)
        })
        .min_by(|a, b| a.metadata.name.cmp(&b.metadata.name))
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
