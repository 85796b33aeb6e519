//! Tenancy: a Rollback is a request from whoever could create it in its
//! namespace, so every test here creates its objects AS A TENANT (a
//! ServiceAccount token whose Role covers one namespace only), while the
//! operator runs with a client that could do anything: it must refuse to be
//! the tenant's deputy.
//!
//! - Another namespace of this cluster is touched only when it names the
//!   Rollback in its `weblab.dev/authorized-rollbacks` annotation.
//! - A kubeconfig from a tenant's Secret carries inline credentials only:
//!   no command is run, no file of the operator's is read, no proxy used
//!   (exec plugins only with `--insecure-kubeconfig-exec`).
//! - A missing kubeconfig Secret is a configuration error a person must
//!   fix: `Stalled` and a Warning event, then it recovers.

mod support;

use std::{path::Path, time::Duration};

use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Secret, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, PostParams},
};
use support::{
    Operator, eventually,
    workloads::{IMAGE, WAIT, authorize_rollbacks, image, plane, release},
};
use testenv::ControlPlane;
use weblab_operator::api::{
    Rollback,
    rollback::{RollbackPhase, RollbackStatus},
};

const STABLE_SINCE: &str = "weblab.dev/stable-since";

/// Creates `yaml` (one object) in `namespace` with the tenant's client.
async fn create_as(tenant: &Client, namespace: &str, yaml: &str) {
    let rollback: Rollback = serde_saphyr::from_str(yaml).expect("a Rollback manifest");
    Api::<Rollback>::namespaced(tenant.clone(), namespace)
        .create(&PostParams::default(), &rollback)
        .await
        .unwrap_or_else(|error| panic!("the tenant creates the Rollback: {error}\n{yaml}"));
}

/// Creates a Secret holding `kubeconfig` under key `kubeconfig`, as the tenant.
async fn kubeconfig_secret_as(tenant: &Client, namespace: &str, name: &str, kubeconfig: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some([("kubeconfig".to_owned(), kubeconfig.to_owned())].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(tenant.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|error| panic!("the tenant creates Secret {name}: {error}"));
}

/// A Rollback of Deployment `graphql-api` to revision 1 with one wave.
fn rollback(name: &str, wave: &str, trigger: &str) -> String {
    format!(
        "apiVersion: weblab.dev/v1alpha1
kind: Rollback
metadata:
  name: {name}
spec:
  targets: [{{kind: Deployment, name: graphql-api}}]
  waves: [{wave}]
  target: {{type: Revision, revision: 1}}
  verification: {{rolloutDeadline: 60s, bake: 1s}}
  stableAfter: 1s
{trigger}"
    )
}

async fn status(api: &Api<Rollback>, name: &str) -> RollbackStatus {
    api.get(name)
        .await
        .ok()
        .and_then(|r| r.status)
        .unwrap_or_default()
}

/// Waits until condition `type_` of the rollback is `True` with `reason`.
async fn wait_condition(
    api: &Api<Rollback>,
    name: &str,
    type_: &str,
    reason: &str,
    operator: &Operator,
) -> RollbackStatus {
    let reached = eventually(WAIT, || async {
        status(api, name)
            .await
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True" && c.reason == reason)
    })
    .await;
    let now = status(api, name).await;
    assert!(
        reached,
        "{name} never had {type_}=True ({reason}): {now:#?}\nlog:\n{}",
        operator.logs()
    );
    now
}

async fn wait_phase(
    api: &Api<Rollback>,
    name: &str,
    want: RollbackPhase,
    operator: &Operator,
) -> RollbackStatus {
    let reached = eventually(WAIT, || async {
        status(api, name).await.phase == Some(want)
    })
    .await;
    let now = status(api, name).await;
    assert!(
        reached,
        "{name} never reached {want:?}: {now:#?}\nlog:\n{}",
        operator.logs()
    );
    now
}

fn condition<'a>(
    status: &'a RollbackStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {status:#?}"))
}

/// Waits for a Warning event with `reason` about the rollback `name`.
async fn warned(plane: &ControlPlane, namespace: &str, name: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(plane.client().await.expect("client"), namespace);
    let find = || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
    };
    let seen = eventually(WAIT, || async { find().await.is_some() }).await;
    assert!(seen, "no Warning event {reason} about {name}");
    find().await.expect("the event")
}

/// A tenant of namespace A points a Rollback at namespace B: refused before
/// anything of B is read or written, whether it runs at once or is armed
/// (an armed Rollback would record B's revisions as stable). Once B names
/// one of A's Rollbacks in its annotation, that one proceeds.
#[tokio::test]
async fn a_rollback_acts_in_another_namespace_only_when_that_namespace_authorizes_it() {
    let plane = plane().await;
    let home = plane.namespace("tenancy-a").await.expect("namespace");
    let victim = plane.namespace("tenancy-b").await.expect("namespace");
    let (a, b) = (home.name(), victim.name());
    release(plane, b, "graphql-api", "v1").await;
    release(plane, b, "graphql-api", "v2").await;
    let tenant = support::tenant_client(plane, a).await;
    // The operator's own client may patch B: only its checks stand between.
    let operator = Operator::start(plane, &["--namespace", a]).await;
    let wave = format!("{{region: prodNA, namespace: {b}}}");

    create_as(&tenant, a, &rollback("reach-b", &wave, "")).await;
    let trigger = "  trigger: {type: Alarm, alarms: {names: [graphql-errors]}}\n";
    create_as(&tenant, a, &rollback("armed-b", &wave, trigger)).await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    for name in ["reach-b", "armed-b"] {
        let refused = wait_phase(&api, name, RollbackPhase::Refused, &operator).await;
        let ready = condition(&refused, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotAuthorized")
        );
        assert!(
            ready.message.contains("weblab.dev/authorized-rollbacks")
                && ready.message.contains(&format!("{a}/{name}"))
                && ready.message.contains(b),
            "{}",
            ready.message
        );
        let stalled = condition(&refused, "Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "NotAuthorized")
        );
        // Nothing of B in A's status: no workload, revision or image.
        let text = serde_json::to_string(&refused).expect("status as JSON");
        assert!(
            refused.waves.is_empty() && !text.contains(IMAGE) && !text.contains("Revision"),
            "{text}"
        );
        let event = warned(plane, a, name, "NotAuthorized").await;
        assert!(
            event
                .note
                .as_deref()
                .is_some_and(|note| note.contains("weblab.dev/authorized-rollbacks")),
            "{event:?}"
        );
    }
    // Let an armed rollback's stableAfter (1s) pass a few times over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(image(plane, b, "graphql-api").await, format!("{IMAGE}:v2"));
    let sets: Api<ReplicaSet> = Api::namespaced(plane.client().await.expect("client"), b);
    let marked: Vec<String> = sets
        .list(&ListParams::default())
        .await
        .expect("lists B's ReplicaSets")
        .items
        .iter()
        .filter(|rs| rs.annotations().contains_key(STABLE_SINCE))
        .map(ResourceExt::name_any)
        .collect();
    assert!(marked.is_empty(), "B's revisions were marked: {marked:?}");

    // B lets exactly one of A's Rollbacks in: that one runs; the refused
    // ones stay refused.
    authorize_rollbacks(plane, b, &format!("elsewhere/*, {a}/allowed")).await;
    create_as(&tenant, a, &rollback("allowed", &wave, "")).await;
    wait_phase(&api, "allowed", RollbackPhase::Succeeded, &operator).await;
    assert_eq!(image(plane, b, "graphql-api").await, format!("{IMAGE}:v1"));
    assert_eq!(
        status(&api, "reach-b").await.phase,
        Some(RollbackPhase::Refused)
    );
}

/// A kubeconfig reaching the control plane under test through `user` (YAML
/// lines of the user entry) and `cluster` (extra lines of the cluster entry).
fn kubeconfig(plane: &ControlPlane, cluster: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: remote
    cluster:
      server: {server}
      insecure-skip-tls-verify: true
{cluster}users:
  - name: remote
    user:
{user}contexts:
  - name: remote
    context: {{cluster: remote, user: remote}}
current-context: remote
",
        server = plane.server_url()
    )
}

/// An exec plugin that leaves `marker` behind when it runs, and answers
/// with a (useless) token.
fn exec_user(marker: &Path) -> String {
    let credential = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-exec"}}"#;
    let script = format!("touch '{}'; echo '{credential}'", marker.display());
    // A JSON string is a valid YAML double-quoted scalar.
    let script = serde_json::Value::from(script);
    format!(
        "      exec:
        apiVersion: client.authentication.k8s.io/v1
        command: /bin/sh
        args: [\"-c\", {script}]
        interactiveMode: Never
"
    )
}

/// What a tenant's kubeconfig may not make the operator do, each refused
/// with `Stalled` (reason `KubeconfigRefused`) naming the field, and the
/// exec plugin's command never run.
#[tokio::test]
async fn a_kubeconfig_that_runs_a_command_reads_a_file_or_uses_a_proxy_is_refused() {
    let plane = plane().await;
    let home = plane
        .namespace("tenancy-kubeconfig")
        .await
        .expect("namespace");
    let a = home.name();
    let tenant = support::tenant_client(plane, a).await;
    let operator = Operator::start(plane, &["--namespace", a]).await;
    let marker = plane.dir().join(format!("{a}-exec-ran"));
    let token = "      token: inline\n";
    let cases = [
        ("exec", String::new(), exec_user(&marker), "exec"),
        (
            "token-file",
            String::new(),
            "      tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n".to_owned(),
            "tokenFile",
        ),
        (
            "ca-file",
            "      certificate-authority: /etc/ssl/certs/ca-certificates.crt\n".to_owned(),
            token.to_owned(),
            "certificate-authority",
        ),
        (
            "cert-file",
            String::new(),
            "      client-certificate: /etc/hostname\n      client-key: /etc/hostname\n".to_owned(),
            "client-certificate",
        ),
        (
            "proxy",
            "      proxy-url: http://127.0.0.1:9/\n".to_owned(),
            token.to_owned(),
            "proxy-url",
        ),
        (
            "auth-provider",
            String::new(),
            "      auth-provider: {name: oidc, config: {id-token: x}}\n".to_owned(),
            "auth-provider",
        ),
    ];
    for (name, cluster, user, _) in &cases {
        kubeconfig_secret_as(&tenant, a, name, &kubeconfig(plane, cluster, user)).await;
        let wave = format!(
            "{{region: remote, namespace: {a}, kubeconfigSecretRef: {{name: {name}, key: kubeconfig}}}}"
        );
        create_as(&tenant, a, &rollback(name, &wave, "")).await;
    }
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    for (name, _, _, field) in &cases {
        let stalled = wait_condition(&api, name, "Stalled", "KubeconfigRefused", &operator).await;
        let message = &condition(&stalled, "Stalled").message;
        assert!(
            message.contains(field) && message.contains(&format!("Secret {a}/{name}")),
            "{name}: {message}"
        );
        assert_ne!(stalled.phase, Some(RollbackPhase::Progressing), "{name}");
        let reconciling = condition(&stalled, "Reconciling");
        assert_eq!(reconciling.status, "False", "{name}: {reconciling:?}");
        warned(plane, a, name, "KubeconfigRefused").await;
    }
    assert!(
        !marker.exists(),
        "the exec plugin ran inside the operator\nlog:\n{}",
        operator.logs()
    );

    // A kubeconfig that does not parse: said so, without quoting the
    // Secret (people who may read the Rollback may not read its Secrets).
    let broken = "users: [{name: x, user: {token: \"s3cr3t-t0ken\" oops}}]\n";
    kubeconfig_secret_as(&tenant, a, "broken", broken).await;
    let wave = format!(
        "{{region: remote, namespace: {a}, kubeconfigSecretRef: {{name: broken, key: kubeconfig}}}}"
    );
    create_as(&tenant, a, &rollback("broken", &wave, "")).await;
    let invalid = wait_condition(&api, "broken", "Stalled", "KubeconfigInvalid", &operator).await;
    let text = serde_json::to_string(&invalid).expect("status as JSON");
    assert!(!text.contains("s3cr3t"), "{text}");
    let event = warned(plane, a, "broken", "KubeconfigInvalid").await;
    assert!(!format!("{event:?}").contains("s3cr3t"), "{event:?}");
}

/// `--insecure-kubeconfig-exec` lets an administrator allow exec plugins
/// (and only them: a token file stays refused).
#[tokio::test]
async fn an_administrator_may_allow_exec_plugins_and_nothing_more() {
    let plane = plane().await;
    let home = plane.namespace("tenancy-exec").await.expect("namespace");
    let a = home.name();
    let tenant = support::tenant_client(plane, a).await;
    let operator = Operator::start(plane, &["--namespace", a, "--insecure-kubeconfig-exec"]).await;
    let marker = plane.dir().join(format!("{a}-exec-ran"));
    kubeconfig_secret_as(
        &tenant,
        a,
        "exec",
        &kubeconfig(plane, "", &exec_user(&marker)),
    )
    .await;
    let token_file = "      tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n";
    kubeconfig_secret_as(&tenant, a, "token-file", &kubeconfig(plane, "", token_file)).await;
    for name in ["exec", "token-file"] {
        let wave = format!(
            "{{region: remote, namespace: {a}, kubeconfigSecretRef: {{name: {name}, key: kubeconfig}}}}"
        );
        create_as(&tenant, a, &rollback(name, &wave, "")).await;
    }
    let ran = eventually(WAIT, || async { marker.exists() }).await;
    assert!(
        ran,
        "the allowed exec plugin never ran\nlog:\n{}",
        operator.logs()
    );
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    let refused = wait_condition(
        &api,
        "token-file",
        "Stalled",
        "KubeconfigRefused",
        &operator,
    )
    .await;
    assert!(
        condition(&refused, "Stalled").message.contains("tokenFile"),
        "{refused:#?}"
    );
    let exec = status(&api, "exec").await;
    assert!(
        !exec
            .conditions
            .iter()
            .any(|c| c.reason == "KubeconfigRefused"),
        "{exec:#?}"
    );
}

/// A wave whose kubeconfig Secret does not exist waits for a person, and
/// says so: `Stalled` (reason `KubeconfigNotFound`), not `Reconciling`, and
/// a Warning event. Once the Secret exists the rollback goes ahead.
#[tokio::test]
async fn a_missing_kubeconfig_secret_stalls_with_a_warning_until_it_exists() {
    let plane = plane().await;
    let home = plane.namespace("tenancy-missing").await.expect("namespace");
    let a = home.name();
    release(plane, a, "graphql-api", "v1").await;
    release(plane, a, "graphql-api", "v2").await;
    let tenant = support::tenant_client(plane, a).await;
    let operator = Operator::start(plane, &["--namespace", a]).await;
    let wave = format!(
        "{{region: remote, namespace: {a}, kubeconfigSecretRef: {{name: cluster-eu, key: kubeconfig}}}}"
    );
    create_as(&tenant, a, &rollback("far-away", &wave, "")).await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    let stalled =
        wait_condition(&api, "far-away", "Stalled", "KubeconfigNotFound", &operator).await;
    assert!(
        condition(&stalled, "Stalled")
            .message
            .contains(&format!("Secret {a}/cluster-eu not found")),
        "{stalled:#?}"
    );
    assert_eq!(condition(&stalled, "Reconciling").status, "False");
    assert_eq!(condition(&stalled, "Ready").status, "False");
    assert_eq!(stalled.phase, Some(RollbackPhase::Pending));
    warned(plane, a, "far-away", "KubeconfigNotFound").await;

    // The admin's kubeconfig of this control plane holds inline client
    // certificate data: acceptable.
    let admin = std::fs::read_to_string(plane.kubeconfig_path()).expect("reads the kubeconfig");
    kubeconfig_secret_as(&tenant, a, "cluster-eu", &admin).await;
    wait_phase(&api, "far-away", RollbackPhase::Succeeded, &operator).await;
    assert_eq!(image(plane, a, "graphql-api").await, format!("{IMAGE}:v1"));
    let done = status(&api, "far-away").await;
    assert_eq!(condition(&done, "Stalled").status, "False");
}

/// The chart's defaults grant rollback rights in the release namespace
/// only: a namespace that authorizes the Rollback, but where the operator
/// was given no rights, refuses it too, naming the Helm value to set.
#[tokio::test]
async fn a_namespace_without_the_operators_rollback_rights_refuses_the_rollback() {
    let plane = plane().await;
    let identity = support::chart_identity(plane).await;
    let home = plane.namespace("tenancy-chart-a").await.expect("namespace");
    let target = plane.namespace("tenancy-chart-b").await.expect("namespace");
    let (a, b) = (home.name(), target.name());
    authorize_rollbacks(plane, b, &format!("{a}/*")).await;
    let tenant = support::tenant_client(plane, a).await;
    let operator = Operator::start_as(plane, identity, &["--namespace", a]).await;
    let wave = format!("{{region: prodNA, namespace: {b}}}");
    create_as(&tenant, a, &rollback("no-rights", &wave, "")).await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    let refused = wait_phase(&api, "no-rights", RollbackPhase::Refused, &operator).await;
    let ready = condition(&refused, "Ready");
    assert_eq!(ready.reason, "NotAuthorized");
    assert!(
        ready.message.contains("rbac.rollback.namespaces") && ready.message.contains(b),
        "{}",
        ready.message
    );
}

/// The authorization is read again at every reconciliation: removed while
/// the first region bakes, it fails the rollback before the second region,
/// in the namespace that withdrew it, is touched.
#[tokio::test]
async fn withdrawing_the_authorization_stops_the_next_wave() {
    let plane = plane().await;
    let home = plane
        .namespace("tenancy-revoke-a")
        .await
        .expect("namespace");
    let target = plane
        .namespace("tenancy-revoke-b")
        .await
        .expect("namespace");
    let (a, b) = (home.name(), target.name());
    for ns in [a, b] {
        release(plane, ns, "graphql-api", "v1").await;
        release(plane, ns, "graphql-api", "v2").await;
    }
    authorize_rollbacks(plane, b, &format!("{a}/two-regions")).await;
    let tenant = support::tenant_client(plane, a).await;
    let operator = Operator::start(plane, &["--namespace", a]).await;
    let waves = format!("{{region: here, namespace: {a}}}, {{region: there, namespace: {b}}}");
    create_as(
        &tenant,
        a,
        &rollback("two-regions", &waves, "").replace("bake: 1s", "bake: 20s"),
    )
    .await;
    let api: Api<Rollback> = Api::namespaced(plane.client().await.expect("client"), a);
    let baking = eventually(WAIT, || async {
        status(&api, "two-regions")
            .await
            .waves
            .first()
            .is_some_and(|w| w.phase == weblab_operator::api::rollback::WavePhase::Baking)
    })
    .await;
    assert!(
        baking,
        "the first region never baked\nlog:\n{}",
        operator.logs()
    );
    let removed = support::kubectl(
        plane,
        &[
            "annotate",
            "namespace",
            b,
            "weblab.dev/authorized-rollbacks-",
        ],
    )
    .await;
    assert!(removed.status.success(), "{}", support::describe(&removed));

    let failed = wait_phase(&api, "two-regions", RollbackPhase::Failed, &operator).await;
    let there = &failed.waves[1];
    assert!(
        there.workloads.is_empty()
            && there
                .message
                .as_deref()
                .is_some_and(|m| m.contains("weblab.dev/authorized-rollbacks")),
        "{there:#?}"
    );
    assert_eq!(image(plane, a, "graphql-api").await, format!("{IMAGE}:v1"));
    assert_eq!(image(plane, b, "graphql-api").await, format!("{IMAGE}:v2"));
}
