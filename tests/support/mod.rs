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
