//! The Alertmanager source: what a webhook notification (payload version 4)
//! means for an alarm. Pure: matching, and the state an alarm's received
//! alerts put it in.
//!
//! A matching alert that is `firing` is recorded by fingerprint with the
//! time it was last received; `resolved` removes it. The alarm is `ALARM`
//! while a recorded alert is fresh, `INSUFFICIENT_DATA` when every recorded
//! alert has gone without a re-send for longer than `staleAfter` (the
//! pipeline may be broken; nothing proves the problem is over), and `OK`
//! when none is recorded.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use regex::Regex;
use serde::Deserialize;

use crate::api::{
    alarm::{AlarmState, AlarmStatus, LabelMatcher, MatchOperator, ObservedAlert},
    common::micro_time,
};

/// The only payload version this receiver understands.
pub const PAYLOAD_VERSION: &str = "4";
/// Most alerts accepted in one notification.
pub const MAX_ALERTS: usize = 1000;
/// Longest fingerprint accepted (Alertmanager's are 16 hex digits).
const MAX_FINGERPRINT: usize = 64;
/// Most alerts remembered per alarm; beyond this the oldest are dropped.
const MAX_RECORDED: usize = 100;

/// A webhook notification, as Alertmanager sends it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The payload version; must be [`PAYLOAD_VERSION`].
    pub version: String,
    /// `firing` or `resolved`, for the group as a whole.
    pub status: AlertStatus,
    /// The alerts of the group.
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// The alert's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it started firing.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Alertmanager's identity of the alert.
    pub fingerprint: String,
}

/// Whether an alert fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertStatus {
    /// It fires.
    Firing,
    /// It stopped.
    Resolved,
}

impl Notification {
    /// Checks what serde cannot: the version, and bounds that keep one
    /// caller from growing every alarm's status without limit.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != PAYLOAD_VERSION {
            return Err(format!(
                "unsupported payload version {:?}; this receiver reads version {PAYLOAD_VERSION}",
                self.version
            ));
        }
        if self.alerts.len() > MAX_ALERTS {
            return Err(format!(
                "{} alerts in one notification; at most {MAX_ALERTS} are accepted (set max_alerts in the receiver)",
                self.alerts.len()
            ));
        }
        if let Some(alert) = self
            .alerts
            .iter()
            .find(|a| a.fingerprint.is_empty() || a.fingerprint.len() > MAX_FINGERPRINT)
        {
            return Err(format!(
                "alert fingerprint {:?} must have 1 to {MAX_FINGERPRINT} characters",
                alert.fingerprint
            ));
        }
        Ok(())
    }
}

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
        self.0.iter().all(|(m, re)| {
            let value = labels.get(&m.name).map_or("", String::as_str);
            match (m.operator.unwrap_or_default(), re) {
                (MatchOperator::Equal, _) => value == m.value,
                (MatchOperator::NotEqual, _) => value != m.value,
                (MatchOperator::Matches, Some(re)) => re.is_match(value),
                (MatchOperator::NotMatches, Some(re)) => !re.is_match(value),
                // compile() always sets the expression of regex operators.
                (MatchOperator::Matches | MatchOperator::NotMatches, None) => false,
            }
        })
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

/// An alarm's state from its recorded alerts, and when it next changes by
/// itself (a fresh alert going stale).
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// The state.
    pub state: AlarmState,
    /// How many recorded alerts are fresh.
    pub firing: usize,
    /// Why, for people.
    pub reason: String,
    /// How long until the next fresh alert goes stale.
    pub stale_in: Option<Duration>,
}

/// Assesses `alerts` at `now`.
pub fn assess(alerts: &[ObservedAlert], stale_after: Duration, now: jiff::Timestamp) -> Assessment {
    let age = |alert: &ObservedAlert| {
        now.duration_since(alert.last_received.0)
            .try_into()
            .unwrap_or(Duration::ZERO)
    };
    let fresh: Vec<(&ObservedAlert, Duration)> = alerts
        .iter()
        .map(|alert| (alert, age(alert)))
        .filter(|(_, age)| *age <= stale_after)
        .collect();
    let stale_in = fresh
        .iter()
        .map(|(_, age)| stale_after - *age + Duration::from_secs(1))
        .min();
    if !fresh.is_empty() {
        let names: Vec<String> = fresh.iter().map(|(alert, _)| label(alert)).collect();
        return Assessment {
            state: AlarmState::Alarm,
            firing: fresh.len(),
            reason: format!(
                "{} matching alert(s) firing: {}",
                fresh.len(),
                names.join(", ")
            ),
            stale_in,
        };
    }
    if !alerts.is_empty() {
        return Assessment {
            state: AlarmState::InsufficientData,
            firing: 0,
            reason: format!(
                "{} firing alert(s) not re-sent for more than {}s; check Alertmanager and its repeat_interval",
                alerts.len(),
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

/// The alerts recorded after `notified` (the matching alerts of one
/// notification) arrive at `now`.
pub fn record(current: &[ObservedAlert], notified: &[&Alert], now: &Time) -> Vec<ObservedAlert> {
    let mut recorded: BTreeMap<String, ObservedAlert> = current
        .iter()
        .map(|alert| (alert.fingerprint.clone(), alert.clone()))
        .collect();
    for alert in notified {
        match alert.status {
            AlertStatus::Resolved => {
                recorded.remove(&alert.fingerprint);
            }
            AlertStatus::Firing => {
                let starts_at = alert
                    .starts_at
                    .as_deref()
                    .and_then(|text| text.parse::<jiff::Timestamp>().ok())
                    .map(Time);
                recorded.insert(
                    alert.fingerprint.clone(),
                    ObservedAlert {
                        fingerprint: alert.fingerprint.clone(),
                        alertname: alert.labels.get("alertname").cloned(),
                        starts_at,
                        last_received: now.clone(),
                    },
                );
            }
        }
    }
    let mut alerts: Vec<ObservedAlert> = recorded.into_values().collect();
    if alerts.len() > MAX_RECORDED {
        alerts.sort_by_key(|alert| std::cmp::Reverse(alert.last_received.0));
        alerts.truncate(MAX_RECORDED);
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
    }
    alerts
}

/// The status after `alerts` are recorded at `now`: state, value (the
/// number of fresh alerts), reason and transition time.
pub fn status_with(
    previous: &AlarmStatus,
    alerts: Vec<ObservedAlert>,
    stale_after: Duration,
    now: &Time,
) -> (AlarmStatus, Assessment) {
    let assessment = assess(&alerts, stale_after, now.0);
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
        alerts,
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

    #[test]
    fn firing_records_resolved_removes_and_stale_is_insufficient() {
        let stale_after = Duration::from_secs(600);
        let recorded = record(&[], &[&alert("a1", AlertStatus::Firing)], &at(0));
        let (status, assessment) =
            status_with(&AlarmStatus::default(), recorded, stale_after, &at(0));
        assert_eq!(status.state, Some(AlarmState::Alarm));
        assert_eq!(status.value, Some(1.0));
        assert_eq!(status.last_transition_time, Some(micro_time(at(0).0)));
        assert_eq!(assessment.stale_in, Some(Duration::from_secs(601)));
        assert!(
            status.alerts[0].starts_at.is_some(),
            "startsAt with fractions parses"
        );

        // Still fresh after 10 minutes; stale one second later.
        assert_eq!(
            assess(&status.alerts, stale_after, at(600).0).state,
            AlarmState::Alarm
        );
        let stale = assess(&status.alerts, stale_after, at(601).0);
        assert_eq!(stale.state, AlarmState::InsufficientData);

        // A re-send refreshes it without a new transition time.
        let resent = record(
            &status.alerts,
            &[&alert("a1", AlertStatus::Firing)],
            &at(500),
        );
        let (again, _) = status_with(&status, resent, stale_after, &at(500));
        assert_eq!(again.last_transition_time, Some(micro_time(at(0).0)));
        assert_eq!(again.alerts[0].last_received, at(500));

        let resolved = record(
            &again.alerts,
            &[&alert("a1", AlertStatus::Resolved)],
            &at(700),
        );
        let (cleared, _) = status_with(&again, resolved, stale_after, &at(700));
        assert_eq!(cleared.state, Some(AlarmState::Ok));
        assert!(cleared.alerts.is_empty());
        assert_eq!(cleared.last_transition_time, Some(micro_time(at(700).0)));
    }

    #[test]
    fn a_transition_time_keeps_its_fraction_through_the_api() {
        // A pause's resumeWhen.clearFor counts from it: a whole second
        // would end the pause early.
        let now = Time(at(0).0 + jiff::SignedDuration::from_millis(900));
        let recorded = record(&[], &[&alert("a1", AlertStatus::Firing)], &now);
        let (status, _) = status_with(
            &AlarmStatus::default(),
            recorded,
            Duration::from_secs(600),
            &now,
        );
        let json = serde_json::to_value(&status).expect("serialises");
        let read: AlarmStatus = serde_json::from_value(json).expect("reads back");
        assert_eq!(read.last_transition_time.map(|t| t.0), Some(now.0));
    }

    #[test]
    fn one_of_two_resolved_keeps_the_alarm() {
        let recorded = record(
            &[],
            &[
                &alert("a1", AlertStatus::Firing),
                &alert("a2", AlertStatus::Firing),
            ],
            &at(0),
        );
        let recorded = record(&recorded, &[&alert("a1", AlertStatus::Resolved)], &at(1));
        let assessment = assess(&recorded, Duration::from_secs(60), at(1).0);
        assert_eq!(assessment.state, AlarmState::Alarm);
        assert_eq!(assessment.firing, 1);
        assert!(
            assessment.reason.contains("HighErrorRate (a2)"),
            "{}",
            assessment.reason
        );
    }

    #[test]
    fn the_record_is_bounded() {
        let flood: Vec<Alert> = (0..(MAX_RECORDED + 50))
            .map(|i| alert(&format!("f{i:04}"), AlertStatus::Firing))
            .collect();
        let refs: Vec<&Alert> = flood.iter().collect();
        assert_eq!(record(&[], &refs, &at(0)).len(), MAX_RECORDED);
    }

    #[test]
    fn validation_rejects_other_versions_and_odd_fingerprints() {
        let mut notification = Notification {
            version: "4".to_owned(),
            status: AlertStatus::Firing,
            alerts: vec![alert("a1", AlertStatus::Firing)],
        };
        assert!(notification.validate().is_ok());
        notification.version = "3".to_owned();
        assert!(notification.validate().is_err());
        notification.version = "4".to_owned();
        notification.alerts[0].fingerprint = String::new();
        assert!(notification.validate().is_err());
        notification.alerts = (0..=MAX_ALERTS)
            .map(|i| alert(&i.to_string(), AlertStatus::Firing))
            .collect();
        assert!(notification.validate().is_err());
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
