//! One controller per kind, and what they share: the context, status writes
//! by server-side apply, events, and the error policy.
//!
//! Controllers (and their caches) run on every replica, so that every replica
//! serves from the same informer caches; only the leader writes. Gaining
//! leadership reconciles everything at once.

pub mod alarm;
pub mod attach;
pub mod change_window;
pub mod failures;
pub mod merge_train_exception;
pub mod merge_train_pause;
pub mod notifier;
pub mod rollback;
pub mod weblab_dial;

use std::{fmt::Debug, future::Future, sync::Arc};

use futures::{FutureExt, Stream, StreamExt, future::BoxFuture};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Error, Result,
    api::{
        common::{SecretKeyRef, micro_time},
        weblab_notifier::{DecisionRecord, Evidence},
    },
    metrics::Metrics,
    outbound::Outbound,
};

/// The annotation with a link to an object's ticket, carried in its
/// notifications.
pub const TICKET_ANNOTATION: &str = "weblab.dev/ticket";

/// What every reconciliation needs, shared as `Arc<Context>`.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Whether this replica may write (it holds the lease).
    pub leader: watch::Receiver<bool>,
    /// Every call to a URL a resource names goes through it.
    pub outbound: Outbound,
    /// Failures in a row and stale resourceVersions, per object.
    pub failures: failures::Failures,
    /// Decisions on their way to the notifiers ([`notifier`]).
    pub decisions: notifier::Queue,
    recorder: Recorder,
}

impl Context {
    /// A context whose events are reported as `weblab-operator` by `identity`.
    pub fn new(
        client: Client,
        metrics: Metrics,
        leader: watch::Receiver<bool>,
        identity: String,
        outbound: Outbound,
    ) -> Self {
        let reporter = Reporter {
            controller: "weblab-operator".to_owned(),
            instance: Some(identity),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            leader,
            outbound,
            failures: failures::Failures::default(),
            decisions: notifier::Queue::default(),
        }
    }

    /// Whether this replica holds the lease.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Starts a reconciliation of `controller`: counted and timed (until the
    /// timer drops) on the leader; `None` on a follower, which keeps its
    /// caches warm and serves, but never writes.
    pub fn begin(&self, controller: &str) -> Option<prometheus::HistogramTimer> {
        if !self.is_leader() {
            return None;
        }
        self.metrics
            .reconciliations
            .with_label_values(&[controller])
            .inc();
        Some(
            self.metrics
                .reconcile_duration
                .with_label_values(&[controller])
                .start_timer(),
        )
    }

    /// Publishes an event about `object` and logs it as one line (INFO for
    /// Normal, WARN for Warning) with the same reason and message, so that
    /// a person tailing the log sees every decision the events record. A
    /// failure to publish is logged, never fatal: events are a record, not
    /// the state.
    pub async fn publish(&self, object: &ObjectReference, kind: &str, note: &Note) {
        let message = truncate(&note.message, MAX_NOTE_BYTES);
        let namespace = object.namespace.as_deref().unwrap_or_default();
        let name = object.name.as_deref().unwrap_or_default();
        if note.warning {
            tracing::warn!(kind, namespace, name, reason = note.reason, "{message}");
        } else {
            tracing::info!(kind, namespace, name, reason = note.reason, "{message}");
        }
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.to_owned(),
            note: Some(message),
            action: note.reason.to_owned(),
            secondary: None,
        };
        self.metrics
            .transitions
            .with_label_values(&[kind, note.reason])
            .inc();
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason = note.reason, "cannot publish event");
        }
    }

    /// Publishes a decision about `object` as [`Context::publish`] does, and
    /// queues it for the notifiers of its namespace with `evidence` (what
    /// the decision rests on) and the object's labels and ticket
    /// annotation; the courier delivers it in the background.
    pub async fn publish_decision<K>(&self, object: &K, evidence: Evidence, note: &Note)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_to(object, evidence, note, None).await;
    }

    /// [`Context::publish_decision`] addressed to the notifier `only`
    /// (whatever its filter) when there is one.
    pub async fn publish_to<K>(
        &self,
        object: &K,
        evidence: Evidence,
        note: &Note,
        only: Option<&str>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let kind = K::kind(&());
        self.publish(&object.object_ref(&()), &kind, note).await;
        let mut evidence = evidence;
        if evidence.ticket.is_none() {
            evidence.ticket = object.annotations().get(TICKET_ANNOTATION).cloned();
        }
        let decision = notifier::plan::Decision {
            namespace: object.namespace().unwrap_or_default(),
            labels: object.labels().clone(),
            record: DecisionRecord {
                kind: kind.into_owned(),
                name: object.name_any(),
                reason: note.reason.to_owned(),
                warning: note.warning,
                message: truncate(&note.message, MAX_NOTE_BYTES),
                at: micro_time(jiff::Timestamp::now()),
                evidence,
            },
            notifier: only.map(str::to_owned),
        };
        if !self.decisions.send(decision) {
            tracing::warn!(
                reason = note.reason,
                "the notification queue is full; decision not notified"
            );
            self.metrics
                .notifications
                .with_label_values(&["queue", "dropped"])
                .inc();
        }
    }

    /// Writes `status` by server-side apply as `manager`, on condition that
    /// the object is still at `resource_version`: a decision made from a
    /// stale cache fails with a conflict instead of being applied twice.
    /// After such a conflict, the same stale object is not written again
    /// ([`Error::StaleCache`]): its reconciliation waits for the watch.
    pub async fn apply_status<K>(
        &self,
        api: &Api<K>,
        object: &K,
        manager: &str,
        status: &impl Serialize,
    ) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let key = failure_key(object);
        let version = object.resource_version();
        if self.failures.is_stale(&key, version.as_deref()) {
            self.metrics
                .status_writes
                .with_label_values(&[manager, "stale"])
                .inc();
            return Err(Error::StaleCache { object: key });
        }
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {
                "name": object.name_any(),
                "resourceVersion": version,
            },
            "status": status,
        });
        let params = PatchParams::apply(manager).force();
        let written = api
            .patch_status(&object.name_any(), &params, &Patch::Apply(&patch))
            .await
            .map_err(Error::Kube);
        let result = match &written {
            Ok(_) => "ok",
            Err(error) if error.is_conflict() => {
                if let Some(version) = &version {
                    self.failures.mark_stale(&key, version);
                }
                "conflict"
            }
            Err(_) => "error",
        };
        self.metrics
            .status_writes
            .with_label_values(&[manager, result])
            .inc();
        written
    }
}

/// The key under which [`failures::Failures`] knows `object`.
pub fn failure_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    failures::key(
        &K::kind(&()),
        object.meta().namespace.as_deref(),
        &object.name_any(),
    )
}

/// An `Api` over one namespace, or all of them.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Reads one key of a Secret in `namespace` with a `get` by name (the
/// operator never lists Secrets). The error says what to fix.
pub async fn read_secret_key(
    client: &Client,
    namespace: &str,
    key: &SecretKeyRef,
) -> Result<String, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(&key.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(format!("Secret {namespace}/{} not found", key.name)),
        Err(error) => {
            return Err(format!(
                "cannot read Secret {namespace}/{}: {error}",
                key.name
            ));
        }
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&key.key))
        .map(|value| value.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(&key.key))
                .map(|value| value.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {namespace}/{} has no key {:?}", key.name, key.key))?;
    String::from_utf8(bytes)
        .map(|text| text.trim().to_owned())
        .map_err(|_| {
            format!(
                "key {:?} of Secret {namespace}/{} is not UTF-8 text",
                key.key, key.name
            )
        })
}

/// Fires each time this replica becomes the leader, so that a new leader
/// reconciles everything at once rather than at the next resync.
pub fn on_leadership(leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(leader, |mut leader| async move {
        loop {
            leader.changed().await.ok()?;
            if *leader.borrow_and_update() {
                return Some(((), leader));
            }
        }
    })
}

/// An event to publish: `Normal` or `Warning`, a reason, a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Warning rather than Normal.
    pub warning: bool,
    /// A short UpperCamelCase reason.
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl Note {
    /// A Normal event.
    pub fn normal(reason: &'static str, message: String) -> Self {
        Note {
            warning: false,
            reason,
            message,
        }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, message: String) -> Self {
        Note {
            warning: true,
            reason,
            message,
        }
    }
}

/// The API server refuses an `events.k8s.io/v1` Event whose `note` is
/// longer than this many bytes (not characters).
const MAX_NOTE_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes, ellipsis included, on a character
/// boundary.
fn truncate(text: &str, max: usize) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..cut])
}

/// Counts the failure, and backs the object off exponentially (with
/// jitter, capped) until it succeeds. The first failure of a category (and
/// each change of category) is one Warning event and one log line; its
/// retries log at debug. A conflict only means the cache was behind: the
/// watch brings the fresh object, and no person is told.
pub fn error_policy<K>(
    controller: &'static str,
    object: &K,
    error: &Error,
    ctx: &Arc<Context>,
) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[controller, error.reason()])
        .inc();
    let category = failures::Category::of(error);
    let verdict = ctx.failures.failed(&failure_key(object), category);
    if verdict.new_category && category.is_reported() {
        let note = Note::warning(
            category.reason(),
            format!(
                "reconcile failed: {error}; retrying with backoff (next in {:.1}s)",
                verdict.wait.as_secs_f64()
            ),
        );
        let reference = object.object_ref(&());
        let kind = K::kind(&()).into_owned();
        let ctx = Arc::clone(ctx);
        tokio::spawn(async move { ctx.publish(&reference, &kind, &note).await });
    } else {
        tracing::debug!(%error, controller, wait = ?verdict.wait, "reconcile failed; retrying");
    }
    Action::requeue(verdict.wait)
}

/// What a controller's reconcile function receives besides the object.
pub trait Reconciles: Send + Sync + 'static {
    /// The shared context.
    fn ctx(&self) -> &Arc<Context>;
}

/// Reconciles at most this many objects of one controller at a time: a
/// burst of changes queues up instead of flooding the API server.
pub const RECONCILE_CONCURRENCY: u16 = 16;

/// Runs `controller` with `reconcile` until `shutdown`: at most
/// [`RECONCILE_CONCURRENCY`] reconciles at once, failures backed off by
/// [`error_policy`], everything reconciled again on `reconcile_all`.
pub fn run<K, C, F, Fut>(
    controller: Controller<K>,
    name: &'static str,
    cx: Arc<C>,
    reconcile: F,
    reconcile_all: impl Stream<Item = ()> + Send + 'static,
    shutdown: CancellationToken,
) -> BoxFuture<'static, ()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Reconciles,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(
            move |object, cx| {
                let reconcile = reconcile.clone();
                async move {
                    let result = reconcile(Arc::clone(&object), Arc::clone(&cx)).await;
                    settle(cx.ctx(), object.as_ref(), result)
                }
            },
            move |object, error: &Error, cx| error_policy(name, object.as_ref(), error, cx.ctx()),
            cx,
        )
        .for_each(|_| futures::future::ready(()))
        .boxed()
}

/// Passes a reconciliation's `result` on, forgetting `object`'s failures
/// when it succeeded (its backoff starts over).
pub fn settle<K>(ctx: &Context, object: &K, result: Result<Action>) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
{
    if result.is_ok() {
        ctx.failures.succeeded(&failure_key(object));
    }
    result
}

/// The first word of `text` said twice in a row ("closed: closed: ..."),
/// the seam of a message that prefixes a reason already carrying the
/// prefix; for tests of composed messages.
#[cfg(test)]
pub(crate) fn doubled_word(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| {
            word.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|word| !word.is_empty())
        .collect();
    words
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0].clone())
}

#[cfg(test)]
mod tests {
    use super::{doubled_word, truncate};

    #[test]
    fn doubled_words_are_found_across_punctuation() {
        assert_eq!(
            doubled_word("ChangeWindow w is closed: closed: blackout"),
            Some("closed".to_owned())
        );
        assert_eq!(doubled_word("ChangeWindow w: closed: blackout"), None);
    }

    #[test]
    fn truncate_cuts_on_character_boundaries() {
        // "héll" is 5 bytes, the ellipsis 3 more; "é" is not cut in two.
        assert_eq!(truncate("héllo wörld", 8), "héll…");
        assert_eq!(truncate("héllo", 5), "h…");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exact", 5), "exact");
    }

    #[test]
    fn truncated_notes_fit_the_api_servers_limit_in_bytes() {
        // 1,500 two-byte characters: within 1,024 characters' worth of
        // cutting, but not of bytes.
        for text in ["é".repeat(1500), "a".repeat(5000), "€".repeat(400)] {
            let note = truncate(&text, super::MAX_NOTE_BYTES);
            assert!(note.len() <= super::MAX_NOTE_BYTES, "{} bytes", note.len());
            assert!(note.ends_with('…'));
        }
    }
}
