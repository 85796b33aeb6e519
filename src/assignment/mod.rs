//! Treatment assignment: which treatment a unit (customer, device, session)
//! gets from a weblab dial. Pure: no I/O, no clock, no Kubernetes client, so
//! every replica computes the same answer from the same status.
//!
//! - [`bucket`] hashes (salt, unit id) into one of [`BUCKETS`] buckets; this is
//!   part of the wire contract.
//! - [`Layout`] says which buckets each treatment holds in a realm. The
//!   controller evolves it with [`Layout::rebalance`] and stores it in
//!   `status.realms[].buckets`; replicas read it back with
//!   [`Layout::from_ranges`] (or [`RealmLayout::from_status`]).
//! - [`DialRules`] is what a dial's spec says about assignment (salt, control,
//!   [`OverrideIndex`], override policy), built once per dial change;
//!   [`DialRules::assign`] is the request path and allocates nothing.

mod bucket;
mod layout;
mod overrides;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;

pub use bucket::{BUCKETS, bucket};
pub use layout::{Layout, LayoutError};
pub use overrides::OverrideIndex;

use crate::api::weblab_dial::{Override, OverridePolicy, RealmAllocation, WeblabDialSpec};

/// What a dial's spec says about assignment, compiled once per dial change
/// (not per request).
#[derive(Clone, Debug)]
pub struct DialRules {
    salt: Box<str>,
    control: Box<str>,
    overrides: OverrideIndex,
    override_policy: OverridePolicy,
}

impl DialRules {
    /// Rules from their parts: `control` is served before a realm has a
    /// layout, `override_policy` says whether overrides survive a rollback.
    pub fn new(
        salt: &str,
        control: &str,
        overrides: &[Override],
        override_policy: OverridePolicy,
    ) -> Self {
        DialRules {
            salt: salt.into(),
            control: control.into(),
            overrides: OverrideIndex::new(overrides),
            override_policy,
        }
    }

    /// The rules of a dial's spec; `None` when it lists no treatment (which
    /// the API server rejects), since then there is no control to serve.
    pub fn from_spec(spec: &WeblabDialSpec) -> Option<Self> {
        let control = spec.control()?;
        Some(DialRules::new(
            spec.salt(),
            control,
            &spec.overrides,
            spec.rollback.overrides,
        ))
    }

    /// The treatment of `unit`, which belongs to `segments`, in a realm whose
    /// served layout is `realm` (`None` until the controller wrote one).
    ///
    /// Overrides win whenever they apply: always, except in a rolled-back
    /// realm whose dial says `overrides: Drop`. Then the realm's layout
    /// decides; without a layout, the control treatment is served.
    pub fn assign<'a>(
        &'a self,
        realm: Option<&'a RealmLayout>,
        unit: &str,
        segments: &[String],
    ) -> Assignment<'a> {
        let rolled_back = realm.is_some_and(|realm| realm.rolled_back);
        let overrides_apply = !(rolled_back && self.override_policy == OverridePolicy::Drop);
        if overrides_apply && let Some(treatment) = self.overrides.treatment_for(unit, segments) {
            return Assignment {
                treatment,
                reason: AssignmentReason::Override,
            };
        }
        let served = realm.and_then(|realm| realm.layout.treatment_at(bucket(&self.salt, unit)));
        match served {
            Some(treatment) => Assignment {
                treatment,
                reason: if rolled_back {
                    AssignmentReason::Rollback
                } else {
                    AssignmentReason::Allocation
                },
            },
            // A valid layout holds every bucket, so this is only "no layout".
            None => Assignment {
                treatment: &self.control,
                reason: AssignmentReason::Default,
            },
        }
    }

    /// The salt units are bucketed with.
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// The treatment served where no layout exists yet.
    pub fn control(&self) -> &str {
        &self.control
    }
}

/// A realm's served layout, as read from the dial's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmLayout {
    /// Which buckets each treatment holds.
    pub layout: Layout,
    /// Whether the layout serves the rollback allocation.
    pub rolled_back: bool,
}

impl RealmLayout {
    /// Reads and checks one realm of `status.realms`: `Ok(None)` while the
    /// controller has written no buckets yet, an error when the buckets are
    /// malformed or serve other shares than the realm's allocation states.
    pub fn from_status(realm: &RealmAllocation) -> Result<Option<Self>, LayoutError> {
        if realm.buckets.is_empty() {
            return Ok(None);
        }
        let layout = Layout::from_ranges(&realm.buckets)?;
        let (derived, stated) = (layout.allocation(), realm.allocation.normalized());
        if derived != stated {
            return Err(LayoutError::Disagrees { derived, stated });
        }
        Ok(Some(RealmLayout {
            layout,
            rolled_back: realm.rolled_back,
        }))
    }
}

/// The treatment a unit gets, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment<'a> {
    /// The treatment (`C`, `T1`, ...).
    pub treatment: &'a str,
    /// Why the unit gets it.
    pub reason: AssignmentReason,
}

/// Why a unit gets its treatment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignmentReason {
    /// An override pins the unit or one of its segments.
    Override,
    /// The realm's allocation, through the unit's bucket.
    Allocation,
    /// The realm's rollback allocation, through the unit's bucket.
    Rollback,
    /// No layout yet: the control treatment.
    Default,
}

impl AssignmentReason {
    /// The reason as a static, low-cardinality label.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentReason::Override => "Override",
            AssignmentReason::Allocation => "Allocation",
            AssignmentReason::Rollback => "Rollback",
            AssignmentReason::Default => "Default",
        }
    }
}

impl fmt::Display for AssignmentReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::OnceLock};

    use proptest::prelude::*;

    use super::testing::{
        SplitMix64, allocation, allocation_changes, hex_id, order, random_allocation,
    };
    use super::*;
    use crate::api::common::Allocation;

    const SALT: &str = "shares-test";
    const SEED: u64 = 0x5eed_5eed_5eed_5eed;

    /// How many of a number of fixed-seed random unit ids fall in each
    /// bucket.
    struct Sample {
        units: u64,
        counts: Vec<u64>,
    }

    /// 200,000 units, for the tests that run by default: 5 standard
    /// deviations of a share are at most 0.56 percentage points. SHA-256 is
    /// slow in a debug build (about 8 us a hash here, 1.5 s for the sample),
    /// so the sample is hashed once and shared; each property then costs one
    /// pass over the buckets.
    fn sample() -> &'static Sample {
        static SAMPLE: OnceLock<Sample> = OnceLock::new();
        SAMPLE.get_or_init(|| count_buckets(200_000))
    }

    /// A million units, for the heavy tests run with `--ignored`: 5 standard
    /// deviations of a share are at most 0.25 percentage points.
    fn million() -> &'static Sample {
        static MILLION: OnceLock<Sample> = OnceLock::new();
        MILLION.get_or_init(|| count_buckets(1_000_000))
    }

    /// Hashes `units` ids split across threads; which ids are hashed does
    /// not depend on the number of threads.
    fn count_buckets(units: u64) -> Sample {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let per_thread = units.div_ceil(threads);
        let partial_counts = |first: u64| {
            let mut counts = vec![0u64; BUCKETS as usize];
            let mut ids = SplitMix64::at(SEED, first);
            let mut buffer = [0u8; 16];
            for _ in first..(first + per_thread).min(units) {
                counts[bucket(SALT, hex_id(ids.next_u64(), &mut buffer)) as usize] += 1;
            }
            counts
        };
        let counts = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| scope.spawn(move || partial_counts(t * per_thread)))
                .collect();
            let mut counts = vec![0u64; BUCKETS as usize];
            for worker in workers {
                let partial = worker.join().expect("a histogram worker panicked");
                for (total, count) in counts.iter_mut().zip(partial) {
                    *total += count;
                }
            }
            counts
        });
        Sample { units, counts }
    }

    /// Pearson's chi-square over all buckets is within 5 standard deviations
    /// of its mean: with k = BUCKETS - 1 degrees of freedom, mean k and
    /// standard deviation sqrt(2k).
    fn check_uniform(sample: &Sample) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            sample.counts.iter().sum::<u64>(),
            sample.units,
            "every unit counted once"
        );
        let expected = sample.units as f64 / f64::from(BUCKETS);
        let chi_square: f64 = sample
            .counts
            .iter()
            .map(|&count| (count as f64 - expected).powi(2) / expected)
            .sum();
        let k = f64::from(BUCKETS - 1);
        prop_assert!(
            (chi_square - k).abs() <= 5.0 * (2.0 * k).sqrt(),
            "chi-square {:.0} with {} degrees of freedom",
            chi_square,
            k
        );
        Ok(())
    }

    /// Each treatment's observed share of `sample`, through the layout that
    /// `allocations` lead to, is within five standard deviations of the last
    /// allocation.
    fn check_shares(
        sample: &Sample,
        order: &[String],
        allocations: &[Allocation],
    ) -> Result<(), TestCaseError> {
        let layout = layout_after(order, allocations);
        let target = allocations.last().expect("at least one allocation");
        let mut observed: BTreeMap<String, u64> = BTreeMap::new();
        for range in layout.to_ranges() {
            let units: u64 = sample.counts[range.start as usize..range.end as usize]
                .iter()
                .sum();
            *observed.entry(range.treatment).or_default() += units;
        }
        for treatment in order {
            let p = f64::from(target.share(treatment).basis_points()) / f64::from(BUCKETS);
            let units = observed.get(treatment).copied().unwrap_or(0);
            let share = units as f64 / sample.units as f64;
            prop_assert!(
                (share - p).abs() <= tolerance(p, sample.units),
                "{}: observed {:.5}, allocated {:.4}",
                treatment,
                share,
                p
            );
        }
        Ok(())
    }

    /// 2 to 5 treatments and 1 to 5 allocations reaching a layout.
    fn share_cases() -> impl Strategy<Value = (Vec<String>, Vec<Allocation>)> {
        (2usize..=5).prop_flat_map(|n| {
            let order = order(n);
            (
                Just(order.clone()),
                prop::collection::vec(random_allocation(order), 1..=5),
            )
        })
    }

    /// Five standard deviations of the observed share of a treatment holding
    /// `p` of `units` independent units: a false alarm has a probability
    /// below one in a million per comparison.
    fn tolerance(p: f64, units: u64) -> f64 {
        5.0 * (p * (1.0 - p) / units as f64).sqrt()
    }

    fn layout_after(order: &[String], allocations: &[Allocation]) -> Layout {
        let (first, rest) = allocations.split_first().expect("at least one allocation");
        rest.iter()
            .fold(Layout::initial(first, order), |layout, next| {
                layout.rebalance(next, order)
            })
    }

    #[test]
    fn buckets_are_uniform() {
        if let Err(failure) = check_uniform(sample()) {
            panic!("{failure}");
        }
    }

    /// The whole request path, `assign` on raw unit ids, over a fragmented
    /// layout. Fewer units than the histogram tests (hashing is slow in
    /// debug builds); the tolerance accounts for it.
    #[test]
    fn units_through_assign_match_a_fragmented_allocation() {
        const SAMPLE: u64 = 100_000;
        let order = order(4);
        let target = allocation(&[("C", 4321), ("T1", 1234), ("T2", 9), ("T3", 4436)]);
        let layout = layout_after(
            &order,
            &[
                allocation(&[("C", 2500), ("T1", 2500), ("T2", 2500), ("T3", 2500)]),
                allocation(&[("C", 7000), ("T2", 3000)]),
                allocation(&[("C", 1000), ("T1", 5000), ("T3", 4000)]),
                target.clone(),
            ],
        );
        assert!(layout.run_count() > order.len(), "the layout is fragmented");
        let realm = RealmLayout {
            layout,
            rolled_back: false,
        };
        let rules = DialRules::new("request-path", "C", &[], OverridePolicy::Keep);

        let mut counts = [0u64; 4];
        let mut ids = SplitMix64::at(SEED, 0);
        let mut buffer = [0u8; 16];
        for _ in 0..SAMPLE {
            let assignment = rules.assign(Some(&realm), hex_id(ids.next_u64(), &mut buffer), &[]);
            assert_eq!(assignment.reason, AssignmentReason::Allocation);
            let index = order
                .iter()
                .position(|t| t == assignment.treatment)
                .expect("a listed treatment");
            counts[index] += 1;
        }
        for (treatment, count) in order.iter().zip(counts) {
            let p = f64::from(target.share(treatment).basis_points()) / f64::from(BUCKETS);
            let observed = count as f64 / SAMPLE as f64;
            assert!(
                (observed - p).abs() <= tolerance(p, SAMPLE),
                "{treatment}: observed {observed:.5}, allocated {p:.4}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Each treatment's observed share of 200,000 units is within five
        /// standard deviations of its allocation, for layouts reached
        /// through random changes.
        #[test]
        fn observed_shares_match_the_allocation((order, allocations) in share_cases()) {
            check_shares(sample(), &order, &allocations)?;
        }

        /// The same over a million units, and their uniformity over the
        /// buckets. About 8 s in a debug build (under 1 s with `--release`):
        /// `cargo test --lib assignment -- --ignored`.
        #[test]
        #[ignore = "hashes a million units: about 8 s in a debug build"]
        fn a_million_units_match_the_allocation((order, allocations) in share_cases()) {
            check_uniform(million())?;
            check_shares(million(), &order, &allocations)?;
        }
    }

    /// Overrides over small pools of units (`u0..u7`) and segments
    /// (`s0..s5`), so that several overrides often match one request.
    fn random_overrides(order: Vec<String>) -> impl Strategy<Value = Vec<Override>> {
        let names = |prefix: &'static str, pool: u8| {
            prop::collection::btree_set((0..pool).prop_map(move |i| format!("{prefix}{i}")), 0..3)
        };
        let one = (prop::sample::select(order), names("u", 8), names("s", 6)).prop_map(
            |(treatment, units, segments)| Override {
                treatment,
                units: units.into_iter().collect(),
                segments: segments.into_iter().collect(),
            },
        );
        prop::collection::vec(one, 0..5)
    }

    /// The precedence rules, written as plainly as possible.
    fn expected_override<'a>(
        overrides: &'a [Override],
        unit: &str,
        segments: &[String],
    ) -> Option<&'a str> {
        let by_unit = overrides.iter().find(|o| o.units.iter().any(|u| u == unit));
        let by_segment = || {
            overrides
                .iter()
                .find(|o| o.segments.iter().any(|s| segments.contains(s)))
        };
        by_unit.or_else(by_segment).map(|o| o.treatment.as_str())
    }

    proptest! {
        /// Overrides win over any layout whenever they apply, in the
        /// documented precedence; otherwise the layout decides.
        #[test]
        fn overrides_win_whenever_they_apply(
            ((order, allocations), overrides) in allocation_changes().prop_flat_map(|(order, allocations)| {
                let overrides = random_overrides(order.clone());
                (Just((order, allocations)), overrides)
            }),
            unit in (0..12u8).prop_map(|i| format!("u{i}")),
            segments in prop::collection::vec((0..7u8).prop_map(|i| format!("s{i}")), 0..5),
            rolled_back in any::<bool>(),
            drop_overrides in any::<bool>(),
            has_layout in any::<bool>(),
        ) {
            let policy = if drop_overrides { OverridePolicy::Drop } else { OverridePolicy::Keep };
            let rules = DialRules::new(SALT, &order[0], &overrides, policy);
            let realm = RealmLayout { layout: layout_after(&order, &allocations), rolled_back };
            let realm = has_layout.then_some(&realm);
            let assignment = rules.assign(realm, &unit, &segments);

            let applies = !(has_layout && rolled_back && drop_overrides);
            match expected_override(&overrides, &unit, &segments).filter(|_| applies) {
                Some(pinned) => {
                    prop_assert_eq!(assignment, Assignment { treatment: pinned, reason: AssignmentReason::Override });
                }
                None => {
                    prop_assert_ne!(assignment.reason, AssignmentReason::Override);
                    let expected = match realm {
                        Some(realm) => Assignment {
                            treatment: realm.layout.treatment_at(bucket(SALT, &unit)).expect("every bucket"),
                            reason: if rolled_back { AssignmentReason::Rollback } else { AssignmentReason::Allocation },
                        },
                        None => Assignment { treatment: &order[0], reason: AssignmentReason::Default },
                    };
                    prop_assert_eq!(assignment, expected);
                }
            }

            // A segment override never applies without its segment.
            let pinned_by_id = overrides.iter().any(|o| o.units.contains(&unit));
            let without_segments = rules.assign(realm, &unit, &[]);
            prop_assert_eq!(
                without_segments.reason == AssignmentReason::Override,
                pinned_by_id && applies
            );
        }
    }

    #[test]
    fn a_dropped_override_gives_way_to_the_rollback_allocation() {
        let overrides = [Override {
            treatment: "T1".to_owned(),
            units: vec!["alice".to_owned()],
            segments: vec!["beta".to_owned()],
        }];
        let rolled_back = RealmLayout {
            layout: Layout::initial(&Allocation::all_in("C"), &order(2)),
            rolled_back: true,
        };
        let keep = DialRules::new(SALT, "C", &overrides, OverridePolicy::Keep);
        let drop = DialRules::new(SALT, "C", &overrides, OverridePolicy::Drop);
        let beta = ["beta".to_owned()];
        assert_eq!(
            keep.assign(Some(&rolled_back), "bob", &beta),
            Assignment {
                treatment: "T1",
                reason: AssignmentReason::Override
            }
        );
        assert_eq!(
            drop.assign(Some(&rolled_back), "alice", &beta),
            Assignment {
                treatment: "C",
                reason: AssignmentReason::Rollback
            }
        );
        // Before any layout exists nothing is rolled back, so overrides apply.
        assert_eq!(
            drop.assign(None, "alice", &[]).reason,
            AssignmentReason::Override
        );
        assert_eq!(
            drop.assign(None, "bob", &[]),
            Assignment {
                treatment: "C",
                reason: AssignmentReason::Default
            }
        );
    }

    fn realm_status(
        allocation: Allocation,
        buckets: Vec<crate::api::weblab_dial::BucketRange>,
    ) -> RealmAllocation {
        RealmAllocation {
            realm: "NA".to_owned(),
            allocation,
            buckets,
            rolled_back: true,
        }
    }

    #[test]
    fn realm_layouts_are_read_and_checked_from_status() {
        let layout = Layout::initial(&allocation(&[("C", 9000), ("T1", 1000)]), &order(2));
        let read = RealmLayout::from_status(&realm_status(
            allocation(&[("C", 9000), ("T1", 1000), ("T2", 0)]),
            layout.to_ranges(),
        ));
        assert_eq!(
            read,
            Ok(Some(RealmLayout {
                layout: layout.clone(),
                rolled_back: true
            }))
        );
        assert_eq!(
            RealmLayout::from_status(&realm_status(Allocation::all_in("C"), vec![])),
            Ok(None)
        );
        assert_eq!(
            RealmLayout::from_status(&realm_status(Allocation::all_in("C"), layout.to_ranges())),
            Err(LayoutError::Disagrees {
                derived: layout.allocation(),
                stated: Allocation::all_in("C"),
            })
        );
    }

    #[test]
    fn dial_rules_follow_the_spec() {
        let spec: WeblabDialSpec = serde_json::from_value(serde_json::json!({
            "weblab": "checkout-button",
            "treatments": ["C", "T1"],
            "realms": ["NA"],
            "allocation": {"C": 50, "T1": 50},
            "overrides": [{"treatment": "T1", "units": ["alice"]}],
            "rollback": {"overrides": "Drop"},
        }))
        .expect("a valid spec");
        let rules = DialRules::from_spec(&spec).expect("has a control");
        assert_eq!(rules.salt(), "checkout-button");
        assert_eq!(rules.control(), "C");
        let rolled_back = RealmLayout {
            layout: Layout::initial(&Allocation::all_in("C"), &spec.treatments),
            rolled_back: true,
        };
        assert_eq!(rules.assign(None, "alice", &[]).treatment, "T1");
        assert_eq!(
            rules.assign(Some(&rolled_back), "alice", &[]).treatment,
            "C"
        );
    }
}
