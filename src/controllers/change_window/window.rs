//! Window arithmetic, without I/O or a clock: from a `ChangeWindow`'s spec,
//! an instant and the alarms in its namespace, whether the window is open,
//! why, and when the calendar next opens or closes it.
//!
//! # Wall-clock bounds and daylight saving
//!
//! A weekly window `Mon 00:00-18:00` in a zone is, for every local Monday,
//! one interval of instants `[start, end)`. Each bound is the local wall time
//! on that date resolved the way RFC 5545 and ECMAScript Temporal resolve
//! it (jiff's "compatible" rule):
//! - a wall time that does not exist (skipped by a spring-forward gap) moves
//!   forward by the length of the gap: `02:30` on the day clocks jump from
//!   02:00 to 03:00 means `03:30` in the new offset;
//! - a wall time that happens twice (repeated by a fall-back) means its
//!   first occurrence.
//!
//! So each listed day gives exactly one interval, which opens and closes
//! once: a window never opens twice on the repeated hour, and one whose both
//! bounds fall into the same gap is empty that day. `24:00` is midnight at
//! the end of the day (the next day's `00:00`, resolved the same way).
//! Windows that touch or overlap form one open period. Blackouts are
//! intervals of instants `[start, end)` and win over the weekly windows.

use std::collections::BTreeMap;

use jiff::{
    Timestamp,
    civil::{Date, Weekday as CivilWeekday},
    tz::TimeZone,
};
use kube::core::{Selector, SelectorExt};

use crate::api::{
    alarm::AlarmState,
    change_window::{ChangeWindowSpec, Weekday},
    common::Severity,
};

/// How many days ahead the weekly pattern is searched for its next change:
/// two weeks and a day, so that a window whose only day this week is emptied
/// by a daylight-saving gap is still found the week after.
const WEEKLY_LOOKAHEAD_DAYS: i16 = 15;

/// An upper bound on the steps of the search for the next transition; each
/// step passes one weekly change or one blackout bound.
const MAX_SEARCH_STEPS: usize = 4096;

/// An alarm in the window's namespace, as read from its status.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowAlarm {
    /// The Alarm's name.
    pub name: String,
    /// Its labels, which the window's selector matches.
    pub labels: BTreeMap<String, String>,
    /// Its severity.
    pub severity: Severity,
    /// Its state; an alarm never evaluated has none.
    pub state: Option<AlarmState>,
}

/// Whether a window is open now, why, and when the calendar changes that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether moves towards risk may happen now.
    pub open: bool,
    /// Why, in words.
    pub reason: String,
    /// When the weekly windows or blackouts next open or close the window;
    /// `None` when they never will. Alarms are not forecast.
    pub next_transition: Option<Timestamp>,
}

/// A spec the API server accepted but that cannot be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The zone is not in the database compiled into the operator.
    #[error("time zone {0:?} is not in the operator's time zone database")]
    UnknownZone(String),
    /// A bound is not `HH:MM`.
    #[error("spec.weekly[{index}]: {text:?} is not a time of day HH:MM")]
    BadTime {
        /// Which weekly window.
        index: usize,
        /// The text.
        text: String,
    },
    /// The alarm selector does not parse.
    #[error("spec.closedWhileAlarms.selector is invalid: {0}")]
    BadSelector(String),
}

/// Evaluates a window at `now` against the alarms of its namespace.
pub fn evaluate(
    spec: &ChangeWindowSpec,
    now: Timestamp,
    alarms: &[WindowAlarm],
) -> Result<Verdict, WindowError> {
    let calendar = Calendar::new(spec)?;
    let firing = firing_alarms(spec, alarms)?;
    let next_transition = calendar.next_transition(now);
    let reason = if !firing.is_empty() {
        let list = firing
            .iter()
            .map(|a| format!("{} ({})", a.name, a.severity))
            .collect::<Vec<_>>()
            .join(", ");
        let verb = if firing.len() == 1 { "is" } else { "are" };
        Some(format!("alarm {list} {verb} in ALARM"))
    } else if let Some(blackout) = calendar.blackout_at(now) {
        Some(format!("blackout {} until {}", blackout.name, blackout.end))
    } else if !calendar.weekly_open(now) {
        Some(format!(
            "outside the weekly windows ({})",
            calendar.describe_weekly()
        ))
    } else {
        None
    };
    Ok(match reason {
        Some(reason) => Verdict {
            open: false,
            reason: format!("closed: {reason}"),
            next_transition,
        },
        None => Verdict {
            open: true,
            reason: if calendar.weekly.is_empty() {
                "open: no blackout and no alarm".to_owned()
            } else {
                format!(
                    "open: within the weekly windows ({})",
                    calendar.describe_weekly()
                )
            },
            next_transition,
        },
    })
}

/// The alarms that close the window: selected, in `ALARM`, at the gate's
/// severity or more urgent (Sev1 closes a Sev2 gate, Sev3 does not).
fn firing_alarms<'a>(
    spec: &ChangeWindowSpec,
    alarms: &'a [WindowAlarm],
) -> Result<Vec<&'a WindowAlarm>, WindowError> {
    let Some(gate) = &spec.closed_while_alarms else {
        return Ok(Vec::new());
    };
    let selector: Selector = gate
        .selector
        .clone()
        .try_into()
        .map_err(|e: kube::core::ParseExpressionError| WindowError::BadSelector(e.to_string()))?;
    let mut firing: Vec<&WindowAlarm> = alarms
        .iter()
        .filter(|a| a.state == Some(AlarmState::Alarm))
        .filter(|a| a.severity.at_least(gate.severity))
        .filter(|a| selector.matches(&a.labels))
        .collect();
    firing.sort_by(|a, b| (a.severity, &a.name).cmp(&(b.severity, &b.name)));
    Ok(firing)
}

/// A wall-clock time of day; `24:00` is allowed as an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WallTime {
    hour: i8,
    minute: i8,
}

impl WallTime {
    fn parse(text: &str, index: usize) -> Result<Self, WindowError> {
        let bad = || WindowError::BadTime {
            index,
            text: text.to_owned(),
        };
        let (hour, minute) = text.split_once(':').ok_or_else(bad)?;
        let hour: i8 = hour.parse().map_err(|_| bad())?;
        let minute: i8 = minute.parse().map_err(|_| bad())?;
        let valid =
            (0..24).contains(&hour) && (0..60).contains(&minute) || (hour == 24 && minute == 0);
        if valid {
            Ok(WallTime { hour, minute })
        } else {
            Err(bad())
        }
    }

    /// The instant this wall time names on `date` in `zone` (see the module
    /// documentation for gaps and repeats); `None` past the supported range.
    fn on(self, date: Date, zone: &TimeZone) -> Option<Timestamp> {
        let (date, hour) = if self.hour == 24 {
            (date.tomorrow().ok()?, 0)
        } else {
            (date, self.hour)
        };
        zone.to_ambiguous_timestamp(date.at(hour, self.minute, 0, 0))
            .compatible()
            .ok()
    }
}

impl std::fmt::Display for WallTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

#[derive(Clone, Debug)]
struct Daily {
    days: Vec<CivilWeekday>,
    start: WallTime,
    end: WallTime,
}

#[derive(Clone, Debug)]
struct BlackoutPeriod {
    name: String,
    start: Timestamp,
    end: Timestamp,
}

/// The calendar part of a window: weekly windows and blackouts in a zone.
#[derive(Clone, Debug)]
pub struct Calendar {
    zone: TimeZone,
    zone_name: String,
    weekly: Vec<Daily>,
    blackouts: Vec<BlackoutPeriod>,
}

fn civil_weekday(day: Weekday) -> CivilWeekday {
    match day {
        Weekday::Mon => CivilWeekday::Monday,
        Weekday::Tue => CivilWeekday::Tuesday,
        Weekday::Wed => CivilWeekday::Wednesday,
        Weekday::Thu => CivilWeekday::Thursday,
        Weekday::Fri => CivilWeekday::Friday,
        Weekday::Sat => CivilWeekday::Saturday,
        Weekday::Sun => CivilWeekday::Sunday,
    }
}

impl Calendar {
    /// The calendar of `spec`.
    pub fn new(spec: &ChangeWindowSpec) -> Result<Self, WindowError> {
        let zone = spec
            .time_zone
            .zone()
            .map_err(|_| WindowError::UnknownZone(spec.time_zone.0.clone()))?;
        let weekly = spec
            .weekly
            .iter()
            .enumerate()
            .map(|(index, window)| {
                Ok(Daily {
                    days: window.days.iter().copied().map(civil_weekday).collect(),
                    start: WallTime::parse(&window.start, index)?,
                    end: WallTime::parse(&window.end, index)?,
                })
            })
            .collect::<Result<_, WindowError>>()?;
        let blackouts = spec
            .blackouts
            .iter()
            .map(|b| BlackoutPeriod {
                name: b.name.clone(),
                start: b.start.0,
                end: b.end.0,
            })
            .collect();
        Ok(Calendar {
            zone,
            zone_name: spec.time_zone.0.clone(),
            weekly,
            blackouts,
        })
    }

    /// The weekly intervals that begin on the local `date`.
    fn intervals_on(&self, date: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        self.weekly
            .iter()
            .filter(move |w| w.days.contains(&date.weekday()))
            .filter_map(move |w| Some((w.start.on(date, &self.zone)?, w.end.on(date, &self.zone)?)))
    }

    fn local_date(&self, at: Timestamp) -> Date {
        self.zone.to_datetime(at).date()
    }

    /// Whether `at` is inside a weekly window; always, when there are none.
    pub fn weekly_open(&self, at: Timestamp) -> bool {
        if self.weekly.is_empty() {
            return true;
        }
        let today = self.local_date(at);
        // An interval that begins yesterday may reach into today (24:00, or
        // a gap at midnight that moves 00:00 forward).
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .flat_map(|date| self.intervals_on(date))
            .any(|(start, end)| start <= at && at < end)
    }

    fn blackout_at(&self, at: Timestamp) -> Option<&BlackoutPeriod> {
        self.blackouts
            .iter()
            .filter(|b| b.start <= at && at < b.end)
            .max_by_key(|b| b.end)
    }

    /// Whether the calendar lets changes happen at `at`.
    pub fn open_at(&self, at: Timestamp) -> bool {
        self.blackout_at(at).is_none() && self.weekly_open(at)
    }

    /// The first weekly-window bound after `at` where the weekly state
    /// changes; `None` when it never changes (no windows, or windows that
    /// cover the whole week).
    fn next_weekly_change(&self, at: Timestamp) -> Option<Timestamp> {
        if self.weekly.is_empty() {
            return None;
        }
        let was_open = self.weekly_open(at);
        let mut bounds: Vec<Timestamp> = Vec::new();
        let mut date = self.local_date(at).yesterday().ok()?;
        for _ in 0..=WEEKLY_LOOKAHEAD_DAYS {
            bounds.extend(
                self.intervals_on(date)
                    .flat_map(|(start, end)| [start, end])
                    .filter(|bound| *bound > at),
            );
            date = date.tomorrow().ok()?;
        }
        bounds.sort();
        bounds.dedup();
        bounds
            .into_iter()
            .find(|bound| self.weekly_open(*bound) != was_open)
    }

    fn next_blackout_bound(&self, at: Timestamp) -> Option<Timestamp> {
        self.blackouts
            .iter()
            .flat_map(|b| [b.start, b.end])
            .filter(|bound| *bound > at)
            .min()
    }

    /// When the calendar next opens or closes the window after `now`.
    pub fn next_transition(&self, now: Timestamp) -> Option<Timestamp> {
        let was_open = self.open_at(now);
        let mut at = now;
        for _ in 0..MAX_SEARCH_STEPS {
            let blackout_bound = self.next_blackout_bound(at);
            // Inside a blackout only a blackout bound can open the window.
            let candidate = if self.blackout_at(at).is_some() {
                blackout_bound
            } else {
                match (self.next_weekly_change(at), blackout_bound) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }?;
            if self.open_at(candidate) != was_open {
                return Some(candidate);
            }
            at = candidate;
        }
        None
    }

    fn describe_weekly(&self) -> String {
        let windows = self
            .weekly
            .iter()
            .map(|w| {
                let days = w
                    .days
                    .iter()
                    .map(|d| format!("{d:?}").chars().take(3).collect::<String>())
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{days} {}-{}", w.start, w.end)
            })
            .collect::<Vec<_>>()
            .join("; ");
        format!("{windows} {}", self.zone_name)
    }
}

#[cfg(test)]
mod tests;
