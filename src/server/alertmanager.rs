//! The Alertmanager webhook receiver: `POST /v1/webhooks/alertmanager`.
//!
//! Every replica receives: the alerts a notification carries are the state,
//! so a follower records them as well as the leader would. A request must
//! carry `Authorization: Bearer <token>`, the token kept in a Secret
//! (`--webhook-token-secret`); anything else is refused before the body is
//! read. The body must be sent as `application/json`, as Alertmanager does.
//! Only alarms whose matchers select an alert of the notification are
//! touched; with a namespace label configured
//! (`--alertmanager-namespace-label`), only alarms in the namespace that
//! label names.
//!
//! A 200 means every matching alarm's status write has landed. Writes to one
//! alarm are queued and merged in-process ([`AlertInbox`]); the whole
//! recording is bounded by a deadline, past which the answer is 503 with
//! `Retry-After`, so that Alertmanager sends the notification again.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
    routing::post,
};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    notification::Notification,
    request::{BodyError, declares_json, read_body, to_json_response},
};
use crate::metrics::Metrics;

/// Records what a notification says on the alarms it concerns (the alarm
/// controller's intake implements it): resolves, once every write has
/// landed, to how many alarms were touched, or why they could not be.
pub trait Intake: Send + Sync + 'static {
    /// Records `notification`.
    fn record(&self, notification: &Notification) -> BoxFuture<'static, Result<usize, String>>;
}

/// The receiver's path.
pub const PATH: &str = "/v1/webhooks/alertmanager";
/// How often the token is read again from its Secret.
const TOKEN_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest notification accepted: a group of 5,000 alerts with labels and
/// annotations of 1.5 KB each. Only read once the bearer token is checked.
const MAX_NOTIFICATION_BYTES: usize = 8 << 20;

/// Where the webhook's bearer token is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSecret {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
    /// The key holding the token.
    pub key: String,
}

/// The current webhook token, kept up to date from its Secret; `None` while
/// the Secret is missing (every request is then refused).
#[derive(Clone, Default)]
pub struct WebhookToken(Arc<RwLock<Option<Arc<[u8]>>>>);

impl WebhookToken {
    fn set(&self, token: Option<Arc<[u8]>>) {
        if let Ok(mut current) = self.0.write() {
            *current = token;
        }
    }

    fn get(&self) -> Option<Arc<[u8]>> {
        self.0.read().ok().and_then(|current| current.clone())
    }

    /// Reads the Secret now and then every [`TOKEN_REFRESH`] until
    /// `shutdown`, so that a rotated token takes effect without a restart.
    /// A `get` by name: the operator never lists or watches Secrets.
    pub async fn follow(
        self,
        client: kube::Client,
        secret: TokenSecret,
        shutdown: CancellationToken,
    ) {
        let api: Api<Secret> = Api::namespaced(client, &secret.namespace);
        let mut reported = None;
        loop {
            let (token, problem) = match api.get_opt(&secret.name).await {
                Ok(Some(found)) => match token_of(&found, &secret.key) {
                    Some(token) => (Some(token), None),
                    None => (None, Some(format!("has no non-empty key {:?}", secret.key))),
                },
                Ok(None) => (None, Some("does not exist".to_owned())),
                // Keep the last token through a passing API error.
                Err(error) => (self.get(), Some(format!("cannot be read: {error}"))),
            };
            if problem != reported {
                if let Some(problem) = &problem {
                    tracing::warn!(
                        secret = %format!("{}/{}", secret.namespace, secret.name),
                        "the webhook token Secret {problem}; notifications are refused without a token"
                    );
                }
                reported = problem;
            }
            self.set(token);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TOKEN_REFRESH) => {}
            }
        }
    }
}

pub(super) fn token_of(secret: &Secret, key: &str) -> Option<Arc<[u8]>> {
    let bytes = secret.data.as_ref()?.get(key)?.0.as_slice();
    let text = std::str::from_utf8(bytes).ok()?.trim();
    (!text.is_empty()).then(|| Arc::from(text.as_bytes()))
}

/// How notifications are recorded: set by the operator's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookOptions {
    /// How long recording one notification may take before the answer is
    /// 503 (`--webhook-record-timeout`).
    pub record_timeout: Duration,
    /// When set, an alarm only matches alerts whose label of this name
    /// equals the alarm's namespace (`--alertmanager-namespace-label`).
    pub namespace_label: Option<String>,
}

/// What the receiver needs.
#[derive(Clone)]
pub struct Receiver {
    /// `weblab_webhook_requests_total`, among others.
    pub metrics: Metrics,
    /// Where notifications are recorded.
    pub intake: Arc<dyn Intake>,
    /// How notifications are recorded.
    pub options: WebhookOptions,
    /// The expected bearer token.
    pub token: WebhookToken,
    /// Whether the caches have synced.
    pub ready: Arc<AtomicBool>,
}

/// The receiver's route.
pub(crate) fn routes(receiver: Receiver) -> Router {
    Router::new()
        .route(PATH, post(notify))
        .layer(DefaultBodyLimit::max(MAX_NOTIFICATION_BYTES))
        .with_state(receiver)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    alerts: usize,
    alarms: usize,
}

#[derive(Serialize)]
struct Refusal<'a> {
    error: &'a str,
}

pub(super) fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = to_json_response(status, &Refusal { error: message });
    let headers = response.headers_mut();
    match status {
        StatusCode::UNAUTHORIZED => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INTERNAL_SERVER_ERROR => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// Compares in time independent of where the inputs differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

pub(super) fn authorized(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_secret(given, token))
}

async fn notify(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (result, response) = handle(&receiver, &headers, body).await;
    receiver
        .metrics
        .webhook_requests
        .with_label_values(&[result])
        .inc();
    response
}

/// The result label for the metric, and the response.
async fn handle(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (&'static str, Response) {
    let Some(token) = receiver.token.get() else {
        return (
            "unconfigured",
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the webhook token is not available: start the operator with --webhook-token-secret and check that the Secret and key exist",
            ),
        );
    };
    if !authorized(headers, &token) {
        return (
            "unauthorized",
            refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: set http_config.authorization in the Alertmanager receiver",
            ),
        );
    }
    if declares_json(headers) != Some(true) {
        return (
            "malformed",
            refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the notification must be sent with Content-Type: application/json, as Alertmanager's webhook receiver does",
            ),
        );
    }
    let body = match read_body(body) {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return (
                "too_large",
                refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the notification is larger than 8 MiB: set max_alerts in the Alertmanager receiver (truncated alerts are still counted)",
                ),
            );
        }
        Err(error) => return ("malformed", refuse(error.status(), &error.to_string())),
    };
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(error) => {
            return (
                "malformed",
                refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("not an Alertmanager webhook notification: {error}"),
                ),
            );
        }
    };
    if let Err(error) = notification.validate() {
        return (
            "malformed",
            refuse(StatusCode::UNPROCESSABLE_ENTITY, &error),
        );
    }
    if !receiver.ready.load(Ordering::Acquire) {
        return (
            "unavailable",
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operator's caches are not synced yet; Alertmanager will retry",
            ),
        );
    }

    let deadline = receiver.options.record_timeout;
    let alarms = match tokio::time::timeout(deadline, receiver.intake.record(&notification)).await {
        Ok(Ok(alarms)) => alarms,
        Ok(Err(error)) => {
            return (
                "error",
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "cannot record the alerts on every matching alarm ({error}); Alertmanager will retry"
                    ),
                ),
            );
        }
        Err(_) => {
            return (
                "timeout",
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "the alerts could not be recorded within {}s (is the Kubernetes API server reachable?); Alertmanager will retry",
                        deadline.as_secs_f64()
                    ),
                ),
            );
        }
    };
    (
        "accepted",
        to_json_response(
            StatusCode::OK,
            &Accepted {
                alerts: notification.alerts.len(),
                alarms,
            },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, b"s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&headers, b"s3cret"));
        assert!(!authorized(&headers, b"s3cre"));
        assert!(!authorized(&headers, b"s3cret!"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(&headers, b"s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  s3cret"),
        );
        assert!(!authorized(&headers, b"s3cret"));
    }

    #[test]
    fn tokens_come_trimmed_from_the_secret_key() {
        let mut secret = Secret::default();
        assert!(token_of(&secret, "token").is_none());
        secret.data = Some(
            [(
                "token".to_owned(),
                k8s_openapi::ByteString(b"abc\n".to_vec()),
            )]
            .into(),
        );
        assert_eq!(token_of(&secret, "token").as_deref(), Some(&b"abc"[..]));
        assert!(token_of(&secret, "other").is_none());
        secret.data = Some([("token".to_owned(), k8s_openapi::ByteString(b" \n".to_vec()))].into());
        assert!(
            token_of(&secret, "token").is_none(),
            "an empty token is no token"
        );
    }
}
