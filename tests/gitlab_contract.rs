//! Contract tests of the GitLab provider against `testenv::GitLabContract`,
//! the pipeline-schedule endpoints of GitLab's REST API v4 as its
//! documentation describes them (GitLab cannot run here). The last test
//! drives the same server through the real operator process, with the token
//! read from a Secret.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::{Api, api::ListParams};
use support::{apply_yaml, control_plane, eventually, kubectl, operator_for_new_namespace};
use testenv::{GitLabContract, monitoring::Schedule};
use weblab_operator::{
    api::{
        MergeTrainPause,
        merge_train_pause::{GitLabProvider, PausePhase, RestoreState},
    },
    controllers::merge_train_pause::{
        gitlab::GitLab,
        provider::{PauseRequest, ProviderError, TrainProvider},
    },
    outbound::Outbound,
};

const PROJECT: &str = "platform/graphql-api";
const SCHEDULE: i64 = 118;

/// The contract server with the one schedule, owned by `owner`, and two
/// tokens: a Maintainer bot and a Developer.
struct Server {
    url: String,
    contract: GitLabContract,
}

impl Server {
    async fn start(active: bool, owner: &str) -> Server {
        let contract = GitLabContract::serve(PROJECT).expect("the contract server starts");
        contract.add_schedule(SCHEDULE, active, owner);
        contract.add_token("bot-token", "merge-bot", true);
        contract.add_token("dev-token", "developer", false);
        Server {
            url: contract.url(),
            contract,
        }
    }

    fn provider(&self, token: &str, schedule: i64) -> GitLab {
        let settings: GitLabProvider = serde_json::from_value(serde_json::json!({
            "url": self.url,
            "project": PROJECT,
            "pipelineScheduleId": schedule,
            "tokenSecretRef": {"name": "gitlab", "key": "token"},
        }))
        .expect("valid settings");
        // The contract server is on loopback, as an administrator's
        // allowed prefix lets it be.
        let outbound = Outbound::new(vec!["http://127.0.0.1:".to_owned()]).expect("outbound");
        GitLab::new(
            &outbound,
            &settings,
            token.to_owned(),
            Duration::from_secs(5),
        )
        .expect("a provider")
    }

    fn schedule(&self) -> Schedule {
        self.contract
            .schedule(SCHEDULE)
            .expect("the schedule exists")
    }

    fn fail_next(&self, method: &str, status: u16) {
        self.contract.fail_next(method, status);
    }

    fn log(&self) -> Vec<String> {
        self.contract.log()
    }

    /// Revokes `token` (GitLab answers 401 to it) or grants it again to
    /// the Maintainer `merge-bot`.
    fn set_token(&self, token: &str, valid: bool) {
        if valid {
            self.contract.add_token(token, "merge-bot", true);
        } else {
            self.contract.remove_token(token);
        }
    }
}

fn request() -> PauseRequest {
    PauseRequest {
        namespace: "team".to_owned(),
        name: "sev2-freeze".to_owned(),
        train: "graphql-main".to_owned(),
        reason: "Sev2".to_owned(),
        ticket: None,
        expires_at: None,
    }
}

#[tokio::test]
async fn contract_pause_and_resume_restore_an_active_schedule() {
    let server = Server::start(true, "merge-bot").await;
    let gitlab = server.provider("bot-token", SCHEDULE);

    let prepared = gitlab
        .prepare(&request())
        .await
        .expect("reads the schedule");
    assert_eq!(prepared.restore, Some(RestoreState { active: true }));
    assert!(server.schedule().active, "prepare changes nothing");

    let paused = gitlab.pause(&request()).await.expect("pauses");
    assert_eq!(paused.active, Some(false));
    assert!(!server.schedule().active);

    let resumed = gitlab
        .resume(&request(), prepared.restore.as_ref())
        .await
        .expect("resumes");
    assert_eq!(resumed.active, Some(true));
    assert!(server.schedule().active);
    // The project travels URL-encoded as one path segment.
    assert!(
        server
            .log()
            .iter()
            .all(|line| line.contains("/projects/platform%2Fgraphql-api/")),
        "{:?}",
        server.log()
    );
}

#[tokio::test]
async fn contract_an_inactive_schedule_stays_inactive_after_resume() {
    let server = Server::start(false, "merge-bot").await;
    let gitlab = server.provider("bot-token", SCHEDULE);
    let prepared = gitlab.prepare(&request()).await.expect("reads");
    assert_eq!(prepared.restore, Some(RestoreState { active: false }));
    gitlab.pause(&request()).await.expect("pauses");
    gitlab
        .resume(&request(), prepared.restore.as_ref())
        .await
        .expect("resumes");
    assert!(
        !server.schedule().active,
        "it was inactive before the pause"
    );
    assert!(
        !server.log().iter().any(|line| line.starts_with("PUT")),
        "an inactive schedule is never edited: {:?}",
        server.log()
    );
}

#[tokio::test]
async fn contract_401_an_unknown_token_is_reported_as_unauthorized() {
    let server = Server::start(true, "merge-bot").await;
    let error = server
        .provider("wrong-token", SCHEDULE)
        .pause(&request())
        .await
        .expect_err("rejected");
    assert_eq!(error.reason(), "Unauthorized");
    assert!(error.to_string().contains("tokenSecretRef"), "{error}");
    assert!(server.schedule().active);
}

#[tokio::test]
async fn contract_403_the_edit_takes_ownership_first_when_refused() {
    // The schedule belongs to someone else; the bot is a Maintainer.
    let server = Server::start(true, "alice").await;
    let report = server
        .provider("bot-token", SCHEDULE)
        .pause(&request())
        .await
        .expect("pauses after taking ownership");
    assert!(
        report.message.contains("took ownership"),
        "{}",
        report.message
    );
    let schedule = server.schedule();
    assert!(!schedule.active);
    assert_eq!(schedule.owner, "merge-bot");
    let log = server.log();
    let edits: Vec<_> = log
        .iter()
        .filter(|l| l.starts_with("PUT") || l.starts_with("POST"))
        .collect();
    assert_eq!(edits.len(), 3, "edit, take ownership, edit again: {log:?}");
    assert!(edits[1].ends_with("/take_ownership"));
}

#[tokio::test]
async fn contract_403_without_the_maintainer_role_fails_and_says_so() {
    let server = Server::start(true, "alice").await;
    let error = server
        .provider("dev-token", SCHEDULE)
        .pause(&request())
        .await
        .expect_err("cannot take ownership");
    assert_eq!(error.reason(), "Forbidden");
    assert!(error.to_string().contains("Maintainer"), "{error}");
    assert!(server.schedule().active);
    assert_eq!(server.schedule().owner, "alice");
}

#[tokio::test]
async fn contract_404_an_unknown_schedule_is_reported_as_not_found() {
    let server = Server::start(true, "merge-bot").await;
    let error: ProviderError = server
        .provider("bot-token", 999)
        .prepare(&request())
        .await
        .expect_err("no such schedule");
    assert_eq!(error.reason(), "NotFound");
    // What GitLab said is not repeated (a tenant reads this in its status):
    // the status, the content type and the size are.
    let message = error.to_string();
    assert!(
        !message.contains("Pipeline Schedule Not Found"),
        "{message}"
    );
    assert!(
        message.contains("no such project or pipeline schedule")
            && message.contains("HTTP 404, application/json"),
        "{message}"
    );
}

#[tokio::test]
async fn contract_409_a_conflicting_edit_fails_and_a_retry_succeeds() {
    let server = Server::start(true, "merge-bot").await;
    let gitlab = server.provider("bot-token", SCHEDULE);
    server.fail_next("PUT", 409);
    let error = gitlab.pause(&request()).await.expect_err("conflict");
    assert_eq!(error.reason(), "Conflict");
    assert!(server.schedule().active, "nothing changed");
    gitlab.pause(&request()).await.expect("the retry pauses");
    assert!(!server.schedule().active);
}

#[tokio::test]
async fn contract_5xx_a_failing_gitlab_is_reported_and_nothing_is_assumed() {
    let server = Server::start(true, "merge-bot").await;
    let gitlab = server.provider("bot-token", SCHEDULE);
    server.fail_next("GET", 502);
    let error = gitlab.prepare(&request()).await.expect_err("bad gateway");
    assert_eq!(error.reason(), "ServerError");
    assert_eq!(error.status(), Some(502));
    server.fail_next("PUT", 500);
    let error = gitlab.pause(&request()).await.expect_err("internal error");
    assert_eq!(error.status(), Some(500));
    assert!(server.schedule().active, "nothing changed");
}

/// A Secret holding `token` and a GitLab pause `sev2-freeze` of the
/// contract server's schedule that reads it.
fn gitlab_pause_yaml(server: &Server, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: gitlab-token
stringData:
  token: {token}
---
apiVersion: weblab.dev/v1alpha1
kind: MergeTrainPause
metadata:
  name: sev2-freeze
spec:
  train: graphql-main
  reason: Sev2 in prodNA
  duration: 4h
  provider:
    type: GitLab
    gitlab:
      url: {}
      project: {PROJECT}
      pipelineScheduleId: {SCHEDULE}
      tokenSecretRef: {{name: gitlab-token, key: token}}
",
        server.url
    )
}

#[tokio::test]
async fn contract_a_pause_through_the_operator_restores_the_schedule_once_deleted() {
    let server = Server::start(true, "alice").await;
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-gitlab").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);
    apply_yaml(plane, &ns, &gitlab_pause_yaml(&server, "bot-token")).await;
    let paused = eventually(Duration::from_secs(60), || async {
        api.get("sev2-freeze")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            == Some(PausePhase::Paused)
    })
    .await;
    assert!(paused, "log:\n{}", operator.logs());
    let status = api
        .get("sev2-freeze")
        .await
        .expect("exists")
        .status
        .expect("status");
    assert_eq!(status.restore, Some(RestoreState { active: true }));
    assert_eq!(status.provider.and_then(|p| p.active), Some(false));
    assert!(!server.schedule().active);
    assert_eq!(
        server.schedule().owner,
        "merge-bot",
        "took ownership when refused"
    );

    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/sev2-freeze",
            "--wait=true",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    assert!(server.schedule().active, "restored to active");
    let edits = server.log().iter().filter(|l| l.starts_with("PUT")).count();
    assert_eq!(
        edits,
        3,
        "pause (refused), pause, resume: {:?}",
        server.log()
    );
}

/// The Events about `name` with `reason`: their count and latest message.
async fn events(
    plane: &testenv::ControlPlane,
    namespace: &str,
    name: &str,
    reason: &str,
) -> (usize, Option<String>) {
    let api: Api<Event> = Api::namespaced(plane.client().await.expect("client"), namespace);
    let events = api.list(&ListParams::default()).await.expect("events");
    let matching: Vec<&Event> = events
        .items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect();
    let count = matching
        .iter()
        .map(|e| usize::try_from(e.count.unwrap_or(1)).unwrap_or(1))
        .sum();
    (count, matching.last().and_then(|e| e.message.clone()))
}

#[tokio::test]
async fn contract_401_a_pause_that_never_paused_is_deleted_at_once() {
    let server = Server::start(true, "merge-bot").await;
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-401").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);
    apply_yaml(plane, &ns, &gitlab_pause_yaml(&server, "wrong-token")).await;
    let refused = eventually(Duration::from_secs(60), || async {
        api.get("sev2-freeze")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.failures > 0)
    })
    .await;
    assert!(refused, "log:\n{}", operator.logs());
    let status = api
        .get("sev2-freeze")
        .await
        .expect("exists")
        .status
        .expect("status");
    assert_eq!(status.prepared_at, None, "nothing was recorded: {status:?}");

    // Nothing to undo: the finalizer goes without another call to GitLab.
    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/sev2-freeze",
            "--wait=true",
            "--timeout=30s",
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}\nlog:\n{}",
        support::describe(&output),
        operator.logs()
    );
    assert!(server.schedule().active, "never changed");
    assert!(
        server.log().iter().all(|line| line.starts_with("GET")),
        "only reads: {:?}",
        server.log()
    );
    // The decision is in the log too, without colour codes in a file.
    let log = operator.logs();
    assert!(
        log.lines()
            .any(|line| line.contains(" WARN ") && line.contains("reason=\"ProviderFailed\"")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "escape codes in the log file");
}

#[tokio::test]
async fn contract_401_a_paused_train_that_cannot_resume_says_why_the_deletion_waits() {
    let server = Server::start(true, "merge-bot").await;
    let plane = control_plane().await;
    let (ns, operator) = operator_for_new_namespace(plane, "mtp-401-resume").await;
    let ns = ns.name().to_owned();
    let api: Api<MergeTrainPause> = Api::namespaced(plane.client().await.expect("client"), &ns);
    apply_yaml(plane, &ns, &gitlab_pause_yaml(&server, "bot-token")).await;
    let paused = eventually(Duration::from_secs(60), || async {
        api.get("sev2-freeze")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            == Some(PausePhase::Paused)
    })
    .await;
    assert!(paused, "log:\n{}", operator.logs());
    assert!(!server.schedule().active);

    // The token is revoked while the train is paused; then the pause is
    // deleted.
    server.set_token("bot-token", false);
    let output = kubectl(
        plane,
        &[
            "delete",
            "-n",
            &ns,
            "mergetrainpause/sev2-freeze",
            "--wait=false",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", support::describe(&output));
    let blocked = eventually(Duration::from_secs(60), || async {
        let ready = api
            .get("sev2-freeze")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
        ready.is_some_and(|c| {
            c.reason == "ResumeBlocked"
                && c.message.contains("token was rejected")
                && c.message.contains("weblab.dev/resume-train")
        })
    })
    .await;
    assert!(
        blocked,
        "{:#?}\nlog:\n{}",
        api.get("sev2-freeze").await.ok().and_then(|p| p.status),
        operator.logs()
    );
    let (warnings, message) = events(plane, &ns, "sev2-freeze", "ResumeBlocked").await;
    assert!(warnings >= 1, "no ResumeBlocked event");
    let message = message.unwrap_or_default();
    assert!(message.contains("401"), "{message}");
    assert!(!server.schedule().active, "still paused");

    // The token works again: the train is restored and the pause goes.
    server.set_token("bot-token", true);
    let gone = eventually(Duration::from_secs(180), || async {
        matches!(api.get_opt("sev2-freeze").await, Ok(None))
    })
    .await;
    assert!(gone, "log:\n{}", operator.logs());
    assert!(server.schedule().active, "restored to active");
    // One decision, one event, one log line.
    let (resumed, _) = events(plane, &ns, "sev2-freeze", "Resumed").await;
    let lines = operator
        .logs()
        .lines()
        .filter(|line| line.contains(" INFO ") && line.contains("reason=\"Resumed\""))
        .count();
    assert_eq!((resumed, lines), (1, 1), "log:\n{}", operator.logs());
}
