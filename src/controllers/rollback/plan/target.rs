//! Target choice: which kept revision a `RevisionTarget` asks for.

use jiff::{SignedDuration, Timestamp};

use super::{Revision, Workload};
use crate::api::rollback::{RevisionTarget, RevisionTargetType};

/// The revision a target asks for, for one workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Choice<'a> {
    /// Restore this revision.
    Restore(&'a Revision),
    /// The workload already runs it.
    AlreadyThere(&'a Revision),
}

/// Chooses the revision `target` asks for among the workload's kept ones;
/// the error says why there is none (e.g. pruned by `revisionHistoryLimit`).
pub fn choose<'a>(
    target: &RevisionTarget,
    workload: &'a Workload,
    now: Timestamp,
) -> Result<Choice<'a>, String> {
    let current = workload.current_revision().ok_or_else(|| {
        format!(
            "{}: its current revision is not among its ReplicaSets/ControllerRevisions",
            workload.label()
        )
    })?;
    let kept = || {
        let numbers: Vec<String> = workload
            .revisions
            .iter()
            .map(|r| r.number.to_string())
            .collect();
        numbers.join(", ")
    };
    let newest = |wanted: &dyn Fn(&Revision) -> bool| {
        workload
            .revisions
            .iter()
            .filter(|r| wanted(r))
            .max_by_key(|r| r.number)
    };
    let found = match target.type_ {
        RevisionTargetType::PreviousStable => newest(&|r: &Revision| {
            r.number < current.number && r.stable_since.is_some()
        })
        .ok_or_else(|| {
            format!(
                "{}: no stable revision older than its current revision {} is left (revisions kept: {}); stable revisions are recorded by an armed Rollback, or by hand with the weblab.dev/stable-since annotation",
                workload.label(),
                current.number,
                kept()
            )
        })?,
        RevisionTargetType::Revision => {
            let wanted = target.revision.unwrap_or_default();
            newest(&|r: &Revision| r.number == wanted).ok_or_else(|| {
                format!(
                    "{}: revision {wanted} is not kept any more (pruned by revisionHistoryLimit?); revisions kept: {}",
                    workload.label(),
                    kept()
                )
            })?
        }
        RevisionTargetType::ImageTag => {
            let tag = target.image_tag.as_deref().unwrap_or_default();
            if runs_tag(current, tag) {
                current
            } else {
                newest(&|r: &Revision| runs_tag(r, tag)).ok_or_else(|| {
                    format!(
                        "{}: no kept revision runs image tag {tag:?} (revisions kept: {})",
                        workload.label(),
                        kept()
                    )
                })?
            }
        }
        RevisionTargetType::UndoSince => {
            let since = target.since.map(|d| d.get()).unwrap_or_default();
            let cutoff = now
                .checked_sub(SignedDuration::try_from(since).unwrap_or(SignedDuration::MAX))
                .unwrap_or(Timestamp::MIN);
            newest(&|r: &Revision| r.deployed_at <= cutoff).ok_or_else(|| {
                format!(
                    "{}: every kept revision was deployed after {cutoff} (revisions kept: {}); the older ones were pruned",
                    workload.label(),
                    kept()
                )
            })?
        }
    };
    Ok(if found.hash == current.hash {
        Choice::AlreadyThere(found)
    } else {
        Choice::Restore(found)
    })
}

/// Whether a revision's containers run `tag` (`image:tag` or
/// `image:tag@digest`).
fn runs_tag(revision: &Revision, tag: &str) -> bool {
    revision.images.iter().any(|image| {
        let image = image.split('@').next().unwrap_or_default();
        let name = image.rsplit('/').next().unwrap_or_default();
        name.split_once(':').is_some_and(|(_, t)| t == tag)
    })
}
