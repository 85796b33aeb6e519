//! The API-server-only control plane: readiness, identity, RBAC, service
//! accounts, kubectl, CRDs and namespaces.

mod common;

use std::time::Duration;

use common::{TestResult, eventually, pinned_kubernetes_version};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use testenv::{ControlPlane, Error, Options};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[tokio::test]
async fn apiserver_reports_the_pinned_version() -> TestResult {
    let control_plane = testenv::shared().await?;
    let info = control_plane.client().await?.apiserver_version().await?;
    assert_eq!(info.git_version, pinned_kubernetes_version());
    assert!(control_plane.server_url().starts_with("https://127.0.0.1:"));
    Ok(())
}

#[tokio::test]
async fn kubectl_uses_the_written_kubeconfig() -> TestResult {
    let control_plane = testenv::shared().await?;
    let version: serde_json::Value = serde_json::from_str(
        &control_plane
            .run_kubectl(&["version", "-o", "json"])
            .await?,
    )?;
    assert_eq!(
        version["clientVersion"]["gitVersion"],
        pinned_kubernetes_version()
    );
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        pinned_kubernetes_version()
    );

    let whoami: serde_json::Value = serde_json::from_str(
        &control_plane
            .run_kubectl(&["auth", "whoami", "-o", "json"])
            .await?,
    )?;
    assert_eq!(whoami["status"]["userInfo"]["username"], "weblab-admin");
    let groups = whoami["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:masters"), "{groups}");

    // The std::process::Command form works too, for tests that need stdin or streaming.
    let output = control_plane
        .kubectl()
        .args(["get", "namespace", "default", "-o", "name"])
        .output()?;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout)?.trim(),
        "namespace/default"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_is_enforced() -> TestResult {
    let control_plane = testenv::shared().await?;
    let namespace = control_plane.namespace("rbac").await?;
    let ns = namespace.name();
    let user = format!("system:serviceaccount:{ns}:reader");
    let as_reader = control_plane.client_impersonating(&user, &[]).await?;
    let secrets = Api::<Secret>::namespaced(as_reader, ns);

    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden without a RoleBinding, got {other:?}"),
    }

    let admin = control_plane.client().await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("secret-reader".to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            verbs: vec!["list".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("secret-reader".to_owned()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: "secret-reader".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: "reader".to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &binding)
        .await?;

    // The RBAC authorizer reads bindings from an informer: allow it a moment.
    eventually(
        "listing secrets once bound",
        Duration::from_secs(10),
        || async {
            Ok(secrets
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn service_account_tokens_authenticate() -> TestResult {
    let control_plane = testenv::shared().await?;
    let namespace = control_plane.namespace("token").await?;
    let admin = control_plane.client().await?;
    let accounts = Api::<ServiceAccount>::namespaced(admin, namespace.name());
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("robot".to_owned()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request("robot", &PostParams::default(), &request)
        .await?
        .status
        .and_then(|status| status.token)
        .ok_or("TokenRequest has no token")?;

    let as_robot = control_plane.client_with_token(&token).await?;
    let review = Api::<SelfSubjectReview>::all(as_robot)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or("SelfSubjectReview has no username")?;
    assert_eq!(
        username,
        format!("system:serviceaccount:{}:robot", namespace.name())
    );

    let forged = control_plane.client_with_token("not-a-token").await?;
    match Api::<Namespace>::all(forged)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401 for a forged token, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn install_crds_serves_the_schema() -> TestResult {
    let control_plane = testenv::shared().await?;
    control_plane
        .install_crds(format!("{FIXTURES}/widgets-crd.yaml"))
        .await?;
    // Applying again is what a test binary re-run or a second test does.
    control_plane
        .install_crds(format!("{FIXTURES}/widgets-crd.yaml"))
        .await?;

    let namespace = control_plane.namespace("crd").await?;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("testenv.weblab.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets = Api::<DynamicObject>::namespaced_with(
        control_plane.client().await?,
        namespace.name(),
        &resource,
    );
    let widget = |size: serde_json::Value| {
        DynamicObject::new("gear", &resource).data(serde_json::json!({ "spec": { "size": size } }))
    };

    match widgets
        .create(&PostParams::default(), &widget(0.into()))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
        other => panic!("expected the schema's minimum to reject size 0, got {other:?}"),
    }
    widgets
        .create(&PostParams::default(), &widget(3.into()))
        .await?;
    let stored = widgets.get("gear").await?;
    assert_eq!(stored.data["spec"]["size"], 3);
    assert_eq!(stored.name_any(), "gear");
    Ok(())
}

#[tokio::test]
async fn namespace_guard_deletes_its_namespace() -> TestResult {
    let control_plane = testenv::shared().await?;
    let namespaces = Api::<Namespace>::all(control_plane.client().await?);
    let guard = control_plane.namespace("guard").await?;
    let name = guard.name().to_owned();
    assert!(name.starts_with("guard-"));
    let created = namespaces.get(&name).await?;
    assert_eq!(
        created
            .labels()
            .get("weblab.dev/test-namespace")
            .map(String::as_str),
        Some("true")
    );

    drop(guard);

    // Without kube-controller-manager the namespace stays Terminating, so
    // being marked for deletion is what the guard can promise.
    eventually(
        "namespace marked for deletion",
        Duration::from_secs(10),
        || async {
            Ok(match namespaces.get_opt(&name).await? {
                None => Ok(()),
                Some(ns) if ns.metadata.deletion_timestamp.is_some() => Ok(()),
                Some(_) => Err("no deletionTimestamp yet".to_owned()),
            })
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn invalid_namespace_prefix_is_an_error() -> TestResult {
    let control_plane = testenv::shared().await?;
    let result = control_plane.namespace("Not_Valid").await;
    assert!(
        matches!(result, Err(Error::NamespacePrefix(_))),
        "{result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_tools_say_how_to_build_them() -> TestResult {
    let missing = std::env::temp_dir().join("testenv-no-tools-here");
    let result = ControlPlane::start(Options::default().tools_dir(&missing)).await;
    let Err(err) = result else {
        panic!("started without tools");
    };
    assert!(matches!(err, Error::ToolsMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("make tools"), "{message}");
    assert!(
        message.contains("etcd") && message.contains("kube-apiserver"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn helm_talks_to_the_control_plane() -> TestResult {
    let control_plane = testenv::shared().await?;
    let output = control_plane
        .helm()
        .args(["list", "--all-namespaces", "-o", "json"])
        .output()?;
    assert!(
        output.status.success(),
        "helm list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let releases: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(releases, serde_json::json!([]));
    Ok(())
}
