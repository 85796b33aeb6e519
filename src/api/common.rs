//! Vocabulary shared by every kind: allocations, durations, severities, alarm
//! selections and references to other objects.

use std::{borrow::Cow, collections::BTreeMap, fmt, str::FromStr};

use jiff::{RoundMode, Timestamp, TimestampRound, Unit};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::core::{Selector, SelectorExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// `at` as a [`MicroTime`], for the status times from which a duration is
/// derived (a bake's end, a wave's length, a pause's): `Time` keeps whole
/// seconds only, so a bake read back from it could end up to a second early.
/// Rounded up to the microsecond, so that it reads back exactly as written (a
/// settled object plans no write) and is never earlier than `at`.
pub fn micro_time(at: Timestamp) -> MicroTime {
    let up = TimestampRound::new()
        .smallest(Unit::Microsecond)
        .mode(RoundMode::Ceil);
    MicroTime(at.round(up).unwrap_or(at))
}

/// Basis points in one hundred percent: allocations are exact to two decimals.
pub const BASIS_POINTS: u32 = 10_000;

/// A share of units, in percent with at most two decimals (`12.34`), held as
/// basis points so that sums are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u16);

impl Percent {
    /// No units at all.
    pub const ZERO: Percent = Percent(0);
    /// Every unit.
    pub const HUNDRED: Percent = Percent(BASIS_POINTS as u16);

    /// A share from basis points; `None` above 10,000.
    pub fn from_basis_points(basis_points: u32) -> Option<Self> {
        u16::try_from(basis_points)
            .ok()
            .filter(|bp| u32::from(*bp) <= BASIS_POINTS)
            .map(Percent)
    }

    /// The share in basis points (hundredths of a percent).
    pub fn basis_points(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, hundredths) = (self.0 / 100, self.0 % 100);
        match hundredths {
            0 => write!(f, "{whole}"),
            h if h % 10 == 0 => write!(f, "{whole}.{}", h / 10),
            h => write!(f, "{whole}.{h:02}"),
        }
    }
}

/// Why a number is not a valid percentage.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PercentError {
    /// Negative, above 100 or not a number.
    #[error("{0} is not a percentage between 0 and 100")]
    OutOfRange(f64),
    /// More precision than basis points can hold.
    #[error("{0} has more than two decimals")]
    TooPrecise(f64),
}

impl TryFrom<f64> for Percent {
    type Error = PercentError;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        if !(0.0..=100.0).contains(&value) {
            return Err(PercentError::OutOfRange(value));
        }
        let scaled = (value * 100.0).round();
        // The same test the API server's CEL rule makes: the value must be the
        // nearest double to some number of basis points divided by 100.
        if scaled / 100.0 != value {
            return Err(PercentError::TooPrecise(value));
        }
        // In range by the check above, so the cast cannot truncate.
        Ok(Percent(scaled as u16))
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(100) {
            serializer.serialize_u64(u64::from(self.0 / 100))
        } else {
            serializer.serialize_f64(f64::from(self.0) / 100.0)
        }
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(deserializer)?;
        Percent::try_from(value).map_err(de::Error::custom)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "x-kubernetes-validations": [{
                "rule": "self < 0.0 || double(int(self * 100.0 + 0.5)) / 100.0 == self",
                "message": "a percentage has at most two decimals (e.g. 12.34)"
            }]
        })
    }
}

/// Treatment name to share of units: `{C: 95, T1: 5}`. Treatments left out
/// get no units. Always sums to exactly 100 (checked by the API server).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Allocation(pub BTreeMap<String, Percent>);

impl Allocation {
    /// Every unit in one treatment.
    pub fn all_in(treatment: &str) -> Self {
        Allocation(BTreeMap::from([(treatment.to_owned(), Percent::HUNDRED)]))
    }

    /// The share of a treatment, zero when it is not named.
    pub fn share(&self, treatment: &str) -> Percent {
        self.0.get(treatment).copied().unwrap_or(Percent::ZERO)
    }

    /// The sum of all shares in basis points; 10,000 for a valid allocation.
    pub fn total_basis_points(&self) -> u32 {
        self.0.values().map(|p| p.basis_points()).sum()
    }

    /// Whether every treatment's share lies between its shares in `a` and
    /// `b` (inclusive): this allocation is on the way from one to the other.
    /// A move from `current` to `next` is towards safety exactly when `next`
    /// lies between `current` and the rollback allocation.
    pub fn lies_between(&self, a: &Allocation, b: &Allocation) -> bool {
        let treatments = self.0.keys().chain(a.0.keys()).chain(b.0.keys());
        treatments.into_iter().all(|t| {
            let (low, high) = (a.share(t).min(b.share(t)), a.share(t).max(b.share(t)));
            (low..=high).contains(&self.share(t))
        })
    }

    /// The same allocation without zero entries, so that `{C: 100, T1: 0}`
    /// and `{C: 100}` compare equal.
    pub fn normalized(&self) -> Self {
        Allocation(
            self.0
                .iter()
                .filter(|(_, share)| **share != Percent::ZERO)
                .map(|(t, share)| (t.clone(), *share))
                .collect(),
        )
    }
}

impl fmt::Display for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (treatment, share) in &self.normalized().0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{treatment}:{share}")?;
        }
        Ok(())
    }
}

impl JsonSchema for Allocation {
    fn schema_name() -> Cow<'static, str> {
        "Allocation".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let share = generator.subschema_for::<Percent>();
        json_schema!({
            "type": "object",
            "description": "Treatment name to percentage of units, e.g. {C: 95, T1: 5}. Sums to exactly 100.",
            "minProperties": 1,
            "maxProperties": MAX_TREATMENTS,
            "additionalProperties": share,
            "x-kubernetes-validations": [{
                "rule": "self.map(t, int(self[t] * 100.0 + 0.5)).sum() == 10000",
                "message": "percentages must sum to exactly 100"
            }]
        })
    }
}

/// The schema of an allocation the controller writes into a status: the
/// same shape without validation rules, which would only cost the API server
/// time on every status write.
pub(crate) fn effective_allocation_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Treatment name to percentage of units.",
        "additionalProperties": {"type": "number"}
    })
}

/// [`effective_allocation_schema`] for an optional field.
pub(crate) fn optional_effective_allocation_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = effective_allocation_schema(generator);
    schema.insert("nullable".to_owned(), true.into());
    schema
}

/// The most treatments one weblab may have, control included.
pub const MAX_TREATMENTS: usize = 16;

/// A length of time in Go's notation (`90s`, `15m`, `1h30m`), as Kubernetes
/// writes durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(std::time::Duration);

impl Duration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    /// The standard-library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Duration(duration)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed: kube::core::Duration = text
            .parse()
            .map_err(|e| format!("{text:?} is not a duration such as 90s, 15m or 1h30m: {e}"))?;
        if parsed.is_negative() {
            return Err(format!("{text:?} is negative; durations must be positive"));
        }
        Ok(Duration(parsed.into()))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&kube::core::Duration::from(self.0), f)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as 90s, 15m or 1h30m.",
            "maxLength": 32,
            "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"
        })
    }
}

/// How urgent an alarm is, most urgent first. `Sev2.5` sits between `Sev2`
/// and `Sev3`, as in the change records this operator automates.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Severity {
    /// Whole-service outage.
    Sev1,
    /// Customer impact; rolls changes back by default.
    Sev2,
    /// Impact on a subset of customers; rolls changes back by default.
    #[serde(rename = "Sev2.5")]
    Sev2_5,
    /// Degradation that only notifies by default.
    Sev3,
    /// Informational.
    Sev4,
}

impl Severity {
    /// The severities that roll changes back unless a resource names others.
    pub fn default_rollback() -> Vec<Severity> {
        vec![Severity::Sev1, Severity::Sev2, Severity::Sev2_5]
    }

    /// Whether this severity is at least as urgent as `other`.
    pub fn at_least(self, other: Severity) -> bool {
        self <= other
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Sev1 => "Sev1",
            Severity::Sev2 => "Sev2",
            Severity::Sev2_5 => "Sev2.5",
            Severity::Sev3 => "Sev3",
            Severity::Sev4 => "Sev4",
        })
    }
}

/// The schema of an optional label selector whose operators the API server
/// checks (CEL), so that every selector stored parses: `In` and `NotIn`
/// need values, `Exists` and `DoesNotExist` take none.
pub fn checked_selector(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Option<LabelSelector>>();
    schema.insert(
        "x-kubernetes-validations".to_owned(),
        serde_json::json!([{
            "rule": "!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",
            "message": "a matchExpressions operator is one of In, NotIn, Exists, DoesNotExist"
        }, {
            "rule": "!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",
            "message": "In and NotIn need at least one value; Exists and DoesNotExist take none"
        }]),
    );
    schema
}

/// Alarms attached to a change: by name, by label selector, or both (the
/// union). Alarms live in the same namespace as the object naming them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmSelection {
    /// Names of `Alarm` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(max = 64), inner(length(min = 1, max = 253)))]
    pub names: Vec<String>,

    /// Every `Alarm` whose labels match. `In` and `NotIn` need values,
    /// `Exists` and `DoesNotExist` take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::checked_selector")]
    pub selector: Option<LabelSelector>,
}

impl AlarmSelection {
    /// Whether no alarm can match.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.selector.is_none()
    }

    /// Why the selector does not parse, if it does not.
    pub fn selector_error(&self) -> Option<kube::core::ParseExpressionError> {
        let selector = self.selector.clone()?;
        Selector::try_from(selector).err()
    }

    /// Whether the alarm `name` with `labels` is selected. A selector the
    /// API server accepted but that does not parse (e.g. an unknown
    /// operator) is an error, for the caller to report.
    pub fn selects(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool, kube::core::ParseExpressionError> {
        if self.names.iter().any(|n| n == name) {
            return Ok(true);
        }
        match &self.selector {
            Some(selector) => {
                let selector: Selector = selector.clone().try_into()?;
                Ok(selector.matches(labels))
            }
            None => Ok(false),
        }
    }
}

/// A key of a `Secret` in the namespace of the object referring to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to an object of a known kind in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An IANA time zone name such as `America/Los_Angeles`, validated by the API
/// server against the time zone database compiled into the operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeZoneName(pub String);

impl TimeZoneName {
    /// The zone, from the database compiled into the operator.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, jiff::Error> {
        jiff::tz::TimeZone::get(&self.0)
    }
}

impl JsonSchema for TimeZoneName {
    fn schema_name() -> Cow<'static, str> {
        "TimeZoneName".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut names: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.as_str().to_owned())
            .collect();
        names.sort();
        let list = names
            .iter()
            .map(|name| format!("'{name}'"))
            .collect::<Vec<_>>()
            .join(",");
        json_schema!({
            "type": "string",
            "description": "An IANA time zone name such as America/Los_Angeles.",
            "maxLength": 64,
            "x-kubernetes-validations": [{
                "rule": format!("self in [{list}]"),
                "messageExpression": "'\"' + self + '\" is not an IANA time zone name; use a name such as America/Los_Angeles, Europe/Dublin or UTC'"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percent_parses_two_decimals_and_rejects_more() {
        assert_eq!(
            Percent::try_from(33.33).map(Percent::basis_points),
            Ok(3333)
        );
        assert_eq!(Percent::try_from(0.29).map(Percent::basis_points), Ok(29));
        assert_eq!(
            Percent::try_from(100.0).map(Percent::basis_points),
            Ok(10_000)
        );
        assert_eq!(
            Percent::try_from(0.001),
            Err(PercentError::TooPrecise(0.001))
        );
        assert_eq!(Percent::try_from(-1.0), Err(PercentError::OutOfRange(-1.0)));
        assert_eq!(
            Percent::try_from(100.01),
            Err(PercentError::OutOfRange(100.01))
        );
        assert!(Percent::try_from(f64::NAN).is_err());
    }

    #[test]
    fn percent_prints_the_shortest_form() {
        let show = |bp| Percent::from_basis_points(bp).map(|p| p.to_string());
        assert_eq!(show(500).as_deref(), Some("5"));
        assert_eq!(show(550).as_deref(), Some("5.5"));
        assert_eq!(show(505).as_deref(), Some("5.05"));
        assert_eq!(show(10_001), None);
    }

    proptest! {
        #[test]
        fn percent_round_trips_through_json(bp in 0u32..=10_000) {
            let share = Percent::from_basis_points(bp).expect("in range");
            let json = serde_json::to_string(&share).expect("serializes");
            let back: Percent = serde_json::from_str(&json).expect("parses its own output");
            prop_assert_eq!(back, share);
        }
    }

    #[test]
    fn allocation_total_and_display() {
        let allocation: Allocation =
            serde_json::from_str(r#"{"C": 95, "T1": 4.5, "T2": 0.5, "T3": 0}"#).expect("valid");
        assert_eq!(allocation.total_basis_points(), 10_000);
        assert_eq!(allocation.to_string(), "C:95 T1:4.5 T2:0.5");
        assert_eq!(allocation.normalized().0.len(), 3);
    }

    #[test]
    fn lies_between_means_on_the_way() {
        let parse = |json: &str| serde_json::from_str::<Allocation>(json).expect("valid");
        let control = parse(r#"{"C": 100}"#);
        let five = parse(r#"{"C": 95, "T1": 5}"#);
        let quarter = parse(r#"{"C": 75, "T1": 25}"#);
        let other = parse(r#"{"C": 75, "T2": 25}"#);
        assert!(five.lies_between(&control, &quarter));
        assert!(five.lies_between(&quarter, &control));
        assert!(!quarter.lies_between(&control, &five));
        assert!(!other.lies_between(&control, &quarter));
        assert!(control.lies_between(&control, &control));
    }

    #[test]
    fn durations_use_go_notation() {
        let d: Duration = "1h30m".parse().expect("valid");
        assert_eq!(d.get().as_secs(), 5400);
        assert!("15 minutes".parse::<Duration>().is_err());
        assert!("-5s".parse::<Duration>().is_err());
        let json = serde_json::to_string(&Duration::from_secs(90)).expect("serializes");
        let back: Duration = serde_json::from_str(&json).expect("parses its own output");
        assert_eq!(back, Duration::from_secs(90));
    }

    #[test]
    fn severities_order_by_urgency_and_keep_their_names() {
        assert!(Severity::Sev2.at_least(Severity::Sev2_5));
        assert!(!Severity::Sev3.at_least(Severity::Sev2_5));
        assert_eq!(
            serde_json::to_string(&Severity::Sev2_5).expect("serializes"),
            "\"Sev2.5\""
        );
        assert_eq!(Severity::Sev2_5.to_string(), "Sev2.5");
    }

    #[test]
    fn time_zone_schema_lists_real_zones_only() {
        let schema = serde_json::to_string(&schemars::schema_for!(TimeZoneName)).expect("json");
        assert!(schema.contains("'America/Los_Angeles'"));
        assert!(schema.contains("'Europe/Dublin'"));
        assert!(!schema.contains("'Mars/Olympus_Mons'"));
        assert!(TimeZoneName("America/Los_Angeles".into()).zone().is_ok());
    }
}
