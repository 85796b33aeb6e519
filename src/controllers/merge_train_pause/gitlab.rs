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

use reqwest::{Method, RequestBuilder, Url};
use serde::Deserialize;

use crate::{
    api::merge_train_pause::{GitLabProvider, RestoreState},
    outbound::{self, Answer, BodyLimit, Outbound},
};

use super::{
    plan::Report,
    provider::{PauseRequest, ProviderError, TrainProvider},
};

const PROVIDER: &str = "GitLab";
/// Largest answer read from GitLab: a pipeline schedule is a few kilobytes.
const MAX_ANSWER_BYTES: usize = 256 << 10;

/// A GitLab pipeline schedule, reached with a token.
pub struct GitLab {
    outbound: Outbound,
    timeout: Duration,
    schedule_url: Url,
    schedule_id: i64,
    token: String,
}

/// The field of a pipeline schedule the provider reads. Nothing else of
/// GitLab's answer is kept: no part of it reaches a status or an event.
#[derive(Clone, Copy, Debug, Deserialize)]
struct Schedule {
    active: bool,
}

impl GitLab {
    /// A provider for `settings`, authenticating with `token`, calling
    /// through `outbound`.
    pub fn new(
        outbound: &Outbound,
        settings: &GitLabProvider,
        token: String,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        let base = outbound::parse_base(&settings.url).map_err(|error| {
            ProviderError::Settings(format!("spec.provider.gitlab.url: {error}"))
        })?;
        // The project path is one segment: its `/` is percent-encoded.
        let schedule_url = outbound::join(
            &base,
            &[
                "api",
                "v4",
                "projects",
                &settings.project,
                "pipeline_schedules",
                &settings.pipeline_schedule_id.to_string(),
            ],
        );
        Ok(GitLab {
            outbound: outbound.clone(),
            timeout,
            schedule_url,
            schedule_id: settings.pipeline_schedule_id,
            token: token.trim().to_owned(),
        })
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        what: &str,
        prepare: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let answer = self
            .outbound
            .call(
                method,
                url,
                self.timeout,
                BodyLimit::Cap(MAX_ANSWER_BYTES),
                |request| prepare(request.header("PRIVATE-TOKEN", &self.token)),
            )
            .await
            .map_err(|source| ProviderError::Transport {
                provider: PROVIDER,
                what: what.to_owned(),
                source,
            })?;
        if answer.is_success() {
            return Ok(answer);
        }
        let advice = match answer.status {
            401 => "the token was rejected: check the Secret named in tokenSecretRef",
            403 => "the token's user may not do this",
            404 => "no such project or pipeline schedule (or the token cannot see it)",
            409 => "GitLab reports a conflicting change; retrying",
            code if code >= 500 => "GitLab failed; retrying",
            _ => "the request was rejected",
        };
        Err(ProviderError::Status {
            provider: PROVIDER,
            status: answer.status,
            what: what.to_owned(),
            message: format!("{advice} ({})", answer.describe()),
        })
    }

    async fn read(&self) -> Result<Schedule, ProviderError> {
        let what = format!("reading pipeline schedule {}", self.schedule_id);
        let answer = self
            .send(Method::GET, self.schedule_url.clone(), &what, |r| r)
            .await?;
        // The parser's error quotes the answer: only its kind is told.
        serde_json::from_slice(&answer.body).map_err(|_| ProviderError::Unconfirmed {
            provider: PROVIDER,
            message: format!(
                "{what}: the answer is not a pipeline schedule ({}); check spec.provider.gitlab.url",
                answer.describe()
            ),
        })
    }

    async fn edit(&self, active: bool) -> Result<(), ProviderError> {
        let what = format!(
            "setting pipeline schedule {} active={active}",
            self.schedule_id
        );
        let body = serde_json::json!({ "active": active });
        self.send(Method::PUT, self.schedule_url.clone(), &what, |request| {
            request.json(&body)
        })
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
                let url = outbound::join(&self.schedule_url, &["take_ownership"]);
                self.send(Method::POST, url, &what, |r| r)
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

    fn describe(&self) -> String {
        format!("pipeline schedule {}", self.schedule_id)
    }

    async fn change(&self, active: bool, verb: &str) -> Result<Report, ProviderError> {
        let before = self.read().await?;
        if before.active == active {
            return Ok(Report {
                active: Some(active),
                restore: None,
                message: format!("{} was already {verb}", self.describe()),
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
            message: format!("{} is now {verb}{ownership}", self.describe()),
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
                self.describe(),
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
                    message: format!("{} {why}", self.describe()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{api::merge_train_pause::GitLabProvider, outbound::Outbound};

    fn provider(url: &str, project: &str) -> Result<super::GitLab, super::ProviderError> {
        let settings: GitLabProvider = serde_json::from_value(serde_json::json!({
            "url": url,
            "project": project,
            "pipelineScheduleId": 7,
            "tokenSecretRef": {"name": "gitlab", "key": "token"},
        }))
        .expect("valid settings");
        let outbound = Outbound::new(Vec::new()).expect("outbound");
        super::GitLab::new(
            &outbound,
            &settings,
            "token".to_owned(),
            std::time::Duration::from_secs(1),
        )
    }

    #[test]
    fn project_paths_are_encoded_as_one_segment() {
        let gitlab = provider("https://gitlab.example.com/", "platform/graphql-api").expect("ok");
        assert_eq!(
            gitlab.schedule_url.as_str(),
            "https://gitlab.example.com/api/v4/projects/platform%2Fgraphql-api/pipeline_schedules/7"
        );
        let gitlab = provider("https://gitlab.example.com/gl", "a b?c#d").expect("ok");
        assert_eq!(
            gitlab.schedule_url.as_str(),
            "https://gitlab.example.com/gl/api/v4/projects/a%20b%3Fc%23d/pipeline_schedules/7"
        );
    }

    #[test]
    fn a_url_that_would_swallow_the_path_is_refused() {
        for url in ["https://internal/secret?", "https://internal/secret#"] {
            let error = provider(url, "p").err().expect("refused");
            assert_eq!(error.reason(), "InvalidSettings", "{url}: {error}");
        }
    }
}
