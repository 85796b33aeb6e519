//! Delivery of one message to one sink: credentials read from the
//! notifier's Secrets (a `get` by name, in its namespace), the call made
//! through the outbound policy (deadline, capped answer, no redirects, no
//! loopback unless allowed), and retried with exponential backoff and
//! jitter; a `429` waits as long as its `Retry-After` asks (capped). Only
//! the status of an answer is read: its body never reaches status, events
//! or logs.

use std::{
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use jiff::Timestamp;
use kube::Client;
use reqwest::{Method, Url};

use crate::{
    api::weblab_notifier::{PagerDutySeverity, Sink},
    controllers::{merge_train_pause::webhook, read_secret_key},
    outbound::{self, BodyLimit, Outbound, OutboundError},
};

use super::message::Message;

/// The header that carries a message's id, the same on every attempt and
/// from every leader: receivers deduplicate on it.
pub const DELIVERY_HEADER: &str = "X-Weblab-Delivery";

/// Attempts per delivery before it counts as failed.
const ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt, doubled after each.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between attempts, `Retry-After` included.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// A sink with its credentials read.
pub enum Target {
    /// A Slack incoming webhook.
    Slack(Url),
    /// A Teams workflow webhook.
    Teams(Url),
    /// A PagerDuty integration.
    PagerDuty {
        /// The Events API's base URL.
        base: Url,
        /// The integration's routing key.
        routing_key: String,
        /// The severity to send, if fixed.
        severity: Option<PagerDutySeverity>,
    },
    /// A signed webhook.
    Webhook {
        /// Where to POST.
        url: Url,
        /// The HMAC key.
        key: Vec<u8>,
    },
}

impl Target {
    /// The sink's type, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Slack(_) => "slack",
            Target::Teams(_) => "teams",
            Target::PagerDuty { .. } => "pagerduty",
            Target::Webhook { .. } => "webhook",
        }
    }
}

/// The type of `sink`, for metrics.
pub fn kind_of(sink: &Sink) -> &'static str {
    if sink.slack.is_some() {
        "slack"
    } else if sink.teams.is_some() {
        "teams"
    } else if sink.pagerduty.is_some() {
        "pagerduty"
    } else {
        "webhook"
    }
}

/// Reads `sink`'s credentials from Secrets in `namespace`; the error says
/// what to fix.
pub async fn target(
    client: &Client,
    namespace: &str,
    sink: &Sink,
    events_url: &Url,
) -> Result<Target, String> {
    let webhook_url = |text: String, field: &str| {
        // The URL is a credential: the error never repeats it.
        outbound::parse_target(&text).map_err(|error| {
            format!(
                "sink {}: the URL in {field} is not usable ({})",
                sink.name,
                error.reason()
            )
        })
    };
    if let Some(slack) = &sink.slack {
        let text = read_secret_key(client, namespace, &slack.webhook_secret_ref).await?;
        return webhook_url(text, "slack.webhookSecretRef").map(Target::Slack);
    }
    if let Some(teams) = &sink.teams {
        let text = read_secret_key(client, namespace, &teams.webhook_secret_ref).await?;
        return webhook_url(text, "teams.webhookSecretRef").map(Target::Teams);
    }
    if let Some(pagerduty) = &sink.pagerduty {
        let routing_key =
            read_secret_key(client, namespace, &pagerduty.routing_key_secret_ref).await?;
        if routing_key.is_empty() {
            return Err(format!("sink {}: the routing key is empty", sink.name));
        }
        return Ok(Target::PagerDuty {
            base: events_url.clone(),
            routing_key,
            severity: pagerduty_severity(sink),
        });
    }
    if let Some(hook) = &sink.webhook {
        let key = read_secret_key(client, namespace, &hook.secret_ref).await?;
        if key.is_empty() {
            return Err(format!("sink {}: the signing key is empty", sink.name));
        }
        let url = outbound::parse_target(&hook.url)
            .map_err(|error| format!("sink {}: webhook.url: {error}", sink.name))?;
        return Ok(Target::Webhook {
            url,
            key: key.into_bytes(),
        });
    }
    Err(format!("sink {} names no destination", sink.name))
}

fn pagerduty_severity(sink: &Sink) -> Option<PagerDutySeverity> {
    sink.pagerduty.as_ref().and_then(|p| p.severity)
}

/// Why a delivery failed, in the operator's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// A short reason.
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

enum Attempt {
    Accepted,
    Retry(Failure, Option<Duration>),
    GiveUp(Failure),
}

/// Sends `message` to `target`, retrying; the attempts it took, or why
/// the last one failed. `on_retry` is told of each failed attempt that is
/// tried again.
pub async fn deliver(
    outbound: &Outbound,
    target: &Target,
    message: &Message,
    timeout: Duration,
    mut on_retry: impl FnMut(),
) -> Result<u32, Failure> {
    let spread = RandomState::new();
    let mut attempt = 1;
    loop {
        let failure = match send(outbound, target, message, timeout).await {
            Attempt::Accepted => return Ok(attempt),
            Attempt::GiveUp(failure) => return Err(failure),
            Attempt::Retry(failure, _) if attempt >= ATTEMPTS => return Err(failure),
            Attempt::Retry(failure, retry_after) => (failure, retry_after),
        };
        let jitter = spread.hash_one((&message.pending.id, attempt)) as f64 / u64::MAX as f64;
        let backoff = FIRST_RETRY
            .saturating_mul(1 << (attempt - 1).min(16))
            .mul_f64(0.8 + 0.2 * jitter);
        let wait = failure
            .1
            .map_or(backoff, |asked| asked.max(backoff))
            .min(MAX_RETRY);
        tracing::debug!(
            id = %message.pending.id,
            sink = target.kind(),
            attempt,
            reason = failure.0.reason,
            wait = ?wait,
            "delivery attempt failed; retrying"
        );
        on_retry();
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn send(
    outbound: &Outbound,
    target: &Target,
    message: &Message,
    timeout: Duration,
) -> Attempt {
    let id = message.pending.id.clone();
    let (url, body, signature) = match target {
        Target::Slack(url) => (url.clone(), message.slack(), None),
        Target::Teams(url) => (url.clone(), message.teams(), None),
        Target::PagerDuty {
            base,
            routing_key,
            severity,
        } => {
            let (path, body) = message.pagerduty(routing_key, *severity);
            (outbound::join(base, path), body, None)
        }
        Target::Webhook { url, key } => (url.clone(), message.webhook(Timestamp::now()), Some(key)),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(body) => body,
        Err(error) => {
            return Attempt::GiveUp(Failure {
                reason: "InvalidMessage",
                message: format!("cannot encode the message: {error}"),
            });
        }
    };
    let signed = signature.map(|key| {
        let timestamp = Timestamp::now().as_second();
        (timestamp, webhook::sign(key, timestamp, &body))
    });
    let answer = outbound
        .call(Method::POST, url, timeout, BodyLimit::Ignore, |request| {
            let mut request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, id);
            if let Some((timestamp, signature)) = signed {
                request = request
                    .header(webhook::TIMESTAMP_HEADER, timestamp.to_string())
                    .header(webhook::SIGNATURE_HEADER, signature);
            }
            request.body(body)
        })
        .await;
    match answer {
        Ok(answer) if answer.is_success() => Attempt::Accepted,
        Ok(answer) => {
            let failure = Failure {
                reason: "Refused",
                message: format!("the {} sink answered HTTP {}", target.kind(), answer.status),
            };
            // Throttled, timed out or failing on the far side: worth another
            // attempt. Any other refusal repeats itself.
            if answer.status == 429 || answer.status == 408 || answer.status >= 500 {
                Attempt::Retry(failure, answer.retry_after)
            } else {
                Attempt::GiveUp(failure)
            }
        }
        Err(error) => {
            let failure = Failure {
                reason: error.reason(),
                message: format!("the {} sink: {error}", target.kind()),
            };
            match error {
                OutboundError::InvalidUrl { .. } | OutboundError::Refused { .. } => {
                    Attempt::GiveUp(failure)
                }
                _ => Attempt::Retry(failure, None),
            }
        }
    }
}
