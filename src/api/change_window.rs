//! `ChangeWindow`: when moves towards risk (dial-ups, merges) may happen.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Severity, TimeZoneName};

/// Weekly windows in a time zone, blackouts, and "not during an active
/// incident". Gates dial-ups and merges; moves towards safety are never gated.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weblab.dev",
    version = "v1alpha1",
    kind = "ChangeWindow",
    namespaced,
    status = "ChangeWindowStatus",
    derive = "PartialEq",
    shortname = "cw",
    category = "weblab",
    doc = "When moves towards risk (dial-ups, promotes, merges) may happen.",
    printcolumn(name = "Time Zone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Open", type_ = "boolean", json_path = ".status.open"),
    // An absolute time: kubectl renders a `date` column only as an age,
    // which reads `<invalid>` for the future.
    printcolumn(
        name = "Next Change",
        type_ = "string",
        json_path = ".status.nextTransition"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.weekly) && size(self.weekly) > 0) || (has(self.blackouts) && size(self.blackouts) > 0) || has(self.closedWhileAlarms)")
    .message("a change window needs weekly windows, blackouts or closedWhileAlarms"))]
#[serde(rename_all = "camelCase")]
pub struct ChangeWindowSpec {
    /// The time zone the weekly windows are written in.
    pub time_zone: TimeZoneName,

    /// When the window is open each week. Empty: open all week (apart from
    /// blackouts and alarms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub weekly: Vec<WeeklyWindow>,

    /// Periods when the window is closed whatever the weekly windows say
    /// (e.g. a holiday freeze).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub blackouts: Vec<Blackout>,

    /// Closed while any matching alarm at this severity or worse is `ALARM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_while_alarms: Option<AlarmGate>,

    /// Merge trains whose gates close while this window is closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        extend("x-kubernetes-list-type" = "set"),
        length(max = 32),
        inner(length(min = 1, max = 63))
    )]
    pub merge_trains: Vec<String>,
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// Open from `start` to `end` local time on each of `days`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.end > self.start")
    .message(Message::Expression("'end (' + self.end + ') must be after start (' + self.start + ')'".into()))
    .field_path(".end"))]
#[serde(rename_all = "camelCase")]
pub struct WeeklyWindow {
    /// The days this applies to.
    #[schemars(extend("x-kubernetes-list-type" = "set"), length(min = 1, max = 7))]
    pub days: Vec<Weekday>,
    /// Local opening time, `HH:MM`.
    #[schemars(length(max = 5), regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Local closing time, `HH:MM` (`24:00` for midnight at the end of the day).
    #[schemars(
        length(max = 5),
        regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    )]
    pub end: String,
}

/// A period when the window is closed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.end > self.start")
    .message("a blackout's end must be after its start")
    .field_path(".end"))]
#[serde(rename_all = "camelCase")]
pub struct Blackout {
    /// What it is (e.g. `holiday-freeze`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// When it begins (RFC 3339 with an offset).
    pub start: Time,
    /// When it ends.
    pub end: Time,
}

/// Closed while an incident is active.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlarmGate {
    /// Which alarms count. An empty selector matches every alarm in the
    /// namespace.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The least urgent severity that closes the window (`Sev2`: Sev1 and Sev2).
    #[serde(default = "default_gate_severity")]
    pub severity: Severity,
}

fn default_gate_severity() -> Severity {
    Severity::Sev2
}

/// Observed state of a `ChangeWindow`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeWindowStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether moves towards risk may happen now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<bool>,
    /// Why it is open or closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it next opens or closes by the calendar (alarms aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Time>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
