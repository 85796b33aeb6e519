//! The read side: one watch per kind and scope, started once and shared by
//! every controller and the HTTP server.
//!
//! Each [`Cache`] holds one reflector store, stripped before storing of what
//! the operator never reads (`managedFields`, the last-applied annotation),
//! and fans out which objects changed to any number of subscribers. A
//! subscription carries only references; the subscriber reads the object
//! from the store when it polls, so the fan-out buffer holds no objects
//! (a deleted object travels with its last state, for mappers that need its
//! labels). A subscriber that falls behind, and every subscriber after a
//! relist, is given every object in the store again: a trigger may repeat,
//! it is never lost.

use std::{fmt::Debug, sync::Arc};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture, stream};
use kube::{
    Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{
        Alarm, ChangeWindow, MergeTrainException, MergeTrainPause, Rollback, WeblabDial,
        WeblabNotifier,
    },
    controllers::scoped,
};

/// Changes a subscriber may be behind before it is given a full resync.
const FANOUT_CAPACITY: usize = 1024;

/// The annotation `kubectl apply` (client-side) leaves: a second copy of the
/// spec that nothing here reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a subscriber is told.
enum Change<K: Resource<DynamicType = ()>> {
    /// The object changed (or appeared): read it from the store.
    Applied(ObjectRef<K>),
    /// The object is gone; its last state.
    Deleted(Arc<K>),
    /// The store was (re)listed: every object may have changed.
    Resynced,
}

impl<K: Resource<DynamicType = ()>> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(reference) => Change::Applied(reference.clone()),
            Change::Deleted(object) => Change::Deleted(object.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

/// One kind in one scope: the store and its change fan-out.
pub struct Cache<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// Everything a cached kind needs to be.
pub trait Cached:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

impl<K: Cached> Cache<K> {
    /// A cache of `K` in `namespace` (or all), and the future that keeps it
    /// current until `shutdown`.
    pub fn watch(
        client: &Client,
        namespace: Option<&str>,
        shutdown: CancellationToken,
    ) -> (Self, BoxFuture<'static, ()>) {
        let events = watcher(
            scoped::<K>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff();
        Self::from_events(events, shutdown)
    }

    /// A cache fed by `events` (a watch, or a test's script).
    fn from_events(
        events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
        shutdown: CancellationToken,
    ) -> (Self, BoxFuture<'static, ()>) {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(FANOUT_CAPACITY);
        let sender = changes.clone();
        let kind = K::kind(&()).into_owned();
        let run = events
            .modify(strip)
            .reflect(writer)
            .take_until(shutdown.cancelled_owned())
            .for_each(move |event| {
                let change = match event {
                    Ok(watcher::Event::Apply(object)) => {
                        Some(Change::Applied(ObjectRef::from(&object)))
                    }
                    Ok(watcher::Event::Delete(object)) => Some(Change::Deleted(Arc::new(object))),
                    Ok(watcher::Event::InitDone) => Some(Change::Resynced),
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                    Err(error) => {
                        tracing::warn!(kind = %kind, %error, "watch failed; retrying with backoff");
                        None
                    }
                };
                if let Some(change) = change {
                    // No subscriber yet is fine: they start from the store.
                    let _ = sender.send(change);
                }
                futures::future::ready(())
            })
            .boxed();
        (Self { store, changes }, run)
    }

    /// The store: every object of the kind in the scope, as last seen.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The objects that change from now on (a deleted one with its last
    /// state), for a controller's triggers.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        let receiver = self.changes.subscribe();
        stream::unfold(receiver, |mut receiver| async move {
            let change = receiver.recv().await;
            Some((change, receiver))
        })
        .take_while(|change| {
            futures::future::ready(!matches!(change, Err(broadcast::error::RecvError::Closed)))
        })
        .flat_map(move |change| {
            let objects: Vec<Arc<K>> = match change {
                Ok(Change::Applied(reference)) => store.get(&reference).into_iter().collect(),
                Ok(Change::Deleted(object)) => vec![object],
                Ok(Change::Resynced) => store.state(),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        kind = %K::kind(&()),
                        missed,
                        "a subscriber fell behind; it is given every object again"
                    );
                    store.state()
                }
                Err(broadcast::error::RecvError::Closed) => Vec::new(),
            };
            stream::iter(objects)
        })
    }
}

/// Drops what the operator never reads before the object is stored.
fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The caches of one scope (a namespace, or all), one per kind.
#[derive(Clone)]
pub struct Caches {
    pub dials: Cache<WeblabDial>,
    pub alarms: Cache<Alarm>,
    pub windows: Cache<ChangeWindow>,
    pub pauses: Cache<MergeTrainPause>,
    pub rollbacks: Cache<Rollback>,
    pub exceptions: Cache<MergeTrainException>,
    pub notifiers: Cache<WeblabNotifier>,
}

impl Caches {
    /// The caches of `namespace` (or all), and the futures that keep them
    /// current: one watch per kind, whatever reads them.
    pub fn watch(
        client: &Client,
        namespace: Option<&str>,
        shutdown: &CancellationToken,
    ) -> (Self, Vec<BoxFuture<'static, ()>>) {
        let (dials, dial_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (alarms, alarm_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (windows, window_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (pauses, pause_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (rollbacks, rollback_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (exceptions, exception_watch) = Cache::watch(client, namespace, shutdown.clone());
        let (notifiers, notifier_watch) = Cache::watch(client, namespace, shutdown.clone());
        let caches = Self {
            dials,
            alarms,
            windows,
            pauses,
            rollbacks,
            exceptions,
            notifiers,
        };
        let watches = vec![
            dial_watch,
            alarm_watch,
            window_watch,
            pause_watch,
            rollback_watch,
            exception_watch,
            notifier_watch,
        ];
        (caches, watches)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use kube::ResourceExt;

    use super::*;

    #[test]
    fn what_is_never_read_is_stripped_and_the_rest_kept() {
        let mut alarm: Alarm = serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
            "metadata": {"namespace": "a", "name": "errors", "resourceVersion": "7",
                         "labels": {"team": "web"},
                         "annotations": {LAST_APPLIED: "{\"spec\": {}}", "weblab.dev/ticket": "T-1"}},
            "spec": {"severity": "Sev2",
                     "alertmanager": {"matchers": [{"name": "alertname", "value": "E"}]}},
        }))
        .expect("a valid Alarm");
        alarm.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        let before = alarm.clone();
        strip(&mut alarm);
        assert_eq!(alarm.metadata.managed_fields, None);
        assert_eq!(
            alarm.metadata.annotations,
            Some(BTreeMap::from([("weblab.dev/ticket".into(), "T-1".into())]))
        );
        assert_eq!(
            alarm.metadata.resource_version,
            before.metadata.resource_version
        );
        assert_eq!(alarm.metadata.labels, before.metadata.labels);
        assert_eq!(alarm.spec, before.spec);
    }

    fn alarm(name: &str) -> Alarm {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
            "metadata": {"namespace": "a", "name": name,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"severity": "Sev2",
                     "alertmanager": {"matchers": [{"name": "alertname", "value": "E"}]}},
        }))
        .expect("a valid Alarm")
    }

    fn names(objects: &[Arc<Alarm>]) -> Vec<String> {
        let mut names: Vec<String> = objects.iter().map(|a| a.name_any()).collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn every_subscriber_sees_the_list_each_change_and_deletions_with_their_last_state() {
        let script = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(alarm("one"))),
            Ok(watcher::Event::InitApply(alarm("two"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(alarm("three"))),
            Ok(watcher::Event::Delete(alarm("one"))),
        ];
        let (cache, run) =
            Cache::<Alarm>::from_events(stream::iter(script), CancellationToken::new());
        let first = cache.subscribe();
        let second = cache.subscribe();
        run.await;
        let store = cache.store();
        assert_eq!(names(&store.state()), ["three", "two"]);
        assert!(
            store
                .state()
                .iter()
                .all(|a| a.metadata.managed_fields.is_none())
        );
        // With the last sender gone, the subscriptions end after what they hold.
        drop(cache);
        for subscriber in [first.boxed(), second.boxed()] {
            let seen: Vec<Arc<Alarm>> = subscriber.collect().await;
            let seen: Vec<String> = seen.iter().map(|a| a.name_any()).collect();
            // The list (read after the fact: the store holds two and three),
            // then three, then one as it was deleted.
            assert_eq!(seen.len(), 4, "{seen:?}");
            assert_eq!(&seen[2..], ["three", "one"]);
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_given_every_object_again() {
        let mut script = vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)];
        for n in 0..(FANOUT_CAPACITY + 10) {
            script.push(Ok(watcher::Event::Apply(alarm(&format!("a{n}")))));
        }
        let (cache, run) =
            Cache::<Alarm>::from_events(stream::iter(script), CancellationToken::new());
        let behind = cache.subscribe();
        run.await;
        drop(cache);
        let seen: Vec<Arc<Alarm>> = behind.collect().await;
        let distinct: std::collections::BTreeSet<String> =
            seen.iter().map(|a| a.name_any()).collect();
        assert_eq!(distinct.len(), FANOUT_CAPACITY + 10, "no object is lost");
    }
}
