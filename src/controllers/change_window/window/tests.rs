use super::*;
use proptest::prelude::*;

fn spec(json: serde_json::Value) -> ChangeWindowSpec {
    serde_json::from_value(json).expect("a valid spec")
}

fn at(text: &str) -> Timestamp {
    text.parse().expect("an RFC 3339 instant")
}

/// The merge protocol of DOMAIN.md, section 3.
fn protocol() -> ChangeWindowSpec {
    spec(serde_json::json!({
        "timeZone": "America/Los_Angeles",
        "weekly": [{"days": ["Mon", "Tue", "Wed", "Thu"], "start": "00:00", "end": "18:00"}],
        "blackouts": [{
            "name": "holiday-freeze",
            "start": "2026-11-25T00:00:00-08:00",
            "end": "2027-01-04T00:00:00-08:00"
        }],
        "closedWhileAlarms": {"selector": {"matchLabels": {"team": "graphql"}}, "severity": "Sev2"}
    }))
}

fn alarm(name: &str, severity: Severity, state: AlarmState) -> WindowAlarm {
    WindowAlarm {
        name: name.to_owned(),
        labels: BTreeMap::from([("team".to_owned(), "graphql".to_owned())]),
        severity,
        state: Some(state),
    }
}

#[test]
fn the_protocol_window_is_open_monday_to_thursday_before_six_pacific() {
    // Tuesday 2026-11-17 10:00 PST.
    let verdict = evaluate(&protocol(), at("2026-11-17T18:00:00Z"), &[]).expect("evaluates");
    assert!(verdict.open, "{verdict:?}");
    // It closes at 18:00 PST, 02:00 UTC the next day.
    assert_eq!(verdict.next_transition, Some(at("2026-11-18T02:00:00Z")));

    // Thursday 18:00 PST exactly: closed until Monday 00:00 PST.
    let verdict = evaluate(&protocol(), at("2026-11-20T02:00:00Z"), &[]).expect("evaluates");
    assert!(!verdict.open);
    assert!(
        verdict.reason.contains("outside the weekly windows"),
        "{}",
        verdict.reason
    );
    assert_eq!(verdict.next_transition, Some(at("2026-11-23T08:00:00Z")));

    // Saturday: closed.
    assert!(
        !evaluate(&protocol(), at("2026-11-21T20:00:00Z"), &[])
            .expect("evaluates")
            .open
    );
}

#[test]
fn a_holiday_blackout_closes_the_window_until_the_first_weekday_after_it() {
    // Monday 2026-11-30, 09:00 PST: a weekday inside the freeze.
    let verdict = evaluate(&protocol(), at("2026-11-30T17:00:00Z"), &[]).expect("evaluates");
    assert!(!verdict.open);
    assert!(
        verdict.reason.contains("blackout holiday-freeze"),
        "{}",
        verdict.reason
    );
    // The freeze ends on Monday 2027-01-04 at 00:00 PST, which is also when
    // the Monday window opens.
    assert_eq!(verdict.next_transition, Some(at("2027-01-04T08:00:00Z")));

    // Wednesday before the freeze begins (00:00 PST on the 25th): open,
    // closing when the blackout starts rather than at 18:00.
    let verdict = evaluate(&protocol(), at("2026-11-24T20:00:00Z"), &[]).expect("evaluates");
    assert!(verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-11-25T02:00:00Z")));
}

#[test]
fn an_active_sev2_closes_the_window_and_a_sev3_does_not() {
    let tuesday = at("2026-11-17T18:00:00Z");
    let closed = |alarms: &[WindowAlarm]| !evaluate(&protocol(), tuesday, alarms).expect("ok").open;

    assert!(closed(&[alarm(
        "api-errors",
        Severity::Sev2,
        AlarmState::Alarm
    )]));
    assert!(closed(&[alarm(
        "outage",
        Severity::Sev1,
        AlarmState::Alarm
    )]));
    assert!(!closed(&[alarm(
        "latency",
        Severity::Sev2_5,
        AlarmState::Alarm
    )]));
    assert!(!closed(&[alarm(
        "latency",
        Severity::Sev3,
        AlarmState::Alarm
    )]));
    assert!(!closed(&[alarm(
        "api-errors",
        Severity::Sev2,
        AlarmState::Ok
    )]));
    assert!(!closed(&[alarm(
        "api-errors",
        Severity::Sev2,
        AlarmState::InsufficientData
    )]));

    let mut other_team = alarm("checkout", Severity::Sev1, AlarmState::Alarm);
    other_team
        .labels
        .insert("team".to_owned(), "checkout".to_owned());
    assert!(!closed(&[other_team]));

    let verdict = evaluate(
        &protocol(),
        tuesday,
        &[alarm("api-errors", Severity::Sev2, AlarmState::Alarm)],
    )
    .expect("evaluates");
    assert_eq!(
        verdict.reason,
        "closed: alarm api-errors (Sev2) is in ALARM"
    );
    // The calendar still forecasts its own next change.
    assert_eq!(verdict.next_transition, Some(at("2026-11-18T02:00:00Z")));
}

#[test]
fn the_protocol_window_follows_the_spring_forward_week() {
    // Clocks go from 02:00 PST to 03:00 PDT on Sunday 2026-03-08.
    let friday = at("2026-03-07T04:00:00Z"); // Friday 20:00 PST
    let verdict = evaluate(&protocol(), friday, &[]).expect("evaluates");
    assert!(!verdict.open);
    // Monday 00:00 is now PDT (UTC-7).
    assert_eq!(verdict.next_transition, Some(at("2026-03-09T07:00:00Z")));
    let monday = at("2026-03-09T17:00:00Z"); // 10:00 PDT
    let verdict = evaluate(&protocol(), monday, &[]).expect("evaluates");
    assert!(verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-03-10T01:00:00Z")));
}

#[test]
fn a_bound_in_a_spring_forward_gap_moves_forward_by_the_gap() {
    let window = spec(serde_json::json!({
        "timeZone": "America/Los_Angeles",
        "weekly": [{"days": ["Sun"], "start": "02:30", "end": "05:00"}]
    }));
    // Saturday noon before the change: the window opens at 02:30 + 1h
    // = 03:30 PDT = 10:30 UTC.
    let verdict = evaluate(&window, at("2026-03-07T20:00:00Z"), &[]).expect("evaluates");
    assert!(!verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-03-08T10:30:00Z")));
    // Closes at 05:00 PDT.
    let verdict = evaluate(&window, at("2026-03-08T11:00:00Z"), &[]).expect("evaluates");
    assert!(verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-03-08T12:00:00Z")));
}

#[test]
fn a_bound_in_a_fall_back_repeat_means_its_first_occurrence() {
    // Clocks go from 02:00 PDT back to 01:00 PST on Sunday 2026-11-01.
    let window = spec(serde_json::json!({
        "timeZone": "America/Los_Angeles",
        "weekly": [{"days": ["Sun"], "start": "01:30", "end": "03:00"}]
    }));
    let verdict = evaluate(&window, at("2026-10-31T20:00:00Z"), &[]).expect("evaluates");
    // Opens at the first 01:30 (PDT, 08:30 UTC)...
    assert_eq!(verdict.next_transition, Some(at("2026-11-01T08:30:00Z")));
    // ...stays open through the repeated hour, including the second 01:00
    // to 01:30 (PST), and closes once, at 03:00 PST.
    let calendar = Calendar::new(&window).expect("valid");
    for open in [
        "2026-11-01T08:45:00Z",
        "2026-11-01T09:10:00Z",
        "2026-11-01T09:45:00Z",
    ] {
        assert!(calendar.open_at(at(open)), "{open}");
    }
    assert_eq!(
        calendar.next_transition(at("2026-11-01T08:30:00Z")),
        Some(at("2026-11-01T11:00:00Z"))
    );
}

#[test]
fn windows_that_touch_form_one_open_period() {
    let window = spec(serde_json::json!({
        "timeZone": "Europe/Dublin",
        "weekly": [
            {"days": ["Mon"], "start": "09:00", "end": "24:00"},
            {"days": ["Tue"], "start": "00:00", "end": "17:00"}
        ]
    }));
    let verdict = evaluate(&window, at("2026-11-16T12:00:00Z"), &[]).expect("evaluates");
    assert!(verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-11-17T17:00:00Z")));
}

#[test]
fn a_window_without_weekly_windows_is_open_outside_blackouts() {
    let window = spec(serde_json::json!({
        "timeZone": "UTC",
        "blackouts": [{"name": "freeze", "start": "2026-12-20T00:00:00Z", "end": "2027-01-02T00:00:00Z"}]
    }));
    let verdict = evaluate(&window, at("2026-11-16T12:00:00Z"), &[]).expect("evaluates");
    assert!(verdict.open);
    assert_eq!(verdict.next_transition, Some(at("2026-12-20T00:00:00Z")));
    let after = evaluate(&window, at("2027-01-03T00:00:00Z"), &[]).expect("evaluates");
    assert!(after.open);
    assert_eq!(after.next_transition, None);
}

#[test]
fn an_invalid_selector_is_an_error_not_a_verdict() {
    let mut window = protocol();
    if let Some(gate) = window.closed_while_alarms.as_mut() {
        gate.selector.match_expressions = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                key: "team".to_owned(),
                operator: "Near".to_owned(),
                values: None,
            },
        ]);
    }
    assert!(matches!(
        evaluate(&window, at("2026-11-17T18:00:00Z"), &[]),
        Err(WindowError::BadSelector(_))
    ));
}

/// Zones with daylight saving in both hemispheres, a 30-minute shift
/// (Lord Howe), transitions at midnight (Santiago, Havana) and none (UTC).
const ZONES: &[&str] = &[
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Dublin",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Asia/Kolkata",
    "UTC",
];

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn weekly_strategy() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::vec(
        (
            prop::collection::btree_set(0usize..7, 1..=7),
            0u32..(24 * 4),
            1u32..=(24 * 4),
        ),
        0..4,
    )
    .prop_map(|windows| {
        let windows: Vec<serde_json::Value> = windows
            .into_iter()
            .map(|(days, a, b)| {
                // Quarter-hour bounds, so that gaps and repeats are hit often.
                let (start, end) = if a < b {
                    (a, b)
                } else {
                    (b.saturating_sub(1), b)
                };
                let text = |q: u32| format!("{:02}:{:02}", q / 4, (q % 4) * 15);
                serde_json::json!({
                    "days": days.iter().map(|d| DAYS[*d]).collect::<Vec<_>>(),
                    "start": text(start),
                    "end": text(end),
                })
            })
            .collect();
        serde_json::Value::Array(windows)
    })
}

fn spec_strategy() -> impl Strategy<Value = ChangeWindowSpec> {
    (
        prop::sample::select(ZONES),
        weekly_strategy(),
        prop::collection::vec((0i64..(60 * 86_400), 1i64..(20 * 86_400)), 0..3),
    )
        .prop_map(|(zone, weekly, blackouts)| {
            let base = at("2026-01-01T00:00:00Z").as_second();
            let blackouts: Vec<serde_json::Value> = blackouts
                .into_iter()
                .enumerate()
                .map(|(i, (offset, length))| {
                    let start = Timestamp::from_second(base + offset * 6).expect("in range");
                    let end = Timestamp::from_second(start.as_second() + length).expect("in range");
                    serde_json::json!({"name": format!("b{i}"), "start": start.to_string(), "end": end.to_string()})
                })
                .collect();
            spec(serde_json::json!({"timeZone": zone, "weekly": weekly, "blackouts": blackouts}))
        })
}

/// Whether `text`'s weekly windows contain the local wall time of `at`,
/// read naively: its weekday is listed and `start <= time < end`.
fn naive_weekly_open(spec: &ChangeWindowSpec, at: Timestamp) -> bool {
    let zone = spec.time_zone.zone().expect("known zone");
    let local = zone.to_datetime(at);
    let minutes = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let weekday = format!("{:?}", local.weekday());
    spec.weekly.iter().any(|w| {
        let parse = |t: &str| {
            let (h, m) = t.split_once(':').expect("HH:MM");
            h.parse::<i32>().expect("hour") * 60 + m.parse::<i32>().expect("minute")
        };
        w.days
            .iter()
            .any(|d| weekday.starts_with(&format!("{d:?}")))
            && parse(&w.start) <= minutes
            && minutes < parse(&w.end)
    }) || spec.weekly.is_empty()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The forecast transition is a real change, and nothing changes before
    /// it: the state just before it and at sampled instants in between
    /// equals the state now.
    #[test]
    fn the_next_transition_is_the_first_change(
        spec in spec_strategy(),
        offset in 0i64..(90 * 86_400),
        samples in prop::collection::vec(0.0f64..1.0, 8),
    ) {
        let calendar = Calendar::new(&spec).expect("valid");
        let now = Timestamp::from_second(at("2026-01-01T00:00:00Z").as_second() + offset).expect("in range");
        let was_open = calendar.open_at(now);
        match calendar.next_transition(now) {
            Some(next) => {
                prop_assert!(next > now);
                prop_assert_ne!(calendar.open_at(next), was_open);
                let span = (next.as_second() - now.as_second()) as f64;
                let before = Timestamp::from_second(next.as_second() - 1).expect("in range");
                prop_assert_eq!(calendar.open_at(before.max(now)), was_open);
                for fraction in samples {
                    let t = Timestamp::from_second(now.as_second() + (span * fraction) as i64).expect("in range");
                    prop_assert_eq!(calendar.open_at(t), was_open, "at {} between {} and {}", t, now, next);
                }
            }
            None => {
                // No change forecast: the state holds for the next weeks.
                for day in 0..21 {
                    let t = Timestamp::from_second(now.as_second() + day * 86_400 + 3_600).expect("in range");
                    prop_assert_eq!(calendar.open_at(t), was_open);
                }
            }
        }
    }

    /// Away from daylight-saving changes the windows mean what they say on
    /// the wall clock.
    #[test]
    fn the_weekly_windows_read_like_the_wall_clock(
        spec in spec_strategy(),
        offset in 0i64..(365 * 86_400),
    ) {
        let now = Timestamp::from_second(at("2026-01-01T00:00:00Z").as_second() + offset).expect("in range");
        let zone = spec.time_zone.zone().expect("known zone");
        let day = 86_400;
        let offsets: Vec<_> = [-2 * day, -day, 0, day, 2 * day]
            .iter()
            .map(|delta| {
                let t = Timestamp::from_second(now.as_second() + delta).expect("in range");
                zone.to_offset(t)
            })
            .collect();
        prop_assume!(offsets.windows(2).all(|pair| pair[0] == pair[1]));
        let calendar = Calendar::new(&spec).expect("valid");
        prop_assert_eq!(calendar.weekly_open(now), naive_weekly_open(&spec, now));
    }

    /// Each listed day's window opens at most once a day, even on the days
    /// clocks change: counting openings over a day never exceeds the windows.
    #[test]
    fn a_window_opens_at_most_once_per_listed_day(
        zone in prop::sample::select(ZONES),
        start in 0u32..(24 * 4),
        length in 1u32..(8 * 4),
        offset in 0i64..(365 * 86_400),
    ) {
        let end = (start + length).min(24 * 4);
        let text = |q: u32| format!("{:02}:{:02}", q / 4, (q % 4) * 15);
        let window = spec(serde_json::json!({
            "timeZone": zone,
            "weekly": [{"days": DAYS, "start": text(start), "end": text(end)}]
        }));
        let calendar = Calendar::new(&window).expect("valid");
        let begin = Timestamp::from_second(at("2026-01-01T00:00:00Z").as_second() + offset).expect("in range");
        let mut now = begin;
        let mut openings = 0;
        while let Some(next) = calendar.next_transition(now) {
            if next.as_second() > begin.as_second() + 3 * 86_400 {
                break;
            }
            if calendar.open_at(next) {
                openings += 1;
            }
            now = next;
        }
        // Three days hold at most three daily windows, plus one that began
        // before and one that starts right at the end.
        prop_assert!(openings <= 4, "{openings} openings in three days");
    }
}
