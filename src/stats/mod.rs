//! Statistical decisions, pure (no I/O, no clock), each naming its method and
//! a reference, each checked by property tests over many simulated runs.
//!
//! - [`sequential`]: is a treatment worse than control beyond a tolerance?
//!   An asymptotic confidence sequence for a difference of two proportions
//!   (Waudby-Smith, Arnold, Wu, Ramdas & Howard, "Time-uniform central limit
//!   theory and asymptotic confidence sequences", Annals of Statistics 2024),
//!   with the normal-mixture boundary of Howard, Ramdas, McAuliffe & Sekhon
//!   ("Time-uniform, nonparametric, nonasymptotic confidence sequences",
//!   Annals of Statistics 2021). Valid at every look: checking it at each
//!   evaluation interval does not raise the false-alarm rate.
//! - [`srm`]: do the trials per treatment match the shares served? The
//!   sequential multinomial test of Lindon & Malek ("Anytime-valid inference
//!   for multinomial count data", NeurIPS 2022), also valid at every look.
//! - [`simulation`]: seeded simulated traffic, for the property tests and the
//!   benchmark figures.

pub mod sequential;
pub mod simulation;
pub mod srm;
