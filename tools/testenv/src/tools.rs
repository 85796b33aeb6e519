//! Locating the pinned tool binaries built by `hack/tools.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Environment variable naming the directory that holds the tool binaries
/// (`etcd`, `kube-apiserver`, `kubectl`, ...). When unset, the harness asks
/// `hack/tools.sh bindir` of the repository it was built from.
pub const TOOLS_BIN_ENV: &str = "WEBLAB_TOOLS_BIN";

/// Binaries every control plane needs.
const CORE: &[&str] = &["etcd", "kube-apiserver", "kubectl"];
/// Binaries needed to run workloads.
const WORKLOADS: &[&str] = &["kube-controller-manager", "kube-scheduler", "kwok"];

/// A directory holding the pinned tool binaries.
#[derive(Debug, Clone)]
pub struct Tools {
    dir: PathBuf,
}

impl Tools {
    /// Finds the tool directory: `dir` if given, else `$WEBLAB_TOOLS_BIN`, else
    /// the output of `hack/tools.sh bindir`. Checks that the binaries needed
    /// (including those for workloads if `workloads`) are there.
    pub fn locate(dir: Option<&Path>, workloads: bool) -> Result<Tools, Error> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => match std::env::var_os(TOOLS_BIN_ENV) {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => bindir_from_script()?,
            },
        };
        let tools = Tools { dir };
        let needed = CORE.iter().chain(if workloads { WORKLOADS } else { &[] });
        let missing: Vec<String> = needed
            .filter(|name| !is_executable(&tools.path(name)))
            .map(|name| (*name).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(tools)
        } else {
            Err(Error::ToolsMissing {
                dir: tools.dir,
                missing,
            })
        }
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one binary, e.g. `tools.path("helm")`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The repository this crate was built from: tools/testenv/../..
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bindir_from_script() -> Result<PathBuf, Error> {
    let script = repo_root().join("hack/tools.sh");
    let fail = |reason: String| Error::ToolsScript {
        script: script.clone(),
        reason,
    };
    let output = Command::new("bash")
        .arg(&script)
        .arg("bindir")
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        return Err(fail(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if dir.is_empty() {
        return Err(fail("it printed nothing".to_owned()));
    }
    Ok(PathBuf::from(dir))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    // metadata() follows the bin dir's symlinks, so a dangling link counts as missing.
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
