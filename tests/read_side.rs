//! The read side against the real API server, without the operator binary:
//! the shared caches ([`weblab_operator::cache`]), the attach rule, the dial
//! controller running in this process, and the served view
//! ([`weblab_operator::view`]). A mapping or cache mistake fails here in
//! seconds, before any end-to-end test.

mod support;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use futures::FutureExt;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::{control_plane, eventually};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weblab_operator::{
    api::{Alarm, WeblabDial, alarm::AlarmState},
    cache::Caches,
    controllers::{Context, weblab_dial},
    metrics::Metrics,
    outbound::Outbound,
    view::{
        dials::DialCatalog,
        firing::{self, Firing},
    },
};

const WAIT: Duration = Duration::from_secs(30);

/// What `unit-1` is served in `realm` of `namespace/name`, or why nothing.
fn served(catalog: &DialCatalog, namespace: &str, name: &str, realm: &str) -> Option<String> {
    let dial = catalog.get(namespace, name)?.ok()?;
    let realm = dial.realm(Some(realm)).ok()?;
    Some(dial.assign(realm, "unit-1", &[]).treatment.to_owned())
}

/// Writes the alarm's state as the alarm controller would.
async fn set_state(alarms: &Api<Alarm>, state: AlarmState) {
    alarms
        .patch_status(
            "checkout-errors",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": state}})),
        )
        .await
        .expect("set the alarm's state");
}

#[tokio::test]
async fn the_view_serves_a_rollback_from_the_shared_caches_the_moment_an_attached_alarm_fires() {
    let plane = control_plane().await;
    let namespace = plane.namespace("read-side").await.expect("namespace");
    let ns = namespace.name();
    let client = plane.client().await.expect("client");

    // The read side of one scope, and the dial controller, in-process.
    let shutdown = CancellationToken::new();
    let (caches, watches) = Caches::watch(&client, Some(ns), &shutdown);
    let firing = Arc::new(Firing::default());
    let mut tasks: Vec<_> = watches.into_iter().map(tokio::spawn).collect();
    tasks.push(tokio::spawn(
        firing::follow(firing.clone(), caches.alarms.subscribe()).boxed(),
    ));
    let (_leader_tx, leader) = watch::channel(true);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Metrics::new().expect("metrics"),
        leader,
        "read-side-test".to_owned(),
        Outbound::new(Vec::new()).expect("outbound policy"),
    ));
    tasks.push(tokio::spawn(weblab_dial::controller(
        ctx,
        &caches,
        futures::stream::pending(),
        shutdown.clone(),
    )));
    let catalog = DialCatalog::new(vec![caches.dials.store()], Arc::new(AtomicBool::new(true)))
        .with_alarms(vec![caches.alarms.store()], firing);

    // An alarm attached by selector.
    let alarms: Api<Alarm> = Api::namespaced(client.clone(), ns);
    let alarm: Alarm = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "Alarm",
        "metadata": {"name": "checkout-errors", "labels": {"team": "checkout"}},
        "spec": {"severity": "Sev2",
                 "alertmanager": {"matchers": [{"name": "alertname", "value": "CheckoutErrors"}]}},
    }))
    .expect("a valid Alarm");
    alarms
        .create(&PostParams::default(), &alarm)
        .await
        .expect("create the alarm");
    // The alarm controller's writes are done here by hand: no alert yet.
    set_state(&alarms, AlarmState::Ok).await;
    let dials: Api<WeblabDial> = Api::namespaced(client.clone(), ns);
    let dial: WeblabDial = serde_json::from_value(json!({
        "apiVersion": "weblab.dev/v1alpha1", "kind": "WeblabDial",
        "metadata": {"name": "checkout"},
        "spec": {"weblab": "CHECKOUT_1", "treatments": ["C", "T1"], "realms": ["NA"],
                 "allocation": {"T1": 100},
                 "rollback": {"alarms": {
                     "selector": {"matchExpressions": [
                         {"key": "team", "operator": "In", "values": ["checkout"]}]}}}},
    }))
    .expect("a valid WeblabDial");
    dials
        .create(&PostParams::default(), &dial)
        .await
        .expect("create the dial");

    // The controller dials it up from the shared caches; the view serves it.
    let dialed = eventually(WAIT, || async {
        served(&catalog, ns, "checkout", "NA").as_deref() == Some("T1")
    })
    .await;
    assert!(dialed, "the dial is never served at T1");
    // What the operator never reads is not cached.
    assert!(
        caches
            .dials
            .store()
            .state()
            .iter()
            .all(|d| d.metadata.managed_fields.is_none()),
        "managedFields are stripped before storing"
    );
    assert!(
        caches
            .alarms
            .store()
            .state()
            .iter()
            .all(|a| a.metadata.managed_fields.is_none())
    );

    // The alarm fires.
    let fired_at = Instant::now();
    set_state(&alarms, AlarmState::Alarm).await;
    let rolled_back = eventually(WAIT, || async {
        served(&catalog, ns, "checkout", "NA").as_deref() == Some("C")
    })
    .await;
    let served_after = fired_at.elapsed();
    assert!(rolled_back, "the view never serves the rollback");
    // The dial's own status follows: the controller rolled it back.
    let recorded = eventually(WAIT, || async {
        dials.get_status("checkout").await.is_ok_and(|dial| {
            dial.status
                .as_ref()
                .is_some_and(|s| s.realms.iter().all(|r| !r.allocation.0.contains_key("T1")))
        })
    })
    .await;
    assert!(recorded, "the controller never recorded the rollback");
    println!(
        "read side: the view served the rollback {:.1} ms after the alarm's status write",
        served_after.as_secs_f64() * 1e3
    );
    assert_eq!(
        caches.alarms.store().state().len(),
        1,
        "one cache entry per alarm: {:?}",
        caches
            .alarms
            .store()
            .state()
            .iter()
            .map(|a| a.name_any())
            .collect::<Vec<_>>()
    );

    // Everything stops with the shutdown token and the last cache handle.
    shutdown.cancel();
    drop(caches);
    drop(catalog);
    for task in tasks {
        let _ = task.await;
    }
}
