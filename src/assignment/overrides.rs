//! Overrides indexed for constant-time lookup on the request path.

use std::collections::HashMap;

use crate::api::weblab_dial::Override;

/// A dial's overrides, indexed once per dial change so that a lookup costs a
/// hash of the unit id (and of each segment it carries), whatever the number
/// of pinned units.
///
/// Precedence, so that every replica gives the same answer:
/// 1. an override naming the unit id wins over any segment override, even one
///    listed earlier;
/// 2. among overrides naming the unit id, the first listed wins;
/// 3. among segment overrides matching any of the unit's segments, the first
///    listed wins, whatever the order of the segments in the request.
#[derive(Clone, Debug, Default)]
pub struct OverrideIndex {
    /// Each override's treatment, by position in `spec.overrides`.
    treatments: Vec<Box<str>>,
    /// Unit id to the position of the first override naming it.
    units: HashMap<Box<str>, usize>,
    /// Segment to the position of the first override naming it.
    segments: HashMap<Box<str>, usize>,
}

impl OverrideIndex {
    /// Indexes `overrides` in the order they are listed.
    pub fn new(overrides: &[Override]) -> Self {
        let mut index = OverrideIndex {
            treatments: Vec::with_capacity(overrides.len()),
            units: HashMap::with_capacity(overrides.iter().map(|o| o.units.len()).sum()),
            segments: HashMap::new(),
        };
        for (position, pinned) in overrides.iter().enumerate() {
            index.treatments.push(pinned.treatment.as_str().into());
            for unit in &pinned.units {
                // `or_insert`: an earlier override keeps the unit.
                index.units.entry(unit.as_str().into()).or_insert(position);
            }
            for segment in &pinned.segments {
                index
                    .segments
                    .entry(segment.as_str().into())
                    .or_insert(position);
            }
        }
        index
    }

    /// The treatment `unit` is pinned to, if any, given the segments it
    /// belongs to.
    pub fn treatment_for(&self, unit: &str, segments: &[String]) -> Option<&str> {
        let position = match self.units.get(unit) {
            Some(position) => Some(*position),
            // Checked first so that dials without segment overrides hash
            // nothing more per request.
            None if self.segments.is_empty() => None,
            None => segments
                .iter()
                .filter_map(|segment| self.segments.get(segment.as_str()).copied())
                .min(),
        }?;
        self.treatments.get(position).map(|treatment| &**treatment)
    }

    /// Whether no override pins anything.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.segments.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(treatment: &str, units: &[&str], segments: &[&str]) -> Override {
        Override {
            treatment: treatment.to_owned(),
            units: units.iter().map(|u| (*u).to_owned()).collect(),
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn segments(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_listed_override_wins() {
        let index = OverrideIndex::new(&[
            pin("T1", &["alice"], &["beta"]),
            pin("T2", &["alice", "bob"], &["beta", "staff"]),
        ]);
        assert_eq!(index.treatment_for("alice", &[]), Some("T1"));
        assert_eq!(index.treatment_for("bob", &[]), Some("T2"));
        assert_eq!(
            index.treatment_for("carol", &segments(&["beta"])),
            Some("T1")
        );
        // The earliest override matching any segment, not the first segment.
        assert_eq!(
            index.treatment_for("carol", &segments(&["staff", "beta"])),
            Some("T1")
        );
        assert_eq!(
            index.treatment_for("carol", &segments(&["staff"])),
            Some("T2")
        );
        assert_eq!(index.treatment_for("carol", &segments(&["other"])), None);
    }

    #[test]
    fn a_unit_override_beats_an_earlier_segment_override() {
        let index = OverrideIndex::new(&[pin("T1", &[], &["beta"]), pin("T2", &["alice"], &[])]);
        assert_eq!(
            index.treatment_for("alice", &segments(&["beta"])),
            Some("T2")
        );
        assert_eq!(index.treatment_for("bob", &segments(&["beta"])), Some("T1"));
    }

    #[test]
    fn unit_ids_and_segments_are_separate_namespaces() {
        // A unit whose id happens to be a segment name is not in the segment.
        let index = OverrideIndex::new(&[pin("T1", &[], &["beta"])]);
        assert_eq!(index.treatment_for("beta", &[]), None);
        assert!(!index.is_empty());
        assert!(OverrideIndex::new(&[]).is_empty());
    }
}
