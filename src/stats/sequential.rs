//! Treatment against control: an always-valid comparison of two rates.
//!
//! Method: the asymptotic confidence sequence (CS) of Waudby-Smith, Arnold,
//! Wu, Ramdas & Howard (Annals of Statistics 2024, Theorem 2.2) with the
//! two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon
//! (Annals of Statistics 2021). For an estimate `θ̂` built from `N` trials
//! with variance `V` (so `σ̂² = N·V` per trial), the interval
//!
//! ```text
//! θ̂ ± sqrt(V) · sqrt( 2(Nρ²+1)/(Nρ²) · ln( sqrt(Nρ²+1) / α ) )
//! ```
//!
//! covers the true `θ` at every `N` simultaneously with probability at least
//! `1 - α` (asymptotically). A fixed-sample interval checked every interval
//! would not: peeking at it 100 times raises a 5% error to well over 30%.
//! `ρ` only decides at which `N` the sequence is tightest ([`TIGHTEST_AT`]).
//!
//! What is tested is a linear contrast of the two rates, so that a relative
//! tolerance needs no ratio estimate: with `s = +1` when higher is worse
//! (errors) and `-1` when lower is worse (successes), a relative tolerance
//! `r` and an absolute tolerance `a`,
//!
//! ```text
//! θ = s·(p_T - p_C) - r·p_C - a = s·p_T - (s + r)·p_C - a
//! ```
//!
//! is positive exactly when the treatment is worse than control by more
//! than the tolerance. The decision is `ALARM` when the whole CS of `θ` lies
//! above 0; the one-sided error is then at most `α/2`, below the `α` the
//! confidence level promises. Several treatments compared with one control
//! share `α` equally (Bonferroni), so a realm's false-alarm rate stays at
//! `α` however many treatments it serves.
//!
//! The variance of each rate is `p̃(1-p̃)/n` with `p̃ = (x+1)/(n+2)` (the
//! Laplace estimate), so an arm with no outcomes yet does not claim zero
//! variance; below the floor of trials per arm nothing is decided. A mean
//! (latency) is compared the same way, its variance the sample variance of
//! the values (from their sum and the sum of their squares) over `n`.

/// The number of trials (control plus treatment) at which the sequence is
/// tightest; it stays valid at every other count, only a little wider. A
/// 5% treatment at 1,000 requests/s reaches it within a minute.
pub const TIGHTEST_AT: f64 = 50_000.0;

/// Which way of a rate is a regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worse {
    /// A higher rate is worse (errors, timeouts).
    Higher,
    /// A lower rate is worse (successes, conversions).
    Lower,
}

/// How much worse than control a treatment may be before it counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// A fraction of control's rate (`0.1`: 10% more errors than control).
    Relative(f64),
    /// A difference of rates (`0.001`: 0.1 percentage points).
    Absolute(f64),
}

/// The question asked of every treatment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    /// Which way is worse.
    pub worse: Worse,
    /// How much worse is tolerated.
    pub tolerance: Tolerance,
    /// The confidence level, `1 - α` (e.g. `0.99`).
    pub confidence: f64,
    /// The fewest trials each arm needs before anything is decided.
    pub min_trials: f64,
}

/// Outcomes among trials, counted from the start of the stage; or, for a
/// mean (latency), the sum of the values and of their squares.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Arm {
    /// Trials (e.g. requests).
    pub trials: f64,
    /// Outcomes among them (e.g. errors); for a mean, the sum of the values.
    pub outcomes: f64,
    /// For a mean: the sum of the squared values. `None` for a rate.
    pub squares: Option<f64>,
}

impl Arm {
    /// The observed rate, or mean (0 without trials).
    pub fn rate(self) -> f64 {
        if self.trials > 0.0 {
            self.outcomes / self.trials
        } else {
            0.0
        }
    }

    /// The variance of the estimate. A rate's comes from its Laplace
    /// estimate, so that no arm claims zero variance; a mean's from the
    /// sample variance of the values.
    fn variance(self) -> f64 {
        let n = self.trials.max(1.0);
        match self.squares {
            None => {
                let smoothed = (self.outcomes + 1.0) / (self.trials + 2.0);
                smoothed * (1.0 - smoothed) / n
            }
            Some(squares) => {
                let mean = self.outcomes / n;
                (squares / n - mean * mean).max(0.0) / n
            }
        }
    }

    /// Counts that can be: finite, no more outcomes than trials for a rate,
    /// squares consistent with the sum for a mean (Cauchy-Schwarz).
    fn is_possible(self) -> bool {
        let finite = self.trials.is_finite() && self.outcomes.is_finite() && self.trials >= 0.0;
        finite
            && match self.squares {
                None => self.outcomes >= 0.0 && self.outcomes <= self.trials,
                Some(squares) => {
                    squares.is_finite()
                        && squares >= 0.0
                        && self.outcomes * self.outcomes <= self.trials * squares * (1.0 + 1e-9)
                }
            }
    }
}

/// What the comparison concludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Worse than control beyond the tolerance, at the stated confidence.
    Worse,
    /// Not shown worse.
    NotWorse,
    /// Below the floor of trials, or counts that cannot be (negative, more
    /// outcomes than trials, not finite).
    Insufficient,
}

/// One treatment compared with control.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// The conclusion.
    pub verdict: Verdict,
    /// Control's rate.
    pub control_rate: f64,
    /// The treatment's rate.
    pub treatment_rate: f64,
    /// `p_T - p_C`.
    pub difference: f64,
    /// The confidence sequence of `p_T - p_C` at this look, `(lower, upper)`.
    pub interval: (f64, f64),
    /// The lower end of the confidence sequence of `θ` (how far past the
    /// tolerance the treatment is worse); `ALARM` when positive.
    pub margin: f64,
}

/// The half-width of the normal-mixture confidence sequence after `trials`
/// trials, for an estimate of variance `variance`, at level `alpha`.
pub fn radius(trials: f64, variance: f64, alpha: f64) -> f64 {
    let log_alpha = -alpha.ln();
    // Howard et al. (2021), the ρ that makes the boundary tightest at
    // TIGHTEST_AT trials.
    let rho2 = (2.0 * log_alpha + (2.0 * log_alpha + 1.0).ln()) / TIGHTEST_AT;
    let t = trials.max(1.0) * rho2;
    (variance * 2.0 * (t + 1.0) / t * ((t + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// Compares `treatment` with `control` under `test`, as one of `comparisons`
/// treatments compared with the same control (they share `α`).
pub fn compare(control: Arm, treatment: Arm, test: &Test, comparisons: usize) -> Comparison {
    let control_rate = control.rate();
    let treatment_rate = treatment.rate();
    let difference = treatment_rate - control_rate;
    let insufficient = Comparison {
        verdict: Verdict::Insufficient,
        control_rate,
        treatment_rate,
        difference,
        interval: (f64::NEG_INFINITY, f64::INFINITY),
        margin: f64::NEG_INFINITY,
    };
    if !control.is_possible()
        || !treatment.is_possible()
        || control.trials.min(treatment.trials) < test.min_trials
    {
        return insufficient;
    }
    let alpha = (1.0 - test.confidence) / comparisons.max(1) as f64;
    let trials = control.trials + treatment.trials;
    let spread = radius(trials, treatment.variance() + control.variance(), alpha);
    let sign = match test.worse {
        Worse::Higher => 1.0,
        Worse::Lower => -1.0,
    };
    let (relative, absolute) = match test.tolerance {
        Tolerance::Relative(r) => (r, 0.0),
        Tolerance::Absolute(a) => (0.0, a),
    };
    let weight = sign + relative;
    let theta = sign * treatment_rate - weight * control_rate - absolute;
    let theta_spread = radius(
        trials,
        treatment.variance() + weight * weight * control.variance(),
        alpha,
    );
    let margin = theta - theta_spread;
    Comparison {
        verdict: if margin > 0.0 {
            Verdict::Worse
        } else {
            Verdict::NotWorse
        },
        control_rate,
        treatment_rate,
        difference,
        interval: (difference - spread, difference + spread),
        margin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::simulation::{Rng, Scenario};

    fn test(confidence: f64, tolerance: Tolerance) -> Test {
        Test {
            worse: Worse::Higher,
            tolerance,
            confidence,
            min_trials: 1000.0,
        }
    }

    /// The allowed count of events among `runs` of probability at most
    /// `level`: the mean plus three binomial standard deviations.
    fn ceiling(runs: usize, level: f64) -> f64 {
        let n = runs as f64;
        n * level + 3.0 * (n * level * (1.0 - level)).sqrt()
    }

    fn false_alarms(scenario: &Scenario, test: &Test, runs: usize, seed: u64) -> usize {
        let mut rng = Rng::new(seed);
        (0..runs)
            .filter(|_| scenario.first_alarm(test, &mut rng).is_some())
            .count()
    }

    /// 10,000 A/A sequences, each evaluated every 15 s for an hour (240
    /// looks), over exposures from 1% to 50%: the share that ever alarms
    /// stays within the confidence level.
    #[test]
    fn a_a_sequences_alarm_at_most_at_the_stated_level() {
        for (confidence, seed) in [(0.95, 1), (0.99, 2)] {
            let test = test(confidence, Tolerance::Relative(0.0));
            let mut alarms = 0;
            let mut runs = 0;
            for (exposure, base) in [(0.01, 0.01), (0.05, 0.01), (0.25, 0.05), (0.5, 0.002)] {
                let scenario = Scenario::a_a(1000.0, exposure, base, 3600.0);
                alarms += false_alarms(&scenario, &test, 2500, seed);
                runs += 2500;
            }
            let level = 1.0 - confidence;
            assert!(
                (alarms as f64) <= ceiling(runs, level),
                "{alarms} false alarms in {runs} A/A runs at confidence {confidence}"
            );
        }
    }

    /// A treatment exactly at the tolerance is not worse beyond it: it may
    /// not alarm more often than the level either.
    #[test]
    fn a_treatment_at_the_tolerance_does_not_alarm_beyond_the_level() {
        let cases = [
            (Tolerance::Relative(0.2), 0.012),
            (Tolerance::Absolute(0.002), 0.012),
        ];
        for (tolerance, treatment_rate) in cases {
            let test = test(0.95, tolerance);
            let scenario = Scenario {
                treatment_rate,
                ..Scenario::a_a(1000.0, 0.05, 0.01, 3600.0)
            };
            let alarms = false_alarms(&scenario, &test, 10_000, 3);
            assert!(
                (alarms as f64) <= ceiling(10_000, 0.05),
                "{alarms} alarms at the tolerance {tolerance:?}"
            );
        }
    }

    /// The same, for a rate where lower is worse (successes).
    #[test]
    fn lower_is_worse_mirrors_higher_is_worse() {
        let test = Test {
            worse: Worse::Lower,
            ..test(0.95, Tolerance::Relative(0.0))
        };
        let a_a = Scenario::a_a(1000.0, 0.05, 0.9, 1800.0);
        let alarms = false_alarms(&a_a, &test, 10_000, 4);
        assert!((alarms as f64) <= ceiling(10_000, 0.05), "{alarms}");
        let regression = Scenario {
            treatment_rate: 0.8,
            ..a_a
        };
        let detected = false_alarms(&regression, &test, 200, 5);
        assert_eq!(detected, 200, "a drop from 90% to 80% success is detected");
    }

    /// A 2x error regression at 5% exposure (base 1%, 1,000 requests/s) is
    /// detected in nearly every run, within 5 minutes.
    #[test]
    fn a_doubled_error_rate_is_detected() {
        let test = test(0.99, Tolerance::Relative(0.0));
        let scenario = Scenario {
            treatment_rate: 0.02,
            ..Scenario::a_a(1000.0, 0.05, 0.01, 300.0)
        };
        let detected = false_alarms(&scenario, &test, 1000, 6);
        assert!(detected >= 950, "detected in {detected} of 1,000 runs");
    }

    /// Per-request latencies, lognormal (heavy right tail, median 100 ms):
    /// `rps` requests/s split evenly, evaluated every 15 s for 10 minutes
    /// on sums and sums of squares; the seconds to the first `ALARM`.
    fn latency_run(test: &Test, rps: u32, slower: f64, rng: &mut Rng) -> Option<u32> {
        let mut arms = [Arm {
            squares: Some(0.0),
            ..Arm::default()
        }; 2];
        for look in 1..=40 {
            for _ in 0..rps * 15 {
                let arm = usize::from(rng.uniform() < 0.5);
                let scale = if arm == 1 { slower } else { 1.0 };
                let latency = scale * (0.1f64.ln() + rng.normal()).exp();
                arms[arm].trials += 1.0;
                arms[arm].outcomes += latency;
                arms[arm].squares = arms[arm].squares.map(|s| s + latency * latency);
            }
            if compare(arms[0], arms[1], test, 1).verdict == Verdict::Worse {
                return Some(look * 15);
            }
        }
        None
    }

    /// 10,000 A/A runs of a heavy-tailed latency mean: false alarms stay
    /// within the level; a 1.5x slower treatment is caught.
    #[test]
    fn a_a_latency_means_alarm_at_most_at_the_stated_level() {
        let test = test(0.95, Tolerance::Relative(0.0));
        let mut rng = Rng::new(8);
        let alarms = (0..10_000)
            .filter(|_| latency_run(&test, 10, 1.0, &mut rng).is_some())
            .count();
        assert!(
            (alarms as f64) <= ceiling(10_000, 0.05),
            "{alarms} false alarms"
        );
        let detected = (0..200)
            .filter(|_| latency_run(&test, 10, 1.5, &mut rng).is_some())
            .count();
        assert!(
            detected >= 190,
            "a 1.5x slower treatment caught in {detected} of 200"
        );
    }

    #[test]
    fn below_the_floor_or_with_impossible_counts_nothing_is_decided() {
        let test = test(0.95, Tolerance::Relative(0.0));
        let control = Arm {
            trials: 100_000.0,
            outcomes: 1000.0,
            squares: None,
        };
        let few = Arm {
            trials: 999.0,
            outcomes: 999.0,
            squares: None,
        };
        assert_eq!(
            compare(control, few, &test, 1).verdict,
            Verdict::Insufficient
        );
        for odd in [
            Arm {
                trials: 5000.0,
                outcomes: 6000.0,
                squares: None,
            },
            Arm {
                trials: 5000.0,
                outcomes: -1.0,
                squares: None,
            },
            Arm {
                trials: f64::NAN,
                outcomes: 1.0,
                squares: None,
            },
        ] {
            assert_eq!(
                compare(control, odd, &test, 1).verdict,
                Verdict::Insufficient
            );
        }
        let worse = Arm {
            trials: 5000.0,
            outcomes: 500.0,
            squares: None,
        };
        let comparison = compare(control, worse, &test, 1);
        assert_eq!(comparison.verdict, Verdict::Worse);
        assert!(comparison.interval.0 > 0.0 && comparison.interval.1 > comparison.interval.0);
        assert!((comparison.difference - 0.09).abs() < 1e-12);
    }

    #[test]
    fn more_treatments_share_alpha_and_widen_the_interval() {
        let test = test(0.95, Tolerance::Relative(0.0));
        let control = Arm {
            trials: 20_000.0,
            outcomes: 200.0,
            squares: None,
        };
        let treatment = Arm {
            trials: 20_000.0,
            outcomes: 260.0,
            squares: None,
        };
        let one = compare(control, treatment, &test, 1);
        let five = compare(control, treatment, &test, 5);
        assert!(five.interval.1 - five.interval.0 > one.interval.1 - one.interval.0);
        assert!(five.margin < one.margin);
    }

    #[test]
    fn the_boundary_shrinks_as_trials_grow() {
        let mut last = f64::INFINITY;
        for trials in [1e3, 1e4, 1e5, 1e6, 1e7] {
            let r = radius(trials, 0.25 / trials, 0.05);
            assert!(r < last, "{trials}: {r}");
            last = r;
        }
    }
}
