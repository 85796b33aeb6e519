//! The Helm chart's RBAC, proven rather than guessed: the real operator runs
//! outside the cluster with a TokenRequest token of the chart's
//! ServiceAccount (bound to exactly the Roles `helm template` renders) and
//! does its work; `kubectl auth can-i` shows what that identity cannot do.
//!
//! Any other test binary runs the same way with
//! `WEBLAB_TEST_OPERATOR_IDENTITY=chart` (see `support::Operator::start`).

mod support;

use std::time::Duration;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Namespace, events::v1::Event};
use kube::{Api, api::ListParams};
use support::{Operator, apply_yaml, chart_identity, control_plane, describe, eventually, kubectl};
use weblab_operator::api::{WeblabDial, weblab_dial::DialPhase};

const WAIT: Duration = Duration::from_secs(60);

const DIAL: &str = "apiVersion: weblab.dev/v1alpha1
kind: WeblabDial
metadata:
  name: checkout
spec:
  weblab: CHECKOUT_RBAC
  treatments: [C, T1]
  realms: [NA, EU]
  allocation: {T1: 100}
  steps:
    - allocation: {C: 90, T1: 10}
      bake: 1s
    - allocation: {C: 50, T1: 50}
      pause: true
  waves:
    - realms: [NA]
    - realms: [EU]
";

fn phase(dial: &WeblabDial) -> Option<DialPhase> {
    dial.status.as_ref().and_then(|status| status.phase)
}

async fn wait_for_phase(api: &Api<WeblabDial>, want: DialPhase, operator: &Operator) -> WeblabDial {
    let reached = eventually(WAIT, || async {
        api.get("checkout")
            .await
            .is_ok_and(|dial| phase(&dial) == Some(want))
    })
    .await;
    let dial = api.get("checkout").await.expect("the dial exists");
    assert!(
        reached,
        "never reached {want:?}: {:#?}\noperator log:\n{}",
        dial.status,
        operator.logs()
    );
    dial
}

async fn act(namespace: &str, request: &str) {
    let plane = control_plane().await;
    let output = kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "weblabdial/checkout",
            &format!("weblab.dev/action={request}"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
}

#[tokio::test]
async fn the_operator_does_its_work_as_the_charts_service_account() {
    let plane = control_plane().await;
    let identity = chart_identity(plane).await;
    let ns = plane.namespace("rbac-dial").await.expect("namespace");
    let operator = Operator::start_as(
        plane,
        identity,
        &["--namespace", ns.name(), "--leader-election"],
    )
    .await;
    let api: Api<WeblabDial> = Api::namespaced(plane.client().await.expect("client"), ns.name());

    // Steps, bakes, a pause step, manual actions: status writes, events,
    // and the watches on dials, alarms and change windows.
    apply_yaml(plane, ns.name(), DIAL).await;
    wait_for_phase(&api, DialPhase::Paused, &operator).await;
    act(ns.name(), "promote 1").await;
    let dialed = wait_for_phase(&api, DialPhase::Dialed, &operator).await;
    assert_eq!(dialed.status.expect("status").history.len(), 6);
    act(ns.name(), "abort 1").await;
    wait_for_phase(&api, DialPhase::Aborted, &operator).await;
    act(ns.name(), "retry 1").await;
    // Progressing again: through the steps up to the pause step.
    wait_for_phase(&api, DialPhase::Paused, &operator).await;

    // It led through the chart's Lease in the release namespace.
    let leases: Api<Lease> =
        Api::namespaced(plane.client().await.expect("client"), &identity.namespace);
    let lease = leases
        .get(support::CHART_RELEASE)
        .await
        .expect("the leader Lease exists");
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some());

    // Events were published through events.k8s.io.
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), ns.name());
    let published = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    assert!(
        published
            .iter()
            .any(|event| event.reason.as_deref() == Some("Dialed")),
        "no Dialed event: {published:#?}"
    );

    // Nothing it tried was refused.
    let log = operator.logs();
    assert!(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        "the operator was refused something:\n{log}"
    );
}

#[tokio::test]
async fn the_charts_service_account_cannot_do_what_the_operator_does_not_need() {
    let plane = control_plane().await;
    let identity = chart_identity(plane).await;
    let team = plane.namespace("rbac-team").await.expect("namespace");
    let release = identity.namespace.as_str();
    let can = |args: Vec<String>| async move {
        let mut all = vec!["auth".to_owned(), "can-i".to_owned()];
        all.extend(args);
        all.push(format!("--as={}", identity.user));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let output = kubectl(plane, &all).await;
        // can-i prints yes/no and exits 0/1.
        String::from_utf8_lossy(&output.stdout).trim() == "yes"
    };
    let words = |text: &str, ns: &str| -> Vec<String> {
        let mut args: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if ns == "*" {
            args.push("--all-namespaces".to_owned());
        } else if !ns.is_empty() {
            args.extend(["-n".to_owned(), ns.to_owned()]);
        }
        args
    };

    let allowed = [
        ("list weblabdials.weblab.dev", "*"),
        ("watch alarms.weblab.dev", "*"),
        ("get changewindows.weblab.dev", team.name()),
        ("watch mergetrainexceptions.weblab.dev", "*"),
        (
            "patch mergetrainexceptions.weblab.dev --subresource=status",
            team.name(),
        ),
        (
            "patch weblabdials.weblab.dev --subresource=status",
            team.name(),
        ),
        (
            "patch rollbacks.weblab.dev --subresource=status",
            team.name(),
        ),
        ("watch weblabnotifiers.weblab.dev", "*"),
        (
            "patch weblabnotifiers.weblab.dev --subresource=status",
            team.name(),
        ),
        ("create mergetrainpauses.weblab.dev", team.name()),
        ("delete mergetrainpauses.weblab.dev", team.name()),
        ("create events.events.k8s.io", team.name()),
        ("create leases.coordination.k8s.io", release),
        ("update leases.coordination.k8s.io/weblab-operator", release),
        ("get secrets", release),
        // The namespaces' API tokens, by that name only.
        ("get secrets/weblab-api-token", team.name()),
        (
            "get customresourcedefinitions.apiextensions.k8s.io/weblabdials.weblab.dev",
            "",
        ),
        // Rollback rights: by default only where the operator runs.
        ("patch deployments.apps", release),
        ("patch replicasets.apps", release),
        ("list controllerrevisions.apps", release),
    ];
    for (what, ns) in allowed {
        assert!(
            can(words(what, ns)).await,
            "should be allowed: {what} in {ns:?}"
        );
    }

    let refused = [
        // Secrets: never listed or watched, and not read outside the
        // namespaces the values name.
        ("list secrets", "*"),
        ("list secrets", release),
        ("watch secrets", release),
        ("get secrets", team.name()),
        ("get secrets/gitlab-token", team.name()),
        // The user's spec is never edited.
        ("update weblabdials.weblab.dev", team.name()),
        ("patch weblabdials.weblab.dev", team.name()),
        ("delete weblabdials.weblab.dev", team.name()),
        ("patch alarms.weblab.dev", team.name()),
        ("patch changewindows.weblab.dev", team.name()),
        // An exception is a person's approval: never made or changed by the
        // operator.
        ("create mergetrainexceptions.weblab.dev", team.name()),
        ("patch mergetrainexceptions.weblab.dev", team.name()),
        ("patch rollbacks.weblab.dev", team.name()),
        ("patch weblabnotifiers.weblab.dev", team.name()),
        ("create weblabdials.weblab.dev", team.name()),
        // With every namespace watched, rollback rights are not granted
        // everywhere unless rbac.rollback.clusterWide says so.
        ("patch deployments.apps", team.name()),
        ("patch replicasets.apps", team.name()),
        ("list controllerrevisions.apps", team.name()),
        // Workloads are patched back, never created or deleted.
        ("delete deployments.apps", team.name()),
        ("create deployments.apps", team.name()),
        ("delete pods", team.name()),
        ("delete replicasets.apps", team.name()),
        // Leases only its own, in its own namespace.
        ("create leases.coordination.k8s.io", team.name()),
        ("update leases.coordination.k8s.io/someone-else", release),
        // CRDs: read its own, nothing else.
        ("list customresourcedefinitions.apiextensions.k8s.io", ""),
        (
            "get customresourcedefinitions.apiextensions.k8s.io/foos.example.com",
            "",
        ),
        (
            "update customresourcedefinitions.apiextensions.k8s.io/weblabdials.weblab.dev",
            "",
        ),
        // Nothing else cluster-wide.
        ("create clusterrolebindings.rbac.authorization.k8s.io", ""),
        ("get configmaps", team.name()),
        ("create pods/exec", team.name()),
    ];
    for (what, ns) in refused {
        assert!(
            !can(words(what, ns)).await,
            "should be refused: {what} in {ns:?}"
        );
    }
}

#[tokio::test]
async fn watched_namespaces_confine_every_grant_to_them() {
    let plane = control_plane().await;
    let release = plane.namespace("rbac-scoped").await.expect("namespace");
    let watched = plane.namespace("rbac-watched").await.expect("namespace");
    let other = plane.namespace("rbac-other").await.expect("namespace");
    let chart = support::repo_root().join("charts/weblab-operator");
    let rendered = support::helm(
        plane,
        &[
            "template",
            "scoped",
            &chart.to_string_lossy(),
            "--namespace",
            release.name(),
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
            "--set",
            &format!("watchNamespaces={{{}}}", watched.name()),
        ],
    )
    .await;
    assert!(rendered.status.success(), "{}", describe(&rendered));
    // The objects name their namespaces (several), so no `-n`.
    let path = plane.dir().join(format!("{}.yaml", release.name()));
    std::fs::write(&path, &rendered.stdout).expect("write");
    let applied = kubectl(plane, &["apply", "-f", &path.to_string_lossy()]).await;
    assert!(applied.status.success(), "{}", describe(&applied));
    let user = format!(
        "system:serviceaccount:{}:scoped-weblab-operator",
        release.name()
    );
    let can = |verb: &str, resource: &str, ns: &str| {
        let (verb, resource, ns, user) = (
            verb.to_owned(),
            resource.to_owned(),
            ns.to_owned(),
            user.clone(),
        );
        async move {
            let output = kubectl(
                plane,
                &[
                    "auth",
                    "can-i",
                    &verb,
                    &resource,
                    "-n",
                    &ns,
                    &format!("--as={user}"),
                ],
            )
            .await;
            String::from_utf8_lossy(&output.stdout).trim() == "yes"
        }
    };
    for (verb, resource) in [
        ("watch", "weblabdials.weblab.dev"),
        ("create", "events.events.k8s.io"),
        ("get", "secrets"),
        ("patch", "deployments.apps"),
    ] {
        assert!(
            can(verb, resource, watched.name()).await,
            "{verb} {resource} in the watched namespace"
        );
        assert!(
            !can(verb, resource, other.name()).await,
            "{verb} {resource} outside the watched namespace"
        );
    }
    let everywhere = kubectl(
        plane,
        &[
            "auth",
            "can-i",
            "list",
            "weblabdials.weblab.dev",
            "--all-namespaces",
            &format!("--as={user}"),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&everywhere.stdout).trim(), "no");
}

/// The Rollback controller's workload rights go where `rbac.rollback`
/// says: the listed namespaces (with get on those Namespace objects only,
/// for the authorization annotation), or everywhere with `clusterWide`.
#[tokio::test]
async fn rollback_rights_are_granted_per_listed_namespace_unless_cluster_wide() {
    let plane = control_plane().await;
    let listed = plane.namespace("rbac-rbk-listed").await.expect("namespace");
    let other = plane.namespace("rbac-rbk-other").await.expect("namespace");
    let chart = support::repo_root().join("charts/weblab-operator");
    for (release, setting) in [
        (
            "listed",
            format!("rbac.rollback.namespaces={{{}}}", listed.name()),
        ),
        ("everywhere", "rbac.rollback.clusterWide=true".to_owned()),
    ] {
        let home = plane.namespace("rbac-rbk").await.expect("namespace");
        let rendered = support::helm(
            plane,
            &[
                "template",
                release,
                &chart.to_string_lossy(),
                "--namespace",
                home.name(),
                "--show-only",
                "templates/serviceaccount.yaml",
                "--show-only",
                "templates/rbac.yaml",
                "--set",
                &setting,
            ],
        )
        .await;
        assert!(rendered.status.success(), "{}", describe(&rendered));
        let path = plane.dir().join(format!("{}.yaml", home.name()));
        std::fs::write(&path, &rendered.stdout).expect("write");
        let applied = kubectl(plane, &["apply", "-f", &path.to_string_lossy()]).await;
        assert!(applied.status.success(), "{}", describe(&applied));
        let user = format!(
            "--as=system:serviceaccount:{}:{release}-weblab-operator",
            home.name()
        );
        let can = |args: Vec<String>| {
            let user = user.clone();
            async move {
                let mut all = vec!["auth".to_owned(), "can-i".to_owned()];
                all.extend(args);
                all.push(user);
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                let output = kubectl(plane, &all).await;
                String::from_utf8_lossy(&output.stdout).trim() == "yes"
            }
        };
        let in_ns = |what: &str, ns: &str| {
            let mut args: Vec<String> = what.split_whitespace().map(str::to_owned).collect();
            args.extend(["-n".to_owned(), ns.to_owned()]);
            args
        };
        // Namespaces are cluster-scoped, which `can-i` does not model for
        // a RoleBinding: the real GET, with a token of the ServiceAccount.
        let token = kubectl(
            plane,
            &[
                "create",
                "token",
                &format!("{release}-weblab-operator"),
                "-n",
                home.name(),
            ],
        )
        .await;
        assert!(token.status.success(), "{}", describe(&token));
        let client = plane
            .client_with_token(String::from_utf8_lossy(&token.stdout).trim())
            .await
            .expect("a client with the token");
        let namespaces: Api<Namespace> = Api::all(client);
        let everywhere = release == "everywhere";
        for ns in [listed.name(), other.name()] {
            let want = everywhere || ns == listed.name();
            for what in ["patch deployments.apps", "patch replicasets.apps"] {
                assert_eq!(
                    can(in_ns(what, ns)).await,
                    want,
                    "{release}: {what} in {ns}"
                );
            }
            // A RoleBinding grants get on its own Namespace object only.
            assert_eq!(
                namespaces.get_metadata(ns).await.is_ok(),
                want,
                "{release}: get namespace {ns}"
            );
        }
    }
}
