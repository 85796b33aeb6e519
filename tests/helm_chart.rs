//! The Helm chart with the real `helm` and a real control plane that runs
//! workloads (kube-controller-manager, kube-scheduler and kwok's fake nodes,
//! which fake the pods, so the image need not exist): lint, a server-side dry
//! run of what it renders, the values schema, install and upgrade in a
//! namespace that enforces the `restricted` Pod Security Standard.

mod support;

use std::process::Output;

use support::{describe, repo_root};
use testenv::ControlPlane;

async fn plane() -> &'static ControlPlane {
    testenv::shared_with_workloads()
        .await
        .unwrap_or_else(|error| panic!("cannot start the control plane: {error}"))
}

fn chart() -> String {
    repo_root()
        .join("charts/weblab-operator")
        .to_string_lossy()
        .into_owned()
}

async fn helm(plane: &ControlPlane, args: &[&str]) -> Output {
    support::helm(plane, args).await
}

/// `helm template` with `settings` (`--set` values), checked to succeed.
async fn render(plane: &ControlPlane, namespace: &str, settings: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", "weblab", &chart, "--namespace", namespace];
    for setting in settings {
        args.extend(["--set", setting]);
    }
    let output = helm(plane, &args).await;
    assert!(
        output.status.success(),
        "helm template: {}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The `kind`s of a rendered manifest stream.
fn kinds(rendered: &str) -> Vec<String> {
    serde_saphyr::from_multiple::<serde_json::Value>(rendered)
        .expect("helm renders valid YAML")
        .iter()
        .filter_map(|doc| doc["kind"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_chart_lints_with_defaults_and_with_every_option_on() {
    let plane = plane().await;
    let chart = chart();
    let lint = helm(plane, &["lint", "--strict", &chart]).await;
    assert!(lint.status.success(), "{}", describe(&lint));
    let everything = helm(
        plane,
        &[
            "lint",
            "--strict",
            &chart,
            "--set",
            "networkPolicy.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true",
            "--set",
            "watchNamespaces={team-a,team-b},rbac.secrets.resourceNames={gitlab-token}",
            "--set",
            "rbac.gitops.enabled=true,rbac.gitops.namespaces={argocd,flux-system}",
            "--set",
            "alertmanagerWebhook.namespaceLabel=namespace,alertmanagerWebhook.recordTimeout=3s",
        ],
    )
    .await;
    assert!(everything.status.success(), "{}", describe(&everything));
    let confined = render(
        plane,
        "ops",
        &["alertmanagerWebhook.namespaceLabel=namespace"],
    )
    .await;
    assert!(
        confined.contains("- --alertmanager-namespace-label=namespace"),
        "{confined}"
    );
    assert!(
        !render(plane, "ops", &[])
            .await
            .contains("--alertmanager-namespace-label"),
        "alarms match alerts of any namespace by default"
    );
}

#[tokio::test]
async fn what_the_chart_renders_passes_a_server_side_dry_run() {
    let plane = plane().await;
    let ns = plane.namespace("helm-dry").await.expect("namespace");
    let team = plane.namespace("helm-team").await.expect("namespace");
    for settings in [
        vec![],
        vec!["networkPolicy.enabled=true".to_owned()],
        // Watched namespaces: RoleBindings there instead of cluster-wide ones.
        vec![format!("watchNamespaces={{{}}}", team.name())],
        // Rollback rights in a listed namespace, or everywhere.
        vec![format!("rbac.rollback.namespaces={{{}}}", team.name())],
        vec!["rbac.rollback.clusterWide=true".to_owned()],
        // GitOps rights in a listed namespace.
        vec![format!(
            "rbac.gitops.enabled=true,rbac.gitops.namespaces={{{}}}",
            team.name()
        )],
    ] {
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        let rendered = render(plane, ns.name(), &settings).await;
        let path = plane.dir().join(format!("rendered-{}.yaml", ns.name()));
        std::fs::write(&path, &rendered).expect("write");
        let applied = support::kubectl(
            plane,
            &["apply", "--dry-run=server", "-f", &path.to_string_lossy()],
        )
        .await;
        assert!(
            applied.status.success(),
            "{settings:?}: {}",
            describe(&applied)
        );
    }
}

#[tokio::test]
async fn optional_objects_are_rendered_only_when_enabled() {
    let plane = plane().await;
    let defaults = kinds(&render(plane, "ops", &[]).await);
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            !defaults.iter().any(|k| k == kind),
            "{kind} in {defaults:?}"
        );
    }
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ConfigMap",
        "ClusterRole",
        "Role",
    ] {
        assert!(
            defaults.iter().any(|k| k == kind),
            "{kind} not in {defaults:?}"
        );
    }
    let enabled = kinds(
        &render(
            plane,
            "ops",
            &["networkPolicy.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true"],
        )
        .await,
    );
    for kind in ["NetworkPolicy", "ServiceMonitor", "PrometheusRule"] {
        assert!(
            enabled.iter().any(|k| k == kind),
            "{kind} not in {enabled:?}"
        );
    }
    let without = kinds(
        &render(
            plane,
            "ops",
            &["podDisruptionBudget.enabled=false,grafanaDashboard.enabled=false,rbac.rollback.enabled=false,networkPolicy.enabled=false"],
        )
        .await,
    );
    assert!(
        !without
            .iter()
            .any(|k| k == "PodDisruptionBudget" || k == "ConfigMap" || k == "NetworkPolicy")
    );
}

#[tokio::test]
async fn by_default_egress_is_limited_and_the_allowlist_reaches_the_flag() {
    let plane = plane().await;
    let rendered = render(
        plane,
        "ops",
        &["outbound.allowUrlPrefixes={http://prometheus.monitoring.svc:9090/}"],
    )
    .await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).expect("YAML");
    let policy = docs
        .iter()
        .find(|doc| doc["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy by default");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().expect("egress rules");
    let ports: Vec<&serde_json::Value> = egress
        .iter()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .map(|port| &port["port"])
        .collect();
    for port in [53, 443, 6443] {
        assert!(ports.contains(&&serde_json::json!(port)), "{egress:?}");
    }
    // Without a lookup (helm template), the API server rule still keeps
    // loopback and link-local (cloud metadata) addresses out.
    let except = &egress[1]["to"][0]["ipBlock"]["except"];
    assert_eq!(
        except,
        &serde_json::json!(["127.0.0.0/8", "169.254.0.0/16"]),
        "{egress:?}"
    );
    let deployment = docs
        .iter()
        .find(|doc| doc["kind"] == "Deployment")
        .expect("the Deployment");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .is_some_and(|args| args.contains(&serde_json::json!(
                "--allow-outbound-url-prefix=http://prometheus.monitoring.svc:9090/"
            ))),
        "{args}"
    );
}

#[tokio::test]
async fn the_dashboard_shows_each_metric_the_issue_asks_for() {
    let plane = plane().await;
    let rendered = render(plane, "ops", &[]).await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).expect("YAML");
    let config_map = docs
        .iter()
        .find(|doc| doc["kind"] == "ConfigMap")
        .expect("the dashboard ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = config_map["data"]["weblab-operator.json"]
        .as_str()
        .expect("dashboard JSON");
    let dashboard: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .filter_map(|target| target["expr"].as_str())
        .collect();
    // Names the operator exports (src/metrics.rs) and the ones the alarm
    // controller and the assignment API export.
    for metric in [
        "weblab_dials",
        "weblab_transitions_total",
        "weblab_alarms",
        "weblab_reconcile_errors_total",
        "weblab_assignment_request_duration_seconds_bucket",
        "weblab_notifications_total",
    ] {
        assert!(
            exprs
                .iter()
                .any(|expr| expr.contains(&format!("{metric}{{"))),
            "no panel queries {metric}: {exprs:#?}"
        );
    }
}

#[tokio::test]
async fn the_api_server_write_limits_reach_the_flags() {
    let plane = plane().await;
    let rendered = render(
        plane,
        "ops",
        &["apiServer.writesPerSecond=20", "apiServer.writeBurst=40"],
    )
    .await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).expect("YAML");
    let deployment = docs
        .iter()
        .find(|doc| doc["kind"] == "Deployment")
        .expect("the Deployment");
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    for flag in ["--api-writes-per-second=20", "--api-write-burst=40"] {
        assert!(
            args.as_array()
                .is_some_and(|args| args.contains(&serde_json::json!(flag))),
            "{flag} missing: {args}"
        );
    }
}

#[tokio::test]
async fn bad_values_fail_with_a_message_naming_the_value() {
    let plane = plane().await;
    let chart = chart();
    for (setting, expected) in [
        ("replicaCount=0", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces={Team_A}", "watchNamespaces"),
        ("rbac.rollback.namespaces={Team_A}", "namespaces"),
        ("rbac.rollback.clusterWide=yes", "clusterWide"),
        ("rbac.gitops.namespaces={Argo_CD}", "namespaces"),
        ("rbac.gitops.enabled=yes", "enabled"),
        ("podDisruptionBudget.minAvailable=half", "minAvailable"),
        ("replicas=3", "replicas"),
        ("serviceMonitor.interval=soon", "interval"),
        (
            "outbound.allowUrlPrefixes={ftp://files}",
            "allowUrlPrefixes",
        ),
        ("networkPolicy.egress.apiServer.cidrs={kubernetes}", "cidrs"),
        (
            "alertmanagerWebhook.namespaceLabel=name-space",
            "namespaceLabel",
        ),
        ("alertmanagerWebhook.recordTimeout=soon", "recordTimeout"),
        ("apiServer.writesPerSecond=0", "writesPerSecond"),
        ("apiServer.writeBurst=many", "writeBurst"),
        (
            "leaderElection.enabled=false",
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            "podDisruptionBudget.minAvailable=2",
            "minAvailable must be below replicaCount",
        ),
    ] {
        let output = helm(plane, &["template", "weblab", &chart, "--set", setting]).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{setting}: expected a failure naming {expected:?}: {}",
            describe(&output)
        );
    }
}

#[tokio::test]
async fn install_and_upgrade_roll_out_under_the_restricted_pod_security_standard() {
    let plane = plane().await;
    let ns = plane.namespace("helm-install").await.expect("namespace");
    let labelled = support::kubectl(
        plane,
        &[
            "label",
            "namespace",
            ns.name(),
            "pod-security.kubernetes.io/enforce=restricted",
        ],
    )
    .await;
    assert!(labelled.status.success(), "{}", describe(&labelled));
    let chart = chart();
    let release = "weblab";
    let deployment = format!("deployment/{release}-weblab-operator");

    let installed = helm(
        plane,
        &[
            "install",
            release,
            &chart,
            "--namespace",
            ns.name(),
            "--wait",
            "--timeout=180s",
        ],
    )
    .await;
    assert!(
        installed.status.success(),
        "helm install: {}",
        describe(&installed)
    );
    // The chart's crds/ were installed with it.
    let crd = support::kubectl(plane, &["get", "crd", "weblabdials.weblab.dev"]).await;
    assert!(crd.status.success(), "{}", describe(&crd));
    let available = support::kubectl(
        plane,
        &[
            "wait",
            "-n",
            ns.name(),
            "--for=condition=Available",
            "--timeout=120s",
            &deployment,
        ],
    )
    .await;
    assert!(available.status.success(), "{}", describe(&available));
    let replicas = support::kubectl(
        plane,
        &[
            "get",
            "-n",
            ns.name(),
            &deployment,
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&replicas.stdout), "2");

    let upgraded = helm(
        plane,
        &[
            "upgrade",
            release,
            &chart,
            "--namespace",
            ns.name(),
            "--set",
            "replicaCount=3,logFormat=text",
            "--wait",
            "--timeout=180s",
        ],
    )
    .await;
    assert!(
        upgraded.status.success(),
        "helm upgrade: {}",
        describe(&upgraded)
    );
    let rolled = support::kubectl(
        plane,
        &[
            "rollout",
            "status",
            "-n",
            ns.name(),
            "--timeout=120s",
            &deployment,
        ],
    )
    .await;
    assert!(rolled.status.success(), "{}", describe(&rolled));
    let state = support::kubectl(
        plane,
        &[
            "get",
            "-n",
            ns.name(),
            &deployment,
            "-o",
            "jsonpath={.status.availableReplicas} {.spec.template.spec.containers[0].args}",
        ],
    )
    .await;
    let state = String::from_utf8_lossy(&state.stdout).into_owned();
    assert!(
        state.starts_with("3 ") && state.contains("--log-format=text"),
        "after the upgrade: {state}"
    );
    let history = helm(plane, &["history", release, "--namespace", ns.name()]).await;
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert!(
        history.contains("superseded") && history.contains("deployed"),
        "{history}"
    );
    let uninstalled = helm(plane, &["uninstall", release, "--namespace", ns.name()]).await;
    assert!(uninstalled.status.success(), "{}", describe(&uninstalled));
}

/// The real `promtool` (Debian's `prometheus` package) checks the
/// PrometheusRule's alerts and, written as recording rules, every PromQL
/// query of the dashboard.
#[tokio::test]
async fn the_alerts_and_the_dashboard_queries_are_valid_promql() {
    let plane = plane().await;
    let rendered = render(plane, "ops", &["prometheusRule.enabled=true"]).await;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&rendered).expect("YAML");
    let rule = docs
        .iter()
        .find(|doc| doc["kind"] == "PrometheusRule")
        .expect("the PrometheusRule");
    let dashboard = docs
        .iter()
        .find(|doc| doc["kind"] == "ConfigMap")
        .and_then(|doc| doc["data"]["weblab-operator.json"].as_str())
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(dashboard).expect("JSON");
    // Grafana's variables, replaced by what Grafana would put there.
    let queries: Vec<serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .enumerate()
        .map(|(i, expr)| {
            let expr = expr
                .replace("$__rate_interval", "2m")
                .replace("$namespace", ".*");
            serde_json::json!({"record": format!("dashboard:query{i}"), "expr": expr})
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    let mut groups = rule["spec"]["groups"].as_array().expect("groups").clone();
    groups.push(serde_json::json!({"name": "dashboard", "rules": queries}));
    // JSON is YAML, which promtool reads.
    let file = plane.dir().join("rules.json");
    std::fs::write(&file, serde_json::json!({"groups": groups}).to_string()).expect("write");
    let output = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run promtool (hack/prereqs.sh installs it): {error}")
        });
    assert!(output.status.success(), "{}", describe(&output));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("SUCCESS"), "{report}");
}
