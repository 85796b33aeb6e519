//! Clients for regions in other clusters, built from a kubeconfig stored in
//! a Secret and cached by the Secret's `resourceVersion`: a rotated
//! kubeconfig is picked up at the next look, an unchanged one costs one GET.
//!
//! The kubeconfig comes from a tenant, and a kubeconfig can tell its reader
//! to run a command (`exec`, `auth-provider`), to read a file (`tokenFile`,
//! certificate and key paths: inside the operator's pod that is its own
//! ServiceAccount token) or to send the traffic through a proxy. Only
//! inline credentials are accepted; an administrator may allow exec plugins
//! with `--insecure-kubeconfig-exec`, never files or proxies.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::api::common::SecretKeyRef;

/// How long a call to another cluster may take before it counts as failed.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// (namespace, Secret name, key) -> (the Secret's resourceVersion, client).
type Cache = HashMap<(String, String, String), (String, Client)>;

/// Why a kubeconfig Secret gave no client. `secret` is `namespace/name`.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The API server did not answer the read of the Secret.
    #[error("cannot read kubeconfig Secret {secret}: {source}")]
    Read {
        /// The Secret.
        secret: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret does not exist.
    #[error("kubeconfig Secret {secret} not found")]
    NotFound {
        /// The Secret.
        secret: String,
    },
    /// The Secret has no such key, or it is not text.
    #[error("kubeconfig Secret {secret} has no UTF-8 key {key:?}")]
    NoKey {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// The text is not a kubeconfig, or names no usable context.
    #[error("the kubeconfig in Secret {secret} is not usable: {why}")]
    Invalid {
        /// The Secret.
        secret: String,
        /// What kube found wrong, without the Secret's text.
        why: String,
    },
    /// It asks for what a tenant's kubeconfig may not.
    #[error(
        "the kubeconfig in Secret {secret} uses {fields}, which the operator refuses: only inline credentials are accepted (server, token, client-certificate-data, client-key-data, certificate-authority-data, insecure-skip-tls-verify)"
    )]
    Refused {
        /// The Secret.
        secret: String,
        /// The refused fields, in words.
        fields: String,
    },
    /// No client could be built from it (e.g. bad certificate data).
    #[error("cannot build a client from the kubeconfig in Secret {secret}: {source}")]
    Client {
        /// The Secret.
        secret: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

impl KubeconfigError {
    /// The condition and event reason when a person must fix the Secret;
    /// `None` when the API server may answer next time.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            KubeconfigError::Read { .. } => None,
            KubeconfigError::NotFound { .. } | KubeconfigError::NoKey { .. } => {
                Some("KubeconfigNotFound")
            }
            KubeconfigError::Invalid { .. } | KubeconfigError::Client { .. } => {
                Some("KubeconfigInvalid")
            }
            KubeconfigError::Refused { .. } => Some("KubeconfigRefused"),
        }
    }
}

/// The fields of `kubeconfig` that would make the operator run a command,
/// read a file of its own or send its traffic through a proxy, in every
/// cluster and user (not only the current context's: a refusal should not
/// depend on which entry is current). `allow_exec` lets exec plugins pass.
pub fn refused_fields(kubeconfig: &Kubeconfig, allow_exec: bool) -> Vec<&'static str> {
    let mut refused = Vec::new();
    let mut refuse = |field: &'static str| {
        if !refused.contains(&field) {
            refused.push(field);
        }
    };
    for cluster in kubeconfig
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
    {
        if cluster.certificate_authority.is_some() {
            refuse("certificate-authority (a file)");
        }
        if cluster.proxy_url.is_some() {
            refuse("proxy-url");
        }
    }
    for user in kubeconfig
        .auth_infos
        .iter()
        .filter_map(|u| u.auth_info.as_ref())
    {
        if user.exec.is_some() && !allow_exec {
            refuse("exec (a command; allowed only with --insecure-kubeconfig-exec)");
        }
        if user.auth_provider.is_some() {
            refuse("auth-provider");
        }
        if user.token_file.is_some() {
            refuse("tokenFile (a file)");
        }
        if user.client_certificate.is_some() {
            refuse("client-certificate (a file)");
        }
        if user.client_key.is_some() {
            refuse("client-key (a file)");
        }
    }
    refused
}

/// The cache of clients for other clusters.
pub struct Clusters {
    cache: Mutex<Cache>,
    /// `--insecure-kubeconfig-exec`: exec plugins are run.
    allow_exec: bool,
}

impl Clusters {
    /// Clients for other clusters; `allow_exec` lets kubeconfigs run exec
    /// plugins (an administrator's choice).
    pub fn new(allow_exec: bool) -> Self {
        Clusters {
            cache: Mutex::default(),
            allow_exec,
        }
    }

    /// The client built from the kubeconfig in `reference`, a Secret of
    /// `namespace` (the rollback's).
    pub async fn client(
        &self,
        own: &Client,
        namespace: &str,
        reference: &SecretKeyRef,
    ) -> Result<Client, KubeconfigError> {
        let secret_name = format!("{namespace}/{}", reference.name);
        let secret = Api::<Secret>::namespaced(own.clone(), namespace)
            .get_opt(&reference.name)
            .await
            .map_err(|source| KubeconfigError::Read {
                secret: secret_name.clone(),
                source,
            })?
            .ok_or_else(|| KubeconfigError::NotFound {
                secret: secret_name.clone(),
            })?;
        let version = secret.resource_version().unwrap_or_default();
        let key = (
            namespace.to_owned(),
            reference.name.clone(),
            reference.key.clone(),
        );
        if let Some((cached, client)) = self.lock().get(&key)
            && *cached == version
        {
            return Ok(client.clone());
        }
        let text = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .ok_or_else(|| KubeconfigError::NoKey {
                secret: secret_name.clone(),
                key: reference.key.clone(),
            })?;
        let invalid = |error: kube::config::KubeconfigError| KubeconfigError::Invalid {
            secret: secret_name.clone(),
            why: match error {
                // The YAML parser quotes the text around the mistake, and a
                // Secret's text must not reach status, events or logs.
                kube::config::KubeconfigError::Parse(_) => "not valid kubeconfig YAML".to_owned(),
                other => other.to_string(),
            },
        };
        let kubeconfig = Kubeconfig::from_yaml(&text).map_err(invalid)?;
        // Checked before kube sees it: kube would read the files and set up
        // the exec plugin while building the client.
        let refused = refused_fields(&kubeconfig, self.allow_exec);
        if !refused.is_empty() {
            return Err(KubeconfigError::Refused {
                secret: secret_name,
                fields: refused.join(", "),
            });
        }
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(invalid)?;
        config.connect_timeout = Some(REMOTE_TIMEOUT);
        config.read_timeout = Some(REMOTE_TIMEOUT);
        let client = Client::try_from(config).map_err(|source| KubeconfigError::Client {
            secret: secret_name.clone(),
            source,
        })?;
        self.lock().insert(key, (version, client.clone()));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a plain map behind: still
        // usable.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Kubeconfig {
        Kubeconfig::from_yaml(yaml).expect("a kubeconfig")
    }

    const INLINE: &str = "apiVersion: v1
kind: Config
clusters:
  - name: eu
    cluster:
      server: https://eu.example:6443
      certificate-authority-data: Zm9v
      insecure-skip-tls-verify: false
users:
  - name: ci
    user:
      token: abc
  - name: cert
    user:
      client-certificate-data: Zm9v
      client-key-data: YmFy
contexts:
  - name: eu
    context: {cluster: eu, user: ci}
current-context: eu
";

    #[test]
    fn inline_credentials_are_accepted() {
        assert!(refused_fields(&parse(INLINE), false).is_empty());
    }

    #[test]
    fn commands_files_and_proxies_are_refused_in_every_entry() {
        // The current context is clean: the other entries still count.
        let yaml = INLINE.replace(
            "users:\n",
            "  - name: files
    cluster:
      server: https://files.example
      certificate-authority: /etc/ssl/ca.pem
      proxy-url: http://proxy.example:3128
users:
  - name: exec
    user:
      exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}
      auth-provider: {name: oidc}
      tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
      client-certificate: /tmp/cert.pem
      client-key: /tmp/key.pem
",
        );
        let kubeconfig = parse(&yaml);
        let refused = refused_fields(&kubeconfig, false);
        let text = refused.join(", ");
        for field in [
            "certificate-authority",
            "proxy-url",
            "exec",
            "auth-provider",
            "tokenFile",
            "client-certificate",
            "client-key",
        ] {
            assert!(text.contains(field), "{field} not refused: {text}");
        }
        // The administrator's flag lets exec through, and nothing else.
        let allowed = refused_fields(&kubeconfig, true);
        assert!(
            allowed.iter().all(|f| !f.starts_with("exec")),
            "{allowed:?}"
        );
        assert_eq!(allowed.len(), refused.len() - 1);
    }
}
