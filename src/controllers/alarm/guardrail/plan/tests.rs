use super::*;
use crate::api::alarm::GuardrailTolerance;

const NOW: i64 = 1_800_000_600;

fn dial() -> WeblabDial {
    // EU: 5% T1 since 600 s ago; NA: 5% T1 since 300 s ago; FE: control
    // only (rolled back); AP: fully dialed up.
    serde_saphyr::from_str(
        "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata: {name: checkout, namespace: shop}
spec:
  weblab: CHECKOUT
  treatments: [C, T1]
  realms: [EU, NA, FE, AP]
  allocation: {C: 95, T1: 5}
status:
  realms:
    - {realm: EU, allocation: {C: 95, T1: 5}}
    - {realm: NA, allocation: {C: 95, T1: 5}}
    - {realm: FE, allocation: {C: 100}, rolledBack: true}
    - {realm: AP, allocation: {T1: 100}}
  history:
    - {at: '2027-01-15T08:00:00Z', realm: EU, to: {C: 95, T1: 5}, reason: Step, generation: 1}
    - {at: '2027-01-15T08:05:00Z', realm: NA, to: {C: 95, T1: 5}, reason: Step, generation: 1}
",
    )
    .expect("a valid dial")
}

fn now() -> Timestamp {
    // 2027-01-15T08:10:00Z
    Timestamp::from_second(NOW).expect("in range")
}

fn source() -> GuardrailSource {
    serde_saphyr::from_str(
        "dialRef: {name: checkout}
url: http://prometheus:9090
outcomes: sum(increase(errors_total{treatment=\"$treatment\",realm=\"$realm\"}[$window]))
trials: sum(increase(requests_total{treatment=\"$treatment\",realm=\"$realm\"}[$window]))
",
    )
    .expect("a valid source")
}

fn counts(arms: &[(f64, f64)]) -> Vec<Counts> {
    arms.iter()
        .map(|&(trials, outcomes)| Counts {
            trials: Sample::Values(vec![trials]),
            outcomes: Sample::Values(vec![outcomes]),
            squares: None,
        })
        .collect()
}

fn plan(realm: &str) -> RealmPlan {
    realms(&dial(), Some(realm), now())
        .pop()
        .expect("the realm is planned")
}

#[test]
fn the_time_is_the_fixture_time() {
    assert_eq!(now().to_string(), "2027-01-15T08:10:00Z");
}

#[test]
fn each_realm_counts_from_its_own_stage_and_skips_what_it_cannot_compare() {
    let plans = realms(&dial(), None, now());
    let work: Vec<(&str, &Work)> = plans.iter().map(|p| (p.realm.as_str(), &p.work)).collect();
    let arms = vec![("C".to_owned(), 0.95), ("T1".to_owned(), 0.05)];
    assert_eq!(
        work[0],
        (
            "EU",
            &Work::Query {
                window: 600,
                arms: arms.clone()
            }
        )
    );
    assert_eq!(work[1], ("NA", &Work::Query { window: 300, arms }));
    assert!(
        matches!(work[2], ("FE", Work::Decided(AlarmState::Ok, why)) if why.contains("no treatment is exposed"))
    );
    assert!(
        matches!(work[3], ("AP", Work::Decided(AlarmState::Ok, why)) if why.contains("control is not served"))
    );
    assert_eq!(realms(&dial(), Some("NA"), now()).len(), 1);
}

#[test]
fn templates_name_the_treatment_realm_and_window() {
    assert_eq!(
        render(&source().trials, "T1", "EU", 600),
        "sum(increase(requests_total{treatment=\"T1\",realm=\"EU\"}[600s]))"
    );
}

/// Checks that `realm` is in `ALARM` for a reason containing `fragment`,
/// and returns T1's comparison.
fn alarming_t1<'a>(realm: &'a RealmComparison, fragment: &str) -> &'a TreatmentComparison {
    assert_eq!(realm.state, AlarmState::Alarm, "{}", realm.reason);
    assert!(realm.reason.contains(fragment), "{}", realm.reason);
    &realm.treatments[0]
}

#[test]
fn a_doubled_error_rate_alarms_with_the_estimate() {
    let test = test(&source());
    let (realm, error) = decide(
        &plan("EU"),
        &counts(&[(57_000.0, 570.0), (3_000.0, 60.0)]),
        &test,
    );
    assert_eq!(error, None);
    let t1 = alarming_t1(&realm, "T1 is worse than C in EU");
    assert_eq!(t1.state, AlarmState::Alarm);
    assert!((t1.estimate - 0.01).abs() < 1e-12);
    assert!(t1.lower.is_some_and(|l| l > 0.0 && l < 0.01));
    assert_eq!((t1.trials, t1.control_trials), (3000.0, 57_000.0));
    let ratio = realm.sample_ratio.as_ref().expect("a sample ratio");
    assert!(!ratio.mismatch);
    assert_eq!(ratio.expected.get("T1"), Some(&0.05));

    let (all, reason, value) = overall(&[
        realm,
        decide(
            &plan("NA"),
            &counts(&[(28_500.0, 285.0), (1_500.0, 15.0)]),
            &test,
        )
        .0,
    ]);
    assert_eq!(all, AlarmState::Alarm);
    assert!(
        reason.contains("in EU") && !reason.contains("in NA"),
        "{reason}"
    );
    assert_eq!(value, Some(t1_estimate()));
}

fn t1_estimate() -> f64 {
    60.0 / 3000.0 - 570.0 / 57_000.0
}

#[test]
fn equal_rates_are_ok_and_a_tolerance_absorbs_a_small_regression() {
    let mut source = source();
    let equal = counts(&[(57_000.0, 570.0), (3_000.0, 30.0)]);
    let (realm, _) = decide(&plan("EU"), &equal, &test(&source));
    assert_eq!(realm.state, AlarmState::Ok, "{}", realm.reason);
    let worse = counts(&[(570_000.0, 5_700.0), (30_000.0, 390.0)]);
    assert_eq!(
        decide(&plan("EU"), &worse, &test(&source)).0.state,
        AlarmState::Alarm
    );
    source.tolerance = Some(GuardrailTolerance {
        relative: Some(0.5),
        absolute: None,
    });
    assert_eq!(
        decide(&plan("EU"), &worse, &test(&source)).0.state,
        AlarmState::Ok
    );
}

#[test]
fn too_few_trials_or_a_failed_query_decide_nothing() {
    let test = test(&source());
    let (realm, _) = decide(
        &plan("EU"),
        &counts(&[(19_000.0, 190.0), (999.0, 999.0)]),
        &test,
    );
    assert_eq!(realm.state, AlarmState::InsufficientData);
    assert!(realm.reason.contains("too few trials"), "{}", realm.reason);

    let failed = vec![
        counts(&[(1.0, 1.0)]).remove(0),
        Counts {
            trials: Sample::Failed("connection refused".to_owned()),
            outcomes: Sample::Values(vec![]),
            squares: None,
        },
    ];
    let (realm, error) = decide(&plan("EU"), &failed, &test);
    assert_eq!(realm.state, AlarmState::InsufficientData);
    assert_eq!(error.as_deref(), Some("connection refused"));
}

#[test]
fn a_sample_ratio_mismatch_withholds_the_decision() {
    let test = test(&source());
    // 9% of the trials where 5% is served, and a regression in them.
    let (realm, _) = decide(
        &plan("EU"),
        &counts(&[(54_600.0, 546.0), (5_400.0, 540.0)]),
        &test,
    );
    assert_eq!(realm.state, AlarmState::InsufficientData);
    let ratio = realm.sample_ratio.expect("a sample ratio");
    assert!(ratio.mismatch);
    assert_eq!(ratio.observed.get("T1"), Some(&0.09));
    assert!(
        realm.reason.contains("T1 0.0900") && realm.reason.contains("T1 0.0500"),
        "{}",
        realm.reason
    );
    assert!(realm.treatments.is_empty());
}

#[test]
fn with_no_realm_the_guardrail_has_no_data() {
    assert_eq!(overall(&[]).0, AlarmState::InsufficientData);
}

#[test]
fn with_squares_the_means_are_compared() {
    let test = test(&source());
    // Control: 57,000 requests of mean 0.100 s (sd 0.1); T1: 3,000 of mean
    // 0.150 s, same spread.
    let arm = |n: f64, mean: f64| Counts {
        trials: Sample::Values(vec![n]),
        outcomes: Sample::Values(vec![n * mean]),
        squares: Some(Sample::Values(vec![n * (0.01 + mean * mean)])),
    };
    let counts = vec![arm(57_000.0, 0.1), arm(3_000.0, 0.15)];
    let (realm, _) = decide(&plan("EU"), &counts, &test);
    let t1 = alarming_t1(&realm, "0.1500 vs 0.1000");
    assert!((t1.estimate - 0.05).abs() < 1e-9);

    let same = vec![arm(57_000.0, 0.1), arm(3_000.0, 0.1)];
    assert_eq!(decide(&plan("EU"), &same, &test).0.state, AlarmState::Ok);

    // Squares too small for the sum cannot be: nothing is decided.
    let impossible = vec![
        arm(57_000.0, 0.1),
        Counts {
            squares: Some(Sample::Values(vec![1.0])),
            ..arm(3_000.0, 0.15)
        },
    ];
    assert_eq!(
        decide(&plan("EU"), &impossible, &test).0.state,
        AlarmState::InsufficientData
    );
}
