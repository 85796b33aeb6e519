//! Status conditions shared by every kind, following the Kubernetes API
//! conventions and kstatus (`Ready`, `Reconciling`, `Stalled`), so that
//! `kubectl wait --for=condition=Ready`, Flux and Argo CD understand them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object has reached what its spec asks for and is healthy.
pub const READY: &str = "Ready";
/// The controller is working towards the spec (kstatus `Reconciling`).
pub const RECONCILING: &str = "Reconciling";
/// The controller cannot make progress without a change from a person
/// (kstatus `Stalled`).
pub const STALLED: &str = "Stalled";
/// Something attached to the object is unhealthy (an alarm, a provider).
pub const DEGRADED: &str = "Degraded";

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell.
    Unknown,
}

impl ConditionStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// What a controller wants one condition to say; the time is filled in by
/// [`merge`], which keeps it stable while the status does not change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// The condition type, e.g. [`READY`].
    pub type_: &'static str,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// A short UpperCamelCase reason.
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_` with `status`, `reason` and `message`.
    pub fn new(
        type_: &'static str,
        status: impl Into<ConditionStatus>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        DesiredCondition {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
        }
    }
}

/// Builds the new condition list from the current one: each desired
/// condition keeps its `lastTransitionTime` when its status is unchanged, so
/// that a reconcile that changes nothing writes nothing. Conditions not named
/// in `desired` are dropped: each controller owns its conditions.
pub fn merge(
    current: &[Condition],
    desired: &[DesiredCondition],
    observed_generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let previous = current.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match previous {
                Some(prev) if prev.status == want.status.as_str() => {
                    prev.last_transition_time.clone()
                }
                _ => now.clone(),
            };
            Condition {
                type_: want.type_.to_owned(),
                status: want.status.as_str().to_owned(),
                reason: want.reason.to_owned(),
                message: want.message.clone(),
                observed_generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let first = merge(
            &[],
            &[DesiredCondition::new(READY, true, "Dialed", "at target")],
            Some(1),
            &at(100),
        );
        let second = merge(
            &first,
            &[DesiredCondition::new(
                READY,
                true,
                "Dialed",
                "still at target",
            )],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].message, "still at target");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge(
            &[],
            &[DesiredCondition::new(READY, true, "Dialed", "")],
            None,
            &at(100),
        );
        let second = merge(
            &first,
            &[DesiredCondition::new(READY, false, "RolledBack", "")],
            None,
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(200));
        assert!(!is_true(&second, READY));
        assert!(find(&second, STALLED).is_none());
    }
}
