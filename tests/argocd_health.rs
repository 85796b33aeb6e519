//! The Argo CD health checks in `docs/argocd/` run by a real Lua 5.1
//! interpreter (the language level of gopher-lua, which Argo CD embeds)
//! against sample objects in every phase of every kind. The phases come from
//! the API types, and each expectation is an exhaustive `match`, so a new
//! phase does not compile until its health is decided here.

mod support;

use std::{io::Write, process::Stdio};

use serde_json::{Value, json};
use weblab_operator::api::{
    alarm::AlarmState, merge_train_exception::ExceptionPhase, merge_train_pause::PausePhase,
    rollback::RollbackPhase, weblab_dial::DialPhase,
};

/// The Lua interpreter: Debian's `lua5.1` (hack/prereqs.sh installs it).
const LUA: &str = "lua5.1";

/// `value` as a Lua table constructor; JSON null becomes an absent field.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// A Lua string literal; every byte outside printable ASCII as `\ddd`, which
/// Lua 5.1 understands (it has no `\u{...}`).
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

/// Runs `docs/argocd/weblab.dev/<kind>/health.lua` on `object` as Argo CD
/// does (the object in the global `obj`) and returns (status, message).
fn health(kind: &str, object: &Value) -> (String, String) {
    let script = support::repo_root().join(format!("docs/argocd/weblab.dev/{kind}/health.lua"));
    let harness = format!(
        "obj = {}\nlocal hs = assert(loadfile({}))()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_literal(object),
        lua_string(&script.to_string_lossy()),
    );
    let mut child = std::process::Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {LUA} (hack/prereqs.sh installs it): {error}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(harness.as_bytes())
        .expect("write the harness");
    let output = child.wait_with_output().expect("lua finishes");
    assert!(
        output.status.success(),
        "{kind}: {}\n{harness}",
        support::describe(&output)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "{kind}: {status:?} is not an Argo CD health status"
    );
    assert!(!message.is_empty(), "{kind}: no message for {status}");
    (status.to_owned(), message.to_owned())
}

fn condition(kind: &str, status: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "reason": "Test", "message": message,
           "lastTransitionTime": "2026-11-22T00:00:00Z", "observedGeneration": 2})
}

fn object(kind: &str, status: Value) -> Value {
    json!({
        "apiVersion": "weblab.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "sample", "namespace": "team-a", "generation": 2},
        "spec": {},
        "status": status,
    })
}

fn name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("serialises to a string")
}

#[test]
fn every_kind_is_progressing_until_the_operator_observes_its_generation() {
    for kind in [
        "WeblabDial",
        "Alarm",
        "Rollback",
        "MergeTrainPause",
        "ChangeWindow",
        "MergeTrainException",
        "WeblabNotifier",
    ] {
        let (status, _) = health(kind, &object(kind, Value::Null));
        assert_eq!(status, "Progressing", "{kind} without status");
        let stale = json!({"observedGeneration": 1, "phase": "Dialed", "state": "OK",
                           "open": true});
        let (status, message) = health(kind, &object(kind, stale));
        assert_eq!(
            status, "Progressing",
            "{kind} with an old observedGeneration"
        );
        assert!(message.contains("generation 2"), "{kind}: {message}");
    }
}

#[test]
fn weblab_dial_health_in_every_phase() {
    for phase in DialPhase::ALL {
        let expected = match phase {
            DialPhase::Dialed => "Healthy",
            DialPhase::Progressing | DialPhase::Baking | DialPhase::Waiting => "Progressing",
            DialPhase::Paused => "Suspended",
            DialPhase::RolledBack | DialPhase::Aborted | DialPhase::Failed => "Degraded",
        };
        let stalled = matches!(expected, "Degraded");
        let dial = object(
            "WeblabDial",
            json!({
                "observedGeneration": 2,
                "phase": name(phase),
                "summary": "NA C:50 T1:50",
                "conditions": [
                    condition("Ready", if expected == "Healthy" { "True" } else { "False" }, "at the target"),
                    condition("Stalled", if stalled { "True" } else { "False" }, "alarm checkout-errors fired at Sev2"),
                ],
            }),
        );
        let (status, message) = health("WeblabDial", &dial);
        assert_eq!(status, expected, "{phase:?}");
        if stalled {
            assert!(message.contains("checkout-errors"), "{phase:?}: {message}");
        }
    }
    // Dialed, but an attached (notify-only) alarm fires.
    let alarming = object(
        "WeblabDial",
        json!({"observedGeneration": 2, "phase": "Dialed", "conditions": [
            condition("Ready", "True", "at the target"),
            condition("Degraded", "True", "alarm latency-p99 is in ALARM (Sev3)"),
        ]}),
    );
    assert_eq!(
        health("WeblabDial", &alarming),
        (
            "Degraded".to_owned(),
            "alarm latency-p99 is in ALARM (Sev3)".to_owned()
        )
    );
}

#[test]
fn alarm_health_in_every_state_and_when_its_source_fails() {
    for state in [
        AlarmState::Ok,
        AlarmState::Alarm,
        AlarmState::InsufficientData,
    ] {
        let expected = match state {
            AlarmState::Ok => "Healthy",
            AlarmState::Alarm => "Degraded",
            AlarmState::InsufficientData => "Progressing",
        };
        let alarm = object(
            "Alarm",
            json!({"observedGeneration": 2, "state": name(state), "reason": "3 of 5 datapoints > 0.05 — «ü»"}),
        );
        let (status, message) = health("Alarm", &alarm);
        assert_eq!(status, expected, "{state:?}");
        assert!(
            message.contains(&name(state)) && message.contains("«ü»"),
            "{message}"
        );
    }
    let unreachable = object(
        "Alarm",
        json!({"observedGeneration": 2, "state": "OK", "conditions": [
            condition("Degraded", "True", "Prometheus at http://prometheus:9090 does not answer"),
        ]}),
    );
    assert_eq!(health("Alarm", &unreachable).0, "Degraded");
}

#[test]
fn rollback_health_in_every_phase() {
    for phase in [
        RollbackPhase::Pending,
        RollbackPhase::Armed,
        RollbackPhase::Progressing,
        RollbackPhase::Succeeded,
        RollbackPhase::Failed,
        RollbackPhase::Refused,
    ] {
        let expected = match phase {
            RollbackPhase::Armed | RollbackPhase::Succeeded => "Healthy",
            RollbackPhase::Pending | RollbackPhase::Progressing => "Progressing",
            RollbackPhase::Failed | RollbackPhase::Refused => "Degraded",
        };
        let rollback = object(
            "Rollback",
            json!({"observedGeneration": 2, "phase": name(phase), "currentRegion": "prodEU"}),
        );
        let (status, message) = health("Rollback", &rollback);
        assert_eq!(status, expected, "{phase:?}");
        if phase == RollbackPhase::Progressing {
            assert!(message.contains("prodEU"), "{message}");
        }
    }
    // Waiting for a person to fix its kubeconfig Secret: degraded, whatever
    // the phase.
    let stalled = object(
        "Rollback",
        json!({"observedGeneration": 2, "phase": "Pending", "conditions": [
            condition("Stalled", "True", "kubeconfig Secret team-a/eu not found"),
        ]}),
    );
    let (status, message) = health("Rollback", &stalled);
    assert_eq!(status, "Degraded");
    assert!(message.contains("not found"), "{message}");
}

#[test]
fn merge_train_pause_health_in_every_phase() {
    for phase in [
        PausePhase::Pausing,
        PausePhase::Paused,
        PausePhase::Resuming,
        PausePhase::Resumed,
        PausePhase::Failed,
    ] {
        let expected = match phase {
            PausePhase::Paused => "Suspended",
            PausePhase::Resumed => "Healthy",
            PausePhase::Pausing | PausePhase::Resuming => "Progressing",
            PausePhase::Failed => "Degraded",
        };
        let pause = object(
            "MergeTrainPause",
            json!({"observedGeneration": 2, "phase": name(phase), "expiresAt": "2026-11-22T04:00:00Z"}),
        );
        let (status, message) = health("MergeTrainPause", &pause);
        assert_eq!(status, expected, "{phase:?}");
        if phase == PausePhase::Paused {
            assert!(message.contains("2026-11-22T04:00:00Z"), "{message}");
        }
    }
}

#[test]
fn merge_train_exception_health_in_every_phase() {
    for phase in [
        ExceptionPhase::Active,
        ExceptionPhase::Expired,
        ExceptionPhase::Invalid,
    ] {
        let expected = match phase {
            ExceptionPhase::Active | ExceptionPhase::Expired => "Healthy",
            ExceptionPhase::Invalid => "Degraded",
        };
        let exception = object(
            "MergeTrainException",
            json!({"observedGeneration": 2, "phase": name(phase), "conditions": [
                condition("Ready", "True", "merge request web/app!42 may pass train web-main"),
                condition("TrainKnown", "True", "a MergeTrainPause names train web-main"),
            ]}),
        );
        let (status, _) = health("MergeTrainException", &exception);
        assert_eq!(status, expected, "{phase:?}");
    }
    for (reason, expected) in [("NotYetKnown", "Progressing"), ("UnknownTrain", "Degraded")] {
        let mut train = condition(
            "TrainKnown",
            "False",
            "no MergeTrainPause or ChangeWindow names train web-mian",
        );
        train["reason"] = json!(reason);
        let unknown = object(
            "MergeTrainException",
            json!({"observedGeneration": 2, "phase": "Active", "conditions": [train]}),
        );
        let (status, message) = health("MergeTrainException", &unknown);
        assert_eq!(status, expected, "{reason}");
        assert!(message.contains("web-mian"), "{message}");
    }
}

#[test]
fn change_window_health_open_closed_and_broken() {
    for (open, word) in [(true, "Open"), (false, "Closed")] {
        let window = object(
            "ChangeWindow",
            json!({"observedGeneration": 2, "open": open, "reason": "Mon-Thu 00:00-18:00 America/Los_Angeles"}),
        );
        let (status, message) = health("ChangeWindow", &window);
        assert_eq!(status, "Healthy");
        assert!(message.starts_with(word), "{message}");
    }
    let broken = object(
        "ChangeWindow",
        json!({"observedGeneration": 2, "open": false, "conditions": [
            condition("Ready", "False", "alarm selector is invalid"),
        ]}),
    );
    assert_eq!(health("ChangeWindow", &broken).0, "Degraded");
}

#[test]
fn weblab_notifier_health_delivering_pending_and_failing() {
    let settled = object(
        "WeblabNotifier",
        json!({"observedGeneration": 2, "pendingCount": 0, "conditions": [
            condition("Ready", "True", ""), condition("SinkFailing", "False", ""),
        ]}),
    );
    assert_eq!(health("WeblabNotifier", &settled).0, "Healthy");
    let pending = object(
        "WeblabNotifier",
        json!({"observedGeneration": 2, "pendingCount": 3}),
    );
    let (status, message) = health("WeblabNotifier", &pending);
    assert_eq!(status, "Progressing");
    assert!(message.starts_with("3 message"), "{message}");
    let failing = object(
        "WeblabNotifier",
        json!({"observedGeneration": 2, "pendingCount": 1, "conditions": [
            condition("SinkFailing", "True", "oncall: 2 failed deliveries, last: the pagerduty sink answered HTTP 503"),
        ]}),
    );
    let (status, message) = health("WeblabNotifier", &failing);
    assert_eq!(status, "Degraded");
    assert!(message.contains("HTTP 503"), "{message}");
    let invalid = object(
        "WeblabNotifier",
        json!({"observedGeneration": 2, "conditions": [
            condition("Ready", "False", "spec.filter.selector does not parse"),
        ]}),
    );
    assert_eq!(health("WeblabNotifier", &invalid).0, "Degraded");
}
