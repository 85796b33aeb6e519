//! `weblab-operator run`: the HTTP server on every replica; the
//! controllers' writes on the leader only.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, future::join_all};
use tokio::sync::watch;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client, Resource, ResourceExt, runtime::reflector::Store};
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result, api,
    cache::Caches,
    controllers::{
        Context,
        alarm::{self, AlarmContext, intake::WebhookIntake},
        change_window, merge_train_exception, merge_train_pause, notifier, on_leadership, rollback,
        weblab_dial,
    },
    leader::{LeaderElector, LeaseSettings},
    metrics::Metrics,
    outbound::Outbound,
    server::{
        self, ServerState,
        alertmanager::{TokenSecret, WebhookOptions, WebhookToken},
        auth::{ApiTokens, Served, TokenSettings},
        listener::Limits,
    },
    view::{self, firing::Firing},
};

/// How `run` is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// The namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    /// This replica's name in events and in the election.
    pub identity: String,
    /// Leader election, or `None` to run the controllers unconditionally
    /// (one replica, or local development).
    pub leader_election: Option<LeaseSettings>,
    /// The Secret holding the Alertmanager webhook's bearer token; `None`
    /// refuses every notification.
    pub webhook_token: Option<TokenSecret>,
    /// URL prefixes through which outbound calls may reach loopback,
    /// link-local and metadata addresses (see [`crate::outbound`]).
    pub allow_outbound_url_prefixes: Vec<String>,
    /// Whether kubeconfigs in tenants' Secrets may run exec plugins inside
    /// the operator (`--insecure-kubeconfig-exec`); files stay refused.
    pub insecure_kubeconfig_exec: bool,
    /// How the webhook records notifications.
    pub webhook: WebhookOptions,
    /// The one namespace the root OFREP mount serves; `None`: the root
    /// mount is off.
    pub ofrep_root_namespace: Option<String>,
    /// Refuse assignment and gate requests for namespaces without a token.
    pub require_api_token: bool,
    /// The HTTP listener's timeouts and limits.
    pub limits: Limits,
    /// Where notifiers' PagerDuty events go (`--pagerduty-events-url`).
    pub pagerduty_events_url: reqwest::Url,
}

/// Runs the operator until `shutdown` is cancelled (SIGTERM) or it fails.
/// `metrics` are the ones `client` counts its retries in (see
/// [`crate::api_client`]).
pub async fn run(
    client: Client,
    metrics: Metrics,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let (leader_tx, leader) = watch::channel(false);
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        leader.clone(),
        settings.identity.clone(),
        Outbound::new(settings.allow_outbound_url_prefixes.clone())?,
    ));

    // The controllers are built (not started) first, so that the server
    // holds their caches from the start; it serves once they have synced.
    let scopes: Vec<Option<&str>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings
            .namespaces
            .iter()
            .map(|ns| Some(ns.as_str()))
            .collect()
    };
    let alarm_cx = Arc::new(AlarmContext::new(ctx.clone()));
    let firing = Arc::new(Firing::default());
    let mut dials = Vec::new();
    let mut alarms = Vec::new();
    let mut pauses = Vec::new();
    let mut windows = Vec::new();
    let mut watches = Vec::new();
    let mut notifiers = Vec::new();
    let mut exceptions = view::gates::Exceptions {
        stores: Vec::new(),
        uses: Arc::default(),
    };
    let mut controllers = Vec::new();
    for scope in scopes.iter().copied() {
        // One watch per kind and scope, shared by every controller and
        // the server.
        let (caches, scope_watches) = Caches::watch(&client, scope, &shutdown);
        watches.extend(scope_watches);
        let all = || on_leadership(leader.clone());
        controllers.push(change_window::controller(
            ctx.clone(),
            &caches,
            all(),
            shutdown.clone(),
        ));
        controllers.push(merge_train_pause::controller(
            ctx.clone(),
            &caches,
            all(),
            shutdown.clone(),
        ));
        controllers.push(merge_train_exception::controller(
            ctx.clone(),
            &caches,
            scope,
            exceptions.uses.clone(),
            all(),
            shutdown.clone(),
        ));
        controllers.push(weblab_dial::controller(
            ctx.clone(),
            &caches,
            all(),
            shutdown.clone(),
        ));
        controllers.push(alarm::controller(
            alarm_cx.clone(),
            &caches,
            all(),
            shutdown.clone(),
        ));
        controllers.push(rollback::controller(
            ctx.clone(),
            &caches,
            settings.insecure_kubeconfig_exec,
            all(),
            shutdown.clone(),
        ));
        dials.push(caches.dials.store());
        alarms.push(caches.alarms.store());
        pauses.push(caches.pauses.store());
        windows.push(caches.windows.store());
        exceptions.stores.push(caches.exceptions.store());
        // The served view follows the alarms that fire from the same cache.
        watches.push(view::firing::follow(firing.clone(), caches.alarms.subscribe()).boxed());
        notifiers.push(caches.notifiers.clone());
    }
    // Notifications leave in the background, never on a reconcile's path.
    controllers.push(notifier::courier(
        ctx.clone(),
        &scopes,
        notifiers,
        settings.pagerduty_events_url.clone(),
        shutdown.clone(),
    ));
    let webhook_token = WebhookToken::default();
    if let Some(secret) = settings.webhook_token.clone() {
        tokio::spawn(
            webhook_token
                .clone()
                .follow(client.clone(), secret, shutdown.clone()),
        );
    }
    let tokens = ApiTokens::new(
        client.clone(),
        TokenSettings {
            require: settings.require_api_token,
            root_namespace: settings.ofrep_root_namespace.clone(),
            watched: settings.namespaces.clone(),
        },
        Served {
            dials: dials.clone(),
            pauses: pauses.clone(),
            windows: windows.clone(),
        },
    );
    let state = ServerState {
        metrics: metrics.clone(),
        intake: Arc::new(WebhookIntake::new(
            ctx.clone(),
            alarms.clone(),
            settings.webhook.namespace_label.clone(),
            settings.webhook.record_timeout,
        )),
        ready: ready.clone(),
        dials: dials.clone(),
        alarms: alarms.clone(),
        firing: firing.clone(),
        webhook_token,
        webhook: settings.webhook.clone(),
        pauses: pauses.clone(),
        windows: windows.clone(),
        exceptions: exceptions.clone(),
        tokens: tokens.clone(),
        ofrep_root_namespace: settings.ofrep_root_namespace.clone(),
        limits: settings.limits,
    };
    let server = tokio::spawn(server::serve(settings.listen, state, shutdown.clone()).await?);

    let outcome = async {
        if !wait_for_crds(&client, &shutdown).await? {
            return Ok(());
        }
        let running: Vec<_> = watches
            .into_iter()
            .chain(controllers)
            .map(tokio::spawn)
            .collect();
        for store in &dials {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                synced = wait_until_synced(store) => if !synced { return Ok(()) },
            }
        }
        // The webhook and the gates answer from these caches too.
        let synced = async {
            for store in &alarms {
                if !wait_until_synced(store).await {
                    return false;
                }
            }
            for store in &pauses {
                if !wait_until_synced(store).await {
                    return false;
                }
            }
            for store in &windows {
                if !wait_until_synced(store).await {
                    return false;
                }
            }
            for store in &exceptions.stores {
                if !wait_until_synced(store).await {
                    return false;
                }
            }
            true
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            synced = synced => if !synced { return Ok(()) },
        }
        // The tokens of the namespaces the caches hold are read before the
        // first request is served, so that none is served without its token.
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokens.refresh() => {}
        }
        tokio::spawn(tokens.clone().follow(shutdown.clone()));
        ready.store(true, Ordering::Release);
        tracing::info!("caches synced; serving");
        let led = lead(client, &settings, &metrics, &leader_tx, &shutdown).await;
        shutdown.cancel();
        join_all(running).await;
        led
    }
    .await;

    // Whatever ended the run, the server stops with it.
    shutdown.cancel();
    if let Err(join_error) = server.await {
        tracing::error!(%join_error, "HTTP server task panicked");
    }
    outcome
}

/// Waits until every CRD is established, so that a fresh install where the
/// operator starts before its CRDs does not crash-loop. `false` when
/// `shutdown` fires first.
async fn wait_for_crds(client: &Client, shutdown: &CancellationToken) -> Result<bool> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let started = Instant::now();
    let mut last_report = Instant::now();
    for wanted in api::crds() {
        let name = wanted.name_any();
        loop {
            let established = match crds.get_opt(&name).await {
                Ok(found) => found.as_ref().is_some_and(is_established),
                Err(error) => {
                    tracing::warn!(%error, crd = %name, "cannot read CRD");
                    false
                }
            };
            if established {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                let error = Error::CrdNotEstablished {
                    crd: name.clone(),
                    waited_secs: started.elapsed().as_secs(),
                };
                tracing::warn!(%error, "still waiting");
                last_report = Instant::now();
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    tracing::info!("all CRDs are established");
    Ok(true)
}

/// Waits for a cache's first full list. kube-runtime's readiness signal
/// wakes only the last task that polled it, and the controller polls it too,
/// so it is polled again on a short tick. `false` when the cache is gone.
async fn wait_until_synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_) => continue,
        }
    }
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Holds leadership (when elected) until shutdown. A lost lease ends the
/// process with an error, so that its writes stop at once and the Deployment
/// restarts it as a candidate.
async fn lead(
    client: Client,
    settings: &Settings,
    metrics: &Metrics,
    leader: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> Result<()> {
    let Some(lease) = &settings.leader_election else {
        metrics.leader.set(1);
        leader.send_replace(true);
        shutdown.cancelled().await;
        return Ok(());
    };
    let elector = LeaderElector::new(client, lease.clone());
    if !elector.acquire(shutdown).await? {
        return Ok(());
    }
    metrics.leader.set(1);
    leader.send_replace(true);
    let held = elector.hold(shutdown).await;
    // Stop writing before anything else: another replica may lead already.
    leader.send_replace(false);
    metrics.leader.set(0);
    if held.is_ok()
        && let Err(error) = elector.release().await
    {
        tracing::warn!(%error, "cannot release leader lease; others take over when it expires");
    }
    held
}
