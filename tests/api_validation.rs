//! The API as the API server enforces it: every example is accepted, every
//! invalid manifest is rejected with a message naming the field and the rule,
//! and what is stored reads back into the Rust types unchanged.

mod support;

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Resource, core::object::HasSpec};
use serde::de::DeserializeOwned;
use support::{control_plane, describe, documents, kubectl, yaml_files};
use weblab_operator::api::{
    Alarm, ChangeWindow, MergeTrainException, MergeTrainPause, Rollback, WeblabDial, WeblabNotifier,
};

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let plane = control_plane().await;
    let namespace = plane.namespace("examples").await.expect("namespace");
    let examples = yaml_files("examples");
    assert!(examples.len() >= 5, "one example per kind at least");
    for example in &examples {
        let file = example.to_string_lossy();
        for dry_run in [true, false] {
            let mut args = vec!["apply", "-n", namespace.name(), "-f", &file];
            if dry_run {
                args.push("--dry-run=server");
            }
            let output = kubectl(plane, &args).await;
            assert!(
                output.status.success(),
                "{file} (dry run: {dry_run}) was rejected: {}",
                describe(&output)
            );
        }
    }

    // The shared category lists every kind.
    let output = kubectl(
        plane,
        &["get", "weblab", "-n", namespace.name(), "-o", "name"],
    )
    .await;
    let listed = String::from_utf8_lossy(&output.stdout);
    for kind in [
        "weblabdial",
        "alarm",
        "rollback",
        "mergetrainpause",
        "changewindow",
        "mergetrainexception",
        "weblabnotifier",
    ] {
        assert!(
            listed.contains(&format!("{kind}.weblab.dev/")),
            "`kubectl get weblab` does not list {kind}: {listed}"
        );
    }
}

/// `make demo`'s own manifests (hack/demo/), with its `@NAME@` placeholders
/// filled in as hack/demo.sh does, are accepted too.
#[tokio::test]
async fn the_demo_manifests_are_accepted_by_the_api_server() {
    let plane = control_plane().await;
    let namespace = plane.namespace("demo-manifests").await.expect("namespace");
    let values = [
        ("@PROMETHEUS_URL@", "http://127.0.0.1:9090"),
        ("@GITLAB_URL@", "http://127.0.0.1:9091"),
        ("@MERGE_QUEUE_URL@", "http://127.0.0.1:9092/webhook"),
        ("@NAMESPACE@", namespace.name()),
        ("@REGION@", "prodNA"),
        ("@VERSION@", "3.240.0"),
    ];
    let manifests = yaml_files("hack/demo");
    assert!(manifests.len() >= 6, "{manifests:?}");
    let dir = testenv::TempDir::new().expect("a temporary directory");
    for manifest in &manifests {
        let mut text = std::fs::read_to_string(manifest).expect("readable");
        for (placeholder, value) in values {
            text = text.replace(placeholder, value);
        }
        assert!(
            !text.contains('@'),
            "{} has an unknown placeholder",
            manifest.display()
        );
        let rendered = dir.path().join(manifest.file_name().expect("a file name"));
        std::fs::write(&rendered, text).expect("written");
        let file = rendered.to_string_lossy();
        let output = kubectl(plane, &["apply", "-n", namespace.name(), "-f", &file]).await;
        assert!(
            output.status.success(),
            "{} was rejected: {}",
            manifest.display(),
            describe(&output)
        );
    }
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_the_field_and_the_rule() {
    let plane = control_plane().await;
    let namespace = plane.namespace("invalid").await.expect("namespace");
    let cases = yaml_files("tests/invalid");
    assert!(cases.len() >= 20, "at least 20 invalid manifests");
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("readable");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            case.display()
        );
        let file = case.to_string_lossy();
        let output = kubectl(
            plane,
            &[
                "apply",
                "--dry-run=server",
                "-n",
                namespace.name(),
                "-f",
                &file,
            ],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{file}: accepted, but must be rejected"));
            continue;
        }
        for fragment in expected {
            if !stderr.contains(fragment) {
                failures.push(format!(
                    "{file}: message lacks {fragment:?}; got: {}",
                    stderr.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn examples_read_back_into_the_rust_types_unchanged() {
    let plane = control_plane().await;
    let namespace = plane.namespace("roundtrip").await.expect("namespace");
    let client = plane.client().await.expect("client");
    let mut checked = 0;
    for example in yaml_files("examples") {
        let file = example.to_string_lossy();
        let output = kubectl(plane, &["apply", "-n", namespace.name(), "-f", &file]).await;
        assert!(output.status.success(), "{file}: {}", describe(&output));
        for document in documents(&example) {
            let api_version = document["apiVersion"].as_str().unwrap_or_default();
            if api_version != "weblab.dev/v1alpha1" {
                continue;
            }
            let ns = namespace.name();
            match document["kind"].as_str().unwrap_or_default() {
                "WeblabDial" => same_spec::<WeblabDial>(&client, ns, &document).await,
                "Alarm" => same_spec::<Alarm>(&client, ns, &document).await,
                "Rollback" => same_spec::<Rollback>(&client, ns, &document).await,
                "MergeTrainPause" => same_spec::<MergeTrainPause>(&client, ns, &document).await,
                "ChangeWindow" => same_spec::<ChangeWindow>(&client, ns, &document).await,
                "MergeTrainException" => {
                    same_spec::<MergeTrainException>(&client, ns, &document).await;
                }
                "WeblabNotifier" => same_spec::<WeblabNotifier>(&client, ns, &document).await,
                other => panic!("{file}: unknown kind {other}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "checked {checked} objects");
}

/// The object as written in the manifest and as the API server stores it
/// (with its defaults applied) deserialize to the same spec.
async fn same_spec<K>(client: &kube::Client, namespace: &str, manifest: &serde_json::Value)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + HasSpec
        + DeserializeOwned
        + Clone
        + Debug,
    K::Spec: PartialEq + Debug,
{
    let local: K = serde_json::from_value(manifest.clone())
        .unwrap_or_else(|error| panic!("manifest does not deserialize: {error}\n{manifest:#}"));
    let name = manifest["metadata"]["name"].as_str().expect("named");
    let stored = Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|error| panic!("cannot read back {name}: {error}"));
    assert_eq!(
        stored.spec(),
        local.spec(),
        "{name} changed on its way through the API server"
    );
}
