//! What a failed reconciliation does: its error falls into a category a
//! person can act on, the first failure of a category (and every change of
//! category) becomes one Warning event, and the object backs off
//! exponentially, with jitter and a cap, until it succeeds again. A status
//! write refused for a stale resourceVersion is remembered, so that the
//! same stale object is not written again: the watch brings the fresh one.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::Duration,
};

use crate::Error;

/// What kind of failure an error is, as a person would act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// The API server refused what the object's spec led to (400, 422).
    InvalidSpec,
    /// The API server did not answer, was overloaded or failed (429, 5xx,
    /// a connection or timeout error).
    ApiServerUnavailable,
    /// The object changed under the decision (409, a stale cache, a
    /// revision gone): routine, decided again from the fresh object.
    Conflict,
    /// The operator lacks a permission (401, 403).
    Forbidden,
    /// A call outside the API server failed (another cluster, a provider).
    OutboundFailed,
    /// Anything else, a bug to report.
    Internal,
}

impl Category {
    /// The category of `error`; a Kubernetes API error by its status code.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                409 => Category::Conflict,
                401 | 403 => Category::Forbidden,
                400 | 422 => Category::InvalidSpec,
                429 | 500..=599 => Category::ApiServerUnavailable,
                _ => Category::Internal,
            },
            Error::Kube(_) => Category::ApiServerUnavailable,
            Error::StaleCache { .. } | Error::RevisionGone { .. } => Category::Conflict,
            Error::Region { .. } => Category::OutboundFailed,
            _ => Category::Internal,
        }
    }

    /// The event reason and metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Category::InvalidSpec => "InvalidSpec",
            Category::ApiServerUnavailable => "ApiServerUnavailable",
            Category::Conflict => "Conflict",
            Category::Forbidden => "Forbidden",
            Category::OutboundFailed => "OutboundFailed",
            Category::Internal => "InternalError",
        }
    }

    /// Whether a person acts on it: conflicts resolve themselves.
    pub fn is_reported(self) -> bool {
        self != Category::Conflict
    }

    /// The first wait, doubled at each failure in a row, and the cap.
    fn waits(self) -> (Duration, Duration) {
        match self {
            // The watch brings the fresh object within milliseconds; the
            // requeue is only a safety net.
            Category::Conflict => (Duration::from_millis(500), Duration::from_secs(10)),
            _ => (Duration::from_secs(1), MAX_BACKOFF),
        }
    }
}

/// The longest a failing object waits between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long to wait after the `failures`-th failure in a row (from 1) of
/// `category`: the category's first wait doubled each time, capped, then
/// spread by `jitter` (in `[0, 1)`) over 80-100% of it, so that objects that
/// failed together do not retry together.
pub fn backoff(category: Category, failures: u32, jitter: f64) -> Duration {
    let (first, cap) = category.waits();
    let doublings = failures.saturating_sub(1).min(20);
    let wait = first.saturating_mul(1 << doublings).min(cap);
    wait.mul_f64(0.8 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// What to do about one failure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// When to try again.
    pub wait: Duration,
    /// Whether this failure starts a new category for the object: publish a
    /// Warning event for it (when the category is reported).
    pub new_category: bool,
}

/// The failures in a row of one object.
#[derive(Clone, Copy, Debug)]
struct Streak {
    failures: u32,
    category: Category,
}

/// Failures in a row and known-stale resourceVersions, per object (keyed
/// by [`key`]). Only objects that failed are held, and only until they
/// succeed.
#[derive(Debug, Default)]
pub struct Failures {
    streaks: Mutex<HashMap<String, Streak>>,
    stale: Mutex<HashMap<String, String>>,
    jitter: RandomState,
}

/// The key of an object: `Kind namespace/name`.
pub fn key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{kind} {}/{name}", namespace.unwrap_or_default())
}

impl Failures {
    /// Records a failure of `category` for `key`.
    pub fn failed(&self, key: &str, category: Category) -> Verdict {
        let mut streaks = self
            .streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let streak = streaks.entry(key.to_owned()).or_insert(Streak {
            failures: 0,
            category,
        });
        let new_category = streak.failures == 0 || streak.category != category;
        if streak.category != category {
            // Another cause starts its own backoff.
            *streak = Streak {
                failures: 0,
                category,
            };
        }
        streak.failures = streak.failures.saturating_add(1);
        let failures = streak.failures;
        drop(streaks);
        // A hash seeded once per process: a spread, not a secret.
        let spread = self.jitter.hash_one((key, failures)) as f64 / u64::MAX as f64;
        Verdict {
            wait: backoff(category, failures, spread),
            new_category,
        }
    }

    /// Forgets `key`'s failures: it succeeded.
    pub fn succeeded(&self, key: &str) {
        let mut streaks = self
            .streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streaks.remove(key);
    }

    /// The failures in a row of `key` so far.
    pub fn streak(&self, key: &str) -> u32 {
        let streaks = self
            .streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streaks.get(key).map_or(0, |s| s.failures)
    }

    /// Remembers that a write of `key` at `resource_version` was refused as
    /// stale.
    pub fn mark_stale(&self, key: &str, resource_version: &str) {
        let mut stale = self
            .stale
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stale.insert(key.to_owned(), resource_version.to_owned());
    }

    /// Whether `key` at `resource_version` is known to be stale; a newer
    /// version clears what was remembered.
    pub fn is_stale(&self, key: &str, resource_version: Option<&str>) -> bool {
        let mut stale = self
            .stale
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match stale.get(key) {
            Some(known) if Some(known.as_str()) == resource_version => true,
            Some(_) => {
                stale.remove(key);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Refused").with_code(code),
        )))
    }

    #[test]
    fn api_errors_fall_into_categories_by_status_code() {
        let cases = [
            (409, Category::Conflict),
            (403, Category::Forbidden),
            (401, Category::Forbidden),
            (422, Category::InvalidSpec),
            (429, Category::ApiServerUnavailable),
            (504, Category::ApiServerUnavailable),
            (404, Category::Internal),
        ];
        for (code, category) in cases {
            assert_eq!(Category::of(&api_error(code)), category, "{code}");
        }
        let stale = Error::StaleCache {
            object: "WeblabDial team/checkout".to_owned(),
        };
        assert_eq!(Category::of(&stale), Category::Conflict);
        let region = Error::Region {
            region: "eu".to_owned(),
            why: "unreachable".to_owned(),
        };
        assert_eq!(Category::of(&region), Category::OutboundFailed);
    }

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_only_shortens_them() {
        let secs = |failures| backoff(Category::Internal, failures, 1.0).as_secs();
        let waits: Vec<u64> = (1..=11).map(secs).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(
            backoff(Category::Internal, u32::MAX, 1.0),
            MAX_BACKOFF,
            "no overflow"
        );
        let least = backoff(Category::Internal, 3, 0.0);
        assert_eq!(least, Duration::from_millis(3200));
        assert!(backoff(Category::Conflict, 1, 0.5) < Duration::from_secs(1));
        assert_eq!(
            backoff(Category::Conflict, 30, 1.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn one_event_per_category_transition_and_success_resets() {
        let failures = Failures::default();
        let key = key("WeblabDial", Some("team"), "checkout");
        let first = failures.failed(&key, Category::ApiServerUnavailable);
        assert!(first.new_category);
        let second = failures.failed(&key, Category::ApiServerUnavailable);
        assert!(!second.new_category, "a retry of the same cause is quiet");
        assert!(second.wait >= Duration::from_millis(1600) && first.wait <= Duration::from_secs(1));
        assert_eq!(failures.streak(&key), 2);
        // Another cause: reported, and its own backoff from the start.
        let forbidden = failures.failed(&key, Category::Forbidden);
        assert!(forbidden.new_category);
        assert_eq!(failures.streak(&key), 1);
        assert!(forbidden.wait <= Duration::from_secs(1));
        failures.succeeded(&key);
        assert_eq!(failures.streak(&key), 0);
        assert!(failures.failed(&key, Category::Forbidden).new_category);
        // Other objects are their own.
        assert!(
            failures
                .failed("WeblabDial team/other", Category::Forbidden)
                .new_category
        );
    }

    #[test]
    fn a_stale_version_is_known_until_a_newer_one_is_seen() {
        let failures = Failures::default();
        assert!(!failures.is_stale("k", Some("7")));
        failures.mark_stale("k", "7");
        assert!(failures.is_stale("k", Some("7")));
        assert!(failures.is_stale("k", Some("7")), "until the cache moves");
        assert!(!failures.is_stale("k", Some("8")));
        assert!(!failures.is_stale("k", Some("7")), "forgotten once newer");
    }
}
