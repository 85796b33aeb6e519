//! `make bench`, guardrail figures: the sequential test of
//! `weblab_operator::stats` on simulated traffic (seeded, so the figures
//! repeat). 1,000 requests/s in all, base error rate 1%, evaluated every
//! 15 s as an alarm with `interval: 15s` would, at the default confidence.
//!
//! 1. Time to detect a 2x and a 1.5x error regression of the treatment at
//!    1%, 5% and 25% exposure: median and 90th percentile over 500 runs,
//!    and how many runs detected it within the hour.
//! 2. False rollbacks per 1,000 A/A runs of an hour each (240 looks).
//!
//! Printed, never asserted.

use weblab_operator::{
    api::alarm::DEFAULT_CONFIDENCE,
    stats::{
        sequential::{Test, Tolerance, Worse},
        simulation::{Rng, Scenario},
    },
};

const RUNS: usize = 500;
const HOUR: f64 = 3600.0;

fn main() {
    let test = Test {
        worse: Worse::Higher,
        tolerance: Tolerance::Relative(0.0),
        confidence: DEFAULT_CONFIDENCE,
        min_trials: 1000.0,
    };
    let mut rng = Rng::new(2026);
    println!(
        "guardrail: time to detect an error regression (base 1%, 1,000 requests/s, every 15 s, confidence {DEFAULT_CONFIDENCE})"
    );
    for factor in [2.0, 1.5] {
        for exposure in [0.01, 0.05, 0.25] {
            let scenario = Scenario {
                treatment_rate: 0.01 * factor,
                ..Scenario::a_a(1000.0, exposure, 0.01, HOUR)
            };
            let mut times: Vec<f64> = (0..RUNS)
                .filter_map(|_| scenario.first_alarm(&test, &mut rng))
                .collect();
            times.sort_by(f64::total_cmp);
            let at = |q: f64| {
                times
                    .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                    .map_or_else(|| "never".to_owned(), |t| format!("{t:.0} s"))
            };
            println!(
                "  {factor}x at {:>2}% exposure: median {}, p90 {}, detected in {} of {RUNS} runs within the hour",
                exposure * 100.0,
                at(0.5),
                at(0.9),
                times.len()
            );
        }
    }
    println!("guardrail: false rollbacks per 1,000 A/A runs (an hour each, 240 looks)");
    for confidence in [0.95, DEFAULT_CONFIDENCE] {
        let test = Test { confidence, ..test };
        for exposure in [0.01, 0.05, 0.25] {
            let scenario = Scenario::a_a(1000.0, exposure, 0.01, HOUR);
            let false_rollbacks = (0..1000)
                .filter(|_| scenario.first_alarm(&test, &mut rng).is_some())
                .count();
            println!(
                "  confidence {confidence}, {:>2}% exposure: {false_rollbacks} per 1,000",
                exposure * 100.0
            );
        }
    }
}
