//! What the courier decides, without I/O: which notifiers route a decision,
//! which group it joins, when a group is due, what the rate limit lets
//! through, and what stays pending after a delivery.
//!
//! Invariants:
//! - a group is keyed by (action, subject): every decision caused by one
//!   alarm joins the alarm's group, so 100 dials rolled back by one alarm
//!   are one message (one PagerDuty alert);
//! - a group's dedup key depends only on the namespace, the notifier and
//!   the subject, never on time or on the replica: a retry, a later group of
//!   the same alarm, or a successor leader's delivery joins the same
//!   PagerDuty alert, and the alarm's resolve finds it;
//! - a group leaves the pending list only once every sink accepted it;
//!   a sink that accepted it is not sent it again;
//! - the pending list (what the status records) never exceeds
//!   [`MAX_PENDING`]: past it, decisions join an overflow group.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};

use super::escalation;
use crate::api::{
    common::micro_time,
    weblab_notifier::{
        DecisionRecord, MAX_GROUP_OBJECTS, MAX_PENDING, NotificationAction, NotificationFilter,
        PendingNotification,
    },
};

/// The reason of an alarm's return to `OK`: it resolves the alarm's alert.
pub const ALARM_CLEARED: &str = "AlarmCleared";
/// The subject of the group that collects decisions past [`MAX_PENDING`].
pub const OVERFLOW: &str = "overflow";
/// PagerDuty's longest `dedup_key`.
const MAX_DEDUP_KEY: usize = 255;
/// The wait before a failed delivery is tried again, doubled per failure.
const FIRST_REDELIVERY: Duration = Duration::from_secs(5);
/// The longest wait between deliveries of a failing group.
const MAX_REDELIVERY: Duration = Duration::from_secs(300);

/// A decision on its way to the notifiers of its namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The object's namespace.
    pub namespace: String,
    /// The object's labels, for filters' selectors.
    pub labels: BTreeMap<String, String>,
    /// The decision as messages carry it.
    pub record: DecisionRecord,
    /// The one notifier it is addressed to, whatever its filter (an
    /// escalation's `notifier`); `None`: every notifier it passes.
    pub notifier: Option<String>,
}

/// Whether `filter` lets `decision` through; an error when its selector
/// does not parse (the API server accepts some that do not).
pub fn routes(filter: &NotificationFilter, decision: &Decision) -> Result<bool, String> {
    let record = &decision.record;
    if !filter.kinds.is_empty() && !filter.kinds.iter().any(|k| k.as_str() == record.kind) {
        return Ok(false);
    }
    if !filter.reasons.is_empty() && !filter.reasons.contains(&record.reason) {
        return Ok(false);
    }
    if let (Some(minimum), Some(severity)) = (filter.min_severity, record.evidence.severity)
        && !severity.at_least(minimum)
    {
        return Ok(false);
    }
    match &filter.selector {
        Some(selector) => {
            let selector: Selector = selector
                .clone()
                .try_into()
                .map_err(|error| format!("spec.filter.selector does not parse: {error}"))?;
            Ok(selector.matches(&decision.labels))
        }
        None => Ok(true),
    }
}

/// What a decision asks: a Warning triggers an alert, an alarm's return to
/// `OK` resolves it, anything else is a change.
pub fn action_of(record: &DecisionRecord) -> NotificationAction {
    if record.warning {
        NotificationAction::Trigger
    } else if record.reason == ALARM_CLEARED || record.reason == escalation::RESOLVED {
        NotificationAction::Resolve
    } else {
        NotificationAction::Change
    }
}

/// What a decision is grouped by: an escalation by its object (its page is
/// its own), others by the alarm that caused them, or else by the object
/// and the reason.
pub fn subject_of(record: &DecisionRecord) -> String {
    if record.reason == escalation::ESCALATED || record.reason == escalation::RESOLVED {
        return format!("escalation/{}/{}", record.kind, record.name);
    }
    match &record.evidence.alarm {
        Some(alarm) => format!("alarm/{alarm}"),
        None => format!("{}/{}/{}", record.kind, record.name, record.reason),
    }
}

/// The dedup key of `subject` for the notifier `namespace/notifier`:
/// readable when it fits PagerDuty's 255 characters, a SHA-256 otherwise.
pub fn dedup_key(namespace: &str, notifier: &str, subject: &str) -> String {
    let key = format!("weblab/{namespace}/{notifier}/{subject}");
    if key.len() <= MAX_DEDUP_KEY {
        return key;
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("weblab/{hex}")
}

/// A token bucket: `per_minute` messages a minute, in bursts of as many.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimiter {
    tokens: f64,
    at: Option<Timestamp>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            tokens: f64::INFINITY,
            at: None,
        }
    }
}

impl RateLimiter {
    /// Takes a token at `now`, or says when one will be there.
    pub fn take(&mut self, per_minute: u32, now: Timestamp) -> Result<(), Timestamp> {
        let capacity = f64::from(per_minute.max(1));
        let rate = capacity / 60.0;
        let elapsed = self
            .at
            .map(|at| now.duration_since(at).as_secs_f64().max(0.0))
            .unwrap_or(f64::INFINITY);
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
        Err(now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(1)))
    }
}

/// One group of decisions on its way.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// What the status records.
    pub pending: PendingNotification,
    /// When it is sent (or sent again).
    pub due: Timestamp,
    /// Being delivered: decisions of its subject open a new group.
    pub in_flight: bool,
    /// Deliveries that failed in a row.
    pub failures: u32,
}

/// The groups of one notifier, in the order they opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outbox {
    /// The groups.
    pub groups: Vec<Group>,
    /// The rate limit's state.
    pub limiter: RateLimiter,
    opened: u64,
}

/// Where a notifier's decisions go, for [`Outbox::add`].
pub struct Route<'a> {
    /// The notifier's namespace.
    pub namespace: &'a str,
    /// The notifier's name.
    pub notifier: &'a str,
    /// How long a group collects decisions.
    pub wait: Duration,
}

impl Outbox {
    /// A successor's outbox: what its predecessor recorded as pending, due
    /// at once, with the ids and dedup keys it had.
    pub fn restore(pending: &[PendingNotification], now: Timestamp) -> Self {
        Outbox {
            groups: pending
                .iter()
                .map(|pending| Group {
                    pending: pending.clone(),
                    due: now,
                    in_flight: false,
                    failures: 0,
                })
                .collect(),
            limiter: RateLimiter::default(),
            opened: 0,
        }
    }

    /// Adds `decision` to the open group of its action and subject, or
    /// opens one due `route.wait` from now.
    pub fn add(&mut self, route: &Route<'_>, decision: &Decision, now: Timestamp) {
        let record = &decision.record;
        let action = action_of(record);
        let mut subject = subject_of(record);
        let open = |groups: &[Group], subject: &str| {
            groups.iter().position(|g| {
                !g.in_flight && g.pending.action == action && g.pending.subject == subject
            })
        };
        let mut found = open(&self.groups, &subject);
        // Room is kept for the overflow groups (a trigger, a change, a
        // resolve); when even they cannot open, the newest group waiting
        // takes the decision.
        if found.is_none() && self.groups.len() + 3 > MAX_PENDING {
            subject = OVERFLOW.to_owned();
            found = open(&self.groups, &subject);
            if found.is_none() && self.groups.len() >= MAX_PENDING {
                found = self.groups.iter().rposition(|g| !g.in_flight);
            }
        }
        let object = format!("{}/{}", record.kind, record.name);
        if let Some(index) = found {
            let pending = &mut self.groups[index].pending;
            pending.count = pending.count.saturating_add(1);
            if !pending.objects.contains(&object) && pending.objects.len() < MAX_GROUP_OBJECTS {
                pending.objects.push(object);
            }
            return;
        }
        self.opened += 1;
        let opened_at = micro_time(now);
        let id = format!(
            "{}-{}",
            opened_at.0.as_millisecond(),
            self.opened % 1_000_000
        );
        let due = now.checked_add(route.wait).unwrap_or(now);
        self.groups.push(Group {
            pending: PendingNotification {
                id,
                action,
                dedup_key: dedup_key(route.namespace, route.notifier, &subject),
                subject,
                opened_at,
                first: record.clone(),
                objects: vec![object],
                count: 1,
                delivered: Vec::new(),
            },
            due,
            in_flight: false,
            failures: 0,
        });
    }

    /// The groups to deliver at `now`, marked in flight: those due, as far
    /// as the rate limit lets them.
    pub fn take_due(&mut self, per_minute: u32, now: Timestamp) -> Vec<PendingNotification> {
        let mut due = Vec::new();
        for group in &mut self.groups {
            if group.in_flight || group.due > now {
                continue;
            }
            match self.limiter.take(per_minute, now) {
                Ok(()) => {
                    group.in_flight = true;
                    due.push(group.pending.clone());
                }
                Err(available) => {
                    // Later groups wait too: messages keep their order.
                    for waiting in self
                        .groups
                        .iter_mut()
                        .filter(|g| !g.in_flight && g.due <= now)
                    {
                        waiting.due = available;
                    }
                    break;
                }
            }
        }
        due
    }

    /// Records the outcome of delivering the group `id`: the sinks that
    /// accepted it, and whether some refused. The group leaves when none
    /// is left to accept it; otherwise it is due again after a backoff
    /// spread by `jitter` (in `[0, 1)`). Returns it when it left.
    pub fn settle(
        &mut self,
        id: &str,
        accepted: &[String],
        failed: bool,
        jitter: f64,
        now: Timestamp,
    ) -> Option<PendingNotification> {
        let index = self.groups.iter().position(|g| g.pending.id == id)?;
        let group = &mut self.groups[index];
        for sink in accepted {
            if !group.pending.delivered.contains(sink) {
                group.pending.delivered.push(sink.clone());
            }
        }
        group.in_flight = false;
        if !failed {
            return Some(self.groups.remove(index).pending);
        }
        group.failures += 1;
        let doublings = (group.failures - 1).min(16);
        let wait = FIRST_REDELIVERY
            .saturating_mul(1 << doublings)
            .min(MAX_REDELIVERY)
            .mul_f64(0.8 + 0.2 * jitter.clamp(0.0, 1.0));
        group.due = now.checked_add(wait).unwrap_or(now);
        None
    }

    /// When something is next due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.groups
            .iter()
            .filter(|g| !g.in_flight)
            .map(|g| g.due)
            .min()
    }

    /// What the status records: the oldest [`MAX_PENDING`] groups (more
    /// only when every one of them is being delivered).
    pub fn pending(&self) -> Vec<PendingNotification> {
        self.groups
            .iter()
            .take(MAX_PENDING)
            .map(|g| g.pending.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
