//! What the integration tests share: this test binary's control plane with
//! the CRDs installed, and helpers to read the repository's manifests.

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use testenv::ControlPlane;
use tokio::sync::OnceCell;

pub mod sinks;
pub mod throttling_proxy;
pub mod workloads;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// This test binary's control plane, with `crds/` installed and established.
pub async fn control_plane() -> &'static ControlPlane {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let plane = testenv::shared()
        .await
        .unwrap_or_else(|error| panic!("cannot start the control plane: {error}"));
    install_crds_once(plane, &CRDS).await;
    plane
}

/// Installs `crds/` on `plane` the first time `installed` is seen.
pub async fn install_crds_once(plane: &ControlPlane, installed: &OnceCell<()>) {
    installed
        .get_or_init(|| async {
            plane
                .install_crds(repo_root().join("crds"))
                .await
                .unwrap_or_else(|error| panic!("cannot install crds/: {error}"));
        })
        .await;
}

/// The `.yaml` files of a repository directory, sorted.
pub fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|error| panic!("cannot list {dir}: {error}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every YAML document of a file, as JSON values.
pub fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", path.display()))
}

/// Runs kubectl against `plane` and returns its output, whatever the exit.
pub async fn kubectl(plane: &ControlPlane, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(plane.kubectl());
    command.args(args).kill_on_drop(true);
    command.output().await.expect("kubectl runs")
}

/// Text of an output's stdout and stderr, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh namespace and an operator watching only it: the usual start of
/// a test.
pub async fn operator_for_new_namespace(
    plane: &ControlPlane,
    prefix: &str,
) -> (testenv::TestNamespace, Operator) {
    let namespace = plane.namespace(prefix).await.expect("namespace");
    let operator = Operator::start(plane, &["--namespace", namespace.name()]).await;
    (namespace, operator)
}

/// A `weblab-operator run` process against a control plane, killed when
/// dropped. Its log is kept in the control plane's directory.
pub struct Operator {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The log file.
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl Operator {
    /// Starts the operator with `args` added to `run --kubeconfig ... --listen ...`
    /// and waits until `/readyz` answers 200.
    ///
    /// With `WEBLAB_TEST_OPERATOR_IDENTITY=chart` in the environment it runs
    /// as the Helm chart's ServiceAccount (see [`chart_identity`]), so any
    /// test binary can be run to prove the chart's RBAC.
    pub async fn start(plane: &ControlPlane, args: &[&str]) -> Operator {
        // The chart grants one Lease, its own: a test that picks another
        // Lease runs as the admin.
        let own_lease = args
            .iter()
            .any(|arg| arg.starts_with("--lease-name") || arg.starts_with("--lease-namespace"));
        if std::env::var("WEBLAB_TEST_OPERATOR_IDENTITY").as_deref() == Ok("chart") && !own_lease {
            let identity = chart_identity(plane).await;
            return Operator::start_as(plane, identity, args).await;
        }
        Operator::start_with_kubeconfig(plane, plane.kubeconfig_path(), args).await
    }

    /// Starts the operator as the chart's ServiceAccount: its token in the
    /// kubeconfig, its Lease namespace for `--leader-election`.
    pub async fn start_as(
        plane: &ControlPlane,
        identity: &ChartIdentity,
        args: &[&str],
    ) -> Operator {
        let mut all = vec!["--lease-namespace", identity.namespace.as_str()];
        all.extend_from_slice(args);
        Operator::start_with_kubeconfig(plane, &identity.kubeconfig, &all).await
    }

    /// Starts the operator with `kubeconfig` and `args`, allowed to reach
    /// the tests' servers on loopback ([`ALLOW_LOOPBACK`]), and waits until
    /// `/readyz` answers 200.
    pub async fn start_with_kubeconfig(
        plane: &ControlPlane,
        kubeconfig: &Path,
        args: &[&str],
    ) -> Operator {
        let mut all = ALLOW_LOOPBACK.to_vec();
        all.extend_from_slice(args);
        Operator::spawn(plane, kubeconfig, &all).await
    }

    /// Starts the operator with `args` and no outbound allowance, as an
    /// installation without `--allow-outbound-url-prefix` runs.
    pub async fn start_strict(plane: &ControlPlane, args: &[&str]) -> Operator {
        Operator::spawn(plane, plane.kubeconfig_path(), args).await
    }

    async fn spawn(plane: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Operator {
        let port = free_port();
        let log = plane.dir().join(format!("operator-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weblab-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info,weblab_operator=debug")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the operator starts");
        let operator = Operator {
            base: format!("http://127.0.0.1:{port}"),
            log,
            child,
        };
        let ready = eventually(std::time::Duration::from_secs(60), || async {
            matches!(operator.get("/readyz").await, Some((200, _)))
        })
        .await;
        assert!(
            ready,
            "the operator never became ready; log:\n{}",
            operator.logs()
        );
        operator
    }

    /// GET `path`: the status and body, or `None` when nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = http()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends SIGKILL and waits for the process to be gone: a crash, with no
    /// chance to release the lease.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL is delivered");
    }

    /// Sends SIGTERM and waits (up to 20 s) for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(signalled.success());
        tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20s of SIGTERM")
            .expect("exit status")
    }

    /// What the operator logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The tests' Prometheus, GitLab contract server and webhook receivers
/// listen on loopback, which outbound calls refuse unless an administrator
/// allows it: every test operator but [`Operator::start_strict`] is.
pub const ALLOW_LOOPBACK: [&str; 2] = ["--allow-outbound-url-prefix", "http://127.0.0.1:"];

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Polls `check` every 100 ms until it holds or `within` has passed.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `kubectl apply -n namespace -f -` with `yaml` on standard input.
pub async fn apply_yaml(plane: &ControlPlane, namespace: &str, yaml: &str) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::from(plane.kubectl());
    command
        .args(["apply", "-n", namespace, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("kubectl runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(yaml.as_bytes())
        .await
        .expect("writes the manifest");
    drop(stdin);
    let output = child.wait_with_output().await.expect("kubectl finishes");
    assert!(
        output.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        describe(&output)
    );
}

/// An HTTP client for talking to the operator and the test's own servers.
pub fn http() -> reqwest::Client {
    weblab_operator::outbound::client(std::time::Duration::from_secs(30)).expect("an HTTP client")
}

/// Asks the operator for a manual action on a dial, as a person would: the
/// `weblab.dev/action` annotation, set with real kubectl.
pub async fn annotate(plane: &ControlPlane, namespace: &str, name: &str, request: &str) {
    request_action(plane, namespace, &format!("weblabdial/{name}"), request).await;
}

/// The `weblab.dev/action` annotation on `object` (`kind/name`), set with
/// real kubectl.
pub async fn request_action(plane: &ControlPlane, namespace: &str, object: &str, request: &str) {
    let output = kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            object,
            &format!("weblab.dev/action={request}"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
}

/// The release name and namespace under which the chart's RBAC is installed
/// for [`chart_identity`].
pub const CHART_RELEASE: &str = "weblab-operator";
/// See [`CHART_RELEASE`].
pub const CHART_NAMESPACE: &str = "weblab-system";

/// The Helm chart's ServiceAccount, as a kubeconfig the operator can run with.
pub struct ChartIdentity {
    /// A kubeconfig holding a TokenRequest token of the ServiceAccount.
    pub kubeconfig: PathBuf,
    /// The release namespace (the leader Lease's).
    pub namespace: String,
    /// `system:serviceaccount:<namespace>:<name>`, for `kubectl auth can-i --as`.
    pub user: String,
}

/// The chart's ServiceAccount and RBAC (rendered by the real `helm template`
/// with default values, i.e. every namespace watched), applied once per
/// control plane, and a kubeconfig with a token for that ServiceAccount
/// obtained through the TokenRequest API.
pub async fn chart_identity(plane: &ControlPlane) -> &'static ChartIdentity {
    static IDENTITY: OnceCell<ChartIdentity> = OnceCell::const_new();
    IDENTITY
        .get_or_init(|| async {
            let rendered = helm(
                plane,
                &[
                    "template",
                    CHART_RELEASE,
                    &repo_root().join("charts/weblab-operator").to_string_lossy(),
                    "--namespace",
                    CHART_NAMESPACE,
                    "--show-only",
                    "templates/serviceaccount.yaml",
                    "--show-only",
                    "templates/rbac.yaml",
                ],
            )
            .await;
            assert!(
                rendered.status.success(),
                "helm template: {}",
                describe(&rendered)
            );
            let existing = kubectl(plane, &["get", "namespace", CHART_NAMESPACE]).await;
            if !existing.status.success() {
                let created = kubectl(plane, &["create", "namespace", CHART_NAMESPACE]).await;
                assert!(created.status.success(), "{}", describe(&created));
            }
            apply_yaml(
                plane,
                CHART_NAMESPACE,
                &String::from_utf8_lossy(&rendered.stdout),
            )
            .await;
            let token = kubectl(
                plane,
                &[
                    "create",
                    "token",
                    CHART_RELEASE,
                    "-n",
                    CHART_NAMESPACE,
                    "--duration=24h",
                ],
            )
            .await;
            assert!(token.status.success(), "TokenRequest: {}", describe(&token));
            let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
            let kubeconfig = token_kubeconfig(plane, "chart-identity", &token);
            ChartIdentity {
                kubeconfig,
                namespace: CHART_NAMESPACE.to_owned(),
                user: format!("system:serviceaccount:{CHART_NAMESPACE}:{CHART_RELEASE}"),
            }
        })
        .await
}

/// Runs the harness's helm (isolated home, this control plane) with `args`.
pub async fn helm(plane: &ControlPlane, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(plane.helm());
    command.args(args).kill_on_drop(true);
    command.output().await.expect("helm runs")
}

/// The Alertmanager webhook token of [`operator_with_webhook`].
pub const WEBHOOK_TOKEN: &str = "alertmanager-to-weblab-7c1e";

/// A fresh namespace holding the webhook token Secret, and an operator
/// watching it that takes its Alertmanager webhook token from there.
pub async fn operator_with_webhook(
    plane: &ControlPlane,
    prefix: &str,
) -> (testenv::TestNamespace, Operator) {
    operator_with_webhook_args(plane, prefix, &[]).await
}

/// [`operator_with_webhook`] with `args` added to the operator's.
pub async fn operator_with_webhook_args(
    plane: &ControlPlane,
    prefix: &str,
    args: &[&str],
) -> (testenv::TestNamespace, Operator) {
    let namespace = plane.namespace(prefix).await.expect("namespace");
    apply_yaml(
        plane,
        namespace.name(),
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: weblab-webhook\nstringData:\n  token: {WEBHOOK_TOKEN}\n"
        ),
    )
    .await;
    let secret = format!("{}/weblab-webhook", namespace.name());
    let mut all = vec![
        "--namespace",
        namespace.name(),
        "--webhook-token-secret",
        &secret,
    ];
    all.extend_from_slice(args);
    let operator = Operator::start(plane, &all).await;
    (namespace, operator)
}

/// Pushes one alert named `alertname` (`firing` or `resolved`) to the
/// operator's webhook as Alertmanager would (payload version 4), until the
/// operator has recorded it on at least one alarm (the alarm may reach the
/// operator's cache a moment after it was applied).
pub async fn push_alert(operator: &Operator, alertname: &str, status: &str) {
    push_alert_with_token(operator, WEBHOOK_TOKEN, alertname, status).await;
}

/// [`push_alert`] to an operator whose webhook takes `token`.
pub async fn push_alert_with_token(
    operator: &Operator,
    token: &str,
    alertname: &str,
    status: &str,
) {
    let notification = serde_json::json!({
        "version": "4", "status": status, "receiver": "weblab", "groupKey": "{}",
        "alerts": [{"status": status, "labels": {"alertname": alertname},
                    "fingerprint": format!("test-{alertname}")}]
    });
    let client = http();
    let recorded = eventually(std::time::Duration::from_secs(30), || async {
        let Ok(response) = client
            .post(format!("{}/v1/webhooks/alertmanager", operator.base))
            .bearer_auth(token)
            .json(&notification)
            .send()
            .await
        else {
            return false;
        };
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        answer["alarms"].as_u64().is_some_and(|alarms| alarms > 0)
    })
    .await;
    assert!(
        recorded,
        "the operator never recorded {alertname} {status}:\n{}",
        operator.logs()
    );
}

/// A kubeconfig for this control plane that authenticates with `token`,
/// written as `<name>.kubeconfig` in the plane's directory.
pub fn token_kubeconfig(plane: &ControlPlane, name: &str, token: &str) -> PathBuf {
    let ca = plane.dir().join(format!("{name}-ca.pem"));
    std::fs::write(&ca, plane.ca_pem()).expect("write the CA");
    let kubeconfig = plane.dir().join(format!("{name}.kubeconfig"));
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: plane
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: {name}
    user:
      token: {token}
contexts:
  - name: {name}
    context:
      cluster: plane
      user: {name}
current-context: {name}
",
        server = plane.server_url(),
        ca = ca.display(),
    );
    std::fs::write(&kubeconfig, yaml).expect("write the kubeconfig");
    kubeconfig
}

/// A client acting as a tenant of `namespace`: a ServiceAccount there whose
/// Role lets it manage the five kinds, Secrets and read events in that
/// namespace only, authenticated with a TokenRequest token. Security tests
/// create their objects through it, as an untrusted team would.
pub async fn tenant_client(plane: &ControlPlane, namespace: &str) -> kube::Client {
    let manifest = "apiVersion: v1
kind: ServiceAccount
metadata:
  name: tenant
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: tenant
rules:
  - apiGroups: [weblab.dev]
    resources: [weblabdials, alarms, mergetrainpauses, changewindows, rollbacks]
    verbs: [get, list, watch, create, update, patch, delete]
  - apiGroups: ['']
    resources: [secrets]
    verbs: [get, list, create, update, patch, delete]
  - apiGroups: ['', events.k8s.io]
    resources: [events]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: tenant
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: tenant
subjects:
  - kind: ServiceAccount
    name: tenant
";
    apply_yaml(plane, namespace, manifest).await;
    let token = kubectl(
        plane,
        &[
            "create",
            "token",
            "tenant",
            "-n",
            namespace,
            "--duration=1h",
        ],
    )
    .await;
    assert!(token.status.success(), "TokenRequest: {}", describe(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let path = token_kubeconfig(plane, &format!("tenant-{namespace}"), &token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client configuration");
    kube::Client::try_from(config).expect("a client")
}
