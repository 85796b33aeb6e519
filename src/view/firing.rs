//! The alarms that fire now, as the served view needs them.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use futures::{Stream, StreamExt};
use kube::ResourceExt;

use crate::api::{Alarm, alarm::AlarmState};

/// The alarms that may be rolling dials back (in `ALARM` or
/// `INSUFFICIENT_DATA`), as this replica's alarm cache last saw them,
/// with an epoch that changes whenever the set does. The assignment API uses
/// it to serve a rollback the moment an alarm fires, before the dials'
/// status writes land; it re-reads each candidate from the cache, so an
/// entry is only ever a hint.
#[derive(Debug, Default)]
pub struct Firing {
    epoch: AtomicU64,
    alarms: RwLock<HashMap<String, HashMap<String, Arc<Alarm>>>>,
}

impl Firing {
    /// Records `alarm`'s current state.
    pub fn observe(&self, alarm: &Arc<Alarm>) {
        let namespace = alarm.namespace().unwrap_or_default();
        let name = alarm.name_any();
        let may_fire = alarm
            .status
            .as_ref()
            .and_then(|status| status.state)
            .is_none_or(|state| state != AlarmState::Ok);
        let mut alarms = self.alarms.write().unwrap_or_else(PoisonError::into_inner);
        let known = alarms.get(&namespace).and_then(|names| names.get(&name));
        let same = |known: &Arc<Alarm>| {
            known.spec == alarm.spec
                && known.labels() == alarm.labels()
                && known.status.as_ref().and_then(|s| s.state)
                    == alarm.status.as_ref().and_then(|s| s.state)
        };
        let changed = match (may_fire, known) {
            (true, Some(known)) => !same(known),
            (true, None) => true,
            (false, Some(_)) => true,
            (false, None) => false,
        };
        if !changed {
            return;
        }
        if may_fire {
            alarms
                .entry(namespace)
                .or_default()
                .insert(name, alarm.clone());
        } else if let Some(names) = alarms.get_mut(&namespace) {
            names.remove(&name);
        }
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the set of alarms that may fire does.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The alarms of `namespace` that may fire.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Alarm>> {
        self.alarms
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Keeps `firing` current from `changes` (the alarm cache's subscription)
/// until the stream ends.
pub async fn follow(firing: Arc<Firing>, changes: impl Stream<Item = Arc<Alarm>>) {
    futures::pin_mut!(changes);
    while let Some(alarm) = changes.next().await {
        firing.observe(&alarm);
    }
}
