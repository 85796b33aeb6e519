//! The webhook provider: POSTs `{"action": "pause" | "resume", ...}` as JSON
//! to a URL, signed so that the receiver can tell it came from the operator
//! and is fresh.
//!
//! Headers:
//! - `X-Weblab-Timestamp`: Unix seconds when the request was signed;
//! - `X-Weblab-Signature`: `sha256=` and the lower-case hex HMAC-SHA256, keyed
//!   with the Secret's value, of `timestamp + "." + body`.
//!
//! A receiver recomputes the signature over the raw body, compares it in
//! constant time, rejects timestamps outside a few minutes of its clock, and
//! remembers the signatures it accepted within that window to reject a
//! replay. Each attempt is signed anew, and the body carries `sentAt` with
//! milliseconds, so retries are distinct requests. Delivery is at least
//! once: a receiver may see the same action twice and should treat it as
//! the same state.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use reqwest::{Method, Url};

use crate::{
    api::merge_train_pause::RestoreState,
    outbound::{self, BodyLimit, Outbound},
};

use super::{
    plan::Report,
    provider::{PauseRequest, ProviderError, TrainProvider},
};

const PROVIDER: &str = "Webhook";
/// The header with the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Weblab-Timestamp";
/// The header with the signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Weblab-Signature";

/// Attempts per call before the call fails (and the controller backs off).
const ATTEMPTS: u32 = 3;
/// The wait after the first failed attempt; doubled after each.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// `sha256=` and the hex HMAC-SHA256 of `timestamp + "." + body` under `key`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256=");
    for byte in digest.iter() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A signed HTTP endpoint.
pub struct Webhook {
    outbound: Outbound,
    timeout: Duration,
    url: Url,
    key: Vec<u8>,
}

impl Webhook {
    /// A webhook to `url` signed with `key`, called through `outbound`.
    pub fn new(
        outbound: &Outbound,
        url: &str,
        key: Vec<u8>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        if key.is_empty() {
            return Err(ProviderError::Settings(
                "the webhook's signing key is empty".to_owned(),
            ));
        }
        let url = outbound::parse_target(url).map_err(|error| {
            ProviderError::Settings(format!("spec.provider.webhook.url: {error}"))
        })?;
        Ok(Webhook {
            outbound: outbound.clone(),
            timeout,
            url,
            key,
        })
    }

    fn body(action: &str, request: &PauseRequest) -> serde_json::Value {
        serde_json::json!({
            "action": action,
            "train": request.train,
            "reason": request.reason,
            "ticket": request.ticket,
            "expiresAt": request.expires_at,
            "pause": {"namespace": request.namespace, "name": request.name},
            "sentAt": Timestamp::now().round(jiff::Unit::Millisecond).unwrap_or_else(|_| Timestamp::now()).to_string(),
        })
    }

    async fn attempt(&self, action: &str, request: &PauseRequest) -> Result<u16, ProviderError> {
        let what = format!("{action} of train {}", request.train);
        let body = serde_json::to_vec(&Self::body(action, request))
            .map_err(|error| ProviderError::Settings(error.to_string()))?;
        let timestamp = Timestamp::now().as_second();
        let signature = sign(&self.key, timestamp, &body);
        // Only the status matters: the answer's body is never read.
        let answer = self
            .outbound
            .call(
                Method::POST,
                self.url.clone(),
                self.timeout,
                BodyLimit::Ignore,
                |request| {
                    request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(TIMESTAMP_HEADER, timestamp.to_string())
                        .header(SIGNATURE_HEADER, signature)
                        .body(body)
                },
            )
            .await
            .map_err(|source| ProviderError::Transport {
                provider: PROVIDER,
                what: what.clone(),
                source,
            })?;
        if answer.is_success() {
            return Ok(answer.status);
        }
        Err(ProviderError::Status {
            provider: PROVIDER,
            status: answer.status,
            what,
            message: format!("the receiver refused ({})", answer.content_type),
        })
    }

    /// Sends `action`, retrying with backoff; the last error if every
    /// attempt fails.
    async fn deliver(&self, action: &str, request: &PauseRequest) -> Result<Report, ProviderError> {
        let mut wait = FIRST_RETRY;
        let mut attempt = 1;
        loop {
            match self.attempt(action, request).await {
                Ok(status) => {
                    return Ok(Report {
                        active: Some(action == "resume"),
                        restore: None,
                        message: format!(
                            "{} accepted {action} ({status}) on attempt {attempt}",
                            self.url
                        ),
                    });
                }
                Err(error) if attempt >= ATTEMPTS => return Err(error),
                Err(error) => {
                    tracing::debug!(%error, attempt, "webhook attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }
}

impl TrainProvider for Webhook {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn prepare(&self, _: &PauseRequest) -> Result<Report, ProviderError> {
        // The receiver holds the train's state; nothing to read first.
        Ok(Report {
            active: None,
            restore: None,
            message: format!("pausing through {}", self.url),
        })
    }

    async fn pause(&self, request: &PauseRequest) -> Result<Report, ProviderError> {
        self.deliver("pause", request).await
    }

    async fn resume(
        &self,
        request: &PauseRequest,
        _: Option<&RestoreState>,
    ) -> Result<Report, ProviderError> {
        self.deliver("resume", request).await
    }
}

#[cfg(test)]
mod tests {
    /// The digest was computed independently with
    /// `printf '1700000000.{}' | openssl dgst -sha256 -hmac key`.
    #[test]
    fn signs_with_hmac_sha256() {
        assert_eq!(
            super::sign(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
