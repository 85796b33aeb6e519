//! GitOps-aware rollback: the automatic sync of the Argo CD Applications and
//! Flux Kustomizations and HelmReleases of `spec.gitops` is turned off before
//! the first region moves, and given back on re-arm, on request, on refusal,
//! when an object leaves the list, or (by the shell) on delete.
//!
//! Invariants:
//! - No wave starts until every listed object is `Suspended` (or was
//!   `AlreadyOff`) in the status as written: a refusal (403, 404, a namespace
//!   that does not authorize the rollback) refuses the whole rollback before
//!   any workload moves.
//! - Suspending is recorded before it is written: an object becomes
//!   `Suspending` (with its prior value) in one decision, and is written (and
//!   becomes `Suspended`) only in a later one, from the status as written. A
//!   crash in between leaves a record, so a restore covers it.
//! - Restoring is written before it is recorded: the shell gives the field
//!   back before it writes the status that says `Restored`, so a crash in
//!   between restores again (a no-op) instead of forgetting it.
//! - Never silent: while any object is suspended, `AutoSyncSuspended` is
//!   `True` and names it; every suspension and restore is an event.

use super::{POLL, waves::Planner};
use crate::{
    api::{
        common::MicroTime,
        conditions::{self, DesiredCondition},
        rollback::{GitOpsKind, GitOpsState, GitOpsStatus, RollbackSpec, RollbackStatus},
    },
    controllers::Note,
};

/// The reason of a refusal because the operator may not change a listed
/// GitOps object (RBAC, or its namespace does not authorize the rollback).
pub const GITOPS_FORBIDDEN: &str = "GitOpsForbidden";
/// The reason of a refusal because a listed GitOps object does not exist.
pub const GITOPS_NOT_FOUND: &str = "GitOpsNotFound";
/// The condition that says whether the listed GitOps objects can be
/// suspended.
pub const GITOPS_READY: &str = "GitOpsReady";
/// The condition that says which GitOps objects this rollback holds with
/// automatic sync off.
pub const AUTO_SYNC_SUSPENDED: &str = "AutoSyncSuspended";

/// One GitOps object, its namespace resolved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GitOpsKey {
    /// Its kind.
    pub kind: GitOpsKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl GitOpsKey {
    /// `Application argocd/guestbook`, for people.
    pub fn label(&self) -> String {
        format!("{:?} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The object a status entry is about.
    pub fn of(entry: &GitOpsStatus) -> Self {
        GitOpsKey {
            kind: entry.kind,
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        }
    }
}

/// The field that switches `kind`'s automatic sync, as a path.
pub fn auto_sync_field(kind: GitOpsKind) -> &'static str {
    match kind {
        GitOpsKind::Application => "spec.syncPolicy.automated.enabled",
        GitOpsKind::Kustomization | GitOpsKind::HelmRelease => "spec.suspend",
    }
}

/// The value of [`auto_sync_field`] that turns automatic sync off.
pub fn suspended_value(kind: GitOpsKind) -> bool {
    kind != GitOpsKind::Application
}

/// A GitOps object's automatic sync, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoSync {
    /// The value of [`auto_sync_field`]; `None`: unset.
    pub value: Option<bool>,
    /// Whether automatic sync is on (Argo CD: `automated` is set and not
    /// disabled; Flux: not suspended).
    pub on: bool,
    /// Whether the operator's field manager holds the field.
    pub held: bool,
    /// The object's resourceVersion, the precondition of the write.
    pub resource_version: String,
}

/// A GitOps object as the rollback sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitOpsView {
    /// Read.
    Read(AutoSync),
    /// It does not exist (or its kind is not installed).
    NotFound(String),
    /// RBAC does not let the operator read or change it.
    Forbidden(String),
    /// Its namespace does not authorize the rollback.
    NotAuthorized(String),
    /// The API server could not be asked.
    Unreachable(String),
}

/// Turn one object's automatic sync off (after its record was written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspend {
    /// The object.
    pub key: GitOpsKey,
    /// The resourceVersion it was read at: the write's precondition.
    pub resource_version: String,
}

/// The GitOps objects of `spec.gitops`, namespaces resolved.
pub fn gitops_refs(spec: &RollbackSpec, namespace: &str) -> Vec<GitOpsKey> {
    spec.gitops
        .iter()
        .flat_map(|g| &g.suspend_auto_sync)
        .map(|r| GitOpsKey {
            kind: r.kind,
            namespace: r.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            name: r.name.clone(),
        })
        .collect()
}

/// The GitOps objects a decision needs read: every listed one, unless the
/// rollback ended badly (nothing more happens) or is rolling regions back
/// with every suspension already written (nothing to decide until it ends).
pub fn gitops_to_read(
    spec: &RollbackSpec,
    status: &RollbackStatus,
    namespace: &str,
) -> Vec<GitOpsKey> {
    use crate::api::rollback::RollbackPhase;
    let suspending = status
        .gitops
        .iter()
        .any(|e| e.state == GitOpsState::Suspending);
    match status.phase {
        Some(RollbackPhase::Failed | RollbackPhase::Refused) => Vec::new(),
        Some(RollbackPhase::Progressing) if !suspending => Vec::new(),
        _ => gitops_refs(spec, namespace),
    }
}

/// Whether `status` records an object whose automatic sync may still be
/// off because of this rollback (what the delete finalizer waits for).
pub fn holds_auto_sync(status: &RollbackStatus) -> bool {
    status.gitops.iter().any(is_held)
}

/// Whether the entry's object may still have automatic sync off because of
/// this rollback.
pub fn is_held(entry: &GitOpsStatus) -> bool {
    matches!(
        entry.state,
        GitOpsState::Suspending | GitOpsState::Suspended
    )
}

impl Planner<'_> {
    /// The listed GitOps objects' automatic sync is off before any wave:
    /// whether the rollback may start now. Refuses the rollback when an
    /// object cannot be suspended.
    pub(super) fn gitops_gate(&mut self) -> bool {
        let refs = gitops_refs(self.world.spec, self.world.namespace);
        if refs.is_empty() {
            return true;
        }
        let mut forbidden = Vec::new();
        let mut not_found = Vec::new();
        for key in &refs {
            match self.world.gitops.get(key) {
                Some(GitOpsView::NotFound(why)) => not_found.push(why.clone()),
                Some(GitOpsView::Forbidden(why) | GitOpsView::NotAuthorized(why)) => {
                    forbidden.push(why.clone());
                }
                Some(GitOpsView::Unreachable(why)) => {
                    self.waiting = Some(format!("cannot read {}: {why}", key.label()));
                    self.requeue(std::time::Duration::from_secs(5));
                    return false;
                }
                None => {
                    self.waiting = Some(format!("{} was not read", key.label()));
                    self.requeue(POLL);
                    return false;
                }
                Some(GitOpsView::Read(_)) => {}
            }
        }
        if !forbidden.is_empty() || !not_found.is_empty() {
            let reason = if forbidden.is_empty() {
                GITOPS_NOT_FOUND
            } else {
                GITOPS_FORBIDDEN
            };
            let refusals: Vec<String> = forbidden.into_iter().chain(not_found).collect();
            self.refuse(reason, &refusals);
            return false;
        }
        let mut ready = true;
        let mut suspended = Vec::new();
        for key in &refs {
            let Some(GitOpsView::Read(read)) = self.world.gitops.get(key) else {
                continue;
            };
            let planned = self
                .status
                .gitops
                .iter()
                .find(|e| GitOpsKey::of(e) == *key && !self.restored_in_an_earlier_run(e))
                .map(|e| e.state);
            let recorded = self
                .world
                .status
                .gitops
                .iter()
                .any(|e| GitOpsKey::of(e) == *key && e.state == GitOpsState::Suspending);
            match planned {
                // A person gave it back during this run: their call.
                Some(GitOpsState::Suspended | GitOpsState::AlreadyOff | GitOpsState::Restored) => {}
                // Written only once the status as read records it.
                Some(GitOpsState::Suspending) if !recorded => ready = false,
                // Turned off by someone else since it was recorded: taking
                // the field from them would turn it back on at the restore.
                Some(GitOpsState::Suspending) if !read.on && !read.held => {
                    ready = false;
                    if let Some(entry) = self.entry_mut(key) {
                        entry.state = GitOpsState::AlreadyOff;
                        entry.suspended_at = None;
                        entry.message = Some(
                            "automatic sync was turned off by someone else before the rollback wrote it: left alone, nothing to restore"
                                .to_owned(),
                        );
                    }
                }
                Some(GitOpsState::Suspending) => {
                    ready = false;
                    if !(read.held && read.value == Some(suspended_value(key.kind))) {
                        self.decision.suspends.push(Suspend {
                            key: key.clone(),
                            resource_version: read.resource_version.clone(),
                        });
                    }
                    if let Some(entry) = self.entry_mut(key) {
                        entry.state = GitOpsState::Suspended;
                    }
                    suspended.push(key.label());
                }
                None => {
                    ready = false;
                    let entry = GitOpsStatus {
                        kind: key.kind,
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        field: auto_sync_field(key.kind).to_owned(),
                        state: if read.on {
                            GitOpsState::Suspending
                        } else {
                            GitOpsState::AlreadyOff
                        },
                        prior_value: read.value.map(|v| v.to_string()),
                        suspended_at: read.on.then(|| self.now.clone()),
                        restored_at: None,
                        message: (!read.on).then(|| {
                            "automatic sync was already off: left alone, nothing to restore"
                                .to_owned()
                        }),
                    };
                    self.status.gitops.retain(|e| GitOpsKey::of(e) != *key);
                    self.status.gitops.push(entry);
                }
            }
        }
        if !suspended.is_empty() {
            self.note(Note::normal(
                "AutoSyncSuspended",
                format!(
                    "automatic sync turned off before any region moves: {}; it comes back on re-arm, on delete, or with {} restore-gitops <anything distinct>",
                    suspended.join(", "),
                    super::ACTION_ANNOTATION
                ),
            ));
        }
        if !ready {
            self.waiting = Some("suspending the automatic sync of spec.gitops".to_owned());
            self.requeue(std::time::Duration::ZERO);
        }
        ready
    }

    /// An entry restored when the rollback was (re-)armed belongs to the run
    /// before: this run suspends the object again.
    fn restored_in_an_earlier_run(&self, entry: &GitOpsStatus) -> bool {
        let armed_at = self.status.armed_at.as_ref().map(|t| t.0);
        entry.state == GitOpsState::Restored
            && entry
                .restored_at
                .as_ref()
                .is_some_and(|at| armed_at.is_some_and(|armed| at.0 <= armed))
    }

    fn entry_mut(&mut self, key: &GitOpsKey) -> Option<&mut GitOpsStatus> {
        self.status
            .gitops
            .iter_mut()
            .find(|e| GitOpsKey::of(e) == *key)
    }

    /// Gives back every field this rollback may hold (`why`: for the
    /// record); whether there was any.
    pub(super) fn restore_gitops(&mut self, why: &str) -> bool {
        let now: MicroTime = self.now.clone();
        let mut restored = Vec::new();
        for entry in &mut self.status.gitops {
            if !is_held(entry) {
                continue;
            }
            entry.state = GitOpsState::Restored;
            entry.restored_at = Some(now.clone());
            entry.message = Some(why.to_owned());
            let key = GitOpsKey::of(entry);
            restored.push(key.label());
            self.decision.releases.push(key);
        }
        if restored.is_empty() {
            return false;
        }
        self.note(Note::normal(
            "AutoSyncRestored",
            format!("automatic sync given back ({why}): {}", restored.join(", ")),
        ));
        true
    }

    /// Objects taken off `spec.gitops` are given back; held objects that
    /// someone else changed are reported once.
    pub(super) fn watch_gitops(&mut self) {
        let listed = gitops_refs(self.world.spec, self.world.namespace);
        let unlisted: Vec<GitOpsKey> = self
            .status
            .gitops
            .iter()
            .filter(|e| is_held(e))
            .map(GitOpsKey::of)
            .filter(|key| !listed.contains(key))
            .collect();
        if !unlisted.is_empty() {
            let now = self.now.clone();
            let mut labels = Vec::new();
            for key in unlisted {
                if let Some(entry) = self.entry_mut(&key) {
                    entry.state = GitOpsState::Restored;
                    entry.restored_at = Some(now.clone());
                    entry.message = Some("no longer listed in spec.gitops".to_owned());
                }
                labels.push(key.label());
                self.decision.releases.push(key);
            }
            self.note(Note::normal(
                "AutoSyncRestored",
                format!(
                    "automatic sync given back (no longer listed in spec.gitops): {}",
                    labels.join(", ")
                ),
            ));
        }
        let mut taken = Vec::new();
        for entry in &mut self.status.gitops {
            if entry.state != GitOpsState::Suspended {
                continue;
            }
            let Some(GitOpsView::Read(read)) = self.world.gitops.get(&GitOpsKey::of(entry)) else {
                continue;
            };
            if read.held && !read.on {
                continue;
            }
            let message = format!(
                "{} was changed by someone else while suspended (automatic sync is {}): the rollback leaves it as they set it",
                entry.field,
                if read.on { "on" } else { "off" }
            );
            if entry.message.as_deref() != Some(message.as_str()) {
                taken.push(format!("{}: {message}", GitOpsKey::of(entry).label()));
                entry.message = Some(message);
            }
        }
        for message in taken {
            self.note(Note::warning("AutoSyncChanged", message));
        }
    }

    /// A listed object the operator may not change, found before the
    /// rollback fires: the reason and every problem in words.
    fn gitops_problem(&self) -> Option<(&'static str, String)> {
        let mut reason = None;
        let mut problems = Vec::new();
        for key in gitops_refs(self.world.spec, self.world.namespace) {
            match self.world.gitops.get(&key) {
                Some(GitOpsView::Forbidden(why) | GitOpsView::NotAuthorized(why)) => {
                    reason = Some(GITOPS_FORBIDDEN);
                    problems.push(why.clone());
                }
                Some(GitOpsView::NotFound(why)) => {
                    reason.get_or_insert(GITOPS_NOT_FOUND);
                    problems.push(why.clone());
                }
                _ => {}
            }
        }
        reason.map(|reason| (reason, problems.join("; ")))
    }

    /// `GitOpsReady` and `AutoSyncSuspended`, for a rollback that lists
    /// GitOps objects or still records some.
    pub(super) fn gitops_conditions(&self) -> Vec<DesiredCondition> {
        if self.world.spec.gitops.is_none() && self.status.gitops.is_empty() {
            return Vec::new();
        }
        let (ready, reason, message) = match self.gitops_refusal().or_else(|| self.gitops_problem())
        {
            Some((reason, message)) => (false, reason, message),
            None if self
                .status
                .gitops
                .iter()
                .any(|e| e.state == GitOpsState::Suspending) =>
            {
                (
                    false,
                    "Suspending",
                    "the automatic sync of spec.gitops is being turned off; no region moves before"
                        .to_owned(),
                )
            }
            None => (
                true,
                "Accessible",
                "every object of spec.gitops can be suspended".to_owned(),
            ),
        };
        let held: Vec<String> = self
            .status
            .gitops
            .iter()
            .filter(|e| is_held(e))
            .map(|e| {
                format!(
                    "{} ({} held by {} since {})",
                    GitOpsKey::of(e).label(),
                    e.field,
                    crate::controllers::rollback::gitops::MANAGER,
                    e.suspended_at
                        .as_ref()
                        .map_or_else(String::new, |t| t.0.to_string())
                )
            })
            .collect();
        let suspended = if held.is_empty() {
            DesiredCondition::new(AUTO_SYNC_SUSPENDED, false, "NotSuspended", String::new())
        } else {
            DesiredCondition::new(
                AUTO_SYNC_SUSPENDED,
                true,
                "Suspended",
                format!(
                    "automatic sync is off for {}; it comes back when the rollback is re-armed or deleted, or with {}=\"restore-gitops <anything distinct>\"",
                    held.join(", "),
                    super::ACTION_ANNOTATION
                ),
            )
        };
        vec![
            DesiredCondition::new(GITOPS_READY, ready, reason, message),
            suspended,
        ]
    }

    /// The GitOps refusal this decision made, or the one the status
    /// records (a refused rollback reads nothing more).
    fn gitops_refusal(&self) -> Option<(&'static str, String)> {
        if let Some(reason @ (GITOPS_FORBIDDEN | GITOPS_NOT_FOUND)) = self.refused_because {
            return Some((reason, self.waiting.clone().unwrap_or_default()));
        }
        if self.status.phase != Some(crate::api::rollback::RollbackPhase::Refused) {
            return None;
        }
        let before = conditions::find(&self.world.status.conditions, GITOPS_READY)?;
        [GITOPS_FORBIDDEN, GITOPS_NOT_FOUND]
            .into_iter()
            .find(|r| *r == before.reason)
            .map(|reason| (reason, before.message.clone()))
    }

    /// A Warning event when a GitOps problem appears before the rollback
    /// fires (a refusal publishes its own).
    pub(super) fn report_gitops_problem(&mut self) {
        if self.refused_because.is_some() {
            return;
        }
        let Some((reason, message)) = self.gitops_problem() else {
            return;
        };
        let reported = conditions::find(&self.world.status.conditions, GITOPS_READY)
            .is_some_and(|c| c.status == "False" && c.message == message);
        if !reported {
            self.note(Note::warning(
                reason,
                format!("the rollback could not suspend automatic sync when it fires: {message}"),
            ));
        }
    }
}
