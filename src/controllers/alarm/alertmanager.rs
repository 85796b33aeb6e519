//! The Alertmanager source: what a webhook notification (payload version 4)
//! means for an alarm. Pure: matching, and the state an alarm's received
//! alerts put it in.
//!
//! Two records, so that no evidence is lost and status stays bounded:
//! - **Counts per group.** Every notification carries the whole current
//!   state of its group (`groupKey`), so the latest one of a group says how
//!   many of the alarm's alerts fire there, however many there are; alerts
//!   Alertmanager truncated (`truncatedAlerts`, its `max_alerts`) count as
//!   firing when the group's common labels show they match, and as
//!   `unknown` otherwise.
//! - **Alerts in detail**, by fingerprint: the [`MAX_RECORDED`] most
//!   recently received, for people to read. `firing` records or refreshes
//!   one, `resolved` removes it.
//!
//! The alarm is `ALARM` while a fresh detailed alert or a fresh group count
//! says a matching alert fires, `INSUFFICIENT_DATA` when all such evidence
//! went without a re-send for longer than `staleAfter` (the pipeline may be
//! broken; nothing proves the problem is over) or while truncated alerts
//! may match, and `OK` when there is none.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use regex::Regex;

use sha2::{Digest, Sha256};

use crate::api::{
    alarm::{AlarmState, AlarmStatus, AlertGroup, LabelMatcher, MatchOperator, ObservedAlert},
    common::micro_time,
};
pub use crate::server::notification::{Alert, AlertStatus, Notification};

/// Most alerts kept in detail per alarm; beyond this the least recently
/// received leave the detail, never the counts.
pub const MAX_RECORDED: usize = 100;
/// Most groups counted per alarm; beyond this the least recently notified
/// groups are merged into one, which keeps their counts.
const MAX_GROUPS: usize = 64;
/// The key of the group that holds the counts of merged groups.
const MERGED_GROUPS: &str = "(older groups)";
/// Longest group key kept as it is; longer ones are kept as a digest.
const MAX_GROUP_KEY: usize = 128;
/// Most alert names a reason lists.
const NAMES_IN_REASON: usize = 10;

/// An alarm's label matchers, ready to test alerts.
#[derive(Debug)]
pub struct Matchers(Vec<(LabelMatcher, Option<Regex>)>);

impl Matchers {
    /// Compiles `matchers`; a regular expression that does not parse is an
    /// error naming it.
    pub fn compile(matchers: &[LabelMatcher]) -> Result<Self, String> {
        matchers
            .iter()
            .map(|m| match m.operator.unwrap_or_default() {
                MatchOperator::Matches | MatchOperator::NotMatches => {
                    // Alertmanager anchors matcher expressions at both ends.
                    Regex::new(&format!("^(?:{})$", m.value))
                        .map(|re| (m.clone(), Some(re)))
                        .map_err(|error| {
                            format!("matcher {} {:?} does not parse: {error}", m.name, m.value)
                        })
                }
                MatchOperator::Equal | MatchOperator::NotEqual => Ok((m.clone(), None)),
            })
            .collect::<Result<_, _>>()
            .map(Matchers)
    }

    /// Whether every matcher holds for `labels` (a missing label reads as
    /// the empty string, as in Alertmanager).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(m, re)| holds(m, re.as_ref(), labels))
    }
}

fn holds(m: &LabelMatcher, re: Option<&Regex>, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&m.name).map_or("", String::as_str);
    match (m.operator.unwrap_or_default(), re) {
        (MatchOperator::Equal, _) => value == m.value,
        (MatchOperator::NotEqual, _) => value != m.value,
        (MatchOperator::Matches, Some(re)) => re.is_match(value),
        (MatchOperator::NotMatches, Some(re)) => !re.is_match(value),
        // compile() always sets the expression of regex operators.
        (MatchOperator::Matches | MatchOperator::NotMatches, None) => false,
    }
}

/// Whether an alert with `labels` may concern an alarm in `namespace`. Without
/// a namespace label every alert may (Alertmanager's alerts carry no
/// trustworthy origin, and an Alarm in any namespace can name any labels);
/// with one, only alerts whose label `namespace_label` equals `namespace`,
/// so that a tenant's alarm cannot read or react to another namespace's
/// alerts.
pub fn in_namespace(
    labels: &BTreeMap<String, String>,
    namespace_label: Option<&str>,
    namespace: &str,
) -> bool {
    namespace_label.is_none_or(|label| labels.get(label).is_some_and(|value| value == namespace))
}

/// Which alerts concern one alarm: its matchers, within its namespace.
pub struct AlarmFilter<'a> {
    /// The alarm's compiled matchers.
    pub matchers: &'a Matchers,
    /// The label naming an alert's namespace, when configured.
    pub namespace_label: Option<&'a str>,
    /// The alarm's namespace.
    pub namespace: &'a str,
}

impl AlarmFilter<'_> {
    /// Whether an alert with `labels` concerns the alarm.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        in_namespace(labels, self.namespace_label, self.namespace) && self.matchers.matches(labels)
    }

    /// Whether every alert having `common` labels (and maybe others)
    /// concerns the alarm: `None` when it depends on labels not in
    /// `common`.
    fn decide(&self, common: &BTreeMap<String, String>) -> Option<bool> {
        let namespace = self
            .namespace_label
            .map(|label| common.get(label).map(|value| value == self.namespace));
        let matchers = self.matchers.0.iter().map(|(m, re)| {
            common
                .contains_key(&m.name)
                .then(|| holds(m, re.as_ref(), common))
        });
        let mut decided = true;
        for answer in namespace.into_iter().chain(matchers) {
            match answer {
                Some(false) => return Some(false),
                Some(true) => {}
                None => decided = false,
            }
        }
        decided.then_some(true)
    }
}

/// What one notification tells one alarm.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The group, as the alarm records it ([`group_key`]).
    pub group_key: String,
    /// The notification's alerts that concern the alarm, firing or
    /// resolved, in order.
    pub alerts: Vec<Alert>,
    /// Alerts Alertmanager truncated that concern the alarm (the group's
    /// common labels show it) while the group fires.
    pub truncated_matching: u32,
    /// Alerts Alertmanager truncated that may concern the alarm.
    pub truncated_unknown: u32,
}

/// The key an alarm records a notification's group under: the `groupKey`,
/// or its SHA-256 when longer than [`MAX_GROUP_KEY`] bytes.
pub fn group_key(notification: &Notification) -> String {
    let key = &notification.group_key;
    if key.len() <= MAX_GROUP_KEY {
        return key.clone();
    }
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// What `notification` tells the alarm `filter` selects for; `None` when it
/// tells it nothing: no alert concerns it and the alarm holds no count for
/// the group (`counted`), which the notification would replace.
pub fn delivery(
    notification: &Notification,
    filter: &AlarmFilter<'_>,
    counted: impl FnOnce(&str) -> bool,
) -> Option<Delivery> {
    let alerts: Vec<Alert> = notification
        .alerts
        .iter()
        .filter(|alert| filter.matches(&alert.labels))
        .cloned()
        .collect();
    let truncated = notification.truncated_alerts;
    let (truncated_matching, truncated_unknown) =
        if truncated == 0 || notification.status == AlertStatus::Resolved {
            (0, 0)
        } else {
            match filter.decide(&notification.common_labels) {
                Some(true) => (truncated, 0),
                Some(false) => (0, 0),
                None => (0, truncated),
            }
        };
    let key = group_key(notification);
    let tells = !alerts.is_empty() || truncated_matching + truncated_unknown > 0 || counted(&key);
    tells.then_some(Delivery {
        group_key: key,
        alerts,
        truncated_matching,
        truncated_unknown,
    })
}

/// An alarm's state from its records, and when it next changes by itself
/// (fresh evidence going stale).
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// The state.
    pub state: AlarmState,
    /// How many matching alerts fire, by the fresher of the two records.
    pub firing: usize,
    /// Why, for people.
    pub reason: String,
    /// How long until the next fresh record goes stale.
    pub stale_in: Option<Duration>,
}

/// Assesses the detailed `alerts` and the `groups`' counts at `now`.
pub fn assess(
    alerts: &[ObservedAlert],
    groups: &[AlertGroup],
    stale_after: Duration,
    now: jiff::Timestamp,
) -> Assessment {
    let age = |received: &Time| {
        now.duration_since(received.0)
            .try_into()
            .unwrap_or(Duration::ZERO)
    };
    let fresh = |received: &Time| age(received) <= stale_after;
    let fresh_alerts: Vec<&ObservedAlert> = alerts
        .iter()
        .filter(|alert| fresh(&alert.last_received))
        .collect();
    let fresh_groups: Vec<&AlertGroup> = groups
        .iter()
        .filter(|group| fresh(&group.last_received))
        .collect();
    let stale_in = alerts
        .iter()
        .map(|alert| &alert.last_received)
        .chain(groups.iter().map(|group| &group.last_received))
        .filter(|received| fresh(received))
        .map(|received| stale_after - age(received) + Duration::from_secs(1))
        .min();
    let counted = |groups: &[&AlertGroup], count: fn(&AlertGroup) -> u32| -> usize {
        groups.iter().map(|group| count(group) as usize).sum()
    };
    let firing = fresh_alerts
        .len()
        .max(counted(&fresh_groups, |group| group.firing));
    if firing > 0 {
        let mut names: Vec<String> = fresh_alerts
            .iter()
            .take(NAMES_IN_REASON)
            .map(|alert| label(alert))
            .collect();
        if firing > names.len() {
            names.push(format!("and {} more", firing - names.len()));
        }
        return Assessment {
            state: AlarmState::Alarm,
            firing,
            reason: format!("{firing} matching alert(s) firing: {}", names.join(", ")),
            stale_in,
        };
    }
    let unknown = counted(&fresh_groups, |group| group.unknown);
    if unknown > 0 {
        return Assessment {
            state: AlarmState::InsufficientData,
            firing: 0,
            reason: format!(
                "{unknown} alert(s) Alertmanager truncated may match, and their labels were not sent; raise max_alerts in the receiver or group by the labels the matchers name"
            ),
            stale_in,
        };
    }
    let all_groups: Vec<&AlertGroup> = groups.iter().collect();
    let stale = alerts
        .len()
        .max(counted(&all_groups, |group| group.firing + group.unknown));
    if stale > 0 {
        return Assessment {
            state: AlarmState::InsufficientData,
            firing: 0,
            reason: format!(
                "{stale} firing alert(s) not re-sent for more than {}s; check Alertmanager and its repeat_interval",
                stale_after.as_secs()
            ),
            stale_in: None,
        };
    }
    Assessment {
        state: AlarmState::Ok,
        firing: 0,
        reason: "no matching alert is firing".to_owned(),
        stale_in: None,
    }
}

fn label(alert: &ObservedAlert) -> String {
    match &alert.alertname {
        Some(name) => format!("{name} ({})", alert.fingerprint),
        None => alert.fingerprint.clone(),
    }
}

/// An alarm's two records of alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct Records {
    /// In detail, at most [`MAX_RECORDED`].
    pub alerts: Vec<ObservedAlert>,
    /// Counts per group.
    pub groups: Vec<AlertGroup>,
}

/// The records after `deliveries` (in the order they arrived) at `now`.
pub fn record(status: &AlarmStatus, deliveries: &[&Delivery], now: &Time) -> Records {
    let mut recorded: BTreeMap<String, ObservedAlert> = status
        .alerts
        .iter()
        .map(|alert| (alert.fingerprint.clone(), alert.clone()))
        .collect();
    let mut groups: BTreeMap<String, AlertGroup> = status
        .alert_groups
        .iter()
        .map(|group| (group.group_key.clone(), group.clone()))
        .collect();
    for delivery in deliveries {
        let mut firing = delivery.truncated_matching;
        for alert in &delivery.alerts {
            match alert.status {
                AlertStatus::Resolved => {
                    recorded.remove(&alert.fingerprint);
                }
                AlertStatus::Firing => {
                    firing = firing.saturating_add(1);
                    recorded.insert(alert.fingerprint.clone(), observed(alert, now));
                }
            }
        }
        if firing == 0 && delivery.truncated_unknown == 0 {
            groups.remove(&delivery.group_key);
        } else {
            groups.insert(
                delivery.group_key.clone(),
                AlertGroup {
                    group_key: delivery.group_key.clone(),
                    firing,
                    unknown: delivery.truncated_unknown,
                    last_received: now.clone(),
                },
            );
        }
    }
    let mut alerts: Vec<ObservedAlert> = recorded.into_values().collect();
    if alerts.len() > MAX_RECORDED {
        alerts.sort_by_key(|alert| std::cmp::Reverse(alert.last_received.0));
        alerts.truncate(MAX_RECORDED);
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    }
    Records {
        alerts,
        groups: bounded(groups.into_values().collect()),
    }
}

fn observed(alert: &Alert, now: &Time) -> ObservedAlert {
    ObservedAlert {
        fingerprint: alert.fingerprint.clone(),
        alertname: alert.labels.get("alertname").cloned(),
        starts_at: alert
            .starts_at
            .as_deref()
            .and_then(|text| text.parse::<jiff::Timestamp>().ok())
            .map(Time),
        last_received: now.clone(),
    }
}

/// At most [`MAX_GROUPS`] groups: the least recently notified are merged
/// into one, keeping their counts (it goes stale by itself, since no
/// notification names it).
fn bounded(mut groups: Vec<AlertGroup>) -> Vec<AlertGroup> {
    if groups.len() <= MAX_GROUPS {
        return groups;
    }
    groups.sort_by_key(|group| std::cmp::Reverse(group.last_received.0));
    let older = groups.split_off(MAX_GROUPS - 1);
    let merged = older
        .into_iter()
        .fold(None, |merged: Option<AlertGroup>, group| {
            Some(match merged {
                None => AlertGroup {
                    group_key: MERGED_GROUPS.to_owned(),
                    ..group
                },
                Some(merged) => AlertGroup {
                    firing: merged.firing.saturating_add(group.firing),
                    unknown: merged.unknown.saturating_add(group.unknown),
                    last_received: if group.last_received.0 > merged.last_received.0 {
                        group.last_received
                    } else {
                        merged.last_received
                    },
                    ..merged
                },
            })
        });
    groups.extend(merged);
    groups.sort_by(|a, b| a.group_key.cmp(&b.group_key));
    groups
}

/// The status after `records` are kept at `now`: state, value (the number
/// of fresh firing alerts), reason and transition time.
pub fn status_with(
    previous: &AlarmStatus,
    records: Records,
    stale_after: Duration,
    now: &Time,
) -> (AlarmStatus, Assessment) {
    let assessment = assess(&records.alerts, &records.groups, stale_after, now.0);
    let changed = previous.state != Some(assessment.state);
    let status = AlarmStatus {
        state: Some(assessment.state),
        value: Some(assessment.firing as f64),
        reason: Some(assessment.reason.clone()),
        last_transition_time: if changed {
            Some(micro_time(now.0))
        } else {
            previous.last_transition_time.clone()
        },
        alerts: records.alerts,
        alert_groups: records.groups,
        ..previous.clone()
    };
    (status, assessment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(name: &str, operator: MatchOperator, value: &str) -> LabelMatcher {
        LabelMatcher {
            name: name.to_owned(),
            operator: Some(operator),
            value: value.to_owned(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + second).expect("in range"))
    }

    fn alert(fingerprint: &str, status: AlertStatus) -> Alert {
        Alert {
            status,
            labels: labels(&[("alertname", "HighErrorRate")]),
            starts_at: Some("2026-11-22T01:00:00.123Z".to_owned()),
            fingerprint: fingerprint.to_owned(),
        }
    }

    #[test]
    fn matchers_follow_alertmanager_semantics() {
        let m = Matchers::compile(&[
            matcher("alertname", MatchOperator::Equal, "HighErrorRate"),
            matcher("region", MatchOperator::Matches, "eu-.*"),
            matcher("env", MatchOperator::NotEqual, "staging"),
            matcher("team", MatchOperator::NotMatches, "bots?"),
        ])
        .expect("compiles");
        assert!(m.matches(&labels(&[
            ("alertname", "HighErrorRate"),
            ("region", "eu-west-1")
        ])));
        // Anchored: a prefix match is not enough.
        assert!(!m.matches(&labels(&[
            ("alertname", "HighErrorRate"),
            ("region", "us-eu-1")
        ])));
        assert!(!m.matches(&labels(&[
            ("alertname", "HighErrorRate"),
            ("region", "eu-1"),
            ("env", "staging")
        ])));
        assert!(!m.matches(&labels(&[
            ("alertname", "HighErrorRate"),
            ("region", "eu-1"),
            ("team", "bot")
        ])));
        // A missing label is the empty string.
        let empty =
            Matchers::compile(&[matcher("region", MatchOperator::Equal, "")]).expect("compiles");
        assert!(empty.matches(&labels(&[])));
        let error = Matchers::compile(&[matcher("region", MatchOperator::Matches, "(")])
            .expect_err("does not parse");
        assert!(error.contains("region"), "{error}");
    }

    #[test]
    fn a_namespace_label_confines_alarms_to_their_namespace() {
        let team_a = labels(&[("alertname", "HighErrorRate"), ("namespace", "team-a")]);
        let unlabelled = labels(&[("alertname", "HighErrorRate")]);
        // Without the option, every alert may concern every alarm.
        assert!(in_namespace(&team_a, None, "team-b"));
        assert!(in_namespace(&unlabelled, None, "team-b"));
        // With it, only alerts labelled with the alarm's own namespace.
        assert!(in_namespace(&team_a, Some("namespace"), "team-a"));
        assert!(!in_namespace(&team_a, Some("namespace"), "team-b"));
        assert!(!in_namespace(&unlabelled, Some("namespace"), ""));
        assert!(!in_namespace(
            &team_a,
            Some("kubernetes_namespace"),
            "team-a"
        ));
    }

    /// A notification of group `key` carrying `alerts` whole.
    fn notification(key: &str, status: AlertStatus, alerts: Vec<Alert>) -> Notification {
        Notification {
            version: "4".to_owned(),
            status,
            group_key: key.to_owned(),
            truncated_alerts: 0,
            common_labels: labels(&[("alertname", "HighErrorRate")]),
            alerts,
        }
    }

    fn everything() -> Matchers {
        Matchers::compile(&[]).expect("compiles")
    }

    /// What `notification` does to `status` at `now`, for an alarm matching
    /// every alert.
    fn receive(status: &AlarmStatus, notification: &Notification, now: &Time) -> AlarmStatus {
        let matchers = everything();
        let filter = AlarmFilter {
            matchers: &matchers,
            namespace_label: None,
            namespace: "team-a",
        };
        let counted = |key: &str| status.alert_groups.iter().any(|g| g.group_key == key);
        let Some(delivery) = delivery(notification, &filter, counted) else {
            return status.clone();
        };
        let records = record(status, &[&delivery], now);
        status_with(status, records, Duration::from_secs(600), now).0
    }

    fn firing(fingerprints: std::ops::Range<usize>) -> Vec<Alert> {
        fingerprints
            .map(|i| alert(&format!("f{i:05}"), AlertStatus::Firing))
            .collect()
    }

    fn assess_status(status: &AlarmStatus, now: &Time) -> Assessment {
        assess(
            &status.alerts,
            &status.alert_groups,
            Duration::from_secs(600),
            now.0,
        )
    }

    #[test]
    fn firing_records_resolved_removes_and_stale_is_insufficient() {
        let one = |status| notification("g", status, vec![alert("a1", status)]);
        let status = receive(&AlarmStatus::default(), &one(AlertStatus::Firing), &at(0));
        assert_eq!(status.state, Some(AlarmState::Alarm));
        assert_eq!(status.value, Some(1.0));
        assert_eq!(status.last_transition_time, Some(micro_time(at(0).0)));
        assert_eq!(
            assess_status(&status, &at(0)).stale_in,
            Some(Duration::from_secs(601))
        );
        assert!(
            status.alerts[0].starts_at.is_some(),
            "startsAt with fractions parses"
        );

        // Still fresh after 10 minutes; stale one second later.
        assert_eq!(assess_status(&status, &at(600)).state, AlarmState::Alarm);
        let stale = assess_status(&status, &at(601));
        assert_eq!(stale.state, AlarmState::InsufficientData);

        // A re-send refreshes it without a new transition time.
        let again = receive(&status, &one(AlertStatus::Firing), &at(500));
        assert_eq!(again.last_transition_time, Some(micro_time(at(0).0)));
        assert_eq!(again.alerts[0].last_received, at(500));
        assert_eq!(again.alert_groups[0].last_received, at(500));

        let cleared = receive(&again, &one(AlertStatus::Resolved), &at(700));
        assert_eq!(cleared.state, Some(AlarmState::Ok));
        assert!(cleared.alerts.is_empty());
        assert!(cleared.alert_groups.is_empty());
        assert_eq!(cleared.last_transition_time, Some(micro_time(at(700).0)));
    }

    #[test]
    fn a_transition_time_keeps_its_fraction_through_the_api() {
        // A pause's resumeWhen.clearFor counts from it: a whole second
        // would end the pause early.
        let now = Time(at(0).0 + jiff::SignedDuration::from_millis(900));
        let status = receive(
            &AlarmStatus::default(),
            &notification("g", AlertStatus::Firing, firing(0..1)),
            &now,
        );
        let json = serde_json::to_value(&status).expect("serialises");
        let read: AlarmStatus = serde_json::from_value(json).expect("reads back");
        assert_eq!(read.last_transition_time.map(|t| t.0), Some(now.0));
    }

    #[test]
    fn one_of_two_resolved_keeps_the_alarm() {
        let both = notification(
            "g",
            AlertStatus::Firing,
            vec![
                alert("a1", AlertStatus::Firing),
                alert("a2", AlertStatus::Firing),
            ],
        );
        let status = receive(&AlarmStatus::default(), &both, &at(0));
        let one_resolved = notification(
            "g",
            AlertStatus::Firing,
            vec![
                alert("a1", AlertStatus::Resolved),
                alert("a2", AlertStatus::Firing),
            ],
        );
        let status = receive(&status, &one_resolved, &at(1));
        let assessment = assess_status(&status, &at(1));
        assert_eq!(assessment.state, AlarmState::Alarm);
        assert_eq!(assessment.firing, 1);
        assert!(
            assessment.reason.contains("HighErrorRate (a2)"),
            "{}",
            assessment.reason
        );
    }

    /// A large group is counted in full while only [`MAX_RECORDED`] alerts
    /// are kept in detail; when every alert kept in detail has resolved,
    /// the alarm still fires for the others, and reads OK only once the
    /// group says none fires.
    fn a_group_of(size: usize) {
        let all = notification("g", AlertStatus::Firing, firing(0..size));
        let status = receive(&AlarmStatus::default(), &all, &at(0));
        assert_eq!(status.alerts.len(), MAX_RECORDED.min(size));
        assert_eq!(status.alert_groups[0].firing as usize, size);
        assert_eq!(status.value, Some(size as f64));
        assert!(
            status.reason.as_deref().is_some_and(|r| r.len() < 1024),
            "the reason is bounded: {:?}",
            status.reason
        );

        // Every alert kept in detail resolves; the last one still fires.
        let mut alerts: Vec<Alert> = firing(0..size);
        let still = size - 1;
        assert!(
            !status
                .alerts
                .iter()
                .any(|a| a.fingerprint == alerts[still].fingerprint),
            "the last alert is beyond the detail"
        );
        for alert in alerts.iter_mut().take(still) {
            alert.status = AlertStatus::Resolved;
        }
        let mostly = receive(
            &status,
            &notification("g", AlertStatus::Firing, alerts.clone()),
            &at(60),
        );
        assert_eq!(mostly.state, Some(AlarmState::Alarm), "{:?}", mostly.reason);
        assert_eq!(mostly.value, Some(1.0));
        let detailed: Vec<&str> = mostly
            .alerts
            .iter()
            .map(|a| a.fingerprint.as_str())
            .collect();
        assert_eq!(detailed, [alerts[still].fingerprint.as_str()]);

        alerts[still].status = AlertStatus::Resolved;
        let resolved = receive(
            &mostly,
            &notification("g", AlertStatus::Resolved, alerts),
            &at(120),
        );
        assert_eq!(resolved.state, Some(AlarmState::Ok));
        assert!(resolved.alert_groups.is_empty());
    }

    #[test]
    fn a_group_of_150_is_counted_in_full() {
        a_group_of(150);
    }

    #[test]
    fn a_group_of_5000_is_counted_in_full() {
        a_group_of(5000);
    }

    #[test]
    fn truncated_alerts_count_when_the_common_labels_show_they_match() {
        let region = |value| {
            Matchers::compile(&[matcher("region", MatchOperator::Equal, value)]).expect("compiles")
        };
        let mut truncated = notification("g", AlertStatus::Firing, firing(0..10));
        truncated.truncated_alerts = 4990;
        let eu = region("eu");
        let filter = |matchers| AlarmFilter {
            matchers,
            namespace_label: None,
            namespace: "team-a",
        };
        let nothing = |_: &str| false;

        // The group's common labels do not name the region: unknown.
        let unknown = delivery(&truncated, &filter(&eu), nothing).expect("may concern it");
        assert_eq!(
            (unknown.truncated_matching, unknown.truncated_unknown),
            (0, 4990)
        );
        let records = record(&AlarmStatus::default(), &[&unknown], &at(0));
        let (status, _) = status_with(
            &AlarmStatus::default(),
            records,
            Duration::from_secs(600),
            &at(0),
        );
        assert_eq!(status.state, Some(AlarmState::InsufficientData));
        assert!(
            status
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("max_alerts")),
            "{:?}",
            status.reason
        );

        // Every alert of the group is in eu: all of them count.
        truncated
            .common_labels
            .insert("region".to_owned(), "eu".to_owned());
        let known = delivery(&truncated, &filter(&eu), nothing).expect("concerns it");
        assert_eq!(
            (known.truncated_matching, known.truncated_unknown),
            (4990, 0)
        );
        let records = record(&AlarmStatus::default(), &[&known], &at(0));
        assert_eq!(records.groups[0].firing, 4990);

        // Every alert of the group is elsewhere: none does.
        let us = region("us");
        assert_eq!(delivery(&truncated, &filter(&us), nothing), None);

        // A resolved group has nothing firing, truncated or not.
        truncated.status = AlertStatus::Resolved;
        let resolved = delivery(&truncated, &filter(&eu), |_| true).expect("the group was counted");
        assert_eq!(
            (resolved.truncated_matching, resolved.truncated_unknown),
            (0, 0)
        );
    }

    #[test]
    fn a_group_that_stops_naming_an_alarm_s_alerts_resets_its_count() {
        let status = receive(
            &AlarmStatus::default(),
            &notification("g", AlertStatus::Firing, firing(0..150)),
            &at(0),
        );
        // Alertmanager dropped the alerts (send_resolved is off): the next
        // notification of the group carries none that concern the alarm.
        let matchers = everything();
        let filter = AlarmFilter {
            matchers: &matchers,
            namespace_label: None,
            namespace: "team-a",
        };
        let empty = notification("g", AlertStatus::Firing, Vec::new());
        assert_eq!(delivery(&empty, &filter, |_| false), None);
        let next = receive(&status, &empty, &at(30));
        assert!(next.alert_groups.is_empty());
        // The detailed alerts were never resolved: they keep the alarm
        // until they go stale.
        assert_eq!(next.state, Some(AlarmState::Alarm));
    }

    #[test]
    fn groups_are_bounded_without_losing_counts() {
        let mut status = AlarmStatus::default();
        for group in 0..(MAX_GROUPS + 10) {
            let one = notification(
                &format!("g{group:03}"),
                AlertStatus::Firing,
                firing(group..group + 1),
            );
            status = receive(&status, &one, &at(group as i64));
        }
        assert_eq!(status.alert_groups.len(), MAX_GROUPS);
        let total: u32 = status.alert_groups.iter().map(|g| g.firing).sum();
        assert_eq!(total as usize, MAX_GROUPS + 10);
        assert!(
            status
                .alert_groups
                .iter()
                .any(|g| g.group_key == MERGED_GROUPS)
        );

        let long = notification(&"k".repeat(500), AlertStatus::Firing, firing(0..1));
        assert!(group_key(&long).starts_with("sha256:"));
        assert_eq!(group_key(&long).len(), "sha256:".len() + 64);
    }

    #[test]
    fn validation_rejects_other_versions_and_odd_fingerprints() {
        let mut checked = notification("g", AlertStatus::Firing, firing(0..5000));
        assert!(checked.validate().is_ok(), "any number of alerts");
        checked.version = "3".to_owned();
        assert!(checked.validate().is_err());
        checked.version = "4".to_owned();
        checked.alerts[0].fingerprint = String::new();
        assert!(checked.validate().is_err());
    }

    #[test]
    fn reads_the_documented_payload() {
        let payload = r#"{
          "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
          "status": "firing", "receiver": "weblab",
          "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
          "externalURL": "http://alertmanager:9093",
          "alerts": [{
            "status": "firing", "labels": {"alertname": "HighErrorRate", "region": "eu"},
            "annotations": {"summary": "errors"}, "startsAt": "2026-11-22T01:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": "c7a2e6bd4b1a2f3e"
          }]
        }"#;
        let notification: Notification = serde_json::from_str(payload).expect("parses");
        assert!(notification.validate().is_ok());
        assert_eq!(notification.alerts[0].labels["region"], "eu");
    }
}
