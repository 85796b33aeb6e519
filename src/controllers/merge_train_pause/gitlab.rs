//! The GitLab provider: the merge train is a pipeline schedule, paused by
//! setting its `active` flag to false through the REST API v4 and restored
//! to what it was before.
//!
//! Endpoints (GitLab's "Pipeline schedules API"):
//! - `GET  /api/v4/projects/:id/pipeline_schedules/:schedule_id`
//! - `PUT  /api/v4/projects/:id/pipeline_schedules/:schedule_id` with `active`
//! - `POST /api/v4/projects/:id/pipeline_schedules/:schedule_id/take_ownership`
//!
//! `:id` is the numeric id or the URL-encoded full path (`group%2Fproject`);
//! the token goes in the `PRIVATE-TOKEN` header.
//!
//! **Ownership rule.** GitLab lets only a schedule's owner edit it. Taking
//! ownership changes whose identity runs the scheduled pipelines, so the
//! provider never does it up front: only when an edit answers 403 does it
//! take ownership (which needs the Maintainer role) and repeat the edit,
//! once. If taking ownership is refused too, the call fails with a message
//! saying which role the token needs. Every change is read back to confirm.

use std::time::Duration;

use serde::Deserialize;

use crate::api::merge_train_pause::{GitLabProvider, RestoreState};

use super::{
    plan::Report,
    provider::{PauseRequest, ProviderError, TrainProvider},
};

const PROVIDER: &str = "GitLab";

/// A GitLab pipeline schedule, reached with a token.
pub struct GitLab {
    client: reqwest::Client,
    schedule_url: String,
    schedule_id: i64,
    token: String,
}

/// The fields of a pipeline schedule the provider reads.
#[derive(Clone, Debug, Deserialize)]
struct Schedule {
    active: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    owner: Option<Owner>,
}

#[derive(Clone, Debug, Deserialize)]
struct Owner {
    username: String,
}

/// Percent-encodes a project id or path for one URL path segment: every
/// byte but RFC 3986's unreserved characters.
pub fn encode_project(project: &str) -> String {
    let mut encoded = String::with_capacity(project.len());
    for byte in project.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl GitLab {
    /// A provider for `settings`, authenticating with `token`.
    pub fn new(
        settings: &GitLabProvider,
        token: String,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let client = crate::outbound::client(timeout)
            .map_err(|error| ProviderError::Settings(error.to_string()))?;
        let schedule_url = format!(
            "{}/api/v4/projects/{}/pipeline_schedules/{}",
            settings.url.trim_end_matches('/'),
            encode_project(&settings.project),
            settings.pipeline_schedule_id
        );
        Ok(GitLab {
            client,
            schedule_url,
            schedule_id: settings.pipeline_schedule_id,
            token: token.trim().to_owned(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ProviderError> {
        let response = request
            .header("PRIVATE-TOKEN", &self.token)
            .send()
            .await
            .map_err(|source| ProviderError::Transport {
                provider: PROVIDER,
                what: what.to_owned(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let said = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|json| {
                json.get("message")
                    .or_else(|| json.get("error"))
                    .map(|m| m.to_string())
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        let advice = match status.as_u16() {
            401 => "the token was rejected: check the Secret named in tokenSecretRef",
            403 => "the token's user may not do this",
            404 => "no such project or pipeline schedule (or the token cannot see it)",
            409 => "GitLab reports a conflicting change; retrying",
            code if code >= 500 => "GitLab failed; retrying",
            _ => "the request was rejected",
        };
        Err(ProviderError::Status {
            provider: PROVIDER,
            status: status.as_u16(),
            what: what.to_owned(),
            message: format!("{advice} ({said})"),
        })
    }

    async fn read(&self) -> Result<Schedule, ProviderError> {
        let what = format!("reading pipeline schedule {}", self.schedule_id);
        let response = self
            .send(self.client.get(&self.schedule_url), &what)
            .await?;
        response
            .json()
            .await
            .map_err(|source| ProviderError::Transport {
                provider: PROVIDER,
                what,
                source,
            })
    }

    async fn edit(&self, active: bool) -> Result<(), ProviderError> {
        let what = format!(
            "setting pipeline schedule {} active={active}",
            self.schedule_id
        );
        let body = serde_json::json!({ "active": active });
        self.send(self.client.put(&self.schedule_url).json(&body), &what)
            .await
            .map(drop)
    }

    /// Sets `active`, taking ownership when the edit is refused (see the
    /// module documentation), and reads it back. Returns the schedule and
    /// whether ownership was taken.
    async fn set_active(&self, active: bool) -> Result<(Schedule, bool), ProviderError> {
        let took_ownership = match self.edit(active).await {
            Ok(()) => false,
            Err(error) if error.status() == Some(403) => {
                let what = format!("taking ownership of pipeline schedule {}", self.schedule_id);
                let url = format!("{}/take_ownership", self.schedule_url);
                self.send(self.client.post(url), &what)
                    .await
                    .map_err(|error| match error {
                        ProviderError::Status {
                            status: 403, what, ..
                        } => ProviderError::Status {
                            provider: PROVIDER,
                            status: 403,
                            what,
                            message: "the token's user neither owns the schedule nor may take \
                                      ownership of it: it needs the Maintainer role"
                                .to_owned(),
                        },
                        other => other,
                    })?;
                self.edit(active).await?;
                true
            }
            Err(error) => return Err(error),
        };
        let schedule = self.read().await?;
        if schedule.active != active {
            return Err(ProviderError::Unconfirmed {
                provider: PROVIDER,
                message: format!(
                    "pipeline schedule {} accepted active={active} but reads back active={}",
                    self.schedule_id, schedule.active
                ),
            });
        }
        Ok((schedule, took_ownership))
    }

    fn describe(&self, schedule: &Schedule) -> String {
        let mut text = format!("pipeline schedule {}", self.schedule_id);
        if let Some(description) = &schedule.description {
            text.push_str(&format!(" ({description})"));
        }
        if let Some(owner) = &schedule.owner {
            text.push_str(&format!(", owned by {}", owner.username));
        }
        text
    }

    async fn change(&self, active: bool, verb: &str) -> Result<Report, ProviderError> {
        let before = self.read().await?;
        if before.active == active {
            return Ok(Report {
                active: Some(active),
                restore: None,
                message: format!("{} was already {verb}", self.describe(&before)),
            });
        }
        let (after, took_ownership) = self.set_active(active).await?;
        let ownership = if took_ownership {
            "; took ownership first, as the edit was refused"
        } else {
            ""
        };
        Ok(Report {
            active: Some(after.active),
            restore: None,
            message: format!("{} is now {verb}{ownership}", self.describe(&after)),
        })
    }
}

impl TrainProvider for GitLab {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn prepare(&self, _: &PauseRequest) -> Result<Report, ProviderError> {
        let schedule = self.read().await?;
        Ok(Report {
            active: Some(schedule.active),
            restore: Some(RestoreState {
                active: schedule.active,
            }),
            message: format!(
                "{} is {}",
                self.describe(&schedule),
                if schedule.active {
                    "active"
                } else {
                    "inactive"
                }
            ),
        })
    }

    async fn pause(&self, _: &PauseRequest) -> Result<Report, ProviderError> {
        self.change(false, "inactive").await
    }

    async fn resume(
        &self,
        _: &PauseRequest,
        restore: Option<&RestoreState>,
    ) -> Result<Report, ProviderError> {
        match restore {
            Some(RestoreState { active: true }) => self.change(true, "active").await,
            // Inactive before the pause, or never recorded because the
            // pause never got as far as changing it: leave it as it is.
            Some(RestoreState { active: false }) | None => {
                let schedule = self.read().await?;
                let why = if restore.is_some() {
                    "was inactive before the pause; left inactive"
                } else {
                    "was never changed by this pause; left as it is"
                };
                Ok(Report {
                    active: Some(schedule.active),
                    restore: None,
                    message: format!("{} {why}", self.describe(&schedule)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn project_paths_are_encoded_as_one_segment() {
        assert_eq!(
            super::encode_project("platform/graphql-api"),
            "platform%2Fgraphql-api"
        );
        assert_eq!(super::encode_project("42"), "42");
        assert_eq!(super::encode_project("a b/c.d"), "a%20b%2Fc.d");
    }
}
