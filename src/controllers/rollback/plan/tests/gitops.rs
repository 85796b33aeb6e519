//! Suspending the automatic sync of Argo CD and Flux before any region
//! moves, and giving it back.

use super::*;
use crate::api::rollback::{GitOpsKind, GitOpsState, GitOpsStatus};

fn app() -> GitOpsKey {
    GitOpsKey {
        kind: GitOpsKind::Application,
        namespace: "argocd".to_owned(),
        name: "graphql".to_owned(),
    }
}

fn kustomization() -> GitOpsKey {
    GitOpsKey {
        kind: GitOpsKind::Kustomization,
        namespace: "team".to_owned(),
        name: "graphql".to_owned(),
    }
}

const GITOPS: &str = "gitops:
  suspendAutoSync:
    - {kind: Application, name: graphql, namespace: argocd}
    - {kind: Kustomization, name: graphql}
";

fn immediate() -> RollbackSpec {
    spec(&format!(
        "targets: [{{kind: Deployment, name: graphql-api}}]
waves: [{{region: prodNA, namespace: team}}]
target: {{type: PreviousStable}}
verification: {{bake: 1m}}
{GITOPS}"
    ))
}

fn armed_with_gitops() -> RollbackSpec {
    spec(&format!(
        "targets: [{{kind: Deployment, name: graphql-api}}]
waves: [{{region: prodNA, namespace: team}}]
target: {{type: PreviousStable}}
trigger: {{type: Alarm, alarms: {{names: [errors]}}, severities: [Sev2]}}
verification: {{bake: 1m, alarms: {{names: [errors]}}, severities: [Sev2]}}
{GITOPS}"
    ))
}

/// Automatic sync on, the field unset, not held by the operator.
fn on(version: &str) -> GitOpsView {
    GitOpsView::Read(AutoSync {
        value: None,
        on: true,
        held: false,
        resource_version: version.to_owned(),
    })
}

/// Held off by the operator.
fn held(kind: GitOpsKind) -> GitOpsView {
    GitOpsView::Read(AutoSync {
        value: Some(suspended_value(kind)),
        on: false,
        held: true,
        resource_version: "9".to_owned(),
    })
}

fn with_views(mut case: Case, app_view: GitOpsView, kustomization_view: GitOpsView) -> Case {
    case.gitops.insert(app(), app_view);
    case.gitops.insert(kustomization(), kustomization_view);
    case
}

fn entry(case: &Case, key: &GitOpsKey) -> GitOpsStatus {
    case.status
        .gitops
        .iter()
        .find(|e| GitOpsKey::of(e) == *key)
        .cloned()
        .expect("the entry exists")
}

fn condition(case: &Case, type_: &str) -> (String, String, String) {
    let c = conditions::find(&case.status.conditions, type_).expect("the condition exists");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn held_entry(key: &GitOpsKey) -> GitOpsStatus {
    GitOpsStatus {
        kind: key.kind,
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        field: auto_sync_field(key.kind).to_owned(),
        state: GitOpsState::Suspended,
        prior_value: None,
        suspended_at: Some(MicroTime(t(-600))),
        restored_at: None,
        message: None,
    }
}

#[test]
fn automatic_sync_is_recorded_then_suspended_before_any_region_moves() {
    let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let mut case = with_views(case, on("11"), on("12"));

    // 1: the prior values are recorded, nothing is written yet.
    let recorded = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Pending));
    assert!(recorded.suspends.is_empty() && recorded.restores.is_empty());
    assert!(case.status.waves.is_empty());
    let first = entry(&case, &app());
    assert_eq!(first.state, GitOpsState::Suspending);
    assert_eq!(first.field, "spec.syncPolicy.automated.enabled");
    assert_eq!(first.prior_value, None);
    assert_eq!(first.suspended_at, Some(MicroTime(t(0))));
    assert_eq!(entry(&case, &kustomization()).field, "spec.suspend");
    assert_eq!(condition(&case, GITOPS_READY).1, "Suspending");
    assert_eq!(condition(&case, AUTO_SYNC_SUSPENDED).0, "True");
    assert_eq!(recorded.requeue_after, Some(Duration::from_millis(100)));

    // 2: the recorded suspensions are written, at the versions read; still
    // no region moves.
    let written = case.step();
    assert_eq!(
        written.suspends,
        vec![
            Suspend {
                key: app(),
                resource_version: "11".to_owned()
            },
            Suspend {
                key: kustomization(),
                resource_version: "12".to_owned()
            },
        ]
    );
    assert!(written.restores.is_empty());
    assert!(case.status.waves.is_empty());
    assert_eq!(case.status.phase, Some(RollbackPhase::Pending));
    assert_eq!(reasons(&written), vec!["AutoSyncSuspended"]);
    assert_eq!(entry(&case, &app()).state, GitOpsState::Suspended);

    // 3: seen held: the rollback starts, and says what it holds.
    case.gitops.insert(app(), held(GitOpsKind::Application));
    case.gitops
        .insert(kustomization(), held(GitOpsKind::Kustomization));
    let started = case.step();
    assert!(started.suspends.is_empty());
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    assert_eq!(reasons(&started), vec!["Started", "WaveStarted"]);
    let (status, reason, message) = condition(&case, AUTO_SYNC_SUSPENDED);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Suspended"));
    assert!(
        message.contains("Application argocd/graphql")
            && message.contains("Kustomization team/graphql"),
        "{message}"
    );
    assert_eq!(condition(&case, GITOPS_READY).0, "True");

    // 4: only now a workload moves; the suspension is not written again.
    let restored = case.step();
    assert_eq!(restored.restores.len(), 1);
    assert!(restored.suspends.is_empty() && restored.releases.is_empty());
}

#[test]
fn a_forbidden_or_missing_object_refuses_before_anything_moves() {
    for (view, reason) in [
        (
            GitOpsView::Forbidden("may not patch".to_owned()),
            GITOPS_FORBIDDEN,
        ),
        (
            GitOpsView::NotAuthorized("namespace argocd does not authorize".to_owned()),
            GITOPS_FORBIDDEN,
        ),
        (
            GitOpsView::NotFound("Application argocd/graphql not found".to_owned()),
            GITOPS_NOT_FOUND,
        ),
    ] {
        let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
        let mut case = with_views(case, view, on("12"));
        let refused = case.step();
        assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
        assert!(refused.suspends.is_empty() && refused.restores.is_empty());
        assert!(refused.releases.is_empty());
        assert!(case.status.waves.is_empty() && case.status.gitops.is_empty());
        assert_eq!(reasons(&refused), vec![reason]);
        let (status, ready_reason, _) = condition(&case, GITOPS_READY);
        assert_eq!((status.as_str(), ready_reason.as_str()), ("False", reason));
        assert_eq!(condition(&case, conditions::READY).1, reason);
        // Refused stays refused, quietly, and keeps its reason.
        case.gitops.clear();
        let again = case.decide();
        assert_eq!(again.status, case.status);
        assert!(again.notes.is_empty());
    }
}

#[test]
fn a_refusal_after_a_suspension_gives_it_back() {
    let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let mut case = with_views(case, on("11"), on("12"));
    case.step();
    case.step();
    // The Kustomization's RBAC is revoked before the rollback could start.
    case.gitops.insert(app(), held(GitOpsKind::Application));
    case.gitops
        .insert(kustomization(), GitOpsView::Forbidden("no".to_owned()));
    let refused = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
    assert!(refused.restores.is_empty());
    assert_eq!(refused.releases, vec![app(), kustomization()]);
    assert_eq!(
        reasons(&refused),
        vec![GITOPS_FORBIDDEN, "AutoSyncRestored"]
    );
    assert_eq!(entry(&case, &app()).state, GitOpsState::Restored);
    assert_eq!(condition(&case, AUTO_SYNC_SUSPENDED).0, "False");
}

#[test]
fn automatic_sync_already_off_is_left_alone() {
    let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let off = GitOpsView::Read(AutoSync {
        value: Some(true),
        on: false,
        held: false,
        resource_version: "4".to_owned(),
    });
    let mut case = with_views(case, on("3"), off);
    // The Application is recorded as usual; the suspended Kustomization is
    // not touched, and its `true` is what it had.
    case.step();
    let flux = entry(&case, &kustomization());
    assert_eq!(flux.state, GitOpsState::AlreadyOff);
    assert_eq!(flux.prior_value.as_deref(), Some("true"));
    // The Application is already held (written before a crash, the status
    // not): not written again.
    case.gitops.insert(app(), held(GitOpsKind::Application));
    let written = case.step();
    assert!(written.suspends.is_empty());
    assert_eq!(entry(&case, &app()).state, GitOpsState::Suspended);
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    // A restore gives back only what the rollback changed.
    case.status.phase = Some(RollbackPhase::Succeeded);
    case.request = Some("restore-gitops INC-7".to_owned());
    let restored = case.step();
    assert_eq!(restored.releases, vec![app()]);
    assert_eq!(
        entry(&case, &kustomization()).state,
        GitOpsState::AlreadyOff
    );
}

#[test]
fn re_arming_gives_automatic_sync_back_and_the_next_firing_takes_it_again() {
    let mut case = Case::new(armed_with_gitops(), read(vec![graphql("3.242.1")]));
    case.status.phase = Some(RollbackPhase::Succeeded);
    case.status.armed_at = Some(MicroTime(t(-3600)));
    case.status.gitops = vec![held_entry(&app()), held_entry(&kustomization())];
    case.request = Some("rearm after INC-1".to_owned());
    let rearmed = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
    assert_eq!(rearmed.releases, vec![app(), kustomization()]);
    assert_eq!(reasons(&rearmed), vec!["AutoSyncRestored", "Rearmed"]);
    let restored = entry(&case, &app());
    assert_eq!(restored.state, GitOpsState::Restored);
    assert_eq!(restored.restored_at, Some(MicroTime(t(0))));
    assert_eq!(restored.message.as_deref(), Some("re-armed"));
    assert_eq!(condition(&case, AUTO_SYNC_SUSPENDED).0, "False");

    // Fired again: the fields are taken again, the alarm clearing meanwhile
    // does not stop it.
    let case_views = with_views(case, on("20"), on("21"));
    let mut case = case_views;
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(30))];
    case.later(60);
    let fired = case.step();
    assert_eq!(reasons(&fired), vec!["Fired"]);
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
    assert_eq!(entry(&case, &app()).state, GitOpsState::Suspending);
    case.alarms = vec![alarm(AlarmState::Ok, Severity::Sev2, t(70))];
    case.later(1);
    assert_eq!(case.step().suspends.len(), 2);
    case.gitops.insert(app(), held(GitOpsKind::Application));
    case.gitops
        .insert(kustomization(), held(GitOpsKind::Kustomization));
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
}

#[test]
fn a_person_gives_automatic_sync_back_and_the_rollback_does_not_take_it_again() {
    let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let mut case = with_views(case, on("11"), on("12"));
    case.step();
    case.request = Some("restore-gitops by alice".to_owned());
    let restored = case.step();
    assert_eq!(restored.releases, vec![app(), kustomization()]);
    assert!(restored.suspends.is_empty());
    assert_eq!(
        reasons(&restored),
        vec!["AutoSyncRestored", "Started", "WaveStarted"]
    );
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    let message = entry(&case, &app()).message.unwrap_or_default();
    assert!(message.contains("restore-gitops by alice"), "{message}");
    // Nothing left to give back.
    case.request = Some("restore-gitops again".to_owned());
    let ignored = case.step();
    assert!(ignored.releases.is_empty());
    assert_eq!(reasons(&ignored), vec!["RestoreGitOpsIgnored"]);
}

#[test]
fn an_object_taken_off_the_list_is_given_back() {
    let mut case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let other = GitOpsKey {
        kind: GitOpsKind::HelmRelease,
        namespace: "team".to_owned(),
        name: "old".to_owned(),
    };
    case.status.phase = Some(RollbackPhase::Succeeded);
    case.status.gitops = vec![held_entry(&app()), held_entry(&other)];
    let decision = case.step();
    assert_eq!(decision.releases, vec![other.clone()]);
    assert_eq!(entry(&case, &other).state, GitOpsState::Restored);
    assert_eq!(entry(&case, &app()).state, GitOpsState::Suspended);
}

#[test]
fn someone_else_resuming_automatic_sync_is_reported_once() {
    let mut case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    case.status.phase = Some(RollbackPhase::Succeeded);
    case.status.gitops = vec![held_entry(&app()), held_entry(&kustomization())];
    case.gitops.insert(app(), held(GitOpsKind::Application));
    case.gitops.insert(kustomization(), on("30"));
    let reported = case.step();
    assert_eq!(reasons(&reported), vec!["AutoSyncChanged"]);
    assert!(reported.releases.is_empty() && reported.suspends.is_empty());
    let message = entry(&case, &kustomization()).message.unwrap_or_default();
    assert!(message.contains("changed by someone else"), "{message}");
    assert!(case.step().notes.is_empty());
}

#[test]
fn an_armed_rollback_warns_once_when_it_could_not_suspend() {
    let case = Case::new(armed_with_gitops(), read(vec![graphql("3.242.1")]));
    let mut case = with_views(
        case,
        GitOpsView::Forbidden("may not patch".to_owned()),
        on("1"),
    );
    case.alarms = vec![alarm(AlarmState::Ok, Severity::Sev2, t(-7200))];
    let armed = case.step();
    assert_eq!(reasons(&armed), vec!["Armed", GITOPS_FORBIDDEN]);
    assert_eq!(case.status.phase, Some(RollbackPhase::Armed));
    assert_eq!(condition(&case, GITOPS_READY).1, GITOPS_FORBIDDEN);
    case.later(30);
    assert!(case.step().notes.is_empty());
    // Fired while still forbidden: refused, nothing moved.
    case.alarms = vec![alarm(AlarmState::Alarm, Severity::Sev2, t(40))];
    case.later(30);
    let fired = case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Refused));
    assert!(fired.restores.is_empty() && fired.suspends.is_empty());
}

#[test]
fn a_rollback_without_gitops_has_no_gitops_conditions() {
    let mut case = Case::new(four_regions(1), read(vec![graphql("3.242.1")]));
    case.step();
    assert!(conditions::find(&case.status.conditions, GITOPS_READY).is_none());
    assert!(conditions::find(&case.status.conditions, AUTO_SYNC_SUSPENDED).is_none());
    assert!(gitops_to_read(&case.spec, &case.status, "team").is_empty());
}

#[test]
fn automatic_sync_turned_off_by_someone_else_after_the_record_is_left_to_them() {
    let case = Case::new(immediate(), read(vec![graphql("3.242.1")]));
    let mut case = with_views(case, on("11"), on("12"));
    case.step();
    // A person runs `flux suspend` before the operator wrote its suspension.
    case.gitops.insert(
        kustomization(),
        GitOpsView::Read(AutoSync {
            value: Some(true),
            on: false,
            held: false,
            resource_version: "13".to_owned(),
        }),
    );
    let written = case.step();
    assert_eq!(
        written
            .suspends
            .iter()
            .map(|s| s.key.clone())
            .collect::<Vec<_>>(),
        vec![app()]
    );
    assert_eq!(
        entry(&case, &kustomization()).state,
        GitOpsState::AlreadyOff
    );
    case.gitops.insert(app(), held(GitOpsKind::Application));
    case.step();
    assert_eq!(case.status.phase, Some(RollbackPhase::Progressing));
    case.request = Some("restore-gitops done".to_owned());
    assert_eq!(case.step().releases, vec![app()]);
}
