//! A contract server for the notification sinks that cannot run here,
//! written from their published API documentation:
//!
//! - Slack incoming webhooks (`POST /services/...`, JSON): a message needs
//!   `text`, or `blocks` with `text` as the fallback; a `header` block's
//!   text is `plain_text` of at most 150 characters; a `section`'s text at
//!   most 3,000 characters and at most 10 `fields` of 2,000; answers
//!   `200 ok` (text/plain), `400 invalid_payload`, and `429` with
//!   `Retry-After` when rate-limited.
//! - Microsoft Teams workflow webhooks ("When a Teams webhook request is
//!   received"): a `message` whose `attachments` hold Adaptive Cards with
//!   `contentType` `application/vnd.microsoft.card.adaptive`; answers `202`.
//! - PagerDuty Events API v2: `POST /v2/enqueue` with `routing_key` (32
//!   characters), `event_action` (`trigger`, `acknowledge`, `resolve`),
//!   `dedup_key` (at most 255 characters; required but for `trigger`), and
//!   for `trigger` a `payload` with `summary` (at most 1,024 characters),
//!   `source` and `severity` (`critical`, `error`, `warning`, `info`);
//!   answers `202 {"status": "success", "message": "Event processed",
//!   "dedup_key": ...}` or `400 {"status": "invalid event", ...}`. A
//!   trigger whose `dedup_key` names an open alert joins it; a resolve
//!   closes it. `POST /v2/change/enqueue` takes change events
//!   (`routing_key`, `payload.summary`), answering `202`.
//! - A signed webhook at `/hook`, verified with its own HMAC-SHA256 over
//!   `timestamp + "." + body`.
//!
//! Tests script failures (an HTTP status, a `429` with `Retry-After`, a
//! slow answer) for the next requests, and read every request received
//! with the contract's verdict on it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The signed webhook's key.
pub const WEBHOOK_KEY: &str = "contract-webhook-key-5f1c";
/// A PagerDuty routing key of the documented length.
pub const ROUTING_KEY: &str = "R0UT1NGK3YR0UT1NGK3YR0UT1NGK3Y32";

/// What the next request gets instead of the contract's answer.
#[derive(Clone, Copy, Debug)]
pub enum Scripted {
    /// This status.
    Fail(u16),
    /// `429` with `Retry-After` in seconds.
    Throttle(u64),
    /// The contract's answer, after this long.
    Slow(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when it is not).
    pub body: Value,
    /// What the contract found wrong with it.
    pub violations: Vec<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Contract {
    received: Vec<Received>,
    script: VecDeque<Scripted>,
    /// PagerDuty alerts by dedup key: open or resolved.
    alerts: BTreeMap<String, bool>,
    /// Alerts opened (a trigger that did not join an open one).
    incidents: u32,
}

type Shared = Arc<Mutex<Contract>>;

/// The contract server on `127.0.0.1:<free port>`.
pub struct SinkContract {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl SinkContract {
    /// Starts the server.
    pub async fn start() -> SinkContract {
        let shared: Shared = Arc::default();
        let app = Router::new()
            .route("/slack/services/{*path}", post(slack))
            .route("/teams/workflows/{*path}", post(teams))
            .route("/v2/enqueue", post(enqueue))
            .route("/v2/change/enqueue", post(change))
            .route("/hook", post(hook))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SinkContract {
            url,
            shared,
            _server: server,
        }
    }

    /// A Slack incoming webhook URL on this server.
    pub fn slack_url(&self) -> String {
        format!("{}/slack/services/T000/B000/XXXXXXXXXXXXXXXX", self.url)
    }

    /// A Teams workflow URL on this server.
    pub fn teams_url(&self) -> String {
        format!(
            "{}/teams/workflows/0a1b2c/triggers/manual/paths/invoke",
            self.url
        )
    }

    /// The signed webhook's URL.
    pub fn hook_url(&self) -> String {
        format!("{}/hook", self.url)
    }

    /// Answers the next requests as `script` says, in order.
    pub fn script(&self, script: &[Scripted]) {
        self.lock().script.extend(script.iter().copied());
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// PagerDuty alerts opened so far, and those open now.
    pub fn incidents(&self) -> (u32, Vec<String>) {
        let contract = self.lock();
        let open = contract
            .alerts
            .iter()
            .filter(|(_, open)| **open)
            .map(|(key, _)| key.clone())
            .collect();
        (contract.incidents, open)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contract> {
        self.shared.lock().expect("contract lock")
    }
}

/// The scripted answer for this request, if any, after its delay.
/// The scripted answer to this request, if one is due, recorded like any
/// other (a slow script only delays the real answer).
async fn scripted(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    let response = scripted_response(shared).await?;
    record(
        shared,
        path,
        headers,
        body,
        Vec::new(),
        response.status().as_u16(),
    );
    Some(response)
}

async fn scripted_response(shared: &Shared) -> Option<Response> {
    let next = shared.lock().expect("contract lock").script.pop_front();
    match next? {
        Scripted::Fail(status) => Some(
            (
                StatusCode::from_u16(status).expect("a status"),
                "scripted failure",
            )
                .into_response(),
        ),
        Scripted::Throttle(secs) => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, "rate_limited").into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&secs.to_string()).expect("a header"),
            );
            Some(response)
        }
        Scripted::Slow(wait) => {
            tokio::time::sleep(wait).await;
            None
        }
    }
}

fn record(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    violations: Vec<String>,
    status: u16,
) {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    shared
        .lock()
        .expect("contract lock")
        .received
        .push(Received {
            path: path.to_owned(),
            headers,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            violations,
            status,
            at: Instant::now(),
        });
}

/// Parses a JSON body sent as `application/json`, or says why not.
fn json_body(headers: &HeaderMap, body: &[u8], violations: &mut Vec<String>) -> Value {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        violations.push(format!(
            "content type {content_type:?} is not application/json"
        ));
    }
    serde_json::from_slice(body).unwrap_or_else(|_| {
        violations.push("the body is not JSON".to_owned());
        Value::Null
    })
}

fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

async fn slack(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/slack/services/{path}");
    if let Some(response) = scripted(&shared, &path, &headers, &body).await {
        return response;
    }
    let mut violations = Vec::new();
    let message = json_body(&headers, &body, &mut violations);
    let blocks = message["blocks"].as_array().cloned().unwrap_or_default();
    if !message["text"].is_string() {
        violations.push("no text (required, as the fallback with blocks)".to_owned());
    }
    for block in &blocks {
        match block["type"].as_str() {
            Some("header") => {
                if block["text"]["type"] != "plain_text" || chars(&block["text"]["text"]) > 150 {
                    violations
                        .push("a header needs plain_text of at most 150 characters".to_owned());
                }
            }
            Some("section") => {
                if chars(&block["text"]["text"]) > 3000 {
                    violations.push("a section's text exceeds 3,000 characters".to_owned());
                }
                let fields = block["fields"].as_array().cloned().unwrap_or_default();
                if fields.len() > 10 || fields.iter().any(|f| chars(&f["text"]) > 2000) {
                    violations.push("at most 10 fields of 2,000 characters".to_owned());
                }
                if block.get("text").is_none() && fields.is_empty() {
                    violations.push("a section needs text or fields".to_owned());
                }
            }
            Some("context") => {
                if block["elements"].as_array().is_none_or(Vec::is_empty) {
                    violations.push("a context needs elements".to_owned());
                }
            }
            other => violations.push(format!("unexpected block type {other:?}")),
        }
    }
    let (status, answer) = if violations.is_empty() {
        (200, "ok")
    } else {
        (400, "invalid_payload")
    };
    record(&shared, &path, &headers, &body, violations, status);
    (StatusCode::from_u16(status).expect("a status"), answer).into_response()
}

async fn teams(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/teams/workflows/{path}");
    if let Some(response) = scripted(&shared, &path, &headers, &body).await {
        return response;
    }
    let mut violations = Vec::new();
    let message = json_body(&headers, &body, &mut violations);
    if message["type"] != "message" {
        violations.push("type must be message".to_owned());
    }
    let attachments = message["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if attachments.is_empty() {
        violations.push("no attachments".to_owned());
    }
    for attachment in &attachments {
        if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
            violations.push("an attachment that is not an Adaptive Card".to_owned());
        }
        let card = &attachment["content"];
        if card["type"] != "AdaptiveCard" || !card["version"].is_string() {
            violations.push("content must be an AdaptiveCard with a version".to_owned());
        }
        if card["body"].as_array().is_none_or(Vec::is_empty) {
            violations.push("the card has no body".to_owned());
        }
    }
    let status = if violations.is_empty() { 202 } else { 400 };
    record(&shared, &path, &headers, &body, violations, status);
    StatusCode::from_u16(status)
        .expect("a status")
        .into_response()
}

async fn enqueue(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/v2/enqueue";
    if let Some(response) = scripted(&shared, path, &headers, &body).await {
        return response;
    }
    let mut violations = Vec::new();
    let event = json_body(&headers, &body, &mut violations);
    if chars(&event["routing_key"]) != 32 {
        violations.push("routing_key must be the 32-character integration key".to_owned());
    }
    let action = event["event_action"].as_str().unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        violations.push(format!(
            "event_action {action:?} is not trigger, acknowledge or resolve"
        ));
    }
    let dedup = event["dedup_key"].as_str().map(str::to_owned);
    if dedup.as_ref().is_some_and(|key| key.len() > 255) {
        violations.push("dedup_key exceeds 255 characters".to_owned());
    }
    if action != "trigger" && dedup.is_none() {
        violations.push(format!("{action} needs a dedup_key"));
    }
    if action == "trigger" {
        let payload = &event["payload"];
        let summary = chars(&payload["summary"]);
        if summary == 0 || summary > 1024 {
            violations.push("payload.summary needs 1 to 1,024 characters".to_owned());
        }
        if chars(&payload["source"]) == 0 {
            violations.push("payload.source is required".to_owned());
        }
        let severity = payload["severity"].as_str().unwrap_or_default();
        if !["critical", "error", "warning", "info"].contains(&severity) {
            violations.push(format!(
                "payload.severity {severity:?} is not a PagerDuty severity"
            ));
        }
    }
    if !violations.is_empty() {
        record(&shared, path, &headers, &body, violations.clone(), 400);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": violations})),
        )
            .into_response();
    }
    let key = dedup.unwrap_or_else(|| format!("generated-{}", body.len()));
    {
        let mut contract = shared.lock().expect("contract lock");
        if action == "trigger" && contract.alerts.insert(key.clone(), true) != Some(true) {
            contract.incidents += 1;
        }
        if action == "resolve"
            && let Some(open) = contract.alerts.get_mut(&key)
        {
            *open = false;
        }
    }
    record(&shared, path, &headers, &body, Vec::new(), 202);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": key})),
    )
        .into_response()
}

async fn change(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/v2/change/enqueue";
    if let Some(response) = scripted(&shared, path, &headers, &body).await {
        return response;
    }
    let mut violations = Vec::new();
    let event = json_body(&headers, &body, &mut violations);
    if chars(&event["routing_key"]) != 32 {
        violations.push("routing_key must be the 32-character integration key".to_owned());
    }
    let summary = chars(&event["payload"]["summary"]);
    if summary == 0 || summary > 1024 {
        violations.push("payload.summary needs 1 to 1,024 characters".to_owned());
    }
    if event.get("event_action").is_some() {
        violations.push("change events have no event_action".to_owned());
    }
    let status = if violations.is_empty() { 202 } else { 400 };
    record(&shared, path, &headers, &body, violations, status);
    (
        StatusCode::from_u16(status).expect("a status"),
        axum::Json(json!({"status": "success", "message": "Change event processed"})),
    )
        .into_response()
}

async fn hook(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/hook";
    if let Some(response) = scripted(&shared, path, &headers, &body).await {
        return response;
    }
    let mut violations = Vec::new();
    json_body(&headers, &body, &mut violations);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let timestamp = header("x-weblab-timestamp");
    let signature = header("x-weblab-signature");
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(WEBHOOK_KEY.as_bytes()).expect("any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if signature != format!("sha256={expected}") {
        violations.push("the signature does not verify".to_owned());
    }
    let age = jiff::Timestamp::now().as_second() - timestamp.parse::<i64>().unwrap_or(0);
    if age.abs() > 300 {
        violations.push("the timestamp is more than 5 minutes off".to_owned());
    }
    let status = if violations.is_empty() { 204 } else { 401 };
    record(&shared, path, &headers, &body, violations, status);
    StatusCode::from_u16(status)
        .expect("a status")
        .into_response()
}
