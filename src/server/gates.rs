//! Merge-train gates that CI jobs query before merging:
//! `GET /v1/gates/{namespace}/{train}` answers 200 `{"open": true}`, or 423
//! Locked with every reason the train is held, so that
//! `curl --fail` fails the job (exit code 22). A train is held by each
//! `MergeTrainPause` of it that has not resumed, and by each closed
//! `ChangeWindow` that lists it in `spec.mergeTrains`. Served from the
//! caches on every replica; 503 until they have synced.
//!
//! A job that names its merge request (`?project=<path or id>&mergeRequest=<iid>`)
//! or its commit (`?sha=<full sha>`) passes a held train when a live
//! `MergeTrainException` of the train's namespace names it: 200 with
//! `"exception": <name>`. Whether it is live is decided here on this
//! replica's clock, not read from the exception's status. Each such answer
//! is a use, queued in memory for the leader to record (never a write on
//! the request path). A query that cannot be read is answered 400.
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
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::Store};
use prometheus::IntCounter;
use serde::Serialize;

use super::{
    auth::Access,
    request::{decode_query, to_json_response},
};
use crate::{
    api::{
        ChangeWindow, MergeTrainException, MergeTrainPause,
        merge_train_exception::{MergeCandidate, MergeRequestRef},
    },
    view::gates::{Exceptions, GateReason, exception_for, reasons},
};

/// What the gate handler reads.
#[derive(Clone)]
pub struct GateState {
    /// The pause caches, one per watched scope.
    pub pauses: Vec<Store<MergeTrainPause>>,
    /// The change-window caches, one per watched scope.
    pub windows: Vec<Store<ChangeWindow>>,
    /// The exceptions, and where their uses are queued.
    pub exceptions: Exceptions,
    /// `weblab_gate_exception_uses_total`.
    pub uses_total: IntCounter,
    /// Whether the caches have synced.
    pub ready: Arc<AtomicBool>,
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
    /// The exception that let the caller through a held train.
    #[serde(skip_serializing_if = "Option::is_none")]
    exception: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<T>,
}

const QUERY_HELP: &str = "the gate takes project=<project path or id>&mergeRequest=<iid> and/or sha=<full commit sha>, URL-encoded";

/// The merge request and/or commit a query names; empty without a query.
/// The error says what is wrong, for a 400.
pub fn candidate(query: Option<&str>) -> Result<MergeCandidate, String> {
    let pairs = decode_query(query).map_err(|error| format!("{error}; {QUERY_HELP}"))?;
    let (mut project, mut iid, mut sha) = (None, None, None);
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "project" => &mut project,
            "mergeRequest" => &mut iid,
            "sha" => &mut sha,
            _ => return Err(format!("unknown query parameter {name:?}: {QUERY_HELP}")),
        };
        if slot.replace(value).is_some() {
            return Err(format!("{name} is given more than once: {QUERY_HELP}"));
        }
    }
    let merge_request = match (project, iid) {
        (None, None) => None,
        (Some(_), None) => return Err(format!("project needs mergeRequest=<iid>: {QUERY_HELP}")),
        (None, Some(_)) => {
            return Err(format!(
                "mergeRequest needs project=<project path or id>: {QUERY_HELP}"
            ));
        }
        (Some(project), Some(iid)) => {
            if project.is_empty()
                || project.chars().count() > 512
                || project.chars().any(char::is_whitespace)
            {
                return Err(
                    "project must be 1 to 512 characters without spaces, e.g. group/app or 1234"
                        .to_owned(),
                );
            }
            let number = iid
                .bytes()
                .all(|byte| byte.is_ascii_digit())
                .then(|| iid.parse::<i64>().ok())
                .flatten()
                .filter(|number| *number >= 1)
                .ok_or_else(|| {
                    format!(
                        "mergeRequest must be the merge request's number (its IID, 1 or more), not {iid:?}"
                    )
                })?;
            Some(MergeRequestRef {
                project,
                iid: number,
            })
        }
    };
    if let Some(sha) = &sha
        && !(matches!(sha.len(), 40 | 64) && sha.bytes().all(|byte| byte.is_ascii_hexdigit()))
    {
        return Err(format!(
            "sha must be a full commit SHA (40 or 64 hex digits), not {sha:?}"
        ));
    }
    Ok(MergeCandidate { merge_request, sha })
}

async fn gate(
    State(state): State<GateState>,
    access: Option<Extension<Access>>,
    Path((namespace, train)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the operator's caches have not synced yet"})),
        )
            .into_response();
    }
    let candidate = match candidate(query.as_deref()) {
        Ok(candidate) => candidate,
        Err(error) => {
            return to_json_response(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": error }),
            );
        }
    };
    let pauses: Vec<_> = state.pauses.iter().flat_map(Store::state).collect();
    let windows: Vec<_> = state.windows.iter().flat_map(Store::state).collect();
    let held = reasons(
        &namespace,
        &train,
        pauses.iter().map(AsRef::as_ref),
        windows.iter().map(AsRef::as_ref),
    );
    let exception = if held.is_empty() {
        None
    } else {
        let exceptions: Vec<_> = state
            .exceptions
            .stores
            .iter()
            .flat_map(Store::state)
            .collect();
        exception_for(
            &namespace,
            &train,
            &candidate,
            exceptions.iter().map(AsRef::as_ref),
            Timestamp::now(),
        )
        .map(|exception| record_use(&state, exception, &held))
    };
    let (status, open) = if held.is_empty() || exception.is_some() {
        (StatusCode::OK, true)
    } else {
        (StatusCode::LOCKED, false)
    };
    if matches!(access, Some(Extension(Access::Authenticated))) {
        return (
            status,
            Json(GateAnswer {
                open,
                exception,
                reasons: held,
            }),
        )
            .into_response();
    }
    let reasons: Vec<HeldBy> = held.into_iter().map(HeldBy::from).collect();
    (
        status,
        Json(GateAnswer {
            open,
            exception,
            reasons,
        }),
    )
        .into_response()
}

/// Counts and queues one use of `exception` (the leader records it in
/// status), logs it with its evidence, and returns its name.
fn record_use(state: &GateState, exception: &MergeTrainException, held: &[GateReason]) -> String {
    let name = exception.name_any();
    let namespace = exception.namespace().unwrap_or_default();
    let held_by = held
        .iter()
        .map(|reason| format!("{} {}", reason.kind, reason.name))
        .collect::<Vec<_>>()
        .join(", ");
    state.uses_total.inc();
    let queued = state.exceptions.uses.add(
        &namespace,
        &name,
        &exception.uid().unwrap_or_default(),
        Timestamp::now(),
        &held_by,
    );
    tracing::info!(
        namespace = %namespace,
        exception = %name,
        train = %exception.spec.train,
        subject = %exception.spec.subject(),
        held_by = %held_by,
        queued,
        "the gate let a merge request through a held train by exception"
    );
    name
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
                exception: None,
                reasons: anonymous
            })
            .expect("serializes"),
            serde_json::json!({"open": false, "reasons": [{"kind": "MergeTrainPause", "name": "a"}]})
        );
        let full = serde_json::to_value(GateAnswer {
            open: false,
            exception: None,
            reasons: held,
        })
        .expect("serializes");
        assert_eq!(full["reasons"][0]["ticket"], "https://t.example/1");
        assert_eq!(full["reasons"][0]["reason"], "a says no");
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn exception(namespace: &str, name: &str, end: serde_json::Value) -> MergeTrainException {
        let mut spec = serde_json::json!({
            "train": "web-main",
            "mergeRequest": {"project": "web/app", "iid": 42},
            "reason": "the fix", "approvedBy": "oncall",
        });
        if let (Some(spec), Some(end)) = (spec.as_object_mut(), end.as_object()) {
            spec.extend(end.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1",
            "kind": "MergeTrainException",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": "2026-12-03T08:00:00Z"},
            "spec": spec,
        }))
        .expect("a valid exception")
    }

    fn mr(project: &str, iid: i64) -> MergeCandidate {
        MergeCandidate {
            merge_request: Some(MergeRequestRef {
                project: project.to_owned(),
                iid,
            }),
            sha: None,
        }
    }

    #[test]
    fn queries_name_a_merge_request_a_commit_or_both() {
        assert_eq!(candidate(None), Ok(MergeCandidate::default()));
        assert_eq!(candidate(Some("")), Ok(MergeCandidate::default()));
        assert_eq!(
            candidate(Some("project=web%2Fapp&mergeRequest=42")),
            Ok(mr("web/app", 42))
        );
        assert_eq!(
            candidate(Some("project=1234&mergeRequest=7")),
            Ok(mr("1234", 7))
        );
        let both = candidate(Some(&format!(
            "sha={}&project=web/app&mergeRequest=42",
            SHA.to_uppercase()
        )))
        .expect("valid");
        assert_eq!(both.merge_request, mr("web/app", 42).merge_request);
        assert_eq!(both.sha.as_deref(), Some(SHA.to_uppercase().as_str()));
    }

    #[test]
    fn malformed_queries_are_refused_with_what_to_send() {
        for (query, says) in [
            ("mergeRequest=42", "mergeRequest needs project"),
            ("project=web/app", "project needs mergeRequest"),
            ("project=web/app&mergeRequest=abc", "not \"abc\""),
            ("project=web/app&mergeRequest=0", "1 or more"),
            ("project=web/app&mergeRequest=%2B5", "not \"+5\""),
            ("project=web/app&mergeRequest=-3", "not \"-3\""),
            ("project=web/app&mergeRequest=99999999999999999999", "IID"),
            ("project=&mergeRequest=4", "1 to 512 characters"),
            ("project=web+app&mergeRequest=4", "without spaces"),
            ("sha=0123abc", "full commit SHA"),
            (
                "sha=0123456789abcdef0123456789abcdef0123456z",
                "40 or 64 hex digits",
            ),
            ("mr=42", "unknown query parameter \"mr\""),
            ("sha=a&sha=b", "sha is given more than once"),
            ("project=%FF&mergeRequest=1", "UTF-8"),
        ] {
            let error = candidate(Some(query)).expect_err(query);
            assert!(error.contains(says), "{query}: {error}");
        }
    }

    #[test]
    fn only_a_live_exception_of_the_trains_namespace_naming_the_caller_lets_it_through() {
        let now: Timestamp = "2026-12-03T09:00:00Z".parse().expect("instant");
        let live = exception("team", "fix", serde_json::json!({"duration": "4h"}));
        let expired = exception("team", "old", serde_json::json!({"duration": "30m"}));
        let elsewhere = exception("other", "fix", serde_json::json!({"duration": "4h"}));
        let too_long = exception(
            "team",
            "forever",
            serde_json::json!({"expiresAt": "2026-12-31T00:00:00Z"}),
        );
        let all = [
            expired.clone(),
            elsewhere.clone(),
            too_long.clone(),
            live.clone(),
        ];
        let found = exception_for("team", "web-main", &mr("web/app", 42), &all, now);
        assert_eq!(found.map(ResourceExt::name_any).as_deref(), Some("fix"));
        assert!(exception_for("team", "web-main", &mr("web/app", 43), &all, now).is_none());
        assert!(exception_for("team", "other-train", &mr("web/app", 42), &all, now).is_none());
        assert!(
            exception_for("team", "web-main", &MergeCandidate::default(), &all, now).is_none(),
            "no query: nobody passes"
        );
        // The clock decides, not the status: four hours on, it is over.
        let later: Timestamp = "2026-12-03T12:00:00Z".parse().expect("instant");
        assert!(exception_for("team", "web-main", &mr("web/app", 42), &all, later).is_none());
        // Another namespace's exception never opens this one's train.
        assert!(
            exception_for(
                "other",
                "web-main",
                &mr("web/app", 42),
                [&expired, &too_long],
                now
            )
            .is_none()
        );
    }

    #[test]
    fn an_answer_let_through_names_its_exception() {
        let held = reasons("team", "web-main", &[pause("a", "web-main", None)], &[]);
        let anonymous: Vec<HeldBy> = held.into_iter().map(HeldBy::from).collect();
        assert_eq!(
            serde_json::to_value(GateAnswer {
                open: true,
                exception: Some("fix".to_owned()),
                reasons: anonymous
            })
            .expect("serializes"),
            serde_json::json!({"open": true, "exception": "fix",
                               "reasons": [{"kind": "MergeTrainPause", "name": "a"}]})
        );
    }
}
