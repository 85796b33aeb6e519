//! Uses of exceptions, queued in memory by the gate and recorded in status
//! by the controller on the leader. The gate never writes to the API server
//! on the request path: it adds to a pending count here and, the first time
//! an exception has something pending, wakes the controller of its scope.
//!
//! Every replica serves the gate, so every replica queues. A follower's
//! reconciliations do nothing, so its queue waits until it leads (the
//! controllers reconcile everything when leadership is gained); uses still
//! pending on a replica that stops are lost. Memory stays bounded: one
//! entry per exception used, at most [`MAX_PENDING`], and the time of each
//! record for one batch interval.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use futures::Stream;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::MergeTrainException;

/// Uses after the first are recorded at most this often per exception.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(30);

/// The most exceptions with pending uses held at once; beyond it a new
/// exception's uses are counted in the metric and the log only.
pub const MAX_PENDING: usize = 10_000;

/// Uses of one exception not recorded yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUses {
    /// The exception's uid, so that uses of a deleted exception never count
    /// for a new one of the same name.
    pub uid: String,
    /// How many.
    pub count: u64,
    /// The first one.
    pub first: Timestamp,
    /// The last one.
    pub last: Timestamp,
    /// What held the train at the first one (`MergeTrainPause x, ...`).
    pub held_by: String,
}

type Key = (String, String);

#[derive(Default)]
struct Queue {
    pending: HashMap<Key, PendingUses>,
    recorded_at: HashMap<Key, Timestamp>,
    subscribers: Vec<(
        Option<String>,
        mpsc::UnboundedSender<ObjectRef<MergeTrainException>>,
    )>,
}

/// The uses every gate answer adds and the controllers record.
#[derive(Default)]
pub struct ExceptionUses {
    queue: Mutex<Queue>,
}

impl ExceptionUses {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one use of the exception `namespace/name` (uid `uid`) at `at`.
    /// `false` when the queue is full and the use is not kept.
    pub fn add(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        at: Timestamp,
        held_by: &str,
    ) -> bool {
        let mut queue = self.queue();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(pending) = queue.pending.get_mut(&key)
            && pending.uid == uid
        {
            pending.count += 1;
            pending.last = pending.last.max(at);
            return true;
        }
        if queue.pending.len() >= MAX_PENDING && !queue.pending.contains_key(&key) {
            return false;
        }
        queue.pending.insert(
            key,
            PendingUses {
                uid: uid.to_owned(),
                count: 1,
                first: at,
                last: at,
                held_by: held_by.to_owned(),
            },
        );
        let reference = ObjectRef::new(name).within(namespace);
        // Subscribers whose controller is gone are dropped.
        queue.subscribers.retain(|(scope, sender)| {
            if scope.as_deref().is_some_and(|scope| scope != namespace) {
                return !sender.is_closed();
            }
            sender.send(reference.clone()).is_ok()
        });
        true
    }

    /// The uses of `namespace/name` not recorded yet, if they are of the
    /// exception with `uid`; those of an exception since replaced are
    /// forgotten.
    pub fn pending(&self, namespace: &str, name: &str, uid: &str) -> Option<PendingUses> {
        let mut queue = self.queue();
        let key = (namespace.to_owned(), name.to_owned());
        match queue.pending.get(&key) {
            Some(pending) if pending.uid == uid => Some(pending.clone()),
            Some(_) => {
                queue.pending.remove(&key);
                None
            }
            None => None,
        }
    }

    /// When this replica last recorded uses of `namespace/name`.
    pub fn recorded_at(&self, namespace: &str, name: &str) -> Option<Timestamp> {
        self.queue()
            .recorded_at
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// `recorded` (a snapshot from [`Self::pending`]) is in status since
    /// `at`: takes it off the queue, keeping uses that arrived meanwhile.
    /// `true` when some are still pending.
    pub fn recorded(
        &self,
        namespace: &str,
        name: &str,
        recorded: &PendingUses,
        at: Timestamp,
    ) -> bool {
        let mut queue = self.queue();
        let key = (namespace.to_owned(), name.to_owned());
        // Older records no longer hold a batch back.
        queue.recorded_at.retain(|_, then| {
            at.duration_since(*then)
                < jiff::SignedDuration::try_from(BATCH_INTERVAL).unwrap_or_default()
        });
        queue.recorded_at.insert(key.clone(), at);
        let Some(pending) = queue.pending.get_mut(&key) else {
            return false;
        };
        if pending.uid != recorded.uid {
            return true;
        }
        pending.count = pending.count.saturating_sub(recorded.count);
        if pending.count == 0 {
            queue.pending.remove(&key);
            return false;
        }
        // The first use left is after the recorded ones.
        pending.first = recorded.last;
        true
    }

    /// The exceptions in `scope` (a namespace, or all) that got their first
    /// pending use, for a controller to reconcile.
    pub fn subscribe(
        &self,
        scope: Option<&str>,
    ) -> impl Stream<Item = ObjectRef<MergeTrainException>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.queue()
            .subscribers
            .push((scope.map(str::to_owned), sender));
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|reference| (reference, receiver))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("instant")
    }

    #[test]
    fn uses_add_up_and_recording_keeps_those_that_came_meanwhile() {
        let uses = ExceptionUses::default();
        assert!(uses.add("team", "fix", "u1", at(0), "MergeTrainPause freeze"));
        assert!(uses.add("team", "fix", "u1", at(5), "MergeTrainPause freeze"));
        let snapshot = uses.pending("team", "fix", "u1").expect("pending");
        assert_eq!(
            (snapshot.count, snapshot.first, snapshot.last),
            (2, at(0), at(5))
        );
        uses.add("team", "fix", "u1", at(7), "MergeTrainPause freeze");
        assert!(uses.recorded("team", "fix", &snapshot, at(8)));
        let left = uses.pending("team", "fix", "u1").expect("one left");
        assert_eq!((left.count, left.last), (1, at(7)));
        assert_eq!(uses.recorded_at("team", "fix"), Some(at(8)));
        assert!(!uses.recorded("team", "fix", &left, at(40)));
        assert!(uses.pending("team", "fix", "u1").is_none());
    }

    #[test]
    fn uses_of_a_replaced_exception_do_not_count_for_the_new_one() {
        let uses = ExceptionUses::default();
        uses.add("team", "fix", "old", at(0), "");
        assert!(uses.pending("team", "fix", "new").is_none());
        assert!(uses.pending("team", "fix", "old").is_none(), "forgotten");
        uses.add("team", "fix", "new", at(1), "");
        assert_eq!(uses.pending("team", "fix", "new").map(|p| p.count), Some(1));
    }

    #[tokio::test]
    async fn only_the_first_pending_use_wakes_the_controller_of_its_scope() {
        let uses = ExceptionUses::default();
        let mut team = Box::pin(uses.subscribe(Some("team")));
        let mut all = Box::pin(uses.subscribe(None));
        uses.add("other", "fix", "u2", at(0), "");
        uses.add("team", "fix", "u1", at(0), "");
        uses.add("team", "fix", "u1", at(1), "");
        let woken = team.next().await.expect("a reference");
        assert_eq!(woken, ObjectRef::new("fix").within("team"));
        assert_eq!(
            all.next().await.map(|r| r.namespace),
            Some(Some("other".to_owned()))
        );
        assert_eq!(
            all.next().await.map(|r| r.namespace),
            Some(Some("team".to_owned()))
        );
        // The second use of team/fix woke nobody.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), team.next())
                .await
                .is_err()
        );
    }

    #[test]
    fn a_full_queue_keeps_what_it_has_and_refuses_new_exceptions() {
        let uses = ExceptionUses::default();
        for index in 0..MAX_PENDING {
            assert!(uses.add("team", &format!("e{index}"), "u", at(0), ""));
        }
        assert!(!uses.add("team", "one-more", "u", at(0), ""));
        assert!(
            uses.add("team", "e0", "u", at(1), ""),
            "an existing entry still counts"
        );
    }
}
