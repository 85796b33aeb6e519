//! The providers that pause a merge train, behind one small trait: GitLab
//! (a pipeline schedule's `active` flag), a signed webhook, and the gate
//! (no call at all: the gate endpoint reads the pauses from the cache).

use std::future::Future;

use crate::{api::merge_train_pause::RestoreState, outbound::OutboundError};

use super::{gitlab::GitLab, plan::Report, webhook::Webhook};

/// What a provider is told about the pause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseRequest {
    /// The pause's namespace.
    pub namespace: String,
    /// The pause's name.
    pub name: String,
    /// The train.
    pub train: String,
    /// Why it is paused.
    pub reason: String,
    /// The ticket link.
    pub ticket: Option<String>,
    /// When the pause ends by the clock, RFC 3339.
    pub expires_at: Option<String>,
}

/// Why a provider call failed. Every failure is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an error status.
    #[error("{provider} answered {status} to {what}: {message}")]
    Status {
        /// Which provider.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// The request, in words.
        what: String,
        /// What to do about it, and the kind of answer (status, content
        /// type, size): never what the provider said.
        message: String,
    },
    /// The provider could not be reached, its address is refused, or its
    /// answer is a redirect or too large.
    #[error("{provider} cannot be reached for {what}: {source}")]
    Transport {
        /// Which provider.
        provider: &'static str,
        /// The request, in words.
        what: String,
        /// What failed.
        #[source]
        source: OutboundError,
    },
    /// The change was accepted but reading it back shows otherwise.
    #[error("{provider}: {message}")]
    Unconfirmed {
        /// Which provider.
        provider: &'static str,
        /// What was read back.
        message: String,
    },
    /// The provider's settings cannot be used (a missing Secret or key).
    #[error("{0}")]
    Settings(String),
}

impl ProviderError {
    /// A short UpperCamelCase reason, for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::Status { status: 401, .. } => "Unauthorized",
            ProviderError::Status { status: 403, .. } => "Forbidden",
            ProviderError::Status { status: 404, .. } => "NotFound",
            ProviderError::Status { status: 409, .. } => "Conflict",
            ProviderError::Status { status, .. } if *status >= 500 => "ServerError",
            ProviderError::Status { .. } => "Rejected",
            ProviderError::Transport { source, .. } => source.reason(),
            ProviderError::Unconfirmed { .. } => "Unconfirmed",
            ProviderError::Settings(_) => "InvalidSettings",
        }
    }

    /// The HTTP status the provider answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Pauses and resumes one merge train. Calls are idempotent: the controller
/// repeats one whose outcome it could not record.
pub trait TrainProvider {
    /// The provider's name, for metrics and messages.
    fn name(&self) -> &'static str;

    /// Reads what must be restored on resume; changes nothing.
    fn prepare(
        &self,
        request: &PauseRequest,
    ) -> impl Future<Output = Result<Report, ProviderError>> + Send;

    /// Pauses the train and confirms it.
    fn pause(
        &self,
        request: &PauseRequest,
    ) -> impl Future<Output = Result<Report, ProviderError>> + Send;

    /// Puts the train back as `restore` says (as it was before the pause).
    fn resume(
        &self,
        request: &PauseRequest,
        restore: Option<&RestoreState>,
    ) -> impl Future<Output = Result<Report, ProviderError>> + Send;
}

/// The gate alone: CI jobs query `/v1/gates/{namespace}/{train}`, which is
/// closed while the pause holds; there is nothing to call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gate;

impl TrainProvider for Gate {
    fn name(&self) -> &'static str {
        "Gate"
    }

    async fn prepare(&self, _: &PauseRequest) -> Result<Report, ProviderError> {
        Ok(Report {
            active: Some(true),
            restore: None,
            message: "the gate is open".to_owned(),
        })
    }

    async fn pause(&self, request: &PauseRequest) -> Result<Report, ProviderError> {
        Ok(Report {
            active: Some(false),
            restore: None,
            message: format!(
                "the gate /v1/gates/{}/{} answers 423",
                request.namespace, request.train
            ),
        })
    }

    async fn resume(
        &self,
        request: &PauseRequest,
        _: Option<&RestoreState>,
    ) -> Result<Report, ProviderError> {
        Ok(Report {
            active: Some(true),
            restore: None,
            message: format!(
                "this pause no longer holds the gate /v1/gates/{}/{}",
                request.namespace, request.train
            ),
        })
    }
}

/// One of the providers, chosen by `spec.provider.type`.
pub enum AnyProvider {
    /// The gate alone.
    Gate(Gate),
    /// A GitLab pipeline schedule.
    GitLab(GitLab),
    /// A signed webhook.
    Webhook(Webhook),
}

impl TrainProvider for AnyProvider {
    fn name(&self) -> &'static str {
        match self {
            AnyProvider::Gate(p) => p.name(),
            AnyProvider::GitLab(p) => p.name(),
            AnyProvider::Webhook(p) => p.name(),
        }
    }

    async fn prepare(&self, request: &PauseRequest) -> Result<Report, ProviderError> {
        match self {
            AnyProvider::Gate(p) => p.prepare(request).await,
            AnyProvider::GitLab(p) => p.prepare(request).await,
            AnyProvider::Webhook(p) => p.prepare(request).await,
        }
    }

    async fn pause(&self, request: &PauseRequest) -> Result<Report, ProviderError> {
        match self {
            AnyProvider::Gate(p) => p.pause(request).await,
            AnyProvider::GitLab(p) => p.pause(request).await,
            AnyProvider::Webhook(p) => p.pause(request).await,
        }
    }

    async fn resume(
        &self,
        request: &PauseRequest,
        restore: Option<&RestoreState>,
    ) -> Result<Report, ProviderError> {
        match self {
            AnyProvider::Gate(p) => p.resume(request, restore).await,
            AnyProvider::GitLab(p) => p.resume(request, restore).await,
            AnyProvider::Webhook(p) => p.resume(request, restore).await,
        }
    }
}
