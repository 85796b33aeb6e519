//! Clients for regions in other clusters, built from a kubeconfig stored in
//! a Secret and cached by the Secret's `resourceVersion`: a rotated
//! kubeconfig is picked up at the next look, an unchanged one costs one GET.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::api::rollback::Wave;

/// How long a call to another cluster may take before it counts as failed.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// (namespace, Secret name, key) -> (the Secret's resourceVersion, client).
type Cache = HashMap<(String, String, String), (String, Client)>;

/// The cache of clients for other clusters.
#[derive(Default)]
pub struct Clusters {
    cache: Mutex<Cache>,
}

impl Clusters {
    /// The client for `wave`: the operator's own, or one built from the
    /// kubeconfig Secret the wave names (in `namespace`, the rollback's).
    /// The error says what to fix.
    pub async fn client(
        &self,
        own: &Client,
        namespace: &str,
        wave: &Wave,
    ) -> Result<Client, String> {
        let Some(reference) = &wave.kubeconfig_secret_ref else {
            return Ok(own.clone());
        };
        let secret = Api::<Secret>::namespaced(own.clone(), namespace)
            .get_opt(&reference.name)
            .await
            .map_err(|error| format!("cannot read Secret {namespace}/{}: {error}", reference.name))?
            .ok_or_else(|| format!("Secret {namespace}/{} not found", reference.name))?;
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
            .ok_or_else(|| {
                format!(
                    "Secret {namespace}/{} has no UTF-8 key {:?}",
                    reference.name, reference.key
                )
            })?;
        let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|error| {
            format!(
                "key {:?} of Secret {namespace}/{} is not a kubeconfig: {error}",
                reference.key, reference.name
            )
        })?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|error| {
                format!(
                    "the kubeconfig in Secret {namespace}/{} is unusable: {error}",
                    reference.name
                )
            })?;
        config.connect_timeout = Some(REMOTE_TIMEOUT);
        config.read_timeout = Some(REMOTE_TIMEOUT);
        let client = Client::try_from(config).map_err(|error| {
            format!(
                "cannot build a client from Secret {namespace}/{}: {error}",
                reference.name
            )
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
