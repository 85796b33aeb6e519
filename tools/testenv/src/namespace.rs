//! Per-test namespaces that clean up after themselves.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use rand::RngExt;

use crate::Error;

/// Longest prefix accepted: leaves room for `-` and the random suffix within
/// the 63 characters of a namespace name.
const MAX_PREFIX: usize = 50;
const SUFFIX_LEN: usize = 6;

/// A namespace created for one test. Dropping it asks the API server to
/// delete the namespace and returns without waiting for that to finish.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub(crate) fn new(name: String, kubectl: PathBuf, kubeconfig: PathBuf) -> TestNamespace {
        TestNamespace {
            name,
            kubectl,
            kubeconfig,
        }
    }

    /// `<prefix>-<6 random lowercase letters and digits>`.
    pub(crate) fn random_name(prefix: &str) -> Result<String, Error> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::NamespacePrefix(prefix.to_owned()));
        }
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let suffix: String = (0..SUFFIX_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Ok(format!("{prefix}-{suffix}"))
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for TestNamespace {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and a kube client is tied to the runtime of the
        // test that may be unwinding; kubectl needs neither. --wait=false
        // returns once the deletion is accepted (finalizing it needs the
        // namespace controller, which only runs with workloads), and the
        // request timeout bounds a hung API server.
        let result = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name])
            .args([
                "--wait=false",
                "--ignore-not-found",
                "--request-timeout=10s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => {
                tracing::warn!(namespace = %self.name, %status, "deleting test namespace failed")
            }
            Err(err) => {
                tracing::warn!(namespace = %self.name, %err, "deleting test namespace failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_valid_and_distinct() {
        let a = TestNamespace::random_name("dial").expect("valid prefix");
        let b = TestNamespace::random_name("dial").expect("valid prefix");
        assert_ne!(a, b);
        assert_eq!(a.len(), "dial-".len() + SUFFIX_LEN);
        assert!(a.starts_with("dial-"));
        assert!(
            a[5..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn invalid_prefixes_are_rejected() {
        for prefix in ["", "Dial", "1dial", "dial_x", &"a".repeat(MAX_PREFIX + 1)] {
            assert!(
                matches!(
                    TestNamespace::random_name(prefix),
                    Err(Error::NamespacePrefix(_))
                ),
                "{prefix:?} accepted"
            );
        }
        assert!(TestNamespace::random_name(&"a".repeat(MAX_PREFIX)).is_ok());
    }
}
