//! Sample ratio mismatch: do the trials per treatment match the shares the
//! dial serves?
//!
//! Method: the sequential multinomial test of Lindon & Malek ("Anytime-valid
//! inference for multinomial count data", NeurIPS 2022). Under the served
//! shares `π`, the Bayes factor of a Dirichlet-multinomial alternative
//! (prior `Dirichlet(C·π)`) against the multinomial with shares `π`,
//!
//! ```text
//! BF = Γ(C)/Γ(C+n) · Π Γ(C·π_i + x_i)/Γ(C·π_i) / Π π_i^x_i
//! ```
//!
//! is a nonnegative martingale with mean 1, so by Ville's inequality it
//! ever exceeds `1/α` with probability at most `α`: checking it at every
//! evaluation keeps the false-mismatch rate at `α`. We use the strict
//! [`SRM_ALPHA`] (0.001): a mismatch withholds every decision in the realm.

/// The false-mismatch rate: a mismatch is declared when the Bayes factor
/// exceeds `1/SRM_ALPHA`.
pub const SRM_ALPHA: f64 = 0.001;

/// The prior's concentration `C`: how far from the served shares the
/// alternative expects the trials to be (smaller: larger mismatches).
pub const CONCENTRATION: f64 = 100.0;

/// The outcome of the check.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleRatio {
    /// Each treatment's share of the trials observed.
    pub observed: Vec<f64>,
    /// The shares expected (normalised).
    pub expected: Vec<f64>,
    /// The natural logarithm of the Bayes factor (infinite when a treatment
    /// served to nobody has trials).
    pub log_bayes_factor: f64,
    /// Whether the trials mismatch the shares.
    pub mismatch: bool,
}

/// `ln Γ(x)` for `x > 0`: the recurrence up to 10, then Stirling's series,
/// accurate to about 1e-12 there.
pub fn ln_gamma(x: f64) -> f64 {
    let mut shift = 0.0;
    let mut x = x;
    while x < 10.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let inverse = 1.0 / x;
    let inverse2 = inverse * inverse;
    let series = inverse
        * (1.0 / 12.0 - inverse2 * (1.0 / 360.0 - inverse2 * (1.0 / 1260.0 - inverse2 / 1680.0)));
    shift + (x - 0.5) * x.ln() - x + 0.5 * std::f64::consts::TAU.ln() + series
}

/// Checks `trials` (one count per treatment) against `shares` (the served
/// shares, in any unit, same order).
pub fn check(trials: &[f64], shares: &[f64]) -> SampleRatio {
    let served: f64 = shares.iter().sum();
    let total: f64 = trials.iter().sum();
    let expected: Vec<f64> = shares
        .iter()
        .map(|s| if served > 0.0 { s / served } else { 0.0 })
        .collect();
    let observed: Vec<f64> = trials
        .iter()
        .map(|t| if total > 0.0 { t / total } else { 0.0 })
        .collect();
    let mut log_bf = ln_gamma(CONCENTRATION) - ln_gamma(CONCENTRATION + total);
    for (&x, &pi) in trials.iter().zip(&expected) {
        if pi <= 0.0 {
            if x > 0.0 {
                log_bf = f64::INFINITY;
                break;
            }
            continue;
        }
        let prior = CONCENTRATION * pi;
        log_bf += ln_gamma(prior + x) - ln_gamma(prior) - x * pi.ln();
    }
    SampleRatio {
        observed,
        expected,
        log_bayes_factor: log_bf,
        mismatch: log_bf >= -SRM_ALPHA.ln(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::simulation::Rng;

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut factorial: f64 = 1.0;
        for n in 1..30u32 {
            assert!(
                (ln_gamma(f64::from(n)) - factorial.ln()).abs() < 1e-10,
                "{n}"
            );
            factorial *= f64::from(n);
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-10);
    }

    /// Runs a realm of `shares` served at 1,000 requests/s, checked every
    /// 15 s for an hour, where the trials actually fall with `actual`
    /// shares: whether a mismatch is ever declared.
    fn ever_mismatched(shares: &[f64], actual: &[f64], rng: &mut Rng) -> bool {
        let mut trials = vec![0.0; shares.len()];
        for _ in 0..240 {
            let mut left = 15_000u64;
            let mut rest = 1.0;
            for (i, share) in actual.iter().enumerate() {
                let drawn = if i + 1 == actual.len() {
                    left
                } else {
                    rng.binomial(left, (share / rest).min(1.0))
                };
                trials[i] += drawn as f64;
                left -= drawn;
                rest -= share;
            }
            if check(&trials, shares).mismatch {
                return true;
            }
        }
        false
    }

    /// 10,000 hour-long realms served as planned, checked every 15 s:
    /// mismatches stay within SRM_ALPHA (plus three binomial deviations).
    #[test]
    fn matching_ratios_rarely_mismatch() {
        let mut rng = Rng::new(11);
        let mut found = 0;
        for run in 0..10_000 {
            let shares: &[f64] = match run % 3 {
                0 => &[0.95, 0.05],
                1 => &[0.5, 0.5],
                _ => &[0.8, 0.1, 0.1],
            };
            found += usize::from(ever_mismatched(shares, shares, &mut rng));
        }
        let ceiling = 10_000.0 * SRM_ALPHA + 3.0 * (10_000.0 * SRM_ALPHA).sqrt();
        assert!(
            f64::from(found as u32) <= ceiling,
            "{found} false mismatches"
        );
    }

    /// A 5% treatment that gets 5.5% of the trials (a tenth of its units
    /// counted twice, or assigned elsewhere) is caught within the hour.
    #[test]
    fn a_broken_assignment_is_caught() {
        let mut rng = Rng::new(12);
        let caught = (0..200)
            .filter(|_| ever_mismatched(&[0.95, 0.05], &[0.945, 0.055], &mut rng))
            .count();
        assert!(caught >= 190, "caught {caught} of 200");
    }

    #[test]
    fn trials_of_an_unserved_treatment_mismatch_at_once() {
        let result = check(&[100.0, 1.0], &[1.0, 0.0]);
        assert!(result.mismatch);
        assert_eq!(result.log_bayes_factor, f64::INFINITY);
        assert_eq!(result.expected, vec![1.0, 0.0]);
        let fine = check(&[100.0, 0.0], &[1.0, 0.0]);
        assert!(!fine.mismatch);
    }
}
