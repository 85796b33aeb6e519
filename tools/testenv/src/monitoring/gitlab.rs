//! A GitLab-shaped *contract server*: GitLab cannot run here, so this serves
//! the pipeline-schedule endpoints of GitLab's REST API v4 as its
//! documentation describes them, for the contract tests and the demo.
//!
//! - `GET  /api/v4/projects/:id/pipeline_schedules/:schedule_id`
//! - `PUT  /api/v4/projects/:id/pipeline_schedules/:schedule_id` (JSON body,
//!   `active`)
//! - `POST /api/v4/projects/:id/pipeline_schedules/:schedule_id/take_ownership`
//!
//! Authentication by the `PRIVATE-TOKEN` header; the project id is the
//! URL-encoded full path (`group%2Fproject`), one path segment; errors are
//! `{"message": ...}` with 401, 403, 404 and whatever status a test injects.
//! Only the owner of a schedule may edit it; a Maintainer may take ownership.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::http_server::{HttpRequest, HttpServer, Response};
use crate::Error;

const PREFIX: &str = "/api/v4/projects/";

/// One pipeline schedule as the contract server holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Whether the schedule runs.
    pub active: bool,
    /// The username of its owner, the only one who may edit it.
    pub owner: String,
}

#[derive(Debug, Default)]
struct Contract {
    project: String,
    schedules: BTreeMap<i64, Schedule>,
    /// token -> (username, whether a Maintainer)
    tokens: BTreeMap<String, (String, bool)>,
    /// Statuses to answer instead of the real one, by method, in order.
    failures: VecDeque<(String, u16)>,
    /// Every request: method and raw path.
    log: Vec<String>,
}

/// A running contract server for one project.
#[derive(Debug)]
pub struct GitLabContract {
    contract: Arc<Mutex<Contract>>,
    server: HttpServer,
}

impl GitLabContract {
    /// Serves `project` (its full path, e.g. `platform/graphql-api`) with no
    /// schedules and no tokens yet.
    pub fn serve(project: &str) -> Result<GitLabContract, Error> {
        let contract = Arc::new(Mutex::new(Contract {
            project: project.to_owned(),
            ..Contract::default()
        }));
        let server = HttpServer::serve("gitlab-contract", {
            let contract = Arc::clone(&contract);
            move |request| handle(&mut lock(&contract), &request)
        })?;
        Ok(GitLabContract { contract, server })
    }

    /// `http://127.0.0.1:<port>`, what a GitLab provider's `url` names.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address())
    }

    /// Adds (or replaces) a schedule.
    pub fn add_schedule(&self, id: i64, active: bool, owner: &str) {
        lock(&self.contract).schedules.insert(
            id,
            Schedule {
                active,
                owner: owner.to_owned(),
            },
        );
    }

    /// Accepts `token` as `username`, a Maintainer of the project or not.
    pub fn add_token(&self, token: &str, username: &str, maintainer: bool) {
        lock(&self.contract)
            .tokens
            .insert(token.to_owned(), (username.to_owned(), maintainer));
    }

    /// Stops accepting `token`: GitLab answers 401 to it.
    pub fn remove_token(&self, token: &str) {
        lock(&self.contract).tokens.remove(token);
    }

    /// The schedule `id` as it is now.
    pub fn schedule(&self, id: i64) -> Option<Schedule> {
        lock(&self.contract).schedules.get(&id).cloned()
    }

    /// Answers the next authenticated request with `method` (`GET`, `PUT`,
    /// `POST`) with `status` instead of the real answer.
    pub fn fail_next(&self, method: &str, status: u16) {
        lock(&self.contract)
            .failures
            .push_back((method.to_owned(), status));
    }

    /// Every request so far, as `METHOD /path`.
    pub fn log(&self) -> Vec<String> {
        lock(&self.contract).log.clone()
    }
}

fn lock(contract: &Mutex<Contract>) -> MutexGuard<'_, Contract> {
    contract.lock().unwrap_or_else(PoisonError::into_inner)
}

fn json(status: u16, value: &serde_json::Value) -> Response {
    Response {
        status,
        content_type: "application/json",
        body: value.to_string().into_bytes(),
    }
}

fn error(status: u16, message: &str) -> Response {
    json(status, &serde_json::json!({ "message": message }))
}

fn schedule_json(id: i64, schedule: &Schedule) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "description": "merge train",
        "ref": "refs/heads/main",
        "cron": "*/10 * * * *",
        "cron_timezone": "UTC",
        "active": schedule.active,
        "owner": {"id": 1, "username": schedule.owner, "name": schedule.owner},
    })
}

/// The endpoint a path names: (project, schedule id, whether take_ownership).
fn route(path: &str) -> Option<(String, i64, bool)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (project, rest) = rest.split_once("/pipeline_schedules/")?;
    let (id, take_ownership) = match rest.strip_suffix("/take_ownership") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    Some((percent_decode(project)?, id.parse().ok()?, take_ownership))
}

/// `%XX` escapes decoded; `None` for a malformed escape or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

fn handle(contract: &mut Contract, request: &HttpRequest) -> Response {
    contract
        .log
        .push(format!("{} {}", request.method, request.path()));
    let Some((project, id, take_ownership)) = route(request.path()) else {
        return error(404, "404 Not found");
    };
    let user = request
        .header("PRIVATE-TOKEN")
        .and_then(|token| contract.tokens.get(token).cloned());
    let Some((user, maintainer)) = user else {
        return error(401, "401 Unauthorized");
    };
    if let Some(position) = contract
        .failures
        .iter()
        .position(|(method, _)| *method == request.method)
        && let Some((_, status)) = contract.failures.remove(position)
    {
        return error(status, "injected by the test");
    }
    if project != contract.project {
        return error(404, "404 Project Not Found");
    }
    let Some(schedule) = contract.schedules.get_mut(&id) else {
        return error(404, "404 Pipeline Schedule Not Found");
    };
    match (request.method.as_str(), take_ownership) {
        ("GET", false) => json(200, &schedule_json(id, schedule)),
        ("PUT", false) => {
            if schedule.owner != user {
                return error(403, "403 Forbidden");
            }
            let active = request
                .json()
                .ok()
                .and_then(|body| body.get("active").and_then(serde_json::Value::as_bool));
            let Some(active) = active else {
                return error(400, "active is invalid");
            };
            schedule.active = active;
            json(200, &schedule_json(id, schedule))
        }
        ("POST", true) if maintainer => {
            schedule.owner = user;
            json(201, &schedule_json(id, schedule))
        }
        ("POST", true) => error(403, "403 Forbidden"),
        _ => error(405, "405 Method Not Allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_decode_the_project_and_tell_take_ownership_apart() {
        assert_eq!(
            route("/api/v4/projects/platform%2Fgraphql-api/pipeline_schedules/118"),
            Some(("platform/graphql-api".to_owned(), 118, false))
        );
        assert_eq!(
            route("/api/v4/projects/a%2Fb/pipeline_schedules/7/take_ownership"),
            Some(("a/b".to_owned(), 7, true))
        );
        assert_eq!(route("/api/v4/projects/a%2/pipeline_schedules/7"), None);
        assert_eq!(route("/api/v4/projects/a/pipeline_schedules/x"), None);
    }
}
