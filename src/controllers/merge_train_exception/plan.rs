//! The pure life of a `MergeTrainException`: from the exception, whether a
//! pause or window names its train, the uses queued by the gate and the
//! time, the next status, its events and when to look again. No I/O and no
//! clock.
//!
//! Invariants:
//! - The gate and the controller decide "does it work now" with the same
//!   function, [`MergeTrainExceptionSpec::expiry`], against their own clock: the gate never waits for
//!   the controller to write `Expired`, so an exception stops working at its
//!   expiry on every replica even while the controller is down.
//! - An exception lives at most [`MAX_LIFETIME`] from its creation. The API
//!   server checks `duration`; an `expiresAt` further out makes the
//!   exception `Invalid` (it never works), so that editing `expiresAt`
//!   cannot stretch an approval.
//! - Uses are recorded with at most one status write per
//!   [`BATCH_INTERVAL`] per exception, except the first use (recorded at
//!   once, with one `ExceptionUsed` event) and uses that ride on a write
//!   made anyway (the expiry).
//! - A reconciliation that changes nothing writes nothing: status times are
//!   whole seconds, as they read back from the API server.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::view::exception_uses::{BATCH_INTERVAL, PendingUses};
use crate::{
    api::{
        conditions::{self, DesiredCondition},
        merge_train_exception::{
            ExceptionPhase, MergeTrainExceptionSpec, MergeTrainExceptionStatus,
        },
    },
    controllers::Note,
};

/// The condition saying whether a pause or window names the train.
pub const TRAIN_KNOWN: &str = "TrainKnown";
/// How long a settled exception waits before it is looked at again: whether
/// its train is known is only read then (pauses and windows are not
/// watched by this controller); the expiry is scheduled exactly.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Wakes a little after the expiry rather than on it.
const AFTER_EXPIRY: Duration = Duration::from_millis(50);
/// An exception applied together with its pause (or before it) names a
/// train nobody holds yet: no warning until it is this old.
pub const UNKNOWN_TRAIN_GRACE: Duration = Duration::from_secs(30);
/// How often an active exception whose train nobody names looks again.
pub const UNKNOWN_TRAIN_RECHECK: Duration = Duration::from_secs(10);

/// Everything a decision reads.
#[derive(Clone, Debug)]
pub struct World<'a> {
    /// The exception's spec.
    pub spec: &'a MergeTrainExceptionSpec,
    /// Its current status.
    pub status: &'a MergeTrainExceptionStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// Whether a `MergeTrainPause` or `ChangeWindow` in the namespace names
    /// the train.
    pub train_known: bool,
    /// Uses the gate queued on this replica, not recorded yet.
    pub pending: Option<&'a PendingUses>,
    /// When this replica last recorded uses of this exception.
    pub recorded_at: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
}

/// The next status, the events it is worth, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write when it differs from the current one.
    pub status: MergeTrainExceptionStatus,
    /// Events to publish once it is written.
    pub notes: Vec<Note>,
    /// The pending uses `status` records (to take off the queue once
    /// written).
    pub recorded: Option<PendingUses>,
    /// When to reconcile again; `None`: on the next change.
    pub requeue_after: Option<Duration>,
}

/// Decides the next status of an exception.
pub fn decide(world: &World) -> Decision {
    let current = world.status;
    let spec = world.spec;
    let end = spec.expiry(world.created);
    let phase = match &end {
        Err(_) => ExceptionPhase::Invalid,
        Ok(end) if world.now >= *end => ExceptionPhase::Expired,
        Ok(_) => ExceptionPhase::Active,
    };
    let subject = spec.subject();
    let train = &spec.train;
    let ready = match (&end, phase) {
        (Err(error), _) => {
            DesiredCondition::new(conditions::READY, false, "InvalidSpec", error.clone())
        }
        (Ok(end), ExceptionPhase::Expired) => DesiredCondition::new(
            conditions::READY,
            false,
            "Expired",
            format!("expired at {end}; {subject} waits like any other while train {train} is held"),
        ),
        (Ok(end), _) => DesiredCondition::new(
            conditions::READY,
            true,
            "Active",
            format!("{subject} may pass train {train} while it is held, until {end}"),
        ),
    };
    let grace = SignedDuration::try_from(UNKNOWN_TRAIN_GRACE).unwrap_or_default();
    let young = world
        .created
        .and_then(|created| created.checked_add(grace).ok())
        .is_some_and(|end| world.now < end);
    let known = if world.train_known {
        DesiredCondition::new(
            TRAIN_KNOWN,
            true,
            "TrainKnown",
            format!("a MergeTrainPause or ChangeWindow in this namespace names train {train}"),
        )
    } else if young {
        DesiredCondition::new(
            TRAIN_KNOWN,
            false,
            "NotYetKnown",
            format!("no MergeTrainPause or ChangeWindow in this namespace names train {train} yet"),
        )
    } else {
        DesiredCondition::new(
            TRAIN_KNOWN,
            false,
            "UnknownTrain",
            format!(
                "no MergeTrainPause or ChangeWindow in this namespace names train {train}: check spec.train (an exception only affects the trains of its own namespace)"
            ),
        )
    };
    let mut status = MergeTrainExceptionStatus {
        observed_generation: world.generation,
        phase: Some(phase),
        expires_at: end.as_ref().ok().map(|end| Time(*end)),
        uses: current.uses,
        first_used: current.first_used.clone(),
        last_used: current.last_used.clone(),
        conditions: conditions::merge(
            &current.conditions,
            &[ready, known],
            world.generation,
            &Time(world.now),
        ),
    };
    let write_anyway = status != *current;

    let pending = world.pending.filter(|pending| pending.count > 0);
    let batch_due = world
        .recorded_at
        .map(|at| at.checked_add(SignedDuration::try_from(BATCH_INTERVAL).unwrap_or_default()))
        .and_then(Result::ok);
    let record = pending.filter(|_| {
        write_anyway || current.uses == 0 || batch_due.is_none_or(|due| world.now >= due)
    });
    if let Some(uses) = record {
        status.uses = current.uses.saturating_add(uses.count);
        status.first_used = current
            .first_used
            .clone()
            .or_else(|| Some(whole_second(uses.first)));
        let last = whole_second(uses.last);
        status.last_used = Some(match &current.last_used {
            Some(before) if before.0 > last.0 => before.clone(),
            _ => last,
        });
    }

    let mut notes = Vec::new();
    if current.phase != Some(phase) {
        notes.push(match (&end, phase) {
            (Err(error), _) => Note::warning("InvalidSpec", error.clone()),
            (Ok(end), ExceptionPhase::Expired) => Note::normal(
                "ExceptionExpired",
                format!(
                    "expired at {end} after {} uses; {subject} no longer passes train {train}",
                    status.uses
                ),
            ),
            (Ok(end), _) => Note::normal(
                "ExceptionActive",
                format!(
                    "{subject} may pass train {train} while it is held, until {end}; approved by {}: {}",
                    spec.approved_by, spec.reason
                ),
            ),
        });
    }
    let warned = conditions::find(&current.conditions, TRAIN_KNOWN)
        .is_some_and(|c| c.reason == "UnknownTrain");
    if phase == ExceptionPhase::Active && !world.train_known && !young && !warned {
        notes.push(Note::warning(
            "UnknownTrain",
            format!(
                "no MergeTrainPause or ChangeWindow in this namespace names train {train}; {subject} passes nothing until one does: check spec.train"
            ),
        ));
    }
    if let Some(uses) = record
        && current.uses == 0
    {
        notes.push(Note::normal(
            "ExceptionUsed",
            format!(
                "{subject} passed train {train}, held by {}, at {} (approved by {})",
                uses.held_by,
                whole_second(uses.first).0,
                spec.approved_by
            ),
        ));
    }

    let mut requeue_after = match (&end, phase) {
        (Ok(end), ExceptionPhase::Active) => {
            Some((until(world.now, *end) + AFTER_EXPIRY).min(RESYNC))
        }
        _ => None,
    };
    if phase == ExceptionPhase::Active && !world.train_known {
        requeue_after = requeue_after.map(|wait| wait.min(UNKNOWN_TRAIN_RECHECK));
    }
    if pending.is_some()
        && record.is_none()
        && let Some(due) = batch_due
    {
        let wait = until(world.now, due);
        requeue_after = Some(requeue_after.map_or(wait, |other| other.min(wait)));
    }
    Decision {
        status,
        notes,
        recorded: record.cloned(),
        requeue_after,
    }
}

/// `at` without its fraction of a second, as a status time reads back.
fn whole_second(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

/// The time from `now` to `then`, zero when it has passed.
fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
