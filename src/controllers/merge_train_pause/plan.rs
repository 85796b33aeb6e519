//! The pure state machine of a `MergeTrainPause`: from the pause, whether it
//! is being deleted, the alarms of its resume condition and the time, what
//! to do next. No I/O and no clock.
//!
//! A pause goes `Pausing -> Paused -> Resuming -> Resumed`. Every provider
//! call is planned by [`decide`] as a [`Plan::Call`], carried out by the
//! shell, and its outcome turned into the next status by [`record`]:
//! - `Prepare` reads what must be restored later and records it (phase
//!   `Pausing`) *before* anything is changed, so that a crash after the
//!   change cannot lose the state to restore;
//! - `Pause` and `Resume` are idempotent, so a call repeated after a crash
//!   (or a conflict on the status write) does no harm;
//! - a failed call is counted in `status.failures` and tried again after an
//!   exponential backoff (`status.nextAttemptAt`); after
//!   [`FAILED_AFTER`] failures in a row the phase is `Failed`, still retried.
//!
//! A pause that is deleted resumes its train once and only then lets its
//! finalizer go ([`Plan::Release`]). A pause that never recorded the state
//! to restore (`status.preparedAt`) has changed nothing, so it lets go at
//! once: a provider that refuses every call (a wrong token) cannot hold a
//! deletion that has nothing to undo. One that did change the train keeps
//! its finalizer until the resume succeeds, and says why it cannot yet.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{
        alarm::AlarmState,
        common::micro_time,
        conditions::{self, DesiredCondition},
        merge_train_pause::{
            MergeTrainPauseSpec, MergeTrainPauseStatus, PausePhase, ProviderReport, RestoreState,
        },
    },
    controllers::{Note, merge_train_pause::FINALIZER},
};

/// Failures in a row after which the phase says `Failed`.
pub const FAILED_AFTER: u32 = 3;
/// The first retry waits this long; each further one twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// The longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(120);
/// How long a settled pause waits before it is looked at again: a safety
/// net, watches and the scheduled expiry do the real work.
pub const RESYNC: Duration = Duration::from_secs(300);

/// A provider call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read and record the state to restore; change nothing.
    Prepare,
    /// Pause the train.
    Pause,
    /// Resume the train to the recorded state.
    Resume,
}

/// What a successful provider call reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Whether the train runs after the call, when the provider can tell.
    pub active: Option<bool>,
    /// The state to restore later (from `Prepare` only).
    pub restore: Option<RestoreState>,
    /// What the provider said, for people.
    pub message: String,
}

/// An alarm of the resume condition, as read from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearReading {
    /// The Alarm's name.
    pub name: String,
    /// Its state; never evaluated: none.
    pub state: Option<AlarmState>,
    /// When it entered that state.
    pub since: Option<Timestamp>,
}

/// Everything a decision reads.
#[derive(Clone, Debug)]
pub struct World<'a> {
    /// The pause's spec.
    pub spec: &'a MergeTrainPauseSpec,
    /// Its current status.
    pub status: &'a MergeTrainPauseStatus,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.creationTimestamp`, from which `duration` counts.
    pub created: Option<Timestamp>,
    /// The pause is being deleted.
    pub deleting: bool,
    /// The alarms `spec.resumeWhen` selects.
    pub alarms: &'a [ClearReading],
    /// Alarms named but not found, or a selector that does not parse.
    pub missing: &'a [String],
    /// Now.
    pub now: Timestamp,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Call the provider, then pass the outcome to [`record`].
    Call(Operation),
    /// Write this status (when it differs) and wait.
    Settle(Box<Decision>),
    /// The train is resumed and the pause is being deleted: remove the
    /// finalizer.
    Release,
}

/// A status to write, the events to publish, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The next status.
    pub status: MergeTrainPauseStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// When to reconcile again.
    pub requeue_after: Duration,
    /// Remove the finalizer after writing the status.
    pub release: bool,
}

/// When the pause ends by the clock: `spec.expiresAt`, or creation plus
/// `spec.duration`.
pub fn expires_at(world: &World) -> Option<Timestamp> {
    if let Some(at) = &world.spec.expires_at {
        return Some(at.0);
    }
    let duration = SignedDuration::try_from(world.spec.duration?.get()).ok()?;
    let end = world.created?.checked_add(duration).ok()?;
    // Status times are whole seconds: round up, so that the expiry written
    // reads back equal (a settled pause writes nothing) and is never early.
    let whole = end
        .as_second()
        .saturating_add(i64::from(end.subsec_nanosecond() > 0));
    Timestamp::from_second(whole).ok()
}

/// Whether the resume condition holds, and if not yet, when it might.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ResumeCheck {
    met: bool,
    /// All selected alarms are OK and will have been OK long enough then.
    recheck_at: Option<Timestamp>,
    /// Why it does not hold yet.
    waiting_for: Option<String>,
}

fn resume_check(world: &World) -> ResumeCheck {
    let not_yet = |why: String| ResumeCheck {
        met: false,
        recheck_at: None,
        waiting_for: Some(why),
    };
    let Some(condition) = &world.spec.resume_when else {
        return ResumeCheck {
            met: false,
            recheck_at: None,
            waiting_for: None,
        };
    };
    if !world.missing.is_empty() {
        return not_yet(world.missing.join("; "));
    }
    if world.alarms.is_empty() {
        return not_yet("no alarm matches spec.resumeWhen.alarms".to_owned());
    }
    let Ok(clear_for) = SignedDuration::try_from(condition.clear_for.get()) else {
        return not_yet("spec.resumeWhen.clearFor is too long".to_owned());
    };
    let mut clear_at = Timestamp::MIN;
    for alarm in world.alarms {
        match (alarm.state, alarm.since) {
            (Some(AlarmState::Ok), Some(since)) => {
                clear_at = clear_at.max(since.checked_add(clear_for).unwrap_or(Timestamp::MAX));
            }
            (Some(AlarmState::Ok), None) => {
                return not_yet(format!("alarm {} has no transition time", alarm.name));
            }
            (state, _) => {
                let state = state.map_or_else(|| "not evaluated".to_owned(), |s| s.to_string());
                return not_yet(format!("alarm {} is {state}", alarm.name));
            }
        }
    }
    if clear_at <= world.now {
        ResumeCheck {
            met: true,
            recheck_at: None,
            waiting_for: None,
        }
    } else {
        ResumeCheck {
            met: false,
            recheck_at: Some(clear_at),
            waiting_for: Some(format!(
                "alarms OK since less than {}; clear at {clear_at}",
                condition.clear_for
            )),
        }
    }
}

/// Why a pause ends now, if it does.
fn ending(world: &World, check: &ResumeCheck) -> Option<String> {
    if world.deleting {
        return Some("the pause was deleted".to_owned());
    }
    if let Some(at) = expires_at(world)
        && at <= world.now
    {
        return Some(format!("the pause expired at {at}"));
    }
    check.met.then(|| {
        let clear_for = world
            .spec
            .resume_when
            .as_ref()
            .map(|c| c.clear_for.to_string())
            .unwrap_or_default();
        format!("its alarms have been OK for {clear_for}")
    })
}

/// The time from `now` to `then`, zero when it has passed.
fn until(now: Timestamp, then: Timestamp) -> Duration {
    let millis = then.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// The wait before retry number `failures` (1 for the first).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Whether the pause may have changed its train: the state to restore was
/// recorded (the step just before any change), or the provider confirmed
/// the pause. Until then there is nothing to resume.
fn holds_train(status: &MergeTrainPauseStatus) -> bool {
    status.prepared_at.is_some()
        || matches!(
            status.phase,
            Some(PausePhase::Paused | PausePhase::Resuming)
        )
}

/// Decides the next step.
pub fn decide(world: &World) -> Plan {
    let check = resume_check(world);
    let ended = ending(world, &check);
    let phase = world.status.phase;
    let new_generation = world.status.observed_generation != Some(world.generation);
    let holds = holds_train(world.status);

    let operation = match (&ended, phase) {
        (Some(_), Some(PausePhase::Resumed)) if world.deleting => return Plan::Release,
        (Some(_), Some(PausePhase::Resumed)) => {
            return Plan::Settle(Box::new(settle(
                world,
                PausePhase::Resumed,
                Vec::new(),
                &check,
            )));
        }
        // Never touched the train: nothing to undo, whatever the provider
        // answers (failures, backoff) or would answer.
        (Some(_), _) if !holds && world.deleting => return Plan::Release,
        (Some(why), _) if !holds => {
            let mut status = world.status.clone();
            status.failures = 0;
            status.next_attempt_at = None;
            return Plan::Settle(Box::new(settle_from(
                world,
                status,
                PausePhase::Resumed,
                vec![Note::normal(
                    "Resumed",
                    format!("train {} was never paused: {why}", world.spec.train.train),
                )],
                &check,
            )));
        }
        (Some(_), _) => Operation::Resume,
        // A resumed pause starts again only when its spec changes and the
        // new spec has not ended.
        (None, Some(PausePhase::Resumed)) if !new_generation => {
            return Plan::Settle(Box::new(settle(
                world,
                PausePhase::Resumed,
                Vec::new(),
                &check,
            )));
        }
        (None, Some(PausePhase::Paused)) => {
            return Plan::Settle(Box::new(settle(
                world,
                PausePhase::Paused,
                Vec::new(),
                &check,
            )));
        }
        (None, None | Some(PausePhase::Resumed)) => Operation::Prepare,
        // A failed `Prepare` recorded nothing to restore: read it again
        // before changing anything.
        (None, Some(_)) if !holds => Operation::Prepare,
        (None, Some(_)) => Operation::Pause,
    };

    // Back off after failures, whatever the call.
    if world.status.failures > 0
        && let Some(next) = &world.status.next_attempt_at
        && next.0 > world.now
    {
        let mut decision = settle(
            world,
            world.status.phase.unwrap_or(PausePhase::Pausing),
            Vec::new(),
            &check,
        );
        decision.requeue_after = until(world.now, next.0);
        return Plan::Settle(Box::new(decision));
    }
    Plan::Call(operation)
}

/// The status after `operation` finished with `outcome`.
pub fn record(world: &World, operation: Operation, outcome: Result<Report, String>) -> Decision {
    let check = resume_check(world);
    let train = &world.spec.train.train;
    let provider = format!("{:?}", world.spec.train.provider.type_);
    match outcome {
        Ok(report) => {
            let (phase, note) = match operation {
                Operation::Prepare => (
                    PausePhase::Pausing,
                    Note::normal(
                        "Pausing",
                        format!(
                            "pausing train {train} through {provider}: {}",
                            world.spec.reason
                        ),
                    ),
                ),
                Operation::Pause => (
                    PausePhase::Paused,
                    Note::normal(
                        "Paused",
                        format!("train {train} paused: {}", report.message),
                    ),
                ),
                Operation::Resume => (
                    PausePhase::Resumed,
                    Note::normal(
                        "Resumed",
                        format!(
                            "train {train} resumed ({}): {}",
                            ending(world, &check).unwrap_or_default(),
                            report.message
                        ),
                    ),
                ),
            };
            let mut next = world.status.clone();
            next.failures = 0;
            next.next_attempt_at = None;
            next.provider = Some(ProviderReport {
                at: micro_time(world.now),
                active: report.active,
                message: report.message,
            });
            match operation {
                Operation::Prepare => {
                    next.restore = report.restore;
                    next.prepared_at = Some(micro_time(world.now));
                    next.paused_at = None;
                    next.resumed_at = None;
                }
                Operation::Pause => next.paused_at = Some(micro_time(world.now)),
                Operation::Resume => {
                    // Restored: the pause holds nothing any more.
                    next.prepared_at = None;
                    next.resumed_at = Some(micro_time(world.now));
                }
            }
            let mut decision = settle_from(world, next, phase, vec![note], &check);
            decision.release = world.deleting && operation == Operation::Resume;
            if operation == Operation::Prepare {
                // Our own write's watch event brings the pause back for the
                // actual pause.
                decision.requeue_after = Duration::ZERO;
            }
            decision
        }
        Err(error) => {
            let failures = world.status.failures.saturating_add(1);
            let wait = backoff(failures);
            let phase = if failures >= FAILED_AFTER {
                PausePhase::Failed
            } else if operation == Operation::Resume {
                PausePhase::Resuming
            } else {
                PausePhase::Pausing
            };
            let mut next = world.status.clone();
            next.failures = failures;
            let retry_at = micro_time(
                world
                    .now
                    .checked_add(SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX))
                    .unwrap_or(Timestamp::MAX),
            );
            next.next_attempt_at = Some(retry_at.clone());
            next.provider = Some(ProviderReport {
                at: micro_time(world.now),
                active: None,
                message: error.clone(),
            });
            let verb = match operation {
                Operation::Prepare => "read the state of",
                Operation::Pause => "pause",
                Operation::Resume => "resume",
            };
            let failed = format!(
                "cannot {verb} train {train} through {provider} (failure {failures}, next try at {}): {error}",
                retry_at.0
            );
            let note = if world.deleting && operation == Operation::Resume {
                Note::warning(
                    "ResumeBlocked",
                    format!("{failed}; {}", deletion_waits(train)),
                )
            } else {
                Note::warning("ProviderFailed", failed)
            };
            let mut decision = settle_from(world, next, phase, vec![note], &check);
            decision.requeue_after = wait;
            decision
        }
    }
}

/// What a deletion waiting for a resume that fails needs from a person.
fn deletion_waits(train: &str) -> String {
    format!(
        "the pause is deleted only once train {train} has resumed: fix the provider \
         (its settings or Secret), or remove the finalizer {FINALIZER} to delete the \
         pause and leave the train as it is"
    )
}

fn settle(world: &World, phase: PausePhase, notes: Vec<Note>, check: &ResumeCheck) -> Decision {
    settle_from(world, world.status.clone(), phase, notes, check)
}

/// Fills in what every status carries: phase, expiry, conditions, and when
/// to look again.
fn settle_from(
    world: &World,
    mut status: MergeTrainPauseStatus,
    phase: PausePhase,
    notes: Vec<Note>,
    check: &ResumeCheck,
) -> Decision {
    let expires = expires_at(world);
    status.phase = Some(phase);
    status.observed_generation = Some(world.generation);
    status.expires_at = expires.map(Time);

    let train = &world.spec.train.train;
    let holds = match (expires, &check.waiting_for) {
        (Some(at), Some(why)) => format!("until {at} or resumeWhen ({why})"),
        (Some(at), None) => format!("until {at}"),
        (None, Some(why)) => format!("until resumeWhen holds ({why})"),
        (None, None) => "until deleted".to_owned(),
    };
    let last_error = status
        .provider
        .as_ref()
        .filter(|_| status.failures > 0)
        .map(|report| report.message.as_str());
    let (ready, reason, message) = match (phase, last_error) {
        (PausePhase::Paused, _) => (true, "Paused", format!("train {train} is paused {holds}")),
        (PausePhase::Resumed, _) => (true, "Resumed", format!("train {train} runs")),
        // Being deleted, and the resume fails: the finalizer stays, say why.
        (PausePhase::Resuming | PausePhase::Failed, Some(error))
            if world.deleting && holds_train(&status) =>
        {
            (
                false,
                "ResumeBlocked",
                format!(
                    "cannot resume train {train}: {error}; {}",
                    deletion_waits(train)
                ),
            )
        }
        (PausePhase::Pausing, _) => (false, "Pausing", format!("pausing train {train}")),
        (PausePhase::Resuming, _) => (false, "Resuming", format!("resuming train {train}")),
        (PausePhase::Failed, _) => (
            false,
            "ProviderFailed",
            format!("the provider keeps failing for train {train}"),
        ),
    };
    let degraded = match (status.failures, &status.provider) {
        (0, _) => DesiredCondition::new(
            conditions::DEGRADED,
            false,
            "ProviderOk",
            "the provider answers",
        ),
        (n, report) => DesiredCondition::new(
            conditions::DEGRADED,
            true,
            "ProviderFailed",
            format!(
                "{n} failed call(s) in a row: {}",
                report
                    .as_ref()
                    .map(|r| r.message.as_str())
                    .unwrap_or_default()
            ),
        ),
    };
    status.conditions = conditions::merge(
        &world.status.conditions,
        &[
            DesiredCondition::new(conditions::READY, ready, reason, message.clone()),
            DesiredCondition::new(conditions::RECONCILING, !ready, reason, message),
            degraded,
        ],
        Some(world.generation),
        &Time(world.now),
    );

    let requeue_after = match phase {
        PausePhase::Paused => [expires, check.recheck_at]
            .into_iter()
            .flatten()
            .map(|at| until(world.now, at))
            .min()
            .map_or(RESYNC, |wait| wait.min(RESYNC)),
        _ => RESYNC,
    };
    Decision {
        status,
        notes,
        requeue_after,
        release: false,
    }
}

#[cfg(test)]
mod tests;
