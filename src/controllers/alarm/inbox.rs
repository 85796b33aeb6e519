//! Where webhook notifications wait for their alarm's status write.
//!
//! Alertmanager sends its groups concurrently, and each notification used to
//! write every matching alarm's status itself: concurrent writes to one
//! alarm raced on its resourceVersion, and the losers ran out of conflict
//! retries. Here each alarm has one queue per process. The first
//! notification for an idle alarm starts a writer task; notifications that
//! arrive while it writes wait in the queue, and the writer then records all
//! of them in one status write, in arrival order. A notification's caller is
//! told once the write holding its alerts has landed, so it can answer 200
//! knowing they are recorded. Races with other replicas are still settled by
//! the conflict retry in [`super::receive`].

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kube::ResourceExt;
use tokio::sync::oneshot;

use super::alertmanager::Delivery;
use crate::{api::Alarm, controllers::Context};

/// Why a notification's alerts were not recorded on an alarm.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RecordError {
    /// The API server did not confirm the write in time.
    #[error("the API server did not confirm the status write within {0:?}")]
    Timeout(Duration),
    /// The API server refused or failed the write.
    #[error("the status write failed: {0}")]
    Write(#[source] Arc<crate::Error>),
    /// The writer went away before answering (the operator is stopping).
    #[error("the status writer stopped before the write")]
    Stopped,
}

/// One notification's alerts for one alarm, and whom to tell.
struct Pending {
    /// The alarm as the caller's cache held it.
    alarm: Arc<Alarm>,
    delivery: Delivery,
    done: oneshot::Sender<Result<(), RecordError>>,
}

/// An alarm, by namespace and name.
type AlarmKey = (String, String);

/// The per-alarm queues of one process. Cheap to clone.
#[derive(Clone)]
pub struct AlertInbox {
    ctx: Arc<Context>,
    /// An alarm has an entry exactly while its writer task runs.
    queues: Arc<Mutex<HashMap<AlarmKey, Vec<Pending>>>>,
    /// How long one status write (with its conflict retries) may take.
    write_timeout: Duration,
}

impl AlertInbox {
    /// An inbox writing through `ctx`, each write bounded by `write_timeout`.
    pub fn new(ctx: Arc<Context>, write_timeout: Duration) -> Self {
        AlertInbox {
            ctx,
            queues: Arc::default(),
            write_timeout,
        }
    }

    /// Records `delivery` (what one notification tells `alarm`) and
    /// resolves once a status write holding them has landed. Dropping the
    /// future gives up waiting; alerts not yet written are then skipped, as
    /// the caller has not told the sender they were recorded.
    pub async fn record(&self, alarm: Arc<Alarm>, delivery: Delivery) -> Result<(), RecordError> {
        let key = (alarm.namespace().unwrap_or_default(), alarm.name_any());
        let (done, written) = oneshot::channel();
        let pending = Pending {
            alarm,
            delivery,
            done,
        };
        let start_writer = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            match queues.entry(key.clone()) {
                Entry::Occupied(mut queue) => {
                    queue.get_mut().push(pending);
                    false
                }
                Entry::Vacant(queue) => {
                    queue.insert(vec![pending]);
                    true
                }
            }
        };
        if start_writer {
            tokio::spawn(self.clone().write_queued(key));
        }
        written.await.unwrap_or(Err(RecordError::Stopped))
    }

    /// Writes what is queued for `key`, batch after batch, until the queue
    /// is empty; then removes it, so that the next notification starts a
    /// new writer.
    async fn write_queued(self, key: AlarmKey) {
        let mut guard = WriterGuard {
            queues: self.queues.clone(),
            key: key.clone(),
            finished: false,
        };
        // The alarm as this writer last wrote it: newer than the cache
        // right after a write, so the next batch does not start from a
        // version that is bound to conflict.
        let mut latest: Option<Alarm> = None;
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(queue) = queues.get_mut(&key) else {
                    guard.finished = true;
                    return;
                };
                if queue.is_empty() {
                    queues.remove(&key);
                    guard.finished = true;
                    return;
                }
                std::mem::take(queue)
            };
            let batch: Vec<Pending> = batch
                .into_iter()
                .filter(|pending| !pending.done.is_closed())
                .collect();
            let Some(newest) = batch.last() else {
                continue;
            };
            let base = latest.take().unwrap_or_else(|| Alarm::clone(&newest.alarm));
            let deliveries: Vec<&Delivery> =
                batch.iter().map(|pending| &pending.delivery).collect();
            let written = tokio::time::timeout(
                self.write_timeout,
                super::receive(&self.ctx, base, &deliveries),
            )
            .await;
            let outcome = match written {
                Ok(Ok(alarm)) => {
                    latest = Some(alarm);
                    Ok(())
                }
                Ok(Err(error)) => Err(RecordError::Write(Arc::new(error))),
                Err(_) => Err(RecordError::Timeout(self.write_timeout)),
            };
            if let Err(error) = &outcome {
                tracing::warn!(
                    %error,
                    alarm = %format!("{}/{}", key.0, key.1),
                    notifications = batch.len(),
                    "cannot record alerts"
                );
            }
            for pending in batch {
                // A caller that stopped waiting is answered by its deadline.
                let _ = pending.done.send(outcome.clone());
            }
        }
    }
}

/// Removes the queue of a writer that ended without emptying it (a panic),
/// so that the alarm's next notification starts a new writer instead of
/// waiting on one that is gone; the waiters of the lost queue are answered
/// [`RecordError::Stopped`] as their senders drop.
struct WriterGuard {
    queues: Arc<Mutex<HashMap<AlarmKey, Vec<Pending>>>>,
    key: AlarmKey,
    finished: bool,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
        }
    }
}
