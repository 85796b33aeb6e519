//! Bucket layouts: which of the 10,000 buckets each treatment holds, and how a
//! layout moves to a new allocation while moving as few units as possible.
//!
//! No stateless mapping from allocations to buckets keeps units sticky once a
//! weblab has three treatments: with C/T1/T2, `0/50/50 -> 50/50/0` must keep
//! T1's buckets, `0/50/50 -> 50/0/50` must keep T2's, and `50/50/0 -> 50/0/50`
//! must keep C's; together they force T1's set to equal T2's. So a layout is
//! evolved from the previous one ([`Layout::rebalance`]) and stored in
//! the dial's status, where every replica reads the same one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::bucket::BUCKETS;
use crate::api::{
    common::{Allocation, Percent},
    weblab_dial::BucketRange,
};

/// Why a stored bucket layout is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A range whose start is not below its end.
    #[error("bucket range {index} [{start}, {end}) holds no buckets; start must be below end")]
    EmptyRange {
        /// Position of the range in the list.
        index: usize,
        /// Its first bucket.
        start: u32,
        /// One past its last bucket.
        end: u32,
    },

    /// A range that reaches past the last bucket.
    #[error("bucket range {index} ends at {end}, past the last bucket boundary {BUCKETS}")]
    OutOfRange {
        /// Position of the range in the list.
        index: usize,
        /// One past its last bucket.
        end: u32,
    },

    /// A range that starts before the one listed before it.
    #[error(
        "bucket range {index} starts at {start}, before the previous range's start \
         {previous_start}; ranges must be sorted by start"
    )]
    Unsorted {
        /// Position of the range in the list.
        index: usize,
        /// Its first bucket.
        start: u32,
        /// The first bucket of the range before it.
        previous_start: u32,
    },

    /// A range that starts inside the one before it.
    #[error(
        "bucket range {index} starts at {start}, inside the previous range, which ends at \
         {previous_end}"
    )]
    Overlap {
        /// Position of the range in the list.
        index: usize,
        /// Its first bucket.
        start: u32,
        /// One past the last bucket of the range before it.
        previous_end: u32,
    },

    /// Buckets that no range covers (all of them when the list is empty).
    #[error("buckets [{start}, {end}) belong to no treatment")]
    Gap {
        /// The first uncovered bucket.
        start: u32,
        /// One past the last uncovered bucket.
        end: u32,
    },

    /// A realm whose stored layout serves other shares than its stored
    /// allocation says.
    #[error("the bucket layout serves {derived} but the realm's allocation says {stated}")]
    Disagrees {
        /// The shares the layout serves.
        derived: Allocation,
        /// The shares the status states.
        stated: Allocation,
    },
}

/// Which buckets each treatment holds: sorted runs covering `[0, BUCKETS)`
/// exactly, adjacent runs always of different treatments. (The one exception
/// is the empty layout, which holds no bucket: [`Layout::initial`] returns it
/// only when given no treatment at all.)
///
/// Two layouts serving the same buckets compare equal: the representation is
/// canonical (runs merged, treatments numbered by first appearance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Treatment names, in order of their first run; runs refer to them by
    /// position so that a layout is a few bytes per run, not a string.
    treatments: Vec<Box<str>>,
    /// The runs in bucket order; each starts where the previous one ends.
    runs: Vec<Run>,
}

/// One run of buckets; its start is the previous run's end (0 for the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// One past the last bucket.
    end: u16,
    /// Position in [`Layout::treatments`].
    treatment: u16,
}

impl Layout {
    /// The first layout of a realm: one contiguous run per treatment with a
    /// share, in `treatment_order`.
    ///
    /// Treatments of the allocation missing from `treatment_order` (the API
    /// server rejects those) come after the listed ones, by name, so the
    /// result is still deterministic. An allocation that does not sum to 100%
    /// is laid out as [`Layout::rebalance`] describes; with no treatment at
    /// all (neither listed nor allocated) the layout is empty and serves
    /// nothing.
    pub fn initial(allocation: &Allocation, treatment_order: &[String]) -> Self {
        let ranked = Ranking::new(treatment_order, allocation, std::iter::empty());
        let mut builder = Builder::default();
        for (treatment, share) in ranked.names.iter().zip(ranked.wanted_shares(allocation)) {
            builder.push(treatment, share);
        }
        builder.finish()
    }

    /// The layout for `allocation` that moves the fewest units from this one.
    ///
    /// - A treatment whose share does not change keeps exactly its buckets,
    ///   and one that grows keeps all of its buckets, so no unit ever leaves a
    ///   treatment that did not shrink.
    /// - A shrinking treatment gives up exactly `old - new` buckets: its
    ///   highest-numbered ones, so the buckets it keeps are a prefix of those
    ///   it held.
    /// - Growing treatments, in `treatment_order`, each take exactly
    ///   `new - old` of the released buckets, lowest first.
    ///
    /// So exactly the sum of what the shrinking treatments give up changes
    /// treatment, which is the least any layout for `allocation` can move.
    ///
    /// Fragmentation: a change can only split a run where a shrinking
    /// treatment's kept prefix ends (one split per shrinking treatment) or
    /// where one grower's share of the released buckets ends and the next
    /// one's begins (one per grower but the last). So a change adds at most
    /// `shrinking + growing - 1` runs (at most one less than the number of
    /// treatments), adjacent runs of one treatment are merged, and a layout
    /// never has more runs than the 10,000 buckets (the status's limit). In
    /// practice shrinking treatments give their highest runs back first,
    /// which consumes fragments: a typical ramp (1, 5, 10, 25, 50%, back to
    /// control, a third treatment added) stays at one or two runs per
    /// treatment, and even 1,000 random changes of 6 treatments end with
    /// about 55 runs on average (73 at worst over 50 trials).
    ///
    /// Treatments that this layout holds but `allocation` does not name
    /// shrink to nothing. Treatments missing from `treatment_order` grow
    /// after the listed ones, by name.
    ///
    /// The API server only accepts allocations summing to exactly 100%. So
    /// that a layout is always valid even if one slips through, shares are
    /// taken in treatment order up to 100% (the last treatments lose any
    /// excess) and any shortfall goes to the first treatment, the control:
    /// the error always leans towards control. Compare
    /// [`Layout::allocation`] with the target to detect it.
    pub fn rebalance(&self, allocation: &Allocation, treatment_order: &[String]) -> Self {
        if self.runs.is_empty() {
            // Nothing is held, so nothing can move.
            return Layout::initial(allocation, treatment_order);
        }
        let held_names = self.treatments.iter().map(|name| &**name);
        let ranked = Ranking::new(treatment_order, allocation, held_names);

        // One owner (a rank) per bucket: simple to reason about, and 10,000
        // entries are nothing for a change made once per dial step.
        let rank_of_held: Vec<usize> = self
            .treatments
            .iter()
            .map(|name| ranked.rank(name))
            .collect();
        let mut owners: Vec<usize> = Vec::with_capacity(BUCKETS as usize);
        for (start, end, treatment) in self.run_bounds() {
            let rank = rank_of_held
                .get(usize::from(treatment))
                .copied()
                .expect("every run refers to one of the layout's treatments");
            owners.extend(std::iter::repeat_n(rank, (end - start) as usize));
        }

        let mut held = vec![0u32; ranked.names.len()];
        for &owner in &owners {
            held[owner] += 1;
        }
        let wanted = ranked.wanted_shares(allocation);

        // Shrinking treatments release from their highest buckets down.
        let mut to_release: Vec<u32> = held
            .iter()
            .zip(&wanted)
            .map(|(held, wanted)| held.saturating_sub(*wanted))
            .collect();
        let mut released = Vec::new();
        for (bucket, &owner) in owners.iter().enumerate().rev() {
            if to_release[owner] > 0 {
                to_release[owner] -= 1;
                released.push(bucket);
            }
        }
        released.reverse();

        // Growing treatments, in rank order, take the lowest released first.
        // Both the held and the wanted shares sum to BUCKETS, so the released
        // buckets are exactly what the growing treatments lack.
        let mut pool = released.into_iter();
        for (rank, (held, wanted)) in held.iter().zip(&wanted).enumerate() {
            for bucket in pool.by_ref().take(wanted.saturating_sub(*held) as usize) {
                owners[bucket] = rank;
            }
        }
        debug_assert!(pool.next().is_none(), "every released bucket is taken");

        let mut builder = Builder::default();
        for same_owner in owners.chunk_by(|a, b| a == b) {
            if let Some(&owner) = same_owner.first() {
                builder.push(ranked.names[owner], same_owner.len() as u32);
            }
        }
        builder.finish()
    }

    /// Checks a layout read from a dial's status: sorted by start, no gaps,
    /// no overlaps, covering `[0, BUCKETS)` exactly. Adjacent ranges of one
    /// treatment are accepted and merged. Takes the ranges by reference
    /// (`&status.buckets`) or by value alike.
    pub fn from_ranges(ranges: impl AsRef<[BucketRange]>) -> Result<Self, LayoutError> {
        let ranges = ranges.as_ref();
        let mut builder = Builder::default();
        let mut covered_to = 0;
        let mut previous_start = None;
        for (index, range) in ranges.iter().enumerate() {
            let BucketRange { start, end, .. } = *range;
            if start >= end {
                return Err(LayoutError::EmptyRange { index, start, end });
            }
            if end > BUCKETS {
                return Err(LayoutError::OutOfRange { index, end });
            }
            if start < covered_to {
                return Err(match previous_start {
                    Some(previous_start) if start < previous_start => LayoutError::Unsorted {
                        index,
                        start,
                        previous_start,
                    },
                    _ => LayoutError::Overlap {
                        index,
                        start,
                        previous_end: covered_to,
                    },
                });
            }
            if start > covered_to {
                return Err(LayoutError::Gap {
                    start: covered_to,
                    end: start,
                });
            }
            builder.push(&range.treatment, end - start);
            covered_to = end;
            previous_start = Some(start);
        }
        if covered_to != BUCKETS {
            return Err(LayoutError::Gap {
                start: covered_to,
                end: BUCKETS,
            });
        }
        Ok(builder.finish())
    }

    /// The layout as stored in a dial's status, sorted by start.
    pub fn to_ranges(&self) -> Vec<BucketRange> {
        self.run_bounds()
            .map(|(start, end, treatment)| BucketRange {
                treatment: self.name(treatment).to_owned(),
                start,
                end,
            })
            .collect()
    }

    /// The layout as stored in a dial's status, sorted by start.
    pub fn into_ranges(self) -> Vec<BucketRange> {
        self.to_ranges()
    }

    /// The treatment holding `bucket`; `None` only past the last bucket.
    pub fn treatment_at(&self, bucket: u32) -> Option<&str> {
        let index = self
            .runs
            .partition_point(|run| u32::from(run.end) <= bucket);
        self.runs.get(index).map(|run| self.name(run.treatment))
    }

    /// The shares this layout serves, without zero entries.
    pub fn allocation(&self) -> Allocation {
        let mut buckets: BTreeMap<&str, u32> = BTreeMap::new();
        for (start, end, treatment) in self.run_bounds() {
            *buckets.entry(self.name(treatment)).or_default() += end - start;
        }
        Allocation(
            buckets
                .into_iter()
                .map(|(treatment, count)| {
                    let share = Percent::from_basis_points(count)
                        .expect("a layout holds BUCKETS (one per basis point) buckets in all");
                    (treatment.to_owned(), share)
                })
                .collect(),
        )
    }

    /// How many runs the layout has: a measure of its fragmentation.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// How many buckets hold a different treatment in `other`: the share of
    /// units, in basis points, that a move from this layout to `other` moves.
    /// From or to the empty layout, every bucket changes.
    pub fn changed_buckets(&self, other: &Layout) -> u32 {
        if self.runs.is_empty() != other.runs.is_empty() {
            return BUCKETS;
        }
        let (mut mine, mut theirs) = (self.run_bounds(), other.run_bounds());
        let (mut a, mut b) = (mine.next(), theirs.next());
        let mut changed = 0;
        // Both cover [0, BUCKETS), so walking them together visits every
        // stretch where neither changes treatment exactly once.
        while let (Some((a_start, a_end, a_treatment)), Some((b_start, b_end, b_treatment))) =
            (a, b)
        {
            let (start, end) = (a_start.max(b_start), a_end.min(b_end));
            if self.name(a_treatment) != other.name(b_treatment) {
                changed += end - start;
            }
            if a_end == end {
                a = mine.next();
            }
            if b_end == end {
                b = theirs.next();
            }
        }
        changed
    }

    /// Each run as `(start, end, treatment position)`.
    fn run_bounds(&self) -> impl Iterator<Item = (u32, u32, u16)> + '_ {
        self.runs.iter().scan(0u32, |start, run| {
            let bounds = (*start, u32::from(run.end), run.treatment);
            *start = u32::from(run.end);
            Some(bounds)
        })
    }

    fn name(&self, treatment: u16) -> &str {
        self.treatments
            .get(usize::from(treatment))
            .map_or("", |name| name)
    }
}

impl TryFrom<&[BucketRange]> for Layout {
    type Error = LayoutError;

    fn try_from(ranges: &[BucketRange]) -> Result<Self, Self::Error> {
        Layout::from_ranges(ranges)
    }
}

impl From<&Layout> for Vec<BucketRange> {
    fn from(layout: &Layout) -> Self {
        layout.to_ranges()
    }
}

/// The order in which treatments are laid out and served released buckets:
/// `treatment_order` first (first occurrence wins), then any other treatment
/// of the allocation or of the old layout, by name.
struct Ranking<'a> {
    names: Vec<&'a str>,
    ranks: HashMap<&'a str, usize>,
}

impl<'a> Ranking<'a> {
    fn new(
        treatment_order: &'a [String],
        allocation: &'a Allocation,
        held: impl Iterator<Item = &'a str>,
    ) -> Self {
        let mut names = Vec::new();
        let mut ranks = HashMap::new();
        let unlisted: BTreeSet<&str> = allocation
            .0
            .keys()
            .map(String::as_str)
            .chain(held)
            .collect();
        let listed = treatment_order.iter().map(String::as_str);
        for name in listed.chain(unlisted) {
            ranks.entry(name).or_insert_with(|| {
                names.push(name);
                names.len() - 1
            });
        }
        Ranking { names, ranks }
    }

    /// The buckets each ranked treatment gets: its share, cut so that the
    /// total never exceeds `BUCKETS`, and any shortfall given to the first.
    /// For a whole allocation that is exactly each share.
    fn wanted_shares(&self, allocation: &Allocation) -> Vec<u32> {
        let mut left = BUCKETS;
        let mut wanted: Vec<u32> = self
            .names
            .iter()
            .map(|name| {
                let share = allocation.share(name).basis_points().min(left);
                left -= share;
                share
            })
            .collect();
        if let Some(control) = wanted.first_mut() {
            *control += left;
        }
        wanted
    }

    fn rank(&self, name: &str) -> usize {
        self.ranks
            .get(name)
            .copied()
            .expect("every treatment of the old layout is ranked")
    }
}

/// Builds a canonical layout from runs given in bucket order.
#[derive(Default)]
struct Builder<'a> {
    treatments: Vec<Box<str>>,
    positions: HashMap<&'a str, u16>,
    runs: Vec<Run>,
    end: u32,
}

impl<'a> Builder<'a> {
    /// Appends `len` buckets of `treatment`; callers never pass more than
    /// `BUCKETS` buckets in all.
    fn push(&mut self, treatment: &'a str, len: u32) {
        if len == 0 {
            return;
        }
        self.end += len;
        let end = u16::try_from(self.end).expect("BUCKETS fits in a u16");
        let next = self.treatments.len();
        let position = *self.positions.entry(treatment).or_insert_with(|| {
            // At most BUCKETS runs, so at most BUCKETS distinct treatments.
            u16::try_from(next).expect("at most BUCKETS treatments hold buckets")
        });
        if position as usize == next {
            self.treatments.push(treatment.into());
        }
        match self.runs.last_mut() {
            Some(last) if last.treatment == position => last.end = end,
            _ => self.runs.push(Run {
                end,
                treatment: position,
            }),
        }
    }

    fn finish(self) -> Layout {
        debug_assert!(
            self.end == BUCKETS || self.runs.is_empty(),
            "a layout covers every bucket or, without any treatment, none"
        );
        Layout {
            treatments: self.treatments,
            runs: self.runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::testing::{allocation, allocation_changes, order};
    use proptest::prelude::*;

    fn range(treatment: &str, start: u32, end: u32) -> BucketRange {
        BucketRange {
            treatment: treatment.to_owned(),
            start,
            end,
        }
    }

    /// The treatment of every bucket, as a position in `order`, for
    /// comparing layouts bucket by bucket.
    fn owners(layout: &Layout, order: &[String]) -> Vec<usize> {
        let mut owners = Vec::with_capacity(BUCKETS as usize);
        for range in layout.to_ranges() {
            let owner = order
                .iter()
                .position(|t| *t == range.treatment)
                .expect("tests lay out listed treatments only");
            owners.extend(std::iter::repeat_n(
                owner,
                (range.end - range.start) as usize,
            ));
        }
        owners
    }

    #[test]
    fn initial_lays_treatments_out_in_order_and_skips_empty_ones() {
        let layout = Layout::initial(
            &allocation(&[("C", 5000), ("T1", 0), ("T2", 5000)]),
            &order(3),
        );
        assert_eq!(
            layout.to_ranges(),
            vec![range("C", 0, 5000), range("T2", 5000, 10_000)]
        );
    }

    #[test]
    fn initial_puts_unlisted_treatments_last_by_name() {
        let layout = Layout::initial(
            &allocation(&[("Z", 1000), ("C", 8000), ("B", 1000)]),
            &order(1),
        );
        assert_eq!(
            layout.to_ranges(),
            vec![
                range("C", 0, 8000),
                range("B", 8000, 9000),
                range("Z", 9000, 10_000)
            ]
        );
    }

    #[test]
    fn allocations_that_are_not_whole_lean_towards_control() {
        let order = order(3);
        let short = Layout::initial(
            &allocation(&[("C", 1000), ("T1", 4000), ("T2", 4000)]),
            &order,
        );
        assert_eq!(
            short.allocation(),
            allocation(&[("C", 2000), ("T1", 4000), ("T2", 4000)])
        );
        let over = short.rebalance(
            &allocation(&[("C", 5000), ("T1", 4000), ("T2", 4000)]),
            &order,
        );
        assert_eq!(
            over.allocation(),
            allocation(&[("C", 5000), ("T1", 4000), ("T2", 1000)])
        );
        let nothing = short.rebalance(&Allocation::default(), &order);
        assert_eq!(nothing.allocation(), Allocation::all_in("C"));
        // Without any treatment there is nothing to serve, until there is.
        let empty = Layout::initial(&Allocation::default(), &[]);
        assert_eq!((empty.run_count(), empty.treatment_at(0)), (0, None));
        assert!(empty.to_ranges().is_empty());
        let target = allocation(&[("C", 5000), ("T1", 5000)]);
        let first = empty.rebalance(&target, &order);
        assert_eq!(first, Layout::initial(&target, &order));
        assert_eq!(empty.changed_buckets(&first), BUCKETS);
        assert_eq!(empty.changed_buckets(&empty), 0);
    }

    #[test]
    fn shrinking_releases_the_highest_buckets_and_growers_take_the_lowest_in_order() {
        let order = order(3);
        let layout = Layout::initial(&allocation(&[("C", 6000), ("T1", 4000)]), &order);
        // C gives up [4000, 6000); T1 is listed before T2, so it takes the
        // lower 1000 of those.
        let next = layout.rebalance(
            &allocation(&[("C", 4000), ("T1", 5000), ("T2", 1000)]),
            &order,
        );
        assert_eq!(
            next.to_ranges(),
            vec![
                range("C", 0, 4000),
                range("T1", 4000, 5000),
                range("T2", 5000, 6000),
                range("T1", 6000, 10_000),
            ]
        );
        assert_eq!(layout.changed_buckets(&next), 2000);
    }

    #[test]
    fn the_three_treatment_cycle_keeps_units_sticky() {
        // The cycle that no stateless mapping can serve (see the module docs).
        let order = order(3);
        let start = Layout::initial(&allocation(&[("T1", 5000), ("T2", 5000)]), &order);
        let c_t1 = start.rebalance(&allocation(&[("C", 5000), ("T1", 5000)]), &order);
        let c_t2 = c_t1.rebalance(&allocation(&[("C", 5000), ("T2", 5000)]), &order);
        let (start, c_t1, c_t2) = (
            owners(&start, &order),
            owners(&c_t1, &order),
            owners(&c_t2, &order),
        );
        let (c, t1) = (0, 1);
        for bucket in 0..BUCKETS as usize {
            if start[bucket] == t1 {
                assert_eq!(c_t1[bucket], t1, "T1 kept its share, so keeps its units");
            }
            if c_t1[bucket] == c {
                assert_eq!(c_t2[bucket], c, "C kept its share, so keeps its units");
            }
        }
    }

    #[test]
    fn rebalancing_to_the_same_allocation_changes_nothing() {
        let order = order(3);
        let layout = Layout::initial(
            &allocation(&[("C", 3333), ("T1", 3333), ("T2", 3334)]),
            &order,
        )
        .rebalance(
            &allocation(&[("C", 5000), ("T1", 2500), ("T2", 2500)]),
            &order,
        );
        let same = layout.rebalance(&layout.allocation(), &order);
        assert_eq!(same, layout);
    }

    #[test]
    fn treatment_at_finds_the_run_of_every_edge() {
        let layout = Layout::from_ranges(&[
            range("C", 0, 1),
            range("T1", 1, 9999),
            range("C", 9999, 10_000),
        ])
        .expect("valid");
        assert_eq!(layout.treatment_at(0), Some("C"));
        assert_eq!(layout.treatment_at(1), Some("T1"));
        assert_eq!(layout.treatment_at(9998), Some("T1"));
        assert_eq!(layout.treatment_at(9999), Some("C"));
        assert_eq!(layout.treatment_at(10_000), None);
        assert_eq!(layout.treatment_at(u32::MAX), None);
    }

    #[test]
    fn from_ranges_merges_adjacent_runs_of_one_treatment() {
        let layout =
            Layout::from_ranges(&[range("C", 0, 10), range("C", 10, 10_000)]).expect("valid");
        assert_eq!(layout.to_ranges(), vec![range("C", 0, 10_000)]);
        assert_eq!(layout.run_count(), 1);
        assert_eq!(layout, Layout::initial(&Allocation::all_in("C"), &order(2)));
    }

    #[test]
    fn from_ranges_rejects_malformed_layouts() {
        let cases = [
            (
                vec![],
                LayoutError::Gap {
                    start: 0,
                    end: 10_000,
                },
            ),
            (
                vec![range("C", 1, 10_000)],
                LayoutError::Gap { start: 0, end: 1 },
            ),
            (
                vec![range("C", 0, 9999)],
                LayoutError::Gap {
                    start: 9999,
                    end: 10_000,
                },
            ),
            (
                vec![range("C", 0, 10), range("T1", 20, 10_000)],
                LayoutError::Gap { start: 10, end: 20 },
            ),
            (
                vec![range("C", 0, 20), range("T1", 10, 10_000)],
                LayoutError::Overlap {
                    index: 1,
                    start: 10,
                    previous_end: 20,
                },
            ),
            (
                vec![range("C", 0, 20), range("T1", 0, 10_000)],
                LayoutError::Overlap {
                    index: 1,
                    start: 0,
                    previous_end: 20,
                },
            ),
            (
                vec![range("C", 5000, 10_000), range("T1", 0, 5000)],
                LayoutError::Gap {
                    start: 0,
                    end: 5000,
                },
            ),
            (
                vec![
                    range("C", 0, 5000),
                    range("T1", 5000, 10_000),
                    range("T2", 10, 20),
                ],
                LayoutError::Unsorted {
                    index: 2,
                    start: 10,
                    previous_start: 5000,
                },
            ),
            (
                vec![range("C", 0, 10_001)],
                LayoutError::OutOfRange {
                    index: 0,
                    end: 10_001,
                },
            ),
            (
                vec![
                    range("C", 0, 5000),
                    range("T1", 5000, 5000),
                    range("T1", 5000, 10_000),
                ],
                LayoutError::EmptyRange {
                    index: 1,
                    start: 5000,
                    end: 5000,
                },
            ),
            (
                vec![range("C", 0, 5000), range("T1", 6000, 5000)],
                LayoutError::EmptyRange {
                    index: 1,
                    start: 6000,
                    end: 5000,
                },
            ),
        ];
        for (ranges, expected) in cases {
            assert_eq!(Layout::from_ranges(&ranges), Err(expected), "{ranges:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = LayoutError::Gap { start: 10, end: 20 }.to_string();
        assert_eq!(message, "buckets [10, 20) belong to no treatment");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every rebalance along a random sequence of allocations is valid,
        /// serves the target exactly and moves only the units that must move.
        #[test]
        fn rebalance_moves_exactly_the_units_that_must_move(
            (order, allocations) in allocation_changes()
        ) {
            let mut layout = Layout::initial(&allocations[0], &order);
            prop_assert_eq!(layout.allocation(), allocations[0].normalized());
            for target in &allocations[1..] {
                let next = layout.rebalance(target, &order);

                // Valid: what it stores reads back as the same layout.
                prop_assert_eq!(Layout::from_ranges(next.to_ranges()), Ok(next.clone()));
                prop_assert_eq!(next.allocation(), target.normalized());
                prop_assert_eq!(&layout.rebalance(target, &order), &next, "deterministic");

                let (before, after) = (owners(&layout, &order), owners(&next, &order));
                let old = layout.allocation();
                let was: Vec<u32> = order.iter().map(|t| old.share(t).basis_points()).collect();
                let is: Vec<u32> = order.iter().map(|t| target.share(t).basis_points()).collect();
                let mut kept = vec![0u32; order.len()];
                for (bucket, (&b, &a)) in before.iter().zip(&after).enumerate() {
                    // Growing or holding never moves a unit out.
                    prop_assert!(
                        b == a || is[b] < was[b],
                        "bucket {} left {}, whose share went {} -> {}", bucket, order[b], was[b], is[b]
                    );
                    // A shrinking treatment keeps its lowest buckets.
                    if is[b] < was[b] {
                        prop_assert_eq!(b == a, kept[b] < is[b], "bucket {} of shrinking {}", bucket, &order[b]);
                    }
                    kept[b] += u32::from(b == a);
                }
                let must_move: u32 = was.iter().zip(&is).map(|(w, i)| w.saturating_sub(*i)).sum();
                let shrinking = was.iter().zip(&is).filter(|(w, i)| i < w).count();
                let growing = was.iter().zip(&is).filter(|(w, i)| i > w).count();
                let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as u32;
                prop_assert_eq!(moved, must_move);
                prop_assert_eq!(layout.changed_buckets(&next), must_move);

                // The documented fragmentation bound.
                let bound = layout.run_count() + (shrinking + growing).saturating_sub(1);
                prop_assert!(next.run_count() <= bound, "{} runs, bound {}", next.run_count(), bound);

                layout = next;
            }
        }

        /// `treatment_at` agrees with the stored ranges on every bucket.
        #[test]
        fn treatment_at_agrees_with_the_ranges((order, allocations) in allocation_changes()) {
            let mut layout = Layout::initial(&allocations[0], &order);
            for target in &allocations[1..] {
                layout = layout.rebalance(target, &order);
            }
            for (bucket, owner) in owners(&layout, &order).into_iter().enumerate() {
                prop_assert_eq!(layout.treatment_at(bucket as u32), Some(order[owner].as_str()));
            }
            prop_assert_eq!(layout.treatment_at(BUCKETS), None);
        }

        /// Removing, widening or moving any boundary of a valid layout is
        /// caught.
        #[test]
        fn from_ranges_rejects_any_broken_boundary(
            (order, allocations) in allocation_changes(),
            pick in any::<prop::sample::Index>(),
            shift in prop_oneof![-50i64..0, 1i64..50],
            break_end in any::<bool>(),
        ) {
            let mut layout = Layout::initial(&allocations[0], &order);
            for target in &allocations[1..] {
                layout = layout.rebalance(target, &order);
            }
            let mut ranges = layout.to_ranges();
            let victim = pick.index(ranges.len());
            let range = &mut ranges[victim];
            let moved = if break_end { &mut range.end } else { &mut range.start };
            *moved = (i64::from(*moved) + shift).clamp(0, i64::from(u32::MAX)) as u32;
            let unchanged = ranges == layout.to_ranges();
            prop_assert_eq!(Layout::from_ranges(&ranges).is_ok(), unchanged, "{:?}", ranges);
        }
    }
}
