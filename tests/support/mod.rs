//! What the integration tests share: this test binary's control plane with
//! the CRDs installed, and helpers to read the repository's manifests.

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use testenv::ControlPlane;
use tokio::sync::OnceCell;

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
    CRDS.get_or_init(|| async {
        plane
            .install_crds(repo_root().join("crds"))
            .await
            .unwrap_or_else(|error| panic!("cannot install crds/: {error}"));
    })
    .await;
    plane
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
    pub async fn start(plane: &ControlPlane, args: &[&str]) -> Operator {
        let port = free_port();
        let log = plane.dir().join(format!("operator-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_weblab-operator"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(plane.kubeconfig_path())
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
    let output = kubectl(
        plane,
        &[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            &format!("weblabdial/{name}"),
            &format!("weblab.dev/action={request}"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
}
