//! Simulated traffic for the property tests and the benchmark: a seeded
//! generator (SplitMix64), binomial draws, and an A/B scenario evaluated
//! every interval as the guardrail evaluates it.

use super::sequential::{Arm, Test, Verdict, compare};

/// A small seeded generator (SplitMix64, Steele, Lea & Flood, OOPSLA 2014):
/// the same seed gives the same figures on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1): never 0, so its logarithm is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Successes among `n` trials of probability `p`. Exact (geometric
    /// skips between successes) while fewer than 50 are expected on the
    /// rarer side; the normal approximation, rounded, above, where it is
    /// within a fraction of a count.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let rare = p.min(1.0 - p);
        let mean = n as f64 * rare;
        let count = if mean < 50.0 {
            let step = (1.0 - rare).ln();
            let mut count = 0;
            let mut position = 0.0;
            loop {
                position += (self.uniform().ln() / step).floor() + 1.0;
                if position > n as f64 {
                    break count;
                }
                count += 1;
            }
        } else {
            let sd = (mean * (1.0 - rare)).sqrt();
            (mean + sd * self.normal()).round().clamp(0.0, n as f64) as u64
        };
        if rare == p { count } else { n - count }
    }
}

/// A two-arm experiment: requests split between control and one treatment,
/// each failing with its own probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// Requests per second, both arms together.
    pub requests_per_second: f64,
    /// The treatment's share of requests.
    pub exposure: f64,
    /// Control's outcome (error) rate.
    pub control_rate: f64,
    /// The treatment's outcome rate.
    pub treatment_rate: f64,
    /// Seconds between evaluations.
    pub interval: f64,
    /// Seconds the experiment runs.
    pub horizon: f64,
}

impl Scenario {
    /// An A/A experiment evaluated every 15 s: both arms fail at `rate`.
    pub fn a_a(requests_per_second: f64, exposure: f64, rate: f64, horizon: f64) -> Self {
        Scenario {
            requests_per_second,
            exposure,
            control_rate: rate,
            treatment_rate: rate,
            interval: 15.0,
            horizon,
        }
    }

    /// Runs the experiment, evaluating `test` on the counts since the start
    /// at every interval; the seconds until the first `ALARM`, if any.
    pub fn first_alarm(&self, test: &Test, rng: &mut Rng) -> Option<f64> {
        let per_interval = (self.requests_per_second * self.interval).round() as u64;
        let mut control = Arm::default();
        let mut treatment = Arm::default();
        let mut elapsed = 0.0;
        while elapsed + self.interval <= self.horizon {
            elapsed += self.interval;
            let exposed = rng.binomial(per_interval, self.exposure);
            let served = per_interval - exposed;
            treatment.trials += exposed as f64;
            treatment.outcomes += rng.binomial(exposed, self.treatment_rate) as f64;
            control.trials += served as f64;
            control.outcomes += rng.binomial(served, self.control_rate) as f64;
            if compare(control, treatment, test, 1).verdict == Verdict::Worse {
                return Some(elapsed);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draws have the binomial mean and variance on both branches.
    #[test]
    fn binomial_draws_have_the_right_moments() {
        let mut rng = Rng::new(7);
        for (n, p) in [(200u64, 0.01), (15_000, 0.05), (1000, 0.97), (40, 0.5)] {
            let draws: Vec<f64> = (0..20_000).map(|_| rng.binomial(n, p) as f64).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            let (m, v) = (n as f64 * p, n as f64 * p * (1.0 - p));
            assert!(
                (mean - m).abs() < 4.0 * (v / 20_000.0).sqrt() + 1e-9,
                "{n} {p}: mean {mean}"
            );
            assert!(
                (var / v - 1.0).abs() < 0.06,
                "{n} {p}: variance {var} vs {v}"
            );
        }
    }
}
