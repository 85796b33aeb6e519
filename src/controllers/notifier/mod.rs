//! The courier: takes the decisions the controllers publish (never on
//! their reconcile path: [`Context::publish_decision`] only queues them),
//! routes each to the `WeblabNotifier`s of its namespace, groups them,
//! records the groups in the notifier's `status.pending`, and delivers them
//! in the background with retries.
//!
//! At least once: a group is recorded before it is delivered and removed
//! after every sink accepted it. A replica that becomes the leader reads
//! every notifier afresh from the API server and delivers what its
//! predecessor left pending, with the same ids and dedup keys, so that
//! PagerDuty joins a delivery made twice to one alert. What is lost: a
//! decision whose object status was written but whose group was not yet
//! recorded when the leader died (milliseconds), and a decision made on a
//! follower (an Alertmanager notification it received), which it delivers
//! itself without recording, since only the leader writes.
//!
//! The status is written by server-side apply without a resourceVersion
//! precondition: it is not decided from a cache but is the courier's own
//! memory, and only the leader writes it.

pub mod deliver;
pub mod escalation;
pub mod evidence;
pub mod message;
pub mod plan;

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::reflector::Store,
};
use reqwest::Url;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{
        common::micro_time,
        conditions::{self, DesiredCondition},
        weblab_notifier::{
            Delivered, PendingNotification, SinkStatus, WeblabNotifier, WeblabNotifierStatus,
        },
    },
    cache::Cache,
    controllers::{Context, Note, scoped},
};

use deliver::Failure;
use message::Message;
use plan::{Decision, Outbox, Route};

/// The field manager of the courier's status writes.
pub const MANAGER: &str = "weblab-operator/notifier";
/// The reason of condition Ready when the filter's selector does not parse.
const INVALID_SELECTOR: &str = "InvalidSelector";
/// The condition that says a sink's last delivery failed.
pub const SINK_FAILING: &str = "SinkFailing";
/// PagerDuty's Events API.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com";
/// Decisions queued at most; past it they are dropped and counted.
const QUEUE: usize = 10_000;
/// How long a group collects decisions unless the notifier says.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The longest grouping wait.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Messages per minute unless the notifier says.
const DEFAULT_PER_MINUTE: u32 = 30;
/// Each attempt's deadline unless the notifier says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest sleep with nothing due.
const IDLE: Duration = Duration::from_secs(3600);
/// The wait before a failed status write is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(2);

/// The queue between the controllers and the courier.
pub struct Queue {
    sender: mpsc::Sender<Decision>,
    receiver: Mutex<Option<mpsc::Receiver<Decision>>>,
}

impl Default for Queue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Queue {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl Queue {
    /// Queues `decision`; false when the queue is full (or no courier runs).
    pub fn send(&self, decision: Decision) -> bool {
        self.sender.try_send(decision).is_ok()
    }

    fn take(&self) -> Option<mpsc::Receiver<Decision>> {
        self.receiver.lock().ok().and_then(|mut r| r.take())
    }
}

/// What the courier knows of one notifier.
#[derive(Default)]
struct Notifier {
    outbox: Outbox,
    sinks: BTreeMap<String, SinkStatus>,
    last_delivered: Option<Delivered>,
    /// The status as last written (or read, on taking over).
    written: Option<WeblabNotifierStatus>,
    /// When a failed write is tried again.
    write_retry: Option<Timestamp>,
}

/// What a delivery task reports.
struct Outcome {
    key: (String, String),
    id: String,
    accepted: Vec<String>,
    failed: Vec<(String, Failure)>,
}

/// The courier for the scopes the controllers watch.
pub struct Courier {
    ctx: Arc<Context>,
    stores: Vec<Store<WeblabNotifier>>,
    scopes: Vec<Option<String>>,
    pagerduty: Url,
    notifiers: HashMap<(String, String), Notifier>,
    jitter: RandomState,
    changed: Arc<Notify>,
    /// Decisions that named a notifier that does not exist: (namespace,
    /// kind, name, the Warning to publish about the object).
    unaddressed: Vec<(String, String, String, Note)>,
}

/// Builds the courier for `scopes` (namespaces, or `None` for all) and
/// their notifier `caches`, which sends PagerDuty events to `pagerduty`:
/// the future that runs it until `shutdown`.
pub fn courier(
    ctx: Arc<Context>,
    scopes: &[Option<&str>],
    caches: Vec<Cache<WeblabNotifier>>,
    pagerduty: Url,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()> {
    let stores = caches.iter().map(Cache::store).collect();
    // A notifier created or changed wakes the courier, which records the
    // generation it observed (and whether its selector parses).
    let changed = Arc::new(Notify::new());
    let watching = {
        let changed = Arc::clone(&changed);
        futures::stream::select_all(caches.iter().map(|cache| cache.subscribe().boxed())).for_each(
            move |_| {
                changed.notify_one();
                futures::future::ready(())
            },
        )
    };
    let courier = Courier {
        ctx,
        stores,
        scopes: scopes.iter().map(|s| s.map(str::to_owned)).collect(),
        pagerduty,
        notifiers: HashMap::new(),
        jitter: RandomState::new(),
        changed,
        unaddressed: Vec::new(),
    };
    async move {
        tokio::select! {
            () = watching => {}
            () = courier.run(shutdown) => {}
        }
    }
    .boxed()
}

impl Courier {
    async fn run(mut self, shutdown: CancellationToken) {
        let Some(mut decisions) = self.ctx.decisions.take() else {
            tracing::error!("the decision queue has been taken already; no notifications");
            return;
        };
        // Decisions wait in the queue until the notifiers are known: one
        // routed against a cache still empty would reach nobody.
        for store in &self.stores {
            tokio::select! {
                () = shutdown.cancelled() => return,
                ready = store.wait_until_ready() => if ready.is_err() { return },
            }
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
        let mut leader = self.ctx.leader.clone();
        let changed = Arc::clone(&self.changed);
        let mut led = false;
        loop {
            let leading = *leader.borrow_and_update();
            if leading && !led {
                self.take_over().await;
            }
            led = leading;
            let now = Timestamp::now();
            // Recorded first, delivered after: a successor finds what this
            // replica is about to send.
            if leading {
                self.write_statuses(now).await;
            }
            for (namespace, kind, name, note) in std::mem::take(&mut self.unaddressed) {
                if !leading {
                    // Events are the leader's to write.
                    tracing::warn!(%namespace, %kind, %name, reason = note.reason, "{}", note.message);
                } else {
                    let object = ObjectReference {
                        api_version: Some(format!("{}/v1alpha1", crate::api::GROUP)),
                        kind: Some(kind.clone()),
                        namespace: Some(namespace),
                        name: Some(name),
                        ..ObjectReference::default()
                    };
                    self.ctx.publish(&object, &kind, &note).await;
                }
            }
            self.dispatch(now, &done_tx);
            // A time already past (it passed while writing) wakes at once.
            let wake = self.next_wake().map_or(IDLE, |at| {
                Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = decisions.recv() => {
                    let Some(decision) = received else { return };
                    let now = Timestamp::now();
                    self.add(&decision, now);
                    while let Ok(decision) = decisions.try_recv() {
                        self.add(&decision, now);
                    }
                }
                Some(outcome) = done_rx.recv() => self.settle(outcome, leading).await,
                changed = leader.changed() => if changed.is_err() { return },
                () = changed.notified() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    fn notifier(&self, namespace: &str, name: &str) -> Option<Arc<WeblabNotifier>> {
        let reference = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|store| store.get(&reference))
    }

    /// Routes `decision` to the notifiers of its namespace: to the one it
    /// names, whatever its filter; when that one does not exist, to every
    /// notifier its filter lets it through (a page is not dropped for a
    /// typo), with a Warning event about the object.
    fn add(&mut self, decision: &Decision, now: Timestamp) {
        let in_namespace: Vec<Arc<WeblabNotifier>> = self
            .stores
            .iter()
            .flat_map(|store| store.state())
            .filter(|n| n.namespace().as_deref() == Some(decision.namespace.as_str()))
            .collect();
        let named = decision
            .notifier
            .as_ref()
            .filter(|only| in_namespace.iter().any(|n| n.name_any() == **only));
        if let (Some(only), None) = (&decision.notifier, named) {
            let record = &decision.record;
            self.unaddressed.push((
                decision.namespace.clone(),
                record.kind.clone(),
                record.name.clone(),
                Note::warning(
                    "NotifierNotFound",
                    format!(
                        "{} names WeblabNotifier {only:?}, which does not exist in its namespace; sent to the notifiers whose filter lets {} through",
                        record.kind, record.reason
                    ),
                ),
            ));
        }
        let candidates = in_namespace
            .into_iter()
            .filter(|n| named.is_none_or(|only| *only == n.name_any()));
        for notifier in candidates {
            let name = notifier.name_any();
            let routed = if named.is_some() {
                Ok(true)
            } else {
                plan::routes(&notifier.spec.filter, decision)
            };
            match routed {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    // Its status says so (condition Ready, a Warning event).
                    tracing::debug!(namespace = %decision.namespace, notifier = %name, %error, "decision not routed");
                    self.notifiers
                        .entry((decision.namespace.clone(), name))
                        .or_default();
                    continue;
                }
            }
            let wait = notifier
                .spec
                .grouping
                .wait
                .map_or(DEFAULT_WAIT, |w| w.get().min(MAX_WAIT));
            let state = self
                .notifiers
                .entry((decision.namespace.clone(), name.clone()))
                .or_default();
            state.outbox.add(
                &Route {
                    namespace: &decision.namespace,
                    notifier: &name,
                    wait,
                },
                decision,
                now,
            );
        }
    }

    /// Reads every notifier afresh (not from the cache, which may lag the
    /// predecessor's last write) and takes over what it left pending.
    async fn take_over(&mut self) {
        let now = Timestamp::now();
        for scope in &self.scopes {
            let api = scoped::<WeblabNotifier>(&self.ctx.client, scope.as_deref());
            let listed = match api.list(&ListParams::default()).await {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(%error, "cannot read notifiers to take over their pending messages");
                    continue;
                }
            };
            for notifier in listed {
                let key = (
                    notifier.namespace().unwrap_or_default(),
                    notifier.name_any(),
                );
                let status = notifier.status.clone().unwrap_or_default();
                let state = self.notifiers.entry(key.clone()).or_default();
                let restored = Outbox::restore(&status.pending, now);
                for group in restored.groups {
                    if !state
                        .outbox
                        .groups
                        .iter()
                        .any(|g| g.pending.id == group.pending.id)
                    {
                        state.outbox.groups.push(group);
                    }
                }
                if !status.pending.is_empty() {
                    tracing::info!(
                        namespace = %key.0,
                        notifier = %key.1,
                        pending = status.pending.len(),
                        "taking over pending notifications"
                    );
                }
                state.sinks = status
                    .sinks
                    .iter()
                    .map(|s| (s.name.clone(), s.clone()))
                    .collect();
                state.last_delivered.clone_from(&status.last_delivered);
                state.written = Some(status);
            }
        }
    }

    /// Starts the deliveries that are due.
    fn dispatch(&mut self, now: Timestamp, done: &mpsc::UnboundedSender<Outcome>) {
        let keys: Vec<(String, String)> = self.notifiers.keys().cloned().collect();
        for key in keys {
            let Some(notifier) = self.notifier(&key.0, &key.1) else {
                // Deleted: what it held goes with it.
                self.notifiers.remove(&key);
                continue;
            };
            let Some(state) = self.notifiers.get_mut(&key) else {
                continue;
            };
            let per_minute = notifier
                .spec
                .rate_limit
                .max_per_minute
                .unwrap_or(DEFAULT_PER_MINUTE);
            for pending in state.outbox.take_due(per_minute, now) {
                tokio::spawn(deliver_group(
                    Arc::clone(&self.ctx),
                    Arc::clone(&notifier),
                    self.pagerduty.clone(),
                    key.clone(),
                    pending,
                    done.clone(),
                ));
            }
        }
    }

    /// Records a delivery's outcome: sink health, the group's fate, events
    /// on a sink's failing and recovering.
    async fn settle(&mut self, outcome: Outcome, leading: bool) {
        let now = Timestamp::now();
        let jitter = self.jitter.hash_one(&outcome.id) as f64 / u64::MAX as f64;
        let Some(state) = self.notifiers.get_mut(&outcome.key) else {
            return;
        };
        let at = micro_time(now);
        let mut notes = Vec::new();
        for name in &outcome.accepted {
            let sink = state
                .sinks
                .entry(name.clone())
                .or_insert_with(|| sink_status(name));
            if sink.failures > 0 {
                notes.push(Note::normal(
                    "SinkRecovered",
                    format!(
                        "sink {name} accepted message {} after {} failed deliveries",
                        outcome.id, sink.failures
                    ),
                ));
            }
            sink.failures = 0;
            sink.last_error = None;
            sink.last_delivered = Some(at.clone());
        }
        for (name, failure) in &outcome.failed {
            let sink = state
                .sinks
                .entry(name.clone())
                .or_insert_with(|| sink_status(name));
            if sink.failures == 0 {
                notes.push(Note::warning(
                    SINK_FAILING,
                    format!(
                        "sink {name} failed to take message {}: {}; retrying with backoff",
                        outcome.id, failure.message
                    ),
                ));
            }
            sink.failures = sink.failures.saturating_add(1);
            sink.last_error = Some(failure.message.clone());
        }
        let done = state.outbox.settle(
            &outcome.id,
            &outcome.accepted,
            !outcome.failed.is_empty(),
            jitter,
            now,
        );
        if let Some(pending) = &done {
            state.last_delivered = Some(Delivered {
                id: pending.id.clone(),
                subject: pending.subject.clone(),
                dedup_key: pending.dedup_key.clone(),
                count: pending.count,
                at,
            });
            tracing::info!(
                namespace = %outcome.key.0,
                notifier = %outcome.key.1,
                id = %pending.id,
                subject = %pending.subject,
                dedup_key = %pending.dedup_key,
                decisions = pending.count,
                "notification delivered"
            );
        }
        // Events are writes: the leader's only. A follower logs.
        let notifier = self.notifier(&outcome.key.0, &outcome.key.1);
        for note in &notes {
            match (&notifier, leading) {
                (Some(notifier), true) => {
                    self.ctx
                        .publish(&notifier.object_ref(&()), "WeblabNotifier", note)
                        .await;
                }
                _ => {
                    tracing::warn!(namespace = %outcome.key.0, notifier = %outcome.key.1, reason = note.reason, "{}", note.message)
                }
            }
        }
    }

    /// Writes the status of every notifier whose status would change.
    async fn write_statuses(&mut self, now: Timestamp) {
        // Every notifier: a new one (or a new generation) is observed.
        for notifier in self.stores.iter().flat_map(|store| store.state()) {
            let key = (
                notifier.namespace().unwrap_or_default(),
                notifier.name_any(),
            );
            self.notifiers.entry(key).or_default();
        }
        let keys: Vec<(String, String)> = self.notifiers.keys().cloned().collect();
        for key in keys {
            let Some(notifier) = self.notifier(&key.0, &key.1) else {
                continue;
            };
            let Some(state) = self.notifiers.get_mut(&key) else {
                continue;
            };
            if state.write_retry.is_some_and(|at| at > now) {
                continue;
            }
            let current = state
                .written
                .clone()
                .or_else(|| notifier.status.clone())
                .unwrap_or_default();
            let wanted = desired_status(&notifier, state, &current, now);
            if wanted == current {
                continue;
            }
            let api: Api<WeblabNotifier> = Api::namespaced(self.ctx.client.clone(), &key.0);
            let patch = serde_json::json!({
                "apiVersion": WeblabNotifier::api_version(&()),
                "kind": WeblabNotifier::kind(&()),
                "metadata": {"name": key.1},
                "status": wanted,
            });
            let written = api
                .patch_status(
                    &key.1,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await;
            let result = if written.is_ok() { "ok" } else { "error" };
            self.ctx
                .metrics
                .status_writes
                .with_label_values(&[MANAGER, result])
                .inc();
            match written {
                Ok(_) => {
                    let invalid = |s: &WeblabNotifierStatus| {
                        conditions::find(&s.conditions, conditions::READY)
                            .filter(|c| c.reason == INVALID_SELECTOR)
                            .map(|c| c.message.clone())
                    };
                    if let (Some(message), None) = (invalid(&wanted), invalid(&current)) {
                        let note = Note::warning(INVALID_SELECTOR, message);
                        self.ctx
                            .publish(&notifier.object_ref(&()), "WeblabNotifier", &note)
                            .await;
                    }
                    state.written = Some(wanted);
                    state.write_retry = None;
                }
                Err(error) => {
                    tracing::warn!(namespace = %key.0, notifier = %key.1, %error, "cannot record notifications in status; retrying");
                    state.write_retry = now.checked_add(WRITE_RETRY).ok();
                }
            }
        }
    }

    fn next_wake(&self) -> Option<Timestamp> {
        self.notifiers
            .values()
            .flat_map(|n| [n.outbox.next_due(), n.write_retry])
            .flatten()
            .min()
    }
}

fn sink_status(name: &str) -> SinkStatus {
    SinkStatus {
        name: name.to_owned(),
        failures: 0,
        last_error: None,
        last_delivered: None,
    }
}

/// The status `state` wants for `notifier`, from `current`: conditions keep
/// their transition times while they hold.
fn desired_status(
    notifier: &WeblabNotifier,
    state: &Notifier,
    current: &WeblabNotifierStatus,
    now: Timestamp,
) -> WeblabNotifierStatus {
    let pending = state.outbox.pending();
    let sinks: Vec<SinkStatus> = notifier
        .spec
        .sinks
        .iter()
        .filter_map(|sink| state.sinks.get(&sink.name).cloned())
        .collect();
    let failing: Vec<String> = sinks
        .iter()
        .filter(|s| s.failures > 0)
        .map(|s| {
            format!(
                "{}: {} failed deliveries, last: {}",
                s.name,
                s.failures,
                s.last_error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let failing = if failing.is_empty() {
        DesiredCondition::new(SINK_FAILING, false, "Delivering", "")
    } else {
        DesiredCondition::new(SINK_FAILING, true, "DeliveryFailed", failing.join("; "))
    };
    let ready = match selector_error(notifier) {
        Some(error) => DesiredCondition::new(conditions::READY, false, INVALID_SELECTOR, error),
        None => DesiredCondition::new(conditions::READY, true, "Routing", ""),
    };
    let generation = notifier.meta().generation;
    WeblabNotifierStatus {
        observed_generation: generation,
        pending_count: Some(u32::try_from(pending.len()).unwrap_or(u32::MAX)),
        pending,
        last_delivered: state.last_delivered.clone(),
        sinks,
        conditions: conditions::merge(
            &current.conditions,
            &[ready, failing],
            generation,
            &Time(now),
        ),
    }
}

/// Why the notifier's selector does not parse (the API server accepts
/// some that do not), if it does not.
fn selector_error(notifier: &WeblabNotifier) -> Option<String> {
    let selector = notifier.spec.filter.selector.clone()?;
    let parsed: Result<kube::core::Selector, _> = selector.try_into();
    parsed
        .err()
        .map(|error| format!("spec.filter.selector does not parse: {error}; no decision is routed"))
}

/// Delivers `pending` to every sink of `notifier` that has not accepted it
/// yet, concurrently, and reports back.
async fn deliver_group(
    ctx: Arc<Context>,
    notifier: Arc<WeblabNotifier>,
    pagerduty: Url,
    key: (String, String),
    pending: PendingNotification,
    done: mpsc::UnboundedSender<Outcome>,
) {
    let namespace = key.0.clone();
    let timeout = notifier
        .spec
        .timeout
        .map_or(DEFAULT_TIMEOUT, |t| t.get().min(crate::outbound::CEILING));
    let message = Message::new(pending.clone(), &namespace, &notifier.spec.links);
    let sinks = notifier
        .spec
        .sinks
        .iter()
        .filter(|sink| !pending.delivered.contains(&sink.name));
    let attempts = sinks.map(|sink| {
        let ctx = &ctx;
        let message = &message;
        let namespace = &namespace;
        let pagerduty = &pagerduty;
        async move {
            let kind = deliver::kind_of(sink);
            let counter = |result: &str| {
                ctx.metrics
                    .notifications
                    .with_label_values(&[kind, result])
                    .inc();
            };
            let outcome = match deliver::target(&ctx.client, namespace, sink, pagerduty).await {
                Err(message) => Err(Failure {
                    reason: "InvalidSink",
                    message,
                }),
                Ok(target) => {
                    deliver::deliver(&ctx.outbound, &target, message, timeout, || {
                        counter("retried")
                    })
                    .await
                }
            };
            counter(if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            });
            (sink.name.clone(), outcome)
        }
    });
    let results = futures::future::join_all(attempts).await;
    let mut accepted = Vec::new();
    let mut failed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(_) => accepted.push(name),
            Err(failure) => failed.push((name, failure)),
        }
    }
    // The receiver is gone only when the courier stopped.
    let _ = done.send(Outcome {
        key,
        id: pending.id,
        accepted,
        failed,
    });
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::{Notifier, desired_status};
    use crate::api::{WeblabNotifier, conditions, weblab_notifier::WeblabNotifierStatus};

    fn notifier(selector: serde_json::Value) -> WeblabNotifier {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weblab.dev/v1alpha1", "kind": "WeblabNotifier",
            "metadata": {"name": "oncall", "namespace": "team", "generation": 3},
            "spec": {"sinks": [{"name": "chat", "slack": {"webhookSecretRef": {"name": "s", "key": "url"}}}],
                     "filter": {"selector": selector}},
        }))
        .unwrap_or_else(|error| panic!("{error}"))
    }

    /// A selector stored before the API server checked operators is
    /// reported on the notifier, which routes nothing.
    #[test]
    fn a_stored_selector_that_does_not_parse_makes_the_notifier_not_ready() {
        let now = Timestamp::now();
        let state = Notifier::default();
        let current = WeblabNotifierStatus::default();
        let broken = notifier(serde_json::json!({"matchExpressions": [
            {"key": "team", "operator": "Near", "values": ["checkout"]}]}));
        let status = desired_status(&broken, &state, &current, now);
        let ready = conditions::find(&status.conditions, conditions::READY).cloned();
        assert_eq!(ready.as_ref().map(|c| c.status.as_str()), Some("False"));
        assert_eq!(ready.map(|c| c.reason), Some("InvalidSelector".to_owned()));
        assert_eq!(status.observed_generation, Some(3));
        let fine = notifier(serde_json::json!({"matchLabels": {"team": "checkout"}}));
        let status = desired_status(&fine, &state, &current, now);
        assert!(conditions::is_true(&status.conditions, conditions::READY));
        // Nothing changed: the same status, the same transition times.
        assert_eq!(desired_status(&fine, &state, &status, now), status);
    }
}
