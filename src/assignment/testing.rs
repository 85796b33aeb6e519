//! Test helpers and proptest strategies shared by the assignment tests.

use proptest::prelude::*;

use crate::api::common::{Allocation, BASIS_POINTS, Percent};

/// `C, T1, T2, ...`: `treatments` names, control first.
pub(crate) fn order(treatments: usize) -> Vec<String> {
    (0..treatments)
        .map(|i| match i {
            0 => "C".to_owned(),
            i => format!("T{i}"),
        })
        .collect()
}

/// An allocation from `(treatment, basis points)` pairs.
pub(crate) fn allocation(shares: &[(&str, u32)]) -> Allocation {
    Allocation(
        shares
            .iter()
            .map(|(treatment, bp)| {
                let share = Percent::from_basis_points(*bp).expect("test shares are in range");
                ((*treatment).to_owned(), share)
            })
            .collect(),
    )
}

/// A random allocation over `treatments` summing to 10,000 basis points,
/// with zero shares (listed or left out) and tiny shares common.
pub(crate) fn random_allocation(treatments: Vec<String>) -> impl Strategy<Value = Allocation> {
    let cut = prop_oneof![
        4 => 0..=BASIS_POINTS,
        1 => Just(0),
        1 => Just(BASIS_POINTS),
        1 => 0u32..3,
        1 => (BASIS_POINTS - 3)..=BASIS_POINTS,
    ];
    (
        prop::collection::vec(cut, treatments.len() - 1),
        any::<bool>(),
    )
        .prop_map(move |(mut cuts, list_zeros)| {
            cuts.push(0);
            cuts.push(BASIS_POINTS);
            cuts.sort_unstable();
            let shares = treatments
                .iter()
                .zip(cuts.windows(2))
                .map(|(treatment, bounds)| (treatment.as_str(), bounds[1] - bounds[0]))
                .filter(|(_, bp)| list_zeros || *bp > 0)
                .collect::<Vec<_>>();
            allocation(&shares)
        })
}

/// A treatment order of 2 to 6 treatments and 2 to 8 random allocations over
/// it: an initial one and the changes that follow.
pub(crate) fn allocation_changes() -> impl Strategy<Value = (Vec<String>, Vec<Allocation>)> {
    (2usize..=6).prop_flat_map(|treatments| {
        let order = order(treatments);
        (
            Just(order.clone()),
            prop::collection::vec(random_allocation(order), 2..=8),
        )
    })
}

/// A small fast generator for reproducible unit ids (SplitMix64): the tests
/// need a fixed seed and speed, not cryptographic quality.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The stream of `seed` from its `position`-th output on: the state only
    /// advances by a constant, so a stream can be split between threads and
    /// still yield the same values.
    pub(crate) fn at(seed: u64, position: u64) -> Self {
        SplitMix64(seed.wrapping_add(position.wrapping_mul(Self::GAMMA)))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Writes `value` as 16 hex digits into `buffer`: a unit id without a heap
/// allocation per id.
pub(crate) fn hex_id(value: u64, buffer: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in buffer.iter_mut().enumerate() {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buffer).expect("hex digits are ASCII")
}
