//! The bucket of a unit: a stable hash of (salt, unit id) into 10,000 buckets.

use sha2::{Digest, Sha256};

use crate::api::common::BASIS_POINTS;

/// How many buckets units are hashed into: one per basis point, so that any
/// allocation maps to a whole number of buckets.
pub const BUCKETS: u32 = BASIS_POINTS;

/// The bucket of `unit` under `salt`, in `[0, BUCKETS)`.
///
/// This function is part of the wire contract: every replica, and any client
/// that computes buckets itself, must get the same answer, and changing it
/// moves every unit of every weblab to a new bucket. It is
///
/// ```text
/// bucket = u64_be(SHA-256(u64_be(len(salt)) || salt || unit)[0..8]) mod 10000
/// ```
///
/// where `len` counts UTF-8 bytes. The length prefix makes the encoding
/// injective, so `("ab", "c")` and `("a", "bc")` hash differently; the unit
/// needs no prefix because it runs to the end. The modulo bias is
/// `10000 / 2^64`, far below anything measurable.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    // Incremental updates hash without building the encoding in a buffer, so
    // the request path allocates nothing. A `usize` always fits in a `u64` on
    // the platforms Rust supports, so the length is exact.
    let mut hasher = Sha256::new();
    hasher.update((salt.len() as u64).to_be_bytes());
    hasher.update(salt.as_bytes());
    hasher.update(unit.as_bytes());
    let digest = hasher.finalize();
    let prefix = digest
        .iter()
        .take(8)
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    // The remainder is below 10,000, so it fits in a u32 without loss.
    (prefix % u64::from(BUCKETS)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Computed once from this implementation and cross-checked with Python's
    /// `hashlib` (`int.from_bytes(sha256(len(s).to_bytes(8, "big") + s + u)
    /// .digest()[:8], "big") % 10000`). If one of these fails, the function
    /// changed and every unit in production would move: revert the change.
    const GOLDEN: &[(&str, &str, u32)] = &[
        ("checkout-button", "customer-1", 9210),
        ("checkout-button", "customer-2", 6412),
        ("checkout-button", "A1B2C3D4E5F6G7", 348),
        ("ab", "c", 298),
        ("a", "bc", 2972),
        ("", "", 1850),
        ("salt", "", 8744),
        ("", "unit", 9885),
        ("ünïcødé", "顧客-42", 2329),
    ];

    #[test]
    fn golden_vectors_are_pinned() {
        for (salt, unit, expected) in GOLDEN {
            assert_eq!(
                bucket(salt, unit),
                *expected,
                "bucket({salt:?}, {unit:?}) changed: this reshuffles every unit"
            );
        }
    }

    #[test]
    fn the_boundary_between_salt_and_unit_matters() {
        assert_ne!(bucket("ab", "c"), bucket("a", "bc"));
        assert_ne!(bucket("", "abc"), bucket("abc", ""));
    }

    proptest! {
        #[test]
        fn bucket_is_deterministic_and_in_range(salt in ".{0,40}", unit in ".{0,80}") {
            let first = bucket(&salt, &unit);
            prop_assert!(first < BUCKETS);
            prop_assert_eq!(first, bucket(&salt, &unit));
            // A copy of the inputs, not just the same pointers.
            prop_assert_eq!(first, bucket(&salt.clone(), &unit.clone()));
        }
    }
}
